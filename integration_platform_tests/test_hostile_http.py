"""Credentials go only where configured, and no error keeps a secret: against a hostile API.

Two real servers (``sandbox/hostile_api/server.py``) on two loopback ports, so two origins: *home* is the
source's base URL; *foreign* is where home's links and redirects point. Home also answers with relative
references (``/detail/1``, ``detail/4``) and echoes every header it receives in an error body.
"""

import base64
import json
import traceback
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import requests

from integration_platform.core.names import UnsafeNameError
from integration_platform.resources.http_api import HttpSourceError, RestApiResource
from integration_platform.resources.http_auth import HttpAuth, HttpAuthError, mask
from integration_platform.sources.rest.extract import render_path
from integration_platform_tests.rest_servers import scripted_server
from integration_platform_tests.services import REPO
from integration_platform_tests.test_config_corpus import _load_as_project
from sandbox.harness import failure_messages, platform
from sandbox.processes import start_listening

SCRIPT = REPO / "sandbox" / "hostile_api" / "server.py"
TOKEN = "tok-" + "S3cr3tValue" * 3  # long enough that any 6-character piece of it is telling
KEY = "key-Vq8wR2mZp5tL"
HEADER_SECRET = "hdr-Lm4nB7xC1kQ9"
DETAILS = dg.AssetKey(["hostile", "details"])


@dataclass
class Api:
    url: str

    def requests(self) -> list[dict[str, Any]]:
        answer = requests.get(f"{self.url}/_requests", timeout=10)
        answer.raise_for_status()
        result: list[dict[str, Any]] = answer.json()
        return result

    def reset(self) -> None:
        requests.post(f"{self.url}/_reset", timeout=10).raise_for_status()


@pytest.fixture(scope="module")
def apis() -> Iterator[tuple[Api, Api]]:
    """(home, foreign): home's links and redirects lead to foreign."""
    with ExitStack() as stack:
        _, foreign = start_listening(stack, [str(SCRIPT), "--port", "0"], "foreign API")
        _, home = start_listening(stack, [str(SCRIPT), "--port", "0", "--foreign", foreign], "home API")
        yield Api(home), Api(foreign)


@pytest.fixture(autouse=True)
def secrets_in_env(monkeypatch: pytest.MonkeyPatch, apis: tuple[Api, Api]) -> None:
    monkeypatch.setenv("HOSTILE_TOKEN", TOKEN)
    monkeypatch.setenv("HOSTILE_KEY", KEY)
    monkeypatch.setenv("HOSTILE_HEADER_SECRET", HEADER_SECRET)
    for api in apis:
        api.reset()


def _yaml(home: str, auth: str, extra: str = "") -> str:
    return f"""
type: integration_platform.components.RestSource
attributes:
  source: hostile
  base_url: {home}
  auth: {auth}
  headers_env: {{X-Session-Token: HOSTILE_HEADER_SECRET}}
  max_retries: 0
{extra}
  defaults: {{paginator: {{type: single_page}}}}
  streams:
    - name: items
      path: /items
      records: results
      primary_key: [id]
    - name: details
      path: "{{url}}"
      parent: {{stream: items}}
      records: $
      primary_key: [id]
"""


COOKIE = "cookie-Zt7yQw3e"  # what home sets for 127.0.0.1, which a cookie jar sends to every port


def _sent_credentials(request: dict[str, Any]) -> list[str]:
    values = " ".join(request["headers"].values()) + " " + request["path"]
    named = (("token", TOKEN), ("api key", KEY), ("header", HEADER_SECRET), ("cookie", COOKIE))
    return [name for name, secret in named if secret in values]


def _text_of_run(instance: dg.DagsterInstance, run_id: str) -> str:
    return "\n".join(str(record) for record in instance.all_logs(run_id))


AUTHS = {
    "bearer": "{type: bearer, token_env: HOSTILE_TOKEN}",
    "api_key_header": "{type: api_key, api_key_env: HOSTILE_KEY, api_key_name: X-Api-Key}",
    "api_key_query": "{type: api_key, api_key_env: HOSTILE_KEY, api_key_name: apikey, api_key_in: query}",
}


@pytest.mark.parametrize("auth", sorted(AUTHS))
def test_credentials_stay_with_the_base_url_origin(
    apis: tuple[Api, Api], auth: str, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """A fan-out over links to another host, a redirect to it and relative references: the foreign host never
    gets a credential, home gets them on every request, and relative links resolve against home (RFC 3986)."""
    home, foreign = apis
    # one request at a time, in parent order: the link and the redirect to foreign come after home set its
    # cookie (a jar matches 127.0.0.1 whatever the port)
    source = platform(_yaml(home.url, AUTHS[auth], "  concurrency: 1"), tmp_path, instance)
    result = source.materialize()
    assert result.success
    served = {row[0]: row[1] for row in source.query("SELECT id, served_by FROM hostile.details")}
    assert served == {1: home.url, 2: foreign.url, 3: foreign.url, 4: home.url}
    home_requests = home.requests()
    assert {r["path"].split("?")[0] for r in home_requests} == {"/items", "/detail/1", "/redirect/3", "/detail/4"}
    for request in home_requests:  # the auth's secret and the secret header (and home's cookie, once set)
        assert len(set(_sent_credentials(request)) - {"cookie"}) == 2, request
    assert any("cookie" in _sent_credentials(r) for r in home_requests), "home's cookie came back to home"
    foreign_requests = foreign.requests()
    assert sorted(r["path"].split("?")[0] for r in foreign_requests) == ["/detail/2", "/detail/3"]
    for request in foreign_requests:
        assert _sent_credentials(request) == [], request
    assert TOKEN not in _text_of_run(instance, result.run_id) and KEY not in _text_of_run(instance, result.run_id)


def test_without_auth_the_home_cookie_stays_home() -> None:
    """``auth: none`` and no secret header (the API's session is its cookie): the cookie home set goes back to
    home, never to another origin that a next link or a parent's URL names (another port of 127.0.0.1, which
    the cookie jar, matching domains only, would send it to), nor through a redirect there."""
    with scripted_server(lambda request: (200, {}, {"id": 2})) as foreign:

        def home_answer(request: dict[str, Any]) -> tuple[int, dict[str, str | list[str]], Any]:
            if request["path"] == "/redirect":
                return 302, {"Location": f"{foreign.url}/detail"}, b""
            return 200, {"Set-Cookie": f"sid={COOKIE}; Path=/"}, {"id": 1}

        with scripted_server(home_answer) as home:
            client = RestApiResource(base_url=home.url, max_retries=0).client("test")
            for url in (f"{home.url}/items", f"{foreign.url}/detail", f"{home.url}/redirect", f"{home.url}/items"):
                client.get_json(url)
    assert [r["headers"].get("Cookie") for r in home.requests] == [None, f"sid={COOKIE}", f"sid={COOKIE}"]
    assert [r["headers"].get("Cookie") for r in foreign.requests] == [None, None]


def test_allowed_hosts_extend_the_credentials_to_another_origin(
    apis: tuple[Api, Api], tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    home, foreign = apis
    text = _yaml(home.url, AUTHS["bearer"], f"  allowed_hosts: [{foreign.url}]")
    source = platform(text, tmp_path, instance)
    assert source.materialize().success
    foreign_requests = foreign.requests()
    assert len(foreign_requests) == 2
    for request in foreign_requests:  # the linked URL and the redirect target both got them
        assert {"token", "header"} <= set(_sent_credentials(request)), request


def test_an_error_that_echoes_a_secret_never_stores_it(
    apis: tuple[Api, Api], tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """The server echoes the Authorization header after 290 characters: cutting the text at 300 before masking
    once left most of the token visible. No piece of the token reaches the run's records."""
    home, _ = apis
    text = _yaml(home.url, AUTHS["bearer"]).replace("path: /items", "path: /echo")
    source = platform(text, tmp_path, instance)
    result = source.materialize([dg.AssetKey(["hostile", "items"])], raise_on_error=False)
    assert not result.success
    messages = failure_messages(result)
    assert any("HTTP 400" in m and "/echo" in m for m in messages), messages
    records = _text_of_run(instance, result.run_id) + json.dumps(messages)
    pieces = {TOKEN[i : i + 6] for i in range(len(TOKEN) - 5)} | {HEADER_SECRET[i : i + 6] for i in range(10)}
    assert not [p for p in pieces if p in records]


def _echo(request: dict[str, Any]) -> tuple[int, dict[str, str | list[str]], Any]:
    """A token endpoint at /token issuing TOKEN; every other path a 400 echoing the request line and headers."""
    if request["path"] == "/token":
        return 200, {}, {"access_token": TOKEN, "token_type": "Bearer", "expires_in": 3600}
    return 400, {}, {"error": "bad request", "you_sent": {"path": request["path"], **request["headers"]}}


def basic_credentials(username: str, password: str) -> str:
    """The value after ``Basic`` that requests sends (RFC 7617)."""
    return base64.b64encode(f"{username}:{password}".encode()).decode()


ODD_KEY = "k3y/Secret+Value=="  # characters that a query string percent-encodes

ECHOED = {
    "basic": (HttpAuth(type="basic", username="etl", password=KEY), [basic_credentials("etl", KEY)]),
    "api_key_query": (
        HttpAuth(type="api_key", api_key=ODD_KEY, api_key_name="apikey", api_key_in="query"),
        ["k3y%2FSecret%2BValue%3D%3D"],
    ),
    "oauth2": (
        HttpAuth(type="oauth2_client_credentials", token_url="TOKEN_URL", client_id="etl", client_secret=KEY),
        [TOKEN],
    ),
}


@pytest.mark.parametrize("auth", sorted(ECHOED))
def test_a_secret_echoed_in_the_form_it_was_sent_is_masked(auth: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """An API echoing the request in its error: the basic ``Authorization`` value (base64 of user:password),
    an API key as percent-encoded in the query, an OAuth2 access token are secrets as much as the raw values."""
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")  # plain http on loopback
    config, sent = ECHOED[auth]
    with scripted_server(_echo) as api:
        config = config.model_copy(update={"token_url": f"{api.url}/token"} if config.token_url else {})
        client = RestApiResource(base_url=api.url, max_retries=0, auth=config).client("test")
        with pytest.raises(HttpSourceError, match="HTTP 400") as failed:
            client.get_json(f"{api.url}/items")
    echoed = json.dumps(api.requests[-1])
    assert [form for form in sent if form in echoed] == sent  # what the server saw, as it saw it
    shown = [form for form in [*sent, KEY, ODD_KEY, TOKEN] if form in str(failed.value)]
    assert shown == [] and "/items" in str(failed.value), str(failed.value)


UNSAFE_SECRETS = {
    "bearer": (lambda edge: HttpAuth(type="bearer", token=edge(TOKEN)), {}, "auth.token"),
    "api_key": (lambda edge: HttpAuth(type="api_key", api_key=edge(KEY)), {}, "auth.api_key"),
    "secret header": (
        lambda edge: HttpAuth(),
        {"X-Partner-Token": "IP_TEST_PARTNER_TOKEN"},
        "header 'X-Partner-Token'",
    ),
}
#: A secret's unsafe edges: a file's final newline (a Kubernetes secret mounted into an environment
#: variable), a CRLF, a trailing space or no-break space pasted with it, a leading tab.
UNSAFE_EDGES: dict[str, Callable[[str], str]] = {
    "newline": lambda secret: f"{secret}\n",
    "crlf": lambda secret: f"{secret}\r\n",
    "space": lambda secret: f"{secret} ",
    "nbsp": lambda secret: f"{secret}\xa0",
    "leading_tab": lambda secret: f"\t{secret}",
}


@pytest.mark.parametrize(
    ("kind", "edge"),
    [
        *((kind, "newline") for kind in sorted(UNSAFE_SECRETS)),
        *(("bearer", e) for e in sorted(UNSAFE_EDGES) if e != "newline"),
    ],
)
def test_a_secret_with_a_line_break_or_edge_whitespace_is_refused_without_repeating_it(
    kind: str, edge: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A secret read from a file with its final newline: http.client refused the header with
    ``ValueError: Invalid header value b'Bearer <token>\\n'``, the whole secret in the run's logs (the masking
    missed it, written as a bytes repr). Edge whitespace went out silently (http.client strips it, or the
    server does, or it fails as a wrong credential). The client is refused naming the field or the variable,
    never the value, and nothing is sent."""
    monkeypatch.setenv("IP_TEST_PARTNER_TOKEN", UNSAFE_EDGES[edge](HEADER_SECRET))
    auth, headers_env, named = UNSAFE_SECRETS[kind]
    with scripted_server(lambda request: (200, {}, [])) as api:
        resource = RestApiResource(
            base_url=api.url, auth=auth(UNSAFE_EDGES[edge]), secret_headers_env=headers_env, max_retries=0
        )
        with pytest.raises(ValueError) as refused:
            resource.client("test").get_json(f"{api.url}/items")
    message = str(refused.value)
    assert message.startswith(named) and "leading or trailing whitespace" in message and api.requests == []
    assert not any(secret in message for secret in (TOKEN, KEY, HEADER_SECRET)), message


def test_an_access_token_that_cannot_be_a_header_is_refused_without_repeating_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A token endpoint issuing ``"<token>\\n"``: the API request failed with http.client's ``ValueError``
    repeating the token. It fails as ``HttpAuthError`` naming the token endpoint, and the API gets nothing."""
    answer = {"access_token": f"{TOKEN}\r\n", "token_type": "Bearer", "expires_in": 3600}
    message, url, paths = _refused_by_the_token_endpoint(answer, monkeypatch)
    assert message.startswith(f"OAuth2 client_credentials grant at {url}/token: the access token issued holds")
    assert TOKEN not in message and paths == ["/token"]


def _refused_by_the_token_endpoint(answer: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str, list[str]]:
    """A REST client with the OAuth2 client credentials grant, its token endpoint answering ``answer`` (200,
    as JSON); the ``HttpAuthError`` its first API request raised, the server's URL and the paths asked."""
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")

    def serve(request: dict[str, Any]) -> tuple[int, dict[str, str | list[str]], Any]:
        if request["path"] == "/token":
            return 200, {"Content-Type": "application/json"}, answer
        return 200, {}, []

    with scripted_server(serve) as api:
        auth = HttpAuth(
            type="oauth2_client_credentials", token_url=f"{api.url}/token", client_id="etl", client_secret=KEY
        )
        client = RestApiResource(base_url=api.url, max_retries=0, auth=auth).client("test")
        with pytest.raises(HttpAuthError) as refused:
            client.get_json(f"{api.url}/items")
    return str(refused.value), api.url, [r["path"] for r in api.requests]


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ('{"access_token": "%s", "token_type": "Bearer", "expires_in": "soon"}', "expires_in must be an int"),
        ('{"access_token": "%s", "token_type": "Bearer", "expires_in": 1e400}', "OverflowError"),
        ('["%s"]', "ValueError: dictionary update sequence"),
        ("5", "TypeError"),
        ('{"access_token": "%s", "token_type": "Bearer", "expires_in": 1' + "0" * 400 + "}", "expires_in is not"),
    ],
    ids=["expires_in_words", "expires_in_infinite", "a_list", "a_number", "expires_in_huge"],
)
def test_a_token_answer_of_another_shape_fails_naming_the_token_endpoint(
    answer: str, reason: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A token endpoint answering ``expires_in: "soon"``, ``1e400`` or a JSON list: oauthlib's bare
    ``ValueError`` or ``OverflowError`` failed the step naming neither the endpoint nor
    the grant. It is an ``HttpAuthError`` naming both, never the body, and the API gets nothing."""
    message, url, paths = _refused_by_the_token_endpoint(answer.replace("%s", TOKEN), monkeypatch)
    assert message.startswith(f"OAuth2 client_credentials grant at {url}/token: the answer")
    assert reason in message and TOKEN not in message and paths == ["/token"]


def test_a_token_endpoint_echoing_the_client_credentials_is_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    """A token endpoint refusing the client with its basic credentials in the error description."""
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
    sent = basic_credentials("etl", KEY)

    def refuse(request: dict[str, Any]) -> tuple[int, dict[str, str | list[str]], Any]:
        return 401, {}, {"error": "invalid_client", "error_description": f"refused {request['headers']}"}

    with scripted_server(refuse) as api:
        auth = HttpAuth(
            type="oauth2_client_credentials", token_url=f"{api.url}/token", client_id="etl", client_secret=KEY
        )
        client = RestApiResource(base_url=api.url, max_retries=0, auth=auth).client("test")
        with pytest.raises(HttpAuthError, match="invalid_client") as failed:
            client.get_json(f"{api.url}/items")
    assert sent in json.dumps(api.requests[0]) and "refused" in str(failed.value)
    assert sent not in str(failed.value) and KEY not in str(failed.value), str(failed.value)


def test_a_password_in_the_base_urls_user_info_is_masked() -> None:
    """``http://etl:<password>@host`` (allowed; requests sends it as basic auth): the URL in the error shows
    ``etl:***@``, and the password, percent-encoded as written or as the basic value echoed, shows nowhere."""
    password = "pw/" + KEY  # written %2F in the URL
    with scripted_server(_echo) as api:
        base = api.url.replace("http://", f"http://etl:{password.replace('/', '%2F')}@")
        client = RestApiResource(base_url=base, max_retries=0).client("test")
        with pytest.raises(HttpSourceError, match="HTTP 400") as failed:
            client.get_json(client.url("/items"))
    assert basic_credentials("etl", password) in json.dumps(api.requests[0])
    message = str(failed.value)
    assert message.startswith(f"GET http://etl:***@{api.url.removeprefix('http://')}/items: HTTP 400"), message
    assert KEY not in message and basic_credentials("etl", password) not in message, message


def _load_error(tmp_path: Path, attribute_line: str) -> str:
    """The full traceback text of loading a RestSource whose attributes include ``attribute_line``."""
    config = tmp_path / "inline_secret.yaml"
    config.write_text(
        "type: integration_platform.components.RestSource\n"
        "attributes:\n  source: shop\n  base_url: https://api.example.com\n"
        f"  {attribute_line}\n"
        "  streams:\n    - name: orders\n      path: /orders\n"
    )
    with pytest.raises(Exception) as refused:
        _load_as_project(config, tmp_path / "project")
    return "".join(traceback.format_exception(refused.value))


@pytest.mark.parametrize("header", ["Authorization", "Cookie", "X-Api-Key", "X-Auth-Token", "Client-Secret"])
def test_an_inline_secret_header_is_refused_without_repeating_it(tmp_path: Path, header: str) -> None:
    text = _load_error(tmp_path, f'headers: {{{header}: "{TOKEN}"}}')
    assert f"attributes.headers.{header}" in text and "headers_env" in text
    assert TOKEN not in text and TOKEN[4:14] not in text


def test_an_inline_secret_in_a_pydantic_error_is_hidden(tmp_path: Path) -> None:
    """A secret in a field that does not exist (``token:`` instead of ``token_env:``) is refused by pydantic,
    whose errors quote their input: the component's model hides it."""
    text = _load_error(tmp_path, f"auth: {{type: bearer, token: {TOKEN}}}")
    assert "unknown field 'token'; did you mean 'token_env'?" in text and "auth" in text
    assert TOKEN not in text


@pytest.mark.parametrize("name", ["api_key", "access_token", "X-Signature"])
def test_an_inline_secret_query_parameter_is_refused(tmp_path: Path, name: str) -> None:
    """Configured query parameters go to every host a fan-out reaches: a secret there must be the auth's."""
    text = _load_error(tmp_path, f'params: {{{name}: "{TOKEN}"}}')
    assert f"attributes.params.{name}" in text and "api_key_in: query" in text
    assert TOKEN not in text


def test_a_parent_value_fills_exactly_one_path_segment(
    apis: tuple[Api, Api], tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """``a/../b`` from a parent record reaches the server as one encoded segment, never as a path that
    climbs out of ``/path/v1/{ref}/roles``."""
    home, _ = apis
    text = _yaml(home.url, AUTHS["bearer"]).replace("path: /items", "path: /refs")
    text = text.replace('path: "{url}"', 'path: "/path/v1/{ref}/roles"')
    source = platform(text, tmp_path, instance)
    assert source.materialize().success
    paths = sorted(r["path"].split("?")[0] for r in home.requests() if r["path"].startswith("/path/"))
    assert paths == ["/path/v1/a%2F..%2Fb/roles", "/path/v1/ok/roles"]


BAD_REFERENCES = {
    "file:///etc/passwd": "GET file:///etc/passwd (from its parent's record): value of {url} in '{url}' is not an "
    "http(s) URL (scheme 'file')",
    f"http://[::1/x?token={TOKEN}": "GET http://[::1/x?token=%2A%2A%2A (from its parent's record): value of {url} in "
    "'{url}' is not a URL (Invalid IPv6 URL)",
}


@pytest.mark.parametrize("reference", sorted(BAD_REFERENCES), ids=["file_scheme", "unclosed_ipv6"])
def test_a_parent_reference_that_is_no_http_url_fails_naming_stream_and_url(
    reference: str, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """A parent's ``{url}`` of another scheme or malformed failed with requests' bare InvalidSchema or
    urllib's ValueError, naming neither the stream nor (masked) the URL."""

    def answer(request: dict[str, Any]) -> tuple[int, dict[str, str | list[str]], Any]:
        return 200, {}, {"results": [{"id": 1, "url": reference}]} if request["path"] == "/items" else {"id": 1}

    with scripted_server(answer) as api:
        source = platform(_yaml(api.url, AUTHS["bearer"]), tmp_path, instance)
        result = source.materialize(raise_on_error=False)
    messages = failure_messages(result)
    assert any(f"HttpSourceError: stream hostile/details: {BAD_REFERENCES[reference]}" in m for m in messages), messages
    assert TOKEN not in json.dumps(messages) and TOKEN not in _text_of_run(instance, result.run_id)


def test_a_dot_segment_value_is_refused() -> None:
    """``..`` cannot be sent as a path segment at all: requests decodes ``%2E`` and urllib3 then removes the
    dot segment, so ``/users/../roles`` would reach ``/roles`` with the credentials. Refused, naming it."""
    with pytest.raises(UnsafeNameError, match=r"value of \{id\} in '/users/\{id\}/roles' '\.\.'"):
        render_path("/users/{id}/roles", {"id": ".."}, "https://api.example.com/")
    assert render_path("/users/{id}/roles", {"id": "a/b"}, "https://api.example.com/") == "/users/a%2Fb/roles"


def test_a_secret_given_where_an_object_belongs_is_not_repeated(tmp_path: Path) -> None:
    """``auth: "Bearer …"`` passes Dagster's first validation (any field may be a template string) and fails
    when the component is built, a second pydantic validation: its error hides the input too."""
    text = _load_error(tmp_path, f'auth: "Bearer {TOKEN}"')
    assert "auth" in text and TOKEN not in text


@pytest.mark.fast
def test_a_secret_echoed_inside_json_is_masked_as_encoders_escape_it() -> None:
    """An API echoing the request as JSON writes a password with a quote, a backslash, a non-ASCII letter, a
    ``/`` or a ``+`` escaped (``\\"``, ``\\\\``, ``\\u00f6``; PHP ``\\/``; .NET ``\\u002B``): the raw value
    never occurs in the echo, so masking it alone showed the password."""
    password = 'pa"ss\\wörd/x+y'
    echoes = [
        json.dumps({"password": password}),
        json.dumps({"password": password}, ensure_ascii=False),
        json.dumps({"password": password}).replace("/", "\\/"),
        json.dumps({"password": password}).replace("+", "\\u002B"),
    ]
    for echo in echoes:
        assert password not in echo
        assert mask(echo, [password]) == '{"password": "***"}', echo


def test_a_query_parameter_named_author_is_no_secret_but_an_api_key_is() -> None:
    """The secret-name pattern's exception for ``author``/``authors`` held a backspace byte where ``\\b`` was
    meant, so ``?author=5`` was refused as a secret, in ``params`` and in a stream's path."""
    from integration_platform.resources.http_auth import inline_url_secret

    assert inline_url_secret("/wp/v2/posts?author=5&authors=1&coauthor=2") is None
    assert inline_url_secret("/wp/v2/posts?auth=x") is not None
    assert inline_url_secret("/orders?api_key=x") is not None
