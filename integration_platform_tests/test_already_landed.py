"""What an incremental re-read counts as already landed (the rows inside its look-back that an earlier
landing holds): rows with nulls, key columns whose type widened, a column the source added. A real
local lake and a real DuckDB."""

from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from integration_platform.core.cursors import CursorValue
from integration_platform.core.extract import Extraction, extract_and_land, without_landed
from integration_platform.core.lake import LocalLake
from integration_platform.core.loading import load, pending
from integration_platform.core.row_filter import RowFilter
from integration_platform.core.streams import StreamSpec

pytestmark = pytest.mark.fast


def _land(
    tmp_path: Path, spec: StreamSpec, tables: list[pa.Table]
) -> tuple[list[Extraction], duckdb.DuckDBPyConnection]:
    """Land ``tables`` as the source's successive states (each run reads from the mark back), loading each."""
    lake, conn = LocalLake(tmp_path / "lake"), duckdb.connect(str(tmp_path / "w.duckdb"))
    mark: CursorValue | None = None
    done = []
    for table in tables:

        def read(window: RowFilter | None, table: pa.Table = table) -> pa.RecordBatchReader:
            # compared in Python, as a database would: a uint64 above 2**63 against an int mark too
            if window is None:
                return pa.RecordBatchReader.from_batches(table.schema, table.to_batches())
            rows = table.filter(
                pa.array([v is not None and v >= window.lower for v in table[window.column].to_pylist()])
            )
            return pa.RecordBatchReader.from_batches(rows.schema, rows.to_batches())

        extraction = extract_and_land(lake, spec, read, cursor_before=mark)
        load(conn, lake, spec, pending(conn, lake, spec))
        mark = extraction.cursor_after
        done.append(extraction)
    return done, conn


def test_a_keyless_rows_nulls_do_not_land_it_again(tmp_path: Path) -> None:
    """Each run re-reads the row at the mark; with a null in it, the join matched nothing and every run
    landed it again (3 runs, 4 rows)."""
    spec = StreamSpec("s", "events", "append", cursor="ts")
    source = pa.table({"ts": pa.array([1, 2], pa.int64()), "note": pa.array([None, None], pa.string())})
    done, conn = _land(tmp_path, spec, [source, source, source])
    assert [(e.rows_read, e.duplicates_dropped) for e in done] == [(2, 0), (1, 1), (1, 1)]
    assert conn.execute("SELECT ts, note FROM s.events ORDER BY ts").fetchall() == [(1, None), (2, None)]


def test_a_null_primary_key_of_an_append_stream_matches_itself(tmp_path: Path) -> None:
    spec = StreamSpec("s", "events", "append", primary_key=("id",), cursor="ts")
    source = pa.table({"id": pa.array([1, None], pa.int64()), "ts": pa.array([1, 2], pa.int64())})
    done, conn = _land(tmp_path, spec, [source, source])
    assert done[1].duplicates_dropped == 1
    assert conn.execute("SELECT count(*) FROM s.events").fetchone() == (2,)


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (pa.array([1, 2], pa.int32()), pa.array([2, 3], pa.int64())),  # ALTER ... TYPE bigint
        (pa.array([1, 2], pa.int64()), pa.array([2.0, 3.0], pa.float64())),  # a JSON API's numbers
    ],
    ids=["int32 to int64", "int64 to double"],
)
def test_a_key_whose_type_widened_is_still_compared(tmp_path: Path, before: pa.Array, after: pa.Array) -> None:
    """Before, the join refused the two types, and every run failed until a full refresh."""
    spec = StreamSpec("s", "items", "merge", primary_key=("id",), cursor="updated")
    first = pa.table({"id": before, "updated": pa.array([10, 20], pa.int64())})
    second = pa.table({"id": after, "updated": pa.array([20, 30], pa.int64())})
    done, conn = _land(tmp_path, spec, [first, second, second])
    assert [e.duplicates_dropped for e in done] == [0, 1, 1]
    assert conn.execute("SELECT id, updated FROM s.items ORDER BY id").fetchall() == [(1, 10), (2, 20), (3, 30)]


def test_a_column_a_keyless_stream_gains_is_null_in_the_older_landings(tmp_path: Path) -> None:
    """Before, reading the older landings for a column they lack failed every run (``No match for
    FieldRef``); the row at the mark, now with a value there, is a new row once."""
    spec = StreamSpec("s", "events", "append", cursor="ts")
    first = pa.table({"ts": pa.array([1, 2], pa.int64()), "a": ["p", "q"]})
    second = pa.table({"ts": pa.array([1, 2, 3], pa.int64()), "a": ["p", "q", "r"], "b": ["x", "y", "z"]})
    done, conn = _land(tmp_path, spec, [first, second, second])
    assert [(e.rows_read, e.duplicates_dropped) for e in done] == [(2, 0), (2, 0), (1, 1)]
    assert conn.execute("SELECT count(*) FROM s.events").fetchone() == (4,)


def test_a_column_first_all_null_then_filled(tmp_path: Path) -> None:
    """A field null on every record of the first page has Arrow's null type; the join refused it."""
    spec = StreamSpec("s", "events", "append", cursor="ts")
    first = pa.table({"ts": pa.array([1, 2], pa.int64()), "note": pa.nulls(2)})
    second = pa.table({"ts": pa.array([2, 3], pa.int64()), "note": pa.array([None, "hi"], pa.string())})
    done, conn = _land(tmp_path, spec, [first, second])
    assert done[1].duplicates_dropped == 1
    assert conn.execute("SELECT ts, note FROM s.events ORDER BY ts").fetchall() == [(1, None), (2, None), (3, "hi")]


@pytest.mark.parametrize(
    ("landed", "now"),
    [
        (pa.array([1, 2], pa.timestamp("us", "+00:00")), pa.array([1, 2], pa.timestamp("us", "UTC"))),
        (pa.array([1000, 2000], pa.timestamp("us")), pa.array([1, 2], pa.timestamp("ms"))),
        (pa.array(["a", "b"]), pa.array(["a", "b"]).dictionary_encode()),
    ],
    ids=["another name of the zone", "another time unit", "a dictionary"],
)
def test_keys_of_one_value_in_another_type_match(landed: pa.Array, now: pa.Array) -> None:
    assert without_landed(pa.table({"k": now}), pa.table({"k": landed}), ["k"]).num_rows == 0


@pytest.mark.parametrize(
    ("now", "landed", "types"),
    [
        (pa.array([True]), pa.array([1], pa.date32()), r"bool now but date32\[day\]"),
        (pa.array(["007"]), pa.array([7], pa.int64()), "string now but int64"),  # a cast would make them equal
    ],
)
def test_keys_that_cannot_be_compared_fail_naming_the_column(now: pa.Array, landed: pa.Array, types: str) -> None:
    with pytest.raises(ValueError, match=f"key column 'id' is {types} in the rows already landed"):
        without_landed(pa.table({"id": now}), pa.table({"id": landed}), ["id"])


def test_a_key_landed_as_a_dictionary_and_as_text(tmp_path: Path) -> None:
    spec = StreamSpec("s", "events", "append", primary_key=("k",), cursor="n", lag=10)  # re-reads both landings
    first = pa.table({"k": pa.array(["x", "y"]).dictionary_encode(), "n": pa.array([1, 2], pa.int64())})
    second = pa.table({"k": pa.array(["y", "z"]), "n": pa.array([2, 3], pa.int64())})
    done, _ = _land(tmp_path, spec, [first, second, second])
    assert [e.duplicates_dropped for e in done] == [0, 1, 2]


@pytest.mark.parametrize("lag", [0, 10], ids=["mark above 2**63", "mark moved below 2**63 by the lag"])
def test_a_uint64_cursor_above_2_63_compares_exactly(tmp_path: Path, lag: int) -> None:
    """A MySQL ``BIGINT UNSIGNED`` cursor lands as uint64. Before, once the mark passed 2**63 every run
    failed with a bare ``OverflowError`` (the landed rows' filter made the mark an int64 scalar), and a
    mark in int64's range with landed values above it cast the column to int64 (``ArrowInvalid``)."""
    spec = StreamSpec("s", "events", "append", cursor="id", lag=lag)
    high = 2**63
    first = pa.table({"id": pa.array([high - 1, high], pa.uint64())})
    second = pa.table({"id": pa.array([high - 1, high, 2**64 - 1], pa.uint64())})
    done, conn = _land(tmp_path, spec, [first, second, second])
    assert [e.cursor_after for e in done] == [CursorValue("int", str(high))] + [CursorValue("int", str(2**64 - 1))] * 2
    assert [e.rows_read - e.duplicates_dropped for e in done] == [2, 1, 0]
    assert conn.execute("SELECT id::varchar FROM s.events ORDER BY id").fetchall() == [
        (str(high - 1),),
        (str(high),),
        (str(2**64 - 1),),
    ]
