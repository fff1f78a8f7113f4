"""Delete detection without a change log (``delete_missing``), on chinook in SQLite.

Rows deleted at the source leave the warehouse, exactly those; every count and check agrees; a
key deleted and inserted again comes back; a run with nothing deleted lands no tombstone.
"""

import shutil
import sqlite3
from pathlib import Path

import dagster as dg

from integration_platform.core.landing import list_manifests
from integration_platform.core.streams import StreamSpec
from integration_platform_tests.services import REPO
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
