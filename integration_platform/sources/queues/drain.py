"""Draining a queue or topic into the lake, batch by batch: land, then acknowledge.

Why our own loop: the order of the steps is the landing guarantee. For each batch:

1. take up to ``batch_size`` messages (waiting at most ``max_wait_seconds``);
2. decode them; when the broker says some may have been landed before (a redelivery after
   a run died between landing and acknowledging), drop the rows whose ``_ip_message_id`` the
   lake already holds (the ids of the stream's active landings, read once per run);
3. land the rows as one Parquet landing with its manifest (the commit);
4. publish the poison messages to the dead-letter destination, with confirms;
5. only then acknowledge the batch (RabbitMQ ``basic.ack``) or commit its offsets (Kafka).

A run killed anywhere before 5 leaves the batch unacknowledged: the broker delivers it again
and step 2 (and, behind it, the warehouse merge on ``_ip_message_id``) keeps each message to
one row. A run killed between 4 and 5 dead-letters those poison messages a second time
(dead letters are at-least-once; they keep their message id). Each landing has its own
window ``batch-<UTC time>-<run>``, so landings never overwrite one another.
"""

import datetime as dt
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import dagster as dg
import pyarrow as pa

from integration_platform.core.conform import known_schema
from integration_platform.core.extract import landed_keys, without_landed
from integration_platform.core.lake import LakeStore
from integration_platform.core.landing import Manifest, land, list_manifests
from integration_platform.core.streams import StreamSpec
from integration_platform.sources.queues.messages import MESSAGE_ID, Message, MessageDecoder


class MessageSource(Protocol):
    """A broker as the drain loop sees it (RabbitMQ: ``rabbitmq_stream``; Kafka: ``kafka_stream``)."""

    def next_batch(self, size: int, max_wait: float) -> Sequence[Message]:
        """Up to ``size`` messages, after at most ``max_wait`` seconds (none when idle)."""
        ...

    def maybe_landed(self, messages: Sequence[Message]) -> bool:
        """May the lake hold some of these already (redelivered, or below the landed offsets)?"""
        ...

    def dead_letter(self, message: Message, reason: str) -> None:
        """Publish a poison message to the dead-letter destination, confirmed."""
        ...

    def commit(self, messages: Sequence[Message], manifest: Manifest | None) -> None:
        """Acknowledge / commit every message of the batch (called after its landing)."""
        ...

    def landing_extra(self, messages: Sequence[Message]) -> dict[str, Any]:
        """What the batch's manifest records besides rows (Kafka: its offset ranges)."""
        ...

    def remaining(self) -> int | None:
        """Messages still waiting (queue depth or consumer lag), if the broker says."""
        ...

    def run_metadata(self) -> dict[str, Any]:
        """What the run's materialisation records besides the counts (Kafka: offsets)."""
        ...


@dataclass(frozen=True)
class DrainLimits:
    """How much one run takes: batches of ``batch_size`` messages, each closed after
    ``max_wait_seconds``; the run stops at an empty batch, at a short one when the broker
    reports nothing left, after ``max_messages`` or after ``max_seconds``."""

    batch_size: int = 10_000
    max_wait_seconds: float = 5.0
    max_messages: int = 1_000_000
    max_seconds: float = 600.0


@dataclass
class DrainStats:
    """What one run did; ``metadata()`` is the lake asset's materialisation metadata."""

    messages: int = 0
    rows_landed: int = 0
    batches: int = 0
    bytes: int = 0
    already_landed: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    seconds: float = 0.0
    #: Longest time from a batch in hand to the batch landed and acknowledged (seconds).
    batch_seconds_max: float = 0.0
    remaining: int | None = None
    windows: tuple[str, str] | None = None

    def metadata(self) -> dict[str, Any]:
        return {
            "dagster/row_count": self.rows_landed,
            "messages_consumed": self.messages,
            "batches_landed": self.batches,
            "bytes": self.bytes,
            "already_landed_dropped": self.already_landed,
            "duplicate_ids_dropped": self.duplicates,
            "dead_lettered": self.dead_lettered,
            "seconds": round(self.seconds, 3),
            "messages_per_second": round(self.messages / max(self.seconds, 1e-6)),
            "batch_seconds_max": round(self.batch_seconds_max, 3),
            "remaining_messages": self.remaining,
            "windows": " .. ".join(self.windows) if self.windows else "",
        }


def drain(
    context: dg.AssetExecutionContext,
    store: LakeStore,
    spec: StreamSpec,
    source: MessageSource,
    decoder: MessageDecoder,
    limits: DrainLimits,
) -> DrainStats:
    """Land batches of ``source`` until it is idle or a limit is reached (module doc).

    Raises whatever the broker or the landing raises; the batch in hand is then neither
    acknowledged nor lost (the broker delivers it again), and every earlier batch stays landed
    and acknowledged.

    Over 60 lines: receive, land, dead-letter and acknowledge are one loop whose order is the
    at-least-once guarantee; split, the order would be spread over functions that must not be reused apart.
    """
    stats = DrainStats()
    started = time.monotonic()
    decoder.known = known_schema(list_manifests(store, spec))
    run = context.run.run_id[:8]
    landed: pa.Table | None = None
    checked = False
    while stats.messages < limits.max_messages and time.monotonic() - started < limits.max_seconds:
        size = min(limits.batch_size, limits.max_messages - stats.messages)
        messages = source.next_batch(size, limits.max_wait_seconds)
        if not messages:
            break
        in_hand = time.monotonic()
        stats.messages += len(messages)
        decoded = decoder.decode(messages)
        table = decoded.table
        if table is not None and source.maybe_landed(messages):
            if not checked:  # the lake's ids are read once per run, then kept up to date here
                landed, checked = landed_keys(store, spec, [MESSAGE_ID]), True
            before = table.num_rows
            table = without_landed(table, landed, [MESSAGE_ID])
            stats.already_landed += before - table.num_rows
        manifest = None
        if table is not None and table.num_rows:
            window = f"batch-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S%f}-{run}"
            manifest = land(
                store, spec, window, table.to_batches(), table.schema, full=False, extra=source.landing_extra(messages)
            )
            stats.rows_landed += manifest.rows
            stats.bytes += manifest.bytes
            stats.batches += 1
            stats.windows = (stats.windows[0] if stats.windows else window, window)
            if checked:
                ids = table.select([MESSAGE_ID])
                landed = ids if landed is None else pa.concat_tables([landed, ids])
        for message, reason in decoded.poison:
            source.dead_letter(message, reason)
        source.commit(messages, manifest)
        stats.duplicates += decoded.duplicates
        stats.dead_lettered += len(decoded.poison)
        if decoded.changes:
            context.log.info(f"schema of {spec.path} changed: {'; '.join(decoded.changes[:10])}")
        stats.batch_seconds_max = max(stats.batch_seconds_max, time.monotonic() - in_hand)
        if len(messages) < size and not source.remaining():
            break  # a short batch with nothing left waiting: drained
    stats.seconds = time.monotonic() - started
    stats.remaining = source.remaining()
    context.log.info(
        f"{spec.path}: {stats.messages} messages, {stats.rows_landed} rows landed in {stats.batches} batch(es), "
        f"{stats.dead_lettered} dead-lettered, {stats.already_landed} already landed, in {stats.seconds:.2f}s"
    )
    return stats
