"""A local PokeAPI: serves a PokeAPI/api-data static mirror directory the way https://pokeapi.co pages it.

Routes (trailing slash optional):
  GET /api/v2/                          the mirror's index.json, bytes unchanged
  GET /api/v2/<endpoint>/?offset=&limit= a page {"count", "next", "previous", "results"} with absolute URLs
  GET /api/v2/<endpoint>/?page=&page_size= page-number paging instead: {"page", "total_pages", "results"}
      either with &first=N: the list as if it held only its first N entries (a benchmark reading a part)
  GET /api/v2/<endpoint>/<id or name>/  the detail file, bytes unchanged (its inner URLs stay relative)
  GET /api/v2/<endpoint>/<id>/<extra>/  a sub-resource file, e.g. pokemon/<id>/encounters
  POST /oauth/token                     RFC 6749 token endpoint (only with --oauth2)
With --introspect URL (and --introspect-client ID:SECRET), /api requests need a bearer token that the
authorization server at URL says is active (RFC 7662 token introspection, the way an API gateway in front
of a real API checks tokens it did not issue); the request log then carries a digest of each token.
  GET /_stats, POST /_reset             control endpoints, never subject to auth or latency

Paging follows the live API's deploy function (github.com/PokeAPI/deploy, functions/src/index.ts): default
offset 0 / limit 20, next = ?offset=offset+limit&limit=min(limit, remaining), previous = ?offset=max(0, offset-limit)
&limit=(the rows before offset, at most limit); null when there is no such page. Unlike the live API, a
non-integer or negative offset, or a limit < 1, is a 400 instead of silently falling back to the default.
List files in a subset mirror may name ids whose detail file is absent: those are left out of count and results.

The token endpoint is oauthlib's server side (TokenEndpoint with the client_credentials and refresh_token
grants of RFC 6749 sections 4.4 and 6, BearerToken of RFC 6750); only storage lives in the RequestValidator.
Clients authenticate with HTTP basic (RFC 6749 2.3.1, form-urlencoded id/secret) or client_id/client_secret
in the body. A refresh issues a new refresh token; every refresh token issued so far stays valid.

Prints exactly one line "listening on http://127.0.0.1:<port>" once it accepts connections
("https://" with --tls-cert/--tls-key).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import hmac
import json
import re
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, unquote_plus, urlencode, urlsplit
from urllib.request import Request, urlopen

from oauthlib import oauth2
from oauthlib.common import Request as OAuthRequest

SEGMENT = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
NOT_FOUND = {"detail": "Not found."}


class Mirror:
    """Reads the mirror's files once and keeps them in memory."""

    def __init__(self, root: Path) -> None:
        self.api = root / "api" / "v2"
        self._raw: dict[Path, bytes | None] = {}
        self._lists: dict[str, list[dict[str, str]] | None] = {}
        self._names: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()

    def raw(self, *parts: str) -> bytes | None:
        """The bytes of api/v2/<parts>/index.json, or None when there is no such file."""
        path = self.api.joinpath(*parts, "index.json")
        with self._lock:
            if path not in self._raw:
                self._raw[path] = path.read_bytes() if path.is_file() else None
            return self._raw[path]

    def listing(self, endpoint: str) -> list[dict[str, str]] | None:
        """The endpoint's results whose detail file exists, in list-file order."""
        with self._lock:
            if endpoint in self._lists:
                return self._lists[endpoint]
        data = self.raw(endpoint)
        results: list[dict[str, str]] | None = None
        names: dict[str, str] = {}
        if data is not None:
            results = []
            for item in json.loads(data)["results"]:
                ident = item["url"].rstrip("/").rsplit("/", 1)[-1]
                if (self.api / endpoint / ident / "index.json").is_file():
                    results.append(item)
                    names[item["name"].lower()] = ident
        with self._lock:
            self._lists[endpoint], self._names[endpoint] = results, names
        return results

    def resolve(self, endpoint: str, key: str) -> str | None:
        """The id behind an id or a name, if its detail file exists."""
        if self.listing(endpoint) is None:
            return None
        ident = key if key.isdigit() else self._names[endpoint].get(key.lower())
        return ident if ident is not None and self.raw(endpoint, ident) is not None else None


class Validator(oauth2.RequestValidator):
    """In-memory storage for oauthlib: one confidential client, its tokens and refresh tokens."""

    def __init__(self, client_id: str, client_secret: str, refresh_token: str | None) -> None:
        self.client_id, self.client_secret = client_id, client_secret
        self.access: dict[str, float] = {}  # access token -> expiry (unix time)
        self.refresh: set[str] = {refresh_token} if refresh_token else set()
        self.issued = 0
        self.lock = threading.Lock()

    def _yes(self, *args: Any, **kwargs: Any) -> bool:
        return True

    def _no(self, *args: Any, **kwargs: Any) -> bool:
        return False

    def _api_scope(self, *args: Any, **kwargs: Any) -> list[str]:
        return ["api"]

    client_authentication_required = _yes  # confidential client: authenticate on refresh too
    authenticate_client_id = _no  # no public clients
    get_default_scopes = get_original_scopes = _api_scope

    def authenticate_client(self, request: OAuthRequest, *args: Any, **kwargs: Any) -> bool:
        client_id, secret = request.client_id, request.client_secret
        decoded = _basic(request.headers.get("Authorization"))
        if decoded is not None:
            user, _, password = decoded.partition(":")
            client_id, secret = unquote_plus(user), unquote_plus(password)
        if not client_id or secret is None:
            return False
        if not (hmac.compare_digest(client_id, self.client_id) and hmac.compare_digest(secret, self.client_secret)):
            return False
        request.client = SimpleNamespace(client_id=client_id)
        request.client_id = client_id
        return True

    def validate_grant_type(self, client_id: str, grant_type: str, client: Any, request: OAuthRequest) -> bool:
        return grant_type in ("client_credentials", "refresh_token")

    def validate_scopes(self, client_id: str, scopes: list[str], client: Any, request: OAuthRequest) -> bool:
        return set(scopes) <= {"api"}

    def validate_refresh_token(self, refresh_token: str, client: Any, request: OAuthRequest) -> bool:
        with self.lock:
            return refresh_token in self.refresh

    def save_bearer_token(self, token: Any, request: OAuthRequest, *args: Any, **kwargs: Any) -> None:
        with self.lock:
            self.access[token["access_token"]] = time.time() + float(token["expires_in"])
            if token.get("refresh_token"):
                self.refresh.add(token["refresh_token"])
            self.issued += 1

    def validate_bearer_token(self, token: str | None, scopes: list[str], request: OAuthRequest) -> bool:
        with self.lock:
            expiry = self.access.get(token) if token else None
        request.auth_state = (  # type: ignore[attr-defined]  # oauthlib requests take any attribute
            "missing" if not token else "invalid" if expiry is None else "expired" if expiry <= time.time() else "ok"
        )
        return bool(request.auth_state == "ok")


class OAuthServer(oauth2.TokenEndpoint, oauth2.ResourceEndpoint):
    """oauthlib's token and resource endpoints with the client_credentials and refresh_token grants."""

    def __init__(self, validator: Validator, ttl: int) -> None:
        bearer = oauth2.BearerToken(validator, expires_in=ttl)
        grants = {
            "client_credentials": oauth2.ClientCredentialsGrant(validator),
            "refresh_token": oauth2.RefreshTokenGrant(validator),
        }
        oauth2.TokenEndpoint.__init__(self, "client_credentials", bearer, grants)  # type: ignore[arg-type]  # a token handler, not a name
        oauth2.ResourceEndpoint.__init__(self, "Bearer", {"Bearer": bearer})


class Auth:
    """The one configured credential check for /api requests."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.mode, self.oauth, self.validator = "none", None, None
        if args.bearer:
            self.mode = "bearer"
        elif args.api_key_header or args.api_key_query:
            if not args.api_key:
                raise SystemExit("--api-key-header/--api-key-query need --api-key")
            self.mode = "header" if args.api_key_header else "query"
        elif args.basic:
            self.mode = "basic"
        elif args.introspect:
            if not args.introspect_client:
                raise SystemExit("--introspect needs --introspect-client")
            self.mode = "introspect"
        elif args.oauth2:
            client_id, _, secret = args.oauth2.partition(":")
            self.mode, self.validator = "oauth2", Validator(client_id, secret, args.refresh_token)
            self.oauth = OAuthServer(self.validator, args.token_ttl)
        self.args = args

    def check(self, handler: BaseHTTPRequestHandler, query: dict[str, list[str]]) -> tuple[str, dict[str, str]]:
        """("ok"|"missing"|"invalid"|"expired"|"none", challenge headers for a 401)."""
        header = handler.headers.get("Authorization")
        if self.mode == "bearer":
            given = header[7:].strip() if header and header[:7].lower() == "bearer " else None
            return _state(given, self.args.bearer), {"WWW-Authenticate": 'Bearer error="invalid_token"'}
        if self.mode in ("header", "query"):
            name = self.args.api_key_header or self.args.api_key_query
            given = handler.headers.get(name) if self.mode == "header" else next(reversed(query.get(name) or []), None)
            return _state(given, self.args.api_key), {"WWW-Authenticate": f'ApiKey {self.mode}="{name}"'}
        if self.mode == "basic":
            return _state(_basic(header), self.args.basic), {"WWW-Authenticate": 'Basic realm="pokeapi"'}
        if self.mode == "introspect":
            given = header[7:].strip() if header and header[:7].lower() == "bearer " else None
            handler.token_seen = hashlib.sha256(given.encode()).hexdigest()[:12] if given else None  # type: ignore[attr-defined]
            state = "missing" if not given else "ok" if self.introspect(given) else "invalid"
            return state, {"WWW-Authenticate": 'Bearer error="invalid_token"'}
        if self.oauth is not None:
            headers = {"Authorization": header} if header else {}
            uri = f"http://127.0.0.1{handler.path}"
            _, request = self.oauth.verify_request(uri, "GET", None, headers, ["api"])
            state = getattr(request, "auth_state", "invalid")
            described = {"expired": "The access token expired", "missing": "No access token"}
            description = described.get(state, "The access token is invalid")
            return state, {"WWW-Authenticate": f'Bearer error="invalid_token", error_description="{description}"'}
        return "none", {}

    def introspect(self, token: str) -> bool:
        """Whether the authorization server says ``token`` is active (RFC 7662 section 2)."""
        basic = base64.b64encode(self.args.introspect_client.encode()).decode()
        request = Request(
            self.args.introspect,
            data=urlencode({"token": token, "token_type_hint": "access_token"}).encode(),
            headers={"Authorization": f"Basic {basic}", "Content-Type": "application/x-www-form-urlencoded"},
        )
        with urlopen(request, timeout=10) as response:
            return json.load(response).get("active") is True


def _basic(header: str | None) -> str | None:
    """The "user:password" of an HTTP basic Authorization header; "" when malformed, None when absent."""
    if not header or header[:6].lower() != "basic ":
        return None
    try:
        return base64.b64decode(header[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return ""


def _state(given: str | None, expected: str) -> str:
    if given is None:
        return "missing"
    return "ok" if hmac.compare_digest(given.encode(), expected.encode()) else "invalid"


class Handler(BaseHTTPRequestHandler):
    """One keep-alive connection; state lives on the server object."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: PokeServer

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass

    def send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def do_GET(self) -> None:
        self.arrived = time.time()  # "t" in the request log: when the request came in
        self.read_body()
        split = urlsplit(self.path)
        if split.path == "/_stats":
            self.send_json(200, self.server.snapshot())
        elif not (split.path + "/").startswith("/api/"):
            self.answer(404, NOT_FOUND, "none")
        else:
            time.sleep(self.server.latency)
            query = parse_qs(split.query, keep_blank_values=True)
            state, challenge = self.server.auth.check(self, query)
            if state in ("ok", "none"):
                self.answer(*self.route(split.path, query), state)
            else:
                self.answer(401, {"detail": f"Authentication credentials {state}."}, state, challenge)

    def do_POST(self) -> None:
        body = self.read_body()
        path = urlsplit(self.path).path
        if path == "/_reset":
            self.server.reset()
            self.send_json(200, {"ok": True})
        elif path.rstrip("/") != "/oauth/token" or self.server.auth.oauth is None:
            self.answer(404, NOT_FOUND, "none")
        else:
            self.token(body.decode("utf-8", "replace"))

    def token(self, text: str) -> None:
        """RFC 6749 section 3.2 token endpoint, answered by oauthlib."""
        assert self.server.auth.oauth is not None
        grant = next(iter(parse_qs(text).get("grant_type", [])), None)
        headers, content, status = self.server.auth.oauth.create_token_response(
            f"http://127.0.0.1{self.path}", "POST", text, dict(self.headers.items())
        )
        with self.server.lock:
            self.server.token_log.append({"t": time.time(), "grant_type": grant, "status": status})
        self.send_json(status, content.encode(), {k: v for k, v in headers.items() if k.lower() != "content-type"})

    def answer(self, status: int, payload: Any, auth: str, headers: dict[str, str] | None = None) -> None:
        with self.server.lock:
            arrived = getattr(self, "arrived", time.time())
            entry = {"t": arrived, "method": self.command, "path": self.path, "status": status, "auth": auth}
            if self.server.auth.mode == "introspect":
                entry["token"] = self.__dict__.pop("token_seen", None)  # this request's, not the connection's last
            self.server.request_log.append(entry)
        self.send_json(status, payload, headers)

    def route(self, path: str, query: dict[str, list[str]]) -> tuple[int, Any]:
        parts = [part for part in path.split("/")[3:] if part]
        if path.rstrip("/") != "/api/v2" and not path.startswith("/api/v2/"):
            return 404, NOT_FOUND
        if not all(SEGMENT.match(part.lower()) for part in parts):
            return 404, NOT_FOUND
        mirror = self.server.mirror
        if not parts:
            data = mirror.raw()
            return (200, data) if data is not None else (404, NOT_FOUND)
        if len(parts) == 1:
            return self.page(parts[0], query)
        ident = mirror.resolve(parts[0], parts[1])
        data = mirror.raw(parts[0], ident, *parts[2:]) if ident is not None and len(parts) <= 3 else None
        return (200, data) if data is not None else (404, NOT_FOUND)

    def page(self, endpoint: str, query: dict[str, list[str]]) -> tuple[int, Any]:
        results = self.server.mirror.listing(endpoint)
        if results is None:
            return 404, NOT_FOUND
        if "first" in query:
            try:
                results = results[: max(int(query["first"][-1]), 0)]
            except ValueError:
                return 400, {"detail": "first must be an integer."}
        if "page" in query:
            return self.numbered_page(results, query)
        try:
            offset = int((query.get("offset") or ["0"])[-1])
            limit = int((query.get("limit") or ["20"])[-1])
        except ValueError:
            return 400, {"detail": "offset and limit must be integers."}
        if offset < 0 or limit < 1:
            return 400, {"detail": "offset must be >= 0 and limit >= 1."}
        count, base = len(results), f"{self.server.base}/api/v2/{endpoint}/"
        next_end = min(offset + 2 * limit, count)
        following = (
            f"{base}?offset={offset + limit}&limit={next_end - offset - limit}" if next_end > offset + limit else None
        )
        begin = max(offset - limit, 0)
        previous = f"{base}?offset={begin}&limit={offset - begin}" if begin < offset else None
        rows = [{"name": r["name"], "url": self.server.base + r["url"]} for r in results[offset : offset + limit]]
        return 200, {"count": count, "next": following, "previous": previous, "results": rows}

    def numbered_page(self, results: list[dict[str, str]], query: dict[str, list[str]]) -> tuple[int, Any]:
        """Page-number paging (not the live API's; for clients that page by number):
        ``?page=N&page_size=M`` (pages from 1) -> ``{"page", "total_pages", "results"}``."""
        try:
            page = int(query["page"][-1])
            size = int((query.get("page_size") or ["20"])[-1])
        except ValueError:
            return 400, {"detail": "page and page_size must be integers."}
        if page < 1 or size < 1:
            return 400, {"detail": "page and page_size must be >= 1."}
        rows = [
            {"name": r["name"], "url": self.server.base + r["url"]} for r in results[(page - 1) * size : page * size]
        ]
        return 200, {"page": page, "total_pages": -(-len(results) // size), "results": rows}


class PokeServer(ThreadingHTTPServer):
    """Threaded server holding the mirror, the auth mode and the request log."""

    daemon_threads = True
    request_queue_size = 1024

    def __init__(self, port: int, mirror: Mirror, auth: Auth, latency_ms: int) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self.mirror, self.auth, self.latency = mirror, auth, latency_ms / 1000
        self.base = f"http://127.0.0.1:{self.server_address[1]}"
        self.lock = threading.Lock()
        self.request_log: list[dict[str, Any]] = []
        self.token_log: list[dict[str, Any]] = []

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client hanging up is not an error
            super().handle_error(request, client_address)

    def snapshot(self) -> dict[str, Any]:
        issued = self.auth.validator.issued if self.auth.validator else 0
        with self.lock:
            return {"requests": list(self.request_log), "tokens_issued": issued, "token_requests": list(self.token_log)}

    def reset(self) -> None:
        with self.lock:
            self.request_log.clear()
            self.token_log.clear()
        if self.auth.validator:
            with self.auth.validator.lock:
                self.auth.validator.issued = 0


def main(argv: list[str] | None = None) -> None:
    """Parse the CLI, start serving, print the listening line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="directory holding api/v2/...")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=int, default=0, help="sleep per /api request")
    parser.add_argument("--token-ttl", type=int, default=3600, metavar="SECONDS")
    for flag, metavar in [("--bearer", "TOKEN"), ("--api-key-header", "NAME"), ("--api-key-query", "NAME")]:
        parser.add_argument(flag, metavar=metavar)
    for flag, metavar in [("--api-key", "VALUE"), ("--basic", "USER:PASS"), ("--oauth2", "ID:SECRET")]:
        parser.add_argument(flag, metavar=metavar)
    parser.add_argument("--refresh-token", metavar="RT", help="an initial refresh token (--oauth2)")
    parser.add_argument("--introspect", metavar="URL", help="check bearer tokens at this RFC 7662 endpoint")
    parser.add_argument("--introspect-client", metavar="ID:SECRET", help="the API's credentials there")
    parser.add_argument("--tls-cert", type=Path, help="serve HTTPS with this PEM certificate chain")
    parser.add_argument("--tls-key", type=Path, help="the certificate's PEM private key")
    args = parser.parse_args(argv)
    modes = [args.bearer, args.api_key_header or args.api_key_query, args.basic, args.oauth2, args.introspect]
    if sum(1 for mode in modes if mode) > 1:
        parser.error("choose at most one auth mode")
    if not (args.data / "api" / "v2").is_dir():
        parser.error(f"{args.data}/api/v2 is not a directory")
    server = PokeServer(args.port, Mirror(args.data), Auth(args), args.latency_ms)
    if args.tls_cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.tls_cert, args.tls_key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        server.base = server.base.replace("http://", "https://")
    print(f"listening on {server.base}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
