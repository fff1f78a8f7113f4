"""A RabbitMQ queue as a :class:`~integration_platform.sources.queues.drain.MessageSource`.

Columns each row gets besides the body's fields: ``_ip_message_id`` (see ``messages.py``),
``_ip_routing_key``, ``_ip_exchange``, ``_ip_published_at`` (the AMQP ``timestamp`` property,
seconds since the epoch, when the publisher set it; null outside the years 1-9999) and
``_ip_received_at``.

Redeliveries: a delivery with ``redelivered`` set may have been landed by a run that died
before acknowledging; a batch holding one is checked against the ids in the lake (see
``drain.py``).
"""

import datetime as dt
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pika
import pyarrow as pa

from integration_platform.core.landing import Manifest
from integration_platform.outbound.publish import PublishSpec
from integration_platform.resources.rabbitmq import Delivery, RabbitMQResource, RabbitSession
from integration_platform.sources.queues.messages import Message, MessageBatch, escaped_text, key_text

ATTRIBUTES = pa.schema(
    [
        ("_ip_routing_key", pa.string()),
        ("_ip_exchange", pa.string()),
        ("_ip_published_at", pa.timestamp("us", tz="UTC")),
        ("_ip_received_at", pa.timestamp("us", tz="UTC")),
    ]
)


#: AMQP timestamps (seconds) that are datetimes: the years 1 to 9999.
_SECONDS = (
    int(dt.datetime(1, 1, 1, tzinfo=dt.UTC).timestamp()),
    int(dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC).timestamp()),  # datetime.max's rounds up a second
)


def _micros(seconds: int | None) -> int | None:
    """An AMQP timestamp as microseconds since the epoch; ``None`` when absent or outside ``_SECONDS``."""
    return seconds * 1_000_000 if seconds is not None and _SECONDS[0] <= seconds <= _SECONDS[1] else None


class RabbitQueueSource:
    """Consumes ``queue`` on an open session; poison goes to ``dead_letter_exchange`` with
    routing key ``dead_letter_queue`` (both declared, durable, when the source starts)."""

    def __init__(
        self,
        session: RabbitSession,
        queue: str,
        stream: str,
        *,
        prefetch: int,
        dead_letter_exchange: str,
        dead_letter_queue: str,
    ) -> None:
        self.session, self.queue, self.stream = session, queue, stream
        self.dlx, self.dlq = dead_letter_exchange, dead_letter_queue
        session.queue_depth(queue)  # a missing queue is a clear error before anything else
        session.declare_dead_letter(self.dlx, self.dlq)
        session.consume(queue, prefetch)

    def _message(self, delivery: Delivery) -> Message:
        # pika hands over an AMQP short string that is not UTF-8 as bytes; key_text keeps b"o\xff" and
        # the text "o\xff" apart (escaped_text gave both one id, and the second was dropped as landed)
        return Message(
            body=delivery.body,
            message_id=key_text(delivery.properties.message_id),
            origin=f"queue {self.queue} delivery {delivery.tag}",
            redelivered=delivery.redelivered,
            ref=delivery,
        )

    def next_batch(self, size: int, max_wait: float) -> MessageBatch:
        deliveries = self.session.next_batch(size, max_wait)
        received = dt.datetime.now(dt.UTC)
        stamps = [d.properties.timestamp for d in deliveries]
        attributes = pa.table(
            [
                pa.array([escaped_text(d.routing_key) for d in deliveries], pa.string()),
                pa.array([escaped_text(d.exchange) for d in deliveries], pa.string()),
                pa.array([_micros(s) for s in stamps], pa.timestamp("us", tz="UTC")),
                pa.repeat(pa.scalar(received, pa.timestamp("us", tz="UTC")), len(deliveries)),
            ],
            schema=ATTRIBUTES,
        )
        return MessageBatch.of([self._message(d) for d in deliveries], attributes)

    def maybe_landed(self, batch: MessageBatch) -> bool:
        return any(batch.message(i).redelivered for i in range(len(batch)))

    def dead_letter(self, message: Message, reason: str) -> None:
        self.session.dead_letter(self.dlx, self.dlq, self.queue, self.stream, message.ref, reason)

    def commit(self, batch: MessageBatch, manifest: Manifest | None) -> None:
        self.session.ack([batch.message(i).ref for i in range(len(batch))])

    def landing_extra(self, batch: MessageBatch) -> dict[str, Any]:
        return {"queue": self.queue, "messages": len(batch)}

    def remaining(self) -> int | None:
        """The messages ready in the queue and those delivered to this run beyond its batches (prefetched,
        not acknowledged: the broker counts them as unacked, not ready, until the connection closes)."""
        return self.session.queue_depth(self.queue)[0] + self.session.held

    def stop(self) -> None:
        self.session.stop_consuming()

    def run_metadata(self) -> dict[str, Any]:
        return {"queue": self.queue}


class RabbitPublisher:
    """Sends to ``exchange`` with ``routing_key`` on a confirm-mode channel: each ``send``
    returns once the broker confirmed the message (persistent, ``message_id`` set)."""

    def __init__(self, session: RabbitSession, exchange: str, routing_key: str) -> None:
        self.session, self.exchange, self.routing_key = session, exchange, routing_key

    def send(self, message_id: str, body: bytes) -> None:
        properties = pika.BasicProperties(
            content_type="application/json", delivery_mode=2, message_id=message_id, timestamp=int(time.time())
        )
        self.session.publish(self.exchange, self.routing_key, body, properties)


@contextmanager
def rabbit_publisher(broker: RabbitMQResource, spec: PublishSpec) -> Iterator[RabbitPublisher]:
    """A :class:`RabbitPublisher` for ``spec``: its ``queue`` through the default exchange, or
    its ``exchange`` and ``routing_key``."""
    exchange, routing_key = (spec.exchange, spec.routing_key) if spec.exchange is not None else ("", spec.queue)
    assert routing_key is not None
    with broker.connect() as session:
        yield RabbitPublisher(session, exchange, routing_key)
