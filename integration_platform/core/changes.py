"""Change data capture: a database's change log landed as change rows, its position advanced only after.

A cursor column sees neither deleted rows nor the intermediate versions of a row; a change log
(PostgreSQL's logical replication slot, MySQL/MariaDB's binlog) sees both. A change stream lands
like every other stream, through :func:`~integration_platform.core.landing.land` and
:func:`~integration_platform.core.micro_batches.land_micro_batches`: first a *snapshot* (a full
landing, exported consistent with the log's start position, so that snapshot and changes neither
miss nor repeat a change), then batches of changes. Each change row holds the table's columns and

- ``_ip_op``: ``snapshot``, ``insert``, ``update`` or ``delete`` (a delete carries only the key
  columns unless the table logs whole old rows);
- ``_ip_log_position``: the commit's position in the log (PostgreSQL: the commit LSN as an integer),
  ordering transactions;
- ``_ip_change_seq``: the change's order within its transaction;
- ``_ip_committed_at``: the commit time (the snapshot's: when it was taken).

Written here, not taken from a library, because the order is the landing guarantee (the
failure modes of change capture are all in it: positions saved before the data landed, slots
that never advance and fill the disk, duplicates after a restart or from two drains at once):

0. the whole capture holds the log's exclusive lock (a lock on the source server, named after the
   stream): a second drain started meanwhile fails at once instead of landing the same changes;
1. the log's cursor (a replication slot) is named in the snapshot's manifest; a run finds it, or
   takes a new snapshot with a new cursor (first run, full refresh, cursor lost);
2. a cursor behind the position of the newest landing (a run died between landing and
   confirming) is first moved to it, so nothing landed is read again;
3. each batch is landed and committed, and only then confirmed to the log (the slot's
   ``confirmed_flush_lsn`` moves): a run killed before the commit reads the batch again, one
   killed after the commit but before the confirmation skips it by step 2;
4. a batch with no change of the stream (other tables' WAL) is confirmed without a landing, so
   the log never retains more than one batch's worth for this stream;
5. cursors of the stream other than the one in use (left by a run killed during a snapshot) are
   dropped.
"""

import time
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import AbstractContextManager, closing
from dataclasses import dataclass, field
from typing import Any, Protocol

import pyarrow as pa

from integration_platform.core.extract import refuse_null_keys, refuse_reserved_columns
from integration_platform.core.lake import LakeStore
from integration_platform.core.landing import Manifest, active_manifests, land, list_manifests, stamped_window
from integration_platform.core.micro_batches import MicroBatch, MicroBatchStats, land_micro_batches
from integration_platform.core.streams import COMMITTED_COLUMN, OP_COLUMN, POSITION_COLUMN, SEQ_COLUMN, StreamSpec

#: The change columns' Arrow types (text, bigint, integer, timestamptz as the SQL readers give them).
CHANGE_SCHEMA = pa.schema(
    [
        pa.field(OP_COLUMN, pa.string()),
        pa.field(POSITION_COLUMN, pa.int64()),
        pa.field(SEQ_COLUMN, pa.int32()),
        pa.field(COMMITTED_COLUMN, pa.timestamp("us", "UTC")),
    ]
)
#: Manifest ``extra`` keys: the log cursor (slot) a snapshot started, and a landing's log position.
CURSOR_KEY = "log_cursor"
POSITION_KEY = "log_position"


class ChangeCaptureError(RuntimeError):
    """The change log cannot be landed as it is (a truncate, a value the log left out, a server not set
    up for capture); the message names the table and the fix."""


def refuse_renamed_columns(table: str, logged: Sequence[str], current: Sequence[str], at: str) -> None:
    """Raise :class:`ChangeCaptureError` when a change logged at ``at`` names a column the table no longer
    has (``logged``: its columns then; ``current``: the table's now, generated ones left out) while a
    current column is missing from it: the column was most likely renamed since (or dropped and
    another added), and matching by name would land it NULL for every waiting change, silently. A
    column only dropped, or only added, is matched by name as before."""
    logged_set, current_set = set(logged), set(current)
    gone = [name for name in logged if name not in current_set]
    new = [name for name in current if name not in logged_set]
    if gone and new:
        raise ChangeCaptureError(
            f"table {table}: the change at {at} has column(s) {gone} the table no longer has, and lacks its "
            f"column(s) {new} (renamed since?): its values cannot be matched to today's columns. Run the stream "
            "with full_refresh: true to take a new snapshot"
        )


@dataclass(frozen=True)
class ChangeLimits:
    """How much one run takes: batches of about ``batch_changes`` changes (whole transactions),
    the run stops when the log has nothing more, after ``max_changes`` or after ``max_seconds``."""

    batch_changes: int = 50_000
    max_changes: int = 5_000_000
    max_seconds: float = 3600.0


@dataclass
class ChangeBatch:
    """One batch read from the log: its change rows (``None`` when none concern the stream) and the
    position the log may be confirmed at once they landed (a kind's own text form)."""

    rows: pa.Table | None
    position: str
    changes: dict[str, int] = field(default_factory=dict)


class ChangeLog(Protocol):
    """A database's change log as :func:`capture` sees it (PostgreSQL: ``sources.sql.postgres_cdc``)."""

    def exclusive(self) -> AbstractContextManager[None]:
        """Held for a whole capture: one drain of the stream at a time (a second one would read the same
        landed position and land its changes again). Raises :class:`ChangeCaptureError` at once when
        another run holds it."""
        ...

    def snapshot(self, cursor: str) -> AbstractContextManager[tuple[pa.RecordBatchReader, str]]:
        """Create the log cursor ``cursor`` and yield the table's rows as of its start, with the
        start position; the snapshot stays readable until the context exits."""
        ...

    def resume(self, cursor: str, landed: str) -> bool:
        """False when ``cursor`` no longer exists; else move it forward to ``landed`` if behind."""
        ...

    def batches(self, cursor: str, limits: ChangeLimits) -> Generator[ChangeBatch, None, None]:
        """The changes after ``cursor``'s confirmed position, in log order, whole transactions; closed
        when the run stops taking them."""
        ...

    def confirm(self, cursor: str, position: str) -> None:
        """Tell the log everything up to ``position`` is safe (it may discard it)."""
        ...

    def drop_other_cursors(self, keep: str | None) -> list[str]:
        """Drop the stream's cursors other than ``keep``; returns their names."""
        ...

    def waiting(self, cursor: str, landed: str) -> tuple[bool, str | None]:
        """Whether a change of the table waits for log cursor ``cursor`` (the one the stream's snapshot
        started) after ``landed`` (the newest landing's position; a slot knows its own), and a label of
        the position looked from (``None``: nothing to look at yet). Consumes nothing."""
        ...

    def status(self, cursor: str, landed: str) -> dict[str, Any]:
        """What the materialisation shows about the cursor (``landed``: the newest landing's position) at
        least ``log_cursor_exists`` and, when it
        does, ``log_retained_bytes`` (log the server keeps for it), then the kind's own figures."""
        ...


@dataclass
class CaptureStats:
    """What one :func:`capture` did."""

    cursor: str = ""
    snapshot_rows: int | None = None
    changes: dict[str, int] = field(default_factory=dict)
    position: str = ""
    seconds: float = 0.0
    landing: MicroBatchStats = field(default_factory=MicroBatchStats)

    def metadata(self) -> dict[str, Any]:
        """The lake asset's materialisation metadata."""
        return {
            "log_cursor": self.cursor,
            "snapshot_rows": self.snapshot_rows if self.snapshot_rows is not None else 0,
            "snapshot_taken": self.snapshot_rows is not None,
            "rows_landed": self.landing.rows_landed + (self.snapshot_rows or 0),
            "changes_landed": self.landing.rows_landed,
            **{f"{op}s": self.changes.get(op, 0) for op in ("insert", "update", "delete")},
            "batches_landed": self.landing.batches,
            "log_position": self.position,
            "seconds": round(self.seconds, 3),
        }


def landed_position(store: LakeStore, spec: StreamSpec) -> tuple[str, str]:
    """The log cursor the stream's snapshot started and the log position of its newest landing (``""``
    for either when there is none)."""
    manifests = active_manifests(list_manifests(store, spec))
    snapshot = next((m for m in reversed(manifests) if m.full), None)
    cursor = str(snapshot.extra.get(CURSOR_KEY, "")) if snapshot else ""
    return cursor, str(manifests[-1].extra.get(POSITION_KEY, "")) if manifests else ""


def capture(
    store: LakeStore,
    spec: StreamSpec,
    log: ChangeLog,
    new_cursor: Callable[[], str],
    limits: ChangeLimits,
    run_id: str,
    *,
    full_refresh: bool = False,
    say: Callable[[str], None] = lambda _: None,
) -> CaptureStats:
    """Land the stream's changes since the last run; a snapshot first when needed (module doc).

    ``new_cursor()`` names a new log cursor (a replication slot) when a snapshot is taken.
    Raises whatever the log or the landing raises; what was landed and confirmed before stays so,
    and the next run resumes after it, neither losing nor repeating a change.
    """
    with log.exclusive():
        started = time.monotonic()
        stats = CaptureStats()
        cursor, landed = landed_position(store, spec)
        if full_refresh or not cursor or not landed or not log.resume(cursor, landed):
            gone = f"log cursor {cursor} is gone"
            reason = "full refresh" if full_refresh else "no snapshot yet" if not cursor else gone
            cursor = new_cursor()
            with log.snapshot(cursor) as (reader, position):
                refuse_reserved_columns(spec, reader.schema)
                manifest = land(
                    store,
                    spec,
                    stamped_window("snapshot", run_id),
                    refuse_null_keys(spec, reader),
                    reader.schema,
                    full=True,
                    extra={CURSOR_KEY: cursor, POSITION_KEY: position},
                )
            stats.snapshot_rows = manifest.rows
            stats.position = position
            say(f"{spec.path}: snapshot of {manifest.rows} rows at {position} ({reason}); log cursor {cursor}")
        stats.cursor = cursor
        dropped = log.drop_other_cursors(cursor)
        if dropped:
            say(f"{spec.path}: dropped stale log cursor(s) {', '.join(dropped)}")

        def micro_batches(batches: Iterator[ChangeBatch]) -> Iterator[MicroBatch]:
            for batch in batches:
                for op, count in batch.changes.items():
                    stats.changes[op] = stats.changes.get(op, 0) + count

                def confirm(_: Manifest | None, position: str = batch.position) -> None:
                    log.confirm(cursor, position)
                    stats.position = position

                yield MicroBatch(batch.rows, False, confirm, extra={POSITION_KEY: batch.position})

        # closed however the landing ends: reading the log holds a replication connection open
        with closing(log.batches(cursor, limits)) as batches:
            stats.landing = land_micro_batches(store, spec, micro_batches(batches), run_id)
        stats.seconds = time.monotonic() - started
        return stats
