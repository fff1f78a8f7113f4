"""dagster-postgres's event log (``PostgresEventLogStorage``) with the platform's correction of planned
asset checks (:mod:`.planned_checks`) and a cheaper insert of a batch of asset events.

Why the batch insert is overridden: a single-run backfill records one materialisation per partition and
asset (3,562 for the 1,781-day file-drop backfill), which Dagster stores in batches of
``DAGSTER_EVENT_BATCH_SIZE`` events (the README's large-backfill setting: 1,000).
``PostgresEventLogStorage.store_event_batch`` inserts a batch as one ``INSERT ... VALUES (...), (...)``
statement that SQLAlchemy compiles with a bound parameter per value each time. Given the same rows as
parameter sets (an ``executemany``), SQLAlchemy 2 sends them through its "insertmanyvalues" path
(batches of rendered ``VALUES`` with ``RETURNING``, the ids in the order of the rows), which skips that
compilation. Measured on this 2-core machine for those 3,562 events, serialisation included (1.24-1.35 s
of it, unchanged): 2.25-2.63 s through Dagster's statement, 1.90-2.05 s through the executemany.

What follows the insert (the asset event tags, the assets' rows) is Dagster's own code, with one
difference: dagster-postgres updates the row of the batch's last event's asset only, so a batch of a
multi-asset batch would leave the other assets' latest materialisation behind (Dagster hands over a
batch per output, of one asset, so this is a safeguard); here each asset's row is updated with its own
last event (:func:`~integration_platform.event_log.batches.last_per_asset`), as storing the events one at a
time leaves it. And the insert, the tags and the assets' rows are one transaction (dagster-postgres commits
the insert first, so a failure after it had Dagster's per-event retry store the batch twice).
"""

from collections.abc import Mapping, Sequence
from typing import Any

from dagster import DagsterEventType
from dagster._core.events.log import EventLogEntry
from dagster._serdes import ConfigurableClassData
from dagster_postgres import PostgresEventLogStorage
from dagster_postgres.utils import get_token_provider_from_config, pg_url_from_config

from integration_platform.event_log.batches import index_batch
from integration_platform.event_log.planned_checks import PlannedChecksOnce

#: The batches inserted with an executemany; other kinds keep dagster-postgres's path.
EXECUTEMANY_KINDS = ({DagsterEventType.ASSET_MATERIALIZATION}, {DagsterEventType.ASSET_OBSERVATION})


class PlatformPostgresEventLogStorage(PlannedChecksOnce, PostgresEventLogStorage):
    """``PostgresEventLogStorage`` (config as dagster-postgres's: ``postgres_url`` or ``postgres_db``)
    storing a planned asset check as one row, and a batch of asset materialisations (or of observations)
    with one executemany (module docstring)."""

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> "PlatformPostgresEventLogStorage":
        return cls(
            inst_data=inst_data,
            postgres_url=pg_url_from_config(config_value),
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            token_provider=get_token_provider_from_config(config_value),
        )

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        """Store ``events`` as ``PostgresEventLogStorage.store_event_batch`` does; a non-empty batch of
        only materialisations or only observations is inserted as one executemany, in one transaction with
        its tags and the assets' rows. Raises what the database raises, or ``DagsterInvariantViolationError``
        when it returns no id for a row (as Dagster does), with nothing of the batch stored: Dagster's
        ``handle_new_event`` then stores each event alone."""
        kinds = {event.get_dagster_event().event_type for event in events}
        if not events or kinds not in EXECUTEMANY_KINDS:
            return super().store_event_batch(events)
        rows = [self._event_to_row(event) for event in events]
        with self.index_transaction() as conn:  # one transaction: nothing is left for Dagster's retry to double
            index_batch(self, conn, events, rows)
