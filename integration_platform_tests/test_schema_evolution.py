"""The one widening rule, for Arrow types and DuckDB types, and the loads that follow it."""

from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from integration_platform.core.conform import conform, known_schema
from integration_platform.core.lake import LocalLake
from integration_platform.core.landing import land, list_manifests
from integration_platform.core.loading import SchemaChangeError, _reconcile_types, load, pending
from integration_platform.core.records import JsonRecords
from integration_platform.core.schema_evolution import SQL_TYPES, WIDENINGS, sql_widened, widened
from integration_platform.core.streams import StreamSpec

pytestmark = pytest.mark.fast


@pytest.mark.parametrize(
    ("known", "new", "expected"),
    [
        (pa.int32(), pa.int64(), pa.int64()),
        (pa.int64(), pa.int32(), pa.int64()),  # a narrower value fits the known column
        (pa.int64(), pa.float64(), pa.float64()),
        (pa.float64(), pa.int64(), pa.float64()),
        (pa.int64(), pa.float32(), pa.float64()),  # float32 holds integers exactly only to 2^24
        (pa.uint8(), pa.int8(), pa.int16()),
        (pa.uint32(), pa.int64(), pa.int64()),
        (pa.null(), pa.string(), pa.string()),
        (pa.string(), pa.null(), pa.string()),
        (pa.string(), pa.large_string(), pa.large_string()),
        (pa.int64(), pa.uint64(), None),  # Arrow's permissive rule says int64 and loses values over 2^63
        (pa.int64(), pa.string(), None),
        (pa.bool_(), pa.int64(), None),
        (pa.date32(), pa.timestamp("us"), None),
        (pa.list_(pa.null()), pa.list_(pa.int64()), pa.list_(pa.int64())),
        (pa.list_(pa.int64()), pa.list_(pa.string()), None),
    ],
)
def test_widened_follows_the_one_table(known: pa.DataType, new: pa.DataType, expected: pa.DataType | None) -> None:
    assert widened(known, new) == expected


def test_structs_merge_field_by_field_known_fields_first() -> None:
    known = pa.struct([("a", pa.int64()), ("b", pa.string())])
    new = pa.struct([("c", pa.bool_()), ("a", pa.float64())])
    assert widened(known, new) == pa.struct([("a", pa.float64()), ("b", pa.string()), ("c", pa.bool_())])
    assert widened(known, pa.struct([("b", pa.int64())])) is None  # a conflict inside is a conflict


def test_the_sql_rule_is_the_arrow_rule_read_through_duckdb_names() -> None:
    for (known, new), wide in WIDENINGS.items():
        names = {kind: name for name, kind in SQL_TYPES.items()}
        if known in names and new in names:
            assert sql_widened(names[known], names[new]) == names[wide]
    assert sql_widened("BIGINT", "INTEGER") == "BIGINT"
    assert sql_widened("INTEGER", "VARCHAR") is None
    # DuckDB names the types as the rule does (what DESCRIBE prints for each Arrow type)
    conn = duckdb.connect()
    for name, kind in SQL_TYPES.items():
        probe = pa.table({"x": pa.array([1], type=kind)})
        assert conn.execute("DESCRIBE SELECT * FROM probe").fetchall()[0][1] == name, probe.schema


def test_records_files_and_loading_agree_on_int_then_double() -> None:
    records = JsonRecords("s")
    records.convert([{"x": 1}], "page 1")
    records.convert([{"x": 2.5}], "page 2")
    assert records.schema.field("x").type == pa.float64()
    conformed, known = conform(pa.table({"x": [2.5]}), pa.schema([("x", pa.int64())]), "file.csv")
    assert known.field("x").type == pa.float64() and conformed.changes
    conformed, known = conform(pa.table({"x": [3]}), known, "later.csv")  # an int file keeps the double column
    assert known.field("x").type == pa.float64() and not conformed.changes


def test_loading_keeps_a_double_column_for_integer_landings(tmp_path: Path) -> None:
    store = LocalLake(tmp_path / "lake")
    spec = StreamSpec(source="s", name="t", write_disposition="append")
    conn = duckdb.connect(str(tmp_path / "w.duckdb"))
    for window, table in [("w1", pa.table({"x": [1.5]})), ("w2", pa.table({"x": [2]}))]:
        land(store, spec, window, table.to_batches(), table.schema, full=False)
        load(conn, store, spec, pending(conn, store, spec))
    assert conn.execute("SELECT x FROM s.t ORDER BY x").fetchall() == [(1.5,), (2.0,)]
    assert conn.execute("DESCRIBE s.t").fetchall()[0][1] == "DOUBLE"


def test_a_file_that_changes_nothing_keeps_the_known_schema_object() -> None:
    known = pa.schema([("day", pa.string()), ("cases", pa.int64()), ("note", pa.string())])
    file = pa.table({"cases": pa.array([3, None]), "day": ["2020-02-24", "2020-02-25"], "note": pa.nulls(2)})
    result, schema = conform(file, known, "a.csv")
    assert schema is known and result.table.schema.equals(known) and not result.changes
    assert result.table.to_pydict() == {"day": ["2020-02-24", "2020-02-25"], "cases": [3, None], "note": [None, None]}
    # a new column, a widening or a declared type changes it, each alone: a new schema, the known one untouched
    extra, schema = conform(pa.table({"cases": [1], "extra": [True]}), known, "b.csv")
    assert schema.names == ["day", "cases", "note", "extra"] and extra.table.schema.equals(schema)
    wider, schema = conform(pa.table({"cases": [1.5]}), known, "c.csv")
    assert schema is not known and schema.field("cases").type == pa.float64() and wider.table.schema.equals(schema)
    assert known.field("cases").type == pa.int64()
    _, declared = conform(file, known, "a.csv", declared={"cases": pa.float64()})
    assert declared is not known and declared.field("cases").type == pa.float64()
    # a known schema with a NOT NULL field or metadata is not handed on: the file's nulls would break the writer
    strict = pa.schema([pa.field("day", pa.string(), nullable=False), ("cases", pa.int64())], metadata={"m": "1"})
    kept, schema = conform(pa.table({"cases": [1]}), strict, "d.csv")
    assert schema is not strict and schema.field("day").nullable and schema.metadata is None
    assert kept.table.to_pydict() == {"day": [None], "cases": [1]}


def test_a_file_with_two_columns_of_one_name_is_refused_naming_both() -> None:
    twice = pa.Table.from_arrays([pa.array([1]), pa.array([2])], names=["a", "a"])
    with pytest.raises(ValueError, match=r"twice.csv: column names \['a'\] appear more than once"):
        conform(twice, None, "twice.csv")


def test_the_known_schema_read_back_from_a_landing_is_names_and_types_only(tmp_path: Path) -> None:
    spec = StreamSpec(source="s", name="t", write_disposition="append")
    strict = pa.schema([pa.field("id", pa.int64(), nullable=False, metadata={"k": "v"})], metadata={"m": "1"})
    store = LocalLake(tmp_path)
    land(store, spec, "full", [pa.record_batch({"id": [1]}, schema=strict)], strict, full=True)
    known = known_schema(list_manifests(store, spec))
    assert known is not None and known.equals(pa.schema([("id", pa.int64())]), check_metadata=True)
    assert known.field("id").nullable and known.metadata is None


@pytest.mark.parametrize("together", [False, True], ids=["two loads", "one load"])
def test_a_column_whose_name_changes_case_is_widened_not_cast(tmp_path: Path, together: bool) -> None:
    """DuckDB matches names without case: ``amount`` (DOUBLE) inserts into ``Amount`` (BIGINT). The types were
    compared by exact name, so nothing widened and the insert rounded 2.75 to 3 without a word."""
    store = LocalLake(tmp_path / "lake")
    spec = StreamSpec(source="s", name="sales", write_disposition="append")
    conn = duckdb.connect(str(tmp_path / "w.duckdb"))
    changes = []
    landings = [("a", pa.table({"id": [1], "Amount": [10]})), ("b", pa.table({"id": [2], "amount": [2.75]}))]
    for window, table in landings:
        land(store, spec, window, table.to_batches(), table.schema, full=False)
        if not together:
            changes += load(conn, store, spec, pending(conn, store, spec)).schema_changes
    if together:
        changes += load(conn, store, spec, pending(conn, store, spec)).schema_changes
    assert conn.execute("SELECT id, amount FROM s.sales ORDER BY id").fetchall() == [(1, 10.0), (2, 2.75)]
    assert (
        dict(conn.execute("SELECT column_name, column_type FROM (DESCRIBE s.sales)").fetchall())["Amount"] == "DOUBLE"
    )
    assert changes == ([] if together else ["column amount: BIGINT -> DOUBLE"])  # one load creates the table DOUBLE


@pytest.mark.parametrize(
    ("known", "values", "bad"),
    [
        (pa.bool_(), pa.array([1, 2, 0], pa.int64()), [2]),  # 2 had landed as true
        (pa.date32(), pa.array([0, 86400 + 3600], pa.timestamp("s")), [2]),  # the time of day was dropped
        (pa.time32("s"), pa.array([3600], pa.timestamp("s")), [1]),  # the date was dropped
        (pa.int64(), pa.array(["10115", "01067", "+5", "-0"], pa.string()), [2, 3]),  # 01067 had become 1067
        (pa.float64(), pa.array(["08", "1.50", "-0.5"], pa.string()), [1]),  # 08 had become 8.0
        (pa.decimal128(10, 0), pa.array(["01067", "12345"], pa.string()), [1]),  # 01067 had become 1067
        (pa.int64(), pa.array([0, 86400], pa.timestamp("s")), [1, 2]),  # timestamps had landed as epoch seconds
        (pa.int64(), pa.array([18000], pa.date32()), [1]),  # failed with a bare ArrowNotImplementedError
        (pa.float64(), pa.array([3, 12345678901234567], pa.int64()), [2]),  # past 2**53: a bare ArrowInvalid
    ],
)
def test_a_value_a_days_cast_would_change_is_a_bad_row(known: pa.DataType, values: pa.Array, bad: list[int]) -> None:
    """A file whose column another day fixed the type of: a value the cast changes, or that the type has no
    way to hold, is a bad row (quarantined, naming file, row, column and value), not silently changed."""
    result, schema = conform(pa.table({"c": values}), pa.schema([("c", known)]), "day2.csv")
    assert schema.field("c").type == known
    assert [r.origin for r in result.rejected] == [f"day2.csv row {i}" for i in bad]
    assert all("column 'c': " in r.reason and f"is not {known}" in r.reason for r in result.rejected)
    assert result.table.num_rows == len(values) - len(bad)


@pytest.mark.parametrize(
    ("known", "values"),
    [
        (pa.timestamp("us"), pa.array(["2024-01-01 10:00:00"], pa.large_string())),
        (pa.date32(), pa.array(["2024-01-01"], pa.large_string())),
        (pa.large_string(), pa.array([0], pa.timestamp("us"))),
        (pa.string(), pa.array([36000], pa.time64("us"))),
        (pa.large_list(pa.int64()), pa.array([[1, 2]], pa.list_(pa.int32()))),
        (pa.struct([("a", pa.timestamp("s"))]), pa.array([{"a": "2024-01-01 00:00:00"}])),
        (pa.int64(), pa.array([5], pa.duration("s"))),
        (pa.int64(), pa.array([7], pa.int32())),
        (pa.timestamp("us", "UTC"), pa.array([0], pa.timestamp("s", "Europe/Berlin"))),
        (pa.decimal128(10, 3), pa.array(["1.5"], pa.string())),
        (pa.string(), pa.array(["x"], pa.dictionary(pa.int32(), pa.string()))),
    ],
)
def test_a_cast_that_keeps_every_value_lands_whole(known: pa.DataType, values: pa.Array) -> None:
    """The exactness check flags only values a cast changes: these casts keep every value, land whole
    and never raise (a first version of the check rejected text of another string type and raised on
    nested types)."""
    result, _ = conform(pa.table({"c": values}), pa.schema([("c", known)]), "day2.csv")
    assert result.rejected == [] and result.table.num_rows == len(values)
    assert result.table.schema.field("c").type == known


def test_a_file_with_two_spellings_of_a_known_name_keeps_both_columns() -> None:
    """A file's only ``amount`` is the known ``Amount``; a file with ``amount`` and ``AMOUNT`` keeps both (mapped
    onto the known column, one of them lost its values in silence)."""
    known = pa.schema([("Amount", pa.int64())])
    one, _ = conform(pa.table({"amount": [1]}), known, "one.csv")
    assert one.table.to_pylist() == [{"Amount": 1}]
    two, schema = conform(pa.table({"amount": [1, 2], "AMOUNT": [10, 20]}), known, "two.csv")
    assert schema.names == ["Amount", "amount", "AMOUNT"]
    assert two.table.to_pylist() == [
        {"Amount": None, "amount": 1, "AMOUNT": 10},
        {"Amount": None, "amount": 2, "AMOUNT": 20},
    ]


def test_a_struct_gaining_or_losing_a_field_and_a_list_widening_load(tmp_path: Path) -> None:
    """An API's nested object gains a field in one run and lacks another in the next, its list of numbers
    turns to doubles: each run lands its own types (JSON records keep no schema across runs), and the
    warehouse merges them by the one rule, field by field, loaded one at a time or together. Before,
    every load after the first failed (``STRUCT(city VARCHAR)`` but the landing brings ``STRUCT(city
    VARCHAR, zip VARCHAR)``) until a full refresh, which the next run's landing failed again."""
    store = LocalLake(tmp_path / "lake")
    spec = StreamSpec(source="s", name="t", write_disposition="append")
    conn = duckdb.connect(str(tmp_path / "w.duckdb"))
    landings = [
        [{"id": 1, "address": {"city": "Oslo"}, "tags": [1, 2]}],
        [{"id": 2, "address": {"city": "Rome", "zip": "00100"}, "tags": [2.5]}],
        [{"id": 3, "address": {"zip": "75001", "geo": {"lat": 48.8}}, "tags": [3]}],
    ]
    for number, records in enumerate(landings):
        table = pa.Table.from_pylist(records)
        land(store, spec, f"w{number}", table.to_batches(), table.schema, full=False)
        load(conn, store, spec, pending(conn, store, spec))
    rebuilt = duckdb.connect(str(tmp_path / "rebuilt.duckdb"))
    load(rebuilt, store, spec, pending(rebuilt, store, spec))
    for warehouse in (conn, rebuilt):
        assert warehouse.execute("SELECT id, address, tags FROM s.t ORDER BY id").fetchall() == [
            (1, {"city": "Oslo", "zip": None, "geo": None}, [1.0, 2.0]),
            (2, {"city": "Rome", "zip": "00100", "geo": None}, [2.5]),
            (3, {"city": None, "zip": "75001", "geo": {"lat": 48.8}}, [3.0]),
        ]
    kinds = dict(conn.execute("SELECT column_name, column_type FROM (DESCRIBE s.t)").fetchall())
    assert kinds["address"] == "STRUCT(city VARCHAR, zip VARCHAR, geo STRUCT(lat DOUBLE))"
    assert kinds["tags"] == "DOUBLE[]"
    clash = pa.table({"id": [4], "address": ["a text"]})  # a struct and a text still conflict, named
    land(store, spec, "w9", clash.to_batches(), clash.schema, full=False)
    with pytest.raises(SchemaChangeError, match="column 'address' is STRUCT"):
        load(conn, store, spec, pending(conn, store, spec))


def test_a_struct_whose_field_arrow_names_otherwise_is_not_widened_through_arrow(tmp_path: Path) -> None:
    """A struct holding a UUID (Arrow text) or a HUGEINT (an Arrow decimal) that gains a field is a
    conflict, named, rather than a struct whose UUID turned VARCHAR: widening goes through Arrow only for
    types that come back from it as they were."""
    conn = duckdb.connect()
    conn.execute("CREATE TABLE t AS SELECT {'u': uuid(), 'h': 1::HUGEINT} AS s")
    conn.execute("CREATE TEMP TABLE staged AS SELECT {'u': uuid(), 'h': 2::HUGEINT, 'n': 3} AS s")
    with pytest.raises(SchemaChangeError, match="column 's' is STRUCT"):
        _reconcile_types(conn, "t", "staged", "w2")
    assert conn.execute("SELECT column_type FROM (DESCRIBE t)").fetchone() == ("STRUCT(u UUID, h HUGEINT)",)


def test_a_struct_field_whose_name_changes_case_is_a_named_conflict(tmp_path: Path) -> None:
    """``{City}`` then ``{city}``: merged by Arrow as two fields, one to DuckDB, which refused the type with a
    bare ``Duplicate STRUCT type argument name``; it is the named conflict it was before nested widening."""
    conn = duckdb.connect()
    conn.execute("CREATE TABLE t AS SELECT {'City': 'Oslo'} AS address")
    conn.execute("CREATE TEMP TABLE staged AS SELECT {'city': 'Rome'} AS address")
    with pytest.raises(SchemaChangeError, match="column 'address' is STRUCT"):
        _reconcile_types(conn, "t", "staged", "w2")
    assert conn.execute("SELECT column_type FROM (DESCRIBE t)").fetchone() == ("STRUCT(City VARCHAR)",)
