"""Reverse-ETL targets for tests and benchmarks, each on a free port and stopped by pid:
``sandbox/push_target/server.py`` (SQLite, honours Idempotency-Key, latency, rejections) and datasette 1.0a41
with its JSON write API."""

import secrets
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from sandbox.http_servers import HttpServer, datasette_executable, serve_datasette
from sandbox.processes import start_listening

SCRIPT = Path(__file__).resolve().parent / "server.py"


class PushTarget(HttpServer):
    """A running target (``url``, ``process``, ``pid``); ``stats()`` counts requests,
    stored_requests, replays, rejected, unauthorised and items; ``reset()`` forgets everything."""

    def items(self) -> list[dict[str, Any]]:
        """Every stored item: ``{"key", "path", "item"}`` in arrival order."""
        response = requests.get(f"{self.url}/_items", timeout=60)
        response.raise_for_status()
        result: list[dict[str, Any]] = response.json()
        return result


@contextmanager
def push_target(
    db: Path, *, latency_ms: float = 0, token: str | None = None, reject_regex: str | None = None
) -> Iterator[PushTarget]:
    """Start the target storing into the SQLite file ``db``; yields it and stops it by pid afterwards."""
    args = [str(SCRIPT), "--db", str(db), "--port", "0", "--latency-ms", str(latency_ms)]
    if token:
        args += ["--token", token]
    if reject_regex:
        args += ["--reject-regex", reject_regex]
    with ExitStack() as stack:
        process, url = start_listening(stack, args, "push target")
        yield PushTarget(url, process)


@dataclass
class DatasetteTarget:
    """datasette serving a SQLite file writable through its JSON write API, with an API token for ``root``."""

    url: str
    token: str
    db: Path
    process: subprocess.Popen[bytes]


@contextmanager
def datasette_target(db: Path, table_sql: str) -> Iterator[DatasetteTarget]:
    """Create ``db`` with ``table_sql``, serve it with the venv's datasette (``--root``, a random secret) and yield
    the server with a signed ``dstok_`` token for the root actor (``datasette create-token``). Stopped by pid."""
    executable = datasette_executable()
    with sqlite3.connect(db) as conn:
        conn.executescript(table_sql)
    secret = secrets.token_hex(16)
    token = subprocess.run(
        [str(executable), "create-token", "root", "--secret", secret], capture_output=True, text=True, check=True
    ).stdout.strip()
    with ExitStack() as stack:
        process, url = serve_datasette(stack, db, "--root", "--secret", secret)
        yield DatasetteTarget(url, token, db, process)
