"""The OpenID Connect provider of the OAuth2 tests: the npm package oidc-provider (a certified
implementation) run by ``sandbox/oidc/server.mjs`` on loopback, once per test session (the
``provider`` fixture in ``conftest.py``).

Its clients: ``integration-platform`` (public, PKCE, for the login command) and, sharing
:data:`SERVICE_SECRET`, ``platform-service`` (the client_credentials grant) and ``api`` (the resource
server's credentials for token introspection). Client-credentials access tokens live
:data:`TOKEN_TTL_S` seconds, so that a run outlives several of them."""

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from integration_platform.standins import free_port, stop, wait_for_port

SERVER = Path(__file__).resolve().parent.parent / "sandbox" / "oidc" / "server.mjs"
CLIENT = "integration-platform"
SCOPES = ["openid", "offline_access"]
SERVICE_CLIENT = "platform-service"
API_CLIENT = "api"
SERVICE_SECRET = "svc-Secret-3b7e1d"
TOKEN_TTL_S = 1


@contextmanager
def oidc_provider() -> Iterator[str]:
    """Start the provider on a free port; yields its issuer URL (``http://127.0.0.1:<port>``).

    Raises ``AssertionError`` when oidc-provider is not installed (``make install-oidc``)."""
    assert (SERVER.parent / "node_modules" / "oidc-provider").is_dir(), "run `make install-oidc` (.ci/install_oidc.sh)"
    port = free_port()
    argv = [
        "node",
        str(SERVER),
        "--port",
        str(port),
        "--service-secret",
        SERVICE_SECRET,
        "--token-ttl",
        str(TOKEN_TTL_S),
    ]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, process)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)
