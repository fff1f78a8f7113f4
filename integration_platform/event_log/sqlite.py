"""Dagster's SQLite event log (``SqliteEventLogStorage``, a database per run beside an index database)
with the platform's correction of planned asset checks (:mod:`.planned_checks`) and a batch of asset
events stored in one transaction per database.

Why the batch is overridden: Dagster's SQLite event log has no batch write. With
``DAGSTER_EVENT_BATCH_SIZE`` set it is handed batches, and stores them one event at a time
(``EventLogStorage.store_event_batch``): per event a new connection and a committed transaction on
the run's database, then another on the index database, each commit a WAL sync. A single-run
backfill records one materialisation per partition and asset (3,562 for the 1,781-day file-drop
backfill) and, before the run starts, one "planned" event per partition and asset (as many again,
without ``DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS``): about 14,000 commits.

:meth:`PlatformSqliteEventLogStorage.store_event_batch` writes each run of two or more consecutive
materialisations (or observations, or planned materialisations) of a batch as
``SqliteEventLogStorage.store_event`` writes each of them, in one transaction on the run's database and
one on the index database: the same rows in the same order, the indexed tags of each, and each asset's
row (``_store_asset_event``) updated once, with its last event of the run, which is where updating it
per event ends. Other events are stored alone, in the batch's order. When the index database fails
after the run's database committed, the rows written there are deleted again; the events not yet
stored are then stored one at a time (by Dagster's ``handle_new_event`` when nothing of the batch was
stored yet, else by this storage): once, not twice.
"""

import itertools
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from dagster import DagsterEventType
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.event_log import SqliteEventLogStorage
from dagster._core.storage.event_log.schema import SqlEventLogStorageTable
from dagster._serdes import ConfigurableClassData

from integration_platform.event_log.batches import INSERT_RETURNING_IDS, index_batch
from integration_platform.event_log.planned_checks import PlannedChecksOnce

#: SQLAlchemy's SQLite dialect offers ``INSERT ... RETURNING`` from SQLite 3.35 on (``SQLiteDialect.insert_returning``).
RETURNING = sqlite3.sqlite_version_info >= (3, 35)
#: The batches written in one transaction per database; other kinds are stored one by one, as by Dagster.
BATCHED_KINDS = (
    {DagsterEventType.ASSET_MATERIALIZATION},
    {DagsterEventType.ASSET_OBSERVATION},
    {DagsterEventType.ASSET_MATERIALIZATION_PLANNED},
)


class PlatformSqliteEventLogStorage(PlannedChecksOnce, SqliteEventLogStorage):
    """``SqliteEventLogStorage`` (config: ``base_dir``, the folder of its databases) storing a planned
    asset check as one row, and a batch of asset materialisations (or of observations, or of planned
    materialisations) in one transaction per database (module docstring)."""

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> "PlatformSqliteEventLogStorage":
        return cls(inst_data=inst_data, **config_value)

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        """Store ``events`` as ``store_event`` stores each (module docstring): each run of two or more
        consecutive events of one batched kind in one transaction per database, any other event alone, in
        the batch's order. A run's planned events are one batch sorted by key (Dagster's
        ``_log_asset_planned_events``), so a chunk of ``DAGSTER_EVENT_BATCH_SIZE`` holds planned
        materialisations and then the planned checks: stored one at a time, the 565 events of such a chunk
        took 3.5 s of a 15 s backfill of 1,781 days.

        Raises what the databases raise, or ``DagsterInvariantViolationError`` when the index database returns
        no id for a row (as Dagster does). A run of one kind that fails leaves nothing of itself. When nothing
        of the batch was stored before a failure, the error reaches Dagster's ``handle_new_event``, which then
        stores each event alone, once. Otherwise this stores the rest one at a time itself, the failed events
        included, as Dagster's retry would but without storing again what was stored; only when that fails too
        does the error reach Dagster, whose retry then stores the whole batch again (as after a failure in
        Dagster's own one-at-a-time path). Without ``RETURNING`` (SQLite before 3.35) every batch is stored one
        event at a time, as by Dagster."""
        if not RETURNING:
            return super().store_event_batch(events)
        stored = 0
        try:
            for _, run in itertools.groupby(events, key=lambda event: event.get_dagster_event().event_type):
                group = list(run)
                if len(group) > 1 and {group[0].get_dagster_event().event_type} in BATCHED_KINDS:
                    self._store_one_kind(group)
                    stored += len(group)
                    continue
                for event in group:
                    self.store_event(event)
                    stored += 1
        except Exception:
            if not stored:
                raise
            for event in events[stored:]:  # Dagster's retry of the batch would store the first ones again
                self.store_event(event)

    def _store_one_kind(self, events: Sequence[EventLogEntry]) -> None:
        """Store ``events``, all of one batched kind, in one transaction per database; raises what the databases
        raise, after removing the rows this call committed to the run's database."""
        rows = [self._event_to_row(event) for event in events]
        written: dict[str, list[int]] = {}  # run id -> the ids of its rows in the run's database
        try:
            for run_id in dict.fromkeys(event.run_id for event in events):  # a batch is one run's
                with self.run_connection(run_id) as conn:
                    found = conn.execute(INSERT_RETURNING_IDS, [r for r in rows if r["run_id"] == run_id]).fetchall()
                written[run_id] = [row[0] for row in found]
            with self.index_transaction() as conn:
                index_batch(self, conn, events, rows)
        except Exception:
            for run_id, ids in written.items():
                with self.run_connection(run_id) as conn:
                    conn.execute(SqlEventLogStorageTable.delete().where(SqlEventLogStorageTable.c.id.in_(ids)))
            raise
