"""The figures a warehouse materialisation shows, against what the load did to its DuckDB table.

``rows_loaded`` is the rows inserted (an upserted key once), never a tombstone of a row deleted at the
source; ``rows_deleted`` the rows those removed. A partition of a single-run backfill shows its own
rows, and the run's figures under names that say they are the run's.
"""

import sqlite3
from pathlib import Path

import dagster as dg

from sandbox.harness import latest_metadata, platform

SQLITE_YAML = """
type: integration_platform.components.SqlSource
attributes:
  source: shop
  url: "sqlite:///DATABASE"
  tables:
    - table: items
      primary_key: [id]
      cursor: updated
      delete_missing: true
    - table: sales
      primary_key: [id]
      partition: {column: sold_on, granularity: monthly, start: "2024-01-01", end: "2024-04-01"}
      write_disposition: merge
"""
ITEMS = dg.AssetKey(["warehouse", "shop.items"])
SALES_LAKE, SALES = dg.AssetKey(["shop", "sales"]), dg.AssetKey(["warehouse", "shop.sales"])


def _database(path: Path) -> Path:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, v TEXT, updated INTEGER)")
        conn.executemany("INSERT INTO items VALUES (?, 'a', 1)", [(i,) for i in range(1, 101)])
        conn.execute("CREATE TABLE sales (id INTEGER PRIMARY KEY, sold_on DATE, amount INTEGER)")
        days = ["2024-01-05", "2024-01-20", "2024-01-31", "2024-02-10", "2024-02-11"]
        conn.executemany("INSERT INTO sales VALUES (?, ?, 7)", list(enumerate(days, 1)))
    return path


def test_rows_deleted_at_the_source_are_not_counted_as_rows_loaded(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    database = _database(tmp_path / "shop.sqlite")
    p = platform(SQLITE_YAML.replace("DATABASE", str(database)), tmp_path, instance)
    lake, warehouse = dg.AssetKey(["shop", "items"]), ITEMS
    assert p.materialize([lake, warehouse]).success
    first = latest_metadata(instance, warehouse)
    assert (first["rows_loaded"], first["rows_deleted"]) == (100, 0)
    with sqlite3.connect(database) as conn:
        conn.execute("UPDATE items SET v = 'b', updated = 2 WHERE id <= 10")
        conn.execute("DELETE FROM items WHERE id > 95")
        conn.execute("INSERT INTO items VALUES (200, 'n', 2)")
    assert p.materialize([lake, warehouse]).success
    second = latest_metadata(instance, warehouse)
    written = p.query("SELECT count(*) FROM shop.items WHERE updated = 2")[0][0]
    assert written == 11  # the truth: 10 rows updated, 1 inserted
    assert second["landings_applied"] == 2  # the changed rows, and the tombstones of the 5 deleted
    # Before, rows_loaded was the landings' rows: 16, the 5 tombstones counted as loaded rows.
    assert (second["rows_loaded"], second["rows_deleted"]) == (written, 5)
    assert second["table_rows"] == p.query("SELECT count(*) FROM shop.items")[0][0] == 96
    assert p.materialize([lake, warehouse]).success  # nothing new: no row loaded, none deleted
    third = latest_metadata(instance, warehouse)
    assert (third["rows_loaded"], third["rows_deleted"], third["rows_per_second"]) == (0, 0, 0)


def _partition_figures(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str) -> dict[str, object]:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1
    ).records
    assert records, f"{key.to_user_string()} {partition} was not materialised"
    materialization = records[0].asset_materialization
    assert materialization is not None
    return {k: v.value for k, v in materialization.metadata.items()}


def test_each_partition_of_a_backfill_shows_its_own_loaded_rows(tmp_path: Path, instance: dg.DagsterInstance) -> None:
    database = _database(tmp_path / "shop.sqlite")
    p = platform(SQLITE_YAML.replace("DATABASE", str(database)), tmp_path, instance)
    tags = {"dagster/asset_partition_range_start": "2024-01-01", "dagster/asset_partition_range_end": "2024-03-01"}
    assert p.materialize([SALES_LAKE, SALES], tags=tags).success
    held = dict(p.query("SELECT strftime(sold_on, '%Y-%m-01'), count(*) FROM shop.sales GROUP BY ALL"))
    assert held == {"2024-01-01": 3, "2024-02-01": 2}
    for partition in ("2024-01-01", "2024-02-01", "2024-03-01"):
        figures = _partition_figures(instance, SALES, partition)
        truth = held.get(partition, 0)
        # Before, each partition showed the run's rows_loaded (5) and rate as its own, March too.
        assert figures["rows_loaded"] == figures["dagster/row_count"] == truth, (partition, figures)
        assert figures["rows_loaded_in_run"] == 5 and figures["landings_applied_in_run"] in (2, 3)
        assert "rows_per_second" not in figures and "rows_per_second_in_run" in figures


def test_partitions_landed_before_a_failing_one_are_materialised(tmp_path: Path, instance: dg.DagsterInstance) -> None:
    database = _database(tmp_path / "shop.sqlite")
    with sqlite3.connect(database) as conn:  # March holds a row without its key: that partition fails
        conn.execute("CREATE TABLE sales_copy (id INTEGER, sold_on DATE, amount INTEGER)")
        conn.execute("INSERT INTO sales_copy SELECT * FROM sales")
        conn.execute("INSERT INTO sales_copy VALUES (NULL, '2024-03-02', 1)")
        conn.execute("DROP TABLE sales")
        conn.execute("ALTER TABLE sales_copy RENAME TO sales")
    p = platform(SQLITE_YAML.replace("DATABASE", str(database)), tmp_path, instance)
    tags = {"dagster/asset_partition_range_start": "2024-01-01", "dagster/asset_partition_range_end": "2024-03-01"}
    result = p.materialize([SALES_LAKE, SALES], tags=tags, raise_on_error=False)
    assert not result.success
    manifests = tmp_path / "lake" / "shop" / "sales" / "_manifests"
    landed = sorted(f.name for f in manifests.glob("*.json"))
    assert landed == ["partition=2024-01-01.json", "partition=2024-02-01.json"]
    # Before, the lake held January and February but neither was materialised: the UI showed them
    # as never landed, with no figures.
    for partition, rows in (("2024-01-01", 3), ("2024-02-01", 2)):
        figures = _partition_figures(instance, SALES_LAKE, partition)
        assert figures["rows_landed"] == figures["dagster/row_count"] == rows, (partition, figures)
        assert "partition=2024-03-01" in str(figures["run_failed_at_another_partition"])
    march = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=SALES_LAKE, asset_partitions=["2024-03-01"]), limit=1
    ).records
    assert march == []  # the failing partition landed nothing, and shows nothing
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    error = failure.step_failure_data.error
    assert error is not None
    causes = []
    while error is not None:  # the step's error keeps its own cause: the partition's null key
        causes.append(error.cls_name)
        error = error.cause
    assert "NullKeyError" in causes, causes


def test_the_key_check_counts_null_keys_apart_from_duplicate_ones(tmp_path: Path, instance: dg.DagsterInstance) -> None:
    """An append stream lands rows without their key (the check reports them): three null ids and id 2
    twice are 3 null keys and 1 duplicate; keyed on (id, part), 3 null keys and none. Before, null-keyed
    rows were also counted as duplicates (``count(DISTINCT id)`` leaves nulls out; two ``(NULL, 1)`` were
    one distinct pair): 4 and 1 "duplicate keys", sending the reader after duplicates that were not there."""
    database = tmp_path / "events.sqlite"
    with sqlite3.connect(database) as conn:
        conn.execute("CREATE TABLE events (id INTEGER, part INTEGER, v TEXT)")
        conn.executemany(
            "INSERT INTO events VALUES (?, ?, 'x')", [(1, 1), (2, 1), (2, 2), (None, 1), (None, 1), (None, 2)]
        )
    yaml = f"""
type: integration_platform.components.SqlSource
attributes:
  source: log
  url: "sqlite:///{database}"
  tables:
    - {{table: events, primary_key: [id], write_disposition: append}}
    - {{table: pairs, primary_key: [id, part], write_disposition: append}}
"""
    with sqlite3.connect(database) as conn:
        conn.execute("CREATE TABLE pairs AS SELECT * FROM events")
    p = platform(yaml, tmp_path, instance)
    result = p.materialize()
    checks = {(e.asset_key.path[-1], e.check_name): e.metadata for e in result.get_asset_check_evaluations()}
    for table, duplicates in (("log.events", 1), ("log.pairs", 0)):  # id 2 twice; (2, 1) and (2, 2) differ
        figures = checks[(table, "primary_key_unique_not_null")]
        assert (figures["duplicate_keys"].value, figures["null_keys"].value) == (duplicates, 3), table
