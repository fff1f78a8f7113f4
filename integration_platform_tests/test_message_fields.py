"""A queue message's body fields named as the platform's columns: dropped (they are the platform's to
write), the id field excepted; on the fast path too. The decoder alone, on Kafka's broker columns."""

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from integration_platform.sources.queues.kafka_stream import ATTRIBUTES
from integration_platform.sources.queues.messages import MESSAGE_ID, Message, MessageBatch, MessageDecoder, key_text

pytestmark = pytest.mark.fast


def _batch(bodies: list[dict[str, object]]) -> MessageBatch:
    return _raw_batch([json.dumps(b).encode() for b in bodies])


def _raw_batch(bodies: list[bytes]) -> MessageBatch:
    messages = [Message(body, f"id-{i}", f"t/0/{i}") for i, body in enumerate(bodies)]
    return MessageBatch.of(messages, pa.table({f.name: pa.nulls(len(bodies), f.type) for f in ATTRIBUTES}))


def _known_decoder() -> MessageDecoder:
    """A decoder of a stream that landed ``{"n": int, "s": str}`` before: the fast path is open."""
    decoder = MessageDecoder("s/orders", id_from="broker", attributes=ATTRIBUTES)
    decoder.known = pa.schema([(MESSAGE_ID, pa.string()), ("n", pa.int64()), ("s", pa.string()), *ATTRIBUTES])
    return decoder


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


@pytest.mark.parametrize(
    ("bodies", "landed"),
    [
        # Arrow skipped the blank line and read the second body's two lines as two rows: the count matched,
        # and the empty body landed as the second body's first object
        ([b"", b'{"n": 666, "s": "smuggled"}\n{"n": 777, "s": "also smuggled"}'], []),
        ([b" \t", b'{"n": 666, "s": "smuggled"}\r\n{"n": 777, "s": "also smuggled"}'], []),
        ([b'{"n": 1, "s": "a"}', b"null", b'{"n": 3, "s": "c"}'], ["id-0", "id-2"]),  # was an all-null row
    ],
)
def test_a_body_that_is_not_one_object_line_is_poison_on_the_fast_path(bodies: list[bytes], landed: list[str]) -> None:
    out = _known_decoder().decode(_raw_batch(bodies))
    assert (out.table.column(MESSAGE_ID).to_pylist() if out.table is not None else []) == landed
    poison = [f"id-{i}" for i in range(len(bodies)) if f"id-{i}" not in landed]
    assert sorted(m.message_id or "" for m, _ in out.poison) == poison


def test_a_null_body_first_in_a_batch_is_poison_not_a_crash() -> None:
    """pyarrow 26's ``read_json`` with an explicit schema segfaults on an input starting with ``null``: the
    drain died at every run and the message blocked the queue. In a child process, which the crash would kill."""
    script = (
        "from integration_platform_tests.test_message_fields import _known_decoder, _raw_batch\n"
        'out = _known_decoder().decode(_raw_batch([b\'null\', b\'{"n": 2, "s": "b"}\']))\n'
        "print(out.table.num_rows, [m.message_id for m, _ in out.poison])\n"
    )
    child = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[1]
    )
    assert child.returncode == 0, child.stderr[-2000:]
    assert child.stdout.split("\n")[-2] == "1 ['id-0']"


def test_a_body_with_a_byte_order_mark_is_poison_on_a_new_stream_and_a_known_one() -> None:
    """The fast path took it (Arrow skips the mark), the general path dead-lettered it (``json.loads``
    refuses it): whether it landed depended on the stream having landed before."""
    bodies = [b'\xef\xbb\xbf{"n": 1, "s": "a"}', b'{"n": 2, "s": "b"}']
    for decoder in (MessageDecoder("s/orders", id_from="broker", attributes=ATTRIBUTES), _known_decoder()):
        out = decoder.decode(_raw_batch(bodies))
        assert out.table is not None and out.table.column(MESSAGE_ID).to_pylist() == ["id-1"]
        assert [m.message_id for m, _ in out.poison] == ["id-0"]


def test_the_fast_path_still_takes_objects_with_surrounding_whitespace() -> None:
    decoder = _known_decoder()
    out = decoder.decode(_raw_batch([b' {"n": 1, "s": "a"}\n', b'\t{"n": 2, "s": "b"} ']))
    assert out.table is not None and out.table.column("n").to_pylist() == [1, 2] and not out.poison


def test_a_body_nested_too_deep_to_parse_is_poison() -> None:
    """``json.loads`` raised RecursionError, which escaped the decoder: every run failed on the same message."""
    deep = b'{"n": 1, "a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    out = MessageDecoder("s/orders", id_from="broker", attributes=ATTRIBUTES).decode(
        _raw_batch([deep, b'{"n": 2, "s": "b"}'])
    )
    assert out.table is not None and out.table.column(MESSAGE_ID).to_pylist() == ["id-1"]
    assert [(m.message_id, "recursion" in why) for m, why in out.poison] == [("id-0", True)]


def test_key_text_is_one_to_one() -> None:
    """A Kafka key may be the message id: no two keys may share a text (as ``escaped_text`` lets the byte 0xff
    and the text ``\\xff`` do)."""
    keys = [b"\xff", b"\\xff", b"\\\xff", b"\\\\xff", b"\xfe", b"\xc3", b"\xc3\xbf", b"a\\b", b""]
    assert len({key_text(k) for k in keys}) == len(keys)
    assert [key_text(k) for k in (b"\xff", b"\\xff", "\u00ff", b"plain", None)] == [
        "\\xff",
        "\\\\xff",
        "\u00ff",
        "plain",
        None,
    ]


@pytest.mark.parametrize("known", [False, True], ids=["general path", "fast path"])
def test_an_empty_id_is_poison_on_both_paths(known: bool) -> None:
    """An empty AMQP message id or Kafka key, or an ``id_field`` of ``""``, was an id like any other: every
    message with one was the same row (the real broker's test: ``test_rabbitmq``)."""
    decoder = _known_decoder() if known else MessageDecoder("s/orders", id_from="broker", attributes=ATTRIBUTES)
    bodies = [json.dumps({"n": i, "s": "x"}).encode() for i in range(3)]
    messages = [Message(body, "" if i == 1 else f"id-{i}", f"t/0/{i}") for i, body in enumerate(bodies)]
    out = decoder.decode(MessageBatch.of(messages, pa.table({f.name: pa.nulls(3, f.type) for f in ATTRIBUTES})))
    assert out.table is not None and out.table.column(MESSAGE_ID).to_pylist() == ["id-0", "id-2"]
    assert [(m.origin, "missing or empty" in why) for m, why in out.poison] == [("t/0/1", True)]
    by_field = MessageDecoder("s/orders", id_from="field", id_field="n", attributes=ATTRIBUTES)
    out = by_field.decode(_batch([{"n": ""}, {"n": "a"}]))
    assert out.table is not None and out.table.column(MESSAGE_ID).to_pylist() == ["a"] and len(out.poison) == 1
