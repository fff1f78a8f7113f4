"""The local HTTP servers behave as the REST source's tests assume: PokeAPI paging and auth, faults, datasette."""

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from integration_platform_tests.rest_servers import REPO, datasette_server, fault_proxy, pokeapi_server

CLIENT = ("client-1", "s3cret")


def get_json(url: str, **kwargs: Any) -> Any:
    response = requests.get(url, timeout=10, **kwargs)
    assert response.status_code == 200, (url, response.status_code, response.text[:300])
    return response.json()


def test_pokeapi_pages_like_the_live_api() -> None:
    with pokeapi_server() as server:
        base = f"{server.url}/api/v2"
        last = get_json(f"{base}/berry/?offset=60&limit=20")
        assert (last["count"], len(last["results"]), last["next"]) == (68, 8, None)
        assert last["previous"] == f"{base}/berry/?offset=40&limit=20"
        first = get_json(f"{base}/berry")  # trailing slash optional, default limit 20
        assert (len(first["results"]), first["previous"]) == (20, None)
        assert first["next"] == f"{base}/berry/?offset=20&limit=20"
        assert first["results"][0] == {"name": "cheri", "url": f"{base}/berry/1/"}
        names, url = [], f"{base}/berry/?limit=30"
        while url:
            page = get_json(url)
            names += [row["name"] for row in page["results"]]
            url = page["next"]
        assert len(names) == len(set(names)) == 68
        pokemon = get_json(f"{base}/pokemon/?offset=40&limit=20")  # list file names 1351, details only 1..50
        assert (pokemon["count"], len(pokemon["results"]), pokemon["next"]) == (50, 10, None)
        assert requests.get(f"{base}/berry/?offset=-1", timeout=10).status_code == 400
        assert requests.get(f"{base}/berry/?limit=x", timeout=10).status_code == 400
        missing = requests.get(f"{base}/pokemon/51/", timeout=10)
        assert (missing.status_code, missing.json()) == (404, {"detail": "Not found."})
        assert [entry["auth"] for entry in server.stats()["requests"]][:1] == ["none"]
        server.reset()
        assert server.stats() == {"requests": [], "tokens_issued": 0, "token_requests": []}


def test_pokeapi_detail_by_id_and_name_and_sub_resource() -> None:
    with pokeapi_server() as server, requests.Session() as session:
        base = f"{server.url}/api/v2"
        by_id = session.get(f"{base}/berry/1/", timeout=10)
        assert by_id.headers["Content-Type"] == "application/json"
        assert by_id.json() == session.get(f"{base}/berry/cheri", timeout=10).json()
        assert by_id.json()["firmness"]["url"] == "/api/v2/berry-firmness/2/"  # inner URLs stay relative
        encounters = session.get(f"{base}/pokemon/pikachu/encounters/", timeout=10).json()
        assert encounters == session.get(f"{base}/pokemon/25/encounters", timeout=10).json()
        assert isinstance(encounters, list) and encounters[0]["location_area"]["name"]
        assert session.get(f"{base}/", timeout=10).json()["berry"] == "/api/v2/berry/"


def test_vendored_slice_serves_its_six_endpoints() -> None:
    with pokeapi_server(REPO / "sandbox" / "pokeapi" / "data") as server:
        base = f"{server.url}/api/v2"
        counts = {name: get_json(f"{base}/{name}/")["count"] for name in ("berry", "type", "region", "generation")}
        assert counts == {"berry": 68, "type": 21, "region": 11, "generation": 9}
        assert requests.get(f"{base}/pokemon/1/", timeout=10).status_code == 404


def test_latency_does_not_serialise_requests() -> None:
    with pokeapi_server(latency_ms=300) as server:
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=20) as pool:
            statuses = list(
                pool.map(lambda i: requests.get(f"{server.url}/api/v2/berry/{i}/").status_code, range(1, 21))
            )
        assert statuses == [200] * 20
        assert 0.3 <= time.monotonic() - started < 2.0


def token(server_url: str, **data: str) -> requests.Response:
    return requests.post(f"{server_url}/oauth/token", data=data, timeout=10, auth=CLIENT)


def test_oauth2_client_credentials_expiry_and_refresh() -> None:
    args = ["--oauth2", ":".join(CLIENT), "--token-ttl", "1", "--refresh-token", "rt-initial"]
    with pokeapi_server(auth_args=args) as server:
        url = f"{server.url}/api/v2/berry/1/"
        issued = token(server.url, grant_type="client_credentials")
        assert issued.status_code == 200, issued.text
        assert issued.headers["Cache-Control"] == "no-store"
        body = issued.json()
        assert (body["token_type"], body["expires_in"], "refresh_token" in body) == ("Bearer", 1, False)
        bearer = {"Authorization": f"Bearer {body['access_token']}"}
        assert requests.get(url, headers=bearer, timeout=10).status_code == 200
        time.sleep(1.2)
        expired = requests.get(url, headers=bearer, timeout=10)
        assert expired.status_code == 401
        assert expired.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')
        assert requests.get(url, timeout=10).status_code == 401
        assert requests.get(url, headers={"Authorization": "Bearer nope"}, timeout=10).status_code == 401
        wrong = requests.post(
            f"{server.url}/oauth/token", data={"grant_type": "client_credentials"}, auth=("client-1", "x"), timeout=10
        )
        assert (wrong.status_code, wrong.json()["error"]) == (401, "invalid_client")

        # client authentication in the body this time (RFC 6749 section 2.3.1 allows both)
        form = {"grant_type": "refresh_token", "client_id": CLIENT[0], "client_secret": CLIENT[1]}
        refreshed = requests.post(f"{server.url}/oauth/token", data={**form, "refresh_token": "rt-initial"}, timeout=10)
        assert refreshed.status_code == 200, refreshed.text
        new_refresh = refreshed.json()["refresh_token"]
        assert new_refresh != "rt-initial"
        again = token(server.url, grant_type="refresh_token", refresh_token=new_refresh)
        assert again.status_code == 200
        headers = {"Authorization": f"Bearer {again.json()['access_token']}"}
        assert requests.get(url, headers=headers, timeout=10).status_code == 200
        bogus = token(server.url, grant_type="refresh_token", refresh_token="bogus")
        assert (bogus.status_code, bogus.json()["error"]) == (400, "invalid_grant")

        stats = server.stats()
        assert [entry["auth"] for entry in stats["requests"]] == ["ok", "expired", "missing", "invalid", "ok"]
        assert stats["tokens_issued"] == 3
        assert [(t["grant_type"], t["status"]) for t in stats["token_requests"]] == [
            ("client_credentials", 200),
            ("client_credentials", 401),
            ("refresh_token", 200),
            ("refresh_token", 200),
            ("refresh_token", 400),
        ]


def test_oauth2_token_endpoint_works_with_requests_oauthlib(monkeypatch: pytest.MonkeyPatch) -> None:
    oauth2_session = pytest.importorskip("requests_oauthlib").OAuth2Session
    client = pytest.importorskip("oauthlib.oauth2").BackendApplicationClient(client_id=CLIENT[0])
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")  # requests-oauthlib refuses http:// token URLs otherwise
    with pokeapi_server(auth_args=["--oauth2", ":".join(CLIENT)]) as server:
        session = oauth2_session(client=client)
        fetched = session.fetch_token(f"{server.url}/oauth/token", client_id=CLIENT[0], client_secret=CLIENT[1])
        assert fetched["expires_in"] == 3600
        assert session.get(f"{server.url}/api/v2/type/fire/", timeout=10).json()["name"] == "fire"


@pytest.mark.parametrize(
    ("auth_args", "good", "bad"),
    [
        (
            ["--api-key-query", "api_key", "--api-key", "k1"],
            {"params": {"api_key": "k1"}},
            {"params": {"api_key": "x"}},
        ),
        (["--api-key-header", "X-Api-Key", "--api-key", "k1"], {"headers": {"X-Api-Key": "k1"}}, {"headers": {}}),
        (["--basic", "ash:pikachu"], {"auth": ("ash", "pikachu")}, {"auth": ("ash", "raichu")}),
        (["--bearer", "tok"], {"headers": {"Authorization": "Bearer tok"}}, {"headers": {"Authorization": "Bearer x"}}),
    ],
)
def test_static_credentials(auth_args: list[str], good: dict[str, Any], bad: dict[str, Any]) -> None:
    with pokeapi_server(auth_args=auth_args) as server:
        url = f"{server.url}/api/v2/berry/?limit=2"
        assert len(get_json(url, **good)["results"]) == 2
        refused = requests.get(url, timeout=10, **bad)
        assert refused.status_code == 401 and "WWW-Authenticate" in refused.headers
        assert requests.get(f"{server.url}/_stats", timeout=10).status_code == 200  # control needs no credential


def test_fault_proxy_plan() -> None:
    plan: list[dict[str, Any]] = [
        {"fault": "429", "at": [1], "retry_after": 1},
        {"fault": "reset", "at": [2]},
        {"fault": "truncate", "at": [3]},
        {"fault": "truncate_json", "at": [4]},
    ]
    with pokeapi_server() as server, fault_proxy(server.url, plan) as proxy:
        url = f"{proxy.url}/api/v2/berry/?offset=20&limit=20"
        first = requests.get(url, timeout=10)
        assert (first.status_code, first.headers["Retry-After"]) == (429, "1")
        with pytest.raises(requests.ConnectionError):
            requests.get(url, timeout=10)
        with pytest.raises(requests.exceptions.ChunkedEncodingError):  # IncompleteRead: body shorter than declared
            requests.get(url, timeout=10)
        fourth = requests.get(url, timeout=10)
        assert fourth.status_code == 200
        with pytest.raises(requests.JSONDecodeError):
            fourth.json()
        fifth = get_json(url)
        assert fifth["next"] == f"{proxy.url}/api/v2/berry/?offset=40&limit=20"  # upstream base rewritten
        assert fifth["results"][0]["url"].startswith(f"{proxy.url}/api/v2/berry/")
        stats = proxy.stats()
        assert (stats["received"], stats["forwarded"]) == (5, 3)
        assert {k: v for k, v in stats["faults"].items() if v} == {
            "429": 1,
            "reset": 1,
            "truncate": 1,
            "truncate_json": 1,
        }
        assert [(e["n"], e["fault"], e["status"]) for e in stats["log"]] == [
            (1, "429", 429),
            (2, "reset", None),
            (3, "truncate", 200),
            (4, "truncate_json", 200),
            (5, None, 200),
        ]
        assert len(server.stats()["requests"]) == 3

        proxy.set_plan([{"fault": "503", "every": 2, "offset": 0, "path_regex": r"/berry/\d+/", "times": 2}])
        statuses = [requests.get(f"{proxy.url}/api/v2/berry/{i}/", timeout=10).status_code for i in range(1, 8)]
        assert statuses == [200, 503, 200, 503, 200, 200, 200]
        assert requests.get(f"{proxy.url}/api/v2/berry/", timeout=10).status_code == 200  # not matched by the regex
        assert proxy.stats()["received"] == 8


def test_datasette_keyset_pages() -> None:
    with datasette_server(REPO / "sandbox" / "chinook" / "chinook.sqlite") as server:
        url = f"{server.url}/chinook/Invoice.json"
        page = get_json(url, params={"_size": 100})
        assert {"ok", "next", "next_url", "rows", "truncated"} <= page.keys()
        assert len(page["rows"]) == 100 and isinstance(page["rows"][0], dict) and page["next"]
        ids = [row["InvoiceId"] for row in page["rows"]]
        while page["next"]:
            page = get_json(url, params={"_size": 100, "_next": page["next"]})
            ids += [row["InvoiceId"] for row in page["rows"]]
        assert len(ids) == len(set(ids)) == 412
        since = {"InvoiceDate__gte": "2025-06-01", "_sort": "InvoiceDate", "_size": 1000}
        dates = [row["InvoiceDate"] for row in get_json(url, params=since)["rows"]]
        assert dates == sorted(dates) and dates[0] >= "2025-06-01"
        with pytest.raises(NotImplementedError):
            server.stats()
