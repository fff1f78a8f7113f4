"""Starting and stopping the servers tests and benchmarks run (no pytest here, so benchmarks can
use it too; ``services.py`` adds the pytest side). Port and stop helpers live with the demo's
stand-ins; :func:`start_listening` serves the sandbox scripts that announce their address."""

import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from contextlib import ExitStack
from typing import IO

from integration_platform.standins import free_port, stop, wait_for_port

__all__ = ["free_port", "log_tail", "start_listening", "start_server", "stop", "wait_for_port"]

START_SECONDS = 30.0
LISTENING = "listening on "


def start_server(
    stack: ExitStack, args: list[str], port: int, what: str, log: IO[bytes] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``args`` writing to ``log`` (a temporary file when ``None``), registered on ``stack`` to be
    stopped by pid (:func:`stop`); wait until it listens on 127.0.0.1:``port``. Raises
    ``RuntimeError`` naming ``what`` with the end of its output when it does not."""
    if log is None:
        log = stack.enter_context(tempfile.TemporaryFile())
    process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    stack.callback(stop, process)
    try:
        wait_for_port(port, process)
    except Exception as exc:
        raise RuntimeError(f"{what} did not start on 127.0.0.1:{port}: {exc}\n{log_tail(log)}") from exc
    return process


def log_tail(stderr: IO[bytes]) -> str:
    """The last 4,000 characters written to a process's captured output file."""
    stderr.flush()
    stderr.seek(0)
    return stderr.read().decode("utf-8", "replace")[-4000:]


def start_listening(
    stack: ExitStack, args: list[str], what: str, env: Mapping[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``sys.executable args`` and return it with the URL of its ``listening on <url>`` line
    (a ``scheme://127.0.0.1:<port>`` URL).

    The process is registered on ``stack`` to be stopped by pid; its stdout is drained on a
    thread so it never blocks on a full pipe; stderr goes to a temporary file quoted in the
    ``RuntimeError`` (it exited) or ``TimeoutError`` (no line within START_SECONDS) raised.
    """
    stderr = stack.enter_context(tempfile.TemporaryFile())
    process = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=stderr, env=env)
    stack.callback(stop, process)
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for raw in process.stdout:
            lines.put(raw.decode("utf-8", "replace").strip())

    threading.Thread(target=pump, name=f"{what}-stdout", daemon=True).start()
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.1)
        except queue.Empty:
            if process.poll() is not None:
                raise RuntimeError(f"{what} exited with {process.returncode}:\n{log_tail(stderr)}") from None
            continue
        if line.startswith(LISTENING) and "://127.0.0.1:" in line:
            return process, line.removeprefix(LISTENING)
    raise TimeoutError(f"{what} printed no 'listening on' line in {START_SECONDS}s:\n{log_tail(stderr)}")
