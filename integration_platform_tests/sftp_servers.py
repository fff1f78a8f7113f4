"""The SFTP tests' OpenSSH server: :func:`sandbox.sshd.sshd`, where a missing ``sshd`` fails the test in CI
and skips it elsewhere."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from integration_platform_tests.services import missing
from sandbox.sshd import SshServer, fingerprint_of, sshd, sshd_missing

__all__ = ["SshServer", "fingerprint_of", "openssh_server"]


@contextmanager
def openssh_server(root: Path) -> Iterator[SshServer]:
    """:func:`sshd` for a test: a missing sshd fails the test in CI and skips it elsewhere."""
    absent = sshd_missing()
    if absent:
        missing(absent)
    with sshd(root) as server:
        yield server
