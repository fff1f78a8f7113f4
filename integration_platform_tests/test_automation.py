"""Warehouse tables follow their lake asset through Dagster's declarative automation, evaluated by
Dagster itself (``evaluate_automation_conditions``) against the instance that recorded real runs over a
real SQLite database: a lake asset (or a back-filled day) materialised alone gets its warehouse load
requested; one already loaded in the same run, or not changed, does not."""

import sqlite3
from pathlib import Path

import dagster as dg
import pytest

from integration_platform.definitions import defs as code_location
from sandbox.harness import platform

YAML = """
type: integration_platform.components.SqlSource
attributes:
  source: shop
  url_env: AUTOMATION_DB_URL
  schedule: "*/5 * * * *"
  tables:
    - table: orders
      primary_key: [id]
      cursor: updated_at
    - table: order_events
      primary_key: [id]
      partition: {column: created_at, granularity: daily, start: "2024-01-01"}
"""

ORDERS, EVENTS = dg.AssetKey(["shop", "orders"]), dg.AssetKey(["shop", "order_events"])
WAREHOUSE_ORDERS = dg.AssetKey(["warehouse", "shop.orders"])
WAREHOUSE_EVENTS = dg.AssetKey(["warehouse", "shop.order_events"])


@pytest.fixture
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "shop.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, amount REAL, updated_at TIMESTAMP)")
        conn.execute("INSERT INTO orders VALUES (1, 9.5, '2024-01-02 10:00:00'), (2, 3.0, '2024-01-03 11:00:00')")
        conn.execute("CREATE TABLE order_events (id INTEGER PRIMARY KEY, kind TEXT, created_at TIMESTAMP)")
        conn.execute(
            "INSERT INTO order_events VALUES (1, 'placed', '2024-01-02 10:00:00'), (2, 'paid', '2024-01-02 12:00:00'),"
            " (3, 'placed', '2024-01-05 09:00:00')"
        )
    monkeypatch.setenv("AUTOMATION_DB_URL", f"sqlite:///{path}")
    return path


def requested(result: dg.EvaluateAutomationConditionsResult, key: dg.AssetKey) -> set[str | None]:
    """The partitions (``None`` for an unpartitioned asset) the evaluation requests for ``key``."""
    return set(result.get_requested_partitions(key))


def test_a_lake_asset_materialised_alone_gets_its_warehouse_load_requested(
    database: Path, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    shop = platform(YAML, tmp_path, instance)
    first = dg.evaluate_automation_conditions(defs=shop.defs, instance=instance)
    assert first.total_requested == 0  # nothing landed yet: nothing to follow

    assert shop.materialize([ORDERS]).success
    assert shop.materialize([EVENTS], partition_key="2024-01-02").success
    second = dg.evaluate_automation_conditions(defs=shop.defs, instance=instance, cursor=first.cursor)
    assert requested(second, WAREHOUSE_ORDERS) == {None}
    assert requested(second, WAREHOUSE_EVENTS) == {"2024-01-02"}  # a past day, not only the latest
    assert requested(second, ORDERS) == set() and requested(second, EVENTS) == set()

    # Loaded (as the requested run would): nothing more is requested until the lake changes again.
    assert shop.materialize([WAREHOUSE_ORDERS]).success
    assert shop.materialize([WAREHOUSE_EVENTS], partition_key="2024-01-02").success
    third = dg.evaluate_automation_conditions(defs=shop.defs, instance=instance, cursor=second.cursor)
    assert third.total_requested == 0

    # A run that lands and loads together leaves nothing for automation to do.
    assert shop.materialize([ORDERS, WAREHOUSE_ORDERS]).success
    fourth = dg.evaluate_automation_conditions(defs=shop.defs, instance=instance, cursor=third.cursor)
    assert fourth.total_requested == 0

    with sqlite3.connect(database) as conn:
        conn.execute("UPDATE orders SET amount = 10.0, updated_at = '2024-02-01 00:00:00' WHERE id = 1")
    assert shop.materialize([ORDERS]).success
    fifth = dg.evaluate_automation_conditions(defs=shop.defs, instance=instance, cursor=fourth.cursor)
    assert requested(fifth, WAREHOUSE_ORDERS) == {None} and requested(fifth, WAREHOUSE_EVENTS) == set()


def test_the_code_location_runs_the_automation_sensor_by_default() -> None:
    sensor = code_location().get_sensor_def("warehouse_follows_lake")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING


def test_a_scheduled_table_is_fresh_once_loaded_since_the_last_tick(
    database: Path, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """Dagster's freshness check on the warehouse table, run on its own: it fails before the table was
    loaded and passes once a load happened after the schedule's last tick minus its gap."""
    shop = platform(YAML, tmp_path, instance)
    check = dg.AssetCheckKey(WAREHOUSE_ORDERS, "freshness_check")
    assert check in {k for c in shop.defs.asset_checks or [] for k in c.check_keys}
    sensor = next(s for s in shop.defs.sensors or [] if s.name == "shop_refresh_freshness")
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED

    def verdict() -> bool:
        result = shop.materialize(dg.AssetSelection.checks(check))
        [evaluation] = result.get_asset_check_evaluations()
        return evaluation.passed

    assert verdict() is False  # never loaded: stale
    assert shop.materialize([ORDERS, WAREHOUSE_ORDERS]).success
    assert verdict() is True
