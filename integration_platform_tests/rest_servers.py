"""Real local HTTP servers for the REST tests: the PokeAPI mirror server, the fault proxy and datasette.

Each runs as its own process on 127.0.0.1 and is stopped by pid when the ``with`` block ends:

- ``pokeapi_server``: ``sandbox/pokeapi/server.py`` over a PokeAPI static mirror (paging, auth modes, OAuth2
  token endpoint, ``/_stats``);
- ``fault_proxy``: ``sandbox/fault_proxy.py`` in front of any of them, with a deterministic fault plan;
- ``datasette_server``: datasette 1.0a41 serving a SQLite file (keyset pagination with a ``next`` token).

``scripted_server`` is the exception: a few lines of ``http.server`` on a thread of the test, answering
as the test's function says, for the hostile answers (redirects, echoes, bad headers) a test needs once.

The two sandbox scripts print ``listening on http://127.0.0.1:<port>`` when ready; a missing executable or data
set skips the test (fails in CI) through ``services.missing``.
"""

import json
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import requests

from integration_platform_tests.services import REPO, SHARED_DATA, missing
from sandbox.http_servers import HttpServer, serve_datasette
from sandbox.processes import start_listening

POKEAPI_SCRIPT = REPO / "sandbox" / "pokeapi" / "server.py"
FAULT_PROXY_SCRIPT = REPO / "sandbox" / "fault_proxy.py"


@dataclass
class FaultProxy:
    """A running fault proxy: base URL without trailing slash and its process."""

    url: str
    process: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        """The proxy process id."""
        return self.process.pid

    def stats(self) -> dict[str, Any]:
        """GET /_proxy/stats: received, forwarded, faults per kind and the per-request log."""
        response = requests.get(f"{self.url}/_proxy/stats", timeout=10)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def set_plan(self, plan: list[dict[str, Any]]) -> None:
        """Replace the fault plan; resets the proxy's counters and log."""
        requests.post(f"{self.url}/_proxy/plan", json=plan, timeout=10).raise_for_status()


def _started(stack: ExitStack, args: list[str], what: str) -> tuple[subprocess.Popen[bytes], str]:
    """A sandbox HTTP(S) script started on ``stack``, with its base URL (see ``processes.start_listening``)."""
    return start_listening(stack, args, what)


@contextmanager
def pokeapi_server(
    data_dir: Path | None = None, *, latency_ms: int = 0, auth_args: Sequence[str] = ()
) -> Iterator[HttpServer]:
    """Serve a PokeAPI mirror (default: the full shared subset) with sandbox/pokeapi/server.py.

    ``auth_args`` are passed through, e.g. ``["--oauth2", "id:secret", "--token-ttl", "60"]`` or
    ``["--api-key-header", "X-Api-Key", "--api-key", "k"]``.
    """
    if data_dir is None:
        data_dir = SHARED_DATA / "pokeapi-subset" / "data"
    if not (data_dir / "api" / "v2" / "index.json").is_file():
        missing(f"PokeAPI mirror at {data_dir}")
    args = [str(POKEAPI_SCRIPT), "--data", str(data_dir), "--port", "0", "--latency-ms", str(latency_ms)]
    with ExitStack() as stack:
        process, url = _started(stack, [*args, *auth_args], "pokeapi server")
        yield HttpServer(url, process)


@contextmanager
def fault_proxy(upstream: str, plan: list[dict[str, Any]]) -> Iterator[FaultProxy]:
    """Put sandbox/fault_proxy.py in front of ``upstream`` with the given fault plan."""
    with ExitStack() as stack:
        plan_file = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "plan.json"
        plan_file.write_text(json.dumps(plan))
        args = [str(FAULT_PROXY_SCRIPT), "--upstream", upstream, "--port", "0", "--plan", str(plan_file)]
        process, url = _started(stack, args, "fault proxy")
        yield FaultProxy(url, process)


@contextmanager
def datasette_server(db: Path) -> Iterator[HttpServer]:
    """Serve a SQLite file with the venv's datasette (100 rows per page by default, at most 1,000 per page).

    Its table JSON is ``/<db stem>/<table>.json``; ``stats()``/``reset()`` raise NotImplementedError.
    """
    if not db.is_file():
        missing(f"SQLite database {db}")
    settings = ["--setting", "default_page_size", "100", "--setting", "max_returned_rows", "1000"]
    with ExitStack() as stack:
        process, url = serve_datasette(stack, db, *settings)
        yield HttpServer(url, process, has_control=False)


#: What a scripted server answers: status, headers (a list value: the header repeated), body (JSON unless
#: bytes or str).
Answer = tuple[int, Mapping[str, str | list[str]], Any]


@dataclass
class ScriptedServer:
    """A running :func:`scripted_server`: base URL without trailing slash and every request received, as
    ``{"method", "path" (with the query), "headers", "body"}``."""

    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)


class _Recording(BaseHTTPRequestHandler):
    """A handler of the servers below: HTTP/1.1, silent, recording each request into ``served``."""

    protocol_version = "HTTP/1.1"
    served: "ScriptedServer"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def record(self) -> dict[str, Any]:
        """The request (method, path, headers, body as latin-1 text), appended to ``served.requests``."""
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("latin-1") if length else ""
        request = {"method": self.command, "path": self.path, "headers": dict(self.headers.items()), "body": body}
        self.served.requests.append(request)
        return request


@contextmanager
def _serving(handler: type[_Recording]) -> Iterator[ScriptedServer]:
    """``handler`` served on 127.0.0.1 (a free port) on a thread, stopped on exit."""
    served = handler.served = ScriptedServer("")
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    served.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def scripted_server(answer: Callable[[dict[str, Any]], Answer]) -> Iterator[ScriptedServer]:
    """An HTTP server on 127.0.0.1 (a free port) answering each GET or POST with ``answer(request)``;
    ``request`` is what :attr:`ScriptedServer.requests` records, plus ``"url"``, the server's base URL."""

    class Handler(_Recording):
        def do_GET(self) -> None:
            request = self.record()
            status, headers, content = answer({**request, "url": self.served.url})
            data = content if isinstance(content, bytes) else str(content).encode()
            if not isinstance(content, bytes | str):
                data = json.dumps(content).encode()
            self.send_response(status)
            for name, value in headers.items():
                for one in value if isinstance(value, list) else [value]:
                    self.send_header(name, one)
            self.send_header("Content-Length", str(len(data)))
            if "Content-Type" not in headers:
                self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(data)

        do_POST = do_GET

    with _serving(Handler) as served:
        yield served


@contextmanager
def dripping_server(answers: Mapping[str, Any], every: float = 0.2, status: int = 200) -> Iterator[ScriptedServer]:
    """An HTTP server on 127.0.0.1 (a free port) answering a request whose path starts with a key of
    ``answers`` with 200 and that JSON body, and every other with ``status`` (a redirect's to ``/elsewhere``)
    and a chunked JSON body that never ends, two bytes every ``every`` seconds (0: as fast as the client
    reads): a hostile server holding a client that bounds only the gap between two reads, or filling its
    memory. Requests are recorded as by :func:`scripted_server`."""

    class Handler(_Recording):
        def do_GET(self) -> None:
            self.record()
            known = next((answers[p] for p in answers if self.path.startswith(p)), None)
            self.send_response(200 if known is not None else status)
            self.send_header("Content-Type", "application/json")
            if known is None and 300 <= status < 400:
                self.send_header("Location", "/elsewhere")
            if known is not None:
                data = json.dumps(known).encode()
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            piece = b"0," * (1 if every else 32 << 10)
            try:
                self.wfile.write(b"1\r\n[\r\n")
                while True:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    self.wfile.flush()
                    if every:
                        time.sleep(every)
            except OSError:  # the client gave up
                self.close_connection = True

        do_POST = do_PATCH = do_GET

    with _serving(Handler) as served:
        yield served


E = TypeVar("E", bound=Exception)


def failures_within(
    work: Callable[[], object], kind: type[E], seconds: float = 30.0, doing: str = "working"
) -> list[E]:
    """Run ``work`` on a daemon thread and return the ``kind`` exceptions it raised (at most one); fails the
    test (``AssertionError`` saying it was still ``doing``) when it has not ended after ``seconds``: a
    client a hostile server holds for ever must not hold the test with it."""
    failed: list[E] = []

    def run() -> None:
        try:
            work()
        except kind as exc:
            failed.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"still {doing} after {seconds:g}s"
    return failed


@contextmanager
def reason_echoing_server(status: int, token: str | None = None) -> Iterator[str]:
    """A server (its base URL) refusing every request with ``status`` and a reason phrase repeating the request's
    ``Authorization`` header, as a proxy echoing credentials might; with ``token``, a POST is answered 201 with
    ``{"access_token": token}`` (Airflow 3's ``/auth/token``) instead."""

    class Handler(BaseHTTPRequestHandler):
        def _refuse(self) -> None:
            self.send_response(status, f"Refused for {self.headers.get('Authorization')}")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"no")

        def do_GET(self) -> None:
            self._refuse()

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if token is None:
                self._refuse()
                return
            body = json.dumps({"access_token": token}).encode()
            self.send_response(201)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
