"""FtpResource: a partner's FTP or explicit-FTPS file drop, opened as a :class:`RemoteFiles` connection.

The protocol is the standard library's ``ftplib``. With ``tls`` (the default) the connection is explicit FTPS
(RFC 4217): ``AUTH TLS`` on the plain control connection before ``USER``/``PASS``, then ``PBSZ 0`` + ``PROT P``
so every data connection is TLS too. Certificates are verified against the system CAs (or ``ca_bundle``)
*and the host name*; ftplib's own default context verifies nothing, so the resource always passes one.

Every data connection resumes the control connection's TLS session (:class:`SessionReusingFTP_TLS`): vsftpd
(``require_ssl_reuse=YES`` is its default), ProFTPD (unless ``NoSessionReuseRequired``) and FileZilla Server
refuse a data connection with a fresh session ("522 SSL connection failed: session reuse required"), and stock
``ftplib.FTP_TLS`` never resumes one. pyftpdlib does not require it; resuming is harmless there.

Listing is MLSD (RFC 3659): regular files (``type=file``) with their ``size`` and ``modify`` facts (UTC). A
server without MLSD (500/502) is listed with NLST, then SIZE and MDTM per name; names whose SIZE fails are
taken for directories and skipped. Downloads are ``RETR`` in binary mode, checked against the size listed (or
reported by SIZE). Errors raised (:class:`RemoteFileError`) name ``host:port``, the operation, the remote
path and the reason; the password is never in them and the underlying exception is not chained.
"""

import datetime as dt
import ftplib
import posixpath
import queue
import socket
import ssl
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
from pydantic import Field

from integration_platform.sources.files.remote_files import (
    Download,
    MissingDirectoryError,
    RemoteFile,
    RemoteFileError,
    TargetExistsError,
    download_one_by_one,
)

#: Bytes asked of the data socket per ``recv`` in :meth:`FtpFiles.download`. A 200 MB file from a local
#: pyftpdlib server (median of 5, 2 shared cores): FTPS 8 KiB 0.84 s, 256 KiB 0.70 s, 1 MiB 0.88 s; plain FTP
#: 0.68 / 0.41 / 0.29 s. A TLS read returns at most one 16 KiB record, so beyond that only fewer calls count.
DOWNLOAD_BLOCKSIZE = 256 * 1024
#: What ftplib, sockets and TLS raise: reply errors, OSError (ssl.SSLError, timeouts), EOF on a dropped
#: control connection; ValueError covers undecodable replies and malformed sizes or times.
FTP_ERRORS = (ftplib.Error, OSError, EOFError, ValueError)
#: Replies meaning "command not implemented" (RFC 959): the server has no MLSD, or no SIZE / MDTM.
NOT_IMPLEMENTED = ("500", "502")
#: (``FtpFiles.list`` shadows the builtin inside the class body.)
Files = list[RemoteFile]


class FtpResource(dg.ConfigurableResource):
    """An FTP server, explicit FTPS by default. Open a connection with :meth:`connect`.

    ``timeout`` is seconds, for connecting and for every later socket operation (control and data);
    ``ca_bundle`` is a PEM file of CAs trusted instead of the system's; ``verify_tls=False`` accepts any
    certificate and host name (encryption without authentication: for test servers only); ``passive`` uses
    PASV (the server's reply address is ignored in favour of ``host``, as ftplib does); ``encoding`` is for
    commands, replies and file names.
    """

    host: str = Field(description="Server name or IP address; with TLS, the name the certificate must carry.")
    port: int = 21
    username: str
    password: str = Field(description="Set it with dg.EnvVar; it never appears in errors or logs.")
    tls: bool = Field(default=True, description="Explicit FTPS (AUTH TLS, PROT P); False for plain FTP.")
    verify_tls: bool = True
    ca_bundle: str | None = Field(default=None, description="PEM file of CAs to trust instead of the system CAs.")
    timeout: float = 60.0
    passive: bool = True
    encoding: str = "utf-8"

    @contextmanager
    def connect(self) -> Iterator["FtpFiles"]:
        """An open, logged-in connection, closed when the block ends. Raises :class:`RemoteFileError` when the
        server cannot be reached, the TLS handshake or certificate check fails, or the login is refused."""
        files = FtpFiles(self)
        try:
            yield files
        finally:
            files.close()

    def tls_context(self) -> ssl.SSLContext:
        """The client TLS context: TLS 1.2 or later, certificate and host name checked unless ``verify_tls``
        is off, ``ca_bundle`` (when set) replacing the system CAs."""
        if not self.verify_tls:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            return context
        return ssl.create_default_context(cafile=self.ca_bundle)


class SessionReusingFTP_TLS(ftplib.FTP_TLS):
    """``ftplib.FTP_TLS`` whose data connections resume the control connection's TLS session.

    RFC 4217 section 10.2 lets a server tie data connections to the authenticated control connection by
    requiring TLS session resumption; vsftpd, ProFTPD and FileZilla Server do by default. Stock ``FTP_TLS``
    wraps each data socket with a fresh session (CPython issue gh-63699, open), which those servers
    answer with 522. The only change: ``session=`` the control socket's current session (with TLS 1.3 the
    latest ticket the server sent on the control connection).
    """

    def ntransfercmd(self, cmd: str, rest: int | str | None = None) -> tuple[socket.socket, int | None]:
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        if self._prot_p:  # type: ignore[attr-defined]
            session = self.sock.session if isinstance(self.sock, ssl.SSLSocket) else None
            conn = self.context.wrap_socket(conn, server_hostname=self.host, session=session)
        return conn, size


class FtpFiles:
    """An open FTP(S) connection implementing :class:`~integration_platform.sources.files.remote_files.RemoteFiles`.

    ``ftp`` is the underlying ``ftplib.FTP`` (a :class:`SessionReusingFTP_TLS` with TLS). Sizes seen by
    :meth:`list` are remembered for the checks of :meth:`download` on the same connection.
    """

    def __init__(self, config: FtpResource) -> None:
        self.config = config
        self.where = f"{config.host}:{config.port}"
        self._sizes: dict[str, int] = {}
        self._mlsd: bool | None = None  # unknown until the first list()
        self._binary = False  # TYPE I in force? ftplib's retrlines (MLSD, NLST) switches to TYPE A
        if config.tls:
            self.ftp: ftplib.FTP = SessionReusingFTP_TLS(
                context=config.tls_context(), timeout=config.timeout, encoding=config.encoding
            )
        else:
            self.ftp = ftplib.FTP(timeout=config.timeout, encoding=config.encoding)
        try:
            self._open()
        except BaseException:
            self.ftp.close()
            raise

    def _open(self) -> None:
        c = self.config
        with self._guard("connect", ""):
            self.ftp.connect(c.host, c.port)
        if isinstance(self.ftp, ftplib.FTP_TLS):
            with self._guard("AUTH TLS", ""):
                self.ftp.auth()
        with self._guard(f"login as {c.username!r}", ""):
            self.ftp.login(c.username, c.password)
        with self._guard("set up", ""):
            if isinstance(self.ftp, ftplib.FTP_TLS):
                self.ftp.prot_p()
            self.ftp.set_pasv(c.passive)
            self.home = self.ftp.pwd()

    # --- errors

    def _reason(self, exc: BaseException) -> str:
        if isinstance(exc, ssl.SSLCertVerificationError):
            return f"TLS verification failed ({exc.verify_message}); trust the server's CA with ca_bundle"
        if isinstance(exc, ssl.SSLError):
            return f"TLS error: {exc.reason or exc}"
        if isinstance(exc, ftplib.Error):
            return f"server replied {str(exc).strip()}"
        if isinstance(exc, TimeoutError):
            return f"timed out after {self.config.timeout:g} s"
        if isinstance(exc, EOFError):
            return "the server closed the connection"
        if isinstance(exc, OSError):
            return f"{type(exc).__name__}: {exc.strerror or exc}"
        if isinstance(exc, UnicodeError):
            return f"a reply or name is not valid {self.config.encoding}"
        return f"{type(exc).__name__}: {exc}"

    def _error(self, action: str, path: str, reason: str) -> RemoteFileError:
        """``FTP host:port: action 'path': reason``, with the password masked should a server echo it."""
        where = f"{action} {path!r}" if path else action
        message = f"FTP {self.where}: {where}: {reason}"
        if self.config.password:
            message = message.replace(self.config.password, "***")
        return RemoteFileError(message)

    @contextmanager
    def _guard(self, action: str, path: str) -> Iterator[None]:
        """Turn what ftplib, sockets and TLS raise inside the block into :class:`RemoteFileError`."""
        try:
            yield
        except FTP_ERRORS as exc:
            raise self._error(action, path, self._reason(exc)) from None

    # --- RemoteFiles

    def list(self, directory: str, accept: Callable[[str], bool] | None = None) -> Iterator[RemoteFile]:
        """The regular files directly in ``directory``: MLSD, or NLST + SIZE + MDTM on servers without MLSD.

        The listing is read completely before the first file is yielded, so errors raise here. Raises
        :class:`RemoteFileError` when the directory does not exist or cannot be read, or a time is unparsable.
        """
        with self._guard("list", directory):
            files = self._list_mlsd(directory, accept) if self._mlsd is not False else None
            if files is None:
                files = self._list_nlst(directory, accept)
        for file in files:
            self._sizes[file.path] = file.size
        return iter(files)

    def download_many(self, todo: "queue.SimpleQueue[Download | None]") -> Generator[tuple[Download, int], None, None]:
        """:meth:`download` of each file put on ``todo``, one after the other (``download_one_by_one``)."""
        return download_one_by_one(self, todo)

    def download(self, path: str, local: Path, listed_size: int | None = None) -> int:
        """``RETR`` remote ``path`` into ``local`` (created or truncated); returns the bytes copied.

        Raises :class:`RemoteFileError` when the file cannot be read or the byte count differs from
        ``listed_size``, else from the size :meth:`list` saw on this connection (or SIZE reports): short
        of it when the transfer was cut, over it when the file grew since. ``local`` is removed on
        failure; an ``OSError`` opening it is raised as it is.
        """
        with self._guard("download", path):
            expected = listed_size if listed_size is not None else self._sizes.get(path)
            if expected is None:
                expected = self._size(path)
        try:
            with local.open("wb") as out, self._guard("download", path):
                self._binary = True  # retrbinary sends TYPE I first
                self.ftp.retrbinary(f"RETR {path}", out.write, blocksize=DOWNLOAD_BLOCKSIZE)
                copied = out.tell()
            if expected is not None and copied != expected:
                raise self._error("download", path, f"copied {copied} bytes but the server listed {expected}")
        except BaseException:
            local.unlink(missing_ok=True)
            raise
        return copied

    def rename(self, path: str, target: str) -> None:
        """Move ``path`` to ``target`` (RNFR/RNTO); when RNTO is refused because the target's directory is
        missing, create it (MKD, parents too) and try once more. Raises :class:`RemoteFileError`
        (:class:`TargetExistsError` when RNTO is refused and ``target`` exists: most servers overwrite, IIS
        and ProFTPD without overwrite refuse)."""
        with self._guard("rename", f"{path} -> {target}"):
            try:
                self._rename(path, target)
            except ftplib.error_perm as exc:
                parent = posixpath.dirname(target.rstrip("/"))
                if getattr(exc, "stage", None) == "RNTO" and self._exists(target):
                    error = self._error("rename", f"{path} -> {target}", f"it exists ({self._reason(exc)})")
                    raise TargetExistsError(str(error)) from exc
                if getattr(exc, "stage", None) != "RNTO" or not parent or self._is_dir(parent):
                    raise
                with self._guard("create directory", parent):
                    self._makedirs(parent)
                self._rename(path, target)
        self._sizes.pop(path, None)

    def close(self) -> None:
        """QUIT politely, or just close the sockets when the connection is already broken. Idempotent."""
        if self.ftp.sock is None:
            return
        try:
            self.ftp.quit()
        except FTP_ERRORS:
            pass
        finally:
            self.ftp.close()

    # --- helpers

    def _path(self, directory: str, name: str) -> str:
        return name if directory in ("", ".") else posixpath.join(directory, name)

    def _list_mlsd(self, directory: str, accept: Callable[[str], bool] | None) -> Files | None:
        """Regular files per MLSD, or ``None`` when the server has no MLSD."""
        try:
            self._binary = False
            entries = list(self.ftp.mlsd(directory))
        except ftplib.error_perm as exc:
            if self._mlsd is None and str(exc).startswith(NOT_IMPLEMENTED):
                self._mlsd = False
                return None
            if self._missing(directory):
                raise MissingDirectoryError(str(self._error("list", directory, "no such directory"))) from None
            raise
        self._mlsd = True
        files: Files = []
        for name, facts in entries:
            if facts.get("type", "").lower() != "file" or name in ("", ".", ".."):
                continue
            if accept is not None and not accept(name):
                continue
            path = self._path(directory, name)
            size = int(facts["size"]) if "size" in facts else self._size(path)
            mtime = parse_time_val(facts["modify"]) if "modify" in facts else self._mdtm(path)
            if size is None or mtime is None:
                raise self._error("list", path, "the server gives neither a size/modify fact nor SIZE/MDTM")
            files.append(RemoteFile(path, name, size, mtime))
        return files

    def _list_nlst(self, directory: str, accept: Callable[[str], bool] | None) -> Files:
        if not self._is_dir(directory or "."):
            if self._missing(directory):
                raise MissingDirectoryError(str(self._error("list", directory, "no such directory")))
            raise self._error("list", directory, "the server refuses to change into it")
        try:
            self._binary = False
            names = self.ftp.nlst(directory) if directory else self.ftp.nlst()
        except (ftplib.error_perm, ftplib.error_temp) as exc:
            if "no files found" in str(exc).lower():  # ProFTPD / wu-ftpd answer an empty NLST with 450/550
                return []
            raise
        files: Files = []
        for entry in names:
            name = posixpath.basename(entry.rstrip("/"))  # some servers answer "dir/name", others "name"
            if name in ("", ".", "..") or (accept is not None and not accept(name)):
                continue
            path = self._path(directory, name)
            try:
                size = self._size(path)
            except ftplib.error_perm:  # a directory, a link to one, or gone since NLST: not a regular file
                continue
            mtime = self._mdtm(path)
            if size is None or mtime is None:
                raise self._error("list", path, "the server has no MLSD and no SIZE/MDTM")
            files.append(RemoteFile(path, name, size, mtime))
        return files

    def _size(self, path: str) -> int | None:
        """SIZE in binary mode, ``None`` when the server has no SIZE; ``error_perm`` when it is refused.

        SIZE in ASCII mode is refused (pyftpdlib) or counts converted line ends, so TYPE I is set first.
        """
        if not self._binary:
            self.ftp.voidcmd("TYPE I")
            self._binary = True
        try:
            return self.ftp.size(path)
        except ftplib.error_perm as exc:
            if str(exc).startswith(NOT_IMPLEMENTED):
                return None
            raise

    def _mdtm(self, path: str) -> float | None:
        """MDTM (RFC 3659 section 3) as Unix seconds, ``None`` when the server has no MDTM."""
        try:
            reply = self.ftp.voidcmd(f"MDTM {path}")
        except ftplib.error_perm as exc:
            if str(exc).startswith(NOT_IMPLEMENTED):
                return None
            raise
        return parse_time_val(reply[3:].strip())

    def _missing(self, directory: str) -> bool:
        """Whether ``directory`` is known not to exist: its parent lists, without its name. A 550 says
        "missing" and "not allowed" alike, and a refused CWD or listing is no proof either: ``False``
        whenever the parent cannot be listed."""
        parent, name = posixpath.split(directory.rstrip("/"))
        if not name or name in (".", ".."):
            return False
        try:
            self._binary = False
            if self._mlsd is not False:
                names = [entry for entry, _ in self.ftp.mlsd(parent or "")]
            else:
                names = [posixpath.basename(n.rstrip("/")) for n in self.ftp.nlst(parent or ".")]
        except FTP_ERRORS:
            return False
        return name not in names

    def _exists(self, path: str) -> bool:
        """Whether ``path`` is a file SIZE answers for (``False`` when it is refused, for now or for good, or
        not implemented)."""
        try:
            return self._size(path) is not None
        except (ftplib.error_perm, ftplib.error_temp):
            return False

    def _is_dir(self, directory: str) -> bool:
        """Whether CWD into ``directory`` works; the working directory is set back to the login one."""
        try:
            self.ftp.cwd(directory)
        except ftplib.error_perm:
            return False
        finally:
            self.ftp.cwd(self.home)
        return True

    def _makedirs(self, directory: str) -> None:
        try:
            self.ftp.mkd(directory)
        except ftplib.error_perm:
            if self._is_dir(directory):  # made meanwhile by someone else
                return
            parent = posixpath.dirname(directory.rstrip("/"))
            if not parent or parent == directory or self._is_dir(parent):
                raise
            self._makedirs(parent)
            self.ftp.mkd(directory)

    def _rename(self, path: str, target: str) -> None:
        """RNFR + RNTO; an ``error_perm`` from RNTO is tagged ``stage = "RNTO"``."""
        reply = self.ftp.sendcmd(f"RNFR {path}")
        if not reply.startswith("3"):
            raise ftplib.error_reply(reply)
        try:
            self.ftp.voidcmd(f"RNTO {target}")
        except ftplib.error_perm as exc:
            exc.stage = "RNTO"  # type: ignore[attr-defined]
            raise


def parse_time_val(value: str) -> float:
    """An RFC 3659 time-val (``YYYYMMDDHHMMSS[.sss]``, always UTC) as Unix seconds.

    Raises :class:`ValueError` on anything else.
    """
    whole, _, fraction = value.strip().partition(".")
    if len(whole) != 14 or not whole.isdigit() or (fraction and not fraction.isdigit()):
        raise ValueError(f"not an RFC 3659 time-val: {value!r}")
    stamp = dt.datetime.strptime(whole, "%Y%m%d%H%M%S").replace(tzinfo=dt.UTC)
    return stamp.timestamp() + (float(f"0.{fraction}") if fraction else 0.0)
