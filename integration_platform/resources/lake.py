"""LakeResource: the Dagster resource that opens the lake's store (a folder, S3, GCS or Azure Blob).

The stores themselves (two-phase writes, key confinement, staging clean-up) are
:mod:`integration_platform.core.lake`; this module only turns configuration into one.
"""

from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field, PrivateAttr

from integration_platform.core.lake import FsspecLake, LakeStore, LocalLake, S3Lake
from integration_platform.resources.object_stores import (
    AZURE_UNSAFE,
    AzureBlobSettings,
    GcsSettings,
    S3Settings,
    azure_filesystem,
    gcs_filesystem,
    s3_client,
)

#: The URL schemes of a lake in an object store, besides ``s3://``: Google Cloud Storage through
#: gcsfs, Azure Blob Storage through adlfs (``abfs://`` is adlfs's other name for ``az://``).
GCS_SCHEMES = ("gs",)
AZURE_SCHEMES = ("az", "abfs")
#: The object stores a lake URL may name (``<scheme>://bucket/prefix``).
STORE_SCHEMES = ("s3", *GCS_SCHEMES, *AZURE_SCHEMES)


class LakeResource(dg.ConfigurableResource):
    """Where streams land: a local folder (default ``.data/lake``), ``s3://bucket/prefix``,
    ``gs://bucket/prefix`` or ``az://container/prefix`` (also ``abfs://``).

    For S3 the boto3 client comes from dagster-aws's ``S3Resource`` built from :class:`S3Settings` (endpoint,
    region and credentials, secrets as ``dg.EnvVar``); for GCS and Azure the
    fsspec filesystems gcsfs and adlfs, configured by :class:`GcsSettings` and :class:`AzureBlobSettings`
    (``pip install 'integration_platform[gcs]'`` / ``[azure]``). Raises ``ValueError`` for another
    URL scheme, a URL without a bucket or a store's scheme without its ``//`` (``s3:/bucket``, which
    named a local folder ``s3:``), ``ImportError`` naming the extra when its library is missing.
    """

    url: str = Field(default=".data/lake", description="Lake root: a folder path, s3://, gs:// or az://bucket/prefix.")
    s3: S3Settings = Field(default_factory=S3Settings, description="S3 client settings for s3:// lakes.")
    gcs: GcsSettings = Field(default_factory=GcsSettings, description="GCS settings for gs:// lakes.")
    azure: AzureBlobSettings = Field(
        default_factory=AzureBlobSettings, description="Azure Blob settings for az:// and abfs:// lakes."
    )

    _store: LakeStore | None = PrivateAttr(default=None)

    def store(self) -> LakeStore:
        """The object store behind :attr:`url`, opened on the first call and the same one after: a
        backfill asks for it once per partition, and opening an S3 store (dagster-aws builds a boto3
        session and client) took 234 ms, 7 minutes over 1,781 daily partitions. The stores hold no
        per-call state; a boto3 client and an fsspec filesystem may be used from several threads, and
        two threads opening it at once only open it twice.

        Lifetime: Dagster sets a resource up as a new object for each step process, in-process run or
        sensor tick, so the store lives as long as that and is opened after any fork. Call it only
        through ``context.resources`` (or a resource parameter), never on the object given to
        ``Definitions``: a client opened there before the multiprocess executor forks would be shared
        by every step (see ``object_stores``)."""
        if self._store is None:
            self._store = self._open()
        return self._store

    def _open(self) -> LakeStore:
        scheme, found, rest = self.url.partition("://")
        typo = self.url.partition(":")[0]
        if not found and typo.lower() in STORE_SCHEMES:  # "s3:/b/x", "S3:b" are no folder anyone means
            raise ValueError(
                f"lake URL {self.url!r} would be a local folder named {typo + ':'!r}: "
                f"write {typo.lower()}://bucket/prefix"
            )
        if (scheme if found else typo).lower() == "file":  # file://path, and RFC 8089's file:/path
            folder = rest if found else self.url[len("file:") :]
            if not folder:
                raise ValueError(f"lake URL {self.url!r} names no folder")
            return LocalLake(Path(folder))
        if not found:
            return LocalLake(Path(self.url))
        bucket, _, prefix = rest.partition("/")
        if scheme not in STORE_SCHEMES:
            raise ValueError(
                f"lake URL {self.url!r}: use a folder path, file://, s3://, gs://, az:// or abfs://bucket/prefix"
            )
        if not bucket:
            raise ValueError(f"lake URL {self.url!r} names no bucket")
        if scheme == "s3":
            return S3Lake(s3_client(self.s3), bucket, prefix)
        unsafe = AZURE_UNSAFE if scheme in AZURE_SCHEMES else ()
        return FsspecLake(self._filesystem(scheme), scheme, bucket, prefix, unsafe)

    def _filesystem(self, scheme: str) -> Any:
        """A new gcsfs or adlfs filesystem for a ``gs://`` or ``az://`` lake."""
        return gcs_filesystem(self.gcs) if scheme in GCS_SCHEMES else azure_filesystem(self.azure)
