"""Delete detection without a change log (``delete_missing``), on chinook in SQLite, and on keys of
PostgreSQL's and MariaDB's own types (real servers).

Rows deleted at the source leave the warehouse, exactly those; every count and check agrees; a
key deleted and inserted again comes back; a run with nothing deleted lands no tombstone.
"""

import shutil
import sqlite3
import uuid
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import duckdb
import psycopg
import pytest

from integration_platform.core.deletes import land_deletes
from integration_platform.core.extract import extract_and_land
from integration_platform.core.lake import LocalLake
from integration_platform.core.landing import list_manifests
from integration_platform.core.loading import load, pending
from integration_platform.core.streams import StreamSpec
from integration_platform.sources.sql.database import SqlDatabaseResource
from integration_platform_tests.services import (
    MARIADB_HOST,
    MARIADB_PORT,
    PG_HOST,
    PG_PORT,
    REPO,
    mariadb,
    psql,
    require_port,
)
from sandbox.harness import latest_metadata, platform

YAML = """
type: integration_platform.components.SqlSource
attributes:
  source: chinook
  url: "sqlite:///DATABASE"
  tables:
    - table: InvoiceLine
      primary_key: [InvoiceLineId]
      cursor: InvoiceLineId
      delete_missing: true
    - table: pairs
      primary_key: [a, b]
      cursor: updated
      delete_missing: true
"""
LINES, PAIRS = dg.AssetKey(["chinook", "invoice_line"]), dg.AssetKey(["chinook", "pairs"])


def checks_passed(result: dg.ExecuteInProcessResult) -> dict[tuple[str, str], bool]:
    return {
        (e.asset_check_evaluation_data.asset_key.path[-1], e.asset_check_evaluation_data.check_name): (
            e.asset_check_evaluation_data.passed
        )
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }


def test_rows_deleted_at_the_source_leave_the_warehouse_exactly(tmp_path: Path, instance: dg.DagsterInstance) -> None:
    database = tmp_path / "chinook.sqlite"
    shutil.copyfile(REPO / "sandbox" / "chinook" / "chinook.sqlite", database)
    with sqlite3.connect(database) as conn:
        conn.execute("CREATE TABLE pairs (a INTEGER, b TEXT, updated INTEGER, PRIMARY KEY (a, b))")
        conn.executemany("INSERT INTO pairs VALUES (?, ?, 1)", [(i % 500, f"k{i // 500}") for i in range(10_000)])
    target = platform(YAML.replace("DATABASE", str(database)), tmp_path, instance)
    assert target.materialize().success
    assert latest_metadata(instance, LINES)["rows_deleted_at_source"] == 0

    with sqlite3.connect(database) as conn:
        gone = [r[0] for r in conn.execute("SELECT InvoiceLineId FROM InvoiceLine WHERE InvoiceLineId % 61 = 0")]
        conn.execute("DELETE FROM InvoiceLine WHERE InvoiceLineId % 61 = 0")
        conn.execute("DELETE FROM pairs WHERE a = 7 AND b IN ('k1', 'k2')")  # composite keys
        conn.execute("UPDATE pairs SET updated = 2 WHERE a = 8")  # and incremental changes beside them
    result = target.materialize()
    assert result.success
    assert latest_metadata(instance, LINES)["rows_deleted_at_source"] == len(gone) == 36
    assert latest_metadata(instance, PAIRS)["rows_deleted_at_source"] == 2
    held = target.query('SELECT "InvoiceLineId" FROM chinook.invoice_line ORDER BY 1')
    assert [r[0] for r in held] == [i for i in range(1, 2241) if i not in gone]
    assert target.query("SELECT count(*), count(*) FILTER (WHERE updated = 2) FROM chinook.pairs")[0] == (9998, 20)
    assert target.query("SELECT count(*) FROM chinook.pairs WHERE a = 7 AND b IN ('k1', 'k2')") == [(0,)]
    assert latest_metadata(instance, LINES)["dagster/row_count"] == 2240 - 36
    checks = checks_passed(result)
    for table in ("chinook.invoice_line", "chinook.pairs"):
        for name in ("rows_reconcile_with_lake", "primary_key_unique_not_null", "rows_match_source"):
            assert checks[(table, name)], (table, name)

    # nothing deleted since: no tombstone landing; a deleted key inserted again comes back
    with sqlite3.connect(database) as conn:
        conn.execute("INSERT INTO pairs VALUES (7, 'k1', 3)")
    assert target.materialize().success
    assert latest_metadata(instance, PAIRS)["rows_deleted_at_source"] == 0
    assert target.query("SELECT updated FROM chinook.pairs WHERE a = 7 AND b = 'k1'") == [(3,)]
    spec = StreamSpec("chinook", "pairs", "merge", primary_key=("a", "b"), cursor="updated")
    tombstones = [m for m in list_manifests(target.store, spec) if m.extra.get("tombstones")]
    assert [m.rows for m in tombstones] == [2]


def deleted_after_one_delete(
    tmp_path: Path, url: str, run: Callable[[str], object], deleted: str
) -> tuple[int, list[str]]:
    """Land table ``t`` (key ``k``, cursor ``n``), delete the key ``deleted`` at the source (``run``
    executes SQL there), detect deletes; the tombstones landed and the keys the warehouse still holds."""
    db = SqlDatabaseResource(url=url)
    lake, conn = LocalLake(tmp_path / "lake"), duckdb.connect()
    spec = StreamSpec("s", "t", "merge", primary_key=("k",), cursor="n")
    try:
        extract_and_land(lake, spec, lambda f: db.read("t", None, f))
        run(f"DELETE FROM t WHERE k = {deleted}")
        tombstones = land_deletes(lake, spec, db.read_keys("t", None, ["k"]), "run-1")
        load(conn, lake, spec, pending(conn, lake, spec))
        held = [str(r[0]) for r in conn.execute("SELECT k::varchar FROM s.t ORDER BY 1").fetchall()]
    finally:
        db.dispose()
    return (tombstones.rows if tombstones else 0), held


@pytest.mark.parametrize(
    ("kind", "values", "deleted"),
    [
        ("inet", ["10.0.0.1", "::ffff:1.2.3.4", "2001:db8::1", "10.0.0.0/8"], "'2001:db8::1'"),
        ("timetz", ["10:00:00+02", "11:30:00-05:30", "10:00:00+03"], "'10:00:00+03'"),
        ("numeric", ["0.0000001", "1.5", "100", "2"], "2"),
        ("money", ["1.25", "1000.5", "2"], "2::money"),
    ],
)
def test_postgres_keys_of_its_own_types_are_not_taken_for_deleted(
    kind: str, values: list[str], deleted: str, tmp_path: Path
) -> None:
    """Before, the source's keys were read through SQLAlchemy's generic mapping while the rows landed
    through ADBC: ``10.0.0.1`` against the landed ``10.0.0.1/32`` (every row tombstoned), a ``timetz``
    without its zone, ``1E-7`` against ``0.0000001``, and ``$1.25`` failed the comparison."""
    require_port(PG_HOST, PG_PORT, "PostgreSQL")
    name = f"ip_test_deletes_{uuid.uuid4().hex[:8]}"
    psql("postgres", "-c", f"CREATE DATABASE {name}")
    try:
        with psycopg.connect(f"host={PG_HOST} port={PG_PORT} user=postgres dbname={name}", autocommit=True) as pg:
            pg.execute(f"CREATE TABLE t (k {kind} PRIMARY KEY, n int NOT NULL DEFAULT 1)")
            for value in values:
                pg.execute(f"INSERT INTO t (k) VALUES (%s::{kind})", (value,))
            url = f"postgresql+psycopg://postgres@{PG_HOST}:{PG_PORT}/{name}"
            tombstones, held = deleted_after_one_delete(tmp_path, url, lambda q: pg.execute(q.encode()), deleted)
    finally:
        psql("postgres", "-c", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    assert (tombstones, len(held)) == (1, len(values) - 1)


def test_mariadb_time_keys_are_not_taken_for_deleted(tmp_path: Path) -> None:
    """MariaDB's ``TIME`` (a duration) lands as its text (``25:00:00``); the keys were read as the
    driver's timedelta (``1 day, 1:00:00``), so such rows were tombstoned while still at the source."""
    require_port(MARIADB_HOST, MARIADB_PORT, "MariaDB")
    name = f"ip_test_deletes_{uuid.uuid4().hex[:8]}"
    mariadb(
        f"CREATE DATABASE `{name}`; USE `{name}`; CREATE TABLE t (k TIME PRIMARY KEY, n INT NOT NULL DEFAULT 1);"
        "INSERT INTO t (k) VALUES ('25:00:00'), ('-01:30:00'), ('10:00:00');"
    )
    try:
        url = f"mysql+pymysql://root@{MARIADB_HOST}:{MARIADB_PORT}/{name}"
        tombstones, held = deleted_after_one_delete(
            tmp_path, url, lambda q: mariadb(f"USE `{name}`; {q}"), "'10:00:00'"
        )
    finally:
        mariadb(f"DROP DATABASE IF EXISTS `{name}`")
    assert (tombstones, held) == (1, ["-01:30:00", "25:00:00"])
