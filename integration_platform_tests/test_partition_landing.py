"""Landing a range of partitions with shared files: one manifest per partition, exact rows per
partition when read back or loaded, earlier partitions kept when one fails, re-landing one partition
alone, and the sweep of shared files no manifest names. A real local lake and a real DuckDB."""

import datetime as dt
import functools
import os
import resource
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from integration_platform.core import partition_landing
from integration_platform.core.extract import (
    Extraction,
    Extractor,
    NothingToLand,
    PartitionToLand,
    PartitionWindow,
    extract_and_land_partitions,
    landed_keys,
)
from integration_platform.core.lake import TMP_MARK, LocalLake
from integration_platform.core.landing import LandingError, land, list_manifests, read_landed
from integration_platform.core.loading import load, partition_rows, pending, scans_by_schema
from integration_platform.core.partition_landing import SHARED, SharedLanding, sweep_shared
from integration_platform.core.streams import Partitioning, StreamSpec

pytestmark = pytest.mark.fast

SPEC = StreamSpec("drops", "days", "append", partitioning=Partitioning(None, "daily", start="2021-01-01"))
SCHEMA = pa.schema([("id", pa.int64()), ("day", pa.string())])


def rows(day: str, count: int, schema: pa.Schema = SCHEMA) -> pa.Table:
    start = int(day.replace("-", "")) * 1000
    columns = [pa.array(range(start, start + count), pa.int64()), pa.array([day] * count)]
    columns += [pa.array(["x"] * count) for _ in schema.names[2:]]
    return pa.Table.from_arrays(columns, schema=schema)


def extractor(table: pa.Table | None, chunk: int = 65536) -> Extractor:
    def extract(_: object) -> pa.RecordBatchReader:
        if table is None:
            raise NothingToLand("no drop that day")
        return pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=chunk))

    return extract


def days(count: int, first: int = 1) -> list[str]:
    return [(dt.date(2021, 1, 1) + dt.timedelta(days=first - 1 + n)).isoformat() for n in range(count)]


def to_land(tables: dict[str, pa.Table | None], chunk: int = 65536) -> Iterator[PartitionToLand]:
    for day, table in tables.items():
        yield PartitionWindow(day, None, None), extractor(table, chunk), {"day": day}


def land_range(lake: LocalLake, tables: dict[str, pa.Table | None]) -> dict[str, Extraction | NothingToLand]:
    return {w.key: outcome for w, outcome, _ in extract_and_land_partitions(lake, SPEC, to_land(tables))}


def shared_files(lake: LocalLake) -> list[str]:
    return lake.list_keys(f"{SPEC.path}/{SHARED}/")


def test_a_range_of_small_partitions_shares_one_file_and_each_keeps_its_own_manifest(tmp_path: Path) -> None:
    lake = LocalLake(tmp_path / "lake")
    tables = {day: rows(day, n + 1) for n, day in enumerate(days(30))}
    outcome = land_range(lake, tables)
    assert len(shared_files(lake)) == 1
    manifests = {str(m.partition): m for m in list_manifests(lake, SPEC)}
    assert sorted(manifests) == sorted(tables)
    for day, table in tables.items():
        manifest = manifests[day]
        assert manifest.rows == table.num_rows and manifest.window == f"partition={day}"
        assert manifest.extra["day"] == day  # what the extractor recorded
        assert read_landed(lake, manifest.files[0]).equals(table)
        result = outcome[day]
        assert isinstance(result, Extraction) and result.manifest.rows == table.num_rows
    with duckdb.connect(str(tmp_path / "w.duckdb")) as conn:
        loaded = load(conn, lake, SPEC, pending(conn, lake, SPEC))
        assert loaded.rows_loaded == sum(t.num_rows for t in tables.values())
        assert partition_rows(conn, SPEC, list(tables)) == {day: t.num_rows for day, t in tables.items()}
        mismatched = conn.execute("SELECT count(*) FROM drops.days WHERE _ip_window <> 'partition=' || day").fetchone()
        assert mismatched == (0,)


def test_a_partition_re_landed_alone_replaces_only_its_rows_and_the_shared_file_is_swept_when_unnamed(
    tmp_path: Path,
) -> None:
    lake = LocalLake(tmp_path / "lake")
    first = days(3)
    land_range(lake, {day: rows(day, 5) for day in first})
    [shared] = shared_files(lake)
    with duckdb.connect(str(tmp_path / "w.duckdb")) as conn:
        load(conn, lake, SPEC, pending(conn, lake, SPEC))
        again = rows(first[1], 2)
        land(lake, SPEC, f"partition={first[1]}", again.to_batches(), SCHEMA, full=False, partition=first[1])
        load(conn, lake, SPEC, pending(conn, lake, SPEC))
        assert partition_rows(conn, SPEC, first) == {first[0]: 5, first[1]: 2, first[2]: 5}
        # two partitions still name the shared file: an old sweep keeps it
        assert sweep_shared(lake, SPEC, now=dt.datetime.now(dt.UTC) + dt.timedelta(days=2)) == []
        for day in (first[0], first[2]):
            land(lake, SPEC, f"partition={day}", rows(day, 1).to_batches(), SCHEMA, full=False, partition=day)
        assert sweep_shared(lake, SPEC) == []  # unnamed now, but young: a landing may be about to name it
        assert sweep_shared(lake, SPEC, now=dt.datetime.now(dt.UTC) + dt.timedelta(days=2)) == [shared]
        assert shared_files(lake) == []
        load(conn, lake, SPEC, pending(conn, lake, SPEC))
        assert partition_rows(conn, SPEC, first) == {first[0]: 1, first[1]: 2, first[2]: 1}


def test_a_partition_landed_alone_before_moves_into_the_shared_file_and_its_old_file_goes(tmp_path: Path) -> None:
    lake = LocalLake(tmp_path / "lake")
    day = days(1)[0]
    land(lake, SPEC, f"partition={day}", rows(day, 4).to_batches(), SCHEMA, full=False, partition=day)
    assert lake.list_keys(f"{SPEC.path}/partition={day}/")
    land_range(lake, {d: rows(d, 3) for d in days(2)})
    assert lake.list_keys(f"{SPEC.path}/partition={day}/") == []
    [manifest] = [m for m in list_manifests(lake, SPEC) if m.partition == day]
    assert manifest.files[0].key.startswith(f"{SPEC.path}/{SHARED}/") and manifest.rows == 3


def test_a_failing_partition_keeps_the_ones_before_it_and_lands_nothing_after(tmp_path: Path) -> None:
    lake = LocalLake(tmp_path / "lake")
    good = days(4)
    tables: dict[str, pa.Table | None] = {day: rows(day, 3) for day in good}
    seen = []

    def broken(_: object) -> pa.RecordBatchReader:
        raise ValueError("day 5 is an HTML page")

    def windows() -> Iterator[PartitionToLand]:
        yield from to_land(tables)
        yield PartitionWindow("2021-01-05", None, None), broken, {}
        yield from to_land({"2021-01-06": rows("2021-01-06", 3)})

    with pytest.raises(ValueError, match="HTML page"):
        for window, _, _ in extract_and_land_partitions(lake, SPEC, windows()):
            seen.append(window.key)
    assert seen == good  # yielded, so their after-commit hooks ran, before the error
    assert sorted(str(m.partition) for m in list_manifests(lake, SPEC)) == good
    assert not [p for p in (tmp_path / "lake").rglob(f"{TMP_MARK}*")]


def test_skipped_big_and_reshaped_partitions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A day without a drop is skipped; a partition over the shared size lands in its own file with
    its batches streamed; a new column starts a new shared file; all load with their own windows."""
    monkeypatch.setattr(partition_landing, "SHARED_PARTITION_BYTES", 2_000)
    monkeypatch.setattr("integration_platform.core.extract.SHARED_PARTITION_BYTES", 2_000)
    lake = LocalLake(tmp_path / "lake")
    wider = SCHEMA.append(pa.field("note", pa.string()))
    d = days(6)
    tables: dict[str, pa.Table | None] = {
        d[0]: rows(d[0], 3),
        d[1]: None,
        d[2]: rows(d[2], 1_000),  # 16 kB of Arrow data: over the shared bound
        d[3]: rows(d[3], 2),
        d[4]: rows(d[4], 2, wider),
        d[5]: rows(d[5], 4, wider),
    }
    outcome = {w.key: o for w, o, _ in extract_and_land_partitions(lake, SPEC, to_land(tables, chunk=100))}
    assert isinstance(outcome[d[1]], NothingToLand)
    manifests = {str(m.partition): m for m in list_manifests(lake, SPEC)}
    assert sorted(manifests) == [d[0], d[2], d[3], d[4], d[5]]
    assert manifests[d[2]].files[0].offset is None and len(manifests[d[2]].files) == 1
    assert manifests[d[2]].files[0].key.startswith(f"{SPEC.path}/partition={d[2]}/")
    assert len(shared_files(lake)) == 2
    assert manifests[d[3]].files[0].key != manifests[d[4]].files[0].key
    assert manifests[d[4]].files[0].key == manifests[d[5]].files[0].key
    with duckdb.connect(str(tmp_path / "w.duckdb")) as conn:
        load(conn, lake, SPEC, pending(conn, lake, SPEC))
        counts = partition_rows(conn, SPEC, d)
        assert counts == {d[0]: 3, d[2]: 1_000, d[3]: 2, d[4]: 2, d[5]: 4}
        notes = conn.execute("SELECT day, count(note) FROM drops.days GROUP BY day ORDER BY day").fetchall()
        assert notes == [(d[0], 0), (d[2], 0), (d[3], 0), (d[4], 2), (d[5], 4)]


def test_a_stream_with_its_own_file_row_number_column_lands_each_partition_alone(tmp_path: Path) -> None:
    lake = LocalLake(tmp_path / "lake")
    schema = pa.schema([("id", pa.int64()), ("day", pa.string()), ("File_Row_Number", pa.string())])
    tables: dict[str, pa.Table | None] = {day: rows(day, 2, schema) for day in days(3)}
    land_range(lake, tables)
    assert shared_files(lake) == []
    with duckdb.connect(str(tmp_path / "w.duckdb")) as conn:
        load(conn, lake, SPEC, pending(conn, lake, SPEC))
        assert conn.execute("SELECT count(*), count(File_Row_Number) FROM drops.days").fetchone() == (6, 6)


def test_already_landed_keys_read_only_each_landings_range(tmp_path: Path) -> None:
    lake = LocalLake(tmp_path / "lake")
    land_range(lake, {day: rows(day, 4) for day in days(2)})
    day = days(1)[0]
    land(lake, SPEC, f"partition={day}", rows(day, 1).to_batches(), SCHEMA, full=False, partition=day)
    keys = landed_keys(lake, SPEC, ["id"])
    assert keys is not None and keys.num_rows == 5  # day 1's four shared rows are no longer landed
    assert os.path.exists(tmp_path / "lake" / SPEC.path / SHARED)


def test_an_empty_partition_between_two_others_takes_none_of_their_rows(tmp_path: Path) -> None:
    """An empty day starts where the next day starts in the shared file: the next day's rows are still
    its own, when loaded, counted by the merge check's scan, and read back."""
    lake = LocalLake(tmp_path / "lake")
    d = days(4)
    empty = SCHEMA.empty_table()
    tables: dict[str, pa.Table | None] = {d[0]: rows(d[0], 2), d[1]: empty, d[2]: rows(d[2], 3), d[3]: empty}
    land_range(lake, tables)
    manifests = {str(m.partition): m for m in list_manifests(lake, SPEC)}
    assert manifests[d[1]].files[0].offset == manifests[d[2]].files[0].offset == 2
    assert read_landed(lake, manifests[d[2]].files[0]).num_rows == 3
    assert read_landed(lake, manifests[d[1]].files[0]).num_rows == 0
    with duckdb.connect(str(tmp_path / "w.duckdb")) as conn:
        load(conn, lake, SPEC, pending(conn, lake, SPEC))
        assert partition_rows(conn, SPEC, d) == {d[0]: 2, d[2]: 3}
        copies = {f.key: str(lake.local_copy(f.key).__enter__()) for m in manifests.values() for f in m.files}
        scans = scans_by_schema([(m, [(copies[f.key], f) for f in m.files]) for m in manifests.values()])
        [(sql, params, _)] = scans
        assert conn.execute(f"SELECT count(*), count(DISTINCT id) FROM ({sql})", params).fetchone() == (5, 5)


def test_a_shared_file_closes_at_its_byte_bound_and_a_closed_landing_leaves_no_staging(tmp_path: Path) -> None:
    lake = LocalLake(tmp_path / "lake")
    size = rows(days(1)[0], 100).nbytes
    shared = SharedLanding(lake, SPEC, file_bytes=2 * size + size // 2)  # two days fit, not three
    for day in days(6):
        table = rows(day, 100)
        if shared.needs_new_file(SCHEMA, table.num_rows, table.nbytes):
            assert len(list(shared.finish())) == 2
        shared.add(day, SCHEMA, table.to_batches(), {}, 0.01)
    assert len(list(shared.finish())) == 2
    assert len(shared_files(lake)) == 3
    # a range landing closed early (an interrupted run) while its shared file is open lands nothing more
    # and leaves no staging file
    d = days(3, first=10)
    landing = extract_and_land_partitions(lake, SPEC, to_land({d[0]: rows(d[0], 2), d[1]: None, d[2]: rows(d[2], 2)}))
    window, skipped, _ = next(landing)  # day 10 is in the open shared file, day 11 skipped
    assert window.key == d[1] and isinstance(skipped, NothingToLand)
    landing.close()
    assert not list((tmp_path / "lake").rglob(f"{TMP_MARK}*"))
    assert len(shared_files(lake)) == 3 and d[0] not in {m.partition for m in list_manifests(lake, SPEC)}


def test_the_size_a_caller_hands_to_add_is_the_one_the_byte_bound_counts(tmp_path: Path) -> None:
    """``add(..., size=)`` counts the caller's Arrow bytes (the range landing hands on what it measured)
    rather than asking the batches again, and without it the batches are asked: either way the open file
    reaches its byte bound exactly when those bytes say so."""
    lake = LocalLake(tmp_path / "lake")
    d = days(3)
    small = rows(d[0], 2)
    shared = SharedLanding(lake, SPEC, file_bytes=1_000_000)
    shared.add(d[0], SCHEMA, small.to_batches(), {}, 0.01, size=999_990)  # as if it were almost the bound
    assert shared.needs_new_file(SCHEMA, 2, 11) and not shared.needs_new_file(SCHEMA, 2, 10)
    assert [m.partition for m in shared.finish()] == [d[0]]
    shared.add(d[1], SCHEMA, small.to_batches(), {}, 0.01)  # asked of the batches
    assert not shared.needs_new_file(SCHEMA, 2, 1_000_000 - small.nbytes)
    assert shared.needs_new_file(SCHEMA, 2, 1_000_000 - small.nbytes + 1)
    assert [m.partition for m in shared.finish()] == [d[1]]


def test_a_range_landing_counts_each_partitions_bytes_toward_the_files_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bytes a range landing measured while reading a partition (not asked again) close the shared
    file at its bound: six days of which two fit a file make three files."""
    lake = LocalLake(tmp_path / "lake")
    size = rows(days(1)[0], 100).nbytes
    bounded = functools.partial(SharedLanding, file_bytes=2 * size + size // 2)
    monkeypatch.setattr("integration_platform.core.extract.SharedLanding", bounded)
    landed = land_range(lake, {day: rows(day, 100) for day in days(6)})
    assert all(isinstance(outcome, Extraction) for outcome in landed.values())
    assert len(shared_files(lake)) == 3


def test_a_failed_write_of_the_open_file_lands_none_of_its_partitions_and_keeps_committed_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real write error from the OS (the file size limit, as a full disk would): Arrow closes the file,
    so the partitions in it did not land and say so; those of committed files stay."""
    monkeypatch.setattr(partition_landing, "DEFAULT_ROW_GROUP_BYTES", 1)  # every partition is written at once
    lake = LocalLake(tmp_path / "lake")
    shared = SharedLanding(lake, SPEC)
    first = days(2)
    for day in first:
        shared.add(day, SCHEMA, rows(day, 3).to_batches(), {}, 0.01)
    assert [m.partition for m in shared.finish()] == first
    later = days(2, first=3)
    big = pa.Table.from_arrays(
        [pa.array(range(4000), pa.int64()), pa.array([os.urandom(32).hex() for _ in range(4000)])], schema=SCHEMA
    )  # about 260 KB of incompressible text
    shared.add(later[0], SCHEMA, rows(later[0], 3).to_batches(), {}, 0.01)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, hard))  # Python ignores SIGXFSZ: writes fail with EFBIG
    try:
        with pytest.raises(LandingError, match=rf"partitions {later[0]}\.\.{later[1]}, in that file, did not land"):
            shared.add(later[1], SCHEMA, big.to_batches(), {}, 0.01)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert shared.open is None and list(shared.finish()) == []
    assert sorted(str(m.partition) for m in list_manifests(lake, SPEC)) == first
    assert len(shared_files(lake)) == 1
    assert not list((tmp_path / "lake").rglob(f"{TMP_MARK}*"))


def test_a_local_listing_holds_the_files_under_the_prefix_and_no_staging_file(tmp_path: Path) -> None:
    """``LocalLake.list_keys`` (walked with ``os.scandir``): files in nested folders with their
    keys relative to the root, staging files left out, a link to a file listed, a linked folder not
    entered, a link that leads nowhere (a loop, a path through a file) no file, and a prefix that is
    missing or names a file lists nothing."""
    lake = LocalLake(tmp_path / "lake")
    for key in ("s/t/manifests/a.json", "s/t/manifests/2021/b.json", "s/t/data/c.parquet", "s/u/d.json"):
        lake.put_json(key, {"key": key})
    (tmp_path / "lake/s/t/manifests" / f"{TMP_MARK}1@x~y.json").write_text("{}")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "e.json").write_text("{}")
    (tmp_path / "lake/s/t/manifests/linked").symlink_to(outside, target_is_directory=True)
    (tmp_path / "lake/s/t/manifests/f.json").symlink_to(tmp_path / "lake/s/u/d.json")
    (tmp_path / "lake/s/t/manifests/loop").symlink_to(tmp_path / "lake/s/t/manifests/loop")  # leads nowhere
    (tmp_path / "lake/s/t/manifests/through").symlink_to(tmp_path / "lake/s/u/d.json/x")  # through a file

    assert lake.list_keys("s/t/manifests/") == [
        "s/t/manifests/2021/b.json",
        "s/t/manifests/a.json",
        "s/t/manifests/f.json",
    ]
    assert lake.list_keys("s/t/") == [
        "s/t/data/c.parquet",
        "s/t/manifests/2021/b.json",
        "s/t/manifests/a.json",
        "s/t/manifests/f.json",
    ]
    assert len(lake.list_keys("")) == 5
    assert lake.list_keys("s/missing/") == []
    assert lake.list_keys("s/u/d.json") == []
    assert lake.list_versions("s/u/") == {"s/u/d.json": None}


def test_a_partition_landed_again_replaces_its_rows_in_a_merge_stream_too(tmp_path: Path) -> None:
    """A key the source removed from a partition leaves the table when the partition lands again; before, a
    merge stream kept it (only append deleted a window's rows), and the table held more than the lake."""
    lake = LocalLake(tmp_path / "lake")
    spec = StreamSpec("shop", "orders", "merge", primary_key=("id",), partitioning=SPEC.partitioning)
    conn = duckdb.connect(str(tmp_path / "w.duckdb"))

    def land_day(day: str, ids: list[int]) -> None:
        table = pa.table({"id": pa.array(ids, pa.int64()), "day": [day] * len(ids)})
        for _ in extract_and_land_partitions(lake, spec, [(PartitionWindow(day, None, None), extractor(table), {})]):
            pass
        load(conn, lake, spec, pending(conn, lake, spec))

    land_day("2021-01-01", [1, 2, 3])
    land_day("2021-01-02", [4])
    land_day("2021-01-01", [1, 2])  # order 3 was a mistake, removed at the source
    assert conn.execute("SELECT id, day FROM shop.orders ORDER BY id").fetchall() == [
        (1, "2021-01-01"),
        (2, "2021-01-01"),
        (4, "2021-01-02"),
    ]
    assert partition_rows(conn, spec, ["2021-01-01", "2021-01-02"]) == {"2021-01-01": 2, "2021-01-02": 1}


def test_a_key_a_partition_no_longer_holds_takes_its_row_from_another_partition(tmp_path: Path) -> None:
    """Order 7 landed on day 1, was updated on day 2; day 2 lands again without it: the table takes day 1's
    row, as a rebuild from the lake does (deleting day 2's rows had lost the order)."""
    lake = LocalLake(tmp_path / "lake")
    spec = StreamSpec("shop", "orders", "merge", primary_key=("id",), partitioning=SPEC.partitioning)
    conn = duckdb.connect(str(tmp_path / "w.duckdb"))

    def land_day(day: str, ids: list[int], version: str, note: bool = False) -> None:
        table = pa.table({"id": pa.array(ids, pa.int64()), "v": [version] * len(ids)})
        table = table.append_column("note", pa.array(["n"] * len(ids))) if note else table
        for _ in extract_and_land_partitions(lake, spec, [(PartitionWindow(day, None, None), extractor(table), {})]):
            pass
        load(conn, lake, spec, pending(conn, lake, spec))

    land_day("2021-01-01", [1, 7], "v1", note=True)  # another schema than day 2's: one scan per schema
    land_day("2021-01-02", [2, 7], "v2")
    assert conn.execute("SELECT id, v FROM shop.orders ORDER BY id").fetchall() == [(1, "v1"), (2, "v2"), (7, "v2")]
    land_day("2021-01-02", [2], "v2b")
    held = conn.execute("SELECT id, v, note, _ip_window FROM shop.orders ORDER BY id").fetchall()
    assert held == [
        (1, "v1", "n", "partition=2021-01-01"),
        (2, "v2b", None, "partition=2021-01-02"),
        (7, "v1", "n", "partition=2021-01-01"),
    ]
    rebuilt = duckdb.connect(str(tmp_path / "rebuilt.duckdb"))
    load(rebuilt, lake, spec, pending(rebuilt, lake, spec))
    assert rebuilt.execute("SELECT id, v, note, _ip_window FROM shop.orders ORDER BY id").fetchall() == held


def test_only_loaded_landings_put_a_key_back(tmp_path: Path) -> None:
    """The warehouse step loads a run's partitions only: a key is put back from a landing the table holds,
    never from one landed but not loaded yet (its rows would be in the table without a ledger entry);
    and a stream whose other landings hold no file loads as before."""
    lake = LocalLake(tmp_path / "lake")
    spec = StreamSpec("shop", "orders", "merge", primary_key=("id",), partitioning=SPEC.partitioning)
    conn = duckdb.connect(str(tmp_path / "w.duckdb"))

    def land_day(day: str, table: pa.Table, loaded: bool = True) -> None:
        for _ in extract_and_land_partitions(lake, spec, [(PartitionWindow(day, None, None), extractor(table), {})]):
            pass
        if loaded:
            load(conn, lake, spec, pending(conn, lake, spec, day))

    def orders(ids: list[int], version: str) -> pa.Table:
        return pa.table({"id": pa.array(ids, pa.int64()), "v": [version] * len(ids)})

    land_day("2021-01-01", pa.table({}))  # nothing that day: a landing without files
    land_day("2021-01-02", orders([2, 7], "v2"))
    land_day("2021-01-03", orders([7, 9], "v3"), loaded=False)
    land_day("2021-01-02", orders([2], "v2b"))
    assert conn.execute("SELECT id, v FROM shop.orders ORDER BY id").fetchall() == [(2, "v2b")]


def test_a_partition_loaded_after_a_later_landed_one_keeps_the_newer_version_of_a_key(tmp_path: Path) -> None:
    """Order 7 lands with day 1 (v1), is updated and lands with day 2 (v2); day 2's warehouse run comes
    first, day 1's after it (partitions load in their own runs, in any order): the table keeps v2, as a
    rebuild from the lake does. Before, day 1's older row replaced it: a lost update."""
    lake = LocalLake(tmp_path / "lake")
    spec = StreamSpec("shop", "orders", "merge", primary_key=("id",), partitioning=SPEC.partitioning)
    conn = duckdb.connect(str(tmp_path / "w.duckdb"))

    def land_day(day: str, ids: list[int], version: str) -> None:
        table = pa.table({"id": pa.array(ids, pa.int64()), "v": [version] * len(ids)})
        for _ in extract_and_land_partitions(lake, spec, [(PartitionWindow(day, None, None), extractor(table), {})]):
            pass

    land_day("2021-01-01", [1, 7], "v1")
    land_day("2021-01-02", [2, 7], "v2")
    load(conn, lake, spec, pending(conn, lake, spec, "2021-01-02"))
    result = load(conn, lake, spec, pending(conn, lake, spec, "2021-01-01"))
    held = conn.execute("SELECT id, v, _ip_window FROM shop.orders ORDER BY id").fetchall()
    assert held == [
        (1, "v1", "partition=2021-01-01"),
        (2, "v2", "partition=2021-01-02"),
        (7, "v2", "partition=2021-01-02"),
    ]
    assert result.rows_loaded == 1  # order 1 only: order 7 was not inserted
    rebuilt = duckdb.connect(str(tmp_path / "rebuilt.duckdb"))
    load(rebuilt, lake, spec, pending(rebuilt, lake, spec))
    assert rebuilt.execute("SELECT id, v, _ip_window FROM shop.orders ORDER BY id").fetchall() == held
    land_day("2021-01-02", [2], "v2b")  # day 2 lands again without order 7: day 1's row comes back
    load(conn, lake, spec, pending(conn, lake, spec, "2021-01-02"))
    assert conn.execute("SELECT id, v FROM shop.orders ORDER BY id").fetchall() == [(1, "v1"), (2, "v2b"), (7, "v1")]
