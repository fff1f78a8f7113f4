"""The current-protocol test broker (noida-db 0.2.2's Kafka mode, sandbox/kafka_current.py) with the
real client, confluent-kafka 2.16.1 (librdkafka 2.16.0): what the platform relies on works, and the
two places where the broker is not Kafka are recorded so that a change in either shows here.

Works (each checked below): the client negotiates the protocol (ApiVersions, no fallback setting);
CreateTopics; headers (repeated names, binary values) and create-time timestamps round-trip;
``offsets_for_times`` answers the first offset at or after the time and -1 past the end; the
idempotent producer; transactions: commit, abort, and a ``read_committed`` consumer does not see
an open transaction; zstd.

Not Kafka:
- a producer fenced by a new instance with the same ``transactional.id`` keeps its open
  transaction: Kafka's InitProducerId aborts it, noida-db commits it with the new instance's next
  commit (Tansu 0.6.0 commits it at once). So a publication killed mid-transaction is not rolled
  back on these brokers; the platform's message ids still make the re-sent rows duplicates that a
  consumer de-duplicates.
- retention (7 days, Kafka's default) is applied when a partition is fetched, not by a background
  task every 5 minutes: messages with older timestamps are served once, then gone.
- a Fetch answer holds everything from the offsets asked to the end of each partition, whatever
  the request's ``max_bytes`` / ``partition_max_bytes`` (librdkafka's ``fetch.max.bytes``,
  ``max.partition.fetch.bytes``): past librdkafka's ``receive.message.max.bytes`` (100 MB) the
  client drops the answer ("Invalid response size") and retries forever, so a consumer of a topic
  holding more than that from its position reads nothing (raise ``receive.message.max.bytes``).
"""

import datetime as dt
import time
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME, Consumer, KafkaException, Message, Producer, TopicPartition

from sandbox.kafka_current import CurrentKafka, start_noida_kafka


@pytest.fixture(scope="module")
def broker() -> Iterator[CurrentKafka]:
    with start_noida_kafka() as running:
        yield running


def _topic(broker: CurrentKafka, partitions: int = 1) -> str:
    name = f"probe-{uuid.uuid4().hex[:8]}"
    broker.create_topic(name, partitions)
    return name


def _read(broker: CurrentKafka, topic: str, isolation: str = "read_committed") -> list[Message]:
    consumer = Consumer(broker.client_config({"group.id": f"g{uuid.uuid4().hex}", "isolation.level": isolation}))
    consumer.assign([TopicPartition(topic, 0, 0)])
    found: list[Message] = []
    try:
        while batch := consumer.consume(500, timeout=1.0):
            found += [m for m in batch if m.error() is None]
    finally:
        consumer.close()
    return found


def _millis(at: dt.datetime) -> int:
    return int(at.timestamp() * 1000)


def test_headers_timestamps_and_offsets_for_times(broker: CurrentKafka) -> None:
    topic = _topic(broker)
    start = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=1)
    producer = Producer(broker.client_config({"enable.idempotence": True}))
    for i in range(10):
        headers: list[tuple[str, str | bytes | None]] = [("h", f"v{i}".encode()), ("h", b"\xff\x00"), ("empty", None)]
        producer.produce(topic, value=b"x", key=str(i), headers=headers, timestamp=_millis(start) + i * 60_000)
    assert producer.flush(10) == 0
    messages = _read(broker, topic)
    assert [m.headers() for m in messages[:1]] == [[("h", b"v0"), ("h", b"\xff\x00"), ("empty", None)]]
    assert [m.timestamp() for m in messages] == [
        (TIMESTAMP_CREATE_TIME, _millis(start) + i * 60_000) for i in range(10)
    ]
    consumer = Consumer(broker.client_config({"group.id": f"g{uuid.uuid4().hex}"}))
    try:
        answers = [
            consumer.offsets_for_times([TopicPartition(topic, 0, _millis(start) + int(minutes * 60_000))], timeout=10)[
                0
            ]
            for minutes in (-30, 0, 4.5, 9, 30)
        ]
    finally:
        consumer.close()
    assert [tp.offset for tp in answers] == [0, 0, 5, 9, -1]


def test_retention_applies_after_the_first_fetch(broker: CurrentKafka) -> None:
    """Messages 8 days old (retention: 7) are served once, then gone."""
    topic = _topic(broker)
    producer = Producer(broker.client_config())
    old = _millis(dt.datetime.now(dt.UTC) - dt.timedelta(days=8))
    for _ in range(3):
        producer.produce(topic, value=b"old", timestamp=old)
    assert producer.flush(10) == 0
    assert [m.value() for m in _read(broker, topic)] == [b"old"] * 3
    assert _read(broker, topic) == []


def test_transactions_commit_abort_and_read_committed(broker: CurrentKafka) -> None:
    topic = _topic(broker)
    producer = Producer(broker.client_config({"transactional.id": f"tx-{topic}"}))
    producer.init_transactions(10)
    producer.begin_transaction()
    producer.produce(topic, value=b"committed")
    producer.commit_transaction(10)
    producer.begin_transaction()
    producer.produce(topic, value=b"aborted")
    producer.abort_transaction(10)
    producer.begin_transaction()
    producer.produce(topic, value=b"open")
    producer.flush(10)
    assert [m.value() for m in _read(broker, topic)] == [b"committed"]
    assert [m.value() for m in _read(broker, topic, "read_uncommitted")] == [b"committed", b"open"]
    producer.commit_transaction(10)
    assert [m.value() for m in _read(broker, topic)] == [b"committed", b"open"]


def test_a_fenced_producers_open_transaction_is_not_aborted(broker: CurrentKafka) -> None:
    """Kafka would abort ``zombie``'s transaction when ``successor`` calls init_transactions; noida-db
    commits it with the successor's next commit (the module doc)."""
    topic = _topic(broker)
    zombie = Producer(broker.client_config({"transactional.id": f"fence-{topic}"}))
    zombie.init_transactions(10)
    zombie.begin_transaction()
    zombie.produce(topic, value=b"zombie")
    zombie.flush(10)
    successor = Producer(broker.client_config({"transactional.id": f"fence-{topic}"}))
    successor.init_transactions(10)
    with pytest.raises(KafkaException, match="fenced"):
        zombie.produce(topic, value=b"late")
        zombie.commit_transaction(10)
    assert _read(broker, topic) == []
    successor.begin_transaction()
    successor.produce(topic, value=b"successor")
    successor.commit_transaction(10)
    time.sleep(0.2)
    assert [m.value() for m in _read(broker, topic)] == [b"zombie", b"successor"]


def test_zstd_round_trip(broker: CurrentKafka) -> None:
    topic = _topic(broker)
    producer = Producer(broker.client_config({"compression.type": "zstd"}))
    for i in range(100):
        producer.produce(topic, value=b"y" * 200, key=str(i))
    assert producer.flush(10) == 0
    assert len(_read(broker, topic)) == 100


def test_fetch_ignores_the_requested_size_limits(broker: CurrentKafka) -> None:
    """2 MB in the partition, a consumer that takes answers of at most 1 MB and asks for 64 KB at a
    time: Kafka would answer 64 KB per fetch; noida-db sends all 2 MB, which the client drops."""
    topic = _topic(broker)
    producer = Producer(broker.client_config())
    for i in range(2_000):
        producer.produce(topic, value=b"z" * 1_000, key=str(i))
    assert producer.flush(10) == 0
    limits = {"message.max.bytes": 65_536, "fetch.max.bytes": 65_536, "max.partition.fetch.bytes": 65_536}
    limits["receive.message.max.bytes"] = 1_000_000
    consumer = Consumer(broker.client_config({"group.id": f"g{uuid.uuid4().hex}", **limits}))
    consumer.assign([TopicPartition(topic, 0, 0)])
    try:
        got = [m for m in consumer.consume(500, timeout=3) if m.error() is None]
    finally:
        consumer.close()
    assert got == []
    assert len(_read(broker, topic)) == 2_000  # with the default limits it is all there
