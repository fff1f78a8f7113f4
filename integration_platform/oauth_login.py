"""Getting a refresh token in the first place: the OAuth2 authorization-code flow with PKCE, once.

``auth: {type: oauth2_refresh_token, refresh_token_env: ...}`` needs a refresh token that only a
person can obtain, by logging in at the provider and consenting. This command runs that flow the
way a native app does (RFC 8252): it listens on a loopback port, opens the provider's authorization
page in the browser (and prints its address), receives the redirect with the code, checks its
``state``, exchanges the code (with the PKCE verifier, RFC 7636) at the token endpoint, and prints
the refresh token once with the environment variable to put it in. The token is written nowhere
else: no file, no log, no Dagster event. requests-oauthlib does the protocol
(``OAuth2Session.authorization_url`` and ``fetch_token`` with ``pkce="S256"``); what is ours is the
loopback listener and the safety checks around it.

    .venv/bin/python -m integration_platform.oauth_login \\
        --authorization-url https://login.example.com/authorize --token-url https://login.example.com/token \\
        --client-id my-app --scope openid --scope offline_access --env-var SHOP_API_REFRESH_TOKEN

Raises :class:`LoginError` (exit status 1, a message without secrets) when the provider answers
with an error, the ``state`` does not match, no redirect arrives within ``--timeout`` seconds, the token
endpoint answers with a redirect (the code, the PKCE verifier and the client secret would follow it to
whatever host it names) or cannot be reached, or the token response holds no refresh token.
"""

import argparse
import http.server
import os
import re
import shlex
import sys
import threading
import urllib.parse
import webbrowser
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import requests
from oauthlib.oauth2 import OAuth2Error

from integration_platform.core.names import ENV_NAME
from integration_platform.resources.http_auth import HttpAuthError
from integration_platform.resources.http_credentials import TokenSession

CALLBACK_PATH = "/callback"
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


class LoginError(Exception):
    """The login did not yield a refresh token; the message says why and holds no secret."""


@dataclass
class _Redirect:
    query: dict[str, str] | None = None


def _listener(port: int) -> tuple[http.server.HTTPServer, _Redirect, threading.Event]:
    """A one-shot HTTP server on 127.0.0.1:``port`` (0: any free port) that keeps the query of the
    first request to :data:`CALLBACK_PATH` and answers it with a page saying the window may close."""
    received, arrived = _Redirect(), threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            if url.path != CALLBACK_PATH or arrived.is_set():
                self.send_error(404)
                return
            received.query = dict(urllib.parse.parse_qsl(url.query))
            body = b"<!doctype html><title>Signed in</title><p>Signed in. You may close this window."
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            arrived.set()

        def log_message(self, format: str, *args: Any) -> None:  # the query holds the code: never logged
            return

    return http.server.HTTPServer(("127.0.0.1", port), Handler), received, arrived


def _check_token_url(token_url: str) -> None:
    url = urllib.parse.urlsplit(token_url)
    if url.scheme != "https" and url.hostname not in LOOPBACK_HOSTS:
        raise LoginError(f"--token-url {token_url}: the code and the tokens travel there, so it must be https")


def login(
    authorization_url: str,
    token_url: str,
    client_id: str,
    scopes: Sequence[str],
    *,
    client_secret: str | None = None,
    port: int = 0,
    extra_parameters: dict[str, str] | None = None,
    open_browser: Callable[[str], object] | None = None,
    timeout: float = 300.0,
) -> dict[str, Any]:
    """Run the authorization-code flow with PKCE once (module doc) and return the token response
    (``access_token``, ``refresh_token``, ``expires_in``, ...). ``open_browser`` (default
    ``webbrowser.open``) is called with the authorization address; ``extra_parameters`` go into it (``prompt=consent``,
    ``access_type=offline``: what a provider wants before it grants a refresh token). Raises
    :class:`LoginError`."""
    _check_token_url(token_url)
    server, received, arrived = _listener(port)
    redirect_uri = f"http://127.0.0.1:{server.server_port}{CALLBACK_PATH}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        # never redirected (TokenSession): requests re-sent a 307's POST, client secret, code and verifier
        # included, to the host it named (http too), and printed the refresh token that host issued
        session = TokenSession(
            token_url,
            "authorization_code",
            client_id=client_id,
            redirect_uri=redirect_uri,
            scope=list(scopes) or None,
            pkce="S256",
        )
        address, state = session.authorization_url(authorization_url, **(extra_parameters or {}))
        print(f"Opening the provider's sign-in page; if no browser opens, visit:\n  {address}", flush=True)
        (open_browser or webbrowser.open)(address)
        if not arrived.wait(timeout):
            raise LoginError(f"no redirect to {redirect_uri} within {timeout:.0f} s")
    finally:
        server.shutdown()
        server.server_close()
    query = received.query or {}
    if "error" in query:
        raise LoginError(f"the provider refused: {query['error']} {query.get('error_description', '')}".strip())
    if query.get("state") != state:
        raise LoginError("the redirect's state does not match this login (a forged or stale redirect): refused")
    if "code" not in query:
        raise LoginError("the redirect carries no authorization code")
    try:
        token = session.fetch_token(
            token_url, code=query["code"], client_secret=client_secret, include_client_id=True, timeout=30
        )
    except OAuth2Error as exc:
        raise LoginError(f"the token endpoint {token_url} refused the code: {exc.error}") from None
    except HttpAuthError as exc:  # a redirect or an answer out of bounds; the message holds no secret
        raise LoginError(str(exc)) from None
    except requests.RequestException as exc:
        raise LoginError(f"the token endpoint {token_url} unreachable: {type(exc).__name__}") from None
    except Warning as exc:
        # oauthlib raises a Warning carrying the token when the provider granted other scopes than
        # asked (allowed by RFC 6749 section 5.1, and common): the token is issued, keep it.
        granted = getattr(exc, "token", None)
        if not granted:
            raise LoginError(f"the token endpoint {token_url}: {exc}") from None
        token = granted
    if not token.get("refresh_token"):
        raise LoginError(
            "the provider issued no refresh token: ask for the scope or parameter it needs for one "
            "(--scope offline_access, --param prompt=consent, --param access_type=offline)"
        )
    return dict(token)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line (module doc); returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m integration_platform.oauth_login", description=__doc__)
    parser.add_argument("--authorization-url", required=True)
    parser.add_argument("--token-url", required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--client-secret-env", help="env var holding the client secret (confidential clients)")
    parser.add_argument("--scope", action="append", default=[], help="repeat for several scopes")
    parser.add_argument("--param", action="append", default=[], help="extra authorization parameter key=value")
    parser.add_argument("--port", type=int, default=0, help="loopback port of the redirect (default: any free one)")
    parser.add_argument("--env-var", required=True, help="the env var your defs.yaml reads (refresh_token_env)")
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    if not re.fullmatch(ENV_NAME, args.env_var):
        parser.error(f"--env-var {args.env_var!r} is not an environment variable name")
    secret = os.environ.get(args.client_secret_env) if args.client_secret_env else None
    extra = dict(p.split("=", 1) for p in args.param if "=" in p)
    try:
        token = login(
            args.authorization_url,
            args.token_url,
            args.client_id,
            args.scope,
            client_secret=secret,
            port=args.port,
            extra_parameters=extra,
            timeout=args.timeout,
        )
    except LoginError as exc:
        print(f"login failed: {exc}", file=sys.stderr)
        return 1
    print(
        f"\nSigned in. Set {args.env_var} where the platform runs (this is the only copy; it was written "
        f"nowhere else):\n  export {args.env_var}={shlex.quote(str(token['refresh_token']))}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
