"""Local stand-ins for the demo's HTTP sources, so ``make run`` and ``make dev`` need no network.

- ``POKEAPI_URL``: ``sandbox/pokeapi/server.py`` serving the vendored PokeAPI slice the way the
  live API pages it.
- ``CHINOOK_API_URL``: datasette serving the vendored chinook SQLite file (read-only).
- ``COVID_SFTP_HOST`` / ``COVID_SFTP_PORT`` / ``COVID_SFTP_PASSWORD``: ``sandbox/sftp/server.py``
  (asyncssh) serving ``sandbox/covid/`` with the demo host key ``sandbox/sftp/demo_host_key``
  (its fingerprint is pinned in ``defs/covid/defs.yaml``) and a password made up per start.

A stand-in starts only when its variable is unset (point the variable at a real API to use
that instead); each listens on 127.0.0.1 on a free port and is stopped by its pid.

``python -m integration_platform.standins -- CMD ...`` runs CMD with the stand-ins up.
"""

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SANDBOX = PROJECT_ROOT / "sandbox"
START_SECONDS = 30.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a process we started, by its pid: SIGTERM, then SIGKILL after 10 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait(ready: Callable[[], bool], process: subprocess.Popen[bytes], seconds: float, pause: float) -> bool:
    """Poll ``ready()`` until it is true (returns True) or ``seconds`` pass (returns False).

    Raises ``RuntimeError`` (with the exit status) when ``process`` exits first.
    """
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited with status {process.returncode}")
        try:
            if ready():
                return True
        except OSError:
            pass
        time.sleep(pause)
    return False


def wait_for_port(
    port: int, process: subprocess.Popen[bytes], seconds: float = START_SECONDS, details: Callable[[], str] = str
) -> None:
    """Wait until ``process`` listens on 127.0.0.1:``port``.

    Raises ``RuntimeError`` when the process exits first and ``TimeoutError`` after ``seconds``;
    ``details()`` (a name, a log tail) is appended to the message.
    """

    def listening() -> bool:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True

    try:
        up = _wait(listening, process, seconds, 0.05)
    except RuntimeError as exc:
        raise RuntimeError(f"server on port {port} {exc} {details()}".rstrip()) from None
    if not up:
        raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {seconds}s {details()}".rstrip())


def _wait_http(url: str, process: subprocess.Popen[bytes], what: str) -> None:
    def answers() -> bool:
        with urllib.request.urlopen(url, timeout=2):
            return True

    try:
        up = _wait(answers, process, START_SECONDS, 0.2)
    except RuntimeError as exc:
        raise RuntimeError(f"stand-in {what} {exc}") from None
    if not up:
        raise TimeoutError(f"stand-in {what} did not answer {url} within {START_SECONDS:.0f}s")


def _start(stack: ExitStack, argv: list[str], probe: str, what: str) -> None:
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stack.callback(stop, process)
    _wait_http(probe, process, what)


@contextmanager
def running_standins() -> Iterator[dict[str, str]]:
    """Start the stand-ins whose variables are unset, export their URLs, yield what was started.

    Raises ``RuntimeError``/``TimeoutError`` naming the stand-in that did not come up.
    """
    started: dict[str, str] = {}
    with ExitStack() as stack:
        if not os.environ.get("POKEAPI_URL"):
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            data = SANDBOX / "pokeapi" / "data"
            argv = [sys.executable, str(SANDBOX / "pokeapi" / "server.py"), "--data", str(data), "--port", str(port)]
            _start(stack, argv, f"{url}/api/v2/", "PokeAPI (sandbox/pokeapi/server.py)")
            started["POKEAPI_URL"] = url
        if not os.environ.get("CHINOOK_API_URL"):
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            datasette = Path(sys.executable).with_name("datasette")
            db = SANDBOX / "chinook" / "chinook.sqlite"
            argv = [str(datasette), "serve", "-i", str(db), "-h", "127.0.0.1", "-p", str(port)]
            _start(stack, argv, f"{url}/-/versions.json", "chinook API (datasette)")
            started["CHINOOK_API_URL"] = url
        if not os.environ.get("COVID_SFTP_HOST"):
            port = free_port()
            password = secrets.token_urlsafe(16)
            argv = [
                sys.executable, str(SANDBOX / "sftp" / "server.py"), "--root", str(SANDBOX / "covid"),
                "--port", str(port), "--user", "demo", "--host-key", str(SANDBOX / "sftp" / "demo_host_key"),
                "--password-env", "COVID_SFTP_PASSWORD",
            ]  # fmt: skip
            process = subprocess.Popen(
                argv,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env={**os.environ, "COVID_SFTP_PASSWORD": password},
            )
            stack.callback(stop, process)
            wait_for_port(port, process, details=lambda: "(stand-in SFTP drops, sandbox/sftp/server.py)")
            started.update({"COVID_SFTP_HOST": "127.0.0.1", "COVID_SFTP_PORT": str(port)})
            os.environ["COVID_SFTP_PASSWORD"] = password
        os.environ.update(started)
        try:
            yield started
        finally:
            for name in [*started, "COVID_SFTP_PASSWORD"]:
                os.environ.pop(name, None)


def main(argv: list[str]) -> int:
    """Run ``argv`` (after ``--``) with the stand-ins up; returns its exit status."""
    command = argv[argv.index("--") + 1 :] if "--" in argv else argv
    if not command:
        print("usage: python -m integration_platform.standins -- CMD [ARGS...]", file=sys.stderr)
        return 2
    with running_standins() as started:
        for name, url in started.items():
            print(f"stand-in {name}={url}", flush=True)
        return run_until_signalled(command)


def run_until_signalled(command: list[str], grace_seconds: float = 10.0) -> int:
    """Run ``command`` in its own process group and return its exit status; SIGINT, SIGTERM or SIGHUP
    to this process is passed on once, as SIGINT (Ctrl-C) to that whole group.

    Why: ``dg dev`` (like ``dagster dev``) shuts its webserver, daemon and code servers down on Ctrl-C, but only when
    they all get it. A terminal's Ctrl-C reached them (same group), a SIGTERM to ``make dev`` did
    not: make passed it to this process alone, Python's default action ended it at once, and
    ``dg dev`` with all its children and the stand-ins were left running. Now the group gets
    Ctrl-C exactly once (a second one makes it give up on a clean stop); whatever is
    still there after ``grace_seconds`` is killed, and the stand-ins are stopped by the caller.
    """
    signalled: list[int] = []
    started: list[subprocess.Popen[bytes]] = []
    sent: list[bool] = []

    def ctrl_c() -> None:
        if started and not sent and started[0].poll() is None:
            sent.append(True)
            os.killpg(started[0].pid, signal.SIGINT)

    def pass_on(signum: int, _frame: object) -> None:
        signalled.append(signum)
        ctrl_c()

    # Handlers first: a signal arriving while the child starts is passed on right after.
    previous = {sig: signal.signal(sig, pass_on) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    deadline: float | None = None
    try:
        child = subprocess.Popen(command, process_group=0)
        started.append(child)
        if signalled:
            ctrl_c()
        while True:
            try:
                status = child.wait(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                if signalled and deadline is None:
                    deadline = time.monotonic() + grace_seconds
                if deadline is not None and time.monotonic() > deadline:
                    os.killpg(child.pid, signal.SIGKILL)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    with suppress(ProcessLookupError):  # children the command left behind
        os.killpg(child.pid, signal.SIGKILL)
    return 128 + signalled[0] if signalled else status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
