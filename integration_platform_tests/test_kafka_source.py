"""Kafka topics landed exactly once, against two real brokers: Apache Kafka 0.9.0.1 (the legacy
protocol, see kafka_broker.py) and noida-db's Kafka mode (the current protocol, see
sandbox/kafka_current.py). The tests that need the current protocol (timestamps, headers,
offsets_for_times, transactions) run against noida-db only; on 0.9 the same features are refused
with a clear error or travel another way (dead letters in an envelope)."""

import base64
import datetime as dt
import json
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from confluent_kafka import Consumer, Message, Producer, TopicPartition

from integration_platform.sources.queues.kafka_stream import KafkaTopicSource
from integration_platform_tests.kafka_broker import KafkaBroker, require_kafka, start_kafka
from integration_platform_tests.run_stream import killed_in
from sandbox.harness import Platform, failure_messages, latest_metadata, platform
from sandbox.kafka_current import CurrentKafka, start_noida_kafka

Broker = KafkaBroker | CurrentKafka
PARTITIONS = 3
LAKE = dg.AssetKey(["shop", "orders"])
WAREHOUSE = dg.AssetKey(["warehouse", "shop.orders"])
#: Two hours ago to the minute: messages older than the topic's retention (7 days, as Kafka's
#: default) are deleted by the broker, and noida-db does so as soon as a partition is fetched.
T0 = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0) - dt.timedelta(hours=2)


@pytest.fixture(scope="module", params=["kafka-0.9.0.1", "noida-db"])
def kafka_broker(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """Each broker once per module; the tests taking ``kafka_broker`` run against both."""
    if request.param == "noida-db":
        with start_noida_kafka(tmp_path_factory.mktemp("noida")) as current:
            yield current
        return
    require_kafka()
    with start_kafka(tmp_path_factory.mktemp("kafka")) as legacy:
        yield legacy


@pytest.fixture(scope="module")
def current_kafka() -> Iterator[CurrentKafka]:
    """The current-protocol broker alone, for the tests of what Kafka 0.9 lacks."""
    with start_noida_kafka() as broker:
        yield broker


def _legacy(broker: Broker) -> bool:
    return isinstance(broker, KafkaBroker)


def _yaml(broker: Broker, topic: str, batch_size: int = 500, extra: str = "", client_config: str = "") -> str:
    if _legacy(broker):
        client_config = f'api.version.request: "false", broker.version.fallback: "0.9.0.1", {client_config}'
    return f"""
type: integration_platform.components.QueueSource
attributes:
  source: shop
  connection:
    broker: kafka
    bootstrap_servers: "{broker.bootstrap}"
    client_config: {{{client_config.rstrip(", ")}}}
  streams:
    - name: orders
      topic: {topic}
      batch_size: {batch_size}
      max_wait_seconds: 1
{extra}"""


def _topic(broker: Broker) -> str:
    name = f"ip_test_orders_{uuid.uuid4().hex[:8]}"
    broker.create_topic(name, PARTITIONS)
    broker.create_topic(f"{name}.dead-letter", 1)
    return name


@pytest.fixture
def topic(kafka_broker: Broker) -> str:
    return _topic(kafka_broker)


def _order(i: int) -> dict[str, object]:
    return {"order_id": i, "customer": f"c{i % 97}", "amount": round(i * 1.25, 2)}


def produce(
    broker: Broker,
    topic: str,
    values: list[bytes],
    keys: Sequence[str | bytes] | None = None,
    timestamps: Sequence[dt.datetime] | None = None,
    headers: Sequence[list[tuple[str, str | bytes | None]] | None] | None = None,
) -> None:
    producer = Producer(broker.client_config({"linger.ms": 5}))
    errors: list[str] = []
    for i, value in enumerate(values):
        key = keys[i] if keys else str(i)
        producer.produce(
            topic,
            value=value,
            key=key,
            on_delivery=lambda e, _: errors.append(str(e)) if e else None,
            timestamp=int(timestamps[i].timestamp() * 1000) if timestamps else 0,  # 0: now
            headers=list(headers[i] or []) if headers else None,
        )
        producer.poll(0)
    assert producer.flush(30) == 0 and not errors


def _orders(n: int, start: int = 0) -> list[bytes]:
    return [json.dumps(_order(i)).encode() for i in range(start, start + n)]


def committed(broker: Broker, topic: str, group: str = "integration_platform.shop.orders") -> dict[int, int]:
    consumer = Consumer(broker.client_config({"group.id": group}))
    try:
        found = consumer.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=30)
        return {tp.partition: tp.offset for tp in found}
    finally:
        consumer.close()


def _rows(target: Platform) -> tuple[int, int, int]:
    row = target.query("SELECT count(*), count(DISTINCT order_id), coalesce(sum(order_id), 0) FROM shop.orders")[0]
    return int(row[0]), int(row[1]), int(row[2])


def test_n_messages_land_once_and_offsets_are_committed(
    kafka_broker: Broker, topic: str, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    n = 1_200
    produce(kafka_broker, topic, _orders(n))
    target = platform(_yaml(kafka_broker, topic), tmp_path, instance)
    assert target.materialize([LAKE, WAREHOUSE]).success
    assert _rows(target) == (n, n, sum(range(n)))
    meta = latest_metadata(instance, LAKE)
    assert meta["messages_consumed"] == n and meta["remaining_messages"] == 0
    offsets = committed(kafka_broker, topic)
    assert sum(offsets.values()) == n and all(v > 0 for v in offsets.values())
    assert meta["offsets_committed"] == {str(p): o for p, o in offsets.items()}
    assert meta["offsets_start"] == {str(p): 0 for p in range(PARTITIONS)}
    columns = {
        c for (c,) in target.query("SELECT column_name FROM information_schema.columns WHERE table_name='orders'")
    }
    assert {"_ip_topic", "_ip_partition", "_ip_offset", "_ip_key"} <= columns
    assert target.query("SELECT _ip_message_id FROM shop.orders WHERE _ip_partition = 0 AND _ip_offset = 0") == [
        (f"{topic}/0/0",)
    ]
    assert target.query(  # each row's own key, topic and message id
        "SELECT count(*) FROM shop.orders WHERE _ip_key = CAST(order_id AS VARCHAR) AND _ip_topic = ? "
        "AND _ip_message_id = concat(_ip_topic, '/', _ip_partition, '/', _ip_offset)",
        [topic],
    ) == [(n,)]

    # More messages: the next run starts at the committed offsets and lands only those.
    produce(kafka_broker, topic, _orders(30, start=n))
    target.materialize([LAKE, WAREHOUSE])
    assert latest_metadata(instance, LAKE)["rows_landed"] == 30
    assert _rows(target)[:2] == (n + 30, n + 30)
    target.materialize([LAKE, WAREHOUSE])
    assert latest_metadata(instance, LAKE)["messages_consumed"] == 0


def test_run_killed_after_landing_before_commit_yields_n_rows(kafka_broker: Broker, topic: str, tmp_path: Path) -> None:
    n = 900
    produce(kafka_broker, topic, _orders(n))
    yaml_file = tmp_path / "shop.yaml"
    yaml_file.write_text(_yaml(kafka_broker, topic, batch_size=300))
    home = tmp_path / "dagster_home"
    home.mkdir()
    killed = killed_in(
        "integration_platform.sources.queues.kafka_stream",
        "KafkaTopicSource",
        "commit",
        str(yaml_file),
        str(tmp_path),
        str(home),
        "shop/orders",
    )
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    assert all(offset < 0 for offset in committed(kafka_broker, topic).values()), "nothing was committed"
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        target = platform(yaml_file.read_text(), tmp_path, instance)
        assert target.materialize([LAKE, WAREHOUSE]).success
        meta = latest_metadata(instance, LAKE)
        assert meta["already_landed_dropped"] == 300
        assert meta["rows_landed"] == n - 300
        assert _rows(target) == (n, n, sum(range(n)))
        assert sum(committed(kafka_broker, topic).values()) == n


def _dead_letter_messages(broker: Broker, topic: str) -> list[Message]:
    """The messages in ``topic``'s dead-letter topic, as consumed."""
    consumer = Consumer(broker.client_config({"group.id": f"t{uuid.uuid4().hex}", "auto.offset.reset": "earliest"}))
    consumer.assign([TopicPartition(f"{topic}.dead-letter", 0, 0)])
    try:
        return [m for m in consumer.consume(10, timeout=10) if m.error() is None]
    finally:
        consumer.close()


def _dead_letters(broker: Broker, topic: str) -> list[tuple[bytes, str, dict[str, bytes]]]:
    """``(value, key, headers)`` of each message in ``topic``'s dead-letter topic."""
    found = _dead_letter_messages(broker, topic)
    return [(m.value() or b"", (m.key() or b"").decode(), _header_bytes(m.headers())) for m in found]


def _header_bytes(headers: object) -> dict[str, bytes]:
    """A consumed message's headers (librdkafka gives a list of ``(name, bytes)``) as a dict."""
    assert headers is None or isinstance(headers, list)
    return {str(name): bytes(value or b"") for name, value in headers or []}


def test_poison_goes_to_the_dead_letter_topic_with_its_reason(
    kafka_broker: Broker, topic: str, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """Kafka 0.11+: the original value and key, the reason and the origin in headers. Kafka 0.9
    has no headers: the reason and the original travel in a JSON envelope."""
    values = _orders(50)
    values[10] = b"{broken"
    values[20] = json.dumps({"order_id": "twenty", "amount": 1.0}).encode()
    produce(kafka_broker, topic, values)
    target = platform(_yaml(kafka_broker, topic), tmp_path, instance)
    assert target.materialize([LAKE, WAREHOUSE]).success
    assert target.query("SELECT count(*) FROM shop.orders") == [(48,)]
    assert latest_metadata(instance, LAKE)["dead_lettered"] == 2
    dead = _dead_letters(kafka_broker, topic)
    assert len(dead) == 2
    if _legacy(kafka_broker):
        envelopes = [json.loads(value) for value, _, _ in dead]
        reasons = {base64.b64decode(d["value_base64"]): d["reason"] for d in envelopes}
        broken = next(d for d in envelopes if base64.b64decode(d["value_base64"]) == b"{broken")
        assert broken["topic"] == topic and broken["key"] == "10"
    else:
        reasons = {value: headers["x-ip-dead-letter-reason"].decode() for value, _, headers in dead}
        _, key, headers = next(d for d in dead if d[0] == b"{broken")
        assert key == "10" and headers["x-ip-source-topic"] == topic.encode()
        partition, offset = int(headers["x-ip-source-partition"]), int(headers["x-ip-source-offset"])
        assert target.query(  # the neighbours landed; the poison's own offset did not
            "SELECT count(*) FROM shop.orders WHERE _ip_partition = ? AND _ip_offset = ?", [partition, offset]
        ) == [(0,)]
    assert "not UTF-8 JSON" in reasons[b"{broken"]
    assert any("order_id" in r and "twenty" in r for r in reasons.values())


def test_a_poison_message_too_large_to_dead_letter_whole_does_not_block_the_topic(
    kafka_broker: Broker, topic: str, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """A dead letter larger than the producer takes (Kafka 0.9: the base64 envelope of an 800 kB value is
    1.07 MB, over librdkafka's message.max.bytes of 1 MB; a current broker: a producer limit below the
    message, as when the source topic allows larger messages) failed every run with a bare
    ``KafkaException`` MSG_SIZE_TOO_LARGE: nothing was committed and the topic was blocked for ever.
    It is dead-lettered without its value, which stays readable at its offset."""
    values = _orders(5)
    values[2] = b"x" * 800_000
    produce(kafka_broker, topic, values)
    limit = "" if _legacy(kafka_broker) else "message.max.bytes: 500000"
    target = platform(_yaml(kafka_broker, topic, client_config=limit), tmp_path, instance)
    assert target.materialize([LAKE, WAREHOUSE]).success
    assert _rows(target) == (4, 4, 0 + 1 + 3 + 4)
    assert latest_metadata(instance, LAKE)["dead_lettered"] == 1
    assert sum(max(o, 0) for o in committed(kafka_broker, topic).values()) == 5
    [(value, key, headers)] = _dead_letters(kafka_broker, topic)
    assert key == "2"
    if _legacy(kafka_broker):
        envelope = json.loads(value)
        assert envelope["value_omitted"] == "800000 bytes" and "value_base64" not in envelope
        assert envelope["topic"] == topic and "not UTF-8 JSON" in envelope["reason"]
    else:
        [message] = _dead_letter_messages(kafka_broker, topic)
        assert message.value() == b""  # not None: a null value is a tombstone, a delete on a compacted topic
        assert value == b"" and headers["x-ip-dead-letter-omitted"] == b"value of 800000 bytes and headers"
        assert (
            headers["x-ip-source-topic"] == topic.encode() and b"not UTF-8 JSON" in headers["x-ip-dead-letter-reason"]
        )


def test_offset_reset_from_run_config(
    kafka_broker: Broker, topic: str, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    produce(kafka_broker, topic, _orders(60))
    target = platform(_yaml(kafka_broker, topic), tmp_path, instance)
    target.materialize([LAKE, WAREHOUSE])
    config = {"ops": {"shop__orders": {"config": {"offset_reset": "earliest"}}}}
    assert target.materialize([LAKE, WAREHOUSE], run_config=config).success
    meta = latest_metadata(instance, LAKE)
    assert meta["messages_consumed"] == 60 and meta["already_landed_dropped"] == 60
    assert meta["offsets_start"] == {str(p): 0 for p in range(PARTITIONS)}
    assert _rows(target)[:2] == (60, 60)

    latest = {"ops": {"shop__orders": {"config": {"offset_reset": "latest"}}}}
    produce(kafka_broker, topic, _orders(5, start=60))
    assert target.materialize([LAKE], run_config=latest).success
    assert latest_metadata(instance, LAKE)["messages_consumed"] == 0  # skipped to the end

    if _legacy(kafka_broker):  # the current protocol's answer: test_reset_to_a_timestamp...
        at = {"ops": {"shop__orders": {"config": {"offset_reset": "timestamp", "reset_timestamp": "2026-01-01T00:00"}}}}
        result = target.materialize([LAKE], run_config=at, raise_on_error=False)
        assert any("needs Kafka >= 0.10.1" in m and "0.9.0.1" in m for m in failure_messages(result))


def _reset_to(at: str) -> dict[str, object]:
    return {"ops": {"shop__orders": {"config": {"offset_reset": "timestamp", "reset_timestamp": at}}}}


def test_reset_to_a_timestamp_with_timestamps_and_headers_as_columns(
    current_kafka: CurrentKafka, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """40 messages one minute apart from T0: a reset to T0 + 25 min lands the last 15, each with
    its own timestamp and headers; a reset past the last message lands nothing."""
    topic = _topic(current_kafka)
    stamps = [T0 + dt.timedelta(minutes=i) for i in range(40)]
    headers: list[list[tuple[str, str | bytes | None]] | None] = [
        [("trace-id", f"t{i}".encode()), ("tag", b"a"), ("tag", b"\xff")] if i % 10 == 0 else None for i in range(40)
    ]
    keys = [b"\xff" + str(i).encode() if i == 30 else str(i) for i in range(40)]  # one key not UTF-8
    produce(current_kafka, topic, _orders(40), keys=keys, timestamps=stamps, headers=headers)
    target = platform(_yaml(current_kafka, topic), tmp_path, instance)
    assert target.materialize(
        [LAKE, WAREHOUSE], run_config=_reset_to((T0 + dt.timedelta(minutes=25)).isoformat())
    ).success
    meta = latest_metadata(instance, LAKE)
    assert meta["messages_consumed"] == 15 and meta["rows_landed"] == 15
    assert target.query("SELECT min(order_id), max(order_id), count(*) FROM shop.orders") == [(25, 39, 15)]
    consumer = Consumer(current_kafka.client_config({"group.id": f"t{uuid.uuid4().hex}"}))
    try:  # where the broker says the time starts, per partition
        at = int((T0 + dt.timedelta(minutes=25)).timestamp() * 1000)
        found = consumer.offsets_for_times([TopicPartition(topic, p, at) for p in range(PARTITIONS)], timeout=30)
    finally:
        consumer.close()
    assert meta["offsets_start"] == {str(tp.partition): tp.offset for tp in found}
    rows = target.query(
        "SELECT order_id, _ip_timestamp, _ip_headers->>'trace-id', _ip_headers->'tag', _ip_headers "
        "FROM shop.orders ORDER BY order_id"
    )
    assert all(stamp == T0 + dt.timedelta(minutes=order_id) for order_id, stamp, *_ in rows)
    with_headers = {order_id: (trace, tags) for order_id, _, trace, tags, _ in rows if trace is not None}
    assert with_headers == {30: ("t30", '["a","\\\\xff"]')}
    assert sum(1 for *_, raw in rows if raw is None) == 14
    assert target.query("SELECT order_id, _ip_key FROM shop.orders WHERE order_id IN (29, 30, 31) ORDER BY 1") == [
        (29, "29"),
        (30, "\\xff30"),
        (31, "31"),
    ]

    produce(current_kafka, topic, _orders(5, start=40), timestamps=[T0 + dt.timedelta(hours=1)] * 5)
    assert target.materialize([LAKE], run_config=_reset_to((T0 + dt.timedelta(hours=1, seconds=1)).isoformat())).success
    meta = latest_metadata(instance, LAKE)
    assert meta["messages_consumed"] == 0  # past the last message: each partition's end
    assert sum(meta["offsets_start"].values()) == 45


def test_backlog_sensor_keys_runs_by_offset_ranges(
    kafka_broker: Broker, topic: str, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    target = platform(_yaml(kafka_broker, topic), tmp_path, instance)
    sensor = next(s for s in target.defs.sensors or [] if s.name == "shop_orders_backlog")
    resources = dict(target.defs.resources or {})

    def tick() -> tuple[list[dg.RunRequest], str]:
        with dg.build_sensor_context(instance=instance, resources=resources, definitions=target.defs) as context:
            data = sensor.evaluate_tick(context)
        return list(data.run_requests or []), data.skip_message or ""

    assert tick()[0] == []
    produce(kafka_broker, topic, _orders(9))  # keys 0..8 spread over the partitions
    requests, _ = tick()
    assert len(requests) == 1
    key = requests[0].run_key or ""
    ranges = dict(part.split(":") for part in key.split("@")[1].split(","))
    assert set(ranges) == {"p0", "p1", "p2"}
    assert sum(int(r.split("-")[1]) - int(r.split("-")[0]) for r in ranges.values()) == 9
    target.materialize([LAKE, WAREHOUSE])
    requests, skipped = tick()
    assert requests == [] and "0 message(s)" in skipped


def test_publish_to_a_topic_with_keys_as_idempotent_ids(
    kafka_broker: Broker, topic: str, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """Warehouse rows go out with their id as the key; published twice, consumed with
    ``message_id: key``, each row lands once."""
    out = f"{topic}_out"
    kafka_broker.create_topic(out, 2)
    kafka_broker.create_topic(f"{out}.dead-letter", 1)
    produce(kafka_broker, topic, _orders(40))
    extra = (
        f"    - name: replay\n      topic: {out}\n      message_id: key\n      max_wait_seconds: 1\n"
        f"  publish:\n    - name: orders_out\n      table: shop.orders\n      key_columns: [order_id]\n"
        f"      topic: {out}\n"
    )
    target = platform(_yaml(kafka_broker, topic, extra=extra), tmp_path, instance)
    target.materialize([LAKE, WAREHOUSE])
    publish = dg.AssetKey(["shop", "publish_orders_out"])
    target.materialize([publish])
    target.materialize([publish])
    assert latest_metadata(instance, publish)["messages_published"] == 40
    replay = [dg.AssetKey(["shop", "replay"]), dg.AssetKey(["warehouse", "shop.replay"])]
    assert target.materialize(replay).success
    assert latest_metadata(instance, replay[0])["messages_consumed"] == 80
    assert target.query("SELECT count(*), count(DISTINCT order_id) FROM shop.replay") == [(40, 40)]


def test_a_dead_letter_keeps_the_key_bytes_and_headers(
    current_kafka: CurrentKafka, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """The dead letter's key was the key as text (U+FFFD for bytes that are not UTF-8) and the message's own
    headers were gone: what was dead-lettered could not be replayed as it came."""
    topic = _topic(current_kafka)
    original: list[tuple[str, str | bytes | None]] = [
        ("trace-id", b"abc"),
        ("tenant", b"\xfe\xff"),
        ("empty", None),
        ("x-ip-dead-letter-reason", b"an earlier one"),  # dead-lettered and replayed before: replaced
    ]
    produce(current_kafka, topic, [b"{not json"], keys=[b"key\xff\x00bin"], headers=[original])
    target = platform(_yaml(current_kafka, topic), tmp_path, instance)
    assert target.materialize([LAKE, WAREHOUSE]).success
    (dead,) = _dead_letter_messages(current_kafka, topic)
    assert dead.key() == b"key\xff\x00bin" and dead.value() == b"{not json"
    headers = dead.headers()
    assert isinstance(headers, list)
    assert headers[:3] == original[:3]
    assert [name for name, _ in headers[3:]] == [
        "x-ip-dead-letter-reason",
        "x-ip-source-topic",
        "x-ip-source-partition",
        "x-ip-source-offset",
    ]
    assert b"not UTF-8 JSON" in (headers[3][1] or b"")


def test_keys_that_are_not_utf8_stay_distinct_ids(
    current_kafka: CurrentKafka, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """With ``message_id: key``, undecodable key bytes were all U+FFFD: distinct keys became one id and
    all but one message were dropped as duplicates. Nor may the text ``\\xff`` be the byte 0xff's id."""
    topic = _topic(current_kafka)
    keys = [b"cust\xff", b"cust\xfe", b"\x00\x01\x80", b"\x00\x01\x81", b"cust\\xff", b"a\\b"]
    produce(current_kafka, topic, _orders(len(keys)), keys=keys)
    target = platform(_yaml(current_kafka, topic, extra="      message_id: key\n"), tmp_path, instance)
    assert target.materialize([LAKE, WAREHOUSE]).success
    assert latest_metadata(instance, LAKE)["duplicate_ids_dropped"] == 0
    rows = target.query("SELECT order_id, _ip_message_id, _ip_key FROM shop.orders ORDER BY order_id")
    expected = ["cust\\xff", "cust\\xfe", "\x00\x01\\x80", "\x00\x01\\x81", "cust\\\\xff", "a\\\\b"]
    assert rows == [(i, key, key) for i, key in enumerate(expected)]


def _read_committed(broker: Broker, topic: str, partitions: int) -> list[bytes]:
    """The keys of every message of ``topic`` a ``read_committed`` consumer sees before a marker
    sent now to each partition: a marker is delivered only once no transaction before it is still
    open, so an empty answer means "aborted", never "not decided yet" or "the consumer was slow"."""
    marker = f"marker-{uuid.uuid4().hex}".encode()
    producer = Producer(broker.client_config())
    for partition in range(partitions):
        producer.produce(topic, value=b"", key=marker, partition=partition)
    assert producer.flush(10) == 0
    consumer = Consumer(broker.client_config({"group.id": f"t{uuid.uuid4().hex}", "isolation.level": "read_committed"}))
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    keys: list[bytes] = []
    markers, deadline = 0, time.monotonic() + 30
    try:
        while markers < partitions:
            assert time.monotonic() < deadline, f"markers not delivered: a transaction on {topic} is still open"
            for message in consumer.consume(500, timeout=1):
                key = message.key() or b""
                if message.error() is None:
                    markers += key == marker
                    if not key.startswith(b"marker-"):
                        keys.append(key)
    finally:
        consumer.close()
    return keys


@pytest.mark.parametrize("transactional", [True, False])
def test_a_transactional_publication_is_all_or_nothing(
    current_kafka: CurrentKafka, tmp_path: Path, instance: dg.DagsterInstance, transactional: bool
) -> None:
    """Row 30 of 40 is too large for the producer (``message.max.bytes``), so the run fails after
    sending 30 messages: in a transaction a ``read_committed`` consumer sees none of them (without
    one, the 30 stay visible); the next run, without the large row, publishes every row once, and a
    stream reading the topic back drains it to a lag of 0 (a transaction's commit marker takes an
    offset no message has: committed offsets must step over it)."""
    topic = _topic(current_kafka)
    out = f"{topic}_out"
    current_kafka.create_topic(out, 2)
    current_kafka.create_topic(f"{out}.dead-letter", 1)
    produce(current_kafka, topic, _orders(40))

    def publication(large: str) -> str:
        query = f"SELECT order_id, CASE WHEN order_id = 30 THEN {large} ELSE customer END AS customer FROM shop.orders"
        return (
            f"    - name: replay\n      topic: {out}\n      message_id: key\n      max_wait_seconds: 1\n"
            f'  publish:\n    - name: orders_out\n      query: "{query}"\n      deps: [warehouse/shop.orders]\n'
            f"      key_columns: [order_id]\n      cursor: order_id\n      topic: {out}\n"
            f"      transactional: {str(transactional).lower()}\n      fetch_rows: 7\n"
        )

    config = '"message.max.bytes": "2000"'
    target = platform(
        _yaml(current_kafka, topic, extra=publication("repeat('x', 5000)"), client_config=config), tmp_path, instance
    )
    assert target.materialize([LAKE, WAREHOUSE]).success
    publish = dg.AssetKey(["shop", "publish_orders_out"])
    failed = target.materialize([publish], raise_on_error=False)
    assert not failed.success
    assert any("producing to" in m and "too large" in m.lower() for m in failure_messages(failed))
    # The failed step closed its warehouse connection: a connection with another configuration opens
    # in this process (an open one made that fail: "different configuration than existing connections").
    duckdb.connect(str(target.warehouse_path)).close()
    assert len(_read_committed(current_kafka, out, 2)) == (0 if transactional else 30)

    fixed = platform(
        _yaml(current_kafka, topic, extra=publication("customer"), client_config=config), tmp_path, instance
    )
    assert fixed.materialize([publish]).success
    meta = latest_metadata(instance, publish)
    assert meta["messages_published"] == 40 and meta.get("transactional", False) == transactional
    replay = [dg.AssetKey(["shop", "replay"]), dg.AssetKey(["warehouse", "shop.replay"])]
    assert fixed.materialize(replay).success
    assert latest_metadata(instance, replay[0])["remaining_messages"] == 0
    assert fixed.query("SELECT count(DISTINCT order_id) FROM shop.replay") == [(40,)]
    keys = _read_committed(current_kafka, out, 2)
    assert len(set(keys)) == 40 and len(keys) == (40 if transactional else 70)


@pytest.mark.parametrize("kafka_broker", ["kafka-0.9.0.1"], indirect=True)
def test_transactions_are_refused_on_kafka_0_9(
    kafka_broker: Broker, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """The current broker's side: test_a_transactional_publication_is_all_or_nothing."""
    topic = _topic(kafka_broker)
    produce(kafka_broker, topic, _orders(3))
    extra = f"  publish:\n    - name: out\n      table: shop.orders\n      topic: {topic}\n      transactional: true\n"
    target = platform(_yaml(kafka_broker, topic, extra=extra), tmp_path, instance)
    target.materialize([LAKE, WAREHOUSE])
    result = target.materialize([dg.AssetKey(["shop", "publish_out"])], raise_on_error=False)
    assert any("transactions need Kafka >= 0.11" in m and "0.9.0.1" in m for m in failure_messages(result))


def test_a_topic_deleted_and_recreated_fails_the_run_rather_than_dropping_its_messages(
    kafka_broker: Broker, topic: str, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """30 messages landed; the topic is deleted and created again under its name, and 6 new
    messages (keys 0-5, so each partition holds fewer than it did) take offsets 0-5 again. The
    next run took them for the landed messages with those offsets (their ids, ``topic/p/o``, are
    in the lake) and dropped them as already landed, successfully: now it fails naming the topic,
    the partition and both offsets, lands nothing and commits nothing, with ``offset_reset:
    earliest`` too. The remedy it names, a new stream, lands all 6."""
    produce(kafka_broker, topic, _orders(30))
    target = platform(_yaml(kafka_broker, topic), tmp_path, instance)
    assert target.materialize([LAKE, WAREHOUSE]).success
    landed = committed(kafka_broker, topic)
    kafka_broker.delete_topic(topic)
    kafka_broker.create_topic(topic, PARTITIONS)
    produce(kafka_broker, topic, _orders(6, start=1000))
    for config, group in (({}, True), ({"ops": {"shop__orders": {"config": {"offset_reset": "earliest"}}}}, False)):
        result = target.materialize([LAKE, WAREHOUSE], run_config=config, raise_on_error=False)
        assert not result.success, latest_metadata(instance, LAKE)
        (message,) = failure_messages(result)
        assert f"TopicRecreated: topic {topic!r} on " in message and "was re-created or truncated" in message, message
        for partition, offset in landed.items():  # each partition, with both offsets beyond its new end
            beyond = f"the group's committed offset is {offset} and " if group else ""
            assert f"partition {partition}'s next offset (high watermark) is " in message, message
            assert f"but {beyond}the lake holds offsets through {offset - 1}" in message, message
        assert "as a new stream" in message and "nothing was consumed" in message, message
    assert _rows(target) == (30, 30, sum(range(30)))
    assert committed(kafka_broker, topic) == landed

    extra = f"    - name: orders_again\n      topic: {topic}\n      max_wait_seconds: 1\n"
    again = platform(_yaml(kafka_broker, topic, extra=extra), tmp_path, instance)
    assert again.materialize([dg.AssetKey(["shop", "orders_again"]), dg.AssetKey(["warehouse", "shop.orders_again"])])
    assert again.query("SELECT count(*), min(order_id), max(order_id) FROM shop.orders_again") == [(6, 1000, 1005)]


def test_a_topic_recreated_with_fewer_partitions_and_refilled_fails_the_run(
    kafka_broker: Broker, topic: str, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """Re-created with one partition and refilled past the offsets landed from it: partition 0's end
    is beyond them, but partitions 1 and 2, which the lake holds, are gone (Kafka never removes a
    partition), so the topic is another one and its 40 messages are not taken for landed ones."""
    produce(kafka_broker, topic, _orders(30))
    target = platform(_yaml(kafka_broker, topic), tmp_path, instance)
    assert target.materialize([LAKE, WAREHOUSE]).success
    kafka_broker.delete_topic(topic)
    kafka_broker.create_topic(topic, 1)
    produce(kafka_broker, topic, _orders(40, start=1000))
    result = target.materialize([LAKE, WAREHOUSE], raise_on_error=False)
    (message,) = failure_messages(result)
    assert "partition 1 is gone" in message and "partition 2 is gone" in message, message
    assert "partition 0" not in message, message
    assert _rows(target) == (30, 30, sum(range(30)))


def test_a_recreated_topic_with_ids_from_keys_resumes_from_earliest(
    current_kafka: CurrentKafka, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """With ``message_id: key`` the ids do not depend on offsets, so only the group's committed
    offsets, now beyond each partition's end, stop the run (they would skip the new messages); the
    remedy it names, ``offset_reset: earliest``, lands the 6 new messages and replaces every committed
    offset beyond its partition's end (also where no new message was), so the runs after it start
    from the new offsets as usual."""
    kafka_broker, topic = current_kafka, _topic(current_kafka)  # one broker: both run the main re-creation test
    yaml = _yaml(kafka_broker, topic, extra="      message_id: key\n")
    produce(kafka_broker, topic, _orders(30))
    target = platform(yaml, tmp_path, instance)
    assert target.materialize([LAKE, WAREHOUSE]).success
    before = committed(kafka_broker, topic)
    assert min(before.values()) > 6  # each partition's old end is beyond the 6 new messages
    kafka_broker.delete_topic(topic)
    kafka_broker.create_topic(topic, PARTITIONS)
    produce(kafka_broker, topic, _orders(6, start=1000), keys=[f"new{i}" for i in range(6)])
    result = target.materialize([LAKE, WAREHOUSE], raise_on_error=False)
    (message,) = failure_messages(result)
    assert "the group's committed offset" in message and "the lake's" not in message, message
    assert "offset_reset: earliest" in message, message
    earliest = {"ops": {"shop__orders": {"config": {"offset_reset": "earliest"}}}}
    assert target.materialize([LAKE, WAREHOUSE], run_config=earliest).success
    meta = latest_metadata(instance, LAKE)
    assert meta["rows_landed"] == 6
    # a partition the 6 did not reach would have kept its old offset, failing every later run
    assert meta["offsets_replaced"] == {str(p): o for p, o in before.items()}
    assert all(0 <= o <= 6 for o in committed(kafka_broker, topic).values())
    assert _rows(target) == (36, 36, sum(range(30)) + sum(range(1000, 1006)))
    produce(kafka_broker, topic, _orders(3, start=2000), keys=[f"more{i}" for i in range(3)])
    assert target.materialize([LAKE, WAREHOUSE]).success
    assert latest_metadata(instance, LAKE)["rows_landed"] == 3


def test_a_stream_moved_to_another_topic_is_not_compared_with_the_old_one(
    current_kafka: CurrentKafka, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """30 messages landed from one topic, then the stream's ``topic`` is changed to another holding
    6: the lake's offsets (and topic id) of the old topic say nothing about the new one, whose
    partitions end below them. The run took them for a re-created topic and failed; it lands the 6."""
    kafka_broker, topic = current_kafka, _topic(current_kafka)  # one broker: both run the main re-creation test
    produce(kafka_broker, topic, _orders(30))
    target = platform(_yaml(kafka_broker, topic), tmp_path, instance)
    assert target.materialize([LAKE, WAREHOUSE]).success
    moved = _topic(kafka_broker)
    produce(kafka_broker, moved, _orders(6, start=1000))
    target = platform(_yaml(kafka_broker, moved), tmp_path, instance)
    result = target.materialize([LAKE, WAREHOUSE], raise_on_error=False)
    assert result.success, failure_messages(result)
    assert latest_metadata(instance, LAKE)["rows_landed"] == 6
    assert _rows(target) == (36, 36, sum(range(30)) + sum(range(1000, 1006)))


def test_ids_from_keys_are_not_failed_for_ever_by_a_topic_id_no_manifest_recorded(
    current_kafka: CurrentKafka, tmp_path: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Neither test broker gives topic ids (Kafka 0.9 has none, noida-db answers the zero id), so the
    topic's id is faked: A, then B once the topic is re-created and the same 30 keyed messages are
    published again. With ``message_id: key`` every one is a duplicate, so no batch writes a manifest
    (none records B) while the offsets are committed: the id check failed every run for ever, even
    after the remedy it named (``offset_reset: earliest``). It applies to broker ids only now."""
    kafka_broker, topic = current_kafka, _topic(current_kafka)  # one broker: both run the main re-creation test
    topic_id = {"now": "aaaaaaaa-0000-4000-8000-000000000001"}
    monkeypatch.setattr(KafkaTopicSource, "_topic_id", lambda self: topic_id["now"])
    keys = [f"k{i}" for i in range(30)]
    target = platform(_yaml(kafka_broker, topic, extra="      message_id: key\n"), tmp_path, instance)
    produce(kafka_broker, topic, _orders(30), keys=keys)
    assert target.materialize([LAKE, WAREHOUSE]).success
    kafka_broker.delete_topic(topic)
    kafka_broker.create_topic(topic, PARTITIONS)
    topic_id["now"] = "bbbbbbbb-0000-4000-8000-000000000002"
    produce(kafka_broker, topic, _orders(30), keys=keys)  # same keys, so same partitions and ends
    earliest = {"ops": {"shop__orders": {"config": {"offset_reset": "earliest"}}}}
    for config in ({}, earliest, {}):
        result = target.materialize([LAKE, WAREHOUSE], run_config=config, raise_on_error=False)
        assert result.success, failure_messages(result)
    assert _rows(target) == (30, 30, sum(range(30)))


def test_with_broker_ids_a_topic_of_another_id_fails_the_run_though_refilled_past_the_landed_offsets(
    kafka_broker: Broker, topic: str, tmp_path: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Re-created with as many partitions and refilled past the landed offsets, the topic looks like
    the old one to the offset checks; its id (faked, see above) still tells it apart."""
    topic_id = {"now": "aaaaaaaa-0000-4000-8000-000000000001"}
    monkeypatch.setattr(KafkaTopicSource, "_topic_id", lambda self: topic_id["now"])
    target = platform(_yaml(kafka_broker, topic), tmp_path, instance)
    produce(kafka_broker, topic, _orders(30))
    assert target.materialize([LAKE, WAREHOUSE]).success
    kafka_broker.delete_topic(topic)
    kafka_broker.create_topic(topic, PARTITIONS)
    topic_id["now"] = "bbbbbbbb-0000-4000-8000-000000000002"
    produce(kafka_broker, topic, _orders(60, start=1000))
    result = target.materialize([LAKE, WAREHOUSE], raise_on_error=False)
    (message,) = failure_messages(result)
    assert f"its topic id is {topic_id['now']}" in message and "aaaaaaaa-" in message, message
    assert _rows(target) == (30, 30, sum(range(30)))


def test_an_offset_committed_past_an_open_transaction_is_not_taken_for_a_recreated_topic(
    current_kafka: CurrentKafka, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """A ``read_uncommitted`` tool commits the group's offsets past 4 messages of a transaction still
    open. The run's consumer (``read_committed``, librdkafka's default) sees the last stable offset
    as the partition's end, below that committed offset: the run took the topic for a re-created
    one and failed. The end it compares with is a ``read_uncommitted`` one, so it runs."""
    topic = _topic(current_kafka)
    target = platform(_yaml(current_kafka, topic), tmp_path, instance)
    produce(current_kafka, topic, _orders(3), keys=["same"] * 3)  # all in one partition
    assert target.materialize([LAKE, WAREHOUSE]).success
    (partition,) = [p for p, o in committed(current_kafka, topic).items() if o == 3]
    open_tx = Producer(current_kafka.client_config({"transactional.id": f"{topic}.tool"}))
    open_tx.init_transactions(30)
    open_tx.begin_transaction()
    for value in _orders(4, start=100):
        open_tx.produce(topic, value=value, key="same", partition=partition)
    assert open_tx.flush(30) == 0
    try:
        tool = Consumer(current_kafka.client_config({"group.id": "integration_platform.shop.orders"}))
        tool.commit(offsets=[TopicPartition(topic, partition, 7)], asynchronous=False)
        tool.close()
        result = target.materialize([LAKE, WAREHOUSE], raise_on_error=False)
        assert result.success, failure_messages(result)
        assert committed(current_kafka, topic)[partition] == 7
    finally:
        open_tx.abort_transaction(30)


def test_an_end_offset_read_low_once_is_read_again_before_the_run_fails(
    current_kafka: CurrentKafka, tmp_path: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new leader on a broker before 2.2 can report a lower end for a moment (KIP-207); faked
    here by a first reading of 0 for every partition. The reading a second later is the real one,
    so the run goes on and lands the 6 new messages."""
    kafka_broker, topic = current_kafka, _topic(current_kafka)  # one broker: both run the main re-creation test
    real, readings = KafkaTopicSource.end_offsets, []

    def first_low(self: KafkaTopicSource, partitions: Sequence[int]) -> dict[int, int]:
        readings.append(list(partitions))
        return {p: 0 for p in partitions} if len(readings) == 1 else real(self, partitions)

    target = platform(_yaml(kafka_broker, topic), tmp_path, instance)
    produce(kafka_broker, topic, _orders(30))
    assert target.materialize([LAKE, WAREHOUSE]).success
    produce(kafka_broker, topic, _orders(6, start=1000))
    monkeypatch.setattr(KafkaTopicSource, "end_offsets", first_low)
    result = target.materialize([LAKE, WAREHOUSE], raise_on_error=False)
    assert result.success, failure_messages(result)
    assert readings == [list(range(PARTITIONS))] * 2
    assert latest_metadata(instance, LAKE)["rows_landed"] == 6


def test_a_batch_size_beyond_librdkafkas_limit_is_refused_when_loaded(
    current_kafka: CurrentKafka, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """librdkafka's ``consume`` takes at most 1,000,000 messages a call: a stream with a larger
    ``batch_size`` (and ``max_messages_per_run``) was accepted, and every run failed on a bare
    ``ValueError: num_messages must be between 0 and 1000000 (1M)`` naming neither the stream nor
    the field. It is refused when the definitions load, naming both, as RabbitMQ's prefetch limit is."""
    topic = _topic(current_kafka)
    produce(current_kafka, topic, _orders(3))
    extra = "      max_messages_per_run: 2000000\n"
    with pytest.raises(ValueError, match=r"stream 'orders': batch_size 1000001 exceeds .*1000000"):
        target = platform(_yaml(current_kafka, topic, batch_size=1_000_001, extra=extra), tmp_path, instance)
        result = target.materialize([LAKE, WAREHOUSE], raise_on_error=False)
        raise AssertionError(f"loaded and ran: {failure_messages(result)}")
