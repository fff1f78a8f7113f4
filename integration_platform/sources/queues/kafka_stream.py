"""A Kafka topic as a :class:`~integration_platform.sources.queues.drain.MessageSource`.

The consumer is *assigned* every partition of the topic (no group rebalance) at the group's
committed offsets, or where the run config resets it: ``earliest``, ``latest`` or a
``timestamp`` (``offsets_for_times``, Kafka 0.10.1+). A partition the group never committed
starts at its earliest offset. After each landing the batch's offsets are committed
synchronously (last offset + 1 per partition); each manifest records the batch's offset range
per partition, and so does the run's materialisation metadata.

A message below the highest offset the lake already holds for its partition (a batch landed by
a run that died before committing, or a reset to an earlier offset) may be landed already: the
batch is checked against the ids in the lake (see ``drain.py``). The broker id of a Kafka
message is ``topic/partition/offset``.

That holds only while the topic is the one the lake and the group's committed offsets describe.
A topic deleted and created again under its name starts its offsets at 0 again (and a partition
can lose its tail in an unclean leader election): its new messages would take the ids of landed
ones and be dropped as already landed, or lie below a committed offset and be skipped. So before
it consumes anything, each run checks (:meth:`KafkaTopicSource.check_same_topic`), and raises
:class:`TopicRecreated` naming the topic, the partitions, the offsets and the remedy:

Only the lake's landings of the stream's current ``topic`` count (manifest ``topic``). It raises when:

- (broker ids only) the topic id differs from the latest one the lake's manifests of the topic
  record (KIP-516, Kafka 2.8+, ``describe_topics``; a broker told to be older, one that answers
  the zero id, as noida-db and Kafka 0.9 do, or a failed ``describe_topics``, logged as a warning,
  gives none and the check is skipped). Not with ids from the message: a batch whose messages are
  all duplicates writes no manifest, so records no id, but commits its offsets, so after a
  re-creation the lake's latest id could stay the old one and fail every run for ever;
- (runs that start from the group's committed offsets, ``offset_reset: committed``) a partition's
  end is below the group's committed offset;
- (broker ids only) a partition's end is below the next offset after the highest one the lake
  holds, or a partition the lake holds is gone (Kafka never removes one).

A partition's end is its ``read_uncommitted`` end offset (ListOffsets, one request per leader;
Kafka 0.9 and noida-db answer it), not the consumer's ``read_committed`` watermark, which stops at
an open transaction; an end below is read again after :data:`RECHECK_SECONDS` and counts only if
it still is, since a new leader on a broker before 2.2 can report a lower one for a moment (KIP-207).

Not caught: a topic re-created and filled past the old offsets before the next run, on a broker
without topic ids, or with ids from the message on any broker; with broker ids its first messages
would be dropped as already landed (README, queues), with ids from the message those below the
committed offsets skipped. With broker ids the remedy is a new stream (its own lake path,
warehouse table and group): the landed rows keep their ids, which the new topic's messages would
otherwise take. With ids from the message (``key``, ``field``, ``body_sha256``) it is
``offset_reset: earliest`` (a run started by a reset replaces each committed offset beyond its
partition's end with its start).

Columns besides the body's fields: ``_ip_message_id``, ``_ip_topic``, ``_ip_partition``,
``_ip_offset``, ``_ip_key`` (the key as text, see :func:`key_text`), ``_ip_timestamp`` (the message timestamp,
Kafka 0.10+; null before), ``_ip_headers`` (see :func:`headers_json`; Kafka 0.11+, null without
headers) and ``_ip_received_at``.
"""

import base64
import datetime as dt
import json
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Literal, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc
from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    OFFSET_INVALID,
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    IsolationLevel,
    KafkaError,
    KafkaException,
    TopicCollection,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, OffsetSpec

from integration_platform.core.lake import LakeStore
from integration_platform.core.landing import Manifest, list_manifests
from integration_platform.core.streams import StreamSpec
from integration_platform.outbound.publish import PublishSpec
from integration_platform.resources.brokers import BrokerError
from integration_platform.resources.kafka import RECORD_V2_SINCE, KafkaResource
from integration_platform.sources.queues.messages import Message, MessageBatch, escaped_text, key_text

ATTRIBUTES = pa.schema(
    [
        ("_ip_topic", pa.string()),
        ("_ip_partition", pa.int32()),
        ("_ip_offset", pa.int64()),
        ("_ip_key", pa.string()),
        ("_ip_timestamp", pa.timestamp("us", tz="UTC")),
        ("_ip_headers", pa.string()),
        ("_ip_received_at", pa.timestamp("us", tz="UTC")),
    ]
)
Reset = Literal["committed", "earliest", "latest", "timestamp"]
#: ListOffsets v1 (offsets_for_times) arrived in Kafka 0.10.1; headers with RECORD_V2_SINCE (0.11).
TIMESTAMP_LOOKUP_SINCE = (0, 10, 1)
#: Topic ids (KIP-516, Metadata v10) arrived in Kafka 2.8.
TOPIC_ID_SINCE = (2, 8)
REASON_HEADER = "x-ip-dead-letter-reason"
#: Header of a dead letter sent without the value it was too large to carry (:meth:`KafkaTopicSource.dead_letter`).
OMITTED_HEADER = "x-ip-dead-letter-omitted"
#: commit_transaction tries on retriable errors, each bounded by the resource's timeout.
COMMIT_ATTEMPTS = 3
#: Seconds before the end offsets are read again when one is below an offset the group or the lake
#: holds: a new leader on a broker before 2.2 can report a lower high watermark for a moment (KIP-207).
RECHECK_SECONDS = 1.0
LOG = logging.getLogger(__name__)


#: A message's headers as confluent-kafka gives them (consumed: a list of ``(name, bytes or None)``).
Headers = Mapping[str, str | bytes | None] | Sequence[tuple[str, str | bytes | None]] | None


def _header_items(headers: Headers) -> list[tuple[str, str | bytes | None]]:
    """``headers`` as ``(name, value)`` pairs in order (none for ``None``)."""
    return list(headers.items() if isinstance(headers, Mapping) else headers or [])


def headers_json(headers: Headers) -> str | None:
    """A message's headers as a JSON object (``None`` without any): each name to its value as
    text (UTF-8; bytes that are not UTF-8 as ``\\xNN`` escapes; a null value as ``null``); a name
    sent more than once maps to the array of its values in order. Query it in DuckDB as
    ``_ip_headers->>'name'``."""
    if not headers:
        return None
    values: dict[str, list[str | None]] = {}
    for name, value in _header_items(headers):
        values.setdefault(name, []).append(escaped_text(value))
    return json.dumps({name: found[0] if len(found) == 1 else found for name, found in values.items()})


def _texts(keys: Sequence[bytes | str | None]) -> pa.Array:
    """Message keys as a string array, each as :func:`key_text` writes it (backslashes doubled, bytes
    that are not UTF-8 as ``\\xNN``), so that distinct keys stay distinct ids."""
    try:
        texts = pa.array(keys, pa.binary()).cast(pa.string())
    except (pa.ArrowInvalid, TypeError):  # not UTF-8, or already text
        return pa.array([key_text(k) for k in keys], pa.string())
    return pc.replace_substring(texts, "\\", "\\\\")


class KafkaRef(NamedTuple):
    """A consumed message's place (``partition``, ``offset``) and what a dead letter must send as it came:
    the ``key`` bytes and the ``headers`` (librdkafka's list of ``(name, bytes or None)``, ``None`` without)."""

    partition: int
    offset: int
    key: bytes | None
    headers: Headers


class Landed(NamedTuple):
    """What the lake holds of a topic: per partition, the next offset after the highest one any
    landing holds (``through``), and the topic id the latest landing recorded (``None`` without)."""

    through: dict[int, int]
    topic_id: str | None


def landed_offsets(store: LakeStore, spec: StreamSpec, topic: str) -> Landed:
    """What the stream's landings of ``topic`` hold (:class:`Landed`), from its manifests in landing
    order. Only manifests whose ``topic`` is ``topic`` count: a stream whose ``topic`` was changed
    holds offsets and a topic id of the old topic too, which say nothing about the new one."""
    through: dict[int, int] = {}
    topic_id: str | None = None
    for manifest in list_manifests(store, spec):
        if manifest.extra.get("topic") != topic:
            continue
        for partition, (_, next_offset) in manifest.extra.get("offsets", {}).items():
            through[int(partition)] = max(through.get(int(partition), 0), int(next_offset))
        topic_id = manifest.extra.get("topic_id") or topic_id
    return Landed(through, topic_id)


class TopicRecreated(BrokerError):
    """The topic on the broker is not the one the lake and the group's committed offsets describe
    (deleted and created again under its name, or truncated): nothing was consumed."""


class KafkaTopicSource:
    """Consumes ``topic`` as ``group_id``; poison goes to ``dead_letter_topic`` (module doc)."""

    def __init__(
        self,
        kafka: KafkaResource,
        consumer: Consumer,
        topic: str,
        *,
        dead_letter_topic: str,
        landed: Landed,
        reset: Reset = "committed",
        reset_timestamp: dt.datetime | None = None,
        offset_ids: bool = True,
    ) -> None:
        """Assign every partition of ``topic`` at its start offset (module doc). ``landed``: what the lake
        holds; ``offset_ids``: the stream's ids are the broker's (``topic/partition/offset``).

        Raises :class:`TopicRecreated` (see :meth:`check_same_topic`), :class:`BrokerError` when the
        topic or its offsets cannot be read, ``ValueError`` for ``timestamp`` without ``reset_timestamp``."""
        self.kafka, self.consumer, self.topic, self.dlt = kafka, consumer, topic, dead_letter_topic
        self.landed_through = landed.through
        self.partitions = kafka.partitions(consumer, topic)
        self._admin: AdminClient | None = None
        self.topic_id = self._topic_id()
        self.from_committed = reset == "committed"
        self.group_offsets = committed_offsets(kafka, consumer, topic, self.partitions)
        self.start = self._start_offsets(reset, reset_timestamp)
        #: Committed offsets beyond their partition's end that this run's reset start replaced.
        self.replaced: dict[int, int] = {}
        self.check_same_topic(landed, offset_ids)
        self.committed: dict[int, int] = dict(self.start)
        self._producer: Any = None
        consumer.assign([TopicPartition(topic, p, offset) for p, offset in self.start.items()])

    def _topic_id(self) -> str | None:
        """The topic's id (KIP-516) as Kafka prints it, or ``None``: a broker told to be older than 2.8,
        one that answers the zero id (noida-db), or a ``describe_topics`` that fails (a warning; the offset
        checks of :meth:`check_same_topic` still apply)."""
        if not self.kafka.supports(TOPIC_ID_SINCE):
            return None
        try:
            found = self.admin().describe_topics(TopicCollection([self.topic]), request_timeout=self.kafka.timeout)
            uuid = found[self.topic].result(self.kafka.timeout).topic_id
        except Exception as exc:  # KafkaException, a timeout, or a client without the call
            LOG.warning(
                "topic id of %r unknown, so a topic re-created and refilled past the landed offsets is not caught: %s",
                self.topic,
                self.kafka.error("describe_topics", exc),
            )
            return None
        if uuid is None or (uuid.get_most_significant_bits() == 0 and uuid.get_least_significant_bits() == 0):
            return None
        return str(uuid)

    def admin(self) -> AdminClient:
        """The run's one AdminClient (topic id and end offsets), made at first use."""
        if self._admin is None:
            self._admin = self.kafka.new_admin()
        return self._admin

    def end_offsets(self, partitions: Sequence[int]) -> dict[int, int]:
        """Each partition's end (the offset its next message takes) as a ``read_uncommitted``
        consumer sees it, in one ListOffsets request per leader: a consumer's watermark is the last
        stable offset under librdkafka's default ``read_committed``, below an offset a
        ``read_uncommitted`` tool committed while a transaction is open. Works on Kafka 0.9
        (ListOffsets v0) too. Raises :class:`BrokerError`."""
        if not partitions:
            return {}
        try:
            found = self.admin().list_offsets(
                {TopicPartition(self.topic, p): OffsetSpec.latest() for p in partitions},
                isolation_level=IsolationLevel.READ_UNCOMMITTED,
                request_timeout=self.kafka.timeout,
            )
            return {tp.partition: int(future.result(self.kafka.timeout).offset) for tp, future in found.items()}
        except Exception as exc:  # KafkaException, or a timeout
            raise self.kafka.error(f"end offsets of {self.topic!r}", exc) from None

    def check_same_topic(self, landed: Landed, offset_ids: bool) -> None:
        """Raise :class:`TopicRecreated` when the topic is not the one ``landed`` and the group's
        committed offsets describe, under the conditions of the module doc: with broker ids
        (``offset_ids``), a topic id other than the lake's latest, a partition the lake holds gone,
        or an end offset below the lake's; when the run starts from committed offsets, an end offset
        below the group's. An end offset below is read again after :data:`RECHECK_SECONDS` first.

        A run that starts elsewhere (``offset_reset``) and passes commits its start offset at once
        for each partition whose committed offset is beyond its end (recorded in ``replaced``):
        a partition it takes no message from would keep that offset, and fail every later run.
        Raises :class:`BrokerError` when an end offset cannot be read or that commit fails."""
        where = f"topic {self.topic!r} on {self.kafka.where}"
        if offset_ids:
            remedy = (
                "The landed rows keep their ids (topic/partition/offset), which the new messages would take: "
                "land the topic as it is now as a new stream (another 'name', so another lake path, warehouse "
                "table and default group; a new 'group_id' too if the stream sets one)."
            )
        else:
            remedy = (
                "Run once with offset_reset: earliest (the stream's ids come from the messages, so the ones "
                "landed before are still recognised), or land the topic as a new stream."
            )
        # Broker ids only: with ids from the messages a batch whose every message is a duplicate writes
        # no manifest (so records no topic id) but still commits its offsets, so after a re-creation
        # and the remedy the lake's latest id could stay the old topic's, failing every run for ever.
        if offset_ids and self.topic_id and landed.topic_id and self.topic_id != landed.topic_id:
            raise TopicRecreated(
                f"{where} was re-created: its topic id is {self.topic_id}, the lake's landings are of topic id "
                f"{landed.topic_id}. Nothing was consumed. {remedy}"
            )
        problems = [  # Kafka never takes a partition away: only a new topic has fewer
            f"partition {partition} is gone, but the lake holds offsets through {held - 1}"
            for partition, held in sorted(landed.through.items())
            if offset_ids and held > 0 and partition not in self.partitions
        ]
        committed = {p: self.group_offsets.get(p, -1) for p in self.partitions}
        held = {p: landed.through.get(p, 0) if offset_ids else 0 for p in self.partitions}
        ends = self.end_offsets([p for p in self.partitions if max(committed[p], held[p]) > 0])
        below = [p for p, end in ends.items() if max(committed[p], held[p]) > end]
        if below:  # one reading is no proof (KIP-207): only an end still below a moment later counts
            time.sleep(RECHECK_SECONDS)
            ends.update(self.end_offsets(below))
        for partition, end in sorted(ends.items()):
            if committed[partition] > end and not self.from_committed:
                self.replaced[partition], committed[partition] = committed[partition], -1
            beyond = [
                f"the group's committed offset is {committed[partition]}" if committed[partition] > end else "",
                f"the lake holds offsets through {held[partition] - 1}" if held[partition] > end else "",
            ]
            if any(beyond):
                problems.append(
                    f"partition {partition}'s next offset (high watermark) is {end}, "
                    f"but {' and '.join(filter(None, beyond))}"
                )
        if problems:
            raise TopicRecreated(
                f"{where} was re-created or truncated since it was landed: {'; '.join(problems)}. Its new messages "
                f"would be dropped as already landed or skipped; nothing was consumed. {remedy}"
            )
        if self.replaced:
            offsets = [TopicPartition(self.topic, p, self.start[p]) for p in sorted(self.replaced)]
            try:
                self.consumer.commit(offsets=offsets, asynchronous=False)
            except Exception as exc:
                raise self.kafka.error(f"committing offsets of {self.topic!r}", exc) from None
            LOG.warning("%s: committed offsets beyond the end replaced by the reset's start: %s", where, offsets)

    def _start_offsets(self, reset: Reset, at: dt.datetime | None) -> dict[int, int]:
        """Each partition's first offset to read: the reset's, or the group's committed one (the
        earliest where none)."""
        try:
            if reset == "timestamp":
                if at is None:
                    raise ValueError("reset 'timestamp' needs reset_timestamp")
                if not self.kafka.supports(TIMESTAMP_LOOKUP_SINCE):
                    raise BrokerError(
                        f"reset to a timestamp needs Kafka >= 0.10.1 (ListOffsets v1); {self.kafka.where} is "
                        f"configured as {'.'.join(map(str, self.kafka.broker_version() or ()))}"
                    )
                millis = int(at.timestamp() * 1000)
                found = self.consumer.offsets_for_times(
                    [TopicPartition(self.topic, p, millis) for p in self.partitions], timeout=self.kafka.timeout
                )
                return {tp.partition: self._resolve(tp.partition, tp.offset, OFFSET_END) for tp in found}
            if reset in ("earliest", "latest"):
                whence = OFFSET_BEGINNING if reset == "earliest" else OFFSET_END
                return {p: self._resolve(p, whence, whence) for p in self.partitions}
            return {
                p: self._resolve(p, self.group_offsets.get(p, OFFSET_INVALID), OFFSET_BEGINNING)
                for p in self.partitions
            }
        except BrokerError:
            raise
        except Exception as exc:  # KafkaException, or librdkafka's own errors
            raise self.kafka.error(f"offsets of {self.topic!r}", exc) from None

    def _resolve(self, partition: int, offset: int, missing: int) -> int:
        """A concrete offset: logical ones (beginning, end, none committed) from the watermarks."""
        if offset >= 0:
            return offset
        low, high = self.consumer.get_watermark_offsets(
            TopicPartition(self.topic, partition), timeout=self.kafka.timeout, cached=False
        )
        whence = missing if offset in (OFFSET_INVALID, -1) else offset
        return int(low) if whence == OFFSET_BEGINNING else int(high)

    def next_batch(self, size: int, max_wait: float) -> MessageBatch:
        raw = self.consumer.consume(num_messages=size, timeout=max_wait)
        received = dt.datetime.now(dt.UTC)
        for consumed in raw:
            error = consumed.error()
            if error is not None and error.code() != KafkaError._PARTITION_EOF:
                raise self.kafka.error(f"consuming {self.topic!r}", error)
        raw = [m for m in raw if m.error() is None]
        partitions = pa.array([m.partition() for m in raw], pa.int32())
        offsets = pa.array([m.offset() for m in raw], pa.int64())
        raw_keys = [m.key() for m in raw]
        keys = _texts(raw_keys)
        stamps = [m.timestamp() for m in raw]
        headers = [m.headers() for m in raw]
        attributes = pa.table(
            [
                pa.repeat(pa.scalar(self.topic, pa.string()), len(raw)),
                partitions,
                offsets,
                keys,
                # microseconds since the epoch, as Arrow takes them for the column's type (a
                # datetime per message cost an eighth of the drain's CPU, measured)
                pa.array([None if k == TIMESTAMP_NOT_AVAILABLE else ms * 1000 for k, ms in stamps], ATTRIBUTES[4].type),
                pa.array([headers_json(h) if h else None for h in headers], pa.string()),
                pa.repeat(pa.scalar(received, ATTRIBUTES[6].type), len(raw)),
            ],
            schema=ATTRIBUTES,
        )
        ids = pc.binary_join_element_wise(self.topic, partitions.cast(pa.string()), offsets.cast(pa.string()), "/")
        bodies = [m.value() or b"" for m in raw]

        def message(i: int) -> Message:
            partition, offset = partitions[i].as_py(), offsets[i].as_py()
            return Message(
                bodies[i],
                ids[i].as_py(),
                f"topic {self.topic} partition {partition} offset {offset}",
                keys[i].as_py(),
                offset < self.landed_through.get(partition, 0),
                KafkaRef(partition, offset, raw_keys[i], headers[i]),
            )

        return MessageBatch(bodies, ids, keys, attributes, message)

    def maybe_landed(self, batch: MessageBatch) -> bool:
        return any(low < self.landed_through.get(p, 0) for p, (low, _) in self._ranges(batch).items())

    def _ranges(self, batch: MessageBatch) -> dict[int, tuple[int, int]]:
        """Per partition, the lowest and the highest offset of the batch."""
        ranges = batch.attributes.group_by("_ip_partition").aggregate([("_ip_offset", "min"), ("_ip_offset", "max")])
        return {
            p: (low, high)
            for p, low, high in zip(
                ranges["_ip_partition"].to_pylist(),
                ranges["_ip_offset_min"].to_pylist(),
                ranges["_ip_offset_max"].to_pylist(),
                strict=True,
            )
        }

    def dead_letter(self, message: Message, reason: str) -> None:
        """Send ``message`` to the dead-letter topic as it came: its value, its key bytes and (0.11+) its
        headers, then the reason and origin headers (``x-ip-dead-letter-reason``, ``x-ip-source-topic``,
        ``-partition``, ``-offset``), which replace any of those names it carried (dead-lettered before).

        A dead letter larger than the producer or the dead-letter topic takes (``MSG_SIZE_TOO_LARGE``: a
        poison message near the source topic's own limit, or on Kafka 0.9, whose base64 envelope is a third
        larger than the value) goes out without the value and the original headers, with
        :data:`OMITTED_HEADER` (or the envelope's ``value_omitted``) giving the value's size: the message
        stays readable at its topic, partition and offset. Before, the producer's exception failed every
        run on that message: the partition was blocked for ever.

        Raises :class:`BrokerError` naming the dead-letter topic and the origin when it is not delivered."""
        if self._producer is None:
            self._producer = self.kafka.new_producer()
        ref: KafkaRef = message.ref
        origin = {"topic": self.topic, "partition": ref.partition, "offset": ref.offset, "reason": reason[:1000]}
        headers: list[tuple[str, str | bytes | None]] | None
        if self.kafka.supports(RECORD_V2_SINCE):
            ours = [(REASON_HEADER, reason[:1000].encode())] + [
                (f"x-ip-source-{k}", str(v).encode()) for k, v in origin.items() if k != "reason"
            ]
            names = {name for name, _ in ours}
            value, headers = message.body, [h for h in _header_items(ref.headers) if h[0] not in names] + ours
            omitted: tuple[bytes | None, list[tuple[str, str | bytes | None]] | None] = (
                b"",  # not None: a null value is a tombstone, which compaction treats as a delete of the key
                [*ours, (OMITTED_HEADER, f"value of {len(message.body)} bytes and headers".encode())],
            )
        else:  # no headers before 0.11: the reason and the original travel in a JSON envelope
            envelope = {**origin, "key": message.key, "value_base64": base64.b64encode(message.body).decode()}
            value, headers = json.dumps(envelope).encode(), None
            del envelope["value_base64"]
            omitted = (json.dumps({**envelope, "value_omitted": f"{len(message.body)} bytes"}).encode(), None)
        error = self._send_dead_letter(value, ref.key, headers)
        if isinstance(error, KafkaError) and error.code() == KafkaError.MSG_SIZE_TOO_LARGE:
            LOG.warning(
                "dead letter of %s to %r is too large (%s bytes of value): sent without its value",
                message.origin,
                self.dlt,
                len(message.body),
            )
            error = self._send_dead_letter(omitted[0], ref.key, omitted[1])
        if error is not None:
            cause = error if isinstance(error, KafkaError) else RuntimeError(error)
            raise self.kafka.error(f"dead letter of {message.origin} to {self.dlt!r} not delivered", cause)

    def _send_dead_letter(
        self, value: bytes | None, key: bytes | None, headers: list[tuple[str, str | bytes | None]] | None
    ) -> KafkaError | str | None:
        """Produce one dead letter and wait for its delivery report: ``None`` once delivered, else the
        error (``"timeout"`` when no report came in time)."""
        failures: list[KafkaError] = []

        def delivered(error: KafkaError | None, _: Any) -> None:
            if error is not None:
                failures.append(error)

        try:  # librdkafka refuses a message over its message.max.bytes here, before sending it
            self._producer.produce(self.dlt, value=value, key=key, headers=headers, on_delivery=delivered)
        except KafkaException as exc:
            return exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else str(exc)
        except BufferError as exc:
            return f"the producer's queue is full: {exc}"
        if self._producer.flush(self.kafka.timeout):
            return "timeout"
        return failures[0] if failures else None

    def commit(self, batch: MessageBatch, manifest: Manifest | None) -> None:
        """Commit, per partition, the consumer's position after the batch: the last message's
        offset + 1, or past it when a transaction's commit marker follows (the marker takes an
        offset but is never delivered; committing at it would leave a lag of 1 for ever)."""
        ranges = self._ranges(batch)
        try:
            positions = self.consumer.position([TopicPartition(self.topic, p) for p in ranges])
            after = {tp.partition: tp.offset for tp in positions}
            offsets = [
                TopicPartition(self.topic, p, max(high + 1, after.get(p, -1))) for p, (_, high) in ranges.items()
            ]
            self.consumer.commit(offsets=offsets, asynchronous=False)
        except Exception as exc:
            raise self.kafka.error(f"committing offsets of {self.topic!r}", exc) from None
        for tp in offsets:
            self.committed[tp.partition] = tp.offset
        for partition, (_, high) in ranges.items():
            self.landed_through[partition] = max(self.landed_through.get(partition, 0), high + 1)

    def landing_extra(self, batch: MessageBatch) -> dict[str, Any]:
        """The topic, its id when the broker gives one (``topic_id``), and the batch's offset ranges."""
        extra: dict[str, Any] = {"topic": self.topic}
        if self.topic_id:
            extra["topic_id"] = self.topic_id
        extra["offsets"] = {str(p): [low, high + 1] for p, (low, high) in sorted(self._ranges(batch).items())}
        return extra

    def remaining(self) -> int | None:
        total = 0
        for partition in self.partitions:
            _, high = self.consumer.get_watermark_offsets(
                TopicPartition(self.topic, partition), timeout=self.kafka.timeout, cached=False
            )
            total += max(0, int(high) - self.committed.get(partition, 0))
        return total

    def stop(self) -> None:
        """Nothing to stop: the consumer fetches ahead, but ``remaining`` counts from the committed offsets."""

    def close(self) -> None:
        """Flush the dead-letter producer, if one was made."""
        if self._producer is not None:
            self._producer.flush(self.kafka.timeout)

    def run_metadata(self) -> dict[str, Any]:
        """Offsets where the run started and what it committed, per partition, and the committed offsets
        beyond a partition's end that a reset replaced (``offsets_replaced``, only when there were any)."""
        metadata: dict[str, Any] = {
            "offsets_start": {str(p): o for p, o in sorted(self.start.items())},
            "offsets_committed": {str(p): o for p, o in sorted(self.committed.items())},
        }
        if self.replaced:
            metadata["offsets_replaced"] = {str(p): o for p, o in sorted(self.replaced.items())}
        return metadata


def committed_offsets(kafka: KafkaResource, consumer: Consumer, topic: str, partitions: list[int]) -> dict[int, int]:
    """The committed offset of ``consumer``'s group on each of ``partitions`` of ``topic`` that has one;
    raises :class:`BrokerError`."""
    try:
        found = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=kafka.timeout)
    except Exception as exc:  # KafkaException, or librdkafka's own errors
        raise kafka.error(f"committed offsets of {topic!r}", exc) from None
    return {tp.partition: tp.offset for tp in found if tp.offset >= 0}


def backlog(kafka: KafkaResource, topic: str, group_id: str) -> tuple[int, str]:
    """``(messages waiting, offset ranges)`` of ``group_id`` on ``topic``: per partition from the
    committed offset (earliest when none) to the high watermark, as ``p0:10-25,p1:3-3``."""
    with kafka.consumer(group_id) as consumer:
        partitions = kafka.partitions(consumer, topic)
        committed = committed_offsets(kafka, consumer, topic, partitions)
        lag, ranges = 0, []
        for partition in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=kafka.timeout)
            start = committed.get(partition, low)
            lag += max(0, high - start)
            ranges.append(f"p{partition}:{start}-{high}")
    return lag, ",".join(ranges)


class KafkaPublisher:
    """Produces to ``topic`` with the message id as the key; delivery reports are collected and
    :meth:`flush` raises :class:`BrokerError` when any message was not delivered.

    With ``transactional_id`` every message goes out in one Kafka transaction (KIP-98): committed
    by :meth:`flush`, aborted by :meth:`abort`, so a ``read_committed`` consumer sees all of a
    publication's messages or none. Kafka bounds a transaction's life by the producer's
    ``transaction.timeout.ms`` (librdkafka: 60 s; raise it in ``client_config`` for large runs)."""

    def __init__(self, kafka: KafkaResource, topic: str, transactional_id: str | None = None) -> None:
        self.kafka, self.topic, self.transactional = kafka, topic, transactional_id is not None
        self.failures: list[str] = []
        try:  # librdkafka refuses contradictory settings here (transactions without idempotence)
            self.producer = kafka.new_producer(transactional_id)
            if self.transactional:
                self.producer.init_transactions(kafka.timeout)
                self.producer.begin_transaction()
        except KafkaException as exc:
            raise kafka.error(f"starting a producer for {topic!r} (transactional id {transactional_id})", exc) from None

    def _delivered(self, error: KafkaError | None, _: Any) -> None:
        if error is not None:
            self.failures.append(error.str())

    def send(self, message_id: str, body: bytes) -> None:
        while True:
            try:
                self.producer.produce(self.topic, value=body, key=message_id, on_delivery=self._delivered)
                break
            except BufferError:  # librdkafka's local queue is full: serve delivery reports, retry
                self.producer.poll(0.1)
            except KafkaException as exc:
                raise self.kafka.error(f"producing to {self.topic!r}", exc) from None
        self.producer.poll(0)

    def flush(self) -> None:
        """Wait for every delivery report (and commit the transaction); :class:`BrokerError` when
        a message was not delivered (the transaction is then aborted)."""
        left = self.producer.flush(self.kafka.timeout)
        if left or self.failures:
            self.abort()
            raise BrokerError(
                f"{len(self.failures) + left} message(s) to {self.topic!r} on {self.kafka.where} not delivered: "
                f"{(self.failures or ['flush timed out'])[:3]}"
            )
        if self.transactional:
            self._commit()

    def _commit(self) -> None:
        """``commit_transaction`` as librdkafka's transactional API says (INTRODUCTION.md,
        "Transactional Producer"): retry a retriable error, abort when the error requires it;
        any other error (fatal, fenced) leaves the outcome to the broker, and says so."""
        for _ in range(COMMIT_ATTEMPTS):
            try:
                self.producer.commit_transaction(self.kafka.timeout)
                return
            except KafkaException as exc:
                error = exc.args[0] if exc.args else None
                if isinstance(error, KafkaError) and error.retriable():
                    continue
                if isinstance(error, KafkaError) and error.txn_requires_abort():
                    self.abort()
                    raise self.kafka.error(f"committing the transaction on {self.topic!r} (aborted)", exc) from None
                raise self.kafka.error(
                    f"committing the transaction on {self.topic!r} (outcome unknown: the broker aborts it "
                    "at its timeout unless it was committed; the next run sends the rows again under the same ids)",
                    exc,
                ) from None
        raise BrokerError(
            f"committing the transaction on {self.topic!r}: still retriable after {COMMIT_ATTEMPTS} tries"
        )

    def abort(self) -> None:
        """Abort the open transaction, if any. Best effort: an abort that fails is logged, and the
        broker aborts the transaction at ``transaction.timeout.ms``."""
        if self.transactional:
            try:
                self.producer.abort_transaction(self.kafka.timeout)
            except KafkaException as exc:
                LOG.warning("aborting the transaction on %r failed: %s", self.topic, self.kafka.error("abort", exc))


@contextmanager
def kafka_publisher(kafka: KafkaResource, spec: PublishSpec, source: str = "") -> Iterator[KafkaPublisher]:
    """A :class:`KafkaPublisher` for ``spec.topic``; leaving the block waits for every delivery
    report (and commits), leaving it by an exception aborts a transactional publication.

    The transactional id of ``transactional: true`` is ``integration_platform.<source>.<name>``
    (the publication's asset), the same for every run, so a new run fences a previous instance
    still producing."""
    assert spec.topic is not None
    transactional_id = f"integration_platform.{source}.{spec.name}" if spec.transactional else None
    publisher = KafkaPublisher(kafka, spec.topic, transactional_id)
    try:
        yield publisher
    except BaseException:
        publisher.abort()
        raise
    publisher.flush()
