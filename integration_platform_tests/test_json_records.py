"""JSON records -> Arrow: the schema rules every JSON source relies on (pure conversion, no I/O)."""

import datetime as dt
import json
import math
import random
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from integration_platform.core.lake import LocalLake
from integration_platform.core.quarantine import quarantine_key, write_quarantine
from integration_platform.core.records import JsonRecords, Rejected, SchemaConflictError, TableSpill, json_text
from integration_platform.core.streams import StreamSpec

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


def test_a_rejected_record_does_not_hide_a_later_good_one_with_its_key() -> None:
    records = JsonRecords("s/x", primary_key=["id"], on_conflict="quarantine")
    page = [{"id": 1, "v": "\ud800"}, {"id": 1, "v": "fixed"}, {"id": 1, "v": "later"}, {"id": 2, "v": 5}]
    table = records.convert(page, "p1")
    # id 2's number is a conflict only because id 1's kept string defines the column
    assert table.to_pylist() == [{"id": 1, "v": "fixed"}]
    assert records.duplicates == 1 and [r.origin for r in records.rejected] == ["p1 record 0", "p1 record 3"]
    # across pages of one landing, and across pages converted together, the kept key stays taken
    again = records.convert_pages(
        [([{"id": 1, "v": "dup"}, {"id": 2, "v": "two"}], "p2"), ([{"id": 2, "v": "x"}], "p3")]
    )
    assert again.to_pylist() == [{"id": 2, "v": "two"}] and records.duplicates == 3
    assert records.changes == []


def test_a_duplicate_is_not_checked_and_a_field_only_it_has_is_no_column() -> None:
    records = JsonRecords("s/x", primary_key=["id"], on_conflict="fail")
    table = records.convert([{"id": 1, "v": "a"}, {"id": 1, "v": 5, "extra": "\ud800"}], "p")
    assert table.to_pylist() == [{"id": 1, "v": "a"}] and table.column_names == ["id", "v"]
    assert records.duplicates == 1 and records.rejected == []


def test_pages_converted_together_report_changes_as_page_by_page_and_keys_are_the_values_sent() -> None:
    pages: list[tuple[list[dict[str, Any]], str]] = [
        ([{"v": "\ud800"}], "p1"),
        ([{"v": "ok", "w": 1}], "p2"),
        ([{"v": "x", "u": 2}], "p3"),
    ]
    together = JsonRecords("s/x", on_conflict="quarantine")
    together.convert_pages(pages)
    one_by_one = JsonRecords("s/x", on_conflict="quarantine")
    for records, origin in pages:
        one_by_one.convert(records, origin)
    # p1's only record is rejected: p2 defines the schema, p3's field is the one change
    assert together.changes == one_by_one.changes == ["new column u (int64) first seen in p3"]
    # a key is the value as sent, whatever JSON text a json_columns field becomes
    keyed = JsonRecords("s/x", primary_key=["id"], json_columns=["id"])
    assert keyed.convert([{"id": {"a": 1, "b": 2}}, {"id": {"b": 2, "a": 1}}], "p").num_rows == 1
    assert keyed.duplicates == 1


def test_declared_types_json_columns_and_nested_as_text() -> None:
    records = JsonRecords(
        "s/x", nested="json", columns={"at": pa.timestamp("us")}, json_columns=["payload"], primary_key=["id"]
    )
    table = records.convert([{"id": 1, "at": "2024-05-01 10:00:00", "payload": 7, "obj": {"a": [1, 2]}}], "p")
    row = table.to_pylist()[0]
    assert row == {"id": 1, "at": dt.datetime(2024, 5, 1, 10), "payload": "7", "obj": '{"a":[1,2]}'}


def test_conflicts_fail_by_default_and_name_field_value_and_origin() -> None:
    records = JsonRecords("api/users")
    records.convert([{"age": 31}], "GET /users?page=1")
    with pytest.raises(SchemaConflictError, match=r"stream api/users: field 'age': expected int64, got \"old\""):
        records.convert([{"age": 40}, {"age": "old"}], "GET /users?page=2")
    mixed = JsonRecords("api/users", on_conflict="quarantine")
    table = mixed.convert([{"age": 40}, {"age": "old"}, {"age": 2**70}], "GET /users?page=3")
    assert table.column("age").to_pylist() == [40]
    assert [r.origin for r in mixed.rejected] == ["GET /users?page=3 record 1", "GET /users?page=3 record 2"]


#: A page as Python's JSON parsers read it from a hostile API: lone surrogates (``"\\ud800"``) in a
#: string, in a nested object's string and in a field name.
SURROGATES = """[{"id": 1, "name": "ok", "o": {"a": "x"}}, {"id": 2, "name": "bad \\ud800 name", "o": {"a": "y"}},
 {"id": 3, "name": "ok", "o": {"a": "\\udc00"}}, {"id": 4, "name": "ok", "\\udfffk": 1, "o": {"a": "z"}}]"""


def test_lone_surrogates_are_conflicts_named_in_text_utf8_can_hold(tmp_path: Path) -> None:
    page = json.loads(SURROGATES)
    with pytest.raises(SchemaConflictError) as failed:
        JsonRecords("api/users").convert(page[:3], "GET /users")
    message = str(failed.value)
    message.encode()  # the error names the value in text that can be logged
    assert "stream api/users: field 'name': \"bad \\ud800 name\" does not convert" in message
    assert "GET /users record 1" in message
    with pytest.raises(SchemaConflictError, match=r"field name '\\udfffk' is not valid Unicode .* in GET /u record 0"):
        JsonRecords("api/users").convert(page[3:], "GET /u")
    records = JsonRecords("api/users", on_conflict="quarantine")
    table = records.convert(page, "GET /users")
    assert table.column("id").to_pylist() == [1]
    assert table.schema.names == ["id", "name", "o"]
    assert [r.origin for r in records.rejected] == ["GET /users record 3", "GET /users record 1", "GET /users record 2"]
    assert records.rejected[0].reason == "field name '\\udfffk' is not valid Unicode (a lone surrogate)"
    assert records.rejected[2].reason.startswith('field \'o\': {"a": "\\udc00"} does not convert')
    lake = LocalLake(tmp_path / "lake")
    spec = StreamSpec(source="api", name="users", write_disposition="append")
    assert write_quarantine(lake, spec, "snapshot", records.rejected, "run-1") == 3
    with lake.local_copy(quarantine_key(spec, "snapshot")) as path:
        written = pq.read_table(path).to_pylist()
    assert [json.loads(row["record"]) for row in written] == [page[3], page[1], page[2]]  # the same values
    assert "\\ud800" in written[1]["reason"]


def test_a_lone_surrogate_in_a_new_columns_first_value_or_in_the_origin_is_set_aside() -> None:
    page = json.loads('[{"id": 1, "a": "\\ud800"}, {"id": 2, "a": "x", "l": ["\\udc00"]}, {"id": 3, "l": ["y"]}]')
    records = JsonRecords("f/x", on_conflict="quarantine")
    table = records.convert(page, "drop/f\udcff.json")  # a file name as os.fsdecode reads a non-UTF-8 byte
    assert [r.origin for r in records.rejected] == ["drop/f\\udcff.json record 0", "drop/f\\udcff.json record 1"]
    assert table.to_pylist() == [{"id": 3, "l": ["y"]}]  # "a" only in rejected records: no column
    with pytest.raises(SchemaConflictError, match=r"field 'id': .* in drop/f\\udcff.json record 0"):
        JsonRecords("f/x").convert([{"id": "\ud800"}], "drop/f\udcff.json")


def test_a_field_only_rejected_records_have_becomes_no_column() -> None:
    records = JsonRecords("api/users", on_conflict="quarantine")
    records.convert([{"id": 1, "name": "a"}], "page 1")
    page = [{"id": 2, "name": "\ud800", "extra": 5}, {"id": "x", "other": 1}, {"id": 4, "name": "d"}]
    table = records.convert(page, "page 2")
    assert table.to_pylist() == [{"id": 4, "name": "d"}]
    assert records.schema.names == ["id", "name"] and records.changes == []
    assert [r.origin for r in records.rejected] == ["page 2 record 1", "page 2 record 0"]


def test_write_quarantine_escapes_a_lone_surrogate_in_any_column(tmp_path: Path) -> None:
    lake = LocalLake(tmp_path / "lake")
    spec = StreamSpec(source="f", name="x", write_disposition="append")
    rejected = [Rejected("drop/f\udcff.csv line 2", "bad \ud800", {"k\udc00": "v\ud800"})]
    assert write_quarantine(lake, spec, "2021-01-01", rejected, "run-1") == 1
    with lake.local_copy(quarantine_key(spec, "2021-01-01")) as path:
        row = pq.read_table(path).to_pylist()[0]
    assert (row["origin"], row["reason"]) == ("drop/f\\udcff.csv line 2", "bad \\ud800")
    assert json.loads(row["record"]) == {"k\udc00": "v\ud800"}


_CHARACTERS = ["a", " ", '"', "\\", "\n", "\x01", "é", "\u2028", "😀", "\ud800", "/"]


def _random_json(rng: random.Random, depth: int = 0) -> Any:
    """A random parsed-JSON value, with what a lenient parser also yields: non-finite floats, integers
    beyond 64 bits, lone surrogates, control and non-ASCII characters."""
    kind = rng.randrange(9 if depth < 3 else 6)
    if kind == 0:
        return rng.choice([0, -1, 2**63 - 1, -(2**63), 2**64, -(2**70), rng.randrange(-(10**6), 10**6)])
    if kind == 1:
        return rng.choice([0.1, -2.5e-7, 1e16, 1e300, float("nan"), float("inf"), float("-inf"), -0.0])
    if kind == 2:
        return "".join(rng.choice(_CHARACTERS) for _ in range(5))
    if kind == 3:
        return rng.choice([True, False, None])
    if kind in (4, 5, 6):
        return [_random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {f"k{i}é": _random_json(rng, depth + 1) for i in range(rng.randrange(4))}


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return [_finite(v) for v in value] if isinstance(value, list) else value


def _utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _has_float(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_has_float(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_float(v) for v in value)
    return isinstance(value, float)


def test_json_text_is_compact_json_of_the_same_value_whatever_the_value() -> None:
    rng = random.Random(7)
    exact = 0
    for _ in range(5000):
        value = _random_json(rng)
        text = json_text(value)
        # json.dumps tells true from 1, -0.0 from 0.0 and 1e16 from 10**16, where == does not
        assert json.dumps(json.loads(text)) == json.dumps(_finite(value)), value
        if not _has_float(value):  # floats are spelled differently by orjson and json (1e-7, 1e-07)
            exact += 1
            expected = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
            if not _utf8(expected):  # a lone surrogate: the whole text escaped
                expected = json.dumps(value, separators=(",", ":"))
            assert text == expected
    assert exact > 2500  # the exact comparison is not vacuous


def test_json_text_takes_what_orjson_refuses_deep_nesting_big_integers_surrogates() -> None:
    deep: Any = [float("nan"), 2**70]
    for _ in range(600):  # orjson stops at 255 levels; json.dumps goes to about 990
        deep = {"k": deep}
    assert json_text(deep) == '{"k":' * 600 + "[null,1180591620717411303424]" + "}" * 600
    assert json_text({"s": "\ud800é", 1: float("-inf")}) == '{"s":"\\ud800\\u00e9","1":null}'
    assert json_text(json.loads("[1e400, -1e400]")) == "[null,null]"


def test_nested_json_text_keeps_big_integers_exactly_and_writes_nan_as_null() -> None:
    records = JsonRecords("s/x", nested="json", on_conflict="quarantine")
    rows = [
        {"id": 1, "obj": {"big": 2**70, "nan": float("nan"), "name": "Zoë"}},
        {"id": 2, "obj": {"lone": "\ud800"}},  # a "\ud800" escape, as simplejson reads it
    ]
    table = records.convert(rows, "p")
    assert table.column("obj").to_pylist() == [
        '{"big":1180591620717411303424,"nan":null,"name":"Zoë"}',
        '{"lone":"\\ud800"}',
    ]
    assert records.rejected == []


def test_an_empty_object_no_record_gives_a_field_is_null_and_the_page_writes_to_parquet(tmp_path: Path) -> None:
    """``{}`` alone in a column (at any depth) became a struct without fields, which Parquet cannot write: a
    REST, HTML or JSON-file landing failed on every run. Such an object is null, and so is an object whose
    every field is null on the page (``{"a": {}}``: its fields are left out, see
    ``without_null_fields``); beside an object with fields it is that object's fields, null."""
    records = JsonRecords("s/x", primary_key=["id"])
    table = records.convert(
        [{"id": 1, "meta": {}, "tags": [{}, {"a": {}}]}, {"id": 2, "meta": None, "tags": [{"a": {}}]}], "page 1"
    )
    pq.write_table(table, tmp_path / "page.parquet")
    assert pq.read_table(tmp_path / "page.parquet").to_pylist() == [
        {"id": 1, "meta": None, "tags": [None, None]},
        {"id": 2, "meta": None, "tags": [None]},
    ]
    later = records.convert([{"id": 3, "meta": {"source": "web"}}, {"id": 4, "meta": {}}], "page 2")
    assert later.column("meta").to_pylist() == [{"source": "web"}, {"source": None}]
    alone = records.convert([{"id": 5, "meta": {}}], "page 3")  # the column is a struct now: as beside one
    assert alone.column("meta").to_pylist() == [{"source": None}]
