"""Landing a log-like source in micro-batches: land each batch, then acknowledge it.

A queue, a topic (and a change stream after them) has no window to extract: it hands out
batches and forgets what was acknowledged. Each batch is therefore its own landing, in its own
window ``batch-<UTC time>-<run>`` so landings never overwrite one another, and the source learns
that a batch is safe only from :attr:`MicroBatch.acknowledge`, called after the landing's manifest
is committed. Written here, not taken from a library, because that order is the landing
guarantee: for each batch

1. when the source says some rows may have been landed before (a redelivery after a run died
   between landing and acknowledging), drop the rows whose primary key the stream's active
   landings already hold (:func:`~integration_platform.core.extract.landed_keys`, read once per
   run on the first such batch and kept up to date here);
2. land the rest as one Parquet landing with its manifest (the commit);
3. only then call ``acknowledge`` (the kind dead-letters its poison messages and acknowledges /
   commits offsets there).

A run killed anywhere before 3 leaves the batch unacknowledged: the source delivers it again, step
1 (and, behind it, the warehouse merge on the primary key) keeps each row once.
"""

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from integration_platform.core.extract import landed_keys, refuse_null_keys, refuse_reserved_columns, without_landed
from integration_platform.core.lake import LakeStore
from integration_platform.core.landing import Manifest, land, stamped_window
from integration_platform.core.streams import StreamSpec


@dataclass
class MicroBatch:
    """One batch of a log-like source, as the kind's reader hands it over.

    ``rows``: the decoded rows (``None`` or empty: nothing to land, e.g. only poison messages);
    ``maybe_landed``: the lake may already hold some of them; ``extra``: what the manifest records
    besides the rows (Kafka: offset ranges); ``acknowledge``: called with the committed manifest
    (``None`` when nothing landed) once the batch is safe; ``received_at``: ``time.monotonic()``
    when the batch was in hand, for :attr:`MicroBatchStats.batch_seconds_max`.
    """

    rows: pa.Table | None
    maybe_landed: bool
    acknowledge: Callable[[Manifest | None], None]
    extra: dict[str, Any] = field(default_factory=dict)
    received_at: float = field(default_factory=time.monotonic)


@dataclass
class MicroBatchStats:
    """What :func:`land_micro_batches` did: rows and bytes landed, batches landed, rows dropped as
    already landed, the longest time from a batch in hand to it landed and acknowledged (seconds)
    and the first and last window."""

    rows_landed: int = 0
    bytes: int = 0
    batches: int = 0
    already_landed: int = 0
    batch_seconds_max: float = 0.0
    windows: tuple[str, str] | None = None


def land_micro_batches(
    store: LakeStore, spec: StreamSpec, batches: Iterable[MicroBatch], run_id: str
) -> MicroBatchStats:
    """Land every batch of ``batches`` in order, each acknowledged after its commit (module doc).

    ``spec.primary_key`` names what "already landed" compares (required: a redelivered batch
    without a key could not be told from new rows). ``run_id``: its first 8 characters end each
    window's name.

    Raises ``ValueError`` when ``spec`` has no primary key; whatever ``land`` or the source
    raises, after which the batch in hand is neither acknowledged nor lost and every earlier batch
    stays landed and acknowledged.
    """
    if not spec.primary_key:
        raise ValueError(f"stream {spec.path}: micro-batches need a primary key to recognise redelivered rows")
    keys = list(spec.primary_key)
    stats = MicroBatchStats()
    landed: pa.Table | None = None
    checked = False
    for batch in batches:
        table = batch.rows
        if table is not None and batch.maybe_landed:
            if not checked:
                landed, checked = landed_keys(store, spec, keys), True
            before = table.num_rows
            table = without_landed(table, landed, keys)
            stats.already_landed += before - table.num_rows
        manifest = None
        if table is not None and table.num_rows:
            window = stamped_window("batch", run_id)
            refuse_reserved_columns(spec, table.schema)
            batches = refuse_null_keys(spec, table.to_batches())
            manifest = land(store, spec, window, batches, table.schema, full=False, extra=batch.extra)
            stats.rows_landed += manifest.rows
            stats.bytes += manifest.bytes
            stats.batches += 1
            stats.windows = (stats.windows[0] if stats.windows else window, window)
            if checked:
                ids = table.select(keys)
                landed = ids if landed is None else pa.concat_tables([landed, ids])
        batch.acknowledge(manifest)
        stats.batch_seconds_max = max(stats.batch_seconds_max, time.monotonic() - batch.received_at)
    return stats
