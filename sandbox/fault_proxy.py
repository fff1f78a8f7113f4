"""A reverse proxy that injects HTTP faults on a deterministic plan, for testing REST clients against real sockets.

    python sandbox/fault_proxy.py --upstream http://127.0.0.1:8000 --port 0 [--plan plan.json]

Forwards method, path+query, headers (Host rewritten to the upstream; hop-by-hop headers of RFC 9110 section 7.6.1
dropped) and body over HTTP/1.1 keep-alive, and rewrites the upstream's base URL to its own in response bodies and
Link/Location headers, so absolute next-page URLs lead back through the proxy. Bodies are relayed decoded (no
Content-Encoding) with a fresh Content-Length.

The plan is a JSON list of rules. Requests are numbered n = 1, 2, ... in arrival order (control requests excluded,
counted under a lock); each rule also counts the requests its "path_regex" matches (re.search on path+query; all
requests when absent), and "at"/"every" refer to that count k, so without path_regex k == n. A request gets the
first rule that fires:
  "fault": "429" | "500" | "502" | "503" | "504"  answer that status with a JSON body, never forwarded
           "reset"          read the request, then close the TCP connection with RST (SO_LINGER 0), sending nothing
           "slow"           sleep "seconds" (default 1), then forward normally
           "truncate"       forward, send the full Content-Length but only the first half of the body, then close
           "truncate_json"  forward, send the first half of the body with Content-Length = that half
  "at": [k, ...]   and/or   "every": m with optional "offset": o  (fires when k % m == o); neither = every request
  "retry_after": seconds   adds Retry-After (RFC 9110 section 10.2.3, rounded up to whole seconds) to status faults
  "times": c               fires at most c times
Control (never counted, never faulted): GET /_proxy/stats -> {"received", "forwarded", "faults", "log"};
POST /_proxy/plan with a JSON list replaces the plan and resets counters and log.

Prints exactly one line "listening on http://127.0.0.1:<port>" once it accepts connections.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests

STATUS_FAULTS = {"429": 429, "500": 500, "502": 502, "503": 503, "504": 504}
FAULTS = (*STATUS_FAULTS, "reset", "slow", "truncate", "truncate_json")
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
}
DROP_RESPONSE = HOP_BY_HOP | {"content-length", "content-encoding", "date", "server"}
RULE_KEYS = {"fault", "at", "every", "offset", "path_regex", "retry_after", "times", "seconds"}


@dataclass
class Rule:
    """One plan entry, with its own counters."""

    fault: str
    at: set[int] = field(default_factory=set)
    every: int | None = None
    offset: int = 0
    path_regex: re.Pattern[str] | None = None
    retry_after: float | None = None
    times: int | None = None
    seconds: float = 1.0
    seen: int = 0
    fired: int = 0

    @classmethod
    def parse(cls, raw: Any) -> Rule:
        """Validate one JSON rule; raises ValueError naming the problem."""
        if not isinstance(raw, dict) or raw.get("fault") not in FAULTS:
            raise ValueError(f"rule {raw!r}: 'fault' must be one of {', '.join(FAULTS)}")
        if unknown := set(raw) - RULE_KEYS:
            raise ValueError(f"rule {raw!r}: unknown keys {sorted(unknown)}")
        every = raw.get("every")
        if every is not None and (not isinstance(every, int) or every < 1):
            raise ValueError(f"rule {raw!r}: 'every' must be a positive integer")
        regex = raw.get("path_regex")
        return cls(
            fault=raw["fault"],
            at={int(k) for k in raw.get("at", [])},
            every=every,
            offset=int(raw.get("offset", 0)),
            path_regex=re.compile(regex) if regex is not None else None,
            retry_after=float(raw["retry_after"]) if raw.get("retry_after") is not None else None,
            times=int(raw["times"]) if raw.get("times") is not None else None,
            seconds=float(raw.get("seconds", 1.0)),
        )

    def consider(self, path: str) -> bool:
        """Count this request if the rule applies to its path; True when the rule would fire on it."""
        if self.path_regex is not None and not self.path_regex.search(path):
            return False
        self.seen += 1
        if self.times is not None and self.fired >= self.times:
            return False
        if not self.at and self.every is None:
            return True
        return self.seen in self.at or (self.every is not None and self.seen % self.every == self.offset)


class Plan:
    """The rules and the counters, guarded by one lock."""

    def __init__(self, rules: list[Rule]) -> None:
        self.lock = threading.Lock()
        self.replace(rules)

    def replace(self, rules: list[Rule]) -> None:
        """Install new rules and reset every counter and the log."""
        with self.lock:
            self.rules, self.received, self.forwarded = rules, 0, 0
            self.faults = dict.fromkeys(FAULTS, 0)
            self.log: list[dict[str, Any]] = []

    def choose(self, path: str) -> tuple[int, Rule | None]:
        """Number the request and pick the first rule that fires for it."""
        with self.lock:
            self.received += 1
            chosen = None
            for rule in self.rules:
                if rule.consider(path) and chosen is None:
                    chosen = rule
            if chosen is not None:
                chosen.fired += 1
                self.faults[chosen.fault] += 1
            return self.received, chosen

    def record(self, entry: dict[str, Any], forwarded: bool) -> None:
        """Append one finished request to the log."""
        with self.lock:
            self.forwarded += forwarded
            self.log.append(entry)

    def stats(self) -> dict[str, Any]:
        """A JSON-able snapshot of the counters and the log (in request order)."""
        with self.lock:
            log = sorted(self.log, key=lambda entry: int(entry["n"]))
            return {"received": self.received, "forwarded": self.forwarded, "faults": dict(self.faults), "log": log}


def load_rules(raw: Any) -> list[Rule]:
    """Parse a JSON plan (a list of rules)."""
    if not isinstance(raw, list):
        raise ValueError("the plan must be a JSON list of rules")
    return [Rule.parse(item) for item in raw]


class Handler(BaseHTTPRequestHandler):
    """One client connection: control requests, or numbered requests that are faulted or forwarded."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: ProxyServer
    sessions = threading.local()

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass

    def send(self, status: int, body: bytes, headers: list[tuple[str, str]], length: int | None = None) -> None:
        """Write a response; length overrides Content-Length (the truncate fault)."""
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_json(self, status: int, payload: Any, extra: list[tuple[str, str]] | None = None) -> None:
        self.send(status, json.dumps(payload).encode(), [("Content-Type", "application/json"), *(extra or [])])

    def proxy(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        if self.path.split("?")[0] in ("/_proxy/stats", "/_proxy/plan"):
            self.control(body)
            return
        n, rule = self.server.plan.choose(self.path)
        fault = rule.fault if rule else None
        entry: dict[str, Any] = {"n": n, "t": time.time(), "method": self.command, "path": self.path, "fault": fault}
        status: int | None = None
        try:
            if rule is not None and rule.fault in STATUS_FAULTS:
                status = STATUS_FAULTS[rule.fault]
                extra = [("Retry-After", str(math.ceil(rule.retry_after)))] if rule.retry_after is not None else []
                self.send_json(status, {"detail": f"fault injected by fault_proxy: {status}"}, extra)
            elif fault == "reset":
                self.reset()
            else:
                if rule is not None and fault == "slow":
                    time.sleep(rule.seconds)
                status = self.forward(body, fault)
        finally:
            entry["status"] = status
            self.server.plan.record(entry, forwarded=fault not in (*STATUS_FAULTS, "reset"))

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = proxy

    def reset(self) -> None:
        """Abort the connection: with SO_LINGER 0 the close sends RST instead of FIN."""
        self.close_connection = True
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.rfile.close()  # drop the makefile reference so close() really closes the descriptor
        self.connection.close()

    def forward(self, body: bytes, fault: str | None) -> int:
        """Relay the request upstream and the (rewritten, maybe truncated) response back; returns the status."""
        session = getattr(self.sessions, "session", None)
        if session is None:
            session = self.sessions.session = requests.Session()
            session.trust_env = False
            session.headers.clear()
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP | {"host", "content-length"}}
        upstream, own = self.server.upstream, self.server.base
        try:
            response = session.request(
                self.command,
                upstream + self.path,
                headers=headers,
                data=body or None,
                allow_redirects=False,
                timeout=60,
            )
        except requests.RequestException as error:
            self.send_json(502, {"detail": f"fault_proxy: upstream failed: {error}"})
            return 502
        content = response.content.replace(upstream.encode(), own.encode())
        out = [
            (name, value.replace(upstream, own) if name.lower() in ("link", "location") else value)
            for name, value in response.raw.headers.items()
            if name.lower() not in DROP_RESPONSE
        ]
        if self.command == "HEAD":
            self.send(response.status_code, b"", out, int(response.headers.get("Content-Length") or 0))
        elif fault == "truncate":
            self.send(response.status_code, content[: len(content) // 2], out, length=len(content))
            self.close_connection = True
        elif fault == "truncate_json":
            self.send(response.status_code, content[: len(content) // 2], out)
        else:
            self.send(response.status_code, content, out)
        return response.status_code

    def control(self, body: bytes) -> None:
        path = self.path.split("?")[0]
        if path == "/_proxy/stats" and self.command == "GET":
            self.send_json(200, self.server.plan.stats())
        elif path == "/_proxy/plan" and self.command == "POST":
            try:
                self.server.plan.replace(load_rules(json.loads(body or b"null")))
            except ValueError as error:  # json.JSONDecodeError is a ValueError
                self.send_json(400, {"detail": str(error)})
                return
            self.send_json(200, {"ok": True})
        else:
            self.send_json(405, {"detail": "use GET /_proxy/stats or POST /_proxy/plan"})


class ProxyServer(ThreadingHTTPServer):
    """Threaded proxy server holding the upstream, its own base URL and the plan."""

    daemon_threads = True
    request_queue_size = 1024

    def __init__(self, port: int, upstream: str, plan: Plan) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self.upstream, self.plan = upstream.rstrip("/"), plan
        self.base = f"http://127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], (ConnectionError, OSError)):  # clients hang up; we reset on purpose
            super().handle_error(request, client_address)


def main(argv: list[str] | None = None) -> None:
    """Parse the CLI, start proxying, print the listening line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstream", required=True, help="base URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--plan", type=Path, help="JSON file with the list of fault rules")
    args = parser.parse_args(argv)
    try:
        rules = load_rules(json.loads(args.plan.read_text())) if args.plan else []
    except (OSError, ValueError) as error:
        parser.error(f"--plan: {error}")
    server = ProxyServer(args.port, args.upstream, Plan(rules))
    print(f"listening on {server.base}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
