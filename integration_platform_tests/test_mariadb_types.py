"""MariaDB types through the generic path land faithfully (a real MariaDB server): unsigned
integers in a type that holds their range, SET in declaration order every time, spatial columns
as standard WKB, TIME as the duration it is; a zero date fails naming its column."""

import datetime as dt
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pytest
import sqlalchemy as sa

from integration_platform.core.cursors import CursorValue
from integration_platform.core.extract import extract_and_land
from integration_platform.core.lake import LocalLake
from integration_platform.core.loading import load, pending
from integration_platform.core.streams import StreamSpec
from integration_platform.resources.sql_sessions import utc_sessions
from integration_platform.sources.sql.database import SqlDatabaseResource
from integration_platform.sources.sql.sa_arrow import engine_for
from integration_platform_tests.services import MARIADB_HOST, MARIADB_PORT, mariadb, require_port


@pytest.fixture
def database() -> Iterator[str]:
    require_port(MARIADB_HOST, MARIADB_PORT, "MariaDB")
    name = f"ip_test_types_{uuid.uuid4().hex[:8]}"
    mariadb(
        f"CREATE DATABASE `{name}`; USE `{name}`;"
        "CREATE TABLE t (id INT PRIMARY KEY, small SMALLINT UNSIGNED, tiny TINYINT UNSIGNED, medium MEDIUMINT UNSIGNED,"
        " plain INT UNSIGNED, big BIGINT UNSIGNED, signed_small SMALLINT, tags SET('red','green','blue'),"
        " place POINT, shape GEOMETRY, span TIME);"
        "INSERT INTO t VALUES (1, 40000, 255, 16777215, 4294967295, 18446744073709551615, -32768, 'blue,red',"
        " ST_GeomFromText('POINT(1 2)'), ST_GeomFromText('LINESTRING(0 0, 3 4)'), '-838:59:59'),"
        " (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '25:00:00');"
    )
    yield name
    mariadb(f"DROP DATABASE IF EXISTS `{name}`")


def test_unsigned_set_and_spatial_types_land_faithfully(database: str) -> None:
    db = SqlDatabaseResource(url=f"mysql+pymysql://root@{MARIADB_HOST}:{MARIADB_PORT}/{database}")
    try:
        table = db.read("t").read_all().sort_by("id")
    finally:
        db.dispose()
    types = {f.name: f.type for f in table.schema}
    assert types["small"] == pa.int32() and types["big"] == pa.uint64() and types["signed_small"] == pa.int16()
    first = table.to_pylist()[0]
    assert (first["small"], first["tiny"], first["medium"], first["plain"]) == (40000, 255, 16777215, 4294967295)
    assert first["big"] == 18446744073709551615 and first["signed_small"] == -32768
    assert first["tags"] == "red,blue"  # declaration order, the same in every process
    assert types["place"] == pa.binary() and types["shape"] == pa.binary()
    # WKB: byte order 1 (little endian), type 1 (point), x = 1.0, y = 2.0
    assert first["place"] == bytes.fromhex("0101000000000000000000f03f0000000000000040")
    assert first["shape"][:5] == bytes.fromhex("0102000000")  # a linestring
    assert table.to_pylist()[1]["tags"] is None and table.to_pylist()[1]["place"] is None
    # TIME is a duration up to 838 hours: as a time of day, 25:00:00 became 01:00
    assert table.column("span").to_pylist() == ["-838:59:59", "25:00:00"]


def test_a_zero_date_fails_naming_table_column_value_and_a_way_out(database: str) -> None:
    mariadb(f"USE `{database}`; CREATE TABLE z (id INT PRIMARY KEY, d DATE); INSERT INTO z VALUES (1, '0000-00-00');")
    db = SqlDatabaseResource(url=f"mysql+pymysql://root@{MARIADB_HOST}:{MARIADB_PORT}/{database}")
    try:
        with pytest.raises(ValueError) as failure:
            db.read("z").read_all()
    finally:
        db.dispose()
    assert "table z: column 'd': value '0000-00-00' does not fit date32" in str(failure.value)
    assert "NULLIF(column, '0000-00-00')" in str(failure.value)


def test_the_other_types_land_typed_or_as_their_text(database: str) -> None:
    mariadb(
        f"USE `{database}`; CREATE TABLE s (id INT PRIMARY KEY, ti TINYINT, mi MEDIUMINT, bi BIGINT, f FLOAT,"
        " db DOUBLE, dec_ DECIMAL(20,4), y YEAR, bt BIT(8), d DATE, dt DATETIME(3), ts TIMESTAMP NULL,"
        " e ENUM('a','b'), j JSON, ch CHAR(3), txt TEXT, bl BLOB, vb VARBINARY(4));"
        "INSERT INTO s VALUES (1, -128, -8388608, -9000000000, 1.5, 2.25, 12.3456, 2021, b'101', '2021-01-02',"
        " '2021-01-02 03:04:05.678', '2021-01-02 03:04:05', 'b', '{\"k\": [1]}', 'ab', 'x', 'blob', 'vb');"
    )
    db = SqlDatabaseResource(url=f"mysql+pymysql://root@{MARIADB_HOST}:{MARIADB_PORT}/{database}")
    try:
        table = db.read("s").read_all()
    finally:
        db.dispose()
    expected = {
        "ti": (pa.int64(), -128),
        "mi": (pa.int64(), -8388608),
        "bi": (pa.int64(), -9000000000),
        "f": (pa.float64(), 1.5),
        "db": (pa.float64(), 2.25),
        "dec_": (pa.decimal128(20, 4), Decimal("12.3456")),
        "y": (pa.string(), "2021"),
        "bt": (pa.string(), "5"),
        "d": (pa.date32(), dt.date(2021, 1, 2)),
        "dt": (pa.timestamp("us"), dt.datetime(2021, 1, 2, 3, 4, 5, 678000)),
        "ts": (pa.timestamp("us"), dt.datetime(2021, 1, 2, 3, 4, 5)),
        "e": (pa.string(), "b"),
        "j": (pa.string(), '{"k": [1]}'),
        "ch": (pa.string(), "ab"),
        "txt": (pa.string(), "x"),
        "bl": (pa.binary(), b"blob"),
        "vb": (pa.binary(), b"vb"),
    }
    row = table.to_pylist()[0]
    for column, (kind, value) in expected.items():
        assert (table.schema.field(column).type, row[column]) == (kind, value), column


def test_a_float_lands_as_the_single_precision_value_it_holds(database: str) -> None:
    """MariaDB sends a FLOAT as text of 6 significant digits: 16777216 landed as 16777200, 123456.7 as 123457,
    1.2345678 as 1.23457 (and the binlog, exact, disagreed with the snapshot). It lands as the stored value."""
    mariadb(
        f"USE `{database}`; CREATE TABLE fl (id INT PRIMARY KEY, f FLOAT, fu FLOAT(10, 2) UNSIGNED);"
        "INSERT INTO fl VALUES (1, 16777216, 1.5), (2, 123456.7, NULL), (3, 1.2345678, 99999999.99), (4, -1.3, 0);"
    )
    db = SqlDatabaseResource(url=f"mysql+pymysql://root@{MARIADB_HOST}:{MARIADB_PORT}/{database}")
    try:
        table = db.read("fl").read_all().sort_by("id")
    finally:
        db.dispose()
    assert table.schema.field("f").type == pa.float64()
    assert table.column("f").to_pylist() == [float(np.float32(v)) for v in (16777216, 123456.7, 1.2345678, -1.3)]
    assert table.column("fu").to_pylist() == [1.5, None, float(np.float32(99999999.99)), 0.0]


def test_a_bigint_unsigned_cursor_above_2_63_keeps_running(database: str, tmp_path: Path) -> None:
    """``BIGINT UNSIGNED`` lands as uint64; once the mark passed 2**63, every run after failed with a bare
    ``OverflowError`` (naming no stream, column or value) while filtering the rows already landed."""
    mariadb(
        f"USE `{database}`; CREATE TABLE u (id BIGINT UNSIGNED PRIMARY KEY, note VARCHAR(10));"
        "INSERT INTO u VALUES (9223372036854775807, 'a'), (9223372036854775808, 'b');"
    )
    db = SqlDatabaseResource(url=f"mysql+pymysql://root@{MARIADB_HOST}:{MARIADB_PORT}/{database}")
    lake, conn = LocalLake(tmp_path / "lake"), duckdb.connect(str(tmp_path / "w.duckdb"))
    spec = StreamSpec("my", "u", "append", cursor="id")
    mark: CursorValue | None = None
    landed = []
    try:
        for insert in ("", "INSERT INTO u VALUES (18446744073709551615, 'c');", ""):
            if insert:
                mariadb(f"USE `{database}`; {insert}")
            extraction = extract_and_land(lake, spec, lambda f: db.read("u", None, f), cursor_before=mark)
            load(conn, lake, spec, pending(conn, lake, spec))
            mark = extraction.cursor_after
            landed.append(extraction.manifest.rows)
    finally:
        db.dispose()
    assert mark == CursorValue("int", "18446744073709551615")
    assert landed == [2, 1, 0]
    assert conn.execute("SELECT id::varchar, note FROM my.u ORDER BY id").fetchall() == [
        ("9223372036854775807", "a"),
        ("9223372036854775808", "b"),
        ("18446744073709551615", "c"),
    ]


def test_set_and_enum_members_with_backslashes_and_quotes_land_as_they_are(database: str) -> None:
    """SQLAlchemy reflects SET and ENUM members from SHOW CREATE TABLE, which writes a backslash doubled
    (``'a\\\\b'``): a SET member with one was silently left out of the landed value (``c`` for ``a\\b,c``), and
    an ENUM value with one failed the read with a LookupError naming neither table nor column."""
    mariadb(
        f"USE `{database}`; CREATE TABLE odd (id INT PRIMARY KEY, s SET('a\\\\b', 'it''s', 'c'),"
        " e ENUM('x\\\\y', 'q''t', 'z'));"
        "INSERT INTO odd VALUES (1, 'c,it''s,a\\\\b', 'x\\\\y'), (2, 'c', 'q''t');"
    )
    db = SqlDatabaseResource(url=f"mysql+pymysql://root@{MARIADB_HOST}:{MARIADB_PORT}/{database}")
    try:
        rows = db.read("odd").read_all().sort_by("id").to_pylist()
    finally:
        db.dispose()
    assert rows == [{"id": 1, "s": "a\\b,it's,c", "e": "x\\y"}, {"id": 2, "s": "c", "e": "q't"}]


def test_every_engine_reading_mariadb_reads_timestamp_in_utc(database: str) -> None:
    """The pooled engines and an HTTP sync's own engine (``utc_sessions``) both set the session's time zone:
    the sync's alone had read a ``TIMESTAMP`` cursor as the server's wall-clock time."""
    url = f"mysql+pymysql://root@{MARIADB_HOST}:{MARIADB_PORT}/{database}"
    engines = [engine_for(url), utc_sessions(sa.create_engine(url))]
    for engine in engines:
        with engine.connect() as conn:
            conn.exec_driver_sql("SET @@session.time_zone = '+05:00'")  # gone with a new connection
        engine.dispose()
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT @@session.time_zone").scalar() == "+00:00"
    plain = sa.create_engine(url)
    with plain.connect() as conn:
        assert conn.exec_driver_sql("SELECT @@session.time_zone").scalar() != "+00:00"
    plain.dispose()
