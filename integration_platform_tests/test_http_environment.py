"""The REST client honours the proxy variables of its environment per origin, as requests does,
though it reads them once per origin for the session's life (``CredentialSession.merge_environment_settings``).

Two real HTTP servers on loopback: an *origin* answering ``{"via": "origin"}`` and a forward *proxy*
answering ``{"via": "proxy", "target": <the absolute URL it was asked for>}``. The origin is reached
under two names, ``127.0.0.1`` (proxied) and ``localhost`` (in ``NO_PROXY``): two origins, one session.
"""

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from integration_platform.resources.http_api import RestApiResource
from integration_platform.resources.http_client import RestClient


class _Answer(BaseHTTPRequestHandler):
    via = "origin"

    def do_GET(self) -> None:
        body = json.dumps({"via": self.via, "target": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class _Proxy(_Answer):
    via = "proxy"


def _serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def origin_port() -> Iterator[int]:
    yield from _serve(_Answer)


@pytest.fixture(scope="module")
def proxy_port() -> Iterator[int]:
    yield from _serve(_Proxy)


def _get(client: RestClient, url: str) -> dict[str, str]:
    body, _ = client.get_json(url)
    assert isinstance(body, dict)
    return body


def test_each_origin_keeps_its_own_proxy_setting(
    monkeypatch: pytest.MonkeyPatch, origin_port: int, proxy_port: int
) -> None:
    for name in ("http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy_port}")
    monkeypatch.setenv("NO_PROXY", "localhost")
    proxied, direct = f"http://127.0.0.1:{origin_port}", f"http://localhost:{origin_port}"
    asked: list[str] = []
    read_environment = requests.sessions.get_environ_proxies

    def counted(url: str, no_proxy: str | None = None) -> dict[str, str]:
        asked.append(url)
        return read_environment(url, no_proxy=no_proxy)

    monkeypatch.setattr(requests.sessions, "get_environ_proxies", counted)
    client = RestApiResource(base_url=proxied).client("test")
    try:
        for i in range(3):  # alternating: the second and third ask the remembered settings
            assert _get(client, f"{proxied}/a/{i}") == {"via": "proxy", "target": f"{proxied}/a/{i}"}
            assert _get(client, f"{direct}/b/{i}") == {"via": "origin", "target": f"/b/{i}"}
        assert asked == [f"{proxied}/a/0", f"{direct}/b/0"]  # once per origin, not per request
        client.session.trust_env = False  # the session's own settings are part of what is remembered
        assert _get(client, f"{proxied}/c") == {"via": "origin", "target": "/c"}
        client.session.trust_env = True
        client.session.proxies = {"http": f"http://127.0.0.1:{proxy_port}"}  # beats NO_PROXY, as in requests
        assert _get(client, f"{direct}/d") == {"via": "proxy", "target": f"{direct}/d"}
        user = f"http://someone:pw@127.0.0.1:{origin_port}/e"  # the same origin as `proxied`
        assert _get(client, user)["via"] == "proxy"
        assert not any("pw" in str(key) for key in client.session._environment)
    finally:
        client.close()


def test_a_new_session_reads_the_environment_again(
    monkeypatch: pytest.MonkeyPatch, origin_port: int, proxy_port: int
) -> None:
    for name in ("http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    url = f"http://127.0.0.1:{origin_port}/c"
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy_port}")
    first = RestApiResource(base_url=url).client("test")
    try:
        assert _get(first, url)["via"] == "proxy"
        monkeypatch.delenv("HTTP_PROXY")
        second = RestApiResource(base_url=url).client("test")
        try:
            assert _get(second, url)["via"] == "origin"
        finally:
            second.close()
    finally:
        first.close()
