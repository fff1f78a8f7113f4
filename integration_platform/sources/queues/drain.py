"""Draining a queue or topic: the queue kind's reader of micro-batches.

The landing itself, and its order (drop what the lake already holds, land, then acknowledge), is
the core's :func:`~integration_platform.core.micro_batches.land_micro_batches`, shared with every
log-like source. What is the queue's own is here: taking up to ``batch_size`` messages (waiting
at most ``max_wait_seconds``), decoding them under the stream's known schema, and what happens
when a batch is safe: publish its poison messages to the dead-letter destination, with confirms,
then acknowledge the batch (RabbitMQ ``basic.ack``) or commit its offsets (Kafka).

A run killed between dead-lettering and acknowledging dead-letters those poison messages a second
time (dead letters are at-least-once; they keep their message id).

"Drop what the lake already holds" trusts the source's ids: a source that can no longer tell its
new messages from landed ones (a Kafka topic deleted and created again under its name, whose
offsets, and so its ids, start again) refuses to open instead, before anything is consumed
(``kafka_stream.TopicRecreated``), so that no new message is dropped as a duplicate of an old one.
"""

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from integration_platform.core.conform import known_schema
from integration_platform.core.lake import LakeStore
from integration_platform.core.landing import Manifest, list_manifests
from integration_platform.core.micro_batches import MicroBatch, MicroBatchStats, land_micro_batches
from integration_platform.core.streams import StreamSpec
from integration_platform.resources.brokers import BrokerError
from integration_platform.sources.queues.messages import Message, MessageBatch, MessageDecoder

LOG = logging.getLogger(__name__)


class MessageSource(Protocol):
    """A broker as the drain loop sees it (RabbitMQ: ``rabbitmq_stream``; Kafka: ``kafka_stream``)."""

    def next_batch(self, size: int, max_wait: float) -> MessageBatch:
        """Up to ``size`` messages, after at most ``max_wait`` seconds (none when idle)."""
        ...

    def maybe_landed(self, batch: MessageBatch) -> bool:
        """May the lake hold some of these already (redelivered, or below the landed offsets)?"""
        ...

    def dead_letter(self, message: Message, reason: str) -> None:
        """Publish a poison message to the dead-letter destination, confirmed."""
        ...

    def commit(self, batch: MessageBatch, manifest: Manifest | None) -> None:
        """Acknowledge / commit every message of the batch (called after its landing)."""
        ...

    def landing_extra(self, batch: MessageBatch) -> dict[str, Any]:
        """What the batch's manifest records besides rows (Kafka: its offset ranges)."""
        ...

    def remaining(self) -> int | None:
        """Messages still waiting (queue depth or consumer lag, with what this run holds unacknowledged),
        if the broker says."""
        ...

    def stop(self) -> None:
        """Take no more messages: the run took its last batch (RabbitMQ cancels its consumer, so that
        ``remaining`` can count what was prefetched beyond it)."""
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
    duplicates: int = 0
    dead_lettered: int = 0
    seconds: float = 0.0
    remaining: int | None = None
    landing: MicroBatchStats = field(default_factory=MicroBatchStats)

    def metadata(self) -> dict[str, Any]:
        landing = self.landing
        return {
            "rows_landed": landing.rows_landed,
            "messages_consumed": self.messages,
            "batches_landed": landing.batches,
            "bytes": landing.bytes,
            "already_landed_dropped": landing.already_landed,
            "duplicate_ids_dropped": self.duplicates,
            "dead_lettered": self.dead_lettered,
            "seconds": round(self.seconds, 3),
            "messages_per_second": round(self.messages / max(self.seconds, 1e-6)),
            "batch_seconds_max": round(landing.batch_seconds_max, 3),
            "remaining_messages": self.remaining,
            "windows": " .. ".join(landing.windows) if landing.windows else "",
        }


def message_batches(
    source: MessageSource,
    decoder: MessageDecoder,
    limits: DrainLimits,
    stats: DrainStats,
    log: Callable[[str], None],
) -> Iterator[MicroBatch]:
    """Batches of ``source`` until it is idle or a limit is reached, counted in ``stats``.

    A batch's ``acknowledge`` dead-letters its poison messages, then acknowledges it. The generator
    resumes only after the previous batch was landed and acknowledged, so "a short batch with
    nothing left waiting" is judged on the broker's state after that acknowledgement.
    """
    started = time.monotonic()
    while stats.messages < limits.max_messages and time.monotonic() - started < limits.max_seconds:
        size = min(limits.batch_size, limits.max_messages - stats.messages)
        batch = source.next_batch(size, limits.max_wait_seconds)
        if not len(batch):
            return
        received_at = time.monotonic()
        stats.messages += len(batch)
        decoded = decoder.decode(batch)

        def acknowledge(
            manifest: Manifest | None, batch: MessageBatch = batch, poison: list[tuple[Message, str]] = decoded.poison
        ) -> None:
            for message, reason in poison:
                source.dead_letter(message, reason)
            source.commit(batch, manifest)

        yield MicroBatch(
            decoded.table,
            decoded.table is not None and source.maybe_landed(batch),
            acknowledge,
            extra=source.landing_extra(batch),
            received_at=received_at,
        )
        stats.duplicates += decoded.duplicates
        stats.dead_lettered += len(decoded.poison)
        if decoded.changes:
            log(f"schema changed: {'; '.join(decoded.changes[:10])}")
        if len(batch) < size and not source.remaining():
            return  # a short batch with nothing left waiting: drained


def drain(
    store: LakeStore,
    spec: StreamSpec,
    source: MessageSource,
    decoder: MessageDecoder,
    limits: DrainLimits,
    run_id: str,
    log: Callable[[str], None],
    warn: Callable[[str], None] = LOG.warning,
) -> DrainStats:
    """Land batches of ``source`` until it is idle or a limit is reached (module doc).

    Raises whatever the broker or the landing raises; the batch in hand is then neither
    acknowledged nor lost (the broker delivers it again), and every earlier batch stays landed
    and acknowledged. Except once every batch is landed and acknowledged: a :class:`BrokerError`
    from the source's ``stop()`` or ``remaining()`` (which only measure what is left, for the
    metadata) fails no run whose work is done; it is passed to ``warn`` and ``remaining`` is ``None``.
    """
    stats = DrainStats()
    started = time.monotonic()
    decoder.known = known_schema(list_manifests(store, spec))
    stats.landing = land_micro_batches(
        store, spec, message_batches(source, decoder, limits, stats, lambda line: log(f"{spec.path}: {line}")), run_id
    )
    stats.seconds = time.monotonic() - started
    try:
        source.stop()
        stats.remaining = source.remaining()
    except BrokerError as exc:
        warn(f"{spec.path}: every batch is landed and acknowledged, but what remains is unknown: {exc}")
        stats.remaining = None
    log(
        f"{spec.path}: {stats.messages} messages, {stats.landing.rows_landed} rows landed in "
        f"{stats.landing.batches} batch(es), {stats.dead_lettered} dead-lettered, "
        f"{stats.landing.already_landed} already landed, in {stats.seconds:.2f}s"
    )
    return stats
