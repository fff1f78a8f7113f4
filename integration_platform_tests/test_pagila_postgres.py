"""pagila in the real PostgreSQL -> lake -> DuckDB: full, incremental, partitioned, idempotent."""

from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import psycopg
import pytest

from integration_platform.core.landing import list_manifests
from integration_platform.core.streams import StreamSpec
from integration_platform.sources.sql.database import SqlDatabaseResource
from integration_platform_tests.services import PG_HOST, PG_PORT
from sandbox.harness import Platform, landed_rows, latest_metadata, platform

PAGILA_YAML = """
type: integration_platform.components.SqlSource
attributes:
  source: pagila
  url_env: PAGILA_URL
  schema_name: public
  include: ["*"]
  defaults: {cursor: last_update}
  tables:
    - table: payment
      partition: {column: payment_date, granularity: monthly, start: "2022-01-01"}
"""
TABLES = [
    "actor",
    "address",
    "category",
    "city",
    "country",
    "customer",
    "film",
    "film_actor",
    "film_category",
    "inventory",
    "language",
    "rental",
    "staff",
    "store",
]
PAYMENT_MONTHS = [f"2022-0{m}-01" for m in range(1, 8)]


def pg(db: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(f"host={PG_HOST} port={PG_PORT} user=postgres dbname={db}", autocommit=True) as conn:
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description else []


@pytest.fixture
def pagila(pagila_db: str, pagila_url: str, tmp_path: Path, instance: dg.DagsterInstance) -> Platform:
    return platform(PAGILA_YAML, tmp_path, instance)


def test_every_table_is_a_stream_with_kinds_checks_and_jobs(pagila: Platform) -> None:
    keys = {k.to_user_string() for k in pagila.defs.resolve_all_asset_keys()}
    for table in [*TABLES, "payment"]:
        assert f"pagila/{table}" in keys and f"warehouse/pagila.{table}" in keys
    assert not any("payment_p2022" in k for k in keys), "partitions of payment must not be streams"
    graph = pagila.defs.resolve_asset_graph()
    assert graph.get(dg.AssetKey(["pagila", "rental"])).kinds == {"postgres", "parquet"}
    assert graph.get(dg.AssetKey(["warehouse", "pagila.rental"])).pools == {"duckdb"}
    checks = {c.name for c in pagila.defs.resolve_asset_graph().asset_check_keys}
    assert {"primary_key_unique_not_null", "rows_reconcile_with_lake"} <= checks
    jobs = {j.name for j in pagila.defs.resolve_all_job_defs()}
    assert {"pagila_refresh", "pagila_monthly_partitions"} <= jobs
    schedules = {s.name for s in pagila.defs.schedules or []}
    assert len(schedules) == 2


def test_full_load_matches_source_counts(pagila: Platform, pagila_db: str) -> None:
    result = pagila.materialize()
    assert result.success
    landed = landed_rows(result)
    for table in TABLES:
        source_rows = pg(pagila_db, f'SELECT count(*) FROM "{table}"')[0][0]
        assert landed[f"pagila/{table}"] == source_rows, table
        assert pagila.query(f'SELECT count(*) FROM pagila."{table}"')[0][0] == source_rows, table
    assert all(e.passed for e in result.get_asset_check_evaluations())
    film = latest_metadata(pagila.instance, dg.AssetKey(["pagila", "film"]))
    columns = {c.name: c.type for c in film["dagster/column_schema"].columns}
    assert columns["rental_rate"] == "decimal128(4, 2)" and columns["fulltext"] == "string"
    assert film["cursor_after"]["kind"] == "timestamp" and film["bytes"] > 0
    warehouse_film = latest_metadata(pagila.instance, dg.AssetKey(["warehouse", "pagila.film"]))
    warehouse_columns = {c.name: c.type for c in warehouse_film["dagster/column_schema"].columns}
    assert warehouse_columns["rental_rate"] == "DECIMAL(4,2)" and warehouse_columns["special_features"] == "VARCHAR[]"


def test_partitioned_payment_backfill_is_idempotent(pagila: Platform, pagila_db: str) -> None:
    payment = [dg.AssetKey(["pagila", "payment"]), dg.AssetKey(["warehouse", "pagila.payment"])]
    for month in PAYMENT_MONTHS:
        assert pagila.materialize(payment, partition_key=month).success
    again = pagila.materialize(payment, partition_key="2022-03-01")
    assert again.success
    total = pg(pagila_db, "SELECT count(*) FROM payment")[0][0]
    assert pagila.query("SELECT count(*), count(DISTINCT payment_id) FROM pagila.payment")[0] == (total, total)
    march = pg(
        pagila_db, "SELECT count(*) FROM payment WHERE payment_date >= '2022-03-01' AND payment_date < '2022-04-01'"
    )
    assert landed_rows(again)["pagila/payment"] == march[0][0]
    by_month_source = dict(
        pg(pagila_db, "SELECT to_char(payment_date AT TIME ZONE 'UTC', 'YYYY-MM'), sum(amount) FROM payment GROUP BY 1")
    )
    by_month_duck = dict(
        pagila.query(
            "SELECT strftime(timezone('UTC', payment_date), '%Y-%m'), sum(amount) FROM pagila.payment GROUP BY 1"
        )
    )
    assert by_month_duck == by_month_source


def _source_rows(db: str, table: str, key: str) -> list[tuple[Any, ...]]:
    return pg(db, f'SELECT * FROM "{table}" ORDER BY {key}')


def _warehouse_rows(p: Platform, table: str, key: str) -> list[tuple[Any, ...]]:
    return p.query(f'SELECT * EXCLUDE (_ip_window) FROM pagila."{table}" ORDER BY {key}')


def test_incremental_lands_exactly_the_changed_rows(pagila: Platform, pagila_db: str) -> None:
    assert pagila.materialize().success
    pg(
        pagila_db,
        "UPDATE customer SET email = 'changed-' || customer_id || '@example.org' WHERE customer_id IN (1, 2, 3)",
    )
    pg(pagila_db, "UPDATE rental SET return_date = now() WHERE rental_id IN (11, 12)")
    pg(
        pagila_db,
        "INSERT INTO rental (rental_date, inventory_id, customer_id, staff_id) "
        "VALUES (now(), 1, 1, 1), (now(), 2, 2, 1)",
    )

    second = pagila.materialize()
    assert second.success
    landed = landed_rows(second)
    assert landed["pagila/customer"] == 3
    assert landed["pagila/rental"] == 4
    assert all(landed[f"pagila/{t}"] == 0 for t in TABLES if t not in ("customer", "rental"))
    assert _warehouse_rows(pagila, "customer", "customer_id") == _source_rows(pagila_db, "customer", "customer_id")
    assert _warehouse_rows(pagila, "rental", "rental_id") == _source_rows(pagila_db, "rental", "rental_id")
    assert all(e.passed for e in second.get_asset_check_evaluations()), [
        (e.asset_key, e.check_name, e.metadata) for e in second.get_asset_check_evaluations() if not e.passed
    ]

    third = pagila.materialize()
    assert set(landed_rows(third).values()) == {0}, "a run with no source changes lands nothing"
    # Landing nothing new, the lake asset still shows the rows the stream holds (updated rows once),
    # and its mark as a person reads it beside the machine form.
    rental = latest_metadata(pagila.instance, dg.AssetKey(["pagila", "rental"]))
    assert rental["rows_landed"] == 0
    assert rental["dagster/row_count"] == pg(pagila_db, "SELECT count(*) FROM rental")[0][0]
    assert rental["high_water_mark"] == rental["cursor_after"]["text"] != ""
    assert (
        pagila.query("SELECT count(*) FROM pagila.rental")[0][0] == pg(pagila_db, "SELECT count(*) FROM rental")[0][0]
    )


def test_lag_reads_late_rows_without_duplicating_boundary_rows(
    pagila: Platform, pagila_db: str, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    lagged = platform(
        PAGILA_YAML.replace("defaults: {cursor: last_update}", "defaults: {cursor: last_update, lag: 3600}"),
        tmp_path,
        instance,
    )
    actor = [dg.AssetKey(["pagila", "actor"]), dg.AssetKey(["warehouse", "pagila.actor"])]
    assert lagged.materialize(actor).success
    mark = latest_metadata(instance, actor[0])["cursor_after"]
    # A row committed late: its cursor value lies 10 minutes below the high-water mark.
    pg(
        pagila_db,
        "INSERT INTO actor (first_name, last_name, last_update) "
        "VALUES ('LATE', 'ROW', %s::timestamptz - interval '10 minutes')",
        (mark["text"],),
    )
    second = lagged.materialize(actor)
    metadata = latest_metadata(instance, actor[0])
    assert landed_rows(second)["pagila/actor"] == 1
    assert metadata["duplicates_dropped"] == 200, "the boundary rows were read again and dropped"
    assert metadata["cursor_after"] == mark, "a late row never moves the mark back"
    assert lagged.query("SELECT count(*), count(DISTINCT actor_id) FROM pagila.actor")[0] == (201, 201)


def test_full_refresh_from_run_config_replaces_the_table(pagila: Platform, pagila_db: str) -> None:
    actor = [dg.AssetKey(["pagila", "actor"]), dg.AssetKey(["warehouse", "pagila.actor"])]
    assert pagila.materialize(actor).success
    pg(pagila_db, "UPDATE actor SET first_name = 'X' WHERE actor_id = 5")
    assert landed_rows(pagila.materialize(actor))["pagila/actor"] == 1
    refresh = pagila.materialize(actor, run_config={"ops": {"pagila__actor": {"config": {"full_refresh": True}}}})
    assert landed_rows(refresh)["pagila/actor"] == 200
    actor_stream = StreamSpec(source="pagila", name="actor", write_disposition="append")
    windows = [m.window for m in list_manifests(pagila.store, actor_stream)]
    assert windows == ["initial"], "a full refresh supersedes every older landing"
    assert pagila.query("SELECT count(*) FROM pagila.actor")[0][0] == 200
    tagged = pagila.materialize(actor, tags={"integration_platform/full_refresh": "true"})
    assert landed_rows(tagged)["pagila/actor"] == 200


def test_asset_check_fails_when_the_warehouse_drifts(pagila: Platform) -> None:
    language = [dg.AssetKey(["pagila", "language"]), dg.AssetKey(["warehouse", "pagila.language"])]
    assert pagila.materialize(language).success
    with duckdb.connect(str(pagila.warehouse_path)) as conn:
        conn.execute("INSERT INTO pagila.language SELECT * FROM pagila.language WHERE language_id = 1")
    # The checks alone (the UI's "Execute checks"), against what is loaded: no load, the same verdicts.
    alone = pagila.materialize(dg.AssetSelection.checks_for_assets(language[1]))
    assert alone.get_asset_materialization_events() == []
    assert {e.check_name: e.passed for e in alone.get_asset_check_evaluations()} == {
        "primary_key_unique_not_null": False,
        "rows_reconcile_with_lake": False,
        "rows_match_source": False,
        "freshness_check": True,  # loaded a moment ago: fresh, however wrong its rows
    }
    result = pagila.materialize(language[1:])
    outcome = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert outcome == {
        "primary_key_unique_not_null": False,
        "rows_reconcile_with_lake": False,
        "rows_match_source": False,
        "freshness_check": True,
    }


def test_rows_deleted_at_the_source_are_reported_by_a_warning_check(pagila: Platform, pagila_db: str) -> None:
    """A cursor cannot see a deleted row: the lake and the table agree with each other, and only the check
    against the source's COUNT(*) says the table holds a row the source no longer has."""
    actor = [dg.AssetKey(["pagila", "actor"]), dg.AssetKey(["warehouse", "pagila.actor"])]
    pg(pagila_db, "INSERT INTO actor (first_name, last_name) VALUES ('GONE', 'SOON')")
    first = pagila.materialize(actor)
    assert {e.check_name: e.passed for e in first.get_asset_check_evaluations()}["rows_match_source"]
    pg(pagila_db, "DELETE FROM actor WHERE first_name = 'GONE'")
    second = pagila.materialize(actor)
    assert second.success and landed_rows(second)["pagila/actor"] == 0
    outcome = {e.check_name: e for e in second.get_asset_check_evaluations()}
    assert outcome["rows_reconcile_with_lake"].passed
    source = outcome["rows_match_source"]
    assert not source.passed and source.severity == dg.AssetCheckSeverity.WARN
    assert source.metadata["rows_not_at_source"].value == 1 and source.metadata["rows_at_source"].value == 200


def test_partitions_are_left_out_of_the_schema_the_search_path_names(pagila_db: str, pagila_url: str) -> None:
    """Without ``schema_name`` the tables listed are those of the connection's own schema (a role's or database's
    ``search_path``), and their partitions were looked up in ``public``: each partition of ``payment`` became a
    stream of its own beside ``payment``, every payment landing twice. They are left out as in ``public``."""
    pg(pagila_db, "ALTER SCHEMA public RENAME TO shop")
    pg(pagila_db, f"ALTER DATABASE {pagila_db} SET search_path = shop")
    database = SqlDatabaseResource(url=pagila_url)
    try:
        assert database.list_tables() == sorted([*TABLES, "payment"])
    finally:
        database.dispose()
