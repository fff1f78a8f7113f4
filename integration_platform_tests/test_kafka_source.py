"""Kafka topics landed exactly once, against a real Kafka 0.9.0.1 broker (see kafka_broker.py)."""

import base64
import json
import uuid
from pathlib import Path

import dagster as dg
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from integration_platform_tests.kafka_broker import KafkaBroker, kafka_broker_fixture
from integration_platform_tests.run_stream import killed_in
from sandbox.harness import Platform, failure_messages, latest_metadata, platform

kafka_broker = kafka_broker_fixture("kafka_broker", scope="module")
PARTITIONS = 3
LAKE = dg.AssetKey(["shop", "orders"])
WAREHOUSE = dg.AssetKey(["warehouse", "shop.orders"])


def _yaml(broker: KafkaBroker, topic: str, batch_size: int = 500, extra: str = "") -> str:
    return f"""
type: integration_platform.components.QueueSource
attributes:
  source: shop
  connection:
    broker: kafka
    bootstrap_servers: "{broker.bootstrap}"
    client_config: {{api.version.request: "false", broker.version.fallback: "0.9.0.1"}}
  streams:
    - name: orders
      topic: {topic}
      batch_size: {batch_size}
      max_wait_seconds: 1
{extra}"""


@pytest.fixture
def topic(kafka_broker: KafkaBroker) -> str:
    name = f"ip_test_orders_{uuid.uuid4().hex[:8]}"
    kafka_broker.create_topic(name, PARTITIONS)
    kafka_broker.create_topic(f"{name}.dead-letter", 1)
    return name


def _order(i: int) -> dict[str, object]:
    return {"order_id": i, "customer": f"c{i % 97}", "amount": round(i * 1.25, 2)}


def produce(broker: KafkaBroker, topic: str, values: list[bytes], keys: list[str] | None = None) -> None:
    producer = Producer(broker.client_config({"linger.ms": 5}))
    errors: list[str] = []
    for i, value in enumerate(values):
        key = keys[i] if keys else str(i)
        producer.produce(topic, value=value, key=key, on_delivery=lambda e, _: errors.append(str(e)) if e else None)
        producer.poll(0)
    assert producer.flush(30) == 0 and not errors


def _orders(n: int, start: int = 0) -> list[bytes]:
    return [json.dumps(_order(i)).encode() for i in range(start, start + n)]


def committed(broker: KafkaBroker, topic: str, group: str = "integration_platform.shop.orders") -> dict[int, int]:
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
    kafka_broker: KafkaBroker, topic: str, tmp_path: Path, instance: dg.DagsterInstance
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

    # More messages: the next run starts at the committed offsets and lands only those.
    produce(kafka_broker, topic, _orders(30, start=n))
    target.materialize([LAKE, WAREHOUSE])
    assert latest_metadata(instance, LAKE)["rows_landed"] == 30
    assert _rows(target)[:2] == (n + 30, n + 30)
    target.materialize([LAKE, WAREHOUSE])
    assert latest_metadata(instance, LAKE)["messages_consumed"] == 0


def test_run_killed_after_landing_before_commit_yields_n_rows(
    kafka_broker: KafkaBroker, topic: str, tmp_path: Path
) -> None:
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


def test_poison_goes_to_the_dead_letter_topic_in_an_envelope(
    kafka_broker: KafkaBroker, topic: str, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    values = _orders(50)
    values[10] = b"{broken"
    values[20] = json.dumps({"order_id": "twenty", "amount": 1.0}).encode()
    produce(kafka_broker, topic, values)
    target = platform(_yaml(kafka_broker, topic), tmp_path, instance)
    assert target.materialize([LAKE, WAREHOUSE]).success
    assert target.query("SELECT count(*) FROM shop.orders") == [(48,)]
    assert latest_metadata(instance, LAKE)["dead_lettered"] == 2
    consumer = Consumer(
        kafka_broker.client_config({"group.id": f"t{uuid.uuid4().hex}", "auto.offset.reset": "earliest"})
    )
    consumer.assign([TopicPartition(f"{topic}.dead-letter", 0, 0)])
    try:
        dead = [json.loads(m.value() or b"") for m in consumer.consume(10, timeout=10) if m.error() is None]
    finally:
        consumer.close()
    assert len(dead) == 2
    reasons = {base64.b64decode(d["value_base64"]): d["reason"] for d in dead}
    assert "not UTF-8 JSON" in reasons[b"{broken"]
    broken = next(d for d in dead if base64.b64decode(d["value_base64"]) == b"{broken")
    assert broken["topic"] == topic and broken["key"] == "10"
    assert any("order_id" in r and "twenty" in r for r in reasons.values())


def test_offset_reset_from_run_config(
    kafka_broker: KafkaBroker, topic: str, tmp_path: Path, instance: dg.DagsterInstance
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

    at = {"ops": {"shop__orders": {"config": {"offset_reset": "timestamp", "reset_timestamp": "2026-01-01T00:00"}}}}
    result = target.materialize([LAKE], run_config=at, raise_on_error=False)
    assert any("needs Kafka >= 0.10.1" in m and "0.9.0.1" in m for m in failure_messages(result))


def test_backlog_sensor_keys_runs_by_offset_ranges(
    kafka_broker: KafkaBroker, topic: str, tmp_path: Path, instance: dg.DagsterInstance
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
    kafka_broker: KafkaBroker, topic: str, tmp_path: Path, instance: dg.DagsterInstance
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
