"""Incremental REST stream against datasette serving chinook: a real JSON API with cursor
pagination (``next`` / ``_next``), RFC 8288 ``Link`` headers and column filters."""

import shutil
import sqlite3
from pathlib import Path

import dagster as dg

from integration_platform_tests.rest_servers import datasette_server
from integration_platform_tests.services import REPO
from sandbox.harness import landed_rows, latest_metadata, platform

INVOICES = dg.AssetKey(["chinook_api", "invoices"])


def _yaml(url: str) -> str:
    return f"""
type: integration_platform.components.RestSource
attributes:
  source: chinook_api
  base_url: {url}
  streams:
    - name: invoices
      path: /chinook/Invoice.json
      params: {{_sort: InvoiceDate, _size: "50"}}
      records: rows
      primary_key: [InvoiceId]
      paginator: {{type: cursor, cursor_path: next, cursor_param: _next}}
      incremental: {{cursor: InvoiceDate, param: InvoiceDate__gte}}
    - name: customers
      path: /chinook/Customer.json
      params: {{_size: "25"}}
      records: rows
      primary_key: [CustomerId]
      paginator: {{type: link_header}}
"""


def _sqlite(db: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


def test_invoices_land_incrementally_by_invoice_date(tmp_path: Path, instance: dg.DagsterInstance) -> None:
    db = tmp_path / "chinook.db"
    shutil.copy(REPO / "sandbox" / "chinook" / "chinook.sqlite", db)
    with datasette_server(db) as server:
        p = platform(_yaml(server.url).replace("/chinook/", f"/{db.stem}/"), tmp_path, instance)
        first = p.materialize()
        mark = latest_metadata(instance, INVOICES)["cursor_after"]
        last_date = _sqlite(db, "SELECT max(InvoiceDate) FROM Invoice")[0][0]
        _sqlite(
            db,
            "INSERT INTO Invoice (InvoiceId, CustomerId, InvoiceDate, BillingCity, Total) VALUES "
            "(1001, 1, '2026-01-02 00:00:00', 'Oslo', 1.98), (1002, 2, '2026-01-03 00:00:00', 'Rome', 3.96), "
            f"(1003, 3, '{last_date}', 'Lyon', 0.99)",
        )
        second = p.materialize([INVOICES, dg.AssetKey(["warehouse", "chinook_api.invoices"])])
        after_second = latest_metadata(instance, INVOICES)
        third = p.materialize([INVOICES])
    assert first.success and second.success and third.success
    assert landed_rows(first)["chinook_api/invoices"] == 412
    assert mark == {"kind": "string", "text": last_date}
    # the second run asked from the mark on (>=), re-read the boundary rows and kept only new ones
    assert landed_rows(second)["chinook_api/invoices"] == 3
    assert after_second["rows_read"] > 3 and after_second["duplicates_dropped"] == after_second["rows_read"] - 3
    assert after_second["cursor_after"] == {"kind": "string", "text": "2026-01-03 00:00:00"}
    assert landed_rows(third)["chinook_api/invoices"] == 0
    assert p.query("SELECT count(*), count(DISTINCT InvoiceId) FROM chinook_api.invoices")[0] == (415, 415)
    source_total = _sqlite(db, "SELECT round(sum(Total), 2) FROM Invoice")[0][0]
    assert p.query("SELECT round(sum(Total), 2) FROM chinook_api.invoices")[0][0] == source_total
    # Link-header pagination: 59 customers in pages of 25
    assert p.query("SELECT count(DISTINCT CustomerId) FROM chinook_api.customers")[0][0] == 59
    assert latest_metadata(instance, dg.AssetKey(["chinook_api", "customers"]))["pages"] == 3
