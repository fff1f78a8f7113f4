"""HTTP servers started as processes on 127.0.0.1 for tests and benchmarks: the handle of a running one
(:class:`HttpServer`) and datasette 1.0a41 serving a SQLite file."""

import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from sandbox import ServerMissing
from sandbox.processes import free_port, log_tail, stop

START_SECONDS = 30.0


@dataclass
class HttpServer:
    """A running server: base URL without trailing slash, its process, whether it has /_stats and /_reset."""

    url: str
    process: subprocess.Popen[bytes]
    has_control: bool = True

    @property
    def pid(self) -> int:
        """The server process id."""
        return self.process.pid

    def stats(self) -> dict[str, Any]:
        """GET /_stats: the request log, tokens issued and token requests."""
        if not self.has_control:
            raise NotImplementedError("this server has no /_stats endpoint")
        response = requests.get(f"{self.url}/_stats", timeout=10)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def reset(self) -> None:
        """POST /_reset: clear the request and token logs."""
        if not self.has_control:
            raise NotImplementedError("this server has no /_reset endpoint")
        requests.post(f"{self.url}/_reset", timeout=10).raise_for_status()


def datasette_executable() -> Path:
    """The venv's ``datasette``; raises :class:`~sandbox.ServerMissing` when it is not installed."""
    executable = Path(sys.executable).with_name("datasette")
    if not executable.exists():
        raise ServerMissing("datasette (pip install datasette==1.0a41)")
    return executable


def serve_datasette(stack: ExitStack, db: Path, *options: str) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``datasette serve db`` with ``options`` on a free loopback port, stopped by pid when
    ``stack`` closes; returns the process and its URL once ``/-/versions.json`` answers.
    Raises RuntimeError (it exited) or TimeoutError (no answer in ``START_SECONDS``) with its log."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [str(datasette_executable()), "serve", str(db), "-h", "127.0.0.1", "-p", str(port), *options]
    log = stack.enter_context(tempfile.TemporaryFile())
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    stack.callback(stop, process)
    deadline = time.monotonic() + START_SECONDS
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"datasette exited with {process.returncode}:\n{log_tail(log)}")
        try:
            if requests.get(f"{url}/-/versions.json", timeout=2).ok:
                return process, url
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"datasette not answering on {url} after {START_SECONDS}s:\n{log_tail(log)}")
        time.sleep(0.1)
