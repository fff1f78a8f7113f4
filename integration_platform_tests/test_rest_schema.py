"""JSON -> Arrow with a stable schema, against a real server whose records drift: a field that
appears later becomes a nullable column (recorded), a type conflict fails the run naming the
field and the URL, or, when the stream asks for it, sends the record to quarantine."""

import json
import shutil
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow.parquet as pq
import pytest

from integration_platform_tests.rest_servers import pokeapi_server, scripted_server
from integration_platform_tests.services import shared_file
from sandbox.harness import failure_messages, landed_rows, latest_metadata, platform

DETAILS = dg.AssetKey(["drift", "details"])


@pytest.fixture
def drifting_berries(tmp_path: Path) -> Path:
    """The mirror's berries; from id 40 on they carry a new field, and berry 50's growth_time is text."""
    source = shared_file("pokeapi-subset", "data", "api", "v2")
    target = tmp_path / "mirror" / "api" / "v2"
    shutil.copytree(source / "berry", target / "berry")
    shutil.copy(source / "index.json", target / "index.json")
    for detail in (target / "berry").glob("*/index.json"):
        record = json.loads(detail.read_text())
        if record["id"] >= 40:
            record["season"] = "summer" if record["id"] % 2 else "winter"
        if record["id"] == 50:
            record["growth_time"] = "slow"
        detail.write_text(json.dumps(record))
    return tmp_path / "mirror"


def _yaml(url: str, on_conflict: str) -> str:
    return f"""
type: integration_platform.components.RestSource
attributes:
  source: drift
  base_url: {url}
  concurrency: 8
  streams:
    - name: list
      path: /api/v2/berry/
      records: results
      paginator: {{type: offset, limit: 100, total_path: count}}
    - name: details
      path: "{{url}}"
      parent: {{stream: list}}
      records: $
      primary_key: [id]
      on_schema_conflict: {on_conflict}
"""


def _hostile_strings(mirror: Path) -> None:
    """Lone surrogates, as a hostile API may send them (``"\\ud800"``, which Python's JSON parsers
    read as a lone surrogate that UTF-8 cannot hold): in berry 45's name, in berry 46's nested
    ``firmness.name``, in the name of a field of berry 47."""
    for berry, change in ((45, ("name", "\ud800")), (46, ("firmness", {"name": "\udc00"})), (47, ("\udfffk", 1))):
        detail = mirror / "api" / "v2" / "berry" / str(berry) / "index.json"
        record = json.loads(detail.read_text())
        record[change[0]] = change[1]
        detail.write_text(json.dumps(record))  # ensure_ascii: the surrogates as JSON escapes


def test_new_fields_become_columns_and_conflicts_go_to_quarantine(
    drifting_berries: Path, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    _hostile_strings(drifting_berries)
    with pokeapi_server(drifting_berries) as server:
        p = platform(_yaml(server.url, "quarantine"), tmp_path, instance)
        result = p.materialize()
    assert result.success
    quarantine = pq.read_table(tmp_path / "lake" / "drift" / "details" / "_quarantine" / "snapshot.parquet")
    rows = {json.loads(row["record"])["id"]: row for row in quarantine.to_pylist()}
    assert sorted(rows) == [45, 46, 47, 50], {k: v["reason"] for k, v in rows.items()}
    assert p.query("SELECT count(*) FROM drift.details")[0][0] == 64
    seasons = dict(p.query("SELECT season IS NULL, count(*) FROM drift.details GROUP BY ALL"))
    assert seasons == {True: 39, False: 25}
    assert p.query("SELECT typeof(growth_time) FROM drift.details LIMIT 1")[0][0] == "BIGINT"
    metadata = latest_metadata(instance, DETAILS)
    assert "new column season (string)" in metadata["schema_changes"]
    assert metadata["quarantined"] == 4 and metadata["quarantine_rows_total"] == 4
    assert rows[50]["origin"].endswith("/api/v2/berry/50/ record 0")
    assert "field 'growth_time': expected int64" in rows[50]["reason"]
    assert rows[50]["run_id"] == result.run_id
    assert "field 'name': \"\\ud800\" does not convert" in rows[45]["reason"]
    assert json.loads(rows[45]["record"])["name"] == "\ud800"  # the record as the API sent it
    assert "field 'firmness'" in rows[46]["reason"]
    assert "field name '\\udfffk' is not valid Unicode" in rows[47]["reason"]
    check = next(c for c in result.get_asset_check_evaluations() if c.check_name == "quarantine_empty")
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN


def test_a_type_conflict_fails_the_run_naming_field_and_url(
    drifting_berries: Path, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    with pokeapi_server(drifting_berries) as server:
        p = platform(_yaml(server.url, "fail"), tmp_path, instance)
        result = p.materialize(raise_on_error=False)
    assert not result.success
    causes = failure_messages(result)
    assert any(
        "stream drift/details: field 'growth_time': expected int64, got \"slow\"" in c and "/api/v2/berry/50/" in c
        for c in causes
    ), causes
    assert not (tmp_path / "lake" / "drift" / "details" / "_manifests").exists()


def test_a_cursor_or_next_url_with_a_lone_surrogate_fails_naming_the_page(
    drifting_berries: Path, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    berries = drifting_berries / "api" / "v2" / "berry"
    for berry, field, value in ((1, "token", "\ud800"), (2, "next", "/api/v2/berry/?c=\udc00")):
        detail = berries / str(berry) / "index.json"
        detail.write_text(json.dumps({**json.loads(detail.read_text()), field: value}))  # as JSON escapes
    with pokeapi_server(drifting_berries) as server:
        yaml = f"""
type: integration_platform.components.RestSource
attributes:
  source: hostile
  base_url: {server.url}
  streams:
    - name: by_cursor
      path: /api/v2/berry/1/
      records: flavors
      paginator: {{type: cursor, cursor_path: token, cursor_param: c}}
    - name: by_next_url
      path: /api/v2/berry/2/
      records: flavors
      paginator: {{type: next_url, next_url_path: next}}
"""
        p = platform(yaml, tmp_path, instance)
        result = p.materialize(raise_on_error=False)
    assert not result.success
    causes = failure_messages(result)
    for path, what in (("/api/v2/berry/1/", "cursor"), ("/api/v2/berry/2/", "next URL")):
        assert any(f"{path}: the {what} in the body holds a lone surrogate" in c for c in causes), causes
    assert not (tmp_path / "lake" / "hostile").exists()


def test_timestamps_finer_than_microseconds_land_in_a_declared_column(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """.NET writes seven digits of a second (``.1234567Z``), Go up to nine: Arrow's cast refused each such
    value, so every record of those APIs was a type conflict for a declared ``timestamptz`` cursor and the
    run failed. They land cut to microseconds, and the mark is the cut value."""
    records = [
        {"id": 1, "at": "2024-03-01T10:00:00.1234567Z"},
        {"id": 2, "at": "2024-03-01T12:00:00.987654321+02:00"},
    ]
    with scripted_server(lambda request: (200, {}, records)) as api:
        yaml = f"""
type: integration_platform.components.RestSource
attributes:
  source: clock
  base_url: {api.url}
  max_retries: 0
  streams:
    - name: events
      path: /events
      primary_key: [id]
      columns: {{at: timestamptz}}
      incremental: {{cursor: at, param: since}}
"""
        p = platform(yaml, tmp_path, instance)
        events = dg.AssetKey(["clock", "events"])
        result = p.materialize([events, dg.AssetKey(["warehouse", "clock.events"])], raise_on_error=False)
        assert result.success, failure_messages(result)
        assert latest_metadata(instance, events)["cursor_after"] == {
            "kind": "timestamp",
            "text": "2024-03-01T10:00:00.987654+00:00",
        }
        assert p.query('SELECT id, epoch_us("at") FROM clock.events ORDER BY id') == [
            (1, 1709287200_123456),  # 2024-03-01T10:00:00Z
            (2, 1709287200_987654),
        ]
        again = p.materialize([events])  # re-read at the mark: nothing lands twice
        assert api.requests[-1]["path"] == "/events?since=2024-03-01T10%3A00%3A00.987654%2B00%3A00"
        assert landed_rows(again)["clock/events"] == 0


def test_a_declared_column_takes_a_page_mixing_numbers_and_text(tmp_path: Path, instance: dg.DagsterInstance) -> None:
    """A page whose zip codes come as ``12345`` and ``"01234"`` and prices as ``3`` and ``"12.50"``, the very
    case a declared type is for: each value converts, yet the page as a whole did not, so the run failed
    naming no page, with ``on_schema_conflict: quarantine`` too. It lands; a value that does not convert
    still goes to the quarantine alone."""
    records = [
        {"id": 1, "zip": 12345, "price": 3},
        {"id": 2, "zip": "01234", "price": "12.50"},
        {"id": 3, "zip": "75001", "price": "n/a"},
    ]
    with scripted_server(lambda request: (200, {}, records)) as api:
        yaml = f"""
type: integration_platform.components.RestSource
attributes:
  source: mixed
  base_url: {api.url}
  max_retries: 0
  streams:
    - name: shops
      path: /shops
      primary_key: [id]
      columns: {{zip: string, price: float64}}
      on_schema_conflict: quarantine
"""
        p = platform(yaml, tmp_path, instance)
        shops = dg.AssetKey(["mixed", "shops"])
        result = p.materialize([shops, dg.AssetKey(["warehouse", "mixed.shops"])], raise_on_error=False)
    assert result.success, failure_messages(result)
    assert p.query("SELECT id, zip, price FROM mixed.shops ORDER BY id") == [(1, "12345", 3.0), (2, "01234", 12.5)]
    assert latest_metadata(instance, shops)["quarantined"] == 1


def test_a_value_nested_deeper_than_parquet_reads_is_a_conflict(tmp_path: Path, instance: dg.DagsterInstance) -> None:
    """A record whose field nests 120 objects deep: its landing was written, but pyarrow opens no Parquet
    schema that deep, so every read of the stream's lake files failed (its child streams, the "already
    landed" comparison of an incremental run) with a bare "Parquet schema too deeply nested". The record is
    a conflict naming the field and the way out (keep it as JSON text); the others land and are read."""
    deep: Any = 1
    for _ in range(120):
        deep = {"a": deep}
    records = [{"id": 1, "name": "plain"}, {"id": 2, "name": "deep", "meta": deep}]

    def answer(request: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
        if request["path"] == "/things":
            return 200, {}, records
        return 200, {}, {"id": int(request["path"].rpartition("/")[2]), "detail": "x"}

    with scripted_server(answer) as api:
        yaml = f"""
type: integration_platform.components.RestSource
attributes:
  source: nest
  base_url: {api.url}
  max_retries: 0
  streams:
    - name: things
      path: /things
      primary_key: [id]
      on_schema_conflict: quarantine
    - name: details
      path: /things/{{id}}
      parent: {{stream: things}}
      records: $
      primary_key: [id]
"""
        p = platform(yaml, tmp_path, instance)
        result = p.materialize(raise_on_error=False)
    assert result.success, failure_messages(result)
    assert p.query("SELECT id, name FROM nest.things") == [(1, "plain")]
    assert p.query("SELECT id, detail FROM nest.details") == [(1, "x")]
    assert latest_metadata(instance, dg.AssetKey(["nest", "things"]))["quarantined"] == 1
    quarantine = pq.read_table(next((tmp_path / "lake" / "nest" / "things" / "_quarantine").rglob("*.parquet")))
    assert "field 'meta' is nested 122 Parquet levels deep" in quarantine.column("reason")[0].as_py()


def test_epoch_numbers_in_a_declared_time_column_and_lists_nested_too_deep_are_conflicts(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """Arrow casts a number to a timestamp as a count of the unit, so epoch seconds declared ``timestamptz``
    landed as minutes into January 1970 without a word; and a value in 21 nested lists landed, and the
    warehouse's load of such a column doubles its time every two levels (26 lists: 19.5 s for one value).
    Both records go to the quarantine naming the field; the rest land."""
    lists: Any = 1
    for _ in range(21):
        lists = [lists]
    records = [
        {"id": 1, "at": "2024-01-01T00:00:00Z", "tags": [[1]]},
        {"id": 2, "at": 1700000000},
        {"id": 3, "at": "2024-01-02T00:00:00Z", "tags": lists},
    ]
    with scripted_server(lambda request: (200, {}, records)) as api:
        yaml = f"""
type: integration_platform.components.RestSource
attributes:
  source: times
  base_url: {api.url}
  max_retries: 0
  streams:
    - name: events
      path: /events
      primary_key: [id]
      columns: {{at: timestamptz}}
      on_schema_conflict: quarantine
"""
        p = platform(yaml, tmp_path, instance)
        events = dg.AssetKey(["times", "events"])
        result = p.materialize([events, dg.AssetKey(["warehouse", "times.events"])], raise_on_error=False)
    assert result.success, failure_messages(result)
    assert [row[0] for row in p.query("SELECT id FROM times.events ORDER BY id")] == [1]
    quarantine = pq.read_table(next((tmp_path / "lake" / "times" / "events" / "_quarantine").rglob("*.parquet")))
    reasons = sorted(quarantine.column("reason").to_pylist())
    assert len(reasons) == 2
    assert "field 'tags' nests 21 lists" in " ".join(reasons)
    assert "a number is no timestamp" in " ".join(reasons)


def test_an_object_field_null_in_every_record_of_a_run_takes_its_type_from_a_later_run(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """``address.zip`` null in every record of one run, text in the next: the first landing wrote the field
    as Parquet's null type, DuckDB made it ``INTEGER``, and every later warehouse load failed as a type
    conflict (``STRUCT(city VARCHAR, zip INTEGER)`` against ``zip VARCHAR``), a rebuild too. A field
    without a value is left out of its landing, and the later one adds it."""
    pages = [
        [{"id": 1, "address": {"city": "Oslo", "zip": None, "geo": {"lat": None}}}],
        [{"id": 2, "address": {"city": "Rome", "zip": "00100", "geo": {"lat": 41.9}}}],
    ]
    served: list[int] = []

    def answer(request: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
        served.append(1)
        return 200, {}, pages[min(len(served), 2) - 1]

    with scripted_server(answer) as api:
        yaml = f"""
type: integration_platform.components.RestSource
attributes:
  source: places
  base_url: {api.url}
  max_retries: 0
  streams:
    - name: shops
      path: /shops
      primary_key: [id]
      incremental: {{cursor: id, param: since}}
"""
        p = platform(yaml, tmp_path, instance)
        keys = [dg.AssetKey(["places", "shops"]), dg.AssetKey(["warehouse", "places.shops"])]
        for _ in pages:
            result = p.materialize(keys, raise_on_error=False)
            assert result.success, failure_messages(result)
    assert p.query("SELECT id, address FROM places.shops ORDER BY id") == [
        (1, {"city": "Oslo", "zip": None, "geo": None}),
        (2, {"city": "Rome", "zip": "00100", "geo": {"lat": 41.9}}),
    ]
