"""A hostile JSON API for the credential tests: it hands out foreign and relative URLs, redirects to another
host and echoes the credentials it receives in its error bodies.

    python sandbox/hostile_api/server.py --port 0 [--foreign http://127.0.0.1:<port>]

GET /items            -> {"results": [{"id": 1, "url": "/detail/1"}, {"id": 2, "url": "<foreign>/detail/2"},
                          {"id": 3, "url": "/redirect/3"}, {"id": 4, "url": "detail/4"}]} (without --foreign:
                          the foreign entries point at this server)
GET /detail/<n>       -> {"id": n, "served_by": "<this server's URL>"}
GET /refs             -> {"results": [{"id": 1, "ref": "a/../b"}, {"id": 2, "ref": "ok"}]}
GET /path/<rest>      -> {"id": <n>, "path": "<the path as received>"} (n from the query ?id=)
GET /redirect/<n>     -> 302 to <foreign>/detail/<n>
GET /echo             -> 400 whose body is 290 characters of text followed by every request header, values
                         included (so a client that cuts error text before masking it shows part of a secret)
GET /_requests        -> every request received so far: [{"path", "headers": {name: value}}]
POST /_reset          -> forget them

Every answer sets the cookie sid=cookie-Zt7yQw3e, which a cookie jar keeps for 127.0.0.1 and every port.

Listens on 127.0.0.1 only and prints exactly one line "listening on http://127.0.0.1:<port>" when ready.
"""

import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Handler(BaseHTTPRequestHandler):
    """The routes above; every non-control request is recorded with its headers."""

    server: "HostileServer"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Set-Cookie", "sid=cookie-Zt7yQw3e; Path=/")  # for 127.0.0.1, whatever the port
        self.send_header("Content-Type", "application/json" if not isinstance(body, str) else "text/plain")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/_requests":
            with self.server.lock:
                self._send(200, list(self.server.requests))
            return
        with self.server.lock:
            self.server.requests.append({"path": self.path, "headers": dict(self.headers.items())})
        foreign = self.server.foreign or self.server.url
        if path == "/items":
            results = [
                {"id": 1, "url": "/detail/1"},
                {"id": 2, "url": f"{foreign}/detail/2"},
                {"id": 3, "url": "/redirect/3"},
                {"id": 4, "url": "detail/4"},
            ]
            self._send(200, {"results": results})
        elif path.startswith("/detail/"):
            self._send(200, {"id": int(path.rsplit("/", 1)[1]), "served_by": self.server.url})
        elif path == "/refs":
            self._send(200, {"results": [{"id": 1, "ref": "a/../b"}, {"id": 2, "ref": "ok"}]})
        elif path.startswith("/path/"):
            query = self.path.partition("?")[2]
            self._send(200, {"id": int(query.removeprefix("id=") or 0), "path": path})
        elif path.startswith("/redirect/"):
            self._send(302, {}, {"Location": f"{foreign}/detail/{path.rsplit('/', 1)[1]}"})
        elif path == "/echo":
            echoed = "; ".join(f"{k}: {v}" for k, v in self.headers.items())
            self._send(400, "x" * 290 + echoed)
        else:
            self._send(404, {"detail": "not found"})

    def do_POST(self) -> None:
        if self.path == "/_reset":
            with self.server.lock:
                self.server.requests.clear()
            self._send(200, {})
        else:
            self._send(404, {"detail": "not found"})


class HostileServer(ThreadingHTTPServer):
    """The server and what it recorded."""

    daemon_threads = True

    def __init__(self, port: int, foreign: str | None) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.foreign = foreign.rstrip("/") if foreign else None
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--foreign", help="base URL of the other host its links and redirects point to")
    args = parser.parse_args()
    server = HostileServer(args.port, args.foreign)
    print(f"listening on {server.url}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
