"""One busy source cannot starve the others: the instance's run queue limits runs per source tag, and
every job a source defines (and so every schedule, which targets one) tags its runs with that source,
in the demo and every valid config of the corpus. The sensors' run requests are checked where each
sensor is tested (file drops, queues)."""

from pathlib import Path

import dagster as dg
import pytest

from integration_platform.assets.run_queue import SOURCE_RUN_TAG
from integration_platform.definitions import defs
from integration_platform.instance import write_instance
from integration_platform_tests.test_config_corpus import CONFIGS, _load_as_project

pytestmark = pytest.mark.fast


def test_the_instance_limits_queued_runs_per_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DAGSTER_PG_URL", raising=False)
    write_instance(tmp_path)
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        queue = instance.get_concurrency_config().run_queue_config
    assert queue is not None
    limits = [(limit["key"], limit.get("value"), limit["limit"]) for limit in queue.tag_concurrency_limits or []]
    assert limits == [(SOURCE_RUN_TAG, {"applyLimitPerUniqueValue": True}, 2)]
    assert queue.max_concurrent_runs == 4  # so a source's 2 leave 2 to the others


def _assert_jobs_tagged(definitions: dg.Definitions) -> int:
    """Every job a source defines tags its runs with a source of the definitions; returns how many."""
    sources = {spec.group_name for spec in definitions.resolve_all_asset_specs()}
    jobs = [job for job in definitions.resolve_all_job_defs() if not job.name.startswith("__")]
    for job in jobs:
        assert job.tags.get(SOURCE_RUN_TAG) in sources, f"job {job.name}: run tags {dict(job.tags)}"
    return len(jobs)


def test_every_demo_job_tags_its_runs_with_its_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHINOOK_DB_URL", raising=False)
    assert _assert_jobs_tagged(defs()) >= 4  # refresh jobs and the drop stream's partition job


@pytest.mark.parametrize("config", sorted((CONFIGS / "valid").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_corpus_job_tags_its_runs_with_its_source(config: Path, tmp_path: Path) -> None:
    assert _assert_jobs_tagged(_load_as_project(config, tmp_path)) >= 0
