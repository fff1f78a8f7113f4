"""Refresh jobs and their schedules: the one way a source declares "run these assets on a cron";
and the schedules of partitioned jobs, which land each partition once it has ended."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import dagster as dg

from integration_platform.assets.run_queue import source_run_tags


def refresh_job(
    name: str,
    source: str,
    selection: dg.AssetSelection | Sequence[dg.AssetKey],
    cron: str,
    description: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> tuple[dg.UnresolvedAssetJobDefinition, dg.ScheduleDefinition]:
    """The job ``name`` over ``selection`` and its schedule ``<name>_schedule`` on ``cron`` (UTC),
    stopped until an operator starts it (a new code location never starts pulling on its own). Its
    runs carry ``source``'s run tag (:mod:`.run_queue`) besides ``tags``.
    ``cron`` must pass :func:`~integration_platform.assets.config_model.cron_problem`; Dagster
    raises ``DagsterInvalidDefinitionError`` otherwise."""
    job = dg.define_asset_job(
        name, selection=selection, description=description, tags={**source_run_tags(source), **(tags or {})}
    )
    schedule = dg.ScheduleDefinition(
        name=f"{name}_schedule",
        job=job,
        cron_schedule=cron,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.STOPPED,
    )
    return job, schedule


def ended_partition_schedule(
    job: dg.UnresolvedAssetJobDefinition, partitions: dg.TimeWindowPartitionsDefinition
) -> dg.ScheduleDefinition:
    """The schedule ``<job>_schedule`` (stopped by default) that, at the end of each partition of
    ``partitions`` (its cron: midnight UTC for days, the 1st for months), requests the partition that
    has just ended (run key: its key), and skips a tick whose ended partition the stream does not have
    (before ``start``, or from ``end`` on).

    Why not Dagster's ``build_schedule_from_partitioned_job``: it requests the last partition the
    definition has at the tick, which for the platform's partitions (they include the current one,
    ``end_offset=1``) is the day (month) just begun, empty at midnight, so yesterday's drop was never
    landed; and with ``end`` it requested the last partition again at every tick after the end."""

    @dg.schedule(
        name=f"{job.name}_schedule",
        cron_schedule=partitions.get_cron_schedule(),
        execution_timezone=partitions.timezone,
        job=job,
        default_status=dg.DefaultScheduleStatus.STOPPED,
    )
    def _ended(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        tick = context.scheduled_execution_time
        key = partitions.get_partition_key_for_timestamp(tick.timestamp(), end_closed=True)
        if not partitions.has_partition_key(key):
            return dg.SkipReason(f"the partition ended at {tick.isoformat()} ({key}) is not one of the job's")
        return dg.RunRequest(run_key=key, partition_key=key)

    return _ended
