"""``make dev`` stops within 10 s of Ctrl-C or SIGTERM and leaves no process behind: the webserver,
the daemon, the code servers and the demo's stand-in servers all end (the real command, with a real
``dg dev``, on a free port and a throw-away instance folder)."""

import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from integration_platform.standins import free_port

PROJECT_ROOT = Path(__file__).resolve().parent.parent
STOP_SECONDS = 10.0


def session_processes(session: int) -> list[str]:
    """Command lines of the live (not zombie) processes of ``session``, read from /proc."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # ended while we looked
        fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) ": state, ppid, pgrp, session
        if int(fields[3]) == session and fields[0] != "Z":
            alive.append(f"{stat.parent.name}: {cmdline[:160]}")
    return alive


def wait_for_ui(port: int, make: subprocess.Popen[bytes], seconds: float = 180.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert make.poll() is None, f"make dev exited with {make.returncode} before the UI answered"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2):
                return
        except OSError:
            time.sleep(1)
    raise AssertionError(f"the UI did not answer on port {port} within {seconds:.0f} s")


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm-to-make"])
def test_make_dev_stops_within_10_s_and_leaves_nothing(how: str, tmp_path: Path) -> None:
    port = free_port()
    log = (tmp_path / "dev.log").open("wb")
    make = subprocess.Popen(
        ["make", "dev", f"DAGSTER_PORT={port}", f"DAGSTER_HOME={tmp_path / 'home'}"],
        cwd=PROJECT_ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own session: what is left behind is found by session id
    )
    try:
        wait_for_ui(port, make)
        started = session_processes(make.pid)
        assert len(started) >= 6, started  # make, stand-ins, dg dev, webserver, daemon, code server
        sent = time.monotonic()
        if how == "ctrl-c":
            os.killpg(make.pid, signal.SIGINT)  # what a terminal does: the whole foreground group
        else:
            os.kill(make.pid, signal.SIGTERM)  # make alone, as `kill <pid>` or a supervisor does
        while time.monotonic() - sent < STOP_SECONDS and (make.poll() is None or session_processes(make.pid)):
            time.sleep(0.2)
        left = session_processes(make.pid)
        assert make.poll() is not None and not left, f"{time.monotonic() - sent:.1f} s after {how}: {left}"
    finally:
        for line in session_processes(make.pid):
            os.kill(int(line.split(":")[0]), signal.SIGKILL)
        make.wait()
        log.close()
