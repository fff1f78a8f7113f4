"""A table name or a cursor value with quotes or SQL in it is data, never SQL, on every dialect."""

import sqlite3
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import dagster as dg
import psycopg
import pymysql
import pytest

from integration_platform_tests.services import (
    MARIADB_HOST,
    MARIADB_PORT,
    PG_HOST,
    PG_PORT,
    mariadb,
    psql,
    require_port,
)
from sandbox.harness import landed_rows, latest_metadata, platform

EVIL_TABLE = "evil\"'; DROP TABLE canary; --"
EVIL_CODES = ["a'); DROP TABLE canary; --", 'b"; DELETE FROM canary; --', "c' OR '1'='1"]
LATER_CODE = "z'; DROP TABLE canary; SELECT '"
YAML = """
type: integration_platform.components.SqlSource
attributes:
  source: injected
  url_env: INJECTION_URL
  tables:
    - table: "evil\\"'; DROP TABLE canary; --"
      name: evil
      primary_key: [id]
      cursor: code
"""

Execute = Callable[[str, tuple[Any, ...]], list[tuple[Any, ...]]]
Database = tuple[Execute, str]  # execute(sql, params), the evil table's quoted name


@pytest.fixture(params=["postgresql", "mariadb", "sqlite"])
def database(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Database]:
    """A database holding the evil table and a canary table; yields (execute, quoted table name)."""
    name = f"ip_test_inject_{uuid.uuid4().hex[:8]}"
    if request.param == "postgresql":
        require_port(PG_HOST, PG_PORT, "PostgreSQL")
        psql("postgres", "-c", f"CREATE DATABASE {name}")
        monkeypatch.setenv("INJECTION_URL", f"postgresql+psycopg://postgres@{PG_HOST}:{PG_PORT}/{name}")

        def run_pg(sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
            with psycopg.connect(f"host={PG_HOST} port={PG_PORT} user=postgres dbname={name}", autocommit=True) as c:
                cur = c.execute(sql.replace("?", "%s"), params)
                return cur.fetchall() if cur.description else []

        yield _prepared(run_pg, '"', '""')
        psql("postgres", "-c", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    elif request.param == "mariadb":
        require_port(MARIADB_HOST, MARIADB_PORT, "MariaDB")
        mariadb(f"CREATE DATABASE `{name}`")
        monkeypatch.setenv("INJECTION_URL", f"mysql+pymysql://root@{MARIADB_HOST}:{MARIADB_PORT}/{name}")

        def run_maria(sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
            conn = pymysql.connect(host=MARIADB_HOST, port=MARIADB_PORT, user="root", database=name, autocommit=True)
            try:
                with conn.cursor() as cur:
                    cur.execute(sql.replace("?", "%s"), params)
                    return list(cur.fetchall())
            finally:
                conn.close()

        yield _prepared(run_maria, "`", "``")
        mariadb(f"DROP DATABASE IF EXISTS `{name}`")
    else:
        path = tmp_path / "inject.sqlite"
        monkeypatch.setenv("INJECTION_URL", f"sqlite:///{path}")

        def run_sqlite(sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
            with sqlite3.connect(path) as conn:
                return conn.execute(sql, params).fetchall()

        yield _prepared(run_sqlite, '"', '""')


def _prepared(execute: Execute, quote: str, escaped: str) -> Database:
    table = quote + EVIL_TABLE.replace(quote, escaped) + quote
    execute("CREATE TABLE canary (id INTEGER)", ())
    execute("INSERT INTO canary VALUES (1)", ())
    execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, code VARCHAR(64), note VARCHAR(64))", ())
    for i, code in enumerate(EVIL_CODES, start=1):
        execute(f"INSERT INTO {table} VALUES (?, ?, ?)", (i, code, "x'y\"z"))
    return execute, table


def test_quotes_in_table_names_and_cursor_values_stay_data(
    database: Database, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    injected = platform(YAML, tmp_path, instance)
    first = injected.materialize()
    assert landed_rows(first)["injected/evil"] == 3
    mark = latest_metadata(instance, dg.AssetKey(["injected", "evil"]))["cursor_after"]
    assert mark == {"kind": "string", "text": EVIL_CODES[2]}

    execute, table = database
    execute(f"INSERT INTO {table} VALUES (?, ?, ?)", (4, LATER_CODE, "later"))
    second = injected.materialize()
    assert landed_rows(second)["injected/evil"] == 1, "the string cursor was compared, not executed"
    assert latest_metadata(instance, dg.AssetKey(["injected", "evil"]))["cursor_after"]["text"] == LATER_CODE
    third = injected.materialize()
    assert landed_rows(third)["injected/evil"] == 0, "the mark containing SQL was bound as a value"
    assert execute("SELECT count(*) FROM canary", ()) == [(1,)]
    rows = injected.query("SELECT id, code, note FROM injected.evil ORDER BY id")
    assert rows == [*[(i, c, "x'y\"z") for i, c in enumerate(EVIL_CODES, start=1)], (4, LATER_CODE, "later")]


COLUMN = "up`d \"at'"  # a backtick, a double and a single quote: each dialect's identifier quote among them
COLUMN_YAML = """
type: integration_platform.components.SqlSource
attributes:
  source: stamped
  url_env: INJECTION_URL
  tables:
    - table: stamped
      primary_key: [id]
      cursor: 'up`d "at'''
      delete_missing: true
"""


def test_a_column_named_with_quotes_and_backticks_lands_and_is_the_cursor(
    database: Database, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """SQLAlchemy's MySQL reflection kept a column name's backtick doubled as SHOW CREATE TABLE escapes it
    (``up``d``), so on MariaDB every read of such a table failed with "Unknown column"; the name is the
    column's own on every dialect."""
    execute, table = database
    quote = table[0]
    column = quote + COLUMN.replace(quote, quote * 2) + quote
    execute(f"CREATE TABLE stamped (id INTEGER PRIMARY KEY, {column} INTEGER)", ())
    execute("INSERT INTO stamped VALUES (1, 10), (2, 20)", ())
    stamped = platform(COLUMN_YAML, tmp_path, instance)
    assert landed_rows(stamped.materialize())["stamped/stamped"] == 2
    assert latest_metadata(instance, dg.AssetKey(["stamped", "stamped"]))["cursor_after"]["text"] == "20"
    execute("INSERT INTO stamped VALUES (3, 30)", ())
    execute("DELETE FROM stamped WHERE id = 1", ())
    assert landed_rows(stamped.materialize())["stamped/stamped"] == 1
    assert stamped.query("SELECT * EXCLUDE (_ip_window) FROM stamped.stamped ORDER BY id") == [(2, 20), (3, 30)]
    assert [c[0] for c in stamped.query("DESCRIBE stamped.stamped")][:2] == ["id", COLUMN]


def test_a_column_with_two_backticks_on_a_server_quoting_names_with_double_quotes(
    tmp_path: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In ``ANSI_QUOTES`` mode SHOW CREATE TABLE quotes names with ``"`` and leaves backticks alone: undoing a
    doubled backtick there made ``a``b`` into ``a`b`` and every read failed with "Unknown column"."""
    require_port(MARIADB_HOST, MARIADB_PORT, "MariaDB")
    name, column = f"ip_test_ansi_{uuid.uuid4().hex[:8]}", "a``b"
    mariadb(f"CREATE DATABASE `{name}`")
    try:
        mariadb(f"CREATE TABLE `{name}`.stamped (id INTEGER PRIMARY KEY, `a````b` INTEGER)")
        mariadb(f"INSERT INTO `{name}`.stamped VALUES (1, 10), (2, 20)")
        ansi = quote("SET sql_mode = 'ANSI_QUOTES'")
        monkeypatch.setenv(
            "INJECTION_URL", f"mysql+pymysql://root@{MARIADB_HOST}:{MARIADB_PORT}/{name}?init_command={ansi}"
        )
        yaml = COLUMN_YAML.replace("cursor: 'up`d \"at'''", f"cursor: '{column}'")
        stamped = platform(yaml, tmp_path, instance)
        assert landed_rows(stamped.materialize())["stamped/stamped"] == 2
        assert [c[0] for c in stamped.query("DESCRIBE stamped.stamped")][:2] == ["id", column]
    finally:
        mariadb(f"DROP DATABASE IF EXISTS `{name}`")
