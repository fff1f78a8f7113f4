"""A MariaDB server of our own, for change data capture: row-based binlog with full row metadata.

The machine's shared MariaDB runs without a binlog, so the CDC tests start their own ``mariadbd``:
``mariadb-install-db`` into a temporary folder (owned by the ``mysql`` user when run as root),
listening on 127.0.0.1 only, ``binlog_format=ROW``, ``binlog_row_image=FULL`` and
``binlog_row_metadata=FULL`` (column names, signedness and SET/ENUM members travel with each
table map, so unsigned and SET columns decode right), stopped by pid and its folder removed.
"""

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sandbox import ServerMissing
from sandbox.processes import free_port, stop, wait_for_port

SETTINGS = {
    "bind-address": "127.0.0.1",
    "server-id": "1",
    "log-bin": "binlog",
    "binlog-format": "ROW",
    "binlog-row-image": "FULL",
    "binlog-row-metadata": "FULL",
    "innodb-buffer-pool-size": "256M",
    "innodb-flush-log-at-trx-commit": "2",  # a throwaway server: durability is not what the tests measure
    "sync-binlog": "0",
}


@contextmanager
def binlog_mariadb(settings: dict[str, str] | None = None) -> Iterator[int]:
    """Start the server with :data:`SETTINGS` (and ``settings`` over them); yields its port on
    127.0.0.1 (user ``root``, no password). Raises :class:`~sandbox.ServerMissing` without
    ``mariadbd`` / ``mariadb-install-db`` and ``RuntimeError`` when the server exits at start."""
    server, install = shutil.which("mariadbd") or "/usr/sbin/mariadbd", shutil.which("mariadb-install-db")
    if not os.access(server, os.X_OK) or install is None:
        raise ServerMissing("mariadbd and mariadb-install-db (apt-get install mariadb-server)")
    folder = Path(tempfile.mkdtemp(prefix="ip-mariadb-"))
    user = "mysql" if os.geteuid() == 0 else None
    if user:
        shutil.chown(folder, user, user)
    try:
        subprocess.run(
            [install, "--no-defaults", f"--datadir={folder / 'data'}", "--auth-root-authentication-method=normal",
             "--skip-test-db", *([f"--user={user}"] if user else [])],
            check=True, capture_output=True,
        )  # fmt: skip
        port = free_port()
        options = [f"--{name}={value}" for name, value in {**SETTINGS, **(settings or {})}.items()]
        process = subprocess.Popen(
            [server, "--no-defaults", f"--datadir={folder / 'data'}", f"--port={port}",
             f"--socket={folder / 'mariadb.sock'}", f"--pid-file={folder / 'mariadb.pid'}",
             f"--log-error={folder / 'error.log'}", *([f"--user={user}"] if user else []), *options],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            log = folder / "error.log"
            wait_for_port(port, process, details=lambda: log.read_text()[-2000:] if log.exists() else "")
            yield port
        finally:
            stop(process)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
