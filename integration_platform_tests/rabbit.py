"""The machine's real RabbitMQ (127.0.0.1:5672, guest/guest) for the tests: fresh queues, raw publishing and reading."""

import json
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pika

from integration_platform_tests.services import require_port

HOST, PORT = "127.0.0.1", 5672


def connection() -> pika.BlockingConnection:
    require_port(HOST, PORT, "RabbitMQ")
    return pika.BlockingConnection(
        pika.ConnectionParameters(HOST, PORT, credentials=pika.PlainCredentials("guest", "guest"))
    )


@contextmanager
def fresh_queue(prefix: str = "ip_test") -> Iterator[str]:
    """A new durable queue; it and its dead-letter exchange and queue are deleted afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with connection() as conn:
        conn.channel().queue_declare(name, durable=True)
    try:
        yield name
    finally:
        with connection() as conn:
            channel = conn.channel()
            channel.queue_delete(name)
            channel.queue_delete(f"{name}.dead-letter")
            channel.exchange_delete(f"{name}.dlx")


def publish(queue: str, messages: Sequence[tuple[bytes | dict[str, Any], str | None]]) -> None:
    """Publish ``(body, message_id)`` pairs (a dict body is sent as JSON), with confirms."""
    with connection() as conn:
        channel = conn.channel()
        channel.confirm_delivery()
        for body, message_id in messages:
            data = json.dumps(body).encode() if isinstance(body, dict) else body
            channel.basic_publish("", queue, data, pika.BasicProperties(message_id=message_id, delivery_mode=2))


def depth(queue: str) -> int:
    with connection() as conn:
        return int(conn.channel().queue_declare(queue, passive=True).method.message_count)


def take_all(queue: str) -> list[tuple[pika.BasicProperties, bytes]]:
    """Every message waiting in ``queue`` (acknowledged, so removed)."""
    taken: list[tuple[pika.BasicProperties, bytes]] = []
    with connection() as conn:
        channel = conn.channel()
        while True:
            method, properties, body = channel.basic_get(queue, auto_ack=True)
            if method is None:
                return taken
            taken.append((properties, body))
