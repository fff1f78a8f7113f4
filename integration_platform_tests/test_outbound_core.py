"""The outbound core without a broker or an HTTP target: ids, the mark's advance, reading since the mark."""

import datetime as dt
import hashlib
import json
import math
from decimal import Decimal

import duckdb
import pytest
import sqlalchemy as sa

from integration_platform.core.cursors import CursorValue
from integration_platform.core.loading import current_catalog
from integration_platform.core.outbound import (
    CursorTypeError,
    MissingColumnError,
    Watermark,
    batch_id,
    json_body,
    json_default,
    relation_sql,
    row_id,
    select_since,
    select_since_sqlalchemy,
)
from integration_platform.core.records import json_safe

pytestmark = pytest.mark.fast


def test_row_ids_are_the_ids_sent_before_the_core_existed() -> None:
    """Publications and syncs keep their ids across the move to one core (consumers de-duplicate on them)."""
    row = {"id": 7, "email": "a@example.com", "updated_at": dt.datetime(2024, 1, 2, 3, 4, 5)}
    identity = [7, row["updated_at"]]
    old_publish = json.dumps(["src", "pub", identity], sort_keys=True, default=json_default)
    expected = [hashlib.sha256(old_publish.encode()).hexdigest()]
    old_sync = ["sync", identity]
    assert row_id(["src", "pub"], row, ["id"], "updated_at") == expected[0]
    plain = hashlib.sha256(json.dumps(old_sync, default=json_default).encode()).hexdigest()
    assert row_id(["sync"], row, ["id"], "updated_at") == plain
    whole = hashlib.sha256(json.dumps(["src", "pub", row], sort_keys=True, default=json_default).encode()).hexdigest()
    assert row_id(["src", "pub"], row, [], None) == whole
    assert row_id(["src", "pub"], {**row, "updated_at": dt.datetime(2024, 1, 3)}, ["id"], "updated_at") != expected[0]
    assert batch_id(["a", "b"]) != batch_id(["b", "a"]) and len(batch_id(["a"])) == 64


def test_the_mark_stops_at_the_first_unacknowledged_row() -> None:
    start = CursorValue.from_python(1)
    mark = Watermark(start)
    assert mark.value == start
    for value, ok in [(2, True), (None, True), (3, True), (4, False), (5, True)]:
        mark.observe(value, ok)
    assert mark.value == CursorValue.from_python(4)  # the next run starts at 4 (>=) and sends it again
    assert mark.blocked


def test_an_unacknowledged_row_with_a_null_cursor_stops_the_mark() -> None:
    """``cursor >= mark`` never reads a NULL cursor again: the mark passed it, and the row was lost."""
    mark = Watermark(CursorValue.from_python(1))
    for value, ok in [(2, True), (None, False), (3, True), (4, True)]:
        mark.observe(value, ok)
    assert mark.blocked and mark.value == CursorValue.from_python(2)


def test_a_nan_or_infinite_cursor_does_not_move_the_mark() -> None:
    """A mark of NaN or infinity compares above every later value: no new row was ever read again. Such a
    row, read again by every run, is listed as acknowledged; one not acknowledged stops the mark."""
    for special in (math.nan, math.inf, Decimal("NaN"), Decimal("Infinity")):
        mark = Watermark(CursorValue.from_python(1))
        for value, rid in [(2, "a"), (3, "b"), (special, "c")]:
            mark.observe(value, True, rid)
        assert mark.value == CursorValue.from_python(3) and mark.acknowledged == ["b", "c"] and not mark.blocked
        mark.observe(special, False, "d")
        assert mark.blocked and mark.value == CursorValue.from_python(3)


def test_the_rows_read_again_and_already_acknowledged_are_listed() -> None:
    """The ties at the mark, and every row acknowledged after a failure stopped it: the next run reads them
    again (``>=``), and in batch mode would send them in other batches, under other keys."""
    mark = Watermark(CursorValue.from_python(1), acknowledged=["old-at-1"])
    assert mark.done("old-at-1") and not mark.done("other")
    for value, ok, rid in [(1, True, "old-at-1"), (2, True, "a"), (3, True, "b"), (3, True, "c")]:
        mark.observe(value, ok, rid)
    assert mark.value == CursorValue.from_python(3) and mark.acknowledged == ["b", "c"]
    stopped = Watermark(None)
    for value, ok, rid in [(2, True, "a"), (3, True, "b"), (3, False, "c"), (4, True, "d"), (5, False, "e")]:
        stopped.observe(value, ok, rid)
    assert stopped.value == CursorValue.from_python(3) and stopped.acknowledged == ["b", "d"]
    untouched = Watermark(CursorValue.from_python(9), acknowledged=["x"])  # no row read: the list is kept
    assert untouched.acknowledged == ["x"]


def test_without_a_cursor_the_id_covers_the_row_values() -> None:
    """Key values alone gave a changed row its old id: a target de-duplicating on it replayed the old answer."""
    row = {"id": 7, "email": "a@example.com"}
    assert row_id(["s"], row, ["id"], None) != row_id(["s"], {**row, "email": "b@example.com"}, ["id"], None)
    assert row_id(["s"], row, ["id"], None) == row_id(["s"], dict(row), ["id"], None)


def test_json_safe_turns_nan_and_infinities_into_null() -> None:
    value = {"a": float("nan"), "b": [1.5, float("inf"), {"c": -float("inf")}], "d": (2, "x")}
    assert json_safe(value) == {"a": None, "b": [1.5, None, {"c": None}], "d": [2, "x"]}


def test_select_since_reads_from_the_mark_in_cursor_order_as_the_column_type() -> None:
    conn = duckdb.connect()
    conn.execute(
        "CREATE SCHEMA s; CREATE TABLE s.t AS SELECT * FROM (VALUES (3, 30), (1, 10), (2, 20), (10, 100)) v(k, c)"
    )
    relation = relation_sql("s.t", None)
    mark = CursorValue("string", "10")  # an old bare-text mark: compared as an integer, not as text
    rows = [r for chunk in select_since(conn, relation, "k", CursorValue("int", "2"), 2) for r in chunk]
    assert [r["k"] for r in rows] == [2, 3, 10]
    assert [r["k"] for chunk in select_since(conn, relation, "k", mark, 100) for r in chunk] == [10]
    assert [len(chunk) for chunk in select_since(conn, relation, "k", None, 3)] == [3, 1]
    with pytest.raises(MissingColumnError, match=r"\['nope'\] not in"):
        list(select_since(conn, relation, "k", None, 3, required=["nope"]))


def test_rows_with_a_null_cursor_are_read_on_every_run_when_asked() -> None:
    """``cursor >= mark`` never matches NULL: a sync reads those rows each run (to refuse them by name)."""
    conn = duckdb.connect()
    conn.execute("CREATE SCHEMA s; CREATE TABLE s.t AS SELECT * FROM (VALUES (1, 10), (NULL, 20), (3, 30)) v(k, c)")
    relation, mark = relation_sql("s.t", None), CursorValue("int", "2")
    assert [r["c"] for chunk in select_since(conn, relation, "k", mark, 10) for r in chunk] == [30]
    read = [r["c"] for chunk in select_since(conn, relation, "k", mark, 10, null_cursor_rows=True) for r in chunk]
    assert sorted(read) == [20, 30]
    engine = sa.create_engine("sqlite://")
    with engine.begin() as db:
        db.execute(sa.text("CREATE TABLE t AS SELECT 1 AS k, 10 AS c UNION ALL SELECT NULL, 20 UNION ALL SELECT 3, 30"))
    chunks = select_since_sqlalchemy(engine, "t", "k", mark, 10, null_cursor_rows=True)
    assert sorted(r["c"] for chunk in chunks for r in chunk) == [20, 30]


def test_a_warehouse_table_of_a_source_named_as_a_catalog_is_read_through_the_warehouse_catalog() -> None:
    """``temp.t`` alone is ambiguous in DuckDB (the temp catalog): the warehouse's catalog goes first."""
    conn = duckdb.connect()
    conn.execute("CREATE SCHEMA memory.temp; CREATE TABLE memory.temp.t AS SELECT 1 AS k")
    with pytest.raises(duckdb.BinderException, match="Ambiguous reference"):
        list(select_since(conn, relation_sql("temp.t", None), "k", None, 10))
    relation = relation_sql("temp.t", None, current_catalog(conn))
    assert relation == '"memory"."temp"."t"'
    assert [r["k"] for chunk in select_since(conn, relation, "k", None, 10) for r in chunk] == [1]


def test_select_since_sqlalchemy_binds_the_mark_as_its_python_value() -> None:
    engine = sa.create_engine("sqlite://")
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE t (k INTEGER, at TEXT)"))
        conn.execute(sa.text("INSERT INTO t VALUES (1, 'a'), (3, 'c'), (2, 'b')"))
    chunks = list(
        select_since_sqlalchemy(engine, relation_sql(None, "SELECT * FROM t"), "k", CursorValue.from_python(2), 1)
    )
    assert [[r["k"] for r in chunk] for chunk in chunks] == [[2], [3]]


def test_a_cursor_whose_values_make_no_mark_fails_before_the_first_chunk() -> None:
    """Every row was read (and sent), then the mark failed with a bare TypeError: no run ever recorded one."""
    conn = duckdb.connect()
    conn.execute("CREATE TABLE t AS SELECT i AS id, i % 2 = 0 AS flag FROM range(5) r(i)")
    with pytest.raises(CursorTypeError, match="cursor column 'flag' of t: a boolean column cannot be a cursor"):
        next(select_since(conn, "t", "flag", None, 2))
    engine = sa.create_engine("sqlite://")
    with engine.begin() as db:
        db.execute(sa.text("CREATE TABLE t (id INTEGER, at BLOB)"))
        db.execute(sa.text("INSERT INTO t VALUES (1, NULL), (2, x'0102')"))
    with pytest.raises(CursorTypeError, match="cursor column 'at' of t: unsupported cursor value type bytes"):
        next(select_since_sqlalchemy(engine, "t", "at", None, 10))


@pytest.mark.parametrize("kind", ["TIMESTAMP", "TIMESTAMPTZ", "DATE"])
def test_an_infinite_date_or_timestamp_in_duckdb_does_not_become_the_mark(kind: str) -> None:
    """DuckDB gives ``infinity`` as Python's last instant: as the mark, the next run read only that row and
    the rows added after it were never sent."""
    conn = duckdb.connect()
    conn.execute(f"CREATE TABLE t (id INTEGER, ts {kind})")
    conn.execute("INSERT INTO t VALUES (1, '2024-01-01'), (2, 'infinity'), (3, '-infinity'), (4, '2024-01-02')")
    mark = Watermark(None)
    for chunk in select_since(conn, "t", "ts", None, 10):
        for row in chunk:
            mark.observe(row["ts"], True, str(row["id"]))
    assert mark.value is not None and mark.value.text.startswith("2024-01-02"), mark.value
    conn.execute("INSERT INTO t VALUES (5, '2024-01-03')")
    again = [row["id"] for chunk in select_since(conn, "t", "ts", mark.value, 10) for row in chunk]
    assert 5 in again and 2 in again, again


def test_a_row_id_does_not_depend_on_the_time_zone_a_timestamptz_is_read_in() -> None:
    """DuckDB gives a TIMESTAMPTZ in the session's time zone (the process's ``TZ`` by default): the id hashed
    the offset, so the same row version read on a host in another zone went out under a new id (a target or
    consumer de-duplicating on it stored it twice; the ids kept beside the mark no longer matched). The id
    is that of the instant; read in UTC it is the id sent before."""
    ids = []
    for zone in ("UTC", "Asia/Tokyo", "America/New_York"):
        with duckdb.connect() as conn:
            conn.execute(f"SET TimeZone = '{zone}'")
            (at,) = conn.execute("SELECT TIMESTAMPTZ '2026-01-01 00:00:00+00'").fetchone() or ()
        row = {"id": 1, "updated_at": at, "seen": [at]}
        ids.append((row_id(["sync"], row, ["id"], "updated_at"), row_id(["sync"], row, ["id"], None)))
    assert ids[1] == ids[0] and ids[2] == ids[0]
    in_utc = {"id": 1, "updated_at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC)}
    before = json.dumps(["sync", [1, in_utc["updated_at"]]], sort_keys=True, default=json_default)
    assert ids[0][0] == hashlib.sha256(before.encode()).hexdigest()


def test_an_interval_is_sent_as_an_iso_8601_duration() -> None:
    """DuckDB gives an INTERVAL as a timedelta, whose Python text went out: ``1 day, 0:00:00`` and, for minus one
    hour, ``-1 day, 23:00:00``, which nothing reads as minus one hour. Its id stays what it was."""
    with duckdb.connect() as conn:
        values = conn.execute(
            "SELECT * FROM (VALUES (INTERVAL 1 DAY), (INTERVAL '-1 hour'), (INTERVAL 90 MINUTE), "
            "(INTERVAL '1 day 2 hours 3 minutes 4.5 seconds'), (INTERVAL 0 SECOND), (INTERVAL 1 MICROSECOND))"
        ).fetchall()
    sent = [json.loads(json_body({"every": value}))["every"] for (value,) in values]
    assert sent == ["P1D", "-PT1H", "PT1H30M", "P1DT2H3M4.5S", "PT0S", "PT0.000001S"]
    row = {"id": 1, "every": dt.timedelta(hours=-1)}
    before = hashlib.sha256(json.dumps(["s", row], sort_keys=True, default=str).encode()).hexdigest()
    assert row_id(["s"], row, [], None) == before


def test_a_query_with_text_beyond_ascii_keeps_its_text_and_loses_its_final_semicolon() -> None:
    """DuckDB's tokenizer gives byte offsets: read as character positions, ``SELECT 'Zürich' AS city;`` raised a
    bare IndexError and ``...;\n`` kept its ``;`` inside the parentheses (a parser error)."""
    with duckdb.connect() as conn:
        for query in ("SELECT 'Zürich' AS city;", "SELECT 'Zürich' AS city;\n", "SELECT 'Zürich' AS city; -- ü"):
            relation = relation_sql(None, query)
            assert conn.execute(f"SELECT * FROM {relation} AS t").fetchall() == [("Zürich",)], query
