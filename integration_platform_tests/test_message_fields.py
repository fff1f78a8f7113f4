"""A queue message's body fields named as the platform's columns: dropped (they are the platform's to
write), the id field excepted; on the fast path too. The decoder alone, on Kafka's broker columns."""

import json

import pyarrow as pa
import pytest

from integration_platform.sources.queues.kafka_stream import ATTRIBUTES
from integration_platform.sources.queues.messages import MESSAGE_ID, Message, MessageBatch, MessageDecoder

pytestmark = pytest.mark.fast


def _batch(bodies: list[dict[str, object]]) -> MessageBatch:
    messages = [Message(json.dumps(b).encode(), f"id-{i}", f"t/0/{i}") for i, b in enumerate(bodies)]
    return MessageBatch.of(messages, pa.table({f.name: pa.nulls(len(bodies), f.type) for f in ATTRIBUTES}))


def test_platform_fields_are_dropped_and_said() -> None:
    """Before, ``_ip_message_id`` replaced the broker's id and ``_ip_op`` landed, a tombstone to the loader."""
    decoder = MessageDecoder("s/orders", id_from="broker", attributes=ATTRIBUTES)
    out = decoder.decode(_batch([{"n": 1, "_ip_message_id": "id-1", "_IP_OP": "delete", "_ip_topic": "x"}, {"n": 2}]))
    assert out.table is not None and not out.poison
    assert out.table.column(MESSAGE_ID).to_pylist() == ["id-0", "id-1"]
    assert "_IP_OP" not in out.table.column_names and "_ip_op" not in out.table.column_names
    assert out.table.column("_ip_topic").to_pylist() == [None, None]  # the broker's column, not the body's
    assert out.changes[-1] == "body fields dropped, named as platform columns: _IP_OP, _ip_message_id, _ip_topic"


def test_the_fast_path_drops_them_too_when_an_older_landing_has_one() -> None:
    decoder = MessageDecoder("s/orders", id_from="broker", attributes=ATTRIBUTES)
    decoder.known = pa.schema([(MESSAGE_ID, pa.string()), ("n", pa.int64()), ("_ip_op", pa.string()), *ATTRIBUTES])
    out = decoder.decode(_batch([{"n": 1, "_ip_op": "delete"}]))
    assert out.table is not None and "_ip_op" not in out.table.column_names


def test_an_id_field_of_a_platform_name_is_the_id() -> None:
    """A warehouse row published back keeps its ``_ip_message_id``; a stream may take its ids from it."""
    decoder = MessageDecoder("s/replay", id_from="field", id_field="_ip_message_id", attributes=ATTRIBUTES)
    out = decoder.decode(_batch([{"_ip_message_id": 7, "n": 1}, {"_ip_message_id": "order-2", "n": 2}]))
    assert out.table is not None and not out.poison
    assert out.table.column(MESSAGE_ID).to_pylist() == ["7", "order-2"]


def test_an_id_field_named_as_a_broker_column_is_read_then_dropped() -> None:
    decoder = MessageDecoder("s/replay", id_from="field", id_field="_ip_topic", attributes=ATTRIBUTES)
    out = decoder.decode(_batch([{"_ip_topic": "a1", "n": 1}]))
    assert out.table is not None and out.table.column_names.count("_ip_topic") == 1
    assert out.table.column(MESSAGE_ID).to_pylist() == ["a1"] and out.table.column("_ip_topic").to_pylist() == [None]
