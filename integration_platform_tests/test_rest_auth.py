"""REST auth against a real server that checks credentials: bearer, API key (header, query),
HTTP basic, OAuth2 client credentials (tokens from a certified OpenID Connect provider,
oidc-provider, which the API checks by token introspection) and refresh token (oauthlib's server
side), both issuing short-lived tokens so that they expire and are renewed mid-run, and TLS
verification with a custom CA bundle. Secrets come from env vars and never show in events,
metadata or errors. (The refresh token's first step, the login, runs against oidc-provider in
``test_oauth_login.py``.)"""

from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import requests

from integration_platform.resources.http_api import RestApiResource
from integration_platform.resources.http_auth import HttpAuth, HttpAuthError
from integration_platform_tests.certificates import self_signed_certificate
from integration_platform_tests.oidc_provider import API_CLIENT, SERVICE_CLIENT, SERVICE_SECRET
from integration_platform_tests.rest_servers import dripping_server, failures_within, pokeapi_server, scripted_server
from sandbox.harness import Platform, latest_metadata, platform
from sandbox.http_servers import HttpServer

SECRET = "s3cr3t-Value-7f2b9c"
STATS = dg.AssetKey(["secure", "stats"])
DETAILS = dg.AssetKey(["secure", "berry_details"])

CASES = {
    "bearer": (["--bearer", SECRET], "{type: bearer, token_env: IP_TEST_SECRET}"),
    "api_key_header": (
        ["--api-key-header", "X-Api-Key", "--api-key", SECRET],
        "{type: api_key, api_key_env: IP_TEST_SECRET, api_key_name: X-Api-Key}",
    ),
    "api_key_query": (
        ["--api-key-query", "apikey", "--api-key", SECRET],
        "{type: api_key, api_key_env: IP_TEST_SECRET, api_key_name: apikey, api_key_in: query}",
    ),
    "basic": (["--basic", f"svc:{SECRET}"], "{type: basic, username: svc, password_env: IP_TEST_SECRET}"),
}


def _yaml(url: str, auth: str, *, details: bool = False, rate_limit: float | None = None) -> str:
    child = """
    - name: berries
      path: /api/v2/berry/
      records: results
      paginator: {type: offset, limit: 20, total_path: count}
    - name: berry_details
      path: "{url}"
      parent: {stream: berries}
      records: $
      primary_key: [id]
"""
    return f"""
type: integration_platform.components.RestSource
attributes:
  source: secure
  base_url: {url}
  auth: {auth}
  max_retries: 2
  {f"rate_limit: {rate_limit}" if rate_limit else ""}
  streams:
    - name: stats
      path: /api/v2/stat/
      records: results
      paginator: {{type: offset, limit: 4, total_path: count}}
      primary_key: [name]
{child if details else ""}"""


def _run_text(instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult) -> str:
    """Everything Dagster stored about the run: events, messages, metadata, errors."""
    return "\n".join(str(record) for record in instance.all_logs(result.run_id))


def _right_then_wrong_secret(
    p: Platform, server: HttpServer, secret: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[dg.ExecuteInProcessResult, list[dict[str, Any]], dg.ExecuteInProcessResult]:
    """Materialise everything with ``IP_TEST_SECRET=secret``, then ``STATS`` with a wrong secret:
    (the first run, the /api requests the server saw during it, the second run)."""
    monkeypatch.setenv("IP_TEST_SECRET", secret)
    result = p.materialize()
    api = [r for r in server.stats()["requests"] if r["path"].startswith("/api/")]
    monkeypatch.setenv("IP_TEST_SECRET", "wrong-" + secret)
    return result, api, p.materialize([STATS], raise_on_error=False)


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_auth_kind_reaches_the_api_and_keeps_its_secret(
    case: str, tmp_path: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    server_args, auth = CASES[case]
    with pokeapi_server(auth_args=server_args) as server:
        p = platform(_yaml(server.url, auth), tmp_path, instance)
        result, requests, refused = _right_then_wrong_secret(p, server, SECRET, monkeypatch)
    assert result.success
    assert p.query("SELECT count(*) FROM secure.stats")[0][0] == 9
    assert len(requests) == 3 and all(r["auth"] == "ok" for r in requests)
    assert not refused.success
    for run in (result, refused):
        assert SECRET not in _run_text(instance, run)
    assert "HTTP 401" in _run_text(instance, refused)


def test_oauth2_client_credentials_from_a_certified_provider_expire_and_are_renewed_mid_run(
    provider: str, tmp_path: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")  # the test provider is plain http on loopback
    introspection = ["--introspect", f"{provider}/token/introspection"]
    introspection += ["--introspect-client", f"{API_CLIENT}:{SERVICE_SECRET}"]
    auth = (
        f"{{type: oauth2_client_credentials, token_url: {provider}/token, client_id: {SERVICE_CLIENT}, "
        "client_secret_env: IP_TEST_SECRET}"
    )
    with pokeapi_server(auth_args=introspection) as server:
        p = platform(_yaml(server.url, auth, details=True, rate_limit=25), tmp_path, instance)
        result, api, refused = _right_then_wrong_secret(p, server, SERVICE_SECRET, monkeypatch)
    assert result.success
    assert p.query("SELECT count(*) FROM secure.berry_details")[0][0] == 68
    # 68 details at 25 requests/s take ~2.7 s with tokens of TOKEN_TTL_S (1 s): several renewals in one run,
    # each token checked by the API at the provider.
    assert latest_metadata(instance, DETAILS)["oauth2_tokens_obtained"] >= 3
    assert len({r["token"] for r in api if r["auth"] == "ok"}) >= 3
    assert sum(r["auth"] == "ok" for r in api) == 3 + 4 + 68  # stats pages, berry pages, details
    assert not refused.success  # the provider refuses the wrong client secret
    assert "invalid_client" in _run_text(instance, refused)
    for run in (result, refused):
        assert SERVICE_SECRET not in _run_text(instance, run)


def test_oauth2_refresh_tokens_expire_and_are_renewed_mid_run(
    tmp_path: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")  # the test token endpoint is plain http on loopback
    monkeypatch.setenv("IP_TEST_SECRET", SECRET)
    monkeypatch.setenv("IP_TEST_REFRESH", "rt-" + SECRET)
    args = ["--oauth2", f"platform:{SECRET}", "--token-ttl", "1", "--refresh-token", "rt-" + SECRET]
    auth = (
        "{type: oauth2_refresh_token, token_url: URL/oauth/token, client_id: platform, "
        "refresh_token_env: IP_TEST_REFRESH, client_secret_env: IP_TEST_SECRET}"
    )
    with pokeapi_server(auth_args=args) as server:
        text = _yaml(server.url, auth.replace("URL", server.url), details=True, rate_limit=25)
        p = platform(text, tmp_path, instance)
        result = p.materialize()
        stats = server.stats()
    assert result.success
    assert p.query("SELECT count(*) FROM secure.berry_details")[0][0] == 68
    api = [r for r in stats["requests"] if r["path"].startswith("/api/")]
    # 68 details at 25 requests/s take ~2.7 s with 1 s tokens: several renewals in one run
    assert latest_metadata(instance, DETAILS)["oauth2_tokens_obtained"] >= 3
    assert stats["tokens_issued"] >= 3
    assert {t["grant_type"] for t in stats["token_requests"]} == {"refresh_token"}
    assert sum(r["auth"] == "ok" for r in api) == 3 + 4 + 68  # stats pages, berry pages, details
    assert SECRET not in _run_text(instance, result)


def test_tls_is_verified_and_a_custom_ca_bundle_is_trusted(tmp_path: Path, instance: dg.DagsterInstance) -> None:
    cert, key = self_signed_certificate(tmp_path)
    with pokeapi_server(auth_args=["--tls-cert", str(cert), "--tls-key", str(key)]) as server:
        assert server.url.startswith("https://")
        untrusted = platform(_yaml(server.url, "{type: none}"), tmp_path / "a", instance)
        refused = untrusted.materialize([STATS], raise_on_error=False)
        text = _yaml(server.url, "{type: none}").replace("  max_retries: 2", f"  max_retries: 2\n  ca_bundle: {cert}")
        trusted = platform(text, tmp_path / "b", instance)
        result = trusted.materialize([STATS, dg.AssetKey(["warehouse", "secure.stats"])])
        log = requests.get(f"{server.url}/_stats", timeout=10, verify=str(cert)).json()["requests"]
    assert not refused.success
    assert "TLS verification failed (self-signed certificate)" in _run_text(instance, refused)
    assert "(after 1 attempt(s))" in _run_text(instance, refused)  # not retried: it cannot heal
    assert result.success and trusted.query("SELECT count(*) FROM secure.stats")[0][0] == 9
    assert len([r for r in log if r["path"].startswith("/api/")]) == 3  # refused handshakes never became requests


@pytest.mark.parametrize("grant", ["oauth2_refresh_token", "oauth2_client_credentials"])
def test_a_token_request_is_never_redirected(grant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The token endpoint answers 307 to another host, which would issue a token of its own: requests
    would POST the refresh token (or the client's credentials) there and the API would get that host's
    token. The request fails instead, naming the token URL and where the redirect pointed."""
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")  # plain http on loopback
    foreign_token = {"access_token": "foreign-token", "token_type": "Bearer", "expires_in": 3600}
    with scripted_server(lambda request: (200, {}, foreign_token)) as foreign:

        def home_answer(request: dict[str, Any]) -> tuple[int, dict[str, str | list[str]], Any]:
            if request["path"] == "/token":
                return 307, {"Location": f"{foreign.url}/token?from=home"}, b""
            return 200, {}, {"data": [{"id": 1}]}

        with scripted_server(home_answer) as home:
            secrets = {"refresh_token": SECRET} if grant == "oauth2_refresh_token" else {"client_secret": SECRET}
            auth = HttpAuth(type=grant, token_url=f"{home.url}/token", client_id="platform", **secrets)  # type: ignore[arg-type]
            client = RestApiResource(base_url=home.url, max_retries=0, auth=auth).client("test")
            with pytest.raises(HttpAuthError) as refused:
                client.get_json(f"{home.url}/items")
    assert foreign.requests == []
    assert [r["path"] for r in home.requests] == ["/token"]  # no request with a token at all
    message = str(refused.value)
    assert f"at {home.url}/token" in message and f"HTTP 307 redirecting to {foreign.url}" in message, message
    assert SECRET not in message and "from=home" not in message


@pytest.mark.parametrize("every", [0, 0.2])
def test_a_token_answer_that_never_ends_fails_within_its_bounds(every: float, monkeypatch: pytest.MonkeyPatch) -> None:
    """A token endpoint whose answer never ends, as fast as it is read (``every`` 0) or two bytes every
    0.2 s: requests-oauthlib read it whole into memory (3 GB in 10 s) or waited for ever, since
    ``max_body_bytes`` and ``request_timeout`` bounded only the API's answers. The request fails naming
    the token URL and the bound, and nothing reaches the API."""
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")  # plain http on loopback
    with dripping_server({}, every) as endpoint, scripted_server(lambda request: (200, {}, [])) as api:
        auth = HttpAuth(
            type="oauth2_client_credentials", token_url=f"{endpoint.url}/token", client_id="c", client_secret=SECRET
        )
        client = RestApiResource(base_url=api.url, auth=auth, request_timeout=1, max_retries=0).client("test")
        failed = failures_within(
            lambda: client.get_json(f"{api.url}/items"), HttpAuthError, doing="reading the token answer"
        )
    bound = "passed 1,048,576 bytes" if every == 0 else "passed request_timeout (1s)"
    expected = f"OAuth2 client_credentials grant at {endpoint.url}/token: the token endpoint's answer {bound}"
    assert [str(exc) for exc in failed] == [expected] and api.requests == []
