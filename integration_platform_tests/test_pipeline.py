"""The landing and loading guarantees, on a real local lake and a real DuckDB file."""

import datetime as dt
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from integration_platform.core import landing
from integration_platform.core.lake import TMP_MARK, LocalLake, host_id
from integration_platform.core.landing import (
    DICTIONARY_MIN_ROWS,
    LandingError,
    active_manifests,
    land,
    list_manifests,
    read_landed_files,
)
from integration_platform.core.loading import SchemaChangeError, load, pending
from integration_platform.core.streams import StreamSpec
from integration_platform.instance import instance_config

SCHEMA = pa.schema([("id", pa.int64()), ("name", pa.string())])


def batch(ids: range, schema: pa.Schema = SCHEMA) -> pa.RecordBatch:
    columns = [pa.array(list(ids), pa.int64()), pa.array([f"n{i}" for i in ids])]
    columns += [pa.array([f"extra{i}" for i in ids]) for _ in schema.names[2:]]
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def apply(conn: duckdb.DuckDBPyConnection, lake: LocalLake, spec: StreamSpec) -> int:
    return load(conn, lake, spec, pending(conn, lake, spec)).table_rows


def test_a_failure_mid_stream_lands_nothing_and_keeps_the_previous_landing(tmp_path: Path) -> None:
    lake = LocalLake(tmp_path / "lake")
    spec = StreamSpec(source="s", name="t", write_disposition="replace", primary_key=("id",))
    land(lake, spec, "snapshot", [batch(range(10))], SCHEMA, full=True)

    def broken() -> Iterator[pa.RecordBatch]:
        yield batch(range(100))
        raise ConnectionResetError("server closed the connection unexpectedly")

    with pytest.raises(LandingError, match=r"s/t window 'snapshot' failed, nothing landed: server closed"):
        land(lake, spec, "snapshot", broken(), SCHEMA, full=True, row_group_rows=10)
    [manifest] = list_manifests(lake, spec)
    assert manifest.rows == 10
    assert not list((tmp_path / "lake").rglob(f"{TMP_MARK}*")), "staged files are discarded"


def test_a_batch_of_another_shape_is_refused_with_the_schema(tmp_path: Path) -> None:
    lake = LocalLake(tmp_path / "lake")
    spec = StreamSpec(source="s", name="t", write_disposition="replace")
    wrong = pa.RecordBatch.from_arrays([pa.array(["x"])], names=["id"])
    with pytest.raises(
        LandingError, match="landing s/t window 'snapshot' failed, nothing landed: a batch does not fit"
    ):
        land(lake, spec, "snapshot", [wrong], SCHEMA, full=True)
    assert list_manifests(lake, spec) == []


def test_only_low_cardinality_columns_are_dictionary_encoded(tmp_path: Path) -> None:
    lake = LocalLake(tmp_path / "lake")
    spec = StreamSpec(source="s", name="t", write_disposition="replace")
    rows = 50_000
    table = pa.table(
        {
            "id": pa.array(range(rows), pa.int64()),
            "status": pa.array([("new", "paid", "shipped")[i % 3] for i in range(rows)]),
            "note": pa.array([None] * rows, pa.string()),
            "label": pa.array([f"customer {i * 7919}" for i in range(rows)]),
        }
    )
    manifest = land(lake, spec, "snapshot", table.to_batches(max_chunksize=10_000), table.schema, full=True)
    [landed] = manifest.files
    metadata = pq.ParquetFile(lake.root / landed.key).metadata.row_group(0)
    encodings = {metadata.column(i).path_in_schema: metadata.column(i).encodings for i in range(4)}
    assert "RLE_DICTIONARY" in encodings["status"]
    assert "RLE_DICTIONARY" in encodings["note"], "an all-null column costs nothing to encode either way"
    assert "RLE_DICTIONARY" not in encodings["id"]
    assert "RLE_DICTIONARY" not in encodings["label"]
    assert pq.read_table(lake.root / landed.key).equals(table)


def test_dictionary_choice_reaches_nested_leaves_and_odd_types(tmp_path: Path) -> None:
    lake = LocalLake(tmp_path / "lake")
    spec = StreamSpec(source="s", name="t", write_disposition="replace")
    rows = 2 * DICTIONARY_MIN_ROWS  # a small first row group keeps the default (see the next test)
    uids = pa.array([i.to_bytes(16, "big") for i in range(rows)], pa.binary(16))
    table = pa.table(
        {
            "id": pa.array(range(rows), pa.int64()),
            "tags": pa.array([["red", "blue"][: 1 + i % 2] for i in range(rows)]),
            "category": pa.array([("a", "b")[i % 2] for i in range(rows)]).dictionary_encode(),
            "uid": pa.ExtensionArray.from_storage(pa.uuid(), uids),
        }
    )
    manifest = land(lake, spec, "snapshot", table.to_batches(max_chunksize=500), table.schema, full=True)
    [landed] = manifest.files
    metadata = pq.ParquetFile(lake.root / landed.key).metadata.row_group(0)
    encodings = {metadata.column(i).path_in_schema: metadata.column(i).encodings for i in range(4)}
    assert "RLE_DICTIONARY" in encodings["tags.list.element"]
    assert "RLE_DICTIONARY" in encodings["category"]
    assert "RLE_DICTIONARY" not in encodings["id"]
    assert "RLE_DICTIONARY" not in encodings["uid"]
    assert pq.read_table(lake.root / landed.key).column("tags").equals(table.column("tags"))


def test_a_small_landing_keeps_the_writers_dictionary_default(tmp_path: Path) -> None:
    """Under DICTIONARY_MIN_ROWS rows the choice is not made (it cost 2 ms of a 10 ms small-file landing)."""
    lake = LocalLake(tmp_path / "lake")
    spec = StreamSpec(source="s", name="t", write_disposition="replace")
    table = pa.table({"id": pa.array(range(100), pa.int64())})
    manifest = land(lake, spec, "snapshot", table.to_batches(), table.schema, full=True)
    metadata = pq.ParquetFile(lake.root / manifest.files[0].key).metadata.row_group(0)
    assert "RLE_DICTIONARY" in metadata.column(0).encodings
    assert pq.read_table(lake.root / manifest.files[0].key).equals(table)


def test_a_writer_failure_at_the_end_of_a_landing_raises_instead_of_hanging(tmp_path: Path) -> None:
    lake = LocalLake(tmp_path / "lake")
    spec = StreamSpec(source="s", name="t", write_disposition="replace")
    interval = pa.table({"span": pa.array([(1, 2, 3)], pa.month_day_nano_interval())})  # no Parquet type
    errors: list[BaseException] = []

    def attempt() -> None:
        try:
            land(lake, spec, "snapshot", interval.to_batches(), interval.schema, full=True)
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive(), "land() hung after its writer failed"
    [error] = errors
    assert isinstance(error, LandingError) and "nothing landed" in str(error)
    assert list_manifests(lake, spec) == []


def test_re_landing_a_window_replaces_its_rows_in_an_append_table(tmp_path: Path) -> None:
    lake = LocalLake(tmp_path / "lake")
    spec = StreamSpec(source="s", name="t", write_disposition="append", cursor="id")
    land(lake, spec, "initial", [batch(range(5))], SCHEMA, full=True)
    land(lake, spec, "after-x", [batch(range(5, 8))], SCHEMA, full=False)
    with duckdb.connect(str(tmp_path / "w.duckdb")) as conn:
        assert apply(conn, lake, spec) == 8
        land(lake, spec, "after-x", [batch(range(5, 9))], SCHEMA, full=False)  # the retry saw one more row
        assert apply(conn, lake, spec) == 9
        assert apply(conn, lake, spec) == 9, "nothing pending: applying again changes nothing"
        assert conn.execute("SELECT count(DISTINCT id) FROM s.t").fetchone() == (9,)


class _ManifestHeldBack:
    """A lake whose manifest writes wait until ``release`` is set, signalling ``committed`` first: the
    landing's files are committed and its manifest not yet written."""

    def __init__(self, lake: LocalLake) -> None:
        self.lake = lake
        self.committed, self.release = threading.Event(), threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.lake, name)

    def put_json(self, key: str, obj: Any) -> None:
        self.committed.set()
        assert self.release.wait(10), "the other landing never finished"
        self.lake.put_json(key, obj)


@pytest.mark.fast
@pytest.mark.parametrize(
    ("spec", "window", "full", "partition"),
    [
        (StreamSpec(source="s", name="t", write_disposition="append"), "partition=2024-01-01", False, "2024-01-01"),
        (StreamSpec(source="s", name="t", write_disposition="replace"), "snapshot", True, None),
    ],
)
def test_two_landings_of_one_window_at_once_leave_the_last_manifests_files_in_place(
    tmp_path: Path, spec: StreamSpec, window: str, full: bool, partition: str | None
) -> None:
    """Landing B has committed its file and not yet its manifest when landing A commits and cleans up;
    then B's manifest is written. A deleted every file of the window its manifest did not name, B's
    among them: B's manifest named a file that was gone (FileNotFoundError, a 404 on S3)."""
    lake = LocalLake(tmp_path / "lake")
    land(
        lake, spec, window, [batch(range(100, 104))], SCHEMA, full=full, partition=partition
    )  # the landing both replace
    held = _ManifestHeldBack(lake)
    b = threading.Thread(
        target=land, args=(held, spec, window, [batch(range(3))], SCHEMA), kwargs={"full": full, "partition": partition}
    )
    b.start()
    assert held.committed.wait(10)
    land(lake, spec, window, [batch(range(10, 12))], SCHEMA, full=full, partition=partition)
    held.release.set()
    b.join()

    [last] = active_manifests(list_manifests(lake, spec))
    assert last.rows == 3, "B's manifest, written last, is the window's"
    [table] = read_landed_files(lake, last.files)
    assert table.column("id").to_pylist() == [0, 1, 2]
    parquet = {k for k in lake.list_keys(f"{spec.path}/") if k.endswith(".parquet")}
    assert len(parquet) == 2, "the first landing's file is gone; A's is unreferenced and young: kept"
    # a day later the next landing of the window sweeps A's file, which no manifest names
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
    [a_file] = parquet - {f.key for f in last.files}
    assert landing.abandoned(a_file.rsplit("/", 1)[-1], later)
    assert not landing.abandoned(a_file.rsplit("/", 1)[-1])


@pytest.mark.fast
def test_a_file_of_a_writer_that_is_gone_is_swept_by_the_next_landing_of_its_window(tmp_path: Path) -> None:
    """A landing killed between its files and its manifest leaves files no manifest names: the next
    landing of the window deletes them once their writer (the pid and host in the name) is gone,
    and leaves a live writer's file (it may be about to be named)."""
    lake = LocalLake(tmp_path / "lake")
    spec = StreamSpec(source="s", name="t", write_disposition="append")
    first = land(lake, spec, "partition=d", [batch(range(3))], SCHEMA, full=False, partition="d")
    folder = tmp_path / "lake" / "s" / "t" / "partition=d"
    [own] = folder.glob("*.parquet")
    dead = _finished_pid()
    name = own.name.split("-", 3)  # part, time, pid@host, landing-n
    killed = folder / f"part-{name[1]}-{dead}@{host_id()}-{'0' * 12}-00000.parquet"
    live = folder / own.name.replace("-00000.parquet", "-00001.parquet")
    killed.write_bytes(own.read_bytes())
    live.write_bytes(own.read_bytes())
    land(lake, spec, "partition=d", [batch(range(2))], SCHEMA, full=False, partition="d")
    left = {p.name for p in folder.glob("*.parquet")}
    assert killed.name not in left, "the killed writer's file is swept"
    assert live.name in left, "a live writer's unnamed file is kept"
    assert own.name not in left, "the replaced manifest's file is deleted"
    assert first.files[0].key.endswith(own.name)


def _finished_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_a_new_source_column_becomes_a_nullable_warehouse_column(tmp_path: Path) -> None:
    lake = LocalLake(tmp_path / "lake")
    spec = StreamSpec(source="s", name="t", write_disposition="merge", primary_key=("id",), cursor="id")
    land(lake, spec, "initial", [batch(range(3))], SCHEMA, full=True)
    wider = SCHEMA.append(pa.field("nickname", pa.string()))
    land(lake, spec, "after-y", [batch(range(2, 4), wider)], wider, full=False)
    with duckdb.connect(str(tmp_path / "w.duckdb")) as conn:
        assert apply(conn, lake, spec) == 4
        rows = conn.execute("SELECT id, nickname FROM s.t ORDER BY id").fetchall()
    assert rows == [(0, None), (1, None), (2, "extra2"), (3, "extra3")]


def test_landings_of_two_schemas_load_together_with_their_own_windows(tmp_path: Path) -> None:
    """Landings are staged one scan per schema: each row keeps its landing's window, a merge keeps the
    latest landing's row per key, and a source column with the staging helper's name is data like any."""
    lake = LocalLake(tmp_path / "lake")
    spec = StreamSpec(source="s", name="t", write_disposition="merge", primary_key=("id",), cursor="id")
    odd = SCHEMA.append(pa.field("_ip_staged_path", pa.string()))
    land(lake, spec, "initial", [batch(range(3))], SCHEMA, full=True)
    land(lake, spec, "after-a", [batch(range(2, 5))], SCHEMA, full=False)
    land(lake, spec, "after-b", [batch(range(4, 7), odd)], odd, full=False)
    land(lake, spec, "after-c", [batch(range(6, 8))], SCHEMA, full=False)
    with duckdb.connect(str(tmp_path / "w.duckdb")) as conn:
        assert apply(conn, lake, spec) == 8
        rows = conn.execute("SELECT id, _ip_window, _ip_staged_path FROM s.t ORDER BY id").fetchall()
    assert rows == [
        (0, "initial", None),
        (1, "initial", None),
        (2, "after-a", None),
        (3, "after-a", None),
        (4, "after-b", "extra4"),
        (5, "after-b", "extra5"),
        (6, "after-c", None),
        (7, "after-c", None),
    ]


def test_a_failed_load_rolls_back_table_and_ledger(tmp_path: Path) -> None:
    lake = LocalLake(tmp_path / "lake")
    spec = StreamSpec(source="s", name="t", write_disposition="merge", primary_key=("id",), cursor="id")
    land(lake, spec, "initial", [batch(range(3))], SCHEMA, full=True)
    with duckdb.connect(str(tmp_path / "w.duckdb")) as conn:
        assert apply(conn, lake, spec) == 3
        clash = pa.schema([("id", pa.int64()), ("name", pa.int64())])
        bad = pa.RecordBatch.from_arrays([pa.array([9]), pa.array([1])], schema=clash)
        # a column the new rows cannot fit: dates in the table, integers in the landing
        conn.execute("ALTER TABLE s.t ALTER name TYPE DATE USING DATE '2020-01-01'")
        land(lake, spec, "after-z", [bad], clash, full=False)
        with pytest.raises(SchemaChangeError, match=r"column 'name' is DATE but landing 'after-z' brings BIGINT"):
            apply(conn, lake, spec)
        assert conn.execute("SELECT count(*) FROM s.t").fetchone() == (3,)
        assert len(pending(conn, lake, spec)) == 1, "the landing is still pending"


def test_the_instance_puts_every_duckdb_writer_in_a_pool_of_one(tmp_path: Path) -> None:
    config = instance_config({})
    assert config["concurrency"]["pools"]["default_limit"] == 1
    assert "storage" not in config
    with pytest.raises(ValueError, match=r"postgresql\+psycopg2://"):
        instance_config({"DAGSTER_PG_URL": "postgresql://u@h/db"})
    with dg.instance_for_test(overrides={"concurrency": config["concurrency"]}) as instance:
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1


def test_marks_written_in_older_forms_are_still_read() -> None:
    """One codec for high-water marks; marks stored before it (bare text, text + cursor_kind) stay readable."""
    from integration_platform.assets.marks import mark_metadata, read_mark
    from integration_platform.core.cursors import CursorValue

    key = dg.AssetKey(["shop", "orders"])
    stamp = CursorValue("timestamp", "2026-01-01T00:00:50")
    cases: list[tuple[dict[str, Any], CursorValue | None]] = [
        ({**mark_metadata(None, stamp)}, stamp),
        ({"cursor_after": "2026-01-01T00:00:50", "cursor_kind": "timestamp"}, stamp),
        ({"cursor_after": "99"}, CursorValue("string", "99")),
        ({"cursor_after": ""}, None),
        ({**mark_metadata(None, None)}, None),
    ]
    with dg.instance_for_test() as instance:
        assert read_mark(instance, key) is None
        for metadata, expected in cases:
            instance.report_runless_asset_event(dg.AssetMaterialization(key, metadata=metadata))
            assert read_mark(instance, key) == expected, metadata
