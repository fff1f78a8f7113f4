"""A PostgreSQL cluster of our own, for change data capture: ``wal_level=logical`` on a loopback port.

The machine's shared PostgreSQL runs with ``wal_level=replica``, which has no logical decoding, so
the CDC tests and benchmark start their own cluster from Debian's binaries: ``initdb`` into a
temporary folder (as the ``postgres`` user when run as root: PostgreSQL refuses to run as root),
``postgres`` listening on 127.0.0.1 only, stopped by pid (SIGINT: PostgreSQL's fast shutdown) and
its folder removed.
"""

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from sandbox import ServerMissing
from sandbox.processes import free_port, stop, wait_for_port

SETTINGS = {
    "wal_level": "logical",
    "listen_addresses": "127.0.0.1",
    "max_replication_slots": "20",
    "max_wal_senders": "20",
    "fsync": "off",  # a throwaway cluster: durability is not what the tests measure
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "shared_buffers": "256MB",
    "max_wal_size": "4GB",
}


def binaries() -> Path:
    """The folder of the newest installed PostgreSQL server binaries (Debian: /usr/lib/postgresql/<v>/bin)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]))
    if not found:
        raise ServerMissing("PostgreSQL server binaries (apt-get install postgresql-15)")
    return Path(found[-1]).parent


def accepting(uri: str, process: subprocess.Popen[bytes], seconds: float = 60) -> None:
    """Wait until the server at ``uri`` accepts a session: it listens before its startup (crash
    recovery, the first checkpoint) has finished and answers "the database system is starting up"
    meanwhile. Raises ``RuntimeError`` when it exits or is not ready after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            psycopg.connect(uri, connect_timeout=5).close()
            return
        except psycopg.OperationalError as error:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL at {uri} did not start: {error}") from error
            time.sleep(0.05)


@contextmanager
def logical_postgres(settings: dict[str, str] | None = None) -> Iterator[str]:
    """Start a cluster with :data:`SETTINGS` (and ``settings`` over them); yields its libpq URI
    (``postgresql://postgres@127.0.0.1:<port>/postgres``, trust authentication). Raises
    :class:`~sandbox.ServerMissing` without Debian's PostgreSQL binaries and ``RuntimeError`` when
    the server exits at start."""
    folder_of = binaries()
    folder = Path(tempfile.mkdtemp(prefix="ip-pg-"))
    user = group = None
    if os.geteuid() == 0:
        user = group = "postgres"
        shutil.chown(folder, "postgres", "postgres")
    try:
        subprocess.run(
            [str(folder_of / "initdb"), "-D", str(folder / "data"), "-A", "trust", "-U", "postgres", "-E", "UTF8"],
            check=True,
            capture_output=True,
            user=user,
            group=group,
        )
        port = free_port()
        options = [f"-c{name}={value}" for name, value in {**SETTINGS, **(settings or {})}.items()]
        with open(folder / "server.log", "wb") as log:
            process = subprocess.Popen(
                [str(folder_of / "postgres"), "-D", str(folder / "data"), "-p", str(port), "-k", str(folder), *options],
                stdout=log,
                stderr=subprocess.STDOUT,
                user=user,
                group=group,
            )
        try:
            wait_for_port(port, process, details=lambda: (folder / "server.log").read_text()[-2000:])
            uri = f"postgresql://postgres@127.0.0.1:{port}/postgres"
            accepting(uri, process)
            yield uri
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
            stop(process)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
