"""Getting a refresh token: ``integration_platform.oauth_login`` against a certified OpenID Connect provider
(the npm package oidc-provider, started once per session on loopback). A scripted person signs in and
consents through the provider's real forms; the code comes back to the command's loopback listener, is
exchanged with the PKCE verifier, and the refresh token it yields then works for the platform's
``oauth2_refresh_token`` auth against the same provider. Forged and refused redirects are refused."""

import os
import re
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from integration_platform import oauth_login
from integration_platform.oauth_login import LoginError, login
from integration_platform.resources.http_auth import HttpAuth
from integration_platform.resources.http_credentials import OAuth2TokenAuth, build_auth
from integration_platform_tests.oidc_provider import CLIENT, SCOPES
from integration_platform_tests.rest_servers import scripted_server


@pytest.fixture(autouse=True)
def loopback_http(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")  # the test provider is plain http on loopback


def person(name: str, consents: bool = True) -> Callable[[str], None]:
    """A browser with a person in front of it: opens the address, fills the provider's sign-in form
    (any password passes its development interactions), then consents (or aborts)."""

    def browse(address: str) -> None:
        browser = requests.Session()
        page = browser.get(address, timeout=10)
        for _ in range(3):
            form = re.search(r'<form[^>]*action="([^"]+)"[^>]*>(.*?)</form>', page.text, re.S)
            if form is None:
                return  # redirected to the command's loopback listener
            inputs = re.findall(r'<input[^>]*name="([^"]+)"(?:[^>]*value="([^"]*)")?', form.group(2))
            data = {field: value or {"login": name, "password": "any"}.get(field, "") for field, value in inputs}
            target = urllib.parse.urljoin(page.url, form.group(1))
            if data.get("prompt") == "consent" and not consents:  # the page's cancel link
                cancel = re.search(r'href="([^"]*/abort)"', page.text)
                assert cancel is not None, page.text[:500]
                browser.get(urllib.parse.urljoin(page.url, cancel.group(1)), timeout=10)
                return
            page = browser.post(target, data=data, timeout=10)

    return browse


def test_the_login_yields_a_refresh_token_the_platform_then_uses(provider: str) -> None:
    token = login(
        f"{provider}/auth",
        f"{provider}/token",
        CLIENT,
        SCOPES,
        extra_parameters={"prompt": "consent"},
        open_browser=person("ada"),
        timeout=30,
    )
    assert token["refresh_token"] and token["access_token"]
    config = HttpAuth(type="oauth2_refresh_token", token_url=f"{provider}/token", client_id=CLIENT)
    config = config.model_copy(update={"refresh_token": token["refresh_token"]})
    auth = build_auth(config, timeout=10, verify=True)
    assert isinstance(auth, OAuth2TokenAuth)
    me = requests.get(f"{provider}/me", auth=auth, timeout=10)
    assert me.status_code == 200 and me.json()["sub"] == "ada"
    first = auth.access_token()
    auth.invalidate(first)  # the API said 401: the next request renews with the (rotated) refresh token
    assert requests.get(f"{provider}/me", auth=auth, timeout=10).json()["sub"] == "ada"
    assert auth.access_token() != first and auth.renewals == 2


def test_the_command_prints_the_variable_to_set_and_writes_nothing(
    provider: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(oauth_login.webbrowser, "open", person("grace"))
    status = oauth_login.main(
        [
            f"--authorization-url={provider}/auth",
            f"--token-url={provider}/token",
            f"--client-id={CLIENT}",
            "--scope=openid",
            "--scope=offline_access",
            "--param=prompt=consent",
            "--env-var=SHOP_API_REFRESH_TOKEN",
        ]
    )
    out = capsys.readouterr()
    assert status == 0, out.err
    exported = re.search(r"export SHOP_API_REFRESH_TOKEN=(\S+)", out.out)
    assert exported is not None and len(exported.group(1)) > 20
    assert out.out.count(exported.group(1)) == 1 and out.err == ""
    assert list(tmp_path.iterdir()) == []  # nothing written where it ran


def test_a_forged_redirect_and_a_refusal_yield_no_token(provider: str) -> None:
    def forged(address: str) -> None:
        redirect = urllib.parse.parse_qs(urllib.parse.urlsplit(address).query)["redirect_uri"][0]
        requests.get(redirect, params={"code": "stolen", "state": "not-this-login"}, timeout=10)

    with pytest.raises(LoginError, match="state does not match"):
        login(f"{provider}/auth", f"{provider}/token", CLIENT, SCOPES, open_browser=forged, timeout=30)
    with pytest.raises(LoginError, match="the provider refused: access_denied"):
        login(
            f"{provider}/auth",
            f"{provider}/token",
            CLIENT,
            SCOPES,
            extra_parameters={"prompt": "consent"},
            open_browser=person("eve", consents=False),
            timeout=30,
        )


def test_a_token_url_off_loopback_must_be_https() -> None:
    with pytest.raises(LoginError, match="must be https"):
        login("https://login.example.com/authorize", "http://login.example.com/token", CLIENT, SCOPES)
    assert "OAUTHLIB_INSECURE_TRANSPORT" in os.environ  # (set for the loopback provider; not what refuses here)


def test_a_token_endpoint_redirecting_gets_no_secret_and_yields_no_token() -> None:
    """A token endpoint answering 307 to another host: requests re-sent the POST there, with the client
    secret, the code and the PKCE verifier, and the command printed the refresh token that host issued as the
    one to set. The redirect now fails the login naming it, and the other host receives nothing."""
    issued = {"access_token": "a", "refresh_token": "planted", "token_type": "Bearer"}
    with scripted_server(lambda request: (200, {}, issued)) as elsewhere:
        with scripted_server(lambda request: (307, {"Location": f"{elsewhere.url}/token"}, {})) as provider:

            def signed_in(address: str) -> None:  # the provider's redirect back, with this login's state
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(address).query)
                back = {"code": "the-code", "state": query["state"][0]}
                requests.get(query["redirect_uri"][0], params=back, timeout=10)

            with pytest.raises(LoginError, match=f"HTTP 307 redirecting to {elsewhere.url}") as refused:
                login(
                    f"{provider.url}/auth",
                    f"{provider.url}/token",
                    CLIENT,
                    SCOPES,
                    client_secret="client-Secret-9f3k",
                    open_browser=signed_in,
                    timeout=30,
                )
    assert elsewhere.requests == []
    assert "the-code" not in str(refused.value) and "client-Secret-9f3k" not in str(refused.value)
    assert [r["method"] for r in provider.requests] == ["POST"]
