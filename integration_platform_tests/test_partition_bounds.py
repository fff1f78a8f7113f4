"""A daily partition on a date or timestamp column holds exactly that day's rows, whatever the database's
time zone: the partition's UTC-aware window is compared as the column's own kind of value (real
PostgreSQL in Europe/Berlin and America/New_York, and SQLite through the SQLAlchemy path)."""

import datetime as dt
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import duckdb
import psycopg
import pytest

from integration_platform.assets.stream_assets import partitions_def
from integration_platform.core.extract import PartitionWindow, extract_and_land
from integration_platform.core.lake import LocalLake
from integration_platform.core.loading import load, pending
from integration_platform.core.streams import Partitioning, StreamSpec
from integration_platform.sources.sql.database import SqlDatabaseResource
from integration_platform_tests.services import PG_HOST, PG_PORT, psql, require_port

DAYS = ("2024-01-01", "2024-01-02", "2024-01-03")
#: id, a date, a timestamp without time zone, a timestamptz (UTC) each at the edges of its day
ROWS = [
    (1, "2024-01-01", "2024-01-01 00:00:00", "2024-01-01 00:00:00+00"),
    (2, "2024-01-01", "2024-01-01 23:59:59.999999", "2024-01-01 23:59:59.999999+00"),
    (3, "2024-01-02", "2024-01-02 00:00:00", "2024-01-02 00:00:00+00"),
    (4, "2024-01-03", "2024-01-03 12:00:00", "2024-01-03 23:30:00+00"),
]
#: the day each row is of, by its column (the timestamptz by its UTC day)
EXPECTED = {"2024-01-01": [1, 2], "2024-01-02": [3], "2024-01-03": [4]}


def windows(partitioning: Partitioning) -> list[PartitionWindow]:
    """The partitions' windows exactly as the lake asset makes them (UTC-aware datetimes)."""
    definition = partitions_def(partitioning)
    assert definition is not None
    out = []
    for key in DAYS:
        window = definition.time_window_for_partition_key(key)  # type: ignore[attr-defined]
        out.append(PartitionWindow(key, window.start.astimezone(dt.UTC), window.end.astimezone(dt.UTC)))
    return out


def partitions_of_each_row(tmp_path: Path, db: SqlDatabaseResource, column: str) -> dict[str, list[int]]:
    """Land the three daily partitions of ``column`` and load them; each partition's ids."""
    partitioning = Partitioning(column, "daily", DAYS[0], end="2024-01-04")
    spec = StreamSpec("s", f"t_{column}", "append", primary_key=("id",), partitioning=partitioning)
    lake, conn = LocalLake(tmp_path / column / "lake"), duckdb.connect()
    for window in windows(partitioning):
        extract_and_land(lake, spec, lambda f: db.read("t", None, f), partition=window)
    load(conn, lake, spec, pending(conn, lake, spec))
    held: dict[str, list[int]] = {}
    for window, row in conn.execute(f'SELECT _ip_window, id FROM s."t_{column}" ORDER BY id').fetchall():
        held.setdefault(window.removeprefix("partition="), []).append(row)
    return held


@pytest.fixture(params=["Europe/Berlin", "America/New_York"])
def postgres_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A scratch database whose sessions run in the parameter's time zone, with ``t`` holding ``ROWS``."""
    require_port(PG_HOST, PG_PORT, "PostgreSQL")
    name = f"ip_test_bounds_{uuid.uuid4().hex[:8]}"
    psql("postgres", "-c", f"CREATE DATABASE {name}")
    psql("postgres", "-c", f"ALTER DATABASE {name} SET timezone = '{request.param}'")
    with psycopg.connect(f"host={PG_HOST} port={PG_PORT} user=postgres dbname={name}", autocommit=True) as conn:
        conn.execute("CREATE DOMAIN day AS date")
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, d date, ts timestamp, tz timestamptz, dd day)")
        for row in ROWS:
            conn.execute("INSERT INTO t VALUES (%s, %s, %s, %s, %s)", (*row, row[1]))
    url = f"postgresql+psycopg://postgres@{PG_HOST}:{PG_PORT}/{name}"
    try:
        yield url
    finally:
        SqlDatabaseResource(url=url).dispose()
        psql("postgres", "-c", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_postgres_daily_partitions_hold_their_own_days(postgres_url: str, tmp_path: Path) -> None:
    """Before, the window was rendered ``'2024-01-02 00:00:00+00:00'::timestamptz``, and PostgreSQL compared
    a date or timestamp with it at the session zone's midnight: in Berlin the row of 2024-01-02 landed in
    the partition of 2024-01-01 and that of 2024-01-01 in none; in New York a timestamp's evening landed in
    the next day. A timestamptz column is still cut at UTC midnights."""
    db = SqlDatabaseResource(url=postgres_url)
    got = {column: partitions_of_each_row(tmp_path, db, column) for column in ("d", "ts", "tz", "dd")}
    assert got == dict.fromkeys(("d", "ts", "tz", "dd"), EXPECTED)


def test_sqlite_date_partitions_hold_their_own_days(tmp_path: Path) -> None:
    """Before, SQLite's DATE text ``'2024-01-02'`` was compared with the window bound as
    ``'2024-01-02 00:00:00.000000'``, a text after it: each day's rows landed in the day before."""
    path = tmp_path / "days.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, d DATE)")
        conn.executemany("INSERT INTO t VALUES (?, ?)", [(row[0], row[1]) for row in ROWS])
    db = SqlDatabaseResource(url=f"sqlite:///{path}")
    try:
        assert partitions_of_each_row(tmp_path, db, "d") == EXPECTED
    finally:
        db.dispose()
