"""chinook in the real MariaDB through the generic SQLAlchemy path (server-side cursor -> Arrow)."""

from decimal import Decimal
from pathlib import Path
from typing import Any

import dagster as dg
import pymysql

from integration_platform_tests.services import MARIADB_HOST, MARIADB_PORT
from sandbox.harness import landed_rows, latest_metadata, platform

CHINOOK_YAML = """
type: integration_platform.components.SqlSource
attributes:
  source: chinook
  url_env: CHINOOK_MARIADB_URL
  include: ["*"]
  tables:
    - table: Invoice
      cursor: InvoiceDate
"""
COUNTS = {
    "album": 347,
    "artist": 275,
    "customer": 59,
    "employee": 8,
    "genre": 25,
    "invoice": 412,
    "invoice_line": 2240,
    "media_type": 5,
    "playlist": 18,
    "playlist_track": 8715,
    "track": 3503,
}


def maria(db: str, sql: str) -> list[tuple[Any, ...]]:
    conn = pymysql.connect(host=MARIADB_HOST, port=MARIADB_PORT, user="root", database=db, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return list(cur.fetchall())
    finally:
        conn.close()


def test_chinook_full_then_incremental_on_mariadb(
    chinook_mariadb: str, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    chinook = platform(CHINOOK_YAML, tmp_path, instance)
    first = chinook.materialize()
    assert first.success
    assert {k.split("/")[1]: v for k, v in landed_rows(first).items()} == COUNTS
    for table, rows in COUNTS.items():
        assert chinook.query(f"SELECT count(*) FROM chinook.{table}")[0][0] == rows
    track = latest_metadata(instance, dg.AssetKey(["chinook", "track"]))
    assert {c.name: c.type for c in track["dagster/column_schema"].columns}["UnitPrice"] == "decimal128(10, 2)"
    assert latest_metadata(instance, dg.AssetKey(["chinook", "invoice"]))["cursor_after"]["text"].startswith(
        "2025-12-22"
    )

    maria(
        chinook_mariadb,
        "INSERT INTO Invoice (InvoiceId, CustomerId, InvoiceDate, BillingCountry, Total) VALUES "
        "(1001, 1, '2026-01-05 10:00:00', 'Italy', 3.96), (1002, 2, '2026-01-06 11:30:00', 'Chile', 0.99)",
    )
    second = chinook.materialize()
    assert landed_rows(second)["chinook/invoice"] == 2
    source = maria(chinook_mariadb, "SELECT * FROM Invoice ORDER BY InvoiceId")
    warehouse = chinook.query("SELECT * EXCLUDE (_ip_window) FROM chinook.invoice ORDER BY InvoiceId")
    assert warehouse == source
    assert warehouse[-1][-1] == Decimal("0.99")
    assert all(e.passed for e in second.get_asset_check_evaluations())
    assert landed_rows(chinook.materialize())["chinook/invoice"] == 0
