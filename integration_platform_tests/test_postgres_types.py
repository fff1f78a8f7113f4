"""PostgreSQL types through the ADBC path come out exact: numerics of every width, nulls, vendor types."""

import datetime as dt
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import dagster as dg
import duckdb
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from integration_platform.core.row_filter import RowFilter
from integration_platform.sources.sql.database import SqlDatabaseResource
from integration_platform_tests.services import PG_HOST, PG_PORT, psql, require_port
from sandbox.harness import latest_metadata, platform

VALUES = [
    (1, Decimal("-12345678901234.5678"), Decimal("-1234567890123456789012345678.0123456789"), Decimal("1e-20")),
    (2, None, None, None),
    (3, Decimal("0.0001"), Decimal("0.0000000001"), Decimal("123456789012345678901234567890")),
    (4, Decimal("99999999999999.9999"), Decimal("9999999999999999999999999999.9999999999"), Decimal("-7")),
    (5, Decimal("-0.0001"), Decimal("0"), Decimal("NaN")),
]


@pytest.fixture
def database() -> Iterator[str]:
    require_port(PG_HOST, PG_PORT, "PostgreSQL")
    name = f"ip_test_types_{uuid.uuid4().hex[:8]}"
    psql("postgres", "-c", f"CREATE DATABASE {name}")
    with psycopg.connect(f"host={PG_HOST} port={PG_PORT} user=postgres dbname={name}", autocommit=True) as conn:
        conn.execute("CREATE DOMAIN money_amount AS numeric(10, 2)")
        conn.execute(
            "CREATE TABLE t (id int PRIMARY KEY, small numeric(18, 4), wide numeric(38, 10), free numeric,"
            " doc tsvector DEFAULT to_tsvector('simple', 'a quick test'), tags text[] DEFAULT '{x,y}',"
            " amount money_amount DEFAULT 12.34, huge numeric(100, 2) DEFAULT 1.5)"
        )
        for row in VALUES:
            conn.execute("INSERT INTO t (id, small, wide, free) VALUES (%s, %s, %s, %s)", row)
    yield name
    psql("postgres", "-c", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_numerics_are_exact_decimals_and_vendor_types_are_text(database: str) -> None:
    db = SqlDatabaseResource(url=f"postgresql+psycopg://postgres@{PG_HOST}:{PG_PORT}/{database}")
    table = db.read("t").read_all().sort_by("id")
    assert table.schema.field("small").type == pa.decimal128(18, 4)
    assert table.schema.field("wide").type == pa.decimal128(38, 10)
    assert table.schema.field("free").type == pa.string(), "unconstrained numeric keeps every digit as text"
    assert table.schema.field("doc").type == pa.string()
    assert table.column("small").to_pylist() == [v[1] for v in VALUES]
    assert table.column("wide").to_pylist() == [v[2] for v in VALUES]
    assert table.column("free").to_pylist()[1:3] == [None, "123456789012345678901234567890"]
    assert table.column("free").to_pylist()[4] == "NaN", "PostgreSQL's text (the driver wrote 'nan')"
    assert table.column("doc").to_pylist()[0] == "'a':1 'quick':2 'test':3"
    assert table.column("tags").to_pylist()[0] == ["x", "y"]
    assert table.schema.field("amount").type == pa.decimal128(10, 2), "a domain's precision is the domain's"
    assert table.column("amount").to_pylist()[0] == Decimal("12.34")
    assert table.schema.field("huge").type == pa.string(), "beyond Arrow's 76 digits numeric stays text"
    assert table.column("huge").to_pylist()[0] == "1.50"
    filtered = db.read("t", None, RowFilter("id", lower=3, upper=5)).read_all()
    assert sorted(filtered.column("id").to_pylist()) == [3, 4]
    sliced = db.read("t", None, RowFilter("small", lower=Decimal("-1"), upper=Decimal("1"))).read_all()
    assert sorted(sliced.column("small").to_pylist()) == [Decimal("-0.0001"), Decimal("0.0001")]


def test_a_value_a_decimal_cannot_hold_fails_naming_table_and_column(database: str) -> None:
    with psycopg.connect(f"host={PG_HOST} port={PG_PORT} user=postgres dbname={database}", autocommit=True) as conn:
        conn.execute("INSERT INTO t (id, small) VALUES (6, 'NaN')")
    db = SqlDatabaseResource(url=f"postgresql+psycopg://postgres@{PG_HOST}:{PG_PORT}/{database}")
    with pytest.raises(ValueError, match=r"\"t\" column 'small': cannot read numeric as decimal128\(18, 4\).*'nan'"):
        db.read("t").read_all()


def test_infinities_money_and_intervals_land_faithfully(tmp_path: Path) -> None:
    require_port(PG_HOST, PG_PORT, "PostgreSQL")
    name = f"ip_test_inf_{uuid.uuid4().hex[:8]}"
    psql("postgres", "-c", f"CREATE DATABASE {name}")
    try:
        with psycopg.connect(f"host={PG_HOST} port={PG_PORT} user=postgres dbname={name}", autocommit=True) as conn:
            conn.execute("CREATE TABLE t (id int, ts timestamp, tz timestamptz, d date, m money, iv interval)")
            conn.execute(
                "INSERT INTO t VALUES (1, 'infinity', 'infinity', 'infinity', 12.34, '1 year 2 mons 3 days 04:05:06'),"
                " (2, '-infinity', '-infinity', '-infinity', -5, '-3 hours'),"
                " (3, '2021-01-01 10:00', '2021-01-01 10:00+00', '2021-01-01', 0, NULL)"
            )
        db = SqlDatabaseResource(url=f"postgresql+psycopg://postgres@{PG_HOST}:{PG_PORT}/{name}")
        table = db.read("t").read_all().sort_by("id")
    finally:
        psql("postgres", "-c", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    assert table.column("m").to_pylist() == [Decimal("12.34"), Decimal("-5"), Decimal("0")]
    assert table.column("iv").to_pylist() == ["1 year 2 mons 3 days 04:05:06", "-03:00:00", None]
    pq.write_table(table, tmp_path / "t.parquet")  # what landing writes; DuckDB reads it back
    rows = duckdb.sql(
        f"SELECT ts::VARCHAR, tz::VARCHAR, d::VARCHAR FROM '{tmp_path / 't.parquet'}' ORDER BY id"
    ).fetchall()
    assert rows[:2] == [("infinity",) * 3, ("-infinity",) * 3]
    assert rows[2][0] == "2021-01-01 10:00:00" and rows[2][2] == "2021-01-01"


#: One column per type of PostgreSQL's data-types chapter, with a value; the sweep below checks
#: each lands either typed (TYPED) or as exactly PostgreSQL's own text form.
SWEEP_COLUMNS = """
 id int, i2 smallint, i8 bigint, r4 real, r8 double precision, num numeric(10,3), b boolean, vc varchar(5), tx text,
 by bytea, d date, t time, ttz timetz, ts timestamp, tstz timestamptz, iv interval, m money,
 e mood, pt point, ln line, lseg lseg, bx box, pth path, pg polygon, ci circle,
 inet_ inet, cidr_ cidr, mac macaddr, mac8 macaddr8, bits bit(4), vbits varbit(8),
 tsv tsvector, tsq tsquery, u uuid, x xml, j json, jb jsonb, arr int[], tarr text[], comp pair,
 rng int4range, drng daterange, mrng int4multirange, o oid, rc regclass, lsn pg_lsn
"""
SWEEP_VALUES = """
 1, -32768, 9223372036854775807, 1.5, 2.25e300, 12.345, true, 'hello', 'text',
 '\\xdeadbeef', '2021-01-02', '10:11:12.5', '10:11:12+02', '2021-01-02 03:04:05.678', '2021-01-02 03:04:05+00',
 '1 day 02:00', 9.99, 'happy', '(1,2)', '{1,-1,0}', '[(0,0),(1,1)]', '((0,0),(1,1))', '[(0,0),(1,1),(2,0)]',
 '((0,0),(1,1),(1,0))', '<(0,0),2>', '192.168.0.1/24', '10.0.0.0/8', '08:00:2b:01:02:03', '08:00:2b:01:02:03:04:05',
 B'1010', B'101', 'a quick fox', 'quick & fox', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '<a>x</a>', '{"k": [1, 2]}',
 '{"k": [1, 2]}', '{1,2,3}', '{"a","b c"}', '(1,"x y")', '[1,5)', '[2021-01-01,2021-02-01)', '{[1,3),[5,7)}',
 3000000000, 'sweep', '16/B374D848'
"""
TYPED = {
    "id": (pa.int32(), 1),
    "i2": (pa.int16(), -32768),
    "i8": (pa.int64(), 9223372036854775807),
    "r4": (pa.float32(), 1.5),
    "r8": (pa.float64(), 2.25e300),
    "num": (pa.decimal128(10, 3), Decimal("12.345")),
    "b": (pa.bool_(), True),
    "by": (pa.binary(), b"\xde\xad\xbe\xef"),
    "d": (pa.date32(), dt.date(2021, 1, 2)),
    "t": (pa.time64("us"), dt.time(10, 11, 12, 500000)),
    "ts": (pa.timestamp("us"), dt.datetime(2021, 1, 2, 3, 4, 5, 678000)),
    "tstz": (pa.timestamp("us", tz="UTC"), dt.datetime(2021, 1, 2, 3, 4, 5, tzinfo=dt.UTC)),
    "m": (pa.decimal128(30, 6), Decimal("9.99")),
    "arr": (pa.list_(pa.int32()), [1, 2, 3]),
    "tarr": (pa.list_(pa.string()), ["a", "b c"]),
    "comp": (pa.struct([("a", pa.int32()), ("b", pa.string())]), {"a": 1, "b": "x y"}),
    "o": (pa.int64(), 3000000000),  # unsigned 32-bit: an int32 turned it negative
}


def test_every_type_of_the_data_types_chapter_lands_typed_or_as_its_text() -> None:
    require_port(PG_HOST, PG_PORT, "PostgreSQL")
    name = f"ip_test_sweep_{uuid.uuid4().hex[:8]}"
    psql("postgres", "-c", f"CREATE DATABASE {name}")
    try:
        with psycopg.connect(f"host={PG_HOST} port={PG_PORT} user=postgres dbname={name}", autocommit=True) as conn:
            conn.execute("CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy'); CREATE TYPE pair AS (a int, b text)")
            conn.execute(f"CREATE TABLE sweep ({SWEEP_COLUMNS}); INSERT INTO sweep VALUES ({SWEEP_VALUES})")
            conn.execute("INSERT INTO sweep (id) VALUES (2)")  # every type NULL
            described = conn.execute("SELECT * FROM sweep LIMIT 0").description
            columns = [d.name for d in described or []]
            texts = conn.execute(
                f"SELECT {', '.join(f'{c}::text' for c in columns)} FROM sweep WHERE id = 1"
            ).fetchone()
        db = SqlDatabaseResource(url=f"postgresql+psycopg://postgres@{PG_HOST}:{PG_PORT}/{name}")
        table = db.read("sweep").read_all().sort_by("id")
    finally:
        psql("postgres", "-c", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    assert texts is not None and table.column_names == columns
    first, empty = table.to_pylist()
    for column, text in zip(columns, texts, strict=True):
        kind, value = TYPED.get(column, (pa.string(), text))
        assert table.schema.field(column).type == kind, column
        assert first[column] == value, column
        assert column == "id" or empty[column] is None, column


def test_database_comments_become_the_asset_and_column_descriptions(
    database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with psycopg.connect(f"host={PG_HOST} port={PG_PORT} user=postgres dbname={database}", autocommit=True) as conn:
        conn.execute("COMMENT ON TABLE t IS 'Amounts as the ledger books them.'")
        conn.execute("COMMENT ON COLUMN t.small IS 'Booked amount, 4 decimals.'")
    monkeypatch.setenv("COMMENTS_DB_URL", f"postgresql+psycopg://postgres@{PG_HOST}:{PG_PORT}/{database}")
    source = "type: integration_platform.components.SqlSource\nattributes:\n  source: ledger\n"
    source += "  url_env: COMMENTS_DB_URL\n  include: ['t']\n"
    with dg.instance_for_test() as instance:
        ledger = platform(source, tmp_path, instance)
        lake, warehouse = dg.AssetKey(["ledger", "t"]), dg.AssetKey(["warehouse", "ledger.t"])
        assert (
            ledger.defs.resolve_assets_def(lake).specs_by_key[lake].description == "Amounts as the ledger books them."
        )
        assert ledger.materialize([lake, warehouse]).success
        for key in (lake, warehouse):
            schema = latest_metadata(instance, key)["dagster/column_schema"]
            described = {c.name: c.description for c in schema.columns}
            assert described["small"] == "Booked amount, 4 decimals." and described["id"] is None, key


#: Arrays and composites: kept as list/struct where every element or field is one the driver renders
#: exactly, else PostgreSQL's own text (before, money was cents, oid negative, infinity year 290,000 BC,
#: uuid/timetz/inet raw bytes, int[][] flattened, and an interval inside failed the landing).
NESTED_DDL = """
 CREATE TYPE ip_pair AS (a int, b text);
 CREATE TYPE ip_money AS (a money);
 CREATE TYPE ip_deep AS (p ip_pair, d date);
 CREATE TYPE ip_holds_array AS (xs int[]);
 CREATE TYPE ip_kept AS (p ip_pair, j jsonb, by bytea);
 CREATE DOMAIN ip_ints AS int[];
 CREATE TABLE nested (
  id int PRIMARY KEY, ints int[], texts text[], floats float8[], flags bool[], chars char(3)[], blobs bytea[],
  pairs ip_pair[], kept ip_kept, dom ip_ints, md int[][], nums numeric[], moneys money[], uuids uuid[],
  ttzs timetz[], dates date[], stamps timestamp[], stamptzs timestamptz[], times time[], ivs interval[],
  oids oid[], inets inet[], xmls xml[], cm ip_money, deep ip_deep, holds ip_holds_array, civ ip_pair
 )
"""
NESTED_VALUES = """
 1, '{1,NULL,-3}', '{"a b","",NULL}', '{1.5,NaN,-Infinity}', '{t,f}', '{a,abc}', ARRAY['\\xdead'::bytea],
 ARRAY[ROW(1, 'x y')::ip_pair, NULL], ROW(ROW(2, 'q'), '{"k": [1]}', '\\x00ff')::ip_kept, '{4,5}',
 '{{1,2},{3,4}}', '{1.50,NaN,Infinity}', '{1.25}', '{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}', '{10:00+02}',
 '{2021-01-02,infinity}', '{"2021-01-02 03:04:05",-infinity}', '{infinity}', '{24:00}', '{"1 day"}',
 '{4000000000}', '{192.168.0.1/24}', ARRAY['<a/>'::xml], ROW(1.25)::ip_money, ROW(ROW(1, 'z'), 'infinity')::ip_deep,
 ROW('{1,2}')::ip_holds_array, NULL
"""
NESTED_TYPED = {
    "ints": (pa.list_(pa.int32()), [1, None, -3]),
    "texts": (pa.list_(pa.string()), ["a b", "", None]),
    "flags": (pa.list_(pa.bool_()), [True, False]),
    "chars": (pa.list_(pa.string()), ["a  ", "abc"]),
    "blobs": (pa.list_(pa.binary()), [b"\xde\xad"]),
    "pairs": (pa.list_(pa.struct([("a", pa.int32()), ("b", pa.string())])), [{"a": 1, "b": "x y"}, None]),
    "kept": (
        pa.struct([("p", pa.struct([("a", pa.int32()), ("b", pa.string())])), ("j", pa.string()), ("by", pa.binary())]),
        {"p": {"a": 2, "b": "q"}, "j": '{"k": [1]}', "by": b"\x00\xff"},
    ),
    "dom": (pa.list_(pa.int32()), [4, 5]),
    "civ": (pa.struct([("a", pa.int32()), ("b", pa.string())]), None),
}


@pytest.fixture
def nested_database() -> Iterator[str]:
    require_port(PG_HOST, PG_PORT, "PostgreSQL")
    name = f"ip_test_nested_{uuid.uuid4().hex[:8]}"
    psql("postgres", "-c", f"CREATE DATABASE {name}")
    with psycopg.connect(f"host={PG_HOST} port={PG_PORT} user=postgres dbname={name}", autocommit=True) as conn:
        conn.execute(NESTED_DDL)
        conn.execute(f"INSERT INTO nested VALUES ({NESTED_VALUES})")
    yield name
    psql("postgres", "-c", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_arrays_and_composites_are_lists_and_structs_only_where_every_value_is_exact(
    nested_database: str, tmp_path: Path
) -> None:
    with psycopg.connect(f"host={PG_HOST} port={PG_PORT} user=postgres dbname={nested_database}") as conn:
        described = conn.execute("SELECT * FROM nested LIMIT 0").description
        columns = [d.name for d in described or []]
        texts = conn.execute(f"SELECT {', '.join(f'{c}::text' for c in columns)} FROM nested").fetchone()
    db = SqlDatabaseResource(url=f"postgresql+psycopg://postgres@{PG_HOST}:{PG_PORT}/{nested_database}")
    table = db.read("nested").read_all()
    assert texts is not None and table.column_names == columns
    row = table.to_pylist()[0]
    for column, text in zip(columns, texts, strict=True):
        if column in ("id", "floats"):
            continue
        kind, value = NESTED_TYPED.get(column, (pa.string(), text))
        assert table.schema.field(column).type == kind, column
        assert row[column] == value, column
    floats = row["floats"]
    assert table.schema.field("floats").type == pa.list_(pa.float64())
    assert floats[0] == 1.5 and floats[1] != floats[1] and floats[2] == float("-inf")
    pq.write_table(table, tmp_path / "nested.parquet")  # an interval inside failed here, naming no column
    assert duckdb.sql(f"SELECT ivs FROM '{tmp_path / 'nested.parquet'}'").fetchone() == ('{"1 day"}',)


@pytest.mark.parametrize("column", ["ints", "dom"])
@pytest.mark.parametrize("value", ["'{{1,2},{3,4}}'", "'[0:2]={7,8,9}'"])
def test_an_array_a_list_cannot_hold_fails_naming_table_column_and_value(
    nested_database: str, column: str, value: str
) -> None:
    url = f"host={PG_HOST} port={PG_PORT} user=postgres dbname={nested_database}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"INSERT INTO nested (id, {column}) VALUES (2, '{{}}'), (3, NULL), (4, {value})")
    db = SqlDatabaseResource(url=f"postgresql+psycopg://postgres@{PG_HOST}:{PG_PORT}/{nested_database}")
    shown = value.strip("'").replace("{", r"\{").replace("[", r"\[").replace("]", r"\]")
    with pytest.raises(ValueError, match=rf"\"nested\" column '{column}': the array {shown} has more than one"):
        db.read("nested").read_all()
    fine = db.read("nested", None, RowFilter("id", lower=1, upper=4)).read_all().sort_by("id")  # empty, NULL pass
    assert fine.column(column).to_pylist()[1:] == [[], None]
