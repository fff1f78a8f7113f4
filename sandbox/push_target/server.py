"""A real HTTP target for reverse ETL: stores every JSON body it accepts in SQLite, honours Idempotency-Key.

    python sandbox/push_target/server.py --db target.sqlite --port 0 [--latency-ms 20] [--token T]
        [--reject-regex PATTERN] [--idempotency-header Idempotency-Key]

POST / PUT / PATCH on any path (other than /_...) with a JSON body: after ``--latency-ms`` (simulated work), a body
matching ``--reject-regex`` gets 422; otherwise, if the idempotency header's key was seen before, the stored
response is returned again and nothing is stored (a replay, counted); else the body is stored, one ``items`` row per
element when it is a JSON array (else one row), and 201 ``{"stored": n}`` is returned. ``--token`` requires
``Authorization: Bearer <token>`` (401 otherwise). Keys follow draft-ietf-httpapi-idempotency-key-header: the key is
recorded together with the response in one transaction, under one lock, so concurrent retries cannot both store.

Control: GET /_stats -> {"requests", "stored_requests", "replays", "rejected", "unauthorised", "items"};
GET /_items -> [{"key", "path", "item"}]; POST /_reset clears everything.
Prints exactly one line "listening on http://127.0.0.1:<port>" once it accepts connections.
"""

import argparse
import json
import re
import sqlite3
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (key TEXT PRIMARY KEY, status INTEGER, body TEXT);
CREATE TABLE IF NOT EXISTS items (seq INTEGER PRIMARY KEY, key TEXT, path TEXT, item TEXT);
"""


class Store:
    """The SQLite file and the counters, behind one lock."""

    def __init__(self, path: str) -> None:
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        self.lock = threading.Lock()
        self.counts = {"requests": 0, "stored_requests": 0, "replays": 0, "rejected": 0, "unauthorised": 0}

    def count(self, name: str) -> None:
        with self.lock:
            self.counts[name] += 1

    def store(self, key: str | None, path: str, body: Any) -> tuple[int, str]:
        """(status, response body) for an accepted body: a replay's stored answer or a new 201."""
        items = body if isinstance(body, list) else [body]
        with self.lock:
            if key is not None:
                found = self.db.execute("SELECT status, body FROM keys WHERE key = ?", (key,)).fetchone()
                if found is not None:
                    self.counts["replays"] += 1
                    return int(found[0]), str(found[1])
            answer = json.dumps({"stored": len(items)})
            self.db.execute("BEGIN")
            self.db.executemany(
                "INSERT INTO items (key, path, item) VALUES (?, ?, ?)", [(key, path, json.dumps(i)) for i in items]
            )
            if key is not None:
                self.db.execute("INSERT INTO keys VALUES (?, ?, ?)", (key, 201, answer))
            self.db.execute("COMMIT")
            self.counts["stored_requests"] += 1
            return 201, answer

    def stats(self) -> dict[str, int]:
        with self.lock:
            items = self.db.execute("SELECT count(*) FROM items").fetchone()[0]
            return {**self.counts, "items": int(items)}

    def items(self) -> list[dict[str, Any]]:
        with self.lock:
            rows = self.db.execute("SELECT key, path, item FROM items ORDER BY seq").fetchall()
        return [{"key": k, "path": p, "item": json.loads(i)} for k, p, i in rows]

    def reset(self) -> None:
        with self.lock:
            self.db.executescript("DELETE FROM keys; DELETE FROM items;")
            self.counts = dict.fromkeys(self.counts, 0)


def handler(store: Store, args: argparse.Namespace) -> type[BaseHTTPRequestHandler]:
    reject = re.compile(args.reject_regex) if args.reject_regex else None

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out in separate writes: no 40 ms delayed-ACK stall

        def log_message(self, format: str, *a: Any) -> None:
            pass

        def _send(self, status: int, body: str) -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/_stats":
                self._send(200, json.dumps(store.stats()))
            elif self.path == "/_items":
                self._send(200, json.dumps(store.items()))
            else:
                self._send(404, '{"error": "not found"}')

        def _write(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path == "/_reset":
                store.reset()
                self._send(200, "{}")
                return
            store.count("requests")
            if args.token and self.headers.get("Authorization") != f"Bearer {args.token}":
                store.count("unauthorised")
                self._send(401, '{"error": "unauthorised"}')
                return
            if args.latency_ms:
                time.sleep(args.latency_ms / 1000)
            text = raw.decode("utf-8", "replace")
            try:
                body = json.loads(text)
            except json.JSONDecodeError:
                self._send(400, '{"error": "invalid JSON"}')
                return
            if reject is not None and reject.search(text):
                store.count("rejected")
                self._send(422, json.dumps({"error": "rejected by --reject-regex"}))
                return
            status, answer = store.store(self.headers.get(args.idempotency_header), self.path, body)
            self._send(status, answer)

        do_POST = do_PUT = do_PATCH = _write

    return Handler


class Server(ThreadingHTTPServer):
    """``request_queue_size`` is the listen backlog, used by the constructor: set after it, it
    is too late (the default 5 reset connections of a 16-wide load)."""

    daemon_threads = True
    request_queue_size = 256


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--token", default=None)
    parser.add_argument("--reject-regex", default=None)
    parser.add_argument("--idempotency-header", default="Idempotency-Key")
    args = parser.parse_args(argv)
    store = Store(args.db)
    server = Server(("127.0.0.1", args.port), handler(store, args))
    print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
