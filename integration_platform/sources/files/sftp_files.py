"""SftpFiles: the operations of an open SFTP session (list, download, rename) for
:class:`~integration_platform.sources.files.sftp.SftpResource`, which opens it.

The download loop is here, see the download section of :mod:`integration_platform.sources.files.sftp`
for why it pipelines reads itself; protocol: SFTP version 3 (draft-ietf-secsh-filexfer-02) and
OpenSSH's ``limits@openssh.com`` extension (OpenSSH ``PROTOCOL``, section 4.8).
"""

import os
import posixpath
import stat
from collections import deque
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, cast

import paramiko
from paramiko.sftp import CMD_DATA, CMD_EXTENDED, CMD_EXTENDED_REPLY, CMD_READ, CMD_STATUS, SFTP_EOF, int64

from integration_platform.core.names import UnsafeNameError
from integration_platform.sources.files.remote_files import RemoteFile, RemoteFileError

if TYPE_CHECKING:
    from integration_platform.sources.files.sftp import SftpResource

#: What paramiko raises: OSError for SFTP status replies (with errno ENOENT / EACCES when the server
#: says so) and for the network, EOFError and SSHException for a dropped connection, SFTPError for
#: a reply it does not understand.
NETWORK_ERRORS = (OSError, EOFError, paramiko.SSHException, paramiko.SFTPError)


class _Replies:
    """Receives replies to pipelined requests from paramiko's SFTP client (its ``fileobj`` protocol)."""

    def __init__(self) -> None:
        self.replies: dict[int, tuple[int, paramiko.Message]] = {}

    def _async_response(self, kind: int, msg: paramiko.Message, num: int) -> None:
        self.replies[num] = (kind, msg)


class SftpFiles:
    """An open SFTP session implementing :class:`~integration_platform.sources.files.remote_files.RemoteFiles`."""

    def __init__(self, config: "SftpResource", client: paramiko.SSHClient) -> None:
        self.config = config
        self.client = client
        self.where = config.where
        self._read_size: int | None = None
        transport = client.get_transport()
        assert transport is not None
        try:
            sftp = paramiko.SFTPClient.from_transport(
                transport, window_size=config.window_size, max_packet_size=config.max_packet_size
            )
        except NETWORK_ERRORS as exc:
            client.close()
            raise RemoteFileError(f"{self.where}: cannot start the SFTP subsystem: {exc}") from exc
        if sftp is None:
            client.close()
            raise RemoteFileError(f"{self.where}: cannot start the SFTP subsystem")
        self.sftp: paramiko.SFTPClient = sftp
        #: The same client through paramiko's request layer (``_request``, ``_async_request``,
        #: ``_read_response``), which its stubs leave out: pipelined reads need it (module doc).
        self._wire: Any = sftp
        channel = sftp.get_channel()
        assert channel is not None
        channel.settimeout(config.timeout)
        self._broken: str | None = None

    def close(self) -> None:
        try:
            self.sftp.close()
        finally:
            self.client.close()

    def _fail(self, what: str, path: str, exc: BaseException) -> NoReturn:
        """Raise :class:`RemoteFileError` for ``exc``; when the connection itself failed (timeout, drop,
        garbled reply) the session is marked unusable, so later calls fail at once."""
        transport = self.client.get_transport()
        session_lost = isinstance(exc, TimeoutError | EOFError | ConnectionError | paramiko.SSHException) or (
            isinstance(exc, paramiko.SFTPError) or transport is None or not transport.is_active()
        )
        if isinstance(exc, TimeoutError):
            reason = f"no reply within timeout={self.config.timeout}s"
        elif isinstance(exc, OSError) and exc.strerror:
            reason = exc.strerror
        else:
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if session_lost:
            self._broken = reason
        raise RemoteFileError(f"{self._url(path)}: {what} failed: {reason}") from exc

    def _check(self, path: str) -> None:
        if self._broken:
            raise RemoteFileError(f"{self._url(path)}: the session failed earlier ({self._broken})")

    def _url(self, path: str) -> str:
        """``sftp://host:port/abs/path``; a relative path is relative to the login directory, written ``/~/``."""
        return f"{self.where}{path}" if path.startswith("/") else f"{self.where}/~/{path}"

    def list(self, directory: str) -> Iterator[RemoteFile]:
        """The regular files directly in ``directory`` (``S_ISREG``: no directories, links or devices), in
        server order; ``size`` from the server's attributes (bytes), ``mtime`` Unix seconds (SFTP v3 sends whole
        seconds). Raises :class:`RemoteFileError` when the directory is missing or unreadable."""
        self._check(directory)
        try:
            entries = self.sftp.listdir_attr(directory)
        except NETWORK_ERRORS as exc:
            self._fail("listing", directory, exc)
        for entry in entries:
            name = entry.filename
            path = posixpath.join(directory, name)
            mode = entry.st_mode
            if mode is None:  # the server sent no permissions: ask for them
                try:
                    entry = self.sftp.stat(path)
                except NETWORK_ERRORS as exc:
                    self._fail("stat", path, exc)
                mode = entry.st_mode
            if mode is None or not stat.S_ISREG(mode):
                continue
            try:
                file = RemoteFile(path, name, int(entry.st_size or 0), float(entry.st_mtime or 0))
            except UnsafeNameError as exc:
                raise RemoteFileError(f"{self._url(directory)}: {exc}") from None
            yield file

    def download(self, path: str, local: Path, listed_size: int | None = None) -> int:
        """Copy remote ``path`` to ``local`` (created or truncated) with pipelined reads; returns the bytes copied.
        ``listed_size`` is not used: the open file's own size is the reference.

        The size is the open file's ``fstat``; raises :class:`RemoteFileError` when the file is missing or
        unreadable, a read fails, or the server's replies end before that size (the file shrank meanwhile).
        A file that grows meanwhile is copied up to the size it had when opened.
        """
        self._check(path)
        try:
            remote = self.sftp.open(path, "rb")
        except NETWORK_ERRORS as exc:
            self._fail("open", path, exc)
        try:
            try:
                size = int(remote.stat().st_size or 0)
            except NETWORK_ERRORS as exc:
                self._fail("stat", path, exc)
            fd = os.open(local, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                copied = self._pipelined_read(
                    cast(bytes, remote.handle), size, fd, path
                )  # bytes (the stub says SFTPHandle)
            finally:
                os.close(fd)
        except BaseException:
            if not self._broken:
                with suppress(*NETWORK_ERRORS):
                    remote.close()
            raise
        try:
            remote.close()
        except NETWORK_ERRORS as exc:
            self._fail("close", path, exc)
        if copied != size:
            raise RemoteFileError(
                f"{self._url(path)}: download ended after {copied:,} of {size:,} bytes (the file shrank or "
                "was replaced while it was read)"
            )
        return copied

    def rename(self, path: str, target: str) -> None:
        """Move ``path`` to ``target`` (SSH_FXP_RENAME; fails when ``target`` exists), creating the target's
        directory and its missing parents first. Raises :class:`RemoteFileError`."""
        self._check(path)
        folder = posixpath.dirname(target)
        if folder:
            self._makedirs(folder)
        try:
            self.sftp.rename(path, target)
        except NETWORK_ERRORS as exc:
            if isinstance(exc, OSError) and not self._broken and self._exists(target):
                raise RemoteFileError(f"{self._url(path)}: rename to {target} failed: it exists") from exc
            self._fail(f"rename to {target}", path, exc)

    # ------------------------------------------------------------------ internals

    def _exists(self, path: str) -> bool:
        try:
            self.sftp.stat(path)
            return True
        except FileNotFoundError:
            return False
        except NETWORK_ERRORS as exc:
            self._fail("stat", path, exc)

    def _makedirs(self, folder: str) -> None:
        if self._exists(folder):
            return
        parent = posixpath.dirname(folder.rstrip("/"))
        if parent and parent != folder:
            self._makedirs(parent)
        try:
            self.sftp.mkdir(folder)
        except NETWORK_ERRORS as exc:
            if isinstance(exc, OSError) and not self._broken and self._exists(folder):
                return  # created concurrently
            self._fail("mkdir", folder, exc)

    def _server_read_limit(self) -> int:
        """``request_size`` capped by the server's ``limits@openssh.com`` max read length, asked once."""
        if self._read_size is None:
            size = self.config.request_size
            try:
                kind, msg = self._wire._request(CMD_EXTENDED, "limits@openssh.com")
                if kind == CMD_EXTENDED_REPLY:
                    msg.get_int64()  # max packet length
                    max_read = msg.get_int64()
                    if max_read > 0:
                        size = min(size, max_read)
            except OSError:  # SSH_FX_OP_UNSUPPORTED: not OpenSSH; short replies will lower the size instead
                pass
            except NETWORK_ERRORS as exc:
                self._fail("limits@openssh.com", "/", exc)
            self._read_size = max(size, 1)
        return self._read_size

    def _pipelined_read(self, handle: bytes, size: int, fd: int, path: str) -> int:
        """Read ``[0, size)`` of the open ``handle`` with up to ``max_concurrent_requests`` SSH_FXP_READs in
        flight, writing each SSH_FXP_DATA at its offset in ``fd``; returns the bytes written."""
        sftp = self._wire
        request = self._server_read_limit()
        depth = max(self.config.max_concurrent_requests, 1)
        sink = _Replies()
        pending: deque[tuple[int, int, int]] = deque()  # (request id, offset, length)
        offset = copied = 0
        end = size
        error: RemoteFileError | None = None
        try:
            while pending or (offset < end and error is None):
                while error is None and offset < end and len(pending) < depth:
                    length = min(request, end - offset)
                    num = sftp._async_request(sink, CMD_READ, handle, int64(offset), int(length))
                    pending.append((num, offset, length))
                    offset += length
                num, at, length = pending.popleft()
                while num not in sink.replies:
                    sftp._read_response()
                kind, msg = sink.replies.pop(num)
                if kind == CMD_STATUS:
                    code = msg.get_int()
                    if code == SFTP_EOF:  # the file ends before `size`: stop asking, drain what is in flight
                        end = min(end, at)
                        continue
                    if error is None:
                        error = RemoteFileError(
                            f"{self._url(path)}: read at byte {at:,} failed: {msg.get_text()} (status {code})"
                        )
                    continue
                if kind != CMD_DATA:
                    raise paramiko.SFTPError(f"unexpected reply type {kind} to a read")
                data = msg.get_string()
                if error is not None:
                    continue
                if not data:
                    end = min(end, at)
                    continue
                view = memoryview(data)
                written = 0
                while written < len(data):
                    written += os.pwrite(fd, view[written:], at + written)
                copied += len(data)
                if len(data) < length:  # a short reply: ask for the rest, and for less from now on (this file)
                    request = len(data)
                    rest = sftp._async_request(sink, CMD_READ, handle, int64(at + len(data)), int(length - len(data)))
                    pending.append((rest, at + len(data), length - len(data)))
        except NETWORK_ERRORS as exc:
            self._fail("read", path, exc)
        if error is not None:
            raise error
        return copied
