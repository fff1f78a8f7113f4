"""A stream whose cursor, primary key or partition column the source lacks fails before anything
lands, naming the column and the columns that exist (the core path, a real local lake)."""

from pathlib import Path

import pyarrow as pa
import pytest

from integration_platform.core.extract import MissingColumnError, extract_and_land
from integration_platform.core.lake import LocalLake
from integration_platform.core.row_filter import RowFilter
from integration_platform.core.streams import StreamSpec
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
