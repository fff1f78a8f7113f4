"""Real services for the tests: the machine's PostgreSQL and MariaDB, and servers the tests start.

Each helper fails the test loudly when a service is missing and ``CI`` is set; on a
developer machine it skips with the reason instead.
"""

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from sandbox import ServerMissing
from sandbox.object_stores import moto_s3

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
PG_HOST, PG_PORT = "127.0.0.1", 5432
MARIADB_HOST, MARIADB_PORT = "127.0.0.1", 3306


def missing(what: str) -> None:
    """Fail in CI, skip elsewhere, naming what is missing."""
    if os.environ.get("CI"):
        pytest.fail(f"required test service or data missing in CI: {what}")
    pytest.skip(f"missing: {what}")


def require_port(host: str, port: int, name: str) -> None:
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError:
        missing(f"{name} on {host}:{port}")


def shared_file(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        missing(f"shared data file {path}")
    return path


@contextmanager
def moto_server() -> Iterator[str]:
    """A real S3 API server (moto in server mode) on 127.0.0.1; yields its endpoint URL."""
    with ExitStack() as stack:
        try:
            endpoint = moto_s3(stack)
        except ServerMissing as exc:
            missing(str(exc))
        yield endpoint


def psql(database: str, *args: str) -> str:
    """Run psql against the local server; returns stdout, raises on any error."""
    if not shutil.which("psql"):
        missing("psql client")
    result = subprocess.run(
        [
            "psql",
            "-h",
            PG_HOST,
            "-p",
            str(PG_PORT),
            "-U",
            "postgres",
            "-d",
            database,
            "-v",
            "ON_ERROR_STOP=1",
            "-q",
            *args,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"psql {' '.join(args)} failed: {result.stderr[-2000:]}")
    return result.stdout


def mariadb(sql_text: str, database: str | None = None) -> str:
    """Run SQL through the mariadb client as root; raises on any error."""
    client = shutil.which("mariadb") or shutil.which("mysql")
    if not client:
        missing("mariadb client")
    assert client is not None
    args = [client, "-h", MARIADB_HOST, "-P", str(MARIADB_PORT), "-u", "root", "--batch"]
    if database:
        args += ["-D", database]
    result = subprocess.run(args, input=sql_text, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"mariadb failed: {result.stderr[-2000:]}")
    return result.stdout
