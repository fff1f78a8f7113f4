"""The Dagster side of a SqlSource table read by change data capture (``cdc:`` in YAML).

The lake asset runs :func:`~integration_platform.core.changes.capture` over the table's change
log (PostgreSQL: :class:`~integration_platform.sources.sql.postgres_cdc.PostgresChangeLog`); the
warehouse asset is every stream's. Besides: the ``log_lag_within_limit`` check (WARN when the slot
retains more WAL than ``lag_warn_bytes``: a slot nobody drains fills the source's disk) and a
sensor, stopped by default, that requests a drain when the log has changes of the table waiting.
"""

import time
from collections.abc import Iterator
from typing import Any, Literal

import dagster as dg
from pydantic import Field

from integration_platform.assets.config_model import SafeModel
from integration_platform.assets.run_queue import ACTIVE_RUN_STATUSES, source_run_tags
from integration_platform.assets.stream_assets import (
    FULL_REFRESH_TAG,
    StreamRunConfig,
    lake_asset_arguments,
    lake_key,
    start_lake_step,
    warehouse_key,
)
from integration_platform.core.changes import ChangeLimits, capture, landed_position
from integration_platform.core.extract import rows_held
from integration_platform.core.streams import StreamSpec
from integration_platform.resources.lake import LakeResource
from integration_platform.sources.sql.database import SqlDatabaseResource
from integration_platform.sources.sql.slot_names import SLOT_NAME, cursor_prefix

LAG_CHECK = "log_lag_within_limit"
DRAIN_TAG = "integration_platform/cdc_drain"
#: The log position a drain run the sensor requested starts from (its failed runs are counted per position).
POSITION_TAG = "integration_platform/cdc_position"
#: A failed drain of a position is requested again after 1 minute, then 2, 4, ..., at most every hour.
RETRY_FIRST_S, RETRY_MAX_S = 60.0, 3600.0
#: The stream's failed drains a tick looks at (newest first): enough to reach the hourly bound.
RECENT_FAILURES = 64
#: Dagster's tag of a run's run key (a sensor's request).
RUN_KEY_TAG = "dagster/run_key"


def drain_retry(
    path: str, position: str, failures: int, last_end: float | None, now: float
) -> tuple[str | None, float]:
    """The run key of the next drain of ``path`` from ``position`` and ``0.0``, or ``None`` and the seconds
    still to wait: after ``failures`` failed drains of that position (the last one ended at ``last_end``,
    epoch seconds), the next waits ``RETRY_FIRST_S * 2 ** (failures - 1)`` seconds, at most
    ``RETRY_MAX_S``. Why: Dagster requests a run key once, whatever that run's fate, and a failed drain
    leaves the position where it was, so with one key per position a failure stopped the sensor for good
    while the slot's WAL grew; a failure that recurs (a ``TRUNCATE``) is tried again at most hourly."""
    if failures <= 0:
        return f"{path}@{position}", 0.0
    left = (last_end or now) + min(RETRY_FIRST_S * 2 ** min(failures - 1, 16), RETRY_MAX_S) - now
    return (None, left) if left > 0 else (f"{path}@{position}#retry{failures}", 0.0)


class SqlChangeCapture(SafeModel, dg.Resolvable):
    """``cdc:`` of a table: read it from the database's change log instead of by a cursor."""

    publication: str | None = Field(
        default=None,
        pattern=SLOT_NAME.pattern,
        description="An existing publication holding the table; default: one per stream, created when missing.",
    )
    deletes: Literal["hard", "soft"] = Field(
        default="hard", description="hard: deleted rows leave the table; soft: they stay with _ip_deleted_at set."
    )
    history: bool = Field(default=False, description="Also keep every version of every row in <stream>__history.")
    batch_changes: int = Field(default=20_000, ge=1, description="Changes per landed batch (whole transactions).")
    max_changes: int = Field(default=5_000_000, ge=1, description="Changes one run takes at most.")
    lag_warn_bytes: int = Field(default=1 << 30, ge=0, description="WAL the slot may retain before the check warns.")
    sensor_interval_seconds: int = Field(default=60, ge=5, description="How often the drain sensor looks.")


def _status_check(spec: StreamSpec, cursor: str, status: dict[str, Any], limit: int) -> dg.AssetCheckResult:
    retained = int(status.get("log_retained_bytes", 0))
    exists = bool(status.get("log_cursor_exists"))
    return dg.AssetCheckResult(
        asset_key=lake_key(spec),
        check_name=LAG_CHECK,
        passed=exists and retained <= limit,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"log_retained_bytes": retained, "limit_bytes": limit, "log_cursor": cursor},
        description=None
        if exists and retained <= limit
        else f"the change log of {cursor} is gone (the next run takes a snapshot)"
        if not exists
        else f"{cursor}: the server keeps {retained} bytes of log for this stream (limit {limit}): drain it",
    )


def change_lake_asset(
    spec: StreamSpec, kind: str, resource_key: str, table: str, schema: str | None, options: SqlChangeCapture
) -> dg.AssetsDefinition:
    """The lake asset of a change-captured table (module doc)."""
    check = dg.AssetCheckSpec(
        LAG_CHECK, asset=lake_key(spec), description=f"The replication slot retains <= {options.lag_warn_bytes} bytes."
    )
    prefix = cursor_prefix(spec.source, spec.name)

    @dg.multi_asset(**lake_asset_arguments(spec, kind, resource_key, check_specs=[check]))
    def _capture(
        context: dg.AssetExecutionContext, config: StreamRunConfig
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        database: SqlDatabaseResource = getattr(context.resources, resource_key)
        log = database.change_log(table, schema, prefix, options.publication, spec.primary_key)
        if lake_key(spec) not in context.selected_asset_keys:  # the check alone: the log as it is now
            lake: LakeResource = context.resources.lake
            cursor, landed = landed_position(lake.store(), spec)
            status = log.status(cursor, landed) if cursor else {"log_cursor_exists": False}
            yield _status_check(spec, cursor, status, options.lag_warn_bytes)
            return
        store = start_lake_step(context, spec)
        full_refresh = config.full_refresh or context.run.tags.get(FULL_REFRESH_TAG, "").lower() == "true"
        limits = ChangeLimits(batch_changes=options.batch_changes, max_changes=options.max_changes)
        stats = capture(
            store,
            spec,
            log,
            log.new_cursor,
            limits,
            context.run.run_id,
            full_refresh=full_refresh,
            say=context.log.info,
        )
        status = log.status(stats.cursor, stats.position)
        context.log.info(
            f"{spec.path}: {stats.landing.rows_landed} changes landed in {stats.landing.batches} batch(es) "
            f"{stats.changes}; log cursor {stats.cursor} at {stats.position or '(unchanged)'}, "
            f"{status.get('log_retained_bytes')} bytes of log retained"
        )
        yield dg.MaterializeResult(
            asset_key=lake_key(spec),
            metadata={
                **stats.metadata(),
                **status,
                "dagster/row_count": rows_held(store, spec),
                "dagster/uri": store.uri(spec.path),
            },
            check_results=[_status_check(spec, stats.cursor, status, options.lag_warn_bytes)]
            if dg.AssetCheckKey(lake_key(spec), LAG_CHECK) in context.selected_asset_check_keys
            else [],
        )

    return _capture


def change_sensor(
    spec: StreamSpec, resource_key: str, table: str, schema: str | None, options: SqlChangeCapture
) -> dg.SensorDefinition:
    """Requests a drain of the stream (lake and warehouse) when its log has a change of the table
    waiting and no drain of it is in flight; the run key names the position looked from, so one
    position is drained once, and again after a failed drain of it, later each time (:func:`drain_retry`)."""
    prefix = cursor_prefix(spec.source, spec.name)

    @dg.sensor(
        name=f"{spec.source}_{spec.name}_changes",
        minimum_interval_seconds=options.sensor_interval_seconds,
        asset_selection=[lake_key(spec), warehouse_key(spec)],
        required_resource_keys={resource_key, "lake"},
        default_status=dg.DefaultSensorStatus.STOPPED,
        description=f"Requests a drain of {table} when its change log has changes of it waiting.",
    )
    def _changes(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        database: SqlDatabaseResource = getattr(context.resources, resource_key)
        log = database.change_log(table, schema, prefix, options.publication, spec.primary_key)
        in_flight = context.instance.get_runs(
            filters=dg.RunsFilter(tags={DRAIN_TAG: spec.path}, statuses=ACTIVE_RUN_STATUSES)
        )
        if in_flight:  # first: a slot being streamed cannot be peeked at
            return dg.SkipReason(f"drain run {in_flight[0].run_id} of {spec.path} in flight")
        lake: LakeResource = context.resources.lake
        waiting, position = log.waiting(*landed_position(lake.store(), spec))
        if position is None:
            return dg.SkipReason(
                f"no change log position for {spec.path} yet: materialise it once to take the snapshot"
            )
        if not waiting:
            return dg.SkipReason(f"no changes waiting after {position}")
        recent = context.instance.get_run_records(
            filters=dg.RunsFilter(
                tags={DRAIN_TAG: spec.path}, statuses=[dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]
            ),
            limit=RECENT_FAILURES,
        )
        key = f"{spec.path}@{position}"
        failed = [  # of this position: tagged with it, or (drains requested before the tag) by their run key
            r
            for r in recent
            if r.dagster_run.tags.get(POSITION_TAG, "") == position
            or r.dagster_run.tags.get(RUN_KEY_TAG, "").split("#")[0] == key
        ]
        last = failed[0] if failed else None
        ended = (last.end_time or last.update_timestamp.timestamp()) if last else None
        run_key, wait = drain_retry(spec.path, position, len(failed), ended, time.time())
        if run_key is None:
            return dg.SkipReason(
                f"changes wait after {position}; {len(failed)} drain(s) from there failed (the last: run "
                f"{failed[0].dagster_run.run_id}): the next in {wait:.0f} s"
            )
        tags = {DRAIN_TAG: spec.path, POSITION_TAG: position, **source_run_tags(spec.source)}
        return dg.SensorResult(run_requests=[dg.RunRequest(run_key=run_key, tags=tags)])

    return _changes
