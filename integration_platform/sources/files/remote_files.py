"""What a file-drop server looks like to the platform, whatever its protocol (SFTP, FTP/FTPS, a bucket).

A resource (``SftpResource``, ``FtpResource``) opens a :class:`RemoteFiles` connection with
``connect()``; file sources list a directory, download files and optionally archive them
through it, and never see the protocol.
"""

import queue
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Protocol

from integration_platform.core.names import check_segment


class RemoteFileError(Exception):
    """A file-drop operation failed; the message names the server, the path and the reason
    (never a password or key)."""


class MissingDirectoryError(RemoteFileError):
    """The directory listed does not exist (SFTP ``ENOENT``; FTP: the server cannot change into it). A
    store's prefix is never missing: an empty one and a missing one are the same."""


class TargetExistsError(RemoteFileError):
    """A rename's target exists and the server refuses to replace it (SFTP; FTP servers that refuse to overwrite,
    told by SIZE; buckets overwrite)."""


class HostKeyError(RemoteFileError):
    """The server's SSH host key is unknown or differs from the expected one: the connection is refused."""


@dataclass(frozen=True)
class RemoteFile:
    """One regular file in a remote directory: full path, bare name, size in bytes, mtime in Unix seconds,
    and ``tag``, the store's version of it where it has one (a GCS generation, an Azure ETag; None on SFTP/FTP).

    The name comes from the server and becomes a partition key, a lake folder and an archive path, so it
    must be one plain path segment: anything else (``../../x``, ``a/b``) raises
    :class:`~integration_platform.core.names.UnsafeNameError` (a ``ValueError``) naming it.
    """

    path: str
    name: str
    size: int
    mtime: float
    tag: str | None = None

    def __post_init__(self) -> None:
        check_segment(self.name, f"file name listed at {self.path!r}")


class Download(NamedTuple):
    """A file to download: its remote path, the local path to copy it to, and its size as listed (bytes;
    ``None`` when not listed)."""

    path: str
    local: Path
    listed_size: int | None = None


class RemoteFiles(Protocol):
    """An open connection to a file-drop server."""

    def list(self, directory: str, accept: Callable[[str], bool] | None = None) -> Iterator[RemoteFile]:
        """The regular files directly in ``directory`` (no recursion), in server order; with ``accept``
        only those whose name it accepts. A name not accepted is passed over before its name is checked:
        a file the stream does not take (a partner's ``notes\\ops.txt``) cannot fail the listing.

        Raises :class:`RemoteFileError` when the directory does not exist or cannot be read.
        """
        ...

    def download(self, path: str, local: Path, listed_size: int | None = None) -> int:
        """Copy remote ``path`` to the local file ``local`` (created or truncated); returns bytes copied.

        ``listed_size``: the size a listing reported (bytes), on any connection; a protocol that cannot
        ask an open file its size (FTP) checks the copy against it.

        Raises :class:`RemoteFileError` when the file vanished, cannot be read, or the copy
        ends short of the size the server reported.
        """
        ...

    def download_many(self, todo: "queue.SimpleQueue[Download | None]") -> Generator[tuple[Download, int], None, None]:
        """Download the files put on ``todo`` (until ``None``) in that order; yields ``(download, bytes
        copied)`` as each is done, waiting on ``todo`` only when nothing is under way. Raises
        :class:`RemoteFileError` for the first file that fails, after yielding those before it."""
        ...

    def rename(self, path: str, target: str) -> None:
        """Move remote ``path`` to ``target`` (used to archive a landed file); creates the target
        directory when missing. Raises :class:`RemoteFileError` (:class:`TargetExistsError` when ``target``
        exists and the server does not replace it)."""
        ...

    def close(self) -> None: ...


def download_one_by_one(
    files: RemoteFiles, todo: "queue.SimpleQueue[Download | None]"
) -> Generator[tuple[Download, int], None, None]:
    """:meth:`RemoteFiles.download_many` for a protocol that transfers one file at a time (FTP, buckets):
    each file's :meth:`~RemoteFiles.download` (with its listed size) in turn."""
    while (item := todo.get()) is not None:
        yield item, files.download(item.path, item.local, item.listed_size)


def download_all(files: RemoteFiles, paths: list[str], folder: Path) -> Iterator[tuple[str, Path]]:
    """Download each remote path into ``folder`` (one local file per remote name) and yield
    ``(remote path, local path)``; the caller owns ``folder``."""
    for index, path in enumerate(paths):
        local = folder / f"{index:06d}-{Path(path).name}"
        files.download(path, local)
        yield path, local
