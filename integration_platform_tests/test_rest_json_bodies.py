"""JSON bodies decode to the values (or the error) ``response.json()`` gave before, whichever decoder
reads them (``client.decoded``: orjson, and ``response.json()`` for what orjson refuses or would
read differently), from a real server serving the bytes as they are."""

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from integration_platform.sources.rest.client import decoded
from integration_platform_tests.rest_servers import pokeapi_server

BODIES = {
    "plain": b'{"id": 1, "name": "caf\\u00e9 \xc3\xa9", "nested": {"list": [1, 2.5, null, true]}}',
    "nan_and_infinity": b'{"id": 2, "ratio": NaN, "top": Infinity}',
    "beyond_64_bits": b'{"id": 3, "big": 123456789012345678901234567890}',
    "utf16": '{"id": 4, "name": "\u00e9t\u00e9"}'.encode("utf-16"),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> object:
    root = tmp_path_factory.mktemp("bodies")
    (root / "api" / "v2").mkdir(parents=True)
    (root / "api" / "v2" / "index.json").write_text("{}")
    bodies = {**BODIES, "truncated": b'{"id": 5, "name": "cut'}
    listing = [{"name": name, "url": f"/api/v2/body/{n}/"} for n, name in enumerate(bodies, 1)]
    for n, body in enumerate(bodies.values(), 1):  # the server finds a detail through its endpoint's list
        folder = root / "api" / "v2" / "body" / str(n)
        folder.mkdir(parents=True)
        (folder / "index.json").write_bytes(body)
    (root / "api" / "v2" / "body" / "index.json").write_text(json.dumps({"results": listing}))
    with pokeapi_server(Path(root)) as running:
        yield running


def outcome(read: Callable[[], Any]) -> str:
    """What ``read`` gives, as comparable text: the value as JSON, or the error's type."""
    try:
        return json.dumps(read(), sort_keys=True)
    except requests.JSONDecodeError as exc:
        return f"raises {type(exc).__name__}"


@pytest.mark.parametrize("name", sorted(BODIES))
def test_a_body_decodes_to_what_the_client_always_gave(server: object, name: str) -> None:
    response = requests.get(f"{server.url}/api/v2/body/{name}/", timeout=10)  # type: ignore[attr-defined]
    assert response.status_code == 200 and response.content == BODIES[name]
    assert outcome(lambda: decoded(response)) == outcome(response.json)
    if name == "beyond_64_bits":  # orjson alone would give a float here, digits lost
        assert decoded(response)["big"] == 123456789012345678901234567890
    if name == "plain":
        assert decoded(response)["name"] == "caf\u00e9 \u00e9"


def test_a_truncated_body_raises_the_error_the_client_retries(server: object) -> None:
    response = requests.get(f"{server.url}/api/v2/body/truncated/", timeout=10)  # type: ignore[attr-defined]
    with pytest.raises(requests.JSONDecodeError):
        decoded(response)
