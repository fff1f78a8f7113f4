"""RabbitMQ queues landed exactly once, against the machine's real broker."""

import datetime as dt
import json
import logging
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb
import pika
import pika.data
import pika.exceptions
import pytest

from integration_platform.core.landing import list_manifests
from integration_platform.core.streams import StreamSpec
from integration_platform.resources.brokers import BrokerError
from integration_platform.resources.rabbitmq import REASON_HEADER, RabbitMQResource, lenient_header_timestamps
from integration_platform.sources.queues.rabbitmq_stream import RabbitQueueSource
from integration_platform_tests.rabbit import CuttingProxy, connection, depth, fresh_queue, publish, take_all
from integration_platform_tests.run_stream import killed_in
from sandbox.harness import Platform, failure_messages, latest_metadata, platform


def _yaml(queue: str, batch_size: int = 1000, extra: str = "", port: int = 5672) -> str:
    return f"""
type: integration_platform.components.QueueSource
attributes:
  source: shop
  connection: {{broker: rabbitmq, host: 127.0.0.1, port: {port}}}
  streams:
    - name: orders
      queue: {queue}
      batch_size: {batch_size}
      max_wait_seconds: 1
{extra}"""


LAKE = dg.AssetKey(["shop", "orders"])
WAREHOUSE = dg.AssetKey(["warehouse", "shop.orders"])
SPEC = StreamSpec(source="shop", name="orders", write_disposition="merge", primary_key=("_ip_message_id",))


def _order(i: int) -> dict[str, object]:
    return {"order_id": i, "customer": f"c{i % 97}", "amount": round(i * 1.25, 2), "lines": [{"sku": f"s{i % 7}"}]}


@pytest.fixture
def queue() -> object:
    with fresh_queue() as name:
        yield name


def test_n_messages_land_as_exactly_n_rows(queue: str, tmp_path: Path, instance: dg.DagsterInstance) -> None:
    n = 3_500
    publish(queue, [(_order(i), f"order-{i}") for i in range(n)])
    target = platform(_yaml(queue), tmp_path, instance)
    result = target.materialize([LAKE, WAREHOUSE])
    assert result.success
    meta = latest_metadata(instance, LAKE)
    assert (meta["messages_consumed"], meta["rows_landed"], meta["batches_landed"]) == (n, n, 4)
    assert meta["remaining_messages"] == 0 and meta["dead_lettered"] == 0
    assert target.query("SELECT count(*), count(DISTINCT _ip_message_id), sum(order_id) FROM shop.orders")[0] == (
        n,
        n,
        sum(range(n)),
    )
    assert target.query("SELECT amount, lines[1].sku FROM shop.orders WHERE order_id = 42") == [(52.5, "s0")]
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"rows_reconcile_with_lake": True, "primary_key_unique_not_null": True}
    assert depth(queue) == 0

    # Nothing waiting: a second run lands nothing and changes nothing.
    target.materialize([LAKE, WAREHOUSE])
    assert latest_metadata(instance, LAKE)["messages_consumed"] == 0
    assert target.query("SELECT count(*) FROM shop.orders") == [(n,)]


def test_remaining_counts_what_the_run_prefetched(queue: str, tmp_path: Path, instance: dg.DagsterInstance) -> None:
    """A run stopped at ``max_messages`` holds deliveries it prefetched beyond its last batch (unacked, not
    ready): ``remaining_messages`` counted only the ready ones."""
    publish(queue, [(_order(i), f"order-{i}") for i in range(1000)])
    target = platform(_yaml(queue, batch_size=100), tmp_path, instance)
    assert target.materialize([LAKE], run_config={"ops": {"shop__orders": {"config": {"max_messages": 100}}}}).success
    meta = latest_metadata(instance, LAKE)
    assert (meta["messages_consumed"], meta["remaining_messages"]) == (100, 900)
    assert depth(queue) == 900


def test_a_broker_error_measuring_what_remains_fails_no_finished_run(
    queue: str,
    tmp_path: Path,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``stop()`` runs after every batch is landed and acknowledged, for the remaining-messages figure
    only: its BrokerError failed a run whose work was done."""

    def broken(_: object) -> None:
        raise BrokerError("cancelling the consumer: connection lost")

    monkeypatch.setattr(RabbitQueueSource, "stop", broken)
    publish(queue, [(_order(i), f"order-{i}") for i in range(3)])
    target = platform(_yaml(queue), tmp_path, instance)
    result = target.materialize([LAKE, WAREHOUSE])
    assert result.success
    meta = latest_metadata(instance, LAKE)
    assert (meta["rows_landed"], meta["remaining_messages"]) == (3, None)
    assert depth(queue) == 0
    warnings = [e.user_message for e in instance.all_logs(result.run_id) if e.level == logging.WARNING]
    assert any("what remains is unknown: cancelling the consumer: connection lost" in w for w in warnings)


def test_broker_columns_hold_each_messages_own_values(queue: str, tmp_path: Path, instance: dg.DagsterInstance) -> None:
    """Routing key, exchange and the publisher's timestamp per message; a timestamp no datetime can
    hold (AMQP allows any 64-bit value) is null and a message id that is not UTF-8 is escaped,
    instead of failing the batch. The escape keeps it apart from the text it reads as (``b"o\\xff3"``
    and ``"o\\\\xff3"`` had one id, and the second message was dropped as already landed)."""
    stamps = [1_700_000_000, None, 2**63 - 1, 1_700_000_060, 253_402_300_799, 253_402_300_800]  # 9999-12-31 23:59:59
    ids: list[str | bytes] = ["o0", "o1", "o2", b"o\xff3", "o4", "o\\xff3"]
    with connection() as conn:
        channel = conn.channel()
        channel.confirm_delivery()
        for i, stamp in enumerate(stamps):
            properties = pika.BasicProperties(message_id=ids[i], delivery_mode=2, timestamp=stamp)
            channel.basic_publish("", queue, json.dumps(_order(i)).encode(), properties)
    target = platform(_yaml(queue), tmp_path, instance)
    assert target.materialize([LAKE, WAREHOUSE]).success
    rows = target.query(
        "SELECT order_id, _ip_routing_key, _ip_exchange, epoch(_ip_published_at), _ip_message_id, "
        "epoch(_ip_received_at) FROM shop.orders ORDER BY order_id"
    )
    assert [row[:5] for row in rows] == [
        (0, queue, "", 1_700_000_000, "o0"),
        (1, queue, "", None, "o1"),
        (2, queue, "", None, "o2"),
        (3, queue, "", 1_700_000_060, "o\\xff3"),
        (4, queue, "", 253_402_300_799, "o4"),
        (5, queue, "", None, "o\\\\xff3"),
    ]
    assert len({row[5] for row in rows}) == 1 and rows[0][5] > 1_700_000_060


def _far_timestamp_header(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make pika encode every header datetime as the timestamp 2**62 seconds (AMQP allows any 64-bit value)."""
    monkeypatch.setattr(pika.data, "calendar", types.SimpleNamespace(timegm=lambda _: 2**62))


def test_a_header_timestamp_beyond_year_9999_does_not_block_the_queue(
    queue: str, tmp_path: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pika made a datetime of it while reading the frame: the connection broke (an unwrapped
    StreamLostError), the message could be neither landed nor dead-lettered, every run failed on it."""
    with monkeypatch.context() as patched:
        _far_timestamp_header(patched)
        with connection() as conn:
            channel = conn.channel()
            channel.confirm_delivery()
            properties = pika.BasicProperties(
                message_id="far", delivery_mode=2, headers={"sent": dt.datetime(2020, 1, 1)}
            )
            channel.basic_publish("", queue, json.dumps(_order(1)).encode(), properties)
    publish(queue, [(_order(2), "fine")])
    target = platform(_yaml(queue), tmp_path, instance)
    assert target.materialize([LAKE, WAREHOUSE]).success
    assert target.query("SELECT _ip_message_id FROM shop.orders ORDER BY order_id") == [("far",), ("fine",)]
    assert depth(queue) == 0


def test_a_poison_message_with_an_unsigned_64_bit_header_timestamp_is_dead_lettered(
    queue: str, tmp_path: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read as the integer 2**64-1, the timestamp made pika's re-publish of the headers (signed 64-bit at
    most) raise a struct.error, no AMQPError: the run failed, the message was requeued, the queue blocked."""
    with monkeypatch.context() as patched:
        patched.setattr(pika.data, "calendar", types.SimpleNamespace(timegm=lambda _: 2**64 - 1))
        with connection() as conn:
            channel = conn.channel()
            channel.confirm_delivery()
            sent = dt.datetime(2020, 1, 1)
            properties = pika.BasicProperties(
                message_id="far-poison",
                delivery_mode=2,
                headers={"sent": sent, "nested": {"at": [sent, "kept"]}, "small": 7},
            )
            channel.basic_publish("", queue, b"{not json", properties)
    publish(queue, [(_order(2), "fine")])
    target = platform(_yaml(queue), tmp_path, instance)
    assert target.materialize([LAKE, WAREHOUSE]).success
    assert target.query("SELECT _ip_message_id FROM shop.orders") == [("fine",)]
    assert depth(queue) == 0
    [(props, body)] = take_all(f"{queue}.dead-letter")
    assert (props.message_id, body) == ("far-poison", b"{not json")
    headers = props.headers or {}
    text = str(2**64 - 1)
    assert (headers["sent"], headers["nested"], headers["small"]) == (text, {"at": [text, "kept"]}, 7)
    assert "not UTF-8 JSON" in headers[REASON_HEADER]


def test_a_message_pika_cannot_encode_is_a_broker_error_naming_the_queue(queue: str) -> None:
    with RabbitMQResource().connect() as session:
        with pytest.raises(BrokerError, match=f"{queue}.*struct.error"):
            session.publish("", queue, b"{}", pika.BasicProperties(headers={"t": 2**64 - 1}))
        session.publish("", queue, b"{}", pika.BasicProperties())  # the channel is still usable
    assert depth(queue) == 1


def test_the_lenient_header_timestamps_are_scoped(monkeypatch: pytest.MonkeyPatch) -> None:
    """pika's own decoder is back once the last session closes; inside, a far timestamp is its integer and a
    near one still a datetime."""
    pikas_own = pika.data.decode_value
    with monkeypatch.context() as patched:
        _far_timestamp_header(patched)
        far: list[bytes] = []
        pika.data.encode_table(far, {"t": dt.datetime(2020, 1, 1)})
    near: list[bytes] = []
    pika.data.encode_table(near, {"t": dt.datetime(2020, 1, 1, tzinfo=dt.UTC), "a": [dt.datetime(2020, 1, 1)]})
    with pytest.raises((OverflowError, ValueError, OSError)):
        pika.data.decode_table(b"".join(far), 0)
    with lenient_header_timestamps():
        with lenient_header_timestamps():
            assert pika.data.decode_table(b"".join(far), 0)[0] == {"t": 2**62}
        assert pika.data.decode_table(b"".join(far), 0)[0] == {"t": 2**62}  # the outer block still holds it
        assert pika.data.decode_table(b"".join(near), 0)[0] == {
            "t": dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
            "a": [dt.datetime(2020, 1, 1, tzinfo=dt.UTC)],
        }
    assert pika.data.decode_value is pikas_own


def test_duplicate_publishes_collapse_to_one_row(queue: str, tmp_path: Path, instance: dg.DagsterInstance) -> None:
    messages = [(_order(i), f"order-{i}") for i in range(300)]
    publish(queue, messages + messages[:100])  # a publisher retried 100 messages
    target = platform(_yaml(queue, batch_size=250), tmp_path, instance)
    target.materialize([LAKE, WAREHOUSE])
    assert target.query("SELECT count(*), count(DISTINCT order_id) FROM shop.orders") == [(300, 300)]


def test_poison_is_dead_lettered_with_reason(queue: str, tmp_path: Path, instance: dg.DagsterInstance) -> None:
    good: list[tuple[bytes | dict[str, object], str | None]] = [(_order(i), f"order-{i}") for i in range(200)]
    poison: list[tuple[bytes | dict[str, object], str | None]] = [
        (b"{not json", "bad-json"),
        (b"\xff\xfe\x00", "bad-utf8"),
        (b"[1, 2, 3]", "a-list"),
        (_order(9001), None),  # no message id
        ({"order_id": "nine-thousand-two", "amount": 1.0}, "bad-type"),  # order_id is an integer column
    ]
    # fields named as platform columns are dropped: before, the first replaced order-1's row, and the
    # second made a tombstone of its own
    forged: list[tuple[bytes | dict[str, object], str | None]] = [
        ({**_order(9002), "_ip_message_id": "order-1"}, "forged-id"),
        ({**_order(9003), "_IP_OP": "delete", "_ip_window": "x"}, "forged-delete"),
    ]
    # Poison first and in the middle: the queue must never block behind one.
    publish(queue, poison[:2] + good[:100] + poison[2:] + forged + good[100:])
    target = platform(_yaml(queue, batch_size=50), tmp_path, instance)
    assert target.materialize([LAKE, WAREHOUSE]).success
    assert target.query("SELECT count(*) FROM shop.orders") == [(202,)]
    assert target.query("SELECT amount FROM shop.orders WHERE order_id = 1") == [(_order(1)["amount"],)]
    assert target.query("SELECT order_id FROM shop.orders WHERE _ip_message_id LIKE 'forged%' ORDER BY 1") == [
        (9002,),
        (9003,),
    ]
    assert latest_metadata(instance, LAKE)["dead_lettered"] == 5
    assert depth(queue) == 0
    dead = {props.message_id: (props.headers or {}) for props, _ in take_all(f"{queue}.dead-letter")}
    assert set(dead) == {"bad-json", "bad-utf8", "a-list", None, "bad-type"}
    assert "not UTF-8 JSON" in dead["bad-json"][REASON_HEADER]
    assert "not UTF-8 JSON" in dead["bad-utf8"][REASON_HEADER]
    assert "JSON list, not an object" in dead["a-list"][REASON_HEADER]
    assert "no id" in dead[None][REASON_HEADER]
    assert "order_id" in dead["bad-type"][REASON_HEADER] and "nine-thousand-two" in dead["bad-type"][REASON_HEADER]
    assert dead["bad-type"]["x-ip-source-queue"] == queue


def test_an_empty_message_id_is_poison_not_one_id_for_all(
    queue: str, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """A publisher that sets ``message_id`` to ``""`` gave every such message one id: all but the first of a
    batch were dropped as duplicates (and acknowledged), the rest merged into one row, none dead-lettered.
    Both decoding paths: the first run's batch (general path) and one under a known schema (Arrow's reader)."""
    target = platform(_yaml(queue, batch_size=10), tmp_path, instance)
    for run in range(2):
        publish(queue, [(_order(10 * run + i), "" if i % 2 else f"order-{10 * run + i}") for i in range(6)])
        assert target.materialize([LAKE, WAREHOUSE]).success
        assert latest_metadata(instance, LAKE)["dead_lettered"] == 3
    assert target.query("SELECT list(order_id ORDER BY order_id) FROM shop.orders") == [([0, 2, 4, 10, 12, 14],)]
    dead = take_all(f"{queue}.dead-letter")
    assert sorted(json.loads(body)["order_id"] for _, body in dead) == [1, 3, 5, 11, 13, 15]
    assert all("no id (the broker's message id missing or empty)" in (p.headers or {})[REASON_HEADER] for p, _ in dead)


def test_run_killed_after_landing_before_ack_yields_n_rows(queue: str, tmp_path: Path) -> None:
    """The drain is SIGKILLed inside the acknowledgement of its first batch: the batch is in the
    lake, the broker still holds it. The next run gets it again and still yields exactly N rows."""
    n, batch = 2_000, 500
    publish(queue, [(_order(i), f"order-{i}") for i in range(n)])
    yaml_file = tmp_path / "shop.yaml"
    yaml_file.write_text(_yaml(queue, batch_size=batch))
    home = tmp_path / "dagster_home"
    home.mkdir()
    killed = killed_in(
        "integration_platform.resources.rabbitmq",
        "RabbitSession",
        "ack",
        str(yaml_file),
        str(tmp_path),
        str(home),
        "shop/orders",
    )
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        target = platform(yaml_file.read_text(), tmp_path, instance)
        landed = list_manifests(target.store, SPEC)
        assert [m.rows for m in landed] == [batch]  # the first batch landed; its ack never happened
        assert depth(queue) == n  # nothing was acknowledged

        assert target.materialize([LAKE, WAREHOUSE]).success
        meta = latest_metadata(instance, LAKE)
        assert meta["already_landed_dropped"] == batch
        assert meta["rows_landed"] == n - batch
        assert target.query("SELECT count(*), count(DISTINCT order_id), sum(order_id) FROM shop.orders") == [
            (n, n, sum(range(n)))
        ]
        assert depth(queue) == 0


def test_new_fields_become_columns(queue: str, tmp_path: Path, instance: dg.DagsterInstance) -> None:
    target = platform(_yaml(queue), tmp_path, instance)
    publish(queue, [(_order(i), f"order-{i}") for i in range(10)])
    target.materialize([LAKE, WAREHOUSE])
    publish(queue, [({**_order(i), "coupon": "SPRING"}, f"order-{i}") for i in range(10, 15)])
    target.materialize([LAKE, WAREHOUSE])
    rows = target.query("SELECT count(*), count(coupon) FROM shop.orders")
    assert rows == [(15, 5)]


def test_ids_from_a_body_field(queue: str, tmp_path: Path, instance: dg.DagsterInstance) -> None:
    extra = "      message_id: field\n      id_field: order_id\n"
    publish(queue, [(_order(i), None) for i in range(50)] + [(_order(7), None)])
    target = platform(_yaml(queue, extra=extra), tmp_path, instance)
    target.materialize([LAKE, WAREHOUSE])
    assert target.query("SELECT count(*), min(_ip_message_id) FROM shop.orders") == [(50, "0")]


def test_missing_queue_and_unreachable_broker_are_clear(tmp_path: Path, instance: dg.DagsterInstance) -> None:
    target = platform(_yaml("ip_test_no_such_queue"), tmp_path, instance)
    result = target.materialize([LAKE], raise_on_error=False)
    assert not result.success
    assert any("ip_test_no_such_queue" in m and "NOT_FOUND" in m for m in failure_messages(result)), failure_messages(
        result
    )
    with pytest.raises(BrokerError, match=r"cannot connect to amqp://guest@127\.0\.0\.1:1/"):
        with RabbitMQResource(port=1, connect_timeout=2).connect():
            pass


def test_backlog_sensor_requests_one_drain_at_a_time(queue: str, tmp_path: Path, instance: dg.DagsterInstance) -> None:
    target = platform(_yaml(queue), tmp_path, instance)
    sensor = next(s for s in target.defs.sensors or [] if s.name == "shop_orders_backlog")
    resources = dict(target.defs.resources or {})

    def tick(cursor: str | None) -> tuple[list[dg.RunRequest], str | None, str]:
        with dg.build_sensor_context(
            instance=instance, cursor=cursor, resources=resources, definitions=target.defs
        ) as context:
            data = sensor.evaluate_tick(context)
        return list(data.run_requests or []), data.cursor, data.skip_message or ""

    requests, _, skipped = tick(None)
    assert not requests and "0 message(s)" in skipped
    publish(queue, [(_order(i), f"order-{i}") for i in range(5)])
    requests, cursor, _ = tick(None)
    assert cursor == "1" and [r.run_key for r in requests] == ["shop/orders#1"]
    assert requests[0].tags["integration_platform/drain"] == "shop/orders"
    assert requests[0].tags["integration_platform/source"] == "shop"  # the run queue's limit per source
    # A drain in flight: the next tick waits for it.
    job = dg.define_asset_job("drain", selection=[LAKE]).resolve(asset_graph=target.defs.resolve_asset_graph())
    instance.create_run_for_job(job_def=job, tags=requests[0].tags)
    requests, _, skipped = tick("1")
    assert not requests and "in flight" in skipped


def test_publish_warehouse_rows_with_idempotent_ids(queue: str, tmp_path: Path, instance: dg.DagsterInstance) -> None:
    """Rows of a warehouse table go out with confirms; publishing again sends the same ids, so a
    consumer that de-duplicates on them keeps each row once."""
    with fresh_queue("ip_test_out") as out:
        extra = (
            f"  publish:\n    - name: orders_out\n      table: shop.orders\n      key_columns: [order_id]\n"
            f"      queue: {out}\n"
        )
        publish(queue, [(_order(i), f"order-{i}") for i in range(120)])
        target = platform(_yaml(queue, extra=extra), tmp_path, instance)
        target.materialize([LAKE, WAREHOUSE])
        publish_key = dg.AssetKey(["shop", "publish_orders_out"])
        target.materialize([publish_key])
        target.materialize([publish_key])
        assert latest_metadata(instance, publish_key)["messages_published"] == 120
        sent = take_all(out)
        assert len(sent) == 240
        ids = [props.message_id for props, _ in sent]
        assert len(set(ids)) == 120 and sorted(ids[:120]) == sorted(ids[120:])
        bodies = {json.loads(body)["order_id"] for _, body in sent}
        assert bodies == set(range(120))


def test_publish_sends_nan_as_null_and_a_refused_message_names_the_publication_and_row(
    queue: str, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """``json.dumps`` wrote ``NaN`` (no JSON); an unroutable message failed as a BrokerError naming neither the
    publication nor the row."""
    rows = "SELECT * FROM (VALUES (1, 'NaN'::DOUBLE), (2, 'inf'::DOUBLE), (3, 1.5)) t(order_id, score)"
    publish_key = dg.AssetKey(["shop", "publish_orders_out"])
    with fresh_queue("ip_test_out") as out:
        for destination in (out, "ip_test_no_such_queue"):
            extra = (
                f'  publish:\n    - name: orders_out\n      query: "{rows}"\n      key_columns: [order_id]\n'
                f"      queue: {destination}\n"
            )
            result = platform(_yaml(queue, extra=extra), tmp_path, instance).materialize(
                [publish_key], raise_on_error=False
            )
            if destination == out:
                assert result.success
                bodies = [body for _, body in take_all(out)]
                assert all(b"NaN" not in body and b"Infinity" not in body for body in bodies)
                scores = {json.loads(body)["order_id"]: json.loads(body)["score"] for body in bodies}
                assert scores == {1: None, 2: None, 3: 1.5}
            else:
                assert not result.success
                message = " ".join(failure_messages(result))
                assert "publish orders_out: row [1] (message id " in message and "UnroutableError" in message


def test_publish_changes_since_the_last_run(queue: str, tmp_path: Path, instance: dg.DagsterInstance) -> None:
    """With a cursor, a publish sends the rows at or above the last high-water mark: the boundary
    row again (same id), then only what changed."""
    with fresh_queue("ip_test_out") as out:
        extra = (
            f"  publish:\n    - name: orders_out\n      table: shop.orders\n      key_columns: [order_id]\n"
            f"      cursor: order_id\n      queue: {out}\n"
        )
        target = platform(_yaml(queue, extra=extra), tmp_path, instance)
        publish_key = dg.AssetKey(["shop", "publish_orders_out"])
        publish(queue, [(_order(i), f"order-{i}") for i in range(100)])
        target.materialize([LAKE, WAREHOUSE])
        target.materialize([publish_key])
        first = {json.loads(body)["order_id"]: props.message_id for props, body in take_all(out)}
        assert sorted(first) == list(range(100))
        assert latest_metadata(instance, publish_key)["cursor_after"] == {"kind": "int", "text": "99"}

        publish(queue, [(_order(i), f"order-{i}") for i in range(100, 110)])
        target.materialize([LAKE, WAREHOUSE])
        target.materialize([publish_key])
        second = {json.loads(body)["order_id"]: props.message_id for props, body in take_all(out)}
        assert sorted(second) == list(range(99, 110))
        assert second[99] == first[99]  # the boundary row again, under the same id
        assert latest_metadata(instance, publish_key)["cursor_before"] == {"kind": "int", "text": "99"}


PUBLISH_KEY = dg.AssetKey(["shop", "publish_orders_out"])


@contextmanager
def scores_publication(
    queue: str, tmp_path: Path, instance: dg.DagsterInstance, rows: str
) -> Iterator[tuple[Platform, str]]:
    """A publication ``orders_out`` of the warehouse's ``pub.scores`` (``order_id``, cursor ``v``), created
    as ``rows`` (a SQL ``VALUES`` list), to a fresh queue; yields the platform and that queue."""
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as conn:
        conn.execute("CREATE SCHEMA pub")
        conn.execute(f"CREATE TABLE pub.scores AS SELECT * FROM (VALUES {rows}) t(order_id, v)")
    with fresh_queue("ip_test_out") as out:
        extra = (
            f'  publish:\n    - name: orders_out\n      query: "SELECT * FROM pub.scores"\n'
            f"      key_columns: [order_id]\n      cursor: v\n      queue: {out}\n"
        )
        yield platform(_yaml(queue, extra=extra), tmp_path, instance), out


def _published(out: str) -> list[int]:
    return sorted(json.loads(body)["order_id"] for _, body in take_all(out))


def test_publish_a_nan_cursor_does_not_become_the_mark(
    queue: str, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """The mark followed the last row, NaN (sorted above every number): later runs read only that row and a
    row changed since (cursor 2.0) was never published, every run succeeding."""
    with scores_publication(queue, tmp_path, instance, "(1, 1.0), (2, 'NaN'::DOUBLE)") as (target, out):
        target.materialize([PUBLISH_KEY])
        assert _published(out) == [1, 2]
        assert latest_metadata(instance, PUBLISH_KEY)["cursor_after"] == {"kind": "float", "text": "1.0"}
        with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as conn:
            conn.execute("INSERT INTO pub.scores VALUES (3, 2.0)")
        target.materialize([PUBLISH_KEY])
        # the row at the mark and the NaN row (above any mark) go out again under their ids, and the new one
        assert _published(out) == [1, 2, 3]
        assert latest_metadata(instance, PUBLISH_KEY)["cursor_after"] == {"kind": "float", "text": "2.0"}


def test_publish_a_row_with_a_null_cursor_fails_naming_it(
    queue: str, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """``cursor >= mark`` never reads a NULL cursor: the first run published such a row, every later one passed
    over those added since in silence (order 3 was never published, every run succeeding). Such a row now
    fails the run naming the publication, the row and the column, on every run until its cursor is set."""
    with scores_publication(queue, tmp_path, instance, "(1, 1), (2, 2)") as (target, out):
        target.materialize([PUBLISH_KEY])
        assert _published(out) == [1, 2]
        with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as conn:
            conn.execute("INSERT INTO pub.scores VALUES (3, NULL), (4, 3)")
        result = target.materialize([PUBLISH_KEY], raise_on_error=False)
        assert not result.success
        message = " ".join(failure_messages(result))
        assert "publish orders_out: row [3] (message id " in message and "cursor column 'v' is NULL" in message
        assert latest_metadata(instance, PUBLISH_KEY)["cursor_after"] == {"kind": "int", "text": "2"}
        take_all(out)
        with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as conn:
            conn.execute("UPDATE pub.scores SET v = 4 WHERE order_id = 3")
        target.materialize([PUBLISH_KEY])
        assert _published(out) == [2, 3, 4]


def test_drain_schedule_targets_both_assets(tmp_path: Path, instance: dg.DagsterInstance) -> None:
    target = platform(_yaml("orders", extra='      schedule: "*/15 * * * *"\n'), tmp_path, instance)
    schedule = target.defs.resolve_schedule_def("shop_orders_drain_schedule")
    assert schedule.cron_schedule == "*/15 * * * *"
    job = target.defs.resolve_job_def(schedule.job_name)
    assert set(job.asset_layer.executable_asset_keys) == {LAKE, WAREHOUSE}
    assert job.tags["integration_platform/drain"] == "shop/orders"


def test_connection_dropped_mid_drain(queue: str, tmp_path: Path, instance: dg.DagsterInstance) -> None:
    """The broker connection is cut mid-run: the run fails naming the broker, what was landed and
    acknowledged stays, and the next run completes with every message exactly once."""
    n = 3_000
    publish(queue, [(_order(i), f"order-{i}") for i in range(n)])
    proxy = CuttingProxy(cut_after=300_000)  # a few batches of 500 in
    try:
        cut = platform(_yaml(queue, batch_size=500, port=proxy.port), tmp_path, instance)
        result = cut.materialize([LAKE], raise_on_error=False)
    finally:
        proxy.close()
    assert not result.success and proxy.cuts == 1
    assert any(f"amqp://guest@127.0.0.1:{proxy.port}/" in m for m in failure_messages(result)), failure_messages(result)
    landed = sum(m.rows for m in list_manifests(cut.store, SPEC))
    assert 0 < landed < n
    target = platform(_yaml(queue, batch_size=500), tmp_path, instance)
    assert target.materialize([LAKE, WAREHOUSE]).success
    assert target.query("SELECT count(*), count(DISTINCT order_id), sum(order_id) FROM shop.orders") == [
        (n, n, sum(range(n)))
    ]
    assert depth(queue) == 0


def test_an_empty_object_does_not_block_the_queue(queue: str, tmp_path: Path, instance: dg.DagsterInstance) -> None:
    """A body with an empty object (``{"meta": {}}``, ``[{}]``) became a struct without fields, which
    Parquet cannot write: the landing failed, the batch was never acknowledged and every run failed on
    it again (the queue was blocked, and the good order of its batch with it). An empty object is now
    null; an object with fields in a later message still makes the column a struct."""
    publish(
        queue,
        [
            ({**_order(1), "meta": {}}, "order-1"),
            ({**_order(2), "meta": {}, "tags": [{}, {"a": {}}]}, "order-2"),
            (_order(3), "order-3"),
        ],
    )
    target = platform(_yaml(queue), tmp_path, instance)
    result = target.materialize([LAKE, WAREHOUSE], raise_on_error=False)
    assert result.success, failure_messages(result)
    assert depth(queue) == 0
    assert target.query("SELECT order_id, meta IS NULL, len(tags) FROM shop.orders ORDER BY order_id") == [
        (1, True, None),
        (2, True, 2),
        (3, True, None),
    ]
    publish(queue, [({**_order(4), "meta": {"source": "web"}}, "order-4")])
    assert target.materialize([LAKE, WAREHOUSE]).success
    assert target.query("SELECT meta.source FROM shop.orders WHERE order_id = 4") == [("web",)]
    assert latest_metadata(instance, LAKE)["dead_lettered"] == 0
    # once the stream has landed, Arrow's reader would make it an object of nulls: still null
    publish(queue, [({**_order(5), "meta": {}}, "order-5")])
    assert target.materialize([LAKE, WAREHOUSE]).success
    assert target.query("SELECT meta IS NULL FROM shop.orders WHERE order_id = 5") == [(True,)]


def test_a_declared_timestamp_converts_alike_whatever_shares_its_batch(
    queue: str, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """Once a stream had landed, a batch went through Arrow's JSON reader, which parses text into a
    declared timestamp by its own rules: ``2024-01-01 10:00:00`` (no offset) landed in a ``timestamptz``
    column and ``+02:00`` was shifted into a zone-less ``timestamp`` one, while the same bodies in a
    batch sharing it with a poison message (or in a stream's first batch) were dead-lettered as not
    convertible. A message's fate depended on its neighbours; now both paths convert alike."""
    extra = "      columns: {at: timestamptz, local: timestamp}\n"
    target = platform(_yaml(queue, extra=extra), tmp_path, instance)
    publish(queue, [({"n": 1, "at": "2024-01-01T10:00:00Z", "local": "2024-01-01 10:00:00"}, "m1")])
    assert target.materialize([LAKE, WAREHOUSE]).success
    naive_at = {"n": 2, "at": "2024-01-01 10:00:00", "local": "2024-01-01 10:00:00"}
    zoned_local = {"n": 3, "at": "2024-01-01T10:00:00Z", "local": "2024-01-01T10:00:00+02:00"}
    publish(queue, [(naive_at, "m2"), (zoned_local, "m3")])  # alone in their batch
    assert target.materialize([LAKE, WAREHOUSE]).success
    publish(queue, [({**naive_at, "n": 4}, "m4"), ({**zoned_local, "n": 5}, "m5"), (b"{not json", "m6")])
    assert target.materialize([LAKE, WAREHOUSE]).success
    dead = sorted(props.message_id for props, _ in take_all(f"{queue}.dead-letter"))
    landed = [row[0] for row in target.query("SELECT n FROM shop.orders ORDER BY n")]
    assert (landed, dead) == ([1], ["m2", "m3", "m4", "m5", "m6"])


@pytest.mark.parametrize("max_messages", [0, -1])
def test_a_max_messages_below_one_is_refused(
    max_messages: int, queue: str, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """The run config's ``max_messages: 0`` was read as unset (the drain took up to the stream's
    1,000,000) and ``-1`` as a run that takes nothing, which succeeded with 0 messages consumed: both
    are refused now, naming the field, and nothing is consumed."""
    publish(queue, [(_order(i), f"order-{i}") for i in range(5)])
    target = platform(_yaml(queue), tmp_path, instance)
    config = {"ops": {"shop__orders": {"config": {"max_messages": max_messages}}}}
    with pytest.raises(Exception, match="max_messages") as raised:
        target.materialize([LAKE], run_config=config)
    assert "greater than or equal to 1" in str(raised.value)
    assert depth(queue) == 5
