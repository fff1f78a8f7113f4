"""Paging a REST endpoint served by a real local HTTP server whose pages go wrong: an error body sent
with status 200, cursors handed out past the last record, a page repeated for ever, ``Link`` headers
written as RFC 8288 allows."""

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import dagster as dg
import pytest

from integration_platform.sources.rest.extract import has_value
from integration_platform_tests.rest_servers import scripted_server
from sandbox.harness import failure_messages, latest_metadata, platform

#: ``(path, query) -> (status, headers, JSON body)``
Handler = Callable[[str, dict[str, str]], tuple[int, dict[str, str], Any]]
ITEMS = dg.AssetKey(["shop", "items"])
WAREHOUSE = dg.AssetKey(["warehouse", "shop.items"])


@contextmanager
def serving(handler: Handler) -> Iterator[tuple[str, list[str]]]:
    """An HTTP server on 127.0.0.1 answering GETs with ``handler``; yields its URL and the paths+queries asked."""
    asked: list[str] = []

    class Reply(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            asked.append(self.path)
            status, headers, body = handler(parts.path, {k: v[0] for k, v in parse_qs(parts.query).items()})
            data = json.dumps(body).encode()
            self.send_response(status)
            for name, value in {"Content-Type": "application/json", **headers}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Reply)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", asked
    finally:
        server.shutdown()
        server.server_close()


def _source(url: str, streams: str) -> str:
    """A REST source ``shop`` at ``url`` with ``streams`` (YAML list items, indented by four spaces)."""
    return f"""
type: integration_platform.components.RestSource
attributes:
  source: shop
  base_url: {url}
  max_retries: 0
  streams:
{streams}"""


def _yaml(url: str, paginator: str, extra: str = "") -> str:
    """The stream ``items`` at ``/items`` (records under ``data``, key ``id``) with ``paginator``, then ``extra``."""
    items = f"    - name: items\n      path: /items\n      records: data\n      paginator: {paginator}\n"
    return _source(url, items + "      primary_key: [id]\n" + extra)


def test_a_body_without_the_records_path_fails_the_run_and_keeps_the_table(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """An API answering 200 with an error object instead of its records: the run took it for a page without
    records, and the snapshot replaced the table with nothing. It now fails naming the path and the body's
    keys; a page whose records are ``[]`` is still an empty page."""
    body: dict[str, Any] = {"data": [{"id": 1}, {"id": 2}]}
    with serving(lambda path, query: (200, {}, body)) as (url, _):
        p = platform(_yaml(url, "{type: single_page}"), tmp_path, instance)
        assert p.materialize([ITEMS, WAREHOUSE]).success
        body = {"error": {"code": 503, "message": "maintenance"}}
        failed = p.materialize([ITEMS, WAREHOUSE], raise_on_error=False)
        assert not failed.success
        assert any(
            "GET http://127.0.0.1" in m
            and "the records path 'data' matches nothing in an error body (an object with keys ['error'])" in m
            for m in failure_messages(failed)
        ), failure_messages(failed)
        assert p.query("SELECT count(*) FROM shop.items") == [(2,)]
        body = {}  # protobuf-style APIs leave an empty list out: no records
        assert p.materialize([ITEMS, WAREHOUSE]).success
    assert p.query("SELECT count(*) FROM shop.items") == [(0,)]


def test_an_error_body_whose_records_path_holds_null_fails_the_run_and_keeps_the_table(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """An API answering 200 with ``{"data": null, "errors": [...]}`` (GraphQL's and many REST APIs' way):
    the path matched a null, which passed for a page without records beside the error, and the snapshot
    replaced the table with nothing. It fails as an error body without the path does; ``{"data": null}``
    beside an empty ``errors`` or a false ``error`` (an envelope's) is still an empty page."""
    body: dict[str, Any] = {"data": [{"id": 1}, {"id": 2}]}
    with serving(lambda path, query: (200, {}, body)) as (url, _):
        p = platform(_yaml(url, "{type: single_page}"), tmp_path, instance)
        assert p.materialize([ITEMS, WAREHOUSE]).success
        body = {"data": None, "errors": [{"message": "upstream timed out"}]}
        failed = p.materialize([ITEMS, WAREHOUSE], raise_on_error=False)
        assert not failed.success
        assert any(
            "the records path 'data' matches nothing in an error body (an object with keys ['data', 'errors'])" in m
            for m in failure_messages(failed)
        ), failure_messages(failed)
        assert p.query("SELECT count(*) FROM shop.items") == [(2,)]
        body = {"data": None, "errors": [], "error": False}
        assert p.materialize([ITEMS, WAREHOUSE]).success
    assert p.query("SELECT count(*) FROM shop.items") == [(0,)]


def test_a_cursor_paginator_goes_past_an_empty_page_and_stops_after_ten(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """An API filtering after it pages may answer an empty page before more records: paging goes on. One
    handing out a fresh cursor with every empty page paged for ever (to ``max_pages``): it stops after
    ten empty pages in a row."""

    def pages(path: str, query: dict[str, str]) -> tuple[int, dict[str, str], Any]:
        page = int(query.get("cursor", "0"))
        records = [{"id": page * 10 + i} for i in range(3)] if page in (0, 2) else []
        return 200, {}, {"data": records, "next": str(page + 1)}

    with serving(pages) as (url, asked):
        paginator = "{type: cursor, cursor_path: next, cursor_param: cursor, max_pages: 50}"
        p = platform(_yaml(url, paginator), tmp_path, instance)
        assert p.materialize([ITEMS, WAREHOUSE]).success
    assert len(asked) == 3 + 10, asked
    assert p.query("SELECT count(*) FROM shop.items") == [(6,)]


def test_an_empty_last_page_handing_back_its_own_cursor_ends_the_stream(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """An API whose last, empty page hands back the cursor it was asked with: paging past the empty page
    asked for it again and failed as a paginator loop; it is the end."""

    def pages(path: str, query: dict[str, str]) -> tuple[int, dict[str, str], Any]:
        page = int(query.get("cursor", "0"))
        return 200, {}, {"data": [{"id": page}] if page < 2 else [], "next": str(min(page + 1, 2))}

    with serving(pages) as (url, asked):
        paginator = "{type: cursor, cursor_path: next, cursor_param: cursor, max_pages: 50}"
        p = platform(_yaml(url, paginator), tmp_path, instance)
        assert p.materialize([ITEMS, WAREHOUSE]).success
    assert len(asked) == 3 and p.query("SELECT count(*) FROM shop.items") == [(2,)]


def test_more_pages_than_max_pages_fails_and_keeps_the_table(tmp_path: Path, instance: dg.DagsterInstance) -> None:
    """``max_pages`` stopped paging quietly: the pages read so far landed as the whole, replacing a
    snapshot's table with its first pages (and an incremental stream's mark could pass records never read).
    A page with records beyond ``max_pages`` now fails the run naming it, and nothing lands; the empty
    page that confirms the end does not count."""
    last, first_id = 2, 0

    def pages(path: str, query: dict[str, str]) -> tuple[int, dict[str, str], Any]:
        page = int(query.get("cursor", "0"))
        records = [{"id": first_id + page}] if page <= last else []
        return 200, {}, {"data": records, "next": str(page + 1) if page <= last else None}

    paginator = "{type: cursor, cursor_path: next, cursor_param: cursor, max_pages: 3}"
    with serving(pages) as (url, asked):
        p = platform(_yaml(url, paginator), tmp_path, instance)
        assert p.materialize([ITEMS, WAREHOUSE]).success  # pages 0..2 with records, then an empty one
        assert len(asked) == 4
        last, first_id = 5, 10  # six pages of other records: a partial landing would show ids 10..12
        failed = p.materialize([ITEMS, WAREHOUSE], raise_on_error=False)
    assert not failed.success and len(asked) == 4 + 4, asked
    assert any("more than max_pages (3) pages with records; nothing lands" in m for m in failure_messages(failed))
    assert p.query("SELECT list(id ORDER BY id) FROM shop.items") == [([0, 1, 2],)]


def test_a_page_repeating_the_one_before_fails_naming_the_paginator(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """An API paging with ``skip`` while the stream sends ``offset``: every page is the first, so paging went
    on for ever (to ``max_pages`` here), landing the same records again and again. The second page fails
    the run, naming the paginator, and nothing lands."""
    first = {"data": [{"id": i} for i in range(10)]}
    with serving(lambda path, query: (200, {}, first)) as (url, asked):
        p = platform(_yaml(url, "{type: offset, limit: 10, max_pages: 50}"), tmp_path, instance)
        failed = p.materialize([ITEMS], raise_on_error=False)
    assert not failed.success and len(asked) == 2, asked
    assert any(
        "offset=10" in m and "the page repeats the page before it; the API ignores the offset paginator's" in m
        for m in failure_messages(failed)
    ), failure_messages(failed)
    assert not list((tmp_path / "lake").rglob("*.parquet"))


def test_a_page_repeating_the_records_before_it_fails_though_the_body_differs(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """An API ignoring the paginator's parameter whose bodies differ in a field beside the records (a request
    id, a time stamp): the byte-for-byte check missed the repeat, and paging went on for ever (without
    ``max_pages``), here until the server gave up after 30 pages. The second page fails the run, naming the
    paginator, and nothing lands."""
    served = iter(range(1000))

    def pages(path: str, query: dict[str, str]) -> tuple[int, dict[str, str], Any]:
        request_id = next(served)
        if request_id >= 30:
            return 418, {}, {"error": "paged for ever"}
        return 200, {}, {"data": [{"id": i} for i in range(10)], "request_id": request_id}

    with serving(pages) as (url, asked):
        p = platform(_yaml(url, "{type: offset, limit: 10}"), tmp_path, instance)
        failed = p.materialize([ITEMS], raise_on_error=False)
    assert not failed.success
    assert any(
        "offset=10" in m and "the page repeats the page before it; the API ignores the offset paginator's" in m
        for m in failure_messages(failed)
    ), failure_messages(failed)
    assert len(asked) == 2, asked
    assert not list((tmp_path / "lake").rglob("*.parquet"))


def test_a_cursor_paginator_lands_pages_whose_records_are_alike(tmp_path: Path, instance: dg.DagsterInstance) -> None:
    """A cursor paginator's pages may hold the same records (a series of equal readings): its requests differ,
    and an API ignoring its cursor repeats a request, which fails on its own. Alike records on pages that are
    counted (offset, page number) fail; here they land (each key once: the stream's primary key is ``id``)."""

    def pages(path: str, query: dict[str, str]) -> tuple[int, dict[str, str], Any]:
        page = int(query.get("cursor", "0"))
        records = [{"id": i, "value": 0} for i in range(3)]
        return 200, {}, {"data": records, **({"next": str(page + 1)} if page < 2 else {})}

    with serving(pages) as (url, asked):
        p = platform(_yaml(url, "{type: cursor, cursor_path: next, cursor_param: cursor}"), tmp_path, instance)
        assert p.materialize([ITEMS, WAREHOUSE]).success
    assert len(asked) == 3, asked
    assert p.query("SELECT count(*) FROM shop.items") == [(3,)]


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("text/plain", '{"data": [{"id": 1, "name": "caf\u00e9 \u2615"}]}'),
        ("application/json; charset=iso-8859-1", '{"data": [{"id": 1, "name": "caf\u00e9 \u2615"}]}'),
        ("application/json", '{"data": [{"id": 1, "name": "caf\u00e9 \u2615", "score": NaN, "top": Infinity}]}'),
    ],
    ids=["text-plain", "labelled-latin-1", "nan-and-infinity"],
)
def test_a_json_body_is_read_as_utf_8_whatever_its_content_type_says(
    tmp_path: Path, instance: dg.DagsterInstance, content_type: str, body: str
) -> None:
    """JSON exchanged between systems is UTF-8 and a ``charset`` means nothing to it (RFC 8259, 8.1 and 11):
    a body served as ``text/plain``, or labelled ISO-8859-1, was decoded as Latin-1 by requests and landed
    ``cafÃ© â\x98\x95`` in silence. ``NaN`` and ``Infinity``, which the README says land (as nulls in JSON
    text), failed the run with a bare "JSONDecodeError" after every retry: requests parsed with simplejson
    (installed with dlt), which refuses them."""
    data = body.encode()
    with scripted_server(lambda request: (200, {"Content-Type": content_type}, data)) as server:
        p = platform(_yaml(server.url, "{type: single_page}"), tmp_path, instance)
        result = p.materialize([ITEMS, WAREHOUSE], raise_on_error=False)
    assert result.success, failure_messages(result)
    assert p.query("SELECT name FROM shop.items") == [("caf\u00e9 \u2615",)]


@pytest.mark.parametrize("rel", ['rel="Next"', 'REL="next"', 'rel="next last"', 'rel="prev next"', "rel=next"])
def test_a_link_header_next_is_found_however_rfc_8288_lets_it_be_written(
    tmp_path: Path, instance: dg.DagsterInstance, rel: str
) -> None:
    """Relation types compare case-insensitively and ``rel`` may list several (RFC 8288, 3.3): each of these
    read one page of three, silently (requests' ``Response.links`` keys a link by its whole ``rel``)."""

    def pages(path: str, query: dict[str, str]) -> tuple[int, dict[str, str], Any]:
        page = int(query.get("page", "1"))
        link = {"Link": f"<{path}?page={page + 1}>; {rel}"} if page < 3 else {}
        return 200, link, {"data": [{"id": page}]}

    with serving(pages) as (url, _):
        p = platform(_yaml(url, "{type: link_header, max_pages: 50}"), tmp_path, instance)
        assert p.materialize([ITEMS, WAREHOUSE]).success
    assert p.query("SELECT count(*) FROM shop.items") == [(3,)]


def test_a_row_updated_while_a_run_pages_lands_its_new_version(tmp_path: Path, instance: dg.DagsterInstance) -> None:
    """Keyset paging by ``updated_at``: a row updated while the run pages comes twice, its old version on
    the first page and its new one later. Keeping the first of each key lost the update for good, as the
    mark moved past it. Both land; the warehouse keeps the latest, and equals the source."""
    source = {1: 1, 2: 2, 3: 3, 4: 4}  # id -> updated_at

    def pages(path: str, query: dict[str, str]) -> tuple[int, dict[str, str], Any]:
        after, since = query.get("after"), query.get("since")
        rows = sorted((t, i) for i, t in source.items() if (t > int(after) if after else t >= int(since or 0)))[:2]
        body: dict[str, Any] = {"data": [{"id": i, "updated_at": t} for t, i in rows]}
        if len(rows) == 2:
            body["next"] = str(rows[-1][0])
        if after is None and since is None:  # the first page of the first run: a writer updates row 1
            source.update({1: 5, 5: 6})
        return 200, {}, body

    paginator, incremental = (
        "{type: cursor, cursor_path: next, cursor_param: after}",
        "{cursor: updated_at, param: since}",
    )
    with serving(pages) as (url, _):
        p = platform(_yaml(url, paginator, f"      incremental: {incremental}\n"), tmp_path, instance)
        assert p.materialize([ITEMS, WAREHOUSE]).success
        assert p.materialize([ITEMS, WAREHOUSE]).success
    assert dict(p.query("SELECT id, updated_at FROM shop.items")) == source


def test_a_child_of_an_incremental_parent_is_fetched_once_per_parent_row(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """An order updated at the source has two versions in its stream's lake: its lines were fetched once
    per version and landed twice, half of them with the old status. Only the parent's rows as its table
    holds them (each key's latest version) are parents."""
    orders: dict[int, dict[str, Any]] = {
        1: {"id": 1, "status": "open", "updated_at": 1},
        2: {"id": 2, "status": "open", "updated_at": 1},
    }

    def pages(path: str, query: dict[str, str]) -> tuple[int, dict[str, str], Any]:
        if path == "/orders":
            return 200, {}, {"data": [o for o in orders.values() if o["updated_at"] >= int(query.get("since", 0))]}
        return 200, {}, {"data": [{"sku": "X", "qty": 2}, {"sku": "Y", "qty": 1}]}

    streams = """\
    - name: orders
      path: /orders
      records: data
      primary_key: [id]
      incremental: {cursor: updated_at, param: since}
    - name: lines
      path: /orders/{id}/lines
      records: data
      parent: {stream: orders, include: [id, status]}
"""
    with serving(pages) as (url, asked):
        p = platform(_source(url, streams), tmp_path, instance)
        assert p.materialize().success
        orders[1] = {"id": 1, "status": "shipped", "updated_at": 2}
        del asked[:]
        assert p.materialize().success
    assert sorted(a for a in asked if "lines" in a) == ["/orders/1/lines", "/orders/2/lines"]
    assert p.query("SELECT _orders_id, _orders_status, count(*) FROM shop.lines GROUP BY ALL ORDER BY 1") == [
        (1, "shipped", 2),
        (2, "open", 2),
    ]


def test_a_parent_whose_placeholder_field_is_null_is_skipped_not_fetched_as_none(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """A guest order has no customer: its null ``customer_id`` was rendered as Python's ``None`` and
    ``/customers/None`` fetched (an API answering it, its answer landed as that order's customer; one
    answering 404 failed the run). A parent without a value for the path has nothing to fetch: it is
    skipped and counted in ``parents_without_value``. One float among the ids widened the column to double,
    and every parent was fetched as ``/customers/7.0``: a whole number is written as one."""

    def pages(path: str, query: dict[str, str]) -> tuple[int, dict[str, str], Any]:
        if path == "/orders":
            orders = [{"id": 1, "customer_id": 7}, {"id": 2, "customer_id": None}, {"id": 3, "customer_id": 8.0}]
            return 200, {}, {"data": orders}
        return 200, {}, {"data": [{"name": path.rpartition("/")[2]}]}

    streams = """\
    - name: orders
      path: /orders
      records: data
      primary_key: [id]
    - name: customers
      path: /customers/{customer_id}
      records: data
      parent: {stream: orders, include: [id]}
"""
    with serving(pages) as (url, asked):
        p = platform(_source(url, streams), tmp_path, instance)
        assert p.materialize().success
    assert sorted(asked) == ["/customers/7", "/customers/8", "/orders"], asked
    assert p.query("SELECT name, _orders_id FROM shop.customers ORDER BY 2") == [("7", 1), ("8", 3)]
    shown = latest_metadata(instance, dg.AssetKey(["shop", "customers"]))
    assert (shown["parents_without_value"], shown["requests_skipped"], shown["parent_records"]) == (1, 0, 3)


@pytest.mark.parametrize(("value", "fetched"), [("", False), (float("nan"), False), (float("inf"), False), (0, True)])
def test_an_empty_or_non_finite_placeholder_value_has_nothing_to_fetch(value: Any, fetched: bool) -> None:
    """``""`` rendered ``/customers/``, the collection, which landed as one customer; NaN ``/customers/nan``."""
    assert has_value(value) is fetched


def test_a_keyless_row_differing_only_in_a_nested_field_is_not_already_landed(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """Without a primary key a row is told apart by all its columns, but nested ones were left out: a new
    event at a landed event's time, differing in ``data.button`` only, was dropped as already landed. It
    lands; the event read again at the mark (same nested values, lists included) is dropped."""
    events: list[dict[str, Any]] = [{"at": 100, "type": "click", "data": {"button": "buy"}, "tags": ["a", "b"]}]

    def pages(path: str, query: dict[str, str]) -> tuple[int, dict[str, str], Any]:
        return 200, {}, {"data": [e for e in events if e["at"] >= int(query.get("since", 0))]}

    streams = """\
    - name: events
      path: /events
      records: data
      incremental: {cursor: at, param: since}
"""
    events_key = dg.AssetKey(["shop", "events"])
    with serving(pages) as (url, _):
        p = platform(_source(url, streams), tmp_path, instance)
        assert p.materialize().success
        events.append({"at": 100, "type": "click", "data": {"button": "cancel"}, "tags": ["a", "b"]})
        events.append({"at": 100, "type": "click", "data": {"button": "buy"}, "tags": ["b"]})
        events.append({"at": 101, "type": "view", "data": None, "tags": None})
        assert p.materialize().success
    assert latest_metadata(instance, events_key)["duplicates_dropped"] == 1
    landed = p.query('SELECT "at", "data".button, tags FROM shop.events ORDER BY 1, 2, 3')
    assert landed == [(100, "buy", ["a", "b"]), (100, "buy", ["b"]), (100, "cancel", ["a", "b"]), (101, None, None)]


def test_rows_an_api_returns_below_the_bound_are_not_landed_again(tmp_path: Path, instance: dg.DagsterInstance) -> None:
    """An API filtering by day, sent the bound as a date (``format: "%Y-%m-%d"``), returns the whole day:
    the rows below the bound were compared with nothing and landed again by every run. Now only the new
    row lands."""
    rows = [{"event": "a", "at": "2024-01-05T08:00:00Z"}, {"event": "b", "at": "2024-01-05T12:00:00Z"}]

    def pages(path: str, query: dict[str, str]) -> tuple[int, dict[str, str], Any]:
        since = query.get("since")
        return 200, {}, {"data": [r for r in rows if since is None or r["at"][:10] >= since]}

    streams = """\
    - name: events
      path: /events
      records: data
      columns: {at: timestamptz}
      incremental: {cursor: at, param: since, format: "%Y-%m-%d"}
"""
    with serving(pages) as (url, _):
        p = platform(_source(url, streams), tmp_path, instance)
        assert p.materialize().success
        rows.append({"event": "c", "at": "2024-01-05T15:00:00Z"})
        assert p.materialize().success
        assert p.materialize().success
    assert p.query("SELECT event, count(*) FROM shop.events GROUP BY ALL ORDER BY 1") == [("a", 1), ("b", 1), ("c", 1)]
