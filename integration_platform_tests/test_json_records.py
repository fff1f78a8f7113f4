"""JSON records -> Arrow: the schema rules every JSON source relies on (pure conversion, no I/O)."""

import datetime as dt

import pyarrow as pa
import pytest

from integration_platform.core.records import JsonRecords, SchemaConflictError, TableSpill

pytestmark = pytest.mark.fast


def test_a_stable_schema_across_pages_with_widening_and_new_columns() -> None:
    records = JsonRecords("s/x", primary_key=["id"])
    first = records.convert([{"id": 1, "score": 3, "tags": None}], "page 1")
    second = records.convert([{"id": 2, "score": 2.5, "tags": ["a"], "extra": {"k": 1}}], "page 2")
    assert first.schema.field("score").type == pa.int64()
    assert records.schema.field("score").type == pa.float64()
    assert records.schema.field("tags").type == pa.list_(pa.string())
    assert records.changes == [
        "column score widened from int64 to double in page 2",
        "new column extra (struct<k: int64>) first seen in page 2",
    ]
    with TableSpill(limit_bytes=1) as spill:  # forces every page to disk
        spill.add(first)
        spill.add(second)
        table = spill.reader(records.schema).read_all()
    assert table.to_pylist() == [
        {"id": 1, "score": 3.0, "tags": None, "extra": None},
        {"id": 2, "score": 2.5, "tags": ["a"], "extra": {"k": 1}},
    ]


def test_duplicates_and_records_without_key_or_not_objects() -> None:
    records = JsonRecords("s/x", primary_key=["id"], on_conflict="quarantine")
    table = records.convert([{"id": 1}, {"id": 1, "v": 2}, {"v": 3}, [1, 2], "text"], "page")
    assert table.num_rows == 1 and records.duplicates == 1
    assert [r.reason for r in records.rejected] == [
        "primary key field(s) ['id'] missing or null",
        "record is a JSON list, not an object",
        "record is a JSON str, not an object",
    ]
    assert records.rejected[0].origin == "page record 2"


def test_declared_types_json_columns_and_nested_as_text() -> None:
    records = JsonRecords(
        "s/x", nested="json", columns={"at": pa.timestamp("us")}, json_columns=["payload"], primary_key=["id"]
    )
    table = records.convert([{"id": 1, "at": "2024-05-01 10:00:00", "payload": 7, "obj": {"a": [1, 2]}}], "p")
    row = table.to_pylist()[0]
    assert row == {"id": 1, "at": dt.datetime(2024, 5, 1, 10), "payload": "7", "obj": '{"a": [1, 2]}'}


def test_conflicts_fail_by_default_and_name_field_value_and_origin() -> None:
    records = JsonRecords("api/users")
    records.convert([{"age": 31}], "GET /users?page=1")
    with pytest.raises(SchemaConflictError, match=r"stream api/users: field 'age': expected int64, got \"old\""):
        records.convert([{"age": 40}, {"age": "old"}], "GET /users?page=2")
    mixed = JsonRecords("api/users", on_conflict="quarantine")
    table = mixed.convert([{"age": 40}, {"age": "old"}, {"age": 2**70}], "GET /users?page=3")
    assert table.column("age").to_pylist() == [40]
    assert [r.origin for r in mixed.rejected] == ["GET /users?page=3 record 1", "GET /users?page=3 record 2"]
