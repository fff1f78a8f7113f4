"""One planned row per asset check of a run, not one per partition of the run.

Dagster 1.13.27 (pinned in ``pyproject.toml``; unchanged in 1.13.29) logs an
``ASSET_CHECK_EVALUATION_PLANNED`` event per asset check of a run, carrying the partitions the check
targets, and its SQL event log writes one ``asset_check_executions`` row per partition of that subset
(``SqlEventLogStorage._store_asset_check_evaluation_planned``). For any run of a time-partitioned
asset (one partition, or a range) the subset is the *run's*, whatever the check's own partitions:
``DagsterRun.get_resolved_partitions_subset_for_events`` returns the run's stored subset before it
looks at the check's (``None``) partitions definition. So an unpartitioned check, as all the platform's checks are
(they check the whole lake stream or warehouse table), gets a PLANNED row per partition; its evaluation
(partition ``None``) matches none of them and adds its own row. What that costs:

- a single-run backfill of 1,781 daily partitions with three checks wrote 5,343 rows, each with its own
  serialised copy of the event, in one multi-row insert: 0.41-0.49 s per check on PostgreSQL, 1.3 s
  before the run's first step (measured with ``dagster_postgres.PostgresEventLogStorage.store_event``);
- the rows never resolve: after the run Dagster's UI shows each as a SKIPPED execution of the check
  (``AssetCheckExecutionRecord.resolve_status``: PLANNED in a finished, successful run), beside the one
  that ran: 1,781 per check for that backfill, and one per check for every daily run a sensor starts.

:class:`PlannedChecksOnce` stores a planned check with its partitions as Dagster stores an
unpartitioned one: one row (partition ``None``), which the evaluation then completes. The platform
declares no partitioned asset checks (``AssetCheckSpec(partitions_def=...)``, a preview in Dagster
1.13), and this storage is not for code locations that do: such a check's results would be stored
(Dagster inserts a row when no planned row matches), but not shown in progress per partition while
its run goes on, and its one planned row would stay PLANNED (shown as SKIPPED) beside them.
``integration_platform_tests/test_planned_checks.py`` fails when Dagster stops writing the extra rows,
so that this correction can go.
"""

from typing import Any

from dagster._core.definitions.asset_checks.asset_check_evaluation import AssetCheckEvaluationPlanned
from dagster._core.events.log import EventLogEntry


class PlannedChecksOnce:
    """Mixin for a ``dagster._core.storage.event_log.SqlEventLogStorage`` subclass (put it first): a
    planned asset check is stored as one row without a partition (see the module's docstring)."""

    def _store_asset_check_evaluation_planned(self, event: EventLogEntry, event_id: int | None) -> None:
        dagster_event = event.dagster_event
        planned = dagster_event.event_specific_data if dagster_event is not None else None
        if (
            dagster_event is not None
            and isinstance(planned, AssetCheckEvaluationPlanned)
            and planned.partitions_subset is not None
        ):
            unpartitioned = AssetCheckEvaluationPlanned(
                asset_key=planned.asset_key, check_name=planned.check_name, partitions_subset=None
            )
            event = event._replace(dagster_event=dagster_event._replace(event_specific_data=unpartitioned))
        store: Any = super()
        store._store_asset_check_evaluation_planned(event, event_id)
