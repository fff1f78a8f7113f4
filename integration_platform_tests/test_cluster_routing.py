"""Cluster mode's routing, without a cluster: ``IP_EXECUTOR=celery`` selects Dagster's Celery executor
with the at-least-once settings, and every step that opens the DuckDB file (and no other) goes to the
one ``warehouse`` queue, in the demo and in every valid config of the corpus."""

import os
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from dagster_celery.tags import DAGSTER_CELERY_QUEUE_TAG

from integration_platform.assets import cluster
from integration_platform.assets.run_recovery import reclaim_dead_runs
from integration_platform.cluster import (
    hold_warehouse_lock,
    main,
    refuse_second_warehouse_consumer,
    settings_dir,
    worker_concurrency,
)
from integration_platform.definitions import defs
from integration_platform_tests.test_config_corpus import CONFIGS, _load_as_project

pytestmark = pytest.mark.fast


def _steps(definitions: dg.Definitions) -> list[tuple[str, Any]]:
    """Every op of the definitions' assets and asset checks, by name."""
    nodes: dict[str, Any] = {}
    for item in [*(definitions.assets or []), *(definitions.asset_checks or [])]:
        if isinstance(item, dg.AssetsDefinition) and item.is_executable:
            nodes[item.node_def.name] = item.node_def
    return sorted(nodes.items())


def _assert_routed(definitions: dg.Definitions, pool: str | None = "duckdb") -> int:
    """Asserts the rule on every step (those that open the warehouse in ``pool``); returns how many
    steps open the warehouse."""
    warehouse_steps = 0
    for name, node in _steps(definitions):
        opens_warehouse = "warehouse" in getattr(node, "required_resource_keys", set())
        queue = node.tags.get(DAGSTER_CELERY_QUEUE_TAG)
        if opens_warehouse:
            warehouse_steps += 1
            assert queue == cluster.WAREHOUSE_QUEUE, f"step {name} opens the DuckDB file but goes to queue {queue!r}"
            assert getattr(node, "pool", None) == pool, f"step {name} opens the DuckDB file in pool {node.pool!r}"
        else:
            assert queue is None, f"step {name} does not open the DuckDB file but is bound to queue {queue!r}"
    return warehouse_steps


def test_the_tag_is_dagster_celerys_own() -> None:
    assert cluster.CELERY_QUEUE_TAG == DAGSTER_CELERY_QUEUE_TAG


def test_every_demo_step_that_opens_the_warehouse_goes_to_its_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHINOOK_DB_URL", raising=False)
    # The demo's warehouse assets and the SQL sources' rows_match_source checks.
    assert _assert_routed(defs()) > 20


@pytest.mark.parametrize("clustered", [False, True], ids=["local", "celery"])
@pytest.mark.parametrize("config", sorted((CONFIGS / "valid").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_corpus_step_that_opens_the_warehouse_goes_to_its_queue(
    config: Path, clustered: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if clustered:
        monkeypatch.setenv(cluster.MODE_ENV, "celery")
        monkeypatch.setenv("LAKE_URL", "s3://lake/raw")
    assert _assert_routed(_load_as_project(config, tmp_path), pool=None if clustered else "duckdb") >= 0


def test_in_cluster_mode_the_warehouse_queue_keeps_the_single_writer_rule_not_the_pool(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No Dagster pool holds cluster mode's warehouse steps back (its coordinator would re-try them
    after ever longer waits): the queue's one worker process runs them in turn."""
    monkeypatch.delenv("CHINOOK_DB_URL", raising=False)
    monkeypatch.setenv(cluster.MODE_ENV, "celery")
    monkeypatch.setenv("LAKE_URL", "s3://lake/raw")
    assert _assert_routed(defs(), pool=None) > 20


def test_a_warehouse_worker_runs_one_process_for_that_queue_alone(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="--concurrency 2: a worker of the 'warehouse' queue runs one process"):
        worker_concurrency([cluster.WAREHOUSE_QUEUE], 2)
    with pytest.raises(
        ValueError, match="--queues dagster,warehouse: a worker of the 'warehouse' queue serves it alone"
    ):
        worker_concurrency([cluster.DEFAULT_QUEUE, cluster.WAREHOUSE_QUEUE], None)
    assert worker_concurrency([cluster.WAREHOUSE_QUEUE], None) == 1
    assert worker_concurrency([cluster.DEFAULT_QUEUE], None) >= 1
    assert worker_concurrency([cluster.DEFAULT_QUEUE], 5) == 5
    # Refused before the lock is taken or the broker asked, and before any worker starts.
    with pytest.raises(SystemExit) as refused:
        main(["worker", "--name", "wh", "--queues", "warehouse", "--concurrency", "3"])
    assert refused.value.code == 2
    assert "a worker of the 'warehouse' queue runs one process" in capsys.readouterr().err
    with pytest.raises(ValueError, match="cannot ask the broker whether the 'warehouse' queue has a worker"):
        refuse_second_warehouse_consumer("pyamqp://nobody@127.0.0.1:9//")


def test_one_warehouse_worker_per_duckdb_file_on_a_machine(tmp_path: Path) -> None:
    warehouse = str(tmp_path / "w" / "warehouse.duckdb")
    held = hold_warehouse_lock(warehouse)
    try:
        assert os.get_inheritable(held)  # it outlives the exec into the worker
        with pytest.raises(ValueError, match=r"another worker of the 'warehouse' queue holds .*duckdb.worker.lock"):
            hold_warehouse_lock(warehouse)
    finally:
        os.close(held)
    os.close(hold_warehouse_lock(warehouse))  # free again once its holder is gone


def test_ip_executor_celery_selects_dagsters_celery_executor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cluster.MODE_ENV, "celery")
    monkeypatch.setenv("LAKE_URL", "s3://lake/raw")
    monkeypatch.setenv(cluster.BROKER_ENV, "pyamqp://guest:guest@127.0.0.1:5672//")
    monkeypatch.delenv(cluster.BACKEND_ENV, raising=False)
    job = defs().resolve_implicit_global_asset_job_def()
    executor = job.executor_def
    assert executor.name == "celery"
    config = executor.config_schema.config_type
    assert config is not None
    settings = cluster.celery_config()
    assert settings["backend"] == "redis://127.0.0.1:6379/0"  # not dagster-celery's rpc://, lost with a worker
    assert settings["config_source"]["task_acks_late"] is True
    assert settings["config_source"]["task_reject_on_worker_lost"] is True


def test_the_step_time_limit_stays_under_rabbitmqs_consumer_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(cluster.TIME_LIMIT_ENV, raising=False)
    assert cluster.celery_config()["config_source"]["task_time_limit"] == 1740 < 30 * 60
    assert cluster.celery_config()["config_source"]["task_soft_time_limit"] == 1680
    monkeypatch.setenv(cluster.TIME_LIMIT_ENV, "0")
    assert "task_time_limit" not in cluster.worker_settings()
    assert "task_soft_time_limit" not in cluster.worker_settings()
    monkeypatch.setenv(cluster.TIME_LIMIT_ENV, "7200")
    assert cluster.worker_settings()["task_time_limit"] == 7200
    assert cluster.worker_settings()["task_soft_time_limit"] == 7140
    monkeypatch.setenv(cluster.TIME_LIMIT_ENV, "2h")
    with pytest.raises(ValueError, match="IP_CELERY_STEP_TIME_LIMIT='2h': give whole seconds"):
        cluster.celery_config()


@pytest.mark.parametrize(("limit", "soft"), [(1, 1), (2, 1), (4, 2), (16, 8), (120, 60), (121, 61), (1740, 1680)])
def test_the_soft_limit_leaves_a_grace_before_the_hard_one(limit: int, soft: int) -> None:
    assert cluster.soft_time_limit(limit) == soft


def test_a_mode_it_does_not_know_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cluster.MODE_ENV, "kubernetes")
    with pytest.raises(ValueError, match="IP_EXECUTOR='kubernetes'"):
        cluster.cluster_mode()
    monkeypatch.delenv(cluster.MODE_ENV)
    assert cluster.cluster_mode() is False


def test_cluster_mode_refuses_a_lake_the_workers_do_not_share(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A folder lake: each worker would land in its own, and the warehouse step would find nothing."""
    monkeypatch.setenv(cluster.MODE_ENV, "celery")
    monkeypatch.setenv("LAKE_URL", str(tmp_path / "lake"))
    with pytest.raises(ValueError, match="IP_EXECUTOR=celery needs a lake every worker reaches"):
        defs()
    cluster.require_shared_lake("gs://bucket/raw")  # an object store passes


def test_the_workers_settings_file_holds_no_password(monkeypatch: pytest.MonkeyPatch) -> None:
    """The settings module a worker loads reads the broker URL from the environment when it starts:
    the password never reaches the file (dagster-celery's own ``worker start`` writes it there)."""
    monkeypatch.setenv(cluster.BROKER_ENV, "pyamqp://ip:s3cret-pw@127.0.0.1:5672//")
    folder = Path(settings_dir())
    text = (folder / "dagster_celery_config.py").read_text()
    assert "s3cret-pw" not in text
    namespace: dict[str, Any] = {}
    exec(compile(text, "dagster_celery_config.py", "exec"), namespace)
    assert namespace["broker_url"] == "pyamqp://ip:s3cret-pw@127.0.0.1:5672//"
    assert namespace["task_acks_late"] is True and namespace["task_reject_on_worker_lost"] is True


def test_a_finished_run_of_any_host_gives_its_pool_slots_back(tmp_path: Path) -> None:
    """Cluster runs carry no host tag; one that ended still holding a duckdb slot (its coordinator
    died after the run was marked failed) must not block the warehouse for ever."""
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        storage = instance.event_log_storage
        storage.set_concurrency_slots("duckdb", 1)
        run = instance.create_run_for_job(dg.GraphDefinition("noop").to_job(), tags={})
        claim = storage.claim_concurrency_slot("duckdb", run.run_id, "warehouse__a__b")
        assert claim.is_claimed
        instance.report_run_failed(run, "its coordinator died")
        freed = reclaim_dead_runs(instance, lambda _: None)
        assert freed == [run.run_id]
        assert storage.get_concurrency_info("duckdb").active_slot_count == 0
