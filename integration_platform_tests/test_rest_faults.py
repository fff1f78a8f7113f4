"""REST source under faults, through a real proxy in front of the real PokeAPI server.

429 with Retry-After, bursts of 500/503, connection resets, slow responses, bodies cut
short and truncated JSON: retries recover with exact totals and no duplicates; an error past
the retry budget fails the run with a clear message and lands nothing; the rate limit holds
as counted by the server, also across processes sharing a run.
"""

import contextlib
import gzip
import json
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from integration_platform.resources.http_api import HttpSourceError, RestApiResource
from integration_platform.sources.rest import extract
from integration_platform.sources.rest.extract import REORDER_RESULTS_PER_WORKER
from integration_platform_tests.rest_servers import (
    dripping_server,
    failures_within,
    fault_proxy,
    pokeapi_server,
    scripted_server,
)
from integration_platform_tests.services import shared_file
from sandbox.harness import failure_messages, latest_metadata, platform


def _berry_ids() -> set[int]:
    """The berry ids of the shared PokeAPI mirror (missing data: skipped, or failed in CI)."""
    berries = shared_file("pokeapi-subset", "data", "api", "v2", "berry")
    return {int(p.name) for p in berries.iterdir() if p.is_dir()}


DETAILS = dg.AssetKey(["berry", "details"])


def _yaml(url: str, *, retries: int = 6, rate_limit: float | None = None, concurrency: int = 4) -> str:
    limit = f"rate_limit: {rate_limit}" if rate_limit else ""
    return f"""
type: integration_platform.components.RestSource
attributes:
  source: berry
  base_url: {url}
  max_retries: {retries}
  backoff_factor: 0.05
  read_timeout: 1
  concurrency: {concurrency}
  {limit}
  streams:
    - name: list
      path: /api/v2/berry/
      records: results
      paginator: {{type: offset, limit: 10, total_path: count}}
      primary_key: [name]
    - name: details
      path: "{{url}}"
      parent: {{stream: list}}
      records: $
      primary_key: [id]
"""


def _max_in_window(times: list[float], seconds: float = 1.0) -> int:
    times = sorted(times)
    return max(sum(1 for u in times[i:] if u < t + seconds) for i, t in enumerate(times))


def test_retries_recover_from_every_fault_with_exact_totals(tmp_path: Path, instance: dg.DagsterInstance) -> None:
    berry_ids = _berry_ids()
    plan: list[dict[str, Any]] = [
        {"fault": "429", "at": [2], "retry_after": 1},
        {"fault": "503", "at": [5, 6, 7]},
        {"fault": "500", "every": 13},
        {"fault": "502", "at": [40]},
        {"fault": "reset", "at": [15, 30]},
        {"fault": "slow", "at": [20], "seconds": 2.5},
        {"fault": "truncate", "at": [25]},
        {"fault": "truncate_json", "at": [35]},
    ]
    with pokeapi_server() as server, fault_proxy(server.url, plan) as proxy:
        p = platform(_yaml(proxy.url), tmp_path, instance)
        result = p.materialize()
        stats = proxy.stats()
    assert result.success
    assert {kind for kind, count in stats["faults"].items() if count} == {
        "429",
        "503",
        "500",
        "502",
        "reset",
        "slow",
        "truncate",
        "truncate_json",
    }
    assert sum(stats["faults"].values()) >= 12
    ids = [row[0] for row in p.query("SELECT id FROM berry.details")]
    assert sorted(ids) == sorted(berry_ids)  # every record once: none lost, none twice
    assert p.query("SELECT count(*) FROM berry.list")[0][0] == len(berry_ids)
    sent = sum(latest_metadata(instance, dg.AssetKey(["berry", name]))["requests"] for name in ("list", "details"))
    assert sent == stats["received"]  # every attempt the client made reached the server
    assert stats["received"] > len(berry_ids) + 7  # 7 list pages + 68 details, plus the retries
    assert all(c.passed for c in result.get_asset_check_evaluations())


def _while_one_waits(tmp_path: Path, instance: dg.DagsterInstance) -> tuple[Any, dict[str, Any], list[dict[str, Any]]]:
    """A fan-out at concurrency 4 whose first detail in parent order is answered 429 with Retry-After 2 s:
    the platform, the refused request and the other detail requests the proxy saw before the retry.

    The refusal goes by path, not by arrival: the first detail request to arrive may be the second,
    third or fourth parent (four workers race), and each parent ahead of the refused one that is
    yielded frees a slot, so the count seen during the wait would depend on thread timing."""
    detail = r"/berry/[0-9]+/"
    first = min(_berry_ids())  # the list endpoint returns the berries by id
    plan = [{"fault": "429", "path_regex": rf"/berry/{first}/$", "at": [1], "retry_after": 2}]
    with pokeapi_server(latency_ms=20) as server, fault_proxy(server.url, plan) as proxy:
        p = platform(_yaml(proxy.url, concurrency=4), tmp_path, instance)
        assert p.materialize().success
        log = proxy.stats()["log"]
    details = [e for e in log if re.search(detail, e["path"])]
    refused = next(e for e in details if e["fault"] == "429")
    retry = next(e for e in details if e["path"] == refused["path"] and e["n"] > refused["n"])
    assert retry["t"] - refused["t"] >= 1.9, "the Retry-After was honoured"
    # the other details sent before the retry (four workers race, so some may reach the proxy just before the
    # refused request: they are counted too, as they were in flight while it was refused and waited)
    return p, refused, [e for e in details if e["path"] != refused["path"] and e["t"] < retry["t"]]


def test_a_worker_waiting_out_retry_after_does_not_stop_the_others(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """No head-of-line blocking: while the worker of a refused request waits, the other workers fetch
    the other details, up to the memory bound (results are taken in parent order; before, at most twice
    the concurrency were queued behind it and then every worker idled)."""
    berry_ids = _berry_ids()
    p, _, during = _while_one_waits(tmp_path, instance)
    # Concurrency 4: up to 512 requests wait in parent order (the count bound; more than the 68 details),
    # all behind the refused head.
    bound = REORDER_RESULTS_PER_WORKER * 4 - 1
    assert len(during) >= min(len(berry_ids) - 1, bound), "the other workers went on while one waited"
    assert sorted(row[0] for row in p.query("SELECT id FROM berry.details")) == sorted(berry_ids)


def test_the_reorder_window_is_bounded_by_the_bytes_of_the_bodies_waiting(
    tmp_path: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The memory bound: with a byte budget smaller than one body, the first body that finishes behind
    the refused head stops new requests; only those already queued with it (twice the concurrency, less
    the head) go on, and every detail still lands once after the Retry-After."""
    monkeypatch.setattr(extract, "REORDER_BODY_BYTES", 1)
    berry_ids = _berry_ids()
    p, _, during = _while_one_waits(tmp_path, instance)
    assert 1 <= len(during) <= 2 * 4 - 1, len(during)
    assert sorted(row[0] for row in p.query("SELECT id FROM berry.details")) == sorted(berry_ids)


def test_an_error_past_the_retry_budget_fails_clearly_and_lands_nothing(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    berry_ids = _berry_ids()
    with pokeapi_server() as server, fault_proxy(server.url, []) as proxy:
        p = platform(_yaml(proxy.url, retries=2), tmp_path, instance)
        assert p.materialize().success
        before = latest_metadata(instance, DETAILS)["landing_id"]
        proxy.set_plan([{"fault": "503", "path_regex": r"^/api/v2/berry/6\d/$"}])
        failed = p.materialize([DETAILS, dg.AssetKey(["warehouse", "berry.details"])], raise_on_error=False)
    assert not failed.success
    causes = failure_messages(failed)
    assert any("HTTP 503 Service Unavailable" in c and "(after 3 attempt(s))" in c for c in causes), causes
    assert any("/api/v2/berry/6" in c for c in causes)
    # the previous landing is still the stream's landing; the warehouse still holds it whole
    manifest = json.loads((tmp_path / "lake" / "berry" / "details" / "_manifests" / "snapshot.json").read_text())
    assert manifest["landing_id"] == before
    assert not list((tmp_path / "lake" / "berry" / "details").rglob("*.tmp-*"))
    assert p.query("SELECT count(*) FROM berry.details")[0][0] == len(berry_ids)


def test_the_rate_limit_is_never_exceeded_counted_at_the_server(tmp_path: Path, instance: dg.DagsterInstance) -> None:
    berry_ids = _berry_ids()
    limit = 15.0
    with pokeapi_server() as server:
        p = platform(_yaml(server.url, rate_limit=limit, concurrency=8), tmp_path, instance)
        assert p.materialize().success
        requests = [r for r in server.stats()["requests"] if r["path"].startswith("/api/v2/")]
    times = [r["t"] for r in requests]
    assert len(times) == len(berry_ids) + 7
    assert _max_in_window(times) <= limit  # the whole run, list pages included
    # the achieved rate of the fan-out (the list pages come in an earlier step)
    details = [r["t"] for r in requests if r["path"].rstrip("/").split("/")[-1].isdigit()]
    achieved = (len(details) - 1) / (max(details) - min(details))
    assert 0.95 * limit <= achieved <= limit


CLIENT = """
import sys
from integration_platform.resources.http_api import RestApiResource
client = RestApiResource(base_url=sys.argv[1], rate_limit=float(sys.argv[2])).client(sys.argv[3])
for i in range(1, 31):
    client.get_json(f"{sys.argv[1]}/api/v2/berry/{i}/")
"""


def test_processes_of_one_run_share_the_rate_limit(tmp_path: Path) -> None:
    """Two processes (as Dagster's multiprocess executor starts per step) with the same run id."""
    limit = 10.0
    with pokeapi_server() as server:
        args = [sys.executable, "-c", CLIENT, server.url, str(limit), f"run-{tmp_path.name}"]
        workers = [subprocess.Popen(args) for _ in range(2)]
        assert [w.wait(timeout=60) for w in workers] == [0, 0]
        times = [r["t"] for r in server.stats()["requests"] if r["path"].startswith("/api/v2/")]
    assert len(times) == 60
    assert _max_in_window(times) <= limit
    assert (max(times) - min(times)) >= 59 / limit * 0.99


@pytest.mark.parametrize("retry_after", ["1.5", "-1", "soon"])
def test_an_invalid_retry_after_counts_as_absent(retry_after: str) -> None:
    """A 429 whose Retry-After is neither whole seconds nor an HTTP date (RFC 9110 section 10.2.3) is retried
    after the backoff, as without one; urllib3 raised a bare InvalidHeader naming no request. Past the retry
    budget the error names the request and the status."""
    answers = iter([(429, {"Retry-After": retry_after}, {"error": "slow down"})] * 2)
    with scripted_server(lambda request: next(answers, (200, {}, {"data": [1]}))) as api:
        resource = RestApiResource(base_url=api.url, max_retries=2, backoff_factor=0.01, backoff_jitter=0)
        body, _ = resource.client("test").get_json(f"{api.url}/orders")
        assert body == {"data": [1]} and len(api.requests) == 3
        answers = iter([(429, {"Retry-After": retry_after}, {"error": "slow down"})] * 2)
        with pytest.raises(HttpSourceError) as failed:
            resource.model_copy(update={"max_retries": 1}).client("test").get_json(f"{api.url}/orders")
    assert str(failed.value) == f"GET {api.url}/orders: HTTP 429 Too Many Requests (after 2 attempt(s))"


def test_a_retry_after_past_a_max_retry_after_over_six_hours_fails_at_once() -> None:
    """urllib3 caps a Retry-After at 6 hours: with ``max_retry_after`` of a day, an API asking for two days
    was waited 6 hours, again on each retry, instead of failing at once (as HTTP push does)."""
    with scripted_server(lambda request: (429, {"Retry-After": str(2 * 86400)}, {"error": "later"})) as api:
        resource = RestApiResource(base_url=api.url, max_retries=3, max_retry_after=86400)
        result: list[BaseException] = []

        def get() -> None:
            try:
                resource.client("test").get_json(f"{api.url}/orders")
            except BaseException as exc:
                result.append(exc)

        worker = threading.Thread(target=get, daemon=True)
        worker.start()
        worker.join(30)
        assert not worker.is_alive(), "still waiting out the Retry-After"
    assert len(api.requests) == 1 and isinstance(result[0], HttpSourceError)
    assert str(result[0]) == (
        f"GET {api.url}/orders: Retry-After '172800' exceeds max_retry_after (86400s) (after 1 attempt(s))"
    )


def test_a_redirect_loop_fails_naming_the_request() -> None:
    """/orders -> /a -> /b -> /a ...: requests gave up with a bare TooManyRedirects naming no request."""
    loop = {"/orders": "/a", "/a": "/b", "/b": "/a"}
    with scripted_server(lambda request: (302, {"Location": loop[request["path"]]}, b"")) as api:
        with pytest.raises(HttpSourceError) as failed:
            RestApiResource(base_url=api.url, max_retries=3).client("test").get_json(f"{api.url}/orders")
    assert len(api.requests) == 31  # one attempt: a loop does not heal
    assert str(failed.value) == (
        f"GET {api.url}/orders: more than 30 redirects, the last to {api.url}/b (after 1 attempt(s))"
    )


def test_a_url_of_another_scheme_fails_naming_it() -> None:
    """A next link or configured URL of another scheme: requests' bare InvalidSchema named no request."""
    client = RestApiResource(base_url="http://127.0.0.1:9", max_retries=3).client("test")
    with pytest.raises(HttpSourceError) as failed:
        client.get_json("ftp://127.0.0.1/x?api_key=abc")
    assert str(failed.value) == (
        "GET ftp://127.0.0.1/x?api_key=%2A%2A%2A: not a valid http(s) URL; only http and https URLs are fetched "
        "(after 1 attempt(s))"
    )


def test_a_body_inflating_past_max_body_bytes_fails_without_holding_it() -> None:
    """A 10 KB gzip body inflating to 10 MB (a gzip bomb: 0.3 MB became 300 MB in memory): reading stops
    past ``max_body_bytes`` of decoded bytes, the request fails naming it, and it is not retried."""
    bomb = gzip.compress(b"[" + b"0," * (5 << 20) + b"0]")
    with scripted_server(lambda request: (200, {"Content-Encoding": "gzip"}, bomb)) as api:
        client = RestApiResource(base_url=api.url, max_retries=3, max_body_bytes=1 << 20).client("test")
        with pytest.raises(HttpSourceError) as failed:
            client.get_json(f"{api.url}/items")
    assert len(bomb) < 64 << 10 and len(api.requests) == 1
    assert str(failed.value) == (
        f"GET {api.url}/items: the response body passed max_body_bytes (1,048,576 bytes, decoded) (after 1 attempt(s))"
    )


@pytest.mark.parametrize("every", [0, 0.2])
def test_a_redirect_whose_body_never_ends_fails_within_its_bounds(every: float) -> None:
    """requests reads a redirect's body itself, to its end, before following it: a 302 with an endless body
    filled memory (3.9 GB in 8 s) or held the run, whatever bounded the final answer. It is read within
    ``max_body_bytes`` (not retried) and ``request_timeout`` (retried, then given up)."""
    with dripping_server({}, every, status=302) as api:
        client = RestApiResource(
            base_url=api.url, max_retries=1, backoff_factor=0, max_body_bytes=1 << 20, request_timeout=1
        ).client("test")
        failed = failures_within(lambda: client.get_json(f"{api.url}/items"), HttpSourceError, doing="reading")
    assert len(failed) == 1 and {r["path"] for r in api.requests} == {"/items"}
    if every == 0:
        assert str(failed[0]).endswith(
            "the response body passed max_body_bytes (1,048,576 bytes, decoded) (after 1 attempt(s))"
        )
    else:
        assert str(failed[0]).endswith("/items: AttemptTooLong (after 2 attempt(s))") and len(api.requests) == 2


def test_a_body_dripping_past_request_timeout_is_cut_and_retried() -> None:
    """A server sending its body a byte every 0.2 s: ``read_timeout`` (the gap between two reads) never
    fires, so a request was held for as long as the server liked. Each attempt ends at ``request_timeout``."""
    server = socket.create_server(("127.0.0.1", 0))
    port, attempts = server.getsockname()[1], []

    def drip() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            attempts.append(time.monotonic())
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n")
                with contextlib.suppress(OSError):
                    for _ in range(100):
                        conn.sendall(b" ")
                        time.sleep(0.2)

    threading.Thread(target=drip, daemon=True).start()
    url = f"http://127.0.0.1:{port}"
    client = RestApiResource(base_url=url, max_retries=1, backoff_factor=0, request_timeout=1, read_timeout=5)
    started = time.monotonic()
    try:
        with pytest.raises(HttpSourceError, match=rf"GET {url}/items: AttemptTooLong \(after 2 attempt\(s\)\)"):
            client.client("test").get_json(f"{url}/items")
    finally:
        server.close()
    assert len(attempts) == 2 and time.monotonic() - started < 4


def test_a_body_nested_too_deeply_fails_naming_the_request() -> None:
    """400 KB of ``[[[...]]]``: the JSON decoder's ``RecursionError`` escaped the client, failing the run
    without naming the request (and not as the ``HttpSourceError`` a stream's ``skip_statuses`` looks at).
    It is not retried: the same body comes again."""
    with scripted_server(lambda request: (200, {}, "[" * 200_000 + "]" * 200_000)) as api:
        client = RestApiResource(base_url=api.url, max_retries=3).client("test")
        with pytest.raises(HttpSourceError) as failed:
            client.get_json(f"{api.url}/items")
    reason = "the JSON body is nested too deeply to decode"
    assert str(failed.value) == f"GET {api.url}/items: {reason} (after 1 attempt(s))"
    assert len(api.requests) == 1
