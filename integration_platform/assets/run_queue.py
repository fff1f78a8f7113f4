"""Runs per source: the run tag that lets the instance's run queue keep one busy source from
starving the others.

Every run a source launches through its own means (its refresh and partition jobs and their
schedules, its drop, drain and change sensors) carries :data:`SOURCE_RUN_TAG` with the source's name.
``dagster.yaml`` limits queued runs per value of that tag (Dagster's ``tag_concurrency_limits`` with
``applyLimitPerUniqueValue``): at most 2 runs per source of the 4 the instance runs at once, so a
1,781-partition backfill of one source leaves two run slots to every other. The limit is Dagster's own
(its run queue, applied by the daemon to queued runs); a run launched without the tag (the UI's
Materialize of a hand-picked selection, an automation condition's run) is not limited by it.
"""

import dagster as dg

SOURCE_RUN_TAG = "integration_platform/source"
#: The statuses of a run in flight (queued to running): a drain sensor requests no second drain beside one.
ACTIVE_RUN_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,  # a drain being cancelled still holds its queue or replication slot
]


def source_run_tags(source: str) -> dict[str, str]:
    """The run tags of a run launched for ``source``."""
    return {SOURCE_RUN_TAG: source}
