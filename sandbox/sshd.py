"""A real OpenSSH ``sshd`` serving SFTP on 127.0.0.1, for the SFTP tests and the SFTP benchmark.

:func:`sshd` starts ``/usr/sbin/sshd -D -e -f <config>`` (Debian package ``openssh-server``)
with its own configuration in a temporary folder: a free high port on 127.0.0.1 only, a
freshly generated ed25519 host key, public-key authentication only (one freshly generated
ed25519 client key in its own ``AuthorizedKeysFile``), ``Subsystem sftp internal-sftp`` (or
``sftp_subsystem``), no
PAM, no chroot (clients use absolute paths under the served folder), running as the current
user. It is stopped by pid. It does not import pytest, so the SFTP benchmarks use it too; when
``sshd`` or ``ssh-keygen`` is absent it raises :class:`~sandbox.ServerMissing`.
(``integration_platform_tests.sftp_servers.openssh_server`` is the pytest side.)
"""

import base64
import hashlib
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from sandbox import ServerMissing
from sandbox.processes import free_port, stop, wait_for_port

SSHD = "/usr/sbin/sshd"
#: OpenSSH's compile-time privilege-separation directory; sshd refuses to start as root without it.
PRIVSEP_DIR = Path("/run/sshd")
START_SECONDS = 30.0


def _keygen(path: Path, comment: str) -> None:
    """A new unencrypted ed25519 key pair at ``path`` / ``path.pub`` (OpenSSH private key format)."""
    for old in (path, path.with_name(path.name + ".pub")):
        old.unlink(missing_ok=True)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def fingerprint_of(public_key_line: str) -> str:
    """The OpenSSH SHA256 fingerprint (``SHA256:<base64 without padding>``, as ``ssh-keygen -lf`` prints)
    of a public key line ``<type> <base64 blob> [comment]``."""
    blob = base64.b64decode(public_key_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


@dataclass
class SshServer:
    """A running sshd: where it listens, how to log in, and its host key as clients should pin it.

    ``private_key_pem`` is the client key (OpenSSH private key format, unencrypted), also at
    ``private_key_path`` (mode 0600, for ``ssh``/``sftp -i``). ``known_hosts`` is an OpenSSH
    known_hosts file holding ``known_hosts_line`` (``[127.0.0.1]:<port> ssh-ed25519 ...``).
    """

    root: Path
    workdir: Path
    host: str
    port: int
    username: str
    private_key_path: Path
    process: "subprocess.Popen[bytes] | None" = None
    #: The ``Subsystem sftp`` command (a test may set one that never answers, then restart)
    sftp_subsystem: str = "internal-sftp"
    log: Path = field(init=False)
    config: Path = field(init=False)
    host_key_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.workdir / "sshd.log"
        self.config = self.workdir / "sshd_config"
        self.host_key_path = self.workdir / "ssh_host_ed25519_key"

    @property
    def private_key_pem(self) -> str:
        return self.private_key_path.read_text()

    @property
    def host_public_key(self) -> str:
        """The host key's public line ``ssh-ed25519 <base64>`` (comment dropped)."""
        return " ".join(self.host_key_path.with_name(self.host_key_path.name + ".pub").read_text().split()[:2])

    @property
    def host_key_fingerprint(self) -> str:
        return fingerprint_of(self.host_public_key)

    @property
    def known_hosts_line(self) -> str:
        return f"[{self.host}]:{self.port} {self.host_public_key}"

    @property
    def known_hosts(self) -> Path:
        """A known_hosts file with the host key of this moment (rewritten by each access)."""
        path = self.workdir / "known_hosts"
        path.write_text(self.known_hosts_line + "\n")
        return path

    def write_known_hosts(self, path: Path) -> Path:
        """Write the current host key as a known_hosts file at ``path`` (kept when the key is replaced)."""
        path.write_text(self.known_hosts_line + "\n")
        return path

    def start(self) -> None:
        """Write the configuration and start sshd in the foreground (``-D``), logging to ``sshd.log``."""
        self.config.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    f"ListenAddress {self.host}",
                    f"HostKey {self.host_key_path}",
                    f"PidFile {self.workdir / 'sshd.pid'}",
                    f"AuthorizedKeysFile {self.workdir / 'authorized_keys'}",
                    f"AllowUsers {self.username}",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PermitRootLogin prohibit-password",
                    "StrictModes no",
                    "UsePAM no",
                    "UseDNS no",
                    "X11Forwarding no",
                    "AllowTcpForwarding no",
                    "PrintMotd no",
                    "MaxStartups 100:30:200",
                    "LogLevel INFO",
                    f"Subsystem sftp {self.sftp_subsystem}",
                    "",
                ]
            )
        )
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(self.config)], stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        wait_for_port(
            self.port,
            self.process,
            START_SECONDS,
            lambda: self.log.read_text(errors="replace")[-2000:] if self.log.exists() else "",
        )

    def _log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)
            self.process = None

    def replace_host_key(self) -> str:
        """Restart sshd on the same port with a newly generated host key; returns its fingerprint."""
        self.stop()
        _keygen(self.host_key_path, "replaced host key")
        self.start()
        return self.host_key_fingerprint


def sshd_missing() -> str | None:
    """What is missing to run :func:`sshd` (``None`` when nothing is)."""
    if not os.access(SSHD, os.X_OK):
        return f"{SSHD} (Debian package openssh-server)"
    if shutil.which("ssh-keygen") is None:
        return "ssh-keygen (Debian package openssh-client)"
    return None


@contextmanager
def sshd(root: Path) -> Iterator[SshServer]:
    """A real OpenSSH sshd serving ``root`` (by absolute path) over SFTP on 127.0.0.1; stopped by pid on exit.

    Raises :class:`~sandbox.ServerMissing` when ``/usr/sbin/sshd`` or ``ssh-keygen`` is absent.
    """
    absent = sshd_missing()
    if absent:
        raise ServerMissing(absent)
    if os.geteuid() == 0 and not PRIVSEP_DIR.is_dir():
        PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ip-sshd-") as tmp:
        workdir = Path(tmp)
        username = pwd.getpwuid(os.geteuid()).pw_name
        client_key = workdir / "client_ed25519"
        _keygen(client_key, "integration-platform test client")
        (workdir / "authorized_keys").write_text(client_key.with_name(client_key.name + ".pub").read_text())
        server = SshServer(
            root=root.resolve(),
            workdir=workdir,
            host="127.0.0.1",
            port=free_port(),
            username=username,
            private_key_path=client_key,
        )
        _keygen(server.host_key_path, "integration-platform test host key")
        server.start()
        try:
            yield server
        finally:
            server.stop()
