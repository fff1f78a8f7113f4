"""The test Kafka broker (kafka_broker.py) with the real client, confluent-kafka (librdkafka).

The broker is Apache Kafka 0.9.0.1 and the client speaks its legacy protocol
(``api.version.request=false``, ``broker.version.fallback=0.9.0.1``). What works and what does
not, as measured with confluent-kafka 2.16.1 (librdkafka 2.16.0); the tests below check each
point except those marked "(by hand)", which were measured once with the same broker:

Works:
- produce with keys and delivery reports; gzip, snappy and lz4 compression (stored compressed);
- consumer groups (subscribe, rebalance, group.id) with ``enable.auto.commit=false`` and
  synchronous ``commit()``; a restarted consumer resumes from the committed offsets. (A stock 0.9
  broker caps ``session.timeout.ms`` at 30 s, below librdkafka's 45 s default: "JoinGroup failed:
  Broker: Invalid session timeout" (by hand); the test broker allows up to 300 s.)
- ``committed()``, ``get_watermark_offsets()``, ``position()``, ``list_topics()`` (metadata).

Does NOT work (no error raised unless one is quoted):
- message timestamps: ``produce(timestamp=...)`` is accepted and dropped; consumed messages have
  ``timestamp() == (TIMESTAMP_NOT_AVAILABLE, 0)`` (message format v0 has no timestamp).
- headers: ``produce(headers=...)`` is accepted and dropped; consumed ``headers()`` is None.
- ``offsets_for_times()``: answers without error but wrongly (ListOffsets v0 finds log segments
  older than the time, not the first message at or after it): offset -1 for a time before the
  first message (a 0.10.1+ broker answers 0), the log end offset for a time in the future (a
  0.10.1+ broker answers -1).
- idempotent producer, ``enable.idempotence=true``: ``produce()`` is accepted, then ``flush()``
  raises ``KafkaException(KafkaError{FATAL,code=_UNSUPPORTED_FEATURE,val=-165,str="Idempotent
  producer not supported by any of the 1 connected broker(s): requires Apache Kafka broker
  version >= 0.11.0"})`` and any later ``produce()`` raises ``KafkaError{code=_FATAL,val=-150,
  str="Unable to produce message: Local: Fatal error"}``. (With an ``on_delivery`` callback set,
  ``flush()`` raises ``SystemError: <method ...> returned a result with an exception set``
  instead, caused by that KafkaException (by hand).)
- transactions: ``init_transactions()`` raises ``KafkaException(KafkaError{FATAL,
  code=_UNSUPPORTED_FEATURE,val=-165,str="Transactions not supported by any of the 1 connected
  broker(s): requires Apache Kafka broker version >= 0.11.0"})``.
- zstd compression (``compression.type=zstd``): accepted and delivered, but sent and stored
  uncompressed, without error.
- ``AdminClient.create_topics()`` / ``delete_topics()`` (the latter by hand; no such requests
  before 0.10.1):
  ``KafkaError{code=_TIMED_OUT,val=-185,str="Failed while waiting for controller: Local: Timed
  out"}`` after ``request_timeout``; create topics with ``KafkaBroker.create_topic``.
- metadata about topics with short names: ``KafkaError{code=_BAD_MSG,val=-199,str="Failed to get
  metadata: Local: Bad message format"}`` (librdkafka logs "Protocol parse failure for Metadata
  v0 ... tmpabuf memory shortage"); see ``kafka_broker.MIN_TOPIC_NAME``.
- not checked here, absent from Kafka 0.9: the other admin calls (``describe_configs``,
  ``alter_configs``, ACLs, ``delete_records``: 0.11+), KIP-848 consumer groups (4.0).
"""

import time
import uuid
from collections import Counter

import pytest
from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from integration_platform_tests.kafka_broker import MIN_TOPIC_NAME, KafkaBroker, kafka_broker_fixture

kafka_broker = kafka_broker_fixture("kafka_broker", scope="module")

MESSAGES = 300
PARTITIONS = 3


def unique(prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    assert len(name) >= MIN_TOPIC_NAME
    return name


def consumer_config(broker: KafkaBroker, group: str) -> dict[str, object]:
    return broker.client_config(
        {"group.id": group, "enable.auto.commit": False, "auto.offset.reset": "earliest", "session.timeout.ms": 6000}
    )


def consume(consumer: Consumer, count: int, seconds: float = 30.0) -> list[Message]:
    """Poll until ``count`` messages arrived (fails after ``seconds``); raises on a message error."""
    messages: list[Message] = []
    deadline = time.monotonic() + seconds
    while len(messages) < count and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is None:
            continue
        error = message.error()
        if error is not None:
            raise KafkaException(error)
        messages.append(message)
    assert len(messages) == count, f"consumed {len(messages)} of {count} messages in {seconds}s"
    return messages


def drain(consumer: Consumer, seconds: float) -> list[Message]:
    """Every message (or error) that arrives within ``seconds``."""
    messages: list[Message] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        message = consumer.poll(0.2)
        if message is not None:
            messages.append(message)
    return messages


def wait_for_assignment(consumer: Consumer, seconds: float = 30.0) -> list[TopicPartition]:
    """Poll (consuming nothing) until the group gave ``consumer`` its partitions."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        message = consumer.poll(0.2)
        assert message is None, f"unexpected message {message.topic()}[{message.partition()}]@{message.offset()}"
        if assignment := consumer.assignment():
            return assignment
    raise AssertionError(f"no partitions assigned within {seconds}s")


def offsets_by_partition(partitions: list[TopicPartition]) -> dict[int, int]:
    assert all(tp.error is None for tp in partitions), partitions
    return {tp.partition: tp.offset for tp in partitions}


def produce_one(
    broker: KafkaBroker,
    topic: str,
    value: bytes,
    timestamp: int = 0,
    headers: list[tuple[str, str | bytes | None]] | None = None,
) -> int:
    """Produce one message to partition 0 and return its offset (from the delivery report)."""
    reports: list[tuple[KafkaError | None, int]] = []

    def delivered(error: KafkaError | None, message: Message) -> None:
        reports.append((error, message.offset() or 0))

    producer = Producer(broker.client_config())
    producer.produce(topic, value, partition=0, on_delivery=delivered, timestamp=timestamp, headers=headers)
    assert producer.flush(10) == 0
    [(error, offset)] = reports
    assert error is None, error
    return offset


def read_at(broker: KafkaBroker, topic: str, offset: int) -> Message:
    consumer = Consumer(consumer_config(broker, unique("reader")))
    try:
        consumer.assign([TopicPartition(topic, 0, offset)])
        [message] = consume(consumer, 1, 10)
        return message
    finally:
        consumer.close()


@pytest.fixture(scope="module")
def probe_topic(kafka_broker: KafkaBroker) -> str:
    """A 1-partition topic for the single-message checks."""
    topic = unique("probe-topic")
    kafka_broker.create_topic(topic, 1)
    return topic


def test_consumer_group_commits_and_resumes_from_committed_offsets(kafka_broker: KafkaBroker) -> None:
    topic, group = unique("orders-topic"), unique("orders-group")
    kafka_broker.create_topic(topic, PARTITIONS)

    # Produce with keys; every message gets a delivery report without error.
    reports: list[tuple[int, int]] = []
    errors: list[KafkaError] = []

    def delivered(error: KafkaError | None, message: Message) -> None:
        if error is not None:
            errors.append(error)
        else:
            reports.append((message.partition() or 0, message.offset() or 0))

    producer = Producer(kafka_broker.client_config({"linger.ms": 5}))
    sent = {f"order-{i}".encode() for i in range(MESSAGES)}
    for i, value in enumerate(sorted(sent)):
        producer.produce(topic, value, key=f"customer-{i % 37}".encode(), on_delivery=delivered)
        producer.poll(0)
    assert producer.flush(30) == 0
    assert errors == []
    assert len(reports) == MESSAGES
    per_partition = Counter(partition for partition, _ in reports)
    assert set(per_partition) == set(range(PARTITIONS)), per_partition
    for partition, count in per_partition.items():  # offsets 0..count-1 in each partition
        assert sorted(offset for p, offset in reports if p == partition) == list(range(count))

    # A group member consumes exactly what was produced, commits synchronously.
    first = Consumer(consumer_config(kafka_broker, group))
    try:
        first.subscribe([topic])
        received = consume(first, MESSAGES, 60)
        assert {m.value() for m in received} == sent
        assert len({(m.partition(), m.offset()) for m in received}) == MESSAGES
        assert drain(first, 1.0) == []

        committed = first.commit(asynchronous=False)
        assert committed is not None
        assert offsets_by_partition(committed) == per_partition
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        assert offsets_by_partition(first.committed(partitions, timeout=10)) == per_partition
        for partition, count in per_partition.items():
            assert first.get_watermark_offsets(TopicPartition(topic, partition), timeout=10) == (0, count)
    finally:
        first.close()

    # A restarted member of the group gets nothing old, then exactly what is produced next, at
    # the committed offsets.
    second = Consumer(consumer_config(kafka_broker, group))
    try:
        second.subscribe([topic])
        assert len(wait_for_assignment(second)) == PARTITIONS
        assert drain(second, 1.0) == []
        assert offsets_by_partition(second.committed(partitions, timeout=10)) == per_partition

        more = Producer(kafka_broker.client_config())
        for partition in range(PARTITIONS):
            for n in range(2):
                more.produce(topic, f"late-{partition}-{n}".encode(), partition=partition)
        assert more.flush(10) == 0
        late = consume(second, 2 * PARTITIONS)
        assert sorted((m.partition(), m.offset()) for m in late) == sorted(
            (partition, per_partition[partition] + n) for partition in range(PARTITIONS) for n in range(2)
        )
        assert offsets_by_partition(second.position(partitions)) == {
            partition: count + 2 for partition, count in per_partition.items()
        }
        second.commit(asynchronous=False)
    finally:
        second.close()


def stored_bytes(broker: KafkaBroker, topic: str) -> int:
    """Bytes in the broker's log segments for partition 0 of ``topic``."""
    return sum(path.stat().st_size for path in (broker.workdir / "kafka-logs" / f"{topic}-0").glob("*.log"))


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_compression(kafka_broker: KafkaBroker, probe_topic: str, codec: str) -> None:
    """gzip, snappy and lz4 are stored compressed; zstd (Kafka >= 2.1) is sent uncompressed."""
    producer = Producer(kafka_broker.client_config({"compression.type": codec}))
    reports: list[tuple[KafkaError | None, int]] = []
    value = f"compressed with {codec} ".encode() * 1000
    before = stored_bytes(kafka_broker, probe_topic)
    producer.produce(probe_topic, value, partition=0, on_delivery=lambda e, m: reports.append((e, m.offset() or 0)))
    assert producer.flush(10) == 0
    [(error, offset)] = reports
    assert error is None
    growth = stored_bytes(kafka_broker, probe_topic) - before
    if codec == "zstd":
        assert growth > len(value)
    else:
        assert growth < len(value) / 10
    assert read_at(kafka_broker, probe_topic, offset).value() == value


def test_message_timestamps_are_dropped(kafka_broker: KafkaBroker, probe_topic: str) -> None:
    offset = produce_one(kafka_broker, probe_topic, b"with a timestamp", timestamp=1_700_000_000_000)
    assert read_at(kafka_broker, probe_topic, offset).timestamp() == (TIMESTAMP_NOT_AVAILABLE, 0)


def test_headers_are_dropped(kafka_broker: KafkaBroker, probe_topic: str) -> None:
    offset = produce_one(kafka_broker, probe_topic, b"with headers", headers=[("source", b"test")])
    message = read_at(kafka_broker, probe_topic, offset)
    assert message.value() == b"with headers"
    assert message.headers() is None


def test_offsets_for_times_answers_wrongly(kafka_broker: KafkaBroker) -> None:
    topic = unique("times-topic")
    kafka_broker.create_topic(topic, 1)
    for n in range(3):
        produce_one(kafka_broker, topic, f"message {n}".encode())
    consumer = Consumer(consumer_config(kafka_broker, unique("times-group")))
    try:
        now = int(time.time() * 1000)

        def offset_for(timestamp: int) -> int:
            [answer] = consumer.offsets_for_times([TopicPartition(topic, 0, timestamp)], timeout=10)
            assert answer.error is None
            return answer.offset

        assert offset_for(0) == -1  # Kafka >= 0.10.1: 0, the first message
        assert offset_for(now - 3_600_000) == -1  # Kafka >= 0.10.1: 0
        assert offset_for(now + 3_600_000) == 3  # Kafka >= 0.10.1: -1, no such message
    finally:
        consumer.close()


def test_idempotent_producer_fails_fatally(kafka_broker: KafkaBroker, probe_topic: str) -> None:
    producer = Producer(kafka_broker.client_config({"enable.idempotence": True}))
    producer.produce(probe_topic, b"idempotent", partition=0)  # accepted, then the fatal error
    with pytest.raises(KafkaException) as raised:
        producer.flush(10)
    error = raised.value.args[0]
    assert error.fatal()
    assert error.code() == KafkaError._UNSUPPORTED_FEATURE
    assert error.str() == (
        "Idempotent producer not supported by any of the 1 connected broker(s): "
        "requires Apache Kafka broker version >= 0.11.0"
    )
    with pytest.raises(KafkaException) as again:
        producer.produce(probe_topic, b"after the fatal error")
    assert again.value.args[0].code() == KafkaError._FATAL


def test_transactions_fail_fatally(kafka_broker: KafkaBroker) -> None:
    producer = Producer(kafka_broker.client_config({"transactional.id": unique("transactions")}))
    with pytest.raises(KafkaException) as raised:
        producer.init_transactions(10)
    error = raised.value.args[0]
    assert error.fatal()
    assert error.code() == KafkaError._UNSUPPORTED_FEATURE
    assert error.str() == (
        "Transactions not supported by any of the 1 connected broker(s): requires Apache Kafka broker version >= 0.11.0"
    )


def test_admin_create_topics_times_out(kafka_broker: KafkaBroker) -> None:
    admin = AdminClient(kafka_broker.client_config())
    name = unique("admin-created-topic")
    futures = admin.create_topics([NewTopic(name, 1, 1)], request_timeout=2)
    with pytest.raises(KafkaException) as raised:
        futures[name].result()
    error = raised.value.args[0]
    assert error.code() == KafkaError._TIMED_OUT
    assert error.str() == "Failed while waiting for controller: Local: Timed out"
    assert name not in kafka_broker.admin.list_topics(timeout=10).topics


def test_short_topic_names_break_metadata(kafka_broker: KafkaBroker) -> None:
    with pytest.raises(ValueError, match="shorter than"):
        kafka_broker.create_topic("short", 1)
    admin = AdminClient(kafka_broker.client_config())
    with pytest.raises(KafkaException) as raised:
        admin.list_topics(topic="no-topic", timeout=10)
    error = raised.value.args[0]
    assert error.code() == KafkaError._BAD_MSG
    assert error.str() == "Failed to get metadata: Local: Bad message format"


def test_missing_install_is_reported(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Without the install, start_kafka names the install script."""
    from integration_platform_tests import kafka_broker as module

    monkeypatch.setattr(module, "KAFKA_HOME", tmp_path_factory.mktemp("no-kafka"))
    with (
        pytest.raises(module.KafkaNotInstalled, match=r"bash \.ci/install_kafka\.sh"),
        module.start_kafka(tmp_path_factory.mktemp("work")),
    ):
        pass
