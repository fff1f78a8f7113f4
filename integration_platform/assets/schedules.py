"""Refresh jobs and their schedules: the one way a source declares "run these assets on a cron"."""

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
