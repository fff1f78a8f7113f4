"""Freshness checks: is a scheduled table as recent as its schedule promises?

Dagster's own last-update freshness checks (``build_last_update_freshness_checks``), one per
warehouse asset a refresh schedule loads: at each tick of the schedule's cron (UTC), the table must
have been loaded within the cron's longest gap between two ticks (:func:`longest_gap`; Dagster's check
takes one allowance for every tick, so where ticks are unevenly spaced, as ``*/15 * * * 1-5`` with its
weekend, a table may be stale up to that longest gap on any day before its check fails). A table whose schedule is off,
or whose runs fail, fails its check (severity WARN) until it is loaded again. The checks are
evaluated by the sensor ``<job>_freshness`` (stopped by default, like the schedule: switch both on
together) or run on their own from the UI.
"""

import datetime as dt
from collections.abc import Sequence
from typing import Any

import dagster as dg
from croniter import croniter

from integration_platform.assets.schedules import refresh_job

#: The span of ticks looked at to find the longest gap of a cron: more than a week, so a weekday
#: cron's Friday-to-Monday gap is among them however often it ticks; a monthly cron gets 13 ticks.
GAP_SPAN = dt.timedelta(days=8)
MIN_TICKS = 13


def longest_gap(cron: str) -> dt.timedelta:
    """The longest time between two consecutive ticks of ``cron`` (UTC) over :data:`GAP_SPAN` (and at
    least :data:`MIN_TICKS` ticks). Raises ``ValueError`` (croniter's) for a malformed expression."""
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    ticks = croniter(cron, start)
    previous = ticks.get_next(dt.datetime)
    longest, seen = dt.timedelta(0), 1
    while previous - start < GAP_SPAN or seen < MIN_TICKS:
        current = ticks.get_next(dt.datetime)
        longest, previous, seen = max(longest, current - previous), current, seen + 1
    return longest


def freshness_checks(
    job_name: str, keys: Sequence[dg.AssetKey], cron: str
) -> tuple[list[dg.AssetChecksDefinition], dg.SensorDefinition]:
    """The freshness checks of ``keys`` (loaded by the job ``job_name`` on ``cron``) and the sensor
    ``<job_name>_freshness`` that evaluates them (module doc)."""
    checks = list(
        dg.build_last_update_freshness_checks(
            assets=list(keys), deadline_cron=cron, lower_bound_delta=longest_gap(cron), timezone="UTC"
        )
    )
    sensor = dg.build_sensor_for_freshness_checks(freshness_checks=checks, name=f"{job_name}_freshness")
    return checks, sensor


def refreshed_source(
    source: str,
    assets: Sequence[dg.AssetsDefinition],
    warehouse_keys: Sequence[dg.AssetKey],
    cron: str,
    description: str,
    resources: dict[str, Any],
) -> dg.Definitions:
    """A source's definitions refreshed as one: its ``assets``, the job ``<source>_refresh`` of its
    group with a daily ``cron`` schedule (stopped by default, :func:`refresh_job`), and a freshness check
    of each warehouse table against that schedule (:func:`freshness_checks`)."""
    job, schedule = refresh_job(f"{source}_refresh", source, dg.AssetSelection.groups(source), cron, description)
    fresh, fresh_sensor = freshness_checks(job.name, list(warehouse_keys), cron)
    return dg.Definitions(
        assets=assets, asset_checks=fresh, jobs=[job], schedules=[schedule], sensors=[fresh_sensor], resources=resources
    )
