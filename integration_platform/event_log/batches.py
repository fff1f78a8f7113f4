"""What both of the platform's event logs (:mod:`.sqlite`, :mod:`.postgres`) do with a batch of asset
events in the index database: insert its rows, then the indexed tags of each event, then each asset's
row with its last event of the batch."""

from collections.abc import Sequence
from typing import Any

from dagster._core.errors import DagsterInvariantViolationError
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.event_log.schema import SqlEventLogStorageTable
from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage
from sqlalchemy.engine import Connection

#: Inserts event rows and returns their ids in the order of the rows (SQLAlchemy's "insertmanyvalues").
INSERT_RETURNING_IDS = SqlEventLogStorageTable.insert().returning(
    SqlEventLogStorageTable.c.id, sort_by_parameter_order=True
)


def last_per_asset(events: Sequence[EventLogEntry], event_ids: Sequence[int]) -> list[tuple[EventLogEntry, int]]:
    """Each asset's last event of ``events`` (with its id, from ``event_ids`` in the same order), in the order
    of those last events: what a batch leaves in the assets' rows when stored one event at a time."""
    last = {event.get_dagster_event().asset_key: (event, i) for event, i in zip(events, event_ids, strict=True)}
    return sorted(last.values(), key=lambda pair: pair[1])


def index_batch(
    storage: SqlEventLogStorage, conn: Connection, events: Sequence[EventLogEntry], rows: list[dict[str, Any]]
) -> None:
    """Store ``events`` (``rows``: their event-log rows, in the same order) in the index database on ``conn``,
    inside the caller's transaction, as ``store_event`` stores each of them there: the rows, the indexed
    tags of each event (Dagster's ``_store_asset_event_tags``) and each asset's row updated with its last
    event (``_store_asset_event``). Raises ``DagsterInvariantViolationError`` when the database returns no
    id for a row (as Dagster does)."""
    event_ids = [row[0] for row in conn.execute(INSERT_RETURNING_IDS, rows).fetchall()]
    if len(event_ids) != len(events) or any(event_id is None for event_id in event_ids):
        raise DagsterInvariantViolationError("Cannot store asset event tags for null event id.")
    dagster: Any = storage  # Dagster's own private helpers, so that the rows are exactly Dagster's
    dagster._store_asset_event_tags(conn, events, event_ids)
    for event, event_id in last_per_asset(events, event_ids):
        dagster._store_asset_event(conn, event, event_id)
