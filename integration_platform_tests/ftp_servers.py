"""A real FTP / explicit-FTPS server for the tests: pyftpdlib in its own process (``sandbox/ftp/server.py``).

``ftps_server(root)`` serves ``root`` on 127.0.0.1 with a random user and password and, with ``tls=True`` (the
default), a freshly generated self-signed certificate for 127.0.0.1 that the tests trust through ``ca_bundle``;
TLS is then required on the control channel and on every data channel. The process is stopped by pid when the
``with`` block ends. A missing pyftpdlib / pyOpenSSL skips the test (fails in CI) through ``services.missing``.
"""

import importlib.util
import os
import secrets
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from integration_platform_tests.certificates import self_signed_certificate
from integration_platform_tests.services import REPO, missing
from sandbox.processes import start_listening

FTP_SCRIPT = REPO / "sandbox" / "ftp" / "server.py"
START_SECONDS = 30.0
PASSWORD_ENV = "IP_TEST_FTP_PASSWORD"


@dataclass(frozen=True)
class FtpServer:
    """A running server: where it listens, its one user, the PEM file to trust (``None`` without TLS), the
    local directory it serves."""

    host: str
    port: int
    user: str
    password: str
    ca_bundle: Path | None
    root: Path
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        """``ftp://127.0.0.1:<port>`` (explicit FTPS starts on the same plain port)."""
        return f"ftp://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        """The server process id."""
        return self.process.pid


@contextmanager
def ftps_server(
    root: Path,
    *,
    tls: bool = True,
    require_session_reuse: bool = False,
    mlsd: bool = True,
    hostile_names: tuple[str, ...] = (),
    max_logins: int = 0,
    refused_dirs: tuple[str, ...] = (),
    overwrite: bool = True,
) -> Iterator[FtpServer]:
    """Serve ``root`` (read, write, rename, mkdir for the user) until the block ends.

    ``tls``: explicit FTPS with TLS required on control and data channels; ``require_session_reuse``: data
    channels must resume the control channel's TLS session (as vsftpd requires by default); ``mlsd=False``:
    the server answers MLSD/MLST with 500, so clients must fall back to NLST + SIZE + MDTM; ``hostile_names``:
    every MLSD listing also lists these names (``../../x``) as files, as a hostile server would;
    ``max_logins``: at most this many sessions at once from 127.0.0.1 (0: no limit), as partner servers
    allowing one login per user do; ``refused_dirs``: folders under ``root`` the user may not enter or
    list (550, as for a missing folder); ``overwrite=False``: a rename onto an existing file is refused (550),
    as IIS refuses it.
    """
    if importlib.util.find_spec("pyftpdlib") is None or (tls and importlib.util.find_spec("OpenSSL") is None):
        missing("pyftpdlib==2.2.0 and pyopenssl (pip install pyftpdlib==2.2.0 pyopenssl)")
    user, password = "partner", secrets.token_urlsafe(16)
    args = [str(FTP_SCRIPT), "--root", str(root), "--port", "0", "--user", user, "--password-env", PASSWORD_ENV]
    with ExitStack() as stack:
        ca_bundle: Path | None = None
        if tls:
            cert, key = self_signed_certificate(Path(stack.enter_context(tempfile.TemporaryDirectory())))
            args += ["--tls", "--cert", str(cert), "--key", str(key)]
            ca_bundle = cert
            if require_session_reuse:
                args.append("--require-session-reuse")
        if not mlsd:
            args.append("--no-mlsd")
        for name in hostile_names:
            args += ["--hostile-name", name]
        if max_logins:
            args += ["--max-logins", str(max_logins)]
        for refused in refused_dirs:
            args += ["--refuse-dir", refused]
        if not overwrite:
            args.append("--no-overwrite")
        env = {**os.environ, PASSWORD_ENV: password}
        process, url = start_listening(stack, args, "FTP server", env)
        port = int(url.rsplit(":", 1)[1])
        yield FtpServer("127.0.0.1", port, user, password, ca_bundle, root, process)
