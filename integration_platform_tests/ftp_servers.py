"""A real FTP / explicit-FTPS server for the tests: pyftpdlib in its own process (``sandbox/ftp/server.py``).

``ftps_server(root)`` serves ``root`` on 127.0.0.1 with a random user and password and, with ``tls=True`` (the
default), a freshly generated self-signed certificate for 127.0.0.1 that the tests trust through ``ca_bundle``;
TLS is then required on the control channel and on every data channel. The process is stopped by pid when the
``with`` block ends. A missing pyftpdlib / pyOpenSSL skips the test (fails in CI) through ``services.missing``.
"""

import datetime as dt
import importlib.util
import ipaddress
import os
import queue
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from integration_platform_tests.services import REPO, missing, stop

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


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A P-256 certificate for IP 127.0.0.1, valid for a day and its own issuer, and its key: two PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "integration-platform test FTP server")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


def _stderr_text(stderr: IO[bytes]) -> str:
    stderr.flush()
    stderr.seek(0)
    return stderr.read().decode("utf-8", "replace")[-4000:]


def _port_when_listening(process: subprocess.Popen[bytes], stderr: IO[bytes]) -> int:
    """The port of the server's ``listening on ftp://127.0.0.1:<port>`` line; raises when it dies or stays silent."""
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:  # keeps draining stdout so the child can never block on a full pipe
        assert process.stdout is not None
        for raw in process.stdout:
            lines.put(raw.decode("utf-8", "replace").strip())

    threading.Thread(target=pump, name="ftp-server-stdout", daemon=True).start()
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.1)
        except queue.Empty:
            if process.poll() is not None:
                raise RuntimeError(f"FTP server exited with {process.returncode}:\n{_stderr_text(stderr)}") from None
            continue
        if line.startswith("listening on ftp://127.0.0.1:"):
            return int(line.rsplit(":", 1)[1])
    raise TimeoutError(f"FTP server printed no 'listening on' line in {START_SECONDS}s:\n{_stderr_text(stderr)}")


@contextmanager
def ftps_server(
    root: Path, *, tls: bool = True, require_session_reuse: bool = False, mlsd: bool = True
) -> Iterator[FtpServer]:
    """Serve ``root`` (read, write, rename, mkdir for the user) until the block ends.

    ``tls``: explicit FTPS with TLS required on control and data channels; ``require_session_reuse``: data
    channels must resume the control channel's TLS session (as vsftpd requires by default); ``mlsd=False``:
    the server answers MLSD/MLST with 500, so clients must fall back to NLST + SIZE + MDTM.
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
        stderr = stack.enter_context(tempfile.TemporaryFile())
        env = {**os.environ, PASSWORD_ENV: password}
        process = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=stderr, env=env)
        stack.callback(stop, process)
        port = _port_when_listening(process, stderr)
        yield FtpServer("127.0.0.1", port, user, password, ca_bundle, root, process)
