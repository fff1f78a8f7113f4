"""The machine's real RabbitMQ (127.0.0.1:5672, guest/guest) for the tests: fresh queues, raw publishing and reading."""

import json
import socket
import threading
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


class CuttingProxy:
    """A TCP forwarder to the broker that cuts the first connection (both ways, no goodbye)
    once ``cut_after`` bytes came from the broker; later connections pass untouched."""

    def __init__(self, cut_after: int) -> None:
        self.cut_after, self.cuts = cut_after, 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        first = True
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection((HOST, PORT))
            limit = self.cut_after if first else None
            first = False
            threading.Thread(target=self._pump, args=(upstream, client, limit), daemon=True).start()
            threading.Thread(target=self._pump, args=(client, upstream, None), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, limit: int | None) -> None:
        sent = 0
        try:
            while data := source.recv(65536):
                sink.sendall(data)
                sent += len(data)
                if limit is not None and sent >= limit:
                    self.cuts += 1
                    break
        except OSError:
            pass
        for end in (source, sink):
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            end.close()

    def close(self) -> None:
        self.listener.close()
