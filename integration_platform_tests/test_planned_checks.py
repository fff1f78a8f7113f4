"""The platform's event log stores a planned asset check of a partition-range run as one row, which its
evaluation completes (``integration_platform.event_log.planned_checks``); Dagster's own stores one
PLANNED row per partition of the run, which never resolves (the UI shows each as a SKIPPED execution)."""

import uuid
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from integration_platform.instance import write_instance
from integration_platform_tests.services import PG_HOST, PG_PORT, psql, require_port
from sandbox.harness import platform_instance

DAYS = dg.DailyPartitionsDefinition(start_date="2024-01-01")
RANGE = {"dagster/asset_partition_range_start": "2024-01-01", "dagster/asset_partition_range_end": "2024-01-10"}


@dg.asset(
    partitions_def=DAYS,
    backfill_policy=dg.BackfillPolicy.single_run(),
    check_specs=[dg.AssetCheckSpec("whole_table", asset="days")],
)
def days(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    failing = context.run.tags.get("probe/fail") == "yes"
    return dg.MaterializeResult(check_results=[dg.AssetCheckResult(check_name="whole_table", passed=not failing)])


CHECK = dg.AssetCheckKey(dg.AssetKey("days"), "whole_table")


def executions(instance: dg.DagsterInstance) -> list[tuple[str | None, AssetCheckExecutionRecordStatus]]:
    """The check's executions, as the UI's execution history reads them (newest first)."""
    records = instance.event_log_storage.get_asset_check_execution_history(CHECK, limit=1000)
    return [(r.partition, r.status) for r in records]


@pytest.mark.fast
def test_dagster_alone_leaves_a_planned_row_per_partition_of_the_run() -> None:
    """The defect corrected: when this fails, Dagster stores planned checks by the check's own partitions
    and ``integration_platform.event_log`` can go."""
    with dg.instance_for_test() as instance:
        assert dg.materialize([days], instance=instance, tags=RANGE).success
        rows = executions(instance)
    assert rows[0] == (None, AssetCheckExecutionRecordStatus.SUCCEEDED)
    assert len(rows) == 11 and {status for _, status in rows[1:]} == {AssetCheckExecutionRecordStatus.PLANNED}
    with dg.instance_for_test() as instance:  # a run of one partition (a sensor's daily run) too
        assert dg.materialize([days], instance=instance, tags={"dagster/partition": "2024-01-03"}).success
        assert executions(instance) == [
            (None, AssetCheckExecutionRecordStatus.SUCCEEDED),
            ("2024-01-03", AssetCheckExecutionRecordStatus.PLANNED),
        ]


@pytest.mark.fast
@pytest.mark.parametrize("tags", [RANGE, {"dagster/partition": "2024-01-03"}], ids=["range", "one"])
def test_a_planned_check_is_one_row_that_its_evaluation_completes(tmp_path: Path, tags: dict[str, str]) -> None:
    with platform_instance(tmp_path / "home") as instance:
        assert type(instance.event_log_storage).__name__ == "PlatformSqliteEventLogStorage"
        assert dg.materialize([days], instance=instance, tags=tags).success
        assert executions(instance) == [(None, AssetCheckExecutionRecordStatus.SUCCEEDED)]
        failed = dg.materialize([days], instance=instance, tags={**tags, "probe/fail": "yes"})
        assert failed.success  # a failed check that is not blocking does not fail the run
        assert executions(instance) == [
            (None, AssetCheckExecutionRecordStatus.FAILED),
            (None, AssetCheckExecutionRecordStatus.SUCCEEDED),
        ]


@pytest.mark.fast
def test_the_written_instance_names_the_platform_event_log(tmp_path: Path) -> None:
    write_instance(tmp_path / "sqlite", {})
    with dg.DagsterInstance.from_config(str(tmp_path / "sqlite")) as instance:
        assert type(instance.event_log_storage).__name__ == "PlatformSqliteEventLogStorage"
        assert dg.materialize([days], instance=instance, tags=RANGE).success
        assert executions(instance) == [(None, AssetCheckExecutionRecordStatus.SUCCEEDED)]
    assert (tmp_path / "sqlite" / "history" / "runs" / "index.db").is_file(), "Dagster's own SQLite layout"
    config = write_instance(tmp_path / "pg", {"DAGSTER_PG_URL": "postgresql+psycopg2://u@h/db"}).read_text()
    assert "PlatformPostgresEventLogStorage" in config and "env: DAGSTER_PG_URL" in config and "u@h" not in config


def test_on_postgres_too(tmp_path: Path) -> None:
    require_port(PG_HOST, PG_PORT, "PostgreSQL")
    name = f"ip_test_planned_{uuid.uuid4().hex[:8]}"
    psql("postgres", "-c", f"CREATE DATABASE {name}")
    try:
        url = f"postgresql+psycopg2://postgres@{PG_HOST}:{PG_PORT}/{name}"
        with platform_instance(tmp_path / "home", url) as instance:
            assert type(instance.event_log_storage).__name__ == "PlatformPostgresEventLogStorage"
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            assert dg.materialize([days], instance=instance, tags=RANGE).success
            assert executions(instance) == [(None, AssetCheckExecutionRecordStatus.SUCCEEDED)]
    finally:
        psql("postgres", "-c", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
