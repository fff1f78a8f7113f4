"""A stream whose cursor, primary key or partition column the source lacks fails before anything
lands, naming the column and the columns that exist; a merge stream's row without a primary key fails
its landing (the core path, a real local lake)."""

from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pytest

from integration_platform.core.extract import (
    MissingColumnError,
    PartitionToLand,
    PartitionWindow,
    ReservedColumnError,
    extract_and_land,
    extract_and_land_partitions,
    rows_held,
)
from integration_platform.core.lake import LocalLake
from integration_platform.core.landing import LandingError, incremental_window, list_manifests
from integration_platform.core.row_filter import RowFilter
from integration_platform.core.streams import Partitioning, StreamSpec
from integration_platform.sources.sql.sa_arrow import _column

pytestmark = pytest.mark.fast


def _extractor(_: RowFilter | None) -> pa.RecordBatchReader:
    table = pa.table({"id": [1, 2], "updated": ["a", "b"]})
    return pa.RecordBatchReader.from_batches(table.schema, table.to_batches())


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (StreamSpec("s", "t", "merge", primary_key=("id",), cursor="updated_at"), "cursor column 'updated_at'"),
        (StreamSpec("s", "t", "replace", primary_key=("ident",)), "primary key column 'ident'"),
    ],
)
def test_nothing_lands_for_a_missing_column(tmp_path: Path, spec: StreamSpec, message: str) -> None:
    lake = LocalLake(tmp_path / "lake")
    with pytest.raises(MissingColumnError, match=message) as failure:
        extract_and_land(lake, spec, _extractor)
    assert "(id, updated); nothing was landed" in str(failure.value)
    assert not list((tmp_path / "lake").rglob("*.parquet")) and not list((tmp_path / "lake").rglob("*.json"))


def test_a_database_value_that_does_not_fit_names_table_column_and_value() -> None:
    with pytest.raises(ValueError, match=r"table t: column 'c': value 40000 does not fit int16"):
        _column("t", "c", pa.int16(), None, [1, 40000, 2])


def _rows(ids: list[int | None], since: int = 0) -> Callable[[RowFilter | None], pa.RecordBatchReader]:
    table = pa.table({"id": pa.array(ids, pa.int64()), "updated": pa.array(range(since, since + len(ids)), pa.int64())})
    return lambda _: pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=2))


def test_a_merge_stream_refuses_a_null_key_and_keeps_what_landed(tmp_path: Path) -> None:
    """Before, a merge kept one of a load's null-key rows (PARTITION BY groups nulls) and piled up those
    of later loads (DELETE ... USING matches no null): neither the table nor its row count was true."""
    lake = LocalLake(tmp_path / "lake")
    spec = StreamSpec("s", "t", "merge", primary_key=("id",), cursor="updated")
    first = extract_and_land(lake, spec, _rows([1, 2, 3]))
    with pytest.raises(
        LandingError, match=r"1 row\(s\) of a batch have no value in primary-key column 'id'"
    ) as failure:
        extract_and_land(lake, spec, _rows([4, 5, None, 6], since=10), cursor_before=first.cursor_after)
    assert f"landing s/t window {incremental_window(first.cursor_after)!r} failed, nothing landed" in str(failure.value)
    assert [m.window for m in list_manifests(lake, spec)] == ["initial"]  # the rows before it (4, 5) did not land
    assert rows_held(lake, spec) == 3 and len(list((tmp_path / "lake").rglob("*.parquet"))) == 1


def test_an_append_stream_lands_a_null_key(tmp_path: Path) -> None:
    lake = LocalLake(tmp_path / "lake")
    spec = StreamSpec("s", "t", "append", primary_key=("id",), cursor="updated")
    assert extract_and_land(lake, spec, _rows([1, None, None])).manifest.rows == 3


def test_a_backfill_of_a_merge_stream_stops_at_the_partition_with_a_null_key(tmp_path: Path) -> None:
    lake = LocalLake(tmp_path / "lake")
    spec = StreamSpec(
        "s", "t", "merge", primary_key=("id",), partitioning=Partitioning(None, "daily", start="2021-01-01")
    )
    days = [(d, PartitionWindow(d, None, None)) for d in ("2021-01-01", "2021-01-02", "2021-01-03")]
    todo: list[PartitionToLand] = [
        (window, _rows([n, None] if day == "2021-01-02" else [n]), {}) for n, (day, window) in enumerate(days)
    ]
    landed = []
    with pytest.raises(LandingError, match=r"window 'partition=2021-01-02'.*primary-key column 'id'"):
        for window, _, _ in extract_and_land_partitions(lake, spec, todo):
            landed.append(window.key)
    assert landed == ["2021-01-01"] and [m.partition for m in list_manifests(lake, spec)] == ["2021-01-01"]


@pytest.mark.parametrize("column", ["_ip_op", "_IP_WINDOW", "_ip_seq", "_ip_deleted_at", "_ip_log_position"])
def test_a_source_column_named_as_a_loader_column_is_refused(tmp_path: Path, column: str) -> None:
    """Before, a source's ``_ip_op`` of ``delete`` was taken for a tombstone (the row left the table), its
    ``_ip_window`` duplicated rows when the window landed again, and its ``_ip_seq`` lost its values."""
    lake = LocalLake(tmp_path / "lake")
    table = pa.table({"id": [1, 2], column: ["delete", "keep"]})
    spec = StreamSpec("s", "t", "merge", primary_key=("id",))
    with pytest.raises(ReservedColumnError, match=f"the source has a column '{column}'.*nothing was landed"):
        extract_and_land(lake, spec, lambda _: pa.RecordBatchReader.from_batches(table.schema, table.to_batches()))
    assert not list((tmp_path / "lake").rglob("*.parquet"))


def test_a_lag_on_a_text_cursor_names_the_stream_the_column_and_the_fix(tmp_path: Path) -> None:
    """A cursor the source gives as text (an undeclared REST field) cannot move back by a lag: the second
    run failed with "a look-back lag needs a time or numeric cursor", naming neither stream nor column."""
    lake = LocalLake(tmp_path / "lake")
    spec = StreamSpec("s", "t", "append", cursor="updated", lag=60)
    first = extract_and_land(lake, spec, _extractor)
    with pytest.raises(ValueError, match=r"stream s/t: cursor 'updated' holds string values .*declare the cursor"):
        extract_and_land(lake, spec, _extractor, cursor_before=first.cursor_after)
