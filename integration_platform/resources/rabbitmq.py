"""RabbitMQResource: a RabbitMQ broker over AMQP 0-9-1, through pika's ``BlockingConnection``.

Protocol details and where they come from:

- AMQP 0-9-1 (the specification and RabbitMQ's "AMQP 0-9-1 Model Explained"): a consumer
  gets deliveries with a channel-scoped ``delivery_tag``; ``basic.ack`` with ``multiple``
  acknowledges every unacknowledged delivery up to that tag. Deliveries not acknowledged when
  the channel or connection closes are requeued and come back with ``redelivered`` set.
- ``basic.qos`` ``prefetch_count`` is a short (at most 65,535): a consumer that acknowledges
  only after landing a whole batch needs a prefetch of at least the batch size, so a batch
  holds at most 65,535 messages.
- Publisher confirms (RabbitMQ's ``confirm.select`` extension, "Consumer Acknowledgements and
  Publisher Confirms"): in confirm mode pika's ``BlockingChannel.basic_publish`` returns only
  once the broker confirmed the message and raises ``NackError`` / ``UnroutableError``
  (``mandatory``) otherwise.

- A field table's timestamp (``T``, in message headers) is any unsigned 64-bit count of seconds;
  pika turns it into a ``datetime`` while reading the frame, which fails beyond the year 9999.
  While a session is open such a value is read as its integer (:func:`lenient_header_timestamps`).

What this module adds to pika: connection settings as a Dagster resource, batches of
deliveries bounded by size and wait, acknowledgement of a batch, the dead-letter exchange
and queue, and errors that name the broker and queue without the password.
"""

import datetime as dt
import struct
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import dagster as dg
import pika
import pika.data
import pika.exceptions
from pydantic import Field

from integration_platform.resources.brokers import BrokerError

#: AMQP 0-9-1 ``basic.qos`` prefetch-count is a 16-bit field.
MAX_PREFETCH = 65_535

#: Reads of a queue's depth, 10 ms apart, for the requeues of a cancelled consumer to settle.
_SETTLE_READS = 50

#: Headers a dead-lettered message carries (besides its own).
REASON_HEADER = "x-ip-dead-letter-reason"
ORIGIN_HEADERS = ("x-ip-source-queue", "x-ip-stream", "x-ip-dead-lettered-at")


#: pika's own field-value decoder, which :func:`lenient_header_timestamps` stands in for and restores.
_PIKA_DECODE_VALUE = pika.data.decode_value
_lenient_sessions = 0
_lenient_lock = threading.Lock()


def _decode_value_lenient(encoded: bytes, offset: int) -> tuple[Any, int]:
    """pika's ``pika.data.decode_value`` (one field value of an AMQP table at ``offset``: ``(value, offset
    after it)``), except that a timestamp (``T``) no ``datetime`` can hold is its integer (seconds since
    the epoch) instead of an ``OverflowError``/``ValueError``/``OSError``."""
    if encoded[offset : offset + 1] == b"T":
        (seconds,) = struct.unpack_from(">Q", encoded, offset + 1)
        try:
            return dt.datetime.fromtimestamp(seconds, dt.UTC), offset + 9
        except (OverflowError, ValueError, OSError):
            return seconds, offset + 9
    return _PIKA_DECODE_VALUE(encoded, offset)


@contextmanager
def lenient_header_timestamps() -> Iterator[None]:
    """While the block runs, pika reads a header timestamp beyond the year 9999 as its integer.

    Why a patch of pika: AMQP's ``T`` field is any unsigned 64-bit count of seconds, and pika 1.x
    (``pika.data.decode_value``) makes a ``datetime`` of it while it decodes the frame, inside its I/O
    loop. One message with such a header (any publisher may send it) broke the connection
    (``StreamLostError``) before the message reached the platform, so it could be neither landed nor
    dead-lettered, and every run failed on it: the queue was blocked. pika has no hook for it, so the
    module function is replaced by :func:`_decode_value_lenient` (the same for every other value and
    for timestamps that fit; encoding is untouched). The replacement is process-wide: it is installed
    by the first open session (:meth:`RabbitMQResource.connect`) and pika's own is put back when the
    last one closes (counted under a lock, so concurrent sessions do not undo each other).
    """
    global _lenient_sessions
    with _lenient_lock:
        if _lenient_sessions == 0:
            pika.data.decode_value = _decode_value_lenient
        _lenient_sessions += 1
    try:
        yield
    finally:
        with _lenient_lock:
            _lenient_sessions -= 1
            if _lenient_sessions == 0:
                pika.data.decode_value = _PIKA_DECODE_VALUE


@dataclass(frozen=True)
class Delivery:
    """One message as consumed: channel-scoped ``tag``, routing data, AMQP properties and body bytes."""

    tag: int
    exchange: str
    routing_key: str
    redelivered: bool
    properties: pika.BasicProperties
    body: bytes


class RabbitMQResource(dg.ConfigurableResource):
    """A RabbitMQ broker. Set ``password`` with ``dg.EnvVar``.

    ``heartbeat`` (seconds) is the AMQP heartbeat pika proposes; with a blocking connection
    heartbeats are answered only while the client waits on the broker, so a batch must land
    within about two heartbeats (the default leaves 2 minutes). ``connect_timeout`` bounds
    the TCP connect and the AMQP handshake (seconds).
    """

    host: str = "127.0.0.1"
    port: int = Field(default=5672, ge=1, le=65535)
    virtual_host: str = "/"
    username: str = "guest"
    password: str = "guest"
    heartbeat: int = Field(default=60, ge=0)
    connect_timeout: float = Field(default=10.0, gt=0)

    @property
    def where(self) -> str:
        """``amqp://user@host:port/vhost``: how errors name the broker."""
        return f"amqp://{self.username}@{self.host}:{self.port}/{self.virtual_host.lstrip('/')}"

    def parameters(self) -> pika.ConnectionParameters:
        """pika's connection parameters for this broker."""
        return pika.ConnectionParameters(
            host=self.host,
            port=self.port,
            virtual_host=self.virtual_host,
            credentials=pika.PlainCredentials(self.username, self.password),
            heartbeat=self.heartbeat,
            blocked_connection_timeout=self.connect_timeout * 6,
            socket_timeout=self.connect_timeout,
            stack_timeout=self.connect_timeout,
            connection_attempts=3,
            retry_delay=1.0,
        )

    @contextmanager
    def connect(self) -> Iterator["RabbitSession"]:
        """An open connection; closed (unacknowledged deliveries requeued) when the block ends. Header
        timestamps beyond the year 9999 are read as integers meanwhile (:func:`lenient_header_timestamps`).

        Raises :class:`BrokerError` when the broker cannot be reached or refuses the login.
        """
        with lenient_header_timestamps():
            try:
                connection = pika.BlockingConnection(self.parameters())
            except pika.exceptions.AMQPError as exc:
                raise BrokerError(f"cannot connect to {self.where}: {type(exc).__name__} {_describe(exc)}") from None
            try:
                yield RabbitSession(connection, self.where)
            finally:
                if connection.is_open:
                    try:
                        connection.close()
                    except pika.exceptions.AMQPError:
                        pass  # already broken: the broker requeues what was not acknowledged


def _encodable(value: Any) -> Any:
    """``value`` as pika can encode it in a field table: nested tables and arrays item by item; a leaf
    pika refuses (an integer outside signed 64-bit, a float, a timestamp before 1970...) as its text."""
    if isinstance(value, dict):
        return {key: _encodable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_encodable(item) for item in value]
    try:
        pika.data.encode_value([], value)
    except (pika.exceptions.AMQPError, struct.error, TypeError, ValueError, OverflowError):
        return str(value)  # an int: its decimal text
    return value


def encodable_headers(headers: dict[str, Any]) -> dict[str, Any]:
    """A copy of message ``headers`` that pika can publish (:func:`_encodable`); what it can encode is
    unchanged. Received headers may hold what pika cannot write back: a header timestamp beyond the year
    9999 is read as its unsigned 64-bit integer (:func:`lenient_header_timestamps`), and pika writes an
    integer as signed 64-bit at most."""
    return {key: _encodable(value) for key, value in headers.items()}


def _describe(exc: BaseException) -> str:
    text = str(exc) or repr(exc)
    return text if len(text) < 300 else text[:297] + "..."


class RabbitSession:
    """One connection: a consuming channel and, when needed, a confirm-mode publishing channel."""

    def __init__(self, connection: pika.BlockingConnection, where: str) -> None:
        self.connection, self.where = connection, where
        self._consumer = connection.channel()
        self._publisher: Any = None
        self._pending: list[Delivery] = []
        self._consumer_tag: str | None = None
        self._queue = ""  # the queue consumed, for errors

    def _publishing_channel(self) -> Any:
        if self._publisher is None:
            self._publisher = self.connection.channel()
            self._publisher.confirm_delivery()
        return self._publisher

    def queue_depth(self, queue: str) -> tuple[int, int]:
        """``(messages ready, consumers)`` of ``queue`` (a passive ``queue.declare``).

        Raises :class:`BrokerError` when the queue does not exist (the broker closes the
        channel with 404; a new one is opened so the session stays usable) or the connection drops.
        """
        try:
            result = self._consumer.queue_declare(queue, passive=True)
        except pika.exceptions.ChannelClosedByBroker as exc:
            self._consumer = self.connection.channel()
            raise BrokerError(f"queue {queue!r} on {self.where}: {exc.reply_text}") from None
        except pika.exceptions.AMQPError as exc:
            raise BrokerError(f"queue {queue!r} on {self.where}: connection lost: {_describe(exc)}") from None
        return int(result.method.message_count), int(result.method.consumer_count)

    def declare_dead_letter(self, exchange: str, queue: str) -> None:
        """Declare a durable direct ``exchange`` and a durable ``queue`` bound to it with
        routing key ``queue``. Idempotent; raises :class:`BrokerError` when either exists
        with other settings."""
        channel = self._publishing_channel()
        try:
            channel.exchange_declare(exchange, exchange_type="direct", durable=True)
            channel.queue_declare(queue, durable=True)
            channel.queue_bind(queue, exchange, routing_key=queue)
        except pika.exceptions.ChannelClosedByBroker as exc:
            self._publisher = None
            raise BrokerError(f"dead-letter {exchange!r} -> {queue!r} on {self.where}: {exc.reply_text}") from None

    def consume(self, queue: str, prefetch: int) -> None:
        """Start consuming ``queue`` with manual acknowledgements and ``prefetch`` deliveries in flight.
        Raises :class:`BrokerError` naming the queue when the broker refuses or the connection drops."""
        if not 1 <= prefetch <= MAX_PREFETCH:
            raise ValueError(f"prefetch must be 1..{MAX_PREFETCH} (AMQP basic.qos), got {prefetch}")
        self._consumer.basic_qos(prefetch_count=prefetch)

        def on_message(_: Any, method: Any, properties: pika.BasicProperties, body: bytes) -> None:
            self._pending.append(
                Delivery(method.delivery_tag, method.exchange, method.routing_key, method.redelivered, properties, body)
            )

        self._queue = queue
        try:
            self._consumer_tag = self._consumer.basic_consume(queue, on_message, auto_ack=False)
        except pika.exceptions.ChannelClosedByBroker as exc:
            raise BrokerError(f"cannot consume {queue!r} on {self.where}: {exc.reply_text}") from None
        except pika.exceptions.AMQPError as exc:  # the connection dropped, e.g. on a frame pika cannot read
            raise BrokerError(f"cannot consume {queue!r} on {self.where}: {_describe(exc)}") from None

    @property
    def held(self) -> int:
        """Deliveries received and not yet taken by :meth:`next_batch` (unacknowledged)."""
        return len(self._pending)

    def stop_consuming(self) -> None:
        """Cancel the consumer (``basic.cancel``): the broker sends no more, and pika requeues (rejects)
        the deliveries it received and had not handed over, so afterwards every delivery this session
        holds unacknowledged is in :attr:`held` or a batch. Returns once the queue's depth is steady:
        RabbitMQ requeues rejected deliveries asynchronously and answers a passive ``queue.declare``
        ahead of them (its queue process serves that call with priority), which undercounted by the
        prefetched deliveries still on their way (a few milliseconds; at most ``_SETTLE_READS`` reads).
        Raises :class:`BrokerError` naming the queue."""
        if self._consumer_tag is None:
            return
        try:
            self._consumer.basic_cancel(self._consumer_tag)
        except pika.exceptions.AMQPError as exc:
            raise BrokerError(f"cancelling the consumer of {self._queue!r} on {self.where}: {_describe(exc)}") from None
        self._consumer_tag = None
        last = -1
        for _ in range(_SETTLE_READS):
            ready = self.queue_depth(self._queue)[0]
            if ready == last:
                return
            last = ready
            time.sleep(0.01)

    def next_batch(self, size: int, max_wait: float) -> list[Delivery]:
        """Up to ``size`` deliveries, returned once ``size`` arrived or ``max_wait`` seconds passed
        since the call (fewer, possibly none). Raises :class:`BrokerError` when the connection drops."""
        deadline = time.monotonic() + max_wait
        try:
            while len(self._pending) < size:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.connection.process_data_events(time_limit=min(left, 0.25))
        except pika.exceptions.AMQPError as exc:
            raise BrokerError(
                f"connection to {self.where} lost while consuming {self._queue!r}: {_describe(exc)}"
            ) from None
        batch, self._pending = self._pending[:size], self._pending[size:]
        return batch

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Acknowledge every delivery up to the last of ``deliveries`` (``basic.ack`` multiple)."""
        if deliveries:
            try:
                self._consumer.basic_ack(delivery_tag=max(d.tag for d in deliveries), multiple=True)
            except pika.exceptions.AMQPError as exc:
                raise BrokerError(f"acknowledging {self._queue!r} on {self.where} failed: {_describe(exc)}") from None

    def publish(self, exchange: str, routing_key: str, body: bytes, properties: pika.BasicProperties) -> None:
        """Publish one message with a publisher confirm (``mandatory``: an unroutable message
        is an error). Raises :class:`BrokerError` on a nack, an unroutable message, a closed
        channel or a message pika cannot encode (e.g. a header integer beyond signed 64-bit: a
        ``struct.error``, which is no ``AMQPError``)."""
        channel = self._publishing_channel()
        try:
            channel.basic_publish(exchange, routing_key, body, properties, mandatory=True)
        except (pika.exceptions.UnroutableError, pika.exceptions.NackError) as exc:
            raise BrokerError(
                f"publish to exchange {exchange!r} key {routing_key!r} on {self.where} "
                f"not confirmed: {type(exc).__name__}"
            ) from None
        except pika.exceptions.UnsupportedAMQPFieldException as exc:  # an AMQPError, but nothing was sent
            raise BrokerError(
                f"publish to {exchange!r}/{routing_key!r} on {self.where}: a header pika cannot encode: "
                f"{_describe(exc)}"
            ) from None
        except pika.exceptions.AMQPError as exc:
            self._publisher = None
            raise BrokerError(f"publish to {exchange!r}/{routing_key!r} on {self.where}: {_describe(exc)}") from None
        except (struct.error, TypeError, ValueError, OverflowError) as exc:
            # pika marshals the whole message before it sends any of it, so the channel is still usable
            raise BrokerError(
                f"publish to {exchange!r}/{routing_key!r} on {self.where}: cannot encode the message: "
                f"{'struct.error' if isinstance(exc, struct.error) else type(exc).__name__} {_describe(exc)}"
            ) from None

    def dead_letter(self, exchange: str, queue: str, source: str, stream: str, delivery: Delivery, reason: str) -> None:
        """Publish ``delivery`` to the dead-letter ``exchange`` (routing key ``queue``) with its
        body and properties and ``reason`` in header ``x-ip-dead-letter-reason``, confirmed.
        The original is acknowledged later, with its batch.

        Header values pika cannot encode are published as their text: an integer outside signed
        64-bit (pika writes every integer as ``I`` or ``l``) becomes its decimal text, e.g. a header
        timestamp beyond the year 9999, which :func:`lenient_header_timestamps` read as its unsigned
        integer; so does any other value pika refuses (``str(value)``), inside nested tables and
        arrays too (:func:`encodable_headers`). Otherwise the dead-lettering failed, the run failed and
        the message came back on every run: the queue was blocked."""
        props = delivery.properties
        headers = encodable_headers(props.headers or {})
        headers[REASON_HEADER] = reason[:1000]
        headers.update(
            zip(ORIGIN_HEADERS, (source, stream, dt.datetime.now(dt.UTC).isoformat(timespec="seconds")), strict=True)
        )
        copy = pika.BasicProperties(
            content_type=props.content_type,
            content_encoding=props.content_encoding,
            headers=headers,
            delivery_mode=2,
            message_id=props.message_id,
            timestamp=props.timestamp,
            type=props.type,
            app_id=props.app_id,
            correlation_id=props.correlation_id,
        )
        self.publish(exchange, queue, delivery.body, copy)
