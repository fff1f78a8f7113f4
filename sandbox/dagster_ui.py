"""``dagster-webserver`` and ``dagster-daemon run`` as a user starts them, for the UI tests and the benchmarks.

:func:`webserver_and_daemon` starts both on a workspace file, each in a process group of its own (so
that stopping it reaches the code servers and run workers it spawned), waits until the webserver
answers ``/server_info``, and stops both by pid (SIGTERM to the group, SIGKILL after
:data:`STOP_TIMEOUT_S`). :func:`graphql` sends one query to the webserver's ``/graphql``, as the UI
does; :data:`LAUNCH_BACKFILL` and :data:`BACKFILL_STATUS` are the UI's "Launch backfill" mutation and
a backfill's status, from Dagster's GraphQL schema (``dagster_graphql/schema``).
"""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from sandbox.processes import free_port

START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 20.0

LAUNCH_BACKFILL = """
mutation Backfill($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
  }
}
"""
BACKFILL_STATUS = """
query Backfill($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    ... on PartitionBackfill { status runs(limit: 10) { runId status } }
  }
}
"""
#: Backfill statuses after which nothing more happens to it.
BACKFILL_RUNNING = ("REQUESTED", "CANCELING")


class DagsterUIError(RuntimeError):
    """The webserver or the daemon did not start, or a GraphQL request failed (the message says which)."""


@dataclass(frozen=True)
class DagsterServices:
    """A running webserver (``url``) and daemon; ``logs``: their combined stdout and stderr."""

    url: str
    logs: tuple[Path, ...]

    def log_tails(self, lines: int = 40) -> str:
        """The last ``lines`` lines of each log, headed by its name."""
        parts = []
        for log in self.logs:
            text = log.read_text(errors="replace").splitlines() if log.exists() else []
            parts.append(f"--- {log.name} (last {lines} lines) ---\n" + "\n".join(text[-lines:]))
        return "\n".join(parts)


def graphql(url: str, query: str, variables: dict[str, Any] | None = None, timeout: float = 60.0) -> dict[str, Any]:
    """POST ``query`` with ``variables`` to ``url``'s ``/graphql``; returns the response's ``data``.

    Raises :class:`DagsterUIError` on an HTTP error status or GraphQL ``errors`` (both quoted), and
    ``requests.RequestException`` when the webserver cannot be reached within ``timeout`` seconds.
    """
    response = requests.post(f"{url}/graphql", json={"query": query, "variables": variables or {}}, timeout=timeout)
    if not response.ok:
        raise DagsterUIError(f"GraphQL at {url}: HTTP {response.status_code}: {response.text[:2000]}")
    body: dict[str, Any] = response.json()
    if body.get("errors"):
        raise DagsterUIError(f"GraphQL at {url}: {body['errors']}")
    return dict(body["data"])


def _start(command: list[str], cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _group_alive(proc: subprocess.Popen[bytes]) -> bool:
    """Whether any process of the group ``proc`` leads (pgid == pid) is left; reaps ``proc`` itself."""
    proc.poll()
    try:
        os.killpg(proc.pid, 0)
    except ProcessLookupError:
        return False
    return True


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group we created (pgid == pid), whether or not its leader is still there (its
    code servers and run workers may be), and SIGKILL the group if anything of it is left after
    :data:`STOP_TIMEOUT_S`."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while _group_alive(proc) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _group_alive(proc):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=STOP_TIMEOUT_S)


@contextmanager
def webserver_and_daemon(
    workspace: Path, cwd: Path, env: dict[str, str], logs: Path, bin_dir: Path | None = None
) -> Iterator[DagsterServices]:
    """Start ``dagster-webserver -w workspace`` on a free loopback port and ``dagster-daemon run -w
    workspace``, both in ``cwd`` with exactly ``env`` (it must hold ``DAGSTER_HOME``), logging to
    ``logs/webserver.log`` and ``logs/daemon.log``; yields once ``/server_info`` answers. Both are
    stopped by pid on exit. ``bin_dir``: where the two commands are (default: this interpreter's).

    Raises :class:`DagsterUIError` (with both logs' tails) when either exits during start-up or the
    webserver does not answer within :data:`START_TIMEOUT_S`. Run the instance's storage migrations
    first (open it once): two processes starting on an empty ``DAGSTER_HOME`` race to create them.
    """
    bin_dir = bin_dir or Path(sys.executable).parent
    url = f"http://127.0.0.1:{free_port()}"
    web_log, daemon_log = logs / "webserver.log", logs / "daemon.log"
    services = DagsterServices(url=url, logs=(web_log, daemon_log))
    host, port = url.removeprefix("http://").split(":")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        webserver = [str(bin_dir / "dagster-webserver"), "-w", str(workspace), "-h", host, "-p", port]
        procs.append(_start(webserver, cwd, env, web_log))
        procs.append(_start([str(bin_dir / "dagster-daemon"), "run", "-w", str(workspace)], cwd, env, daemon_log))
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            for proc in procs:
                if proc.poll() is not None:
                    raise DagsterUIError(
                        f"{proc.args!r} exited with {proc.returncode} during start-up\n{services.log_tails()}"
                    )
            try:
                if requests.get(f"{url}/server_info", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise DagsterUIError(
                    f"{url}/server_info did not answer within {START_TIMEOUT_S}s\n{services.log_tails()}"
                )
            time.sleep(0.5)
        yield services
    finally:
        errors = []
        for proc in reversed(procs):
            try:
                _stop(proc)
            except Exception as exc:  # still stop the other one
                errors.append(exc)
        if errors:
            raise errors[0]
