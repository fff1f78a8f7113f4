"""Loading change rows (the core of change data capture) into DuckDB: log order, deletes, history."""

import dataclasses
import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from integration_platform.core.deletes import TOMBSTONES_KEY, land_deletes
from integration_platform.core.extract import ReservedColumnError, extract_and_land, rows_held
from integration_platform.core.lake import LocalLake
from integration_platform.core.landing import LandingError, land
from integration_platform.core.loading import load, pending
from integration_platform.core.micro_batches import MicroBatch, land_micro_batches
from integration_platform.core.streams import ChangeCapture, StreamSpec

pytestmark = pytest.mark.fast
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def changes(rows: list[tuple[int, str | None, str, int, int]]) -> pa.Table:
    """Change rows ``(id, name, op, log position, seq)``."""
    return pa.table(
        {
            "id": pa.array([r[0] for r in rows], pa.int64()),
            "name": pa.array([r[1] for r in rows], pa.string()),
            "_ip_op": [r[2] for r in rows],
            "_ip_log_position": pa.array([r[3] for r in rows], pa.int64()),
            "_ip_change_seq": pa.array([r[4] for r in rows], pa.int32()),
            "_ip_committed_at": pa.array([T0 + dt.timedelta(seconds=r[3]) for r in rows], pa.timestamp("us", "UTC")),
        }
    )


def apply(tmp_path: Path, spec: StreamSpec, landings: list[tuple[str, pa.Table, bool]]) -> duckdb.DuckDBPyConnection:
    store = LocalLake(tmp_path / "lake")
    for window, table, full in landings:
        land(store, spec, window, table.to_batches(), table.schema, full=full)
    conn = duckdb.connect(str(tmp_path / "w.duckdb"))
    load(conn, store, spec, pending(conn, store, spec))
    (held,) = conn.execute(f"SELECT count(*) FROM {spec.source}.{spec.name}").fetchall()[0]
    assert rows_held(store, spec) == held
    return conn


def spec(**changes: Any) -> StreamSpec:
    return StreamSpec("src", "t", "merge", primary_key=("id",), changes=ChangeCapture(**changes))


SNAPSHOT = changes([(1, "a", "snapshot", 10, 0), (2, "b", "snapshot", 10, 0), (3, "c", "snapshot", 10, 0)])
#: Log order differs from file order: each key's latest change must win by position, then seq.
BATCH = changes(
    [
        (1, "a2", "update", 20, 1),
        (1, "a1", "update", 20, 0),
        (2, None, "delete", 30, 0),
        (4, "d", "insert", 20, 2),
        (4, None, "delete", 40, 0),
        (4, "d2", "insert", 50, 0),
        (3, None, "delete", 60, 0),
        (3, "c2", "insert", 60, 1),
        (5, "e", "insert", 61, 0),
        (5, "e2", "update", 62, 0),
        (5, None, "delete", 63, 0),
    ]
)


def test_hard_deletes_in_log_order(tmp_path: Path) -> None:
    conn = apply(tmp_path, spec(), [("snap", SNAPSHOT, True), ("b1", BATCH, False)])
    rows = conn.execute("SELECT id, name, _ip_op FROM src.t ORDER BY id").fetchall()
    assert rows == [(1, "a2", "update"), (3, "c2", "insert"), (4, "d2", "insert")]


def test_a_delete_in_a_later_landing_removes_the_row(tmp_path: Path) -> None:
    later = changes([(1, None, "delete", 70, 0)])
    conn = apply(tmp_path, spec(), [("snap", SNAPSHOT, True), ("b1", BATCH, False), ("b2", later, False)])
    assert conn.execute("SELECT id FROM src.t ORDER BY id").fetchall() == [(3,), (4,)]


def test_soft_deletes_keep_the_row_stamped(tmp_path: Path) -> None:
    conn = apply(tmp_path, spec(deletes="soft"), [("snap", SNAPSHOT, True), ("b1", BATCH, False)])
    rows = conn.execute("SELECT id, name, _ip_op, _ip_deleted_at FROM src.t ORDER BY id").fetchall()
    assert rows == [
        (1, "a2", "update", None),
        (2, "b", "delete", T0 + dt.timedelta(seconds=30)),  # the row as it was, stamped
        (3, "c2", "insert", None),
        (4, "d2", "insert", None),
        (5, "e2", "delete", T0 + dt.timedelta(seconds=63)),  # inserted and deleted in the batch: as it last was
    ]


def test_history_holds_every_version_once_even_when_reapplied(tmp_path: Path) -> None:
    conn = apply(tmp_path, spec(history=True), [("snap", SNAPSHOT, True), ("b1", BATCH, False)])
    versions = conn.execute("SELECT id, count(*) FROM src.t__history GROUP BY id ORDER BY id").fetchall()
    assert versions == [(1, 3), (2, 2), (3, 3), (4, 3), (5, 3)]
    store = LocalLake(tmp_path / "lake")
    again = changes([(1, "a3", "update", 20, 1)])  # the window landed again (a retried landing)
    land(store, spec(history=True), "b1", again.to_batches(), again.schema, full=False)
    load(conn, store, spec(history=True), pending(conn, store, spec(history=True)))
    assert conn.execute("SELECT count(*) FROM src.t__history").fetchone() == (3 + 1,)  # snapshot + b1 as retried
    columns = [c for (c,) in conn.execute("SELECT column_name FROM (DESCRIBE src.t__history)").fetchall()]
    assert columns == ["id", "name", "_ip_op", "_ip_log_position", "_ip_change_seq", "_ip_committed_at", "_ip_window"]


def test_a_merge_keeps_each_keys_latest_row_whether_or_not_a_key_repeats_in_one_load(tmp_path: Path) -> None:
    """A merge of several landings in one load: with no key twice among them the staged rows are
    inserted as they are; with a key twice (one landing after another, or within one landing by its
    cursor; NULL keys count as one key, as the window groups them) each key keeps its latest row."""

    def rows(ids: list[int | None], names: list[str], at: list[int]) -> pa.Table:
        return pa.table({"id": pa.array(ids, pa.int64()), "name": names, "at": pa.array(at, pa.int64())})

    merge = StreamSpec("src", "m", "merge", primary_key=("id",), cursor="at")
    unique = apply(tmp_path / "unique", merge, [("w1", rows([1, 2], ["a", "b"], [1, 1]), False)])
    assert unique.execute("SELECT id, name FROM src.m ORDER BY id").fetchall() == [(1, "a"), (2, "b")]
    repeated = apply(
        tmp_path / "repeated",
        merge,
        [
            ("w1", rows([1, 2, None], ["a", "b", "n1"], [1, 1, 1]), False),
            ("w2", rows([2, 3, 3, None], ["b2", "c-late", "c-early", "n2"], [2, 5, 4, 2]), False),
        ],
    )
    assert repeated.execute("SELECT id, name FROM src.m ORDER BY id NULLS LAST").fetchall() == [
        (1, "a"),
        (2, "b2"),
        (3, "c-late"),
        (None, "n2"),
    ]
    nulls = LocalLake(tmp_path / "nulls")  # only NULL keys repeat: one of them stays, as the window keeps one
    only_nulls = rows([1, None, None], ["a", "n1", "n2"], [1, 1, 2])
    land(nulls, merge, "w1", only_nulls.to_batches(), only_nulls.schema, full=False)
    with duckdb.connect() as conn:
        load(conn, nulls, merge, pending(conn, nulls, merge))
        got = conn.execute("SELECT id, name FROM src.m ORDER BY id NULLS LAST").fetchall()
    assert got == [(1, "a"), (None, "n2")]
    store = LocalLake(tmp_path / "unique" / "lake")  # a later load with unique keys replaces rows by key
    later = rows([2, 4], ["b3", "d"], [3, 3])
    land(store, merge, "w2", later.to_batches(), later.schema, full=False)
    load(unique, store, merge, pending(unique, store, merge))
    assert unique.execute("SELECT id, name FROM src.m ORDER BY id").fetchall() == [(1, "a"), (2, "b3"), (4, "d")]


def test_tombstones_alone_load_into_a_merge_with_a_cursor_and_a_table_named_ip_rows_survives(tmp_path: Path) -> None:
    """Tombstone landings hold only the keys and ``_ip_op``: a load of them alone, a key twice among
    them, has no cursor column to order by, and deletes the keys. The loader's scratch table
    ``_ip_rows`` is a temporary one: a warehouse table ``main._ip_rows`` keeps its rows."""
    merge = StreamSpec("src", "m", "merge", primary_key=("id",), cursor="at")
    data = pa.table({"id": pa.array([1, 2, 3], pa.int64()), "at": pa.array([1, 1, 1], pa.int64())})
    conn = apply(tmp_path, merge, [("w1", data, False)])
    conn.execute("CREATE TABLE main._ip_rows AS SELECT 7 AS x")  # a table of the warehouse's own
    store = LocalLake(tmp_path / "lake")
    keys_only = dataclasses.replace(merge, cursor=None)  # as land_deletes lands tombstones
    for window, key in (("t1", 2), ("t2", 2), ("t3", 3)):
        gone = pa.table({"id": pa.array([key], pa.int64()), "_ip_op": ["delete"]})
        land(store, keys_only, window, gone.to_batches(), gone.schema, full=False, extra={TOMBSTONES_KEY: True})
    load(conn, store, merge, pending(conn, store, merge))
    assert conn.execute("SELECT id FROM src.m ORDER BY id").fetchall() == [(1,)]
    later = pa.table({"id": pa.array([4], pa.int64()), "at": pa.array([2], pa.int64())})  # no key repeats
    land(store, merge, "w2", later.to_batches(), later.schema, full=False)
    load(conn, store, merge, pending(conn, store, merge))
    assert conn.execute("SELECT id FROM src.m ORDER BY id").fetchall() == [(1,), (4,)]
    assert conn.execute("SELECT x FROM main._ip_rows").fetchall() == [(7,)]


@pytest.mark.parametrize(
    ("source", "name", "database"),
    [
        ("main", "_ip_rows", "w"),  # two parts, "main"."_ip_rows" was the loader's temp table
        ("temp", "t", "w"),  # two parts, "temp"."t" was ambiguous with DuckDB's temp catalog
        ("system", "t", "w"),
        ("warehouse", "t", "warehouse"),  # ... and with the warehouse's own catalog
        ("s", "t", "_integration_platform"),  # the ledger's two parts with a catalog of that name
    ],
)
def test_a_stream_whose_two_part_name_means_something_else_in_duckdb_keeps_its_rows(
    tmp_path: Path, source: str, name: str, database: str
) -> None:
    """The stream's table and the ledger are named in full (catalog, schema, table): a source ``main``
    with a stream named as one of the loader's scratch tables, or a source or warehouse file named as a
    catalog or schema, loads into its own table, by merge (a key twice: the window's copy) and by
    append (the staged table renamed)."""
    store = LocalLake(tmp_path / "lake")
    merge = StreamSpec(source, name, "merge", primary_key=("id",), cursor="at")
    append = StreamSpec(source, f"{name}_appended", "append")
    rows = pa.table({"id": pa.array([1, 2, 2], pa.int64()), "at": pa.array([1, 1, 2], pa.int64())})
    for spec in (merge, append):
        land(store, spec, "w1", rows.to_batches(), rows.schema, full=False)
    path = str(tmp_path / f"{database}.duckdb")
    with duckdb.connect(path) as conn:
        for spec in (merge, append):
            result = load(conn, store, spec, pending(conn, store, spec))
            assert result.table_rows == (2 if spec is merge else 3), spec.path
            assert pending(conn, store, spec) == [], "the ledger holds the landing"
    with duckdb.connect(path) as conn:  # a new connection: no temp table of the load is left to count
        for spec, held in ((merge, [(1, 1), (2, 2)]), (append, [(1, 1), (2, 1), (2, 2)])):
            got = conn.execute(f'SELECT id, "at" FROM "{database}"."{source}"."{spec.name}" ORDER BY ALL').fetchall()
            assert got == held, spec.path


@pytest.mark.parametrize("name", ["_ip_last", "_ip_rows", "_ip_staged"])
def test_a_change_stream_with_soft_deletes_named_as_a_scratch_table_in_source_main_keeps_its_rows(
    tmp_path: Path, name: str
) -> None:
    """Soft deletes read what a deleted row last held from the scratch table ``_ip_last``: a stream of
    that name in a source ``main`` lost a row to it, ``_ip_rows`` failed to bind."""
    soft = StreamSpec("main", name, "merge", primary_key=("id",), changes=ChangeCapture(deletes="soft", history=True))
    conn = apply(tmp_path, soft, [("snapshot", SNAPSHOT, True), ("b1", BATCH, False)])
    kept = conn.execute(f'SELECT id, name, _ip_deleted_at IS NOT NULL FROM main."{name}" ORDER BY id').fetchall()
    assert kept == [(1, "a2", False), (2, "b", True), (3, "c2", False), (4, "d2", False), (5, "e2", True)]


def test_an_append_stream_of_two_schemas_named_ip_next_in_source_main_keeps_its_rows(tmp_path: Path) -> None:
    """Landings of two schemas are staged through the scratch table ``_ip_next`` (dropped before the
    stream's table is named, so this one held before the names were qualified: it pins that)."""
    spec = StreamSpec("main", "_ip_next", "append")
    narrow = pa.table({"id": pa.array([1], pa.int64())})
    wide = pa.table({"id": pa.array([2], pa.int64()), "name": ["b"]})
    conn = apply(tmp_path, spec, [("w1", narrow, False), ("w2", wide, False)])
    assert conn.execute('SELECT id, name FROM main."_ip_next" ORDER BY id').fetchall() == [(1, None), (2, "b")]


@pytest.mark.parametrize("source", ["information_schema", "pg_catalog", "_integration_platform"])
def test_a_source_named_as_a_schema_duckdb_or_the_ledger_owns_is_refused(source: str) -> None:
    with pytest.raises(ValueError, match=rf"source name '{source}' is reserved: .* choose another"):
        StreamSpec(source, "t", "append")


def test_a_name_with_a_trailing_line_end_is_refused() -> None:
    """``$`` also matches before a final newline: the name pattern must hold for the whole name."""
    with pytest.raises(ValueError, match=r"source name 's\\n' must match"):
        StreamSpec("s\n", "t", "append")


def test_a_key_deleted_then_restored_unchanged_lands_again(tmp_path: Path) -> None:
    """Delete detection tombstoned key 2; the source then has it again exactly as before (same cursor value,
    inside the look-back). Before, the re-read dropped it as already landed, so it stayed deleted until a
    full refresh; keys 1 and 3, never deleted, are still dropped as already landed."""
    store = LocalLake(tmp_path / "lake")
    spec = StreamSpec("s", "customers", "merge", primary_key=("id",), cursor="updated", lag=3600)
    conn = duckdb.connect(str(tmp_path / "w.duckdb"))
    rows = pa.table({"id": pa.array([1, 2, 3], pa.int64()), "updated": pa.array([100] * 3, pa.int64())})

    def read(_: object) -> pa.RecordBatchReader:
        return pa.RecordBatchReader.from_batches(rows.schema, rows.to_batches())

    first = extract_and_land(store, spec, read)
    land_deletes(store, spec, [pa.record_batch({"id": pa.array([1, 3], pa.int64())})], "run00001")
    load(conn, store, spec, pending(conn, store, spec))
    assert conn.execute("SELECT id FROM s.customers ORDER BY id").fetchall() == [(1,), (3,)]
    again = extract_and_land(store, spec, read, cursor_before=first.cursor_after)
    assert (again.rows_read, again.duplicates_dropped, again.manifest.rows) == (3, 2, 1)
    load(conn, store, spec, pending(conn, store, spec))
    assert conn.execute("SELECT id FROM s.customers ORDER BY id").fetchall() == [(1,), (2,), (3,)]
    assert rows_held(store, spec) == 3
    # the mark did not move, so the next run replaces that window: with key 2 again, once
    extract_and_land(store, spec, read, cursor_before=again.cursor_after)
    load(conn, store, spec, pending(conn, store, spec))
    assert conn.execute("SELECT id, count(*) FROM s.customers GROUP BY id ORDER BY id").fetchall() == [
        (1, 1),
        (2, 1),
        (3, 1),
    ]
    assert rows_held(store, spec) == 3


def test_a_widened_key_is_compared_after_tombstones_too(tmp_path: Path) -> None:
    """With tombstones among the landings, the rows already landed went through a second join, which
    refused int32 landings beside int64 ones: every run failed until a full refresh."""
    store = LocalLake(tmp_path / "lake")
    spec = StreamSpec("s", "items", "merge", primary_key=("id",), cursor="updated", lag=100)

    def source(table: pa.Table) -> Callable[[object], pa.RecordBatchReader]:
        return lambda _: pa.RecordBatchReader.from_batches(table.schema, table.to_batches())

    old = pa.table({"id": pa.array([1, 2, 3], pa.int32()), "updated": pa.array([10, 20, 30], pa.int64())})
    new = pa.table({"id": pa.array([1, 3, 4], pa.int64()), "updated": pa.array([10, 30, 40], pa.int64())})
    first = extract_and_land(store, spec, source(old))
    second = extract_and_land(store, spec, source(new), cursor_before=first.cursor_after)  # ALTER ... TYPE bigint
    land_deletes(store, spec, [pa.record_batch({"id": pa.array([1, 3, 4], pa.int64())})], "run00001")
    third = extract_and_land(store, spec, source(new), cursor_before=second.cursor_after)
    assert (second.manifest.rows, third.duplicates_dropped, third.manifest.rows) == (1, 3, 0)


def test_change_batches_refuse_a_null_key_and_a_loader_column(tmp_path: Path) -> None:
    """Change data capture lands through micro-batches, past ``extract_and_land``'s checks: a key
    declared on a nullable column piled up null-key rows, a table column ``_ip_window`` displaced the
    loader's, and a table column ``_IP_OP`` sat beside the decoder's ``_ip_op`` (DuckDB takes them for
    one column)."""
    store = LocalLake(tmp_path / "lake")
    spec = StreamSpec("src", "t", "merge", primary_key=("id",), changes=ChangeCapture())
    acknowledged: list[object] = []
    for extra, message in (
        ({"id": pa.array([1, None], pa.int64())}, r"1 row\(s\) of a batch have no value in primary-key column 'id'"),
        ({"id": pa.array([1, 2], pa.int64()), "_ip_window": ["a", "b"]}, "the source has a column '_ip_window'"),
        ({"id": pa.array([1, 2], pa.int64()), "_IP_OP": ["delete", "delete"]}, "the source has a column '_IP_OP'"),
    ):
        rows = pa.table({**extra, "_ip_op": ["insert", "insert"]})
        batch = MicroBatch(rows, maybe_landed=False, acknowledge=acknowledged.append)
        with pytest.raises((LandingError, ReservedColumnError), match=message):
            land_micro_batches(store, spec, [batch], "run00001")
    assert acknowledged == [] and not list((tmp_path / "lake").rglob("*.parquet"))


def test_a_full_landing_of_a_merge_stream_without_a_cursor_holds_each_key_once(tmp_path: Path) -> None:
    """A merge stream with a primary key and no cursor (a REST or HTML stream with ``write_disposition:
    merge``, not incremental) lands each run whole: an API whose pages shifted returns a record twice. The
    full load kept both rows (the latest-row window was applied only with a cursor), so the merge table
    held key 1 twice while the lake's own count (each key once, ``rows_held``) said 2 rows."""
    users = StreamSpec("src", "users", "merge", primary_key=("id",))
    snapshot = pa.table({"id": [1, 2, 1], "name": ["ann", "bob", "ann"]})
    conn = apply(tmp_path, users, [("snapshot", snapshot, True)])
    assert conn.execute("SELECT id, name FROM src.users ORDER BY id").fetchall() == [(1, "ann"), (2, "bob")]
