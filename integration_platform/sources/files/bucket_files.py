"""File drops in an object store: an S3 bucket, a GCS bucket or an Azure Blob container.

:class:`BucketResource` opens a :class:`BucketFiles`, the :class:`RemoteFiles` of the drop sources,
over an fsspec filesystem (:mod:`integration_platform.resources.object_stores`). A "directory" is a
key prefix; an object is listed only once its upload completed (S3 and GCS show an object when its
single or multipart/resumable upload finished, Azure a block blob when its block list is committed),
so a half-uploaded drop is never seen. A re-published object has a new version: its GCS generation
or Azure ETag (S3 through pyarrow lists no ETag: its last-modified second and size).
"""

import datetime as dt
import queue
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import dagster as dg
from pydantic import Field

from integration_platform.core.names import check_segment, refuse_misread
from integration_platform.resources.object_stores import (
    AZURE_UNSAFE,
    AzureBlobSettings,
    GcsSettings,
    azure_filesystem,
    gcs_filesystem,
)
from integration_platform.sources.files.remote_files import Download, RemoteFile, RemoteFileError, download_one_by_one

BucketStore = Literal["s3", "gcs", "azure"]


class BucketFiles:
    """The objects under a bucket's prefixes as a drop directory. ``fs``: an fsspec filesystem whose
    paths are ``<bucket>/<key>``; ``where``: how errors name the store (``gs://bucket``); ``unsafe``:
    substrings an object name may not hold for this store's client (:data:`AZURE_UNSAFE`).

    Only single-object operations (``get_file``, ``cp_file``, ``rm_file``): fsspec's ``rm`` and ``mv``
    expand ``*``, ``?`` and ``[`` in a path as a glob, and such characters are legal in object names."""

    def __init__(self, fs: Any, bucket: str, where: str, unsafe: tuple[str, ...] = ()) -> None:
        self.fs, self.bucket, self.where, self.unsafe = fs, bucket, where, unsafe

    def _path(self, key: str) -> str:
        return f"{self.bucket}/{key.strip('/')}"

    def list(self, directory: str, accept: Callable[[str], bool] | None = None) -> Iterator[RemoteFile]:
        """The objects directly under the prefix ``directory`` (no deeper ones, no folder-marker objects
        ending in ``/``). A prefix holding no object is an empty listing (a store has no directories: an
        empty one and a missing one are the same); a bucket that does not exist is not.

        Raises :class:`RemoteFileError` naming the store, the prefix and the cause when the listing fails
        (the bucket does not exist, access is denied, the endpoint does not answer), ``UnsafeNameError``
        for an object name that is not one plain path segment or that the store's client would read as
        something else (:attr:`unsafe`)."""
        prefix = directory.strip("/")
        base = self._path(prefix).rstrip("/")
        try:  # find, not ls: adlfs lists only the marker when a zero-byte "<prefix>/" blob exists
            # on_error="raise": fsspec's walk (under find on S3) drops a failed listing by default, so a
            # missing bucket, a 403 or a dead endpoint read as an empty prefix
            listed = self.fs.find(base, maxdepth=1, detail=True, on_error="raise")
        except FileNotFoundError:
            listed = {}
        except Exception as exc:
            raise self._listing_error(prefix, exc) from exc
        if not listed:  # an empty prefix, or a bucket that is not there (adlfs and gcsfs list nothing)
            try:
                self.fs.info(self.bucket)
            except FileNotFoundError:
                raise RemoteFileError(
                    f"{self.where}: listing {prefix or '/'!r} failed: the bucket {self.bucket!r} does not exist"
                ) from None
            except Exception as exc:
                raise self._listing_error(prefix, exc) from exc
        for path, info in sorted(listed.items()):
            name = str(path)[len(base) + 1 :]
            if info.get("type") != "file" or not name or "/" in name:
                continue  # the prefix itself, a marker, or an object further down
            if accept is not None and not accept(name):
                continue
            check_segment(name, f"object name listed under {self.where}/{prefix}")
            refuse_misread(
                name, self.unsafe, f"object name listed under {self.where}/{prefix}",
                "this store's client reads as a version marker",
            )  # fmt: skip
            yield RemoteFile(
                path=f"{prefix}/{name}" if prefix else name,
                name=name,
                size=int(info.get("size") or 0),
                mtime=_modified(info),
                tag=str(info.get("generation") or info.get("etag") or "") or None,
            )

    def _listing_error(self, prefix: str, exc: Exception) -> RemoteFileError:
        return RemoteFileError(f"{self.where}: listing {prefix or '/'!r} failed: {type(exc).__name__}: {exc}")

    def download_many(self, todo: "queue.SimpleQueue[Download | None]") -> Generator[tuple[Download, int], None, None]:
        """:meth:`download` of each file put on ``todo``, one after the other (``download_one_by_one``)."""
        return download_one_by_one(self, todo)

    def download(self, path: str, local: Path, listed_size: int | None = None) -> int:
        """Copy the object ``path`` to ``local``; returns its bytes. Raises :class:`RemoteFileError` when it
        vanished, cannot be read or the copy differs from the listed size (it was replaced meanwhile)."""
        try:
            self.fs.get_file(self._path(path), str(local))
        except Exception as exc:
            raise RemoteFileError(f"{self.where}: download of {path!r} failed: {type(exc).__name__}: {exc}") from exc
        size = local.stat().st_size
        if listed_size is not None and size != listed_size:
            raise RemoteFileError(
                f"{self.where}: {path!r} was listed with {listed_size} bytes and downloaded with {size}: "
                "it was replaced meanwhile; the next run takes the new version"
            )
        return size

    def rename(self, path: str, target: str) -> None:
        """Move the object (a copy, then a delete of the original; object stores have no rename).
        Raises :class:`RemoteFileError`."""
        try:
            self.fs.cp_file(self._path(path), self._path(target))
            self.fs.rm_file(self._path(path))
        except Exception as exc:
            raise RemoteFileError(f"{self.where}: moving {path!r} to {target!r} failed: {exc}") from exc

    def close(self) -> None:
        """Nothing to close: the filesystem's HTTP sessions end with it."""


def _modified(info: dict[str, Any]) -> float:
    """An object's last-modified time in Unix seconds, from any of the filesystems' listings."""
    value = info.get("mtime") or info.get("last_modified") or info.get("updated")
    if isinstance(value, dt.datetime):
        return value.timestamp()
    if isinstance(value, str):
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    return float(value or 0)


class BucketResource(dg.ConfigurableResource):
    """A drop bucket: ``store`` (``s3``, ``gcs`` or ``azure``) and ``bucket`` (the Azure container).

    S3 goes through pyarrow's ``S3FileSystem`` (``endpoint_url``, ``region``, ``access_key_id``,
    ``secret_access_key``; the keys as ``dg.EnvVar``, or the AWS default chain when unset); GCS and
    Azure through gcsfs and adlfs with :class:`GcsSettings` / :class:`AzureBlobSettings`.

    A bucket at another ``endpoint_url`` (S3's, or ``gcs.endpoint_url``: a partner's MinIO, an emulator)
    gets only the credentials given here: without them it is read anonymously, unless
    ``default_credentials`` says the endpoint is the cloud's own (a VPC interface endpoint, FIPS, Private
    Service Connect): a host name cannot say so, since customers run hosts under ``amazonaws.com`` (API
    Gateway, load balancers, another account's PrivateLink service). The default chains
    (``AWS_*`` variables, ``GOOGLE_APPLICATION_CREDENTIALS``, an instance's metadata server) hold the
    deployment's own credentials, for AWS or Google and for the lake; they signed requests to that
    endpoint with the deployment's AWS key id (and session token) and sent it the Google bearer token."""

    store: BucketStore
    bucket: str = Field(description="Bucket (S3, GCS) or container (Azure).")
    endpoint_url: str | None = Field(default=None, description="S3: another endpoint (MinIO, a test server).")
    region: str | None = Field(default=None, description="S3: the bucket's region.")
    access_key_id: str | None = Field(default=None, description="S3: access key id (dg.EnvVar).")
    secret_access_key: str | None = Field(default=None, description="S3: secret access key (dg.EnvVar).")
    default_credentials: bool = Field(
        default=False,
        description="S3/GCS at an endpoint_url: sign with the deployment's default credential chain, for an "
        "endpoint the cloud itself runs (a VPC interface endpoint, FIPS, Private Service Connect).",
    )
    gcs: GcsSettings = Field(default_factory=GcsSettings)
    azure: AzureBlobSettings = Field(default_factory=AzureBlobSettings)

    @property
    def where(self) -> str:
        """The bucket as a URL, for messages: ``s3://b``, ``gs://b``, ``az://c``."""
        return f"{ {'s3': 's3', 'gcs': 'gs', 'azure': 'az'}[self.store] }://{self.bucket}"

    @contextmanager
    def connect(self) -> Iterator[BucketFiles]:
        """The bucket's objects as :class:`BucketFiles`. Raises ``ImportError`` naming the extra
        when the store's library is missing."""
        if self.store == "gcs":
            anonymous = self.gcs.endpoint_url is not None and self.gcs.token is None and not self.default_credentials
            fs = gcs_filesystem(GcsSettings(**{**self.gcs.model_dump(), "token": "anon"}) if anonymous else self.gcs)
        elif self.store == "azure":
            fs = azure_filesystem(self.azure)
        else:
            fs = self._s3()
        yield BucketFiles(fs, self.bucket, self.where, AZURE_UNSAFE if self.store == "azure" else ())

    def _s3(self) -> Any:
        import pyarrow.fs as pafs
        from fsspec.implementations.arrow import ArrowFSWrapper

        options: dict[str, Any] = {"region": self.region or "us-east-1"}
        if self.endpoint_url:
            scheme, _, host = self.endpoint_url.partition("://")
            options.update(endpoint_override=host.rstrip("/"), scheme=scheme)
        if self.access_key_id or self.secret_access_key:
            options.update(access_key=self.access_key_id, secret_key=self.secret_access_key)
        elif self.endpoint_url and not self.default_credentials:  # never the deployment's own (class doc)
            options.update(anonymous=True)
        return ArrowFSWrapper(pafs.S3FileSystem(**options))
