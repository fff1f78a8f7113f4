"""How the platform reaches Google Cloud Storage, Azure Blob Storage and S3: the settings a resource
nests and the clients they open (fsspec filesystems for the lake and for file drops, boto3 for an S3 lake).

The filesystems are the field's: gcsfs and adlfs (extras ``gcs`` and ``azure``), and for drops on S3
pyarrow's own ``S3FileSystem`` behind fsspec's ``ArrowFSWrapper`` (s3fs pins a botocore other than
dagster-aws's). Each call opens a new filesystem that caches no listing: fsspec's cached instance
made before a fork is not usable after it, and a drop or a manifest listing must be fresh.
"""

from typing import Any

import dagster as dg
from pydantic import Field

_FRESH = {"skip_instance_cache": True, "use_listings_cache": False}
#: What an Azure key or blob name may not hold: adlfs splits a path at ``?versionid=`` (a blob
#: version) even when versions are off, so ``a.csv?versionid=1`` would read or write ``a.csv``.
AZURE_UNSAFE = ("?versionid=",)


class S3Settings(dg.Config):
    """How to reach S3 or an S3-compatible server (the fields of dagster-aws's ``S3Resource``, same names).

    Settings rather than a nested ``S3Resource`` so that importing the definitions does not import
    dagster-aws: its package imports every one of its components, boto3 and Dagster's test
    utilities, 0.65 s on this machine, paid by every process that loads the code location even
    when no lake is on S3. :func:`s3_client` imports it when an S3 lake is opened."""

    endpoint_url: str | None = Field(default=None, description="Another endpoint (MinIO, a test server; None: AWS).")
    region_name: str | None = Field(default=None, description="The bucket's region.")
    profile_name: str | None = Field(default=None, description="A profile of the AWS config files.")
    aws_access_key_id: str | None = Field(default=None, description="Access key id (dg.EnvVar).")
    aws_secret_access_key: str | None = Field(default=None, description="Secret access key (a secret: dg.EnvVar).")
    aws_session_token: str | None = Field(default=None, description="Session token (a secret: dg.EnvVar).")


def s3_client(settings: S3Settings) -> Any:
    """A boto3 S3 client from dagster-aws's ``S3Resource`` with these settings (unset fields: boto3's
    default credential chain and region)."""
    from dagster_aws.s3 import S3Resource

    return S3Resource(**{k: v for k, v in settings.model_dump().items() if v is not None}).get_client()


class GcsSettings(dg.Config):
    """How to reach Google Cloud Storage (gcsfs's own arguments, same names)."""

    project: str | None = Field(default=None, description="Google Cloud project (None: the credentials' own).")
    token: str | None = Field(
        default=None,
        description="gcsfs token: a service-account JSON file path, 'google_default', 'cloud' or 'anon' "
        "(None: gcsfs tries them in turn).",
    )
    endpoint_url: str | None = Field(
        default=None, description="Another endpoint, e.g. http://127.0.0.1:4443 for fake-gcs-server (None: Google's)."
    )


class AzureBlobSettings(dg.Config):
    """How to reach Azure Blob Storage (adlfs's own arguments, same names).

    Give ``connection_string`` or ``account_name`` with ``account_key`` (or with nothing, for Azure
    AD credentials found by azure-identity); secrets through ``dg.EnvVar``, never in YAML."""

    account_name: str | None = Field(default=None, description="Storage account name.")
    account_key: str | None = Field(default=None, description="Storage account key (a secret: dg.EnvVar).")
    connection_string: str | None = Field(
        default=None, description="Storage connection string, endpoint included (a secret: dg.EnvVar)."
    )


def gcs_filesystem(settings: GcsSettings) -> Any:
    """A new gcsfs ``GCSFileSystem``. Raises ``ImportError`` naming the extra when gcsfs is missing.

    The plain filesystem (``gcsfs.core``), not the package's default one, which probes every bucket
    for a hierarchical namespace (a gRPC call that stalls 60 s against an emulator)."""
    try:
        from gcsfs.core import GCSFileSystem
    except ImportError as exc:
        raise ImportError(f"Google Cloud Storage needs gcsfs: pip install 'integration_platform[gcs]' ({exc})") from exc
    return GCSFileSystem(project=settings.project, token=settings.token, endpoint_url=settings.endpoint_url, **_FRESH)


def azure_filesystem(settings: AzureBlobSettings) -> Any:
    """A new adlfs ``AzureBlobFileSystem``. Raises ``ImportError`` naming the extra when adlfs is missing."""
    try:
        from adlfs import AzureBlobFileSystem
    except ImportError as exc:
        raise ImportError(f"Azure Blob Storage needs adlfs: pip install 'integration_platform[azure]' ({exc})") from exc
    return AzureBlobFileSystem(
        account_name=settings.account_name,
        account_key=settings.account_key,
        connection_string=settings.connection_string,
        **_FRESH,
    )
