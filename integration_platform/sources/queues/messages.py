"""Queue and topic messages -> Arrow rows, for every broker (RabbitMQ, Kafka).

A message's body is one JSON object; it becomes one row: its fields (converted by
:class:`~integration_platform.core.records.JsonRecords` under the stream's known schema,
so types stay stable from batch to batch), the message id in ``_ip_message_id`` (the
stream's primary key: the warehouse merges on it, which turns at-least-once delivery into
exactly-once rows) and the broker's own columns (routing key, partition, offset, ...).

A message is *poison* when it cannot become a row: its body is not UTF-8 JSON (or is nested deeper
than Python's parser goes, about 1,000 levels less the caller's stack), it is not an object, it has
no message id, or a value does not fit the stream's types. Poison messages are returned with the
reason, for the broker to dead-letter; they never stop a batch.

With ``nested: struct`` an empty object (``{}``, at any depth) is null: Arrow would make it a struct
without fields, which Parquet cannot write, and the batch never landed
(:func:`~integration_platform.core.records.empty_objects_null`). A batch with one goes the general
way: Arrow's reader would make it an object of nulls where the known schema has a struct.

A body's fields named as the platform's columns (in any case) are dropped, and the batch's schema
changes say so: they are the platform's to write (``_ip_message_id`` would have replaced the
message's id, ``_ip_op = 'delete'`` made it a tombstone). A warehouse row published back to a topic
carries its old ones (``publish`` sends whole rows); consumed again, it gets this consumption's.

Two paths, one result. Once the stream has a known schema, a batch is first parsed in one
go by Arrow's JSON reader (``pyarrow.json.read_json`` over the bodies joined by newlines,
``explicit_schema`` = the known schema, unexpected fields an error): about 5x faster than
one ``json.loads`` per message. Only a batch whose every body, stripped of JSON whitespace, starts
with ``{``, ends with ``}`` and holds no line break goes there (:func:`_one_line_object`): the reader
skips blank lines and reads two objects on two lines as two rows, so an empty body next to one of two
objects kept the row count and credited one message with another's data; and a body ``null`` first
in the input crashes the process (pyarrow 26). Any surprise (such a body, a new field, a value of
another type, a missing or repeated id) sends the batch down the general path, message by message,
which finds and reports the culprits. The reader takes dates and timestamps as text, cast as the
general path casts them (:func:`_temporal`), so that a message's fate does not depend on its batch.
A body starting with a UTF-8 byte order mark is not JSON (RFC 8259 forbids sending one) and is
poison on both paths.
"""

import hashlib
import io
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from integration_platform.core.records import ARROW_ERRORS, JsonRecords, SchemaConflictError, cast, empty_objects_null
from integration_platform.core.streams import LOADER_COLUMNS

#: The primary key of every message stream.
MESSAGE_ID = "_ip_message_id"
_INDEX = "__ip_message_index"

IdFrom = Literal["broker", "key", "field", "body_sha256"]


def escaped_text(value: str | bytes | None) -> str | None:
    """A broker's text field (a header value, an AMQP short string) as text: bytes as UTF-8, those that
    are not UTF-8 as ``\\xNN`` escapes (``b"o\\xff"`` is ``o\\xff``, the same as that literal text)."""
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else value


def _one_line_object(body: bytes) -> bool:
    """Is ``body``, without leading and trailing JSON whitespace, one line that starts with ``{`` and
    ends with ``}``? Only then can Arrow's line-delimited reader take it as exactly one row (module doc);
    a line that holds more than one value then reads as more rows, which the row count catches."""
    text = body.strip(b" \t\r\n")
    return text.startswith(b"{") and text.endswith(b"}") and b"\n" not in text and b"\r" not in text


def _temporal(kind: pa.DataType) -> bool:
    """Is ``kind`` a date or timestamp? Arrow's JSON reader parses those from text by rules of its own:
    it takes ``2024-01-01 10:00:00`` (no offset) into a zoned timestamp, shifts ``...+02:00`` into a
    zone-less one, and reads no date at all, where the general path's cast refuses the first two. So a
    message landed or was dead-lettered depending on the messages that shared its batch."""
    return pa.types.is_timestamp(kind) or pa.types.is_date(kind)


#: An empty JSON object, as a body may hold one (``{}``, ``{ }``): a cheap test before
#: :func:`~integration_platform.core.records.empty_objects_null`.
_EMPTY_OBJECT = re.compile(rb"\{[ \t\r\n]*\}")


#: What ``surrogateescape`` makes of the bytes that are not UTF-8 (0x80-0xFF as U+DC80-U+DCFF).
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")


def key_text(value: bytes | str | None) -> str | None:
    """A Kafka message key or an AMQP message id as text that no other one shares (it may be the message
    id): UTF-8 as it is,
    except that a backslash is doubled, and bytes that are not UTF-8 as ``\\xNN`` escapes (``b"o\\xff"``
    is ``o\\xff``, the text ``o\\xff`` is ``o\\\\xff``). :func:`escaped_text` alone would give both
    the same text, and before that undecodable bytes were all U+FFFD: distinct keys, one id, and all but
    one message dropped as duplicates."""
    if not isinstance(value, bytes):
        return None if value is None else value.replace("\\", "\\\\")
    text = value.decode("utf-8", "surrogateescape").replace("\\", "\\\\")
    return _ESCAPED_BYTE.sub(lambda m: f"\\x{ord(m[0]) - 0xDC00:02x}", text)


@dataclass(frozen=True, slots=True)
class Message:
    """One consumed message, broker-neutral, whole: what dead letters and error messages need.

    ``message_id``: the broker-level id (AMQP ``message_id`` property; for Kafka
    ``topic/partition/offset``), ``None`` when it has none; ``key``: the Kafka message key as
    text (:func:`key_text`; ``None`` elsewhere). ``origin``: where it came from, for
    errors and dead letters (``queue orders delivery 17``).
    ``ref``: the broker's own handle (RabbitMQ: its
    :class:`~integration_platform.resources.rabbitmq.Delivery`; Kafka: a
    :class:`~integration_platform.sources.queues.kafka_stream.KafkaRef`, the message's partition
    and offset with the key bytes and headers a dead letter sends as they came).
    """

    body: bytes
    message_id: str | None
    origin: str
    key: str | None = None
    redelivered: bool = False
    ref: Any = None


@dataclass(frozen=True)
class MessageBatch:
    """One batch of messages from a broker, column by column.

    What decoding reads of every message is in lists and arrays built once per batch: ``bodies``
    (in order of arrival), ``ids`` (broker ids, a string array, null where a message has none),
    ``keys`` (Kafka keys as text, a string array, null elsewhere) and ``attributes`` (the broker's
    columns, one row per message, in the decoder's ``attributes`` schema). ``message(i)`` builds the
    i-th message whole, for the few that need it (poison). Why columns: for Kafka, one Python
    object per message with a dict of its columns took a third of the drain's CPU (py-spy, 300,000
    messages); reading each field once per batch into a list costs a fraction of that.
    """

    bodies: list[bytes]
    ids: pa.Array
    keys: pa.Array
    attributes: pa.Table
    message: Callable[[int], Message]

    def __len__(self) -> int:
        return len(self.bodies)

    @classmethod
    def of(cls, messages: Sequence[Message], attributes: pa.Table) -> "MessageBatch":
        """A batch of messages built one by one (RabbitMQ), with their ``attributes`` rows."""
        return cls(
            [m.body for m in messages],
            pa.array([m.message_id for m in messages], pa.string()),
            pa.array([m.key for m in messages], pa.string()),
            attributes,
            messages.__getitem__,
        )


@dataclass
class DecodedBatch:
    """The rows of a batch and what could not become rows.

    ``table``: one row per accepted message (``None`` when there is none); ``poison``: the
    messages set aside with their reasons; ``duplicates``: messages dropped because an
    earlier message of the batch had the same id; ``changes``: schema changes seen.
    """

    table: pa.Table | None
    poison: list[tuple[Message, str]] = field(default_factory=list)
    duplicates: int = 0
    changes: list[str] = field(default_factory=list)


class MessageDecoder:
    """Decodes batches of one stream's messages (see the module doc).

    ``id_from``: ``broker`` takes the broker's id (a message without one is poison), ``key``
    the Kafka message key, ``field`` the body's ``id_field``, ``body_sha256`` the SHA-256 of the body (identical
    bodies are then one row). An empty id (an AMQP ``message_id`` or Kafka key of no characters, an
    ``id_field`` of ``""``) is no id: poison. It was an id, the same for every such message, so all but
    the first of each batch were dropped as duplicates, the rest merged into one warehouse row, and none
    was dead-lettered. ``columns``: declared Arrow types; ``attributes``: the broker
    columns appended to every row. ``known``: the stream's landed schema, if any.
    """

    def __init__(
        self,
        stream: str,
        *,
        id_from: IdFrom,
        id_field: str | None = None,
        columns: Mapping[str, pa.DataType] | None = None,
        nested: Literal["struct", "json"] = "struct",
        attributes: pa.Schema,
    ) -> None:
        if id_from == "field" and not id_field:
            raise ValueError(f"stream {stream}: message ids from a field need 'id_field'")
        self.stream, self.id_from, self.id_field = stream, id_from, id_field
        self.columns = dict(columns or {})
        self.nested: Literal["struct", "json"] = nested
        self.attributes = attributes
        self.known: pa.Schema | None = None
        #: Body fields that would stand in for the platform's columns (the message id, the broker's, the
        #: loader's), lower-case (DuckDB matches names without case): dropped (module doc).
        #: The id field may be one of them (a warehouse row published back keeps its ``_ip_message_id``):
        #: the id is read from it before it is dropped.
        self.reserved = frozenset(n.lower() for n in (_INDEX, MESSAGE_ID, *attributes.names, *LOADER_COLUMNS))

    def _message_ids(self, batch: MessageBatch) -> list[str | None] | None:
        """Each message's id, by ``id_from``; ``None`` for ``field`` (the id is in the body)."""
        if self.id_from == "broker":
            return batch.ids.to_pylist()
        if self.id_from == "key":
            return batch.keys.to_pylist()
        if self.id_from == "body_sha256":
            return [hashlib.sha256(body).hexdigest() for body in batch.bodies]
        return None

    def _payload_schema(self) -> pa.Schema | None:
        if self.known is None:
            return None
        # the message id and the broker's columns; and platform-named fields that landings before they
        # were dropped may still hold
        return pa.schema([f for f in self.known if f.name.lower() not in self.reserved])

    def decode(self, batch: MessageBatch) -> DecodedBatch:
        """Rows of ``batch`` in order of arrival (module doc). Updates ``known`` to the
        batch's schema. Never raises for a bad message; raises ``ValueError`` only for a
        batch that as a whole does not convert."""
        fast = self._decode_known(batch)
        return fast if fast is not None else self._decode_each(batch)

    def _with_attributes(
        self, table: pa.Table, batch: MessageBatch, indexes: pa.Array | pa.ChunkedArray | None = None
    ) -> pa.Table:
        """``table`` with the broker's columns of the messages at ``indexes`` (all when ``None``)."""
        attributes = batch.attributes if indexes is None else batch.attributes.take(indexes)
        for attribute in self.attributes:
            table = table.append_column(attribute, attributes.column(attribute.name))
        return table

    def _decode_known(self, batch: MessageBatch) -> DecodedBatch | None:
        """The batch through Arrow's JSON reader under the known schema, or ``None`` when
        anything about it needs the general path (module doc)."""
        payload = self._payload_schema()
        if not len(batch) or not payload or self.nested == "json" or self.id_from == "field":
            return None
        if self.id_from == "body_sha256":
            id_array = pa.array(self._message_ids(batch), pa.string())
        else:
            id_array = batch.ids if self.id_from == "broker" else batch.keys
            if id_array.null_count or pc.any(pc.equal(id_array, "")).as_py():
                return None  # a message without an id, or with an empty one: the general path makes it poison
        if pc.count_distinct(id_array).as_py() != len(batch):
            return None
        if not all(_one_line_object(body) for body in batch.bodies):
            return None
        if self.nested == "struct" and any(_EMPTY_OBJECT.search(body) for body in batch.bodies):
            return None  # the general path makes it null, as in a stream's first batch
        # dates and timestamps are read as text and cast as the general path casts them (_temporal)
        read = pa.schema([f.with_type(pa.string()) if _temporal(f.type) else f for f in payload])
        options = pa_json.ParseOptions(explicit_schema=read, unexpected_field_behavior="error")
        try:
            table = pa_json.read_json(io.BytesIO(b"\n".join(batch.bodies)), parse_options=options)
            for i, kind in enumerate(payload.types):
                if _temporal(kind) and table.schema.field(i).type == pa.string():
                    table = table.set_column(i, payload.field(i), cast(table.column(i), kind))
        except ARROW_ERRORS:
            return None
        if table.num_rows != len(batch) or table.schema != payload:
            return None
        table = self._with_attributes(table.add_column(0, pa.field(MESSAGE_ID, pa.string()), id_array), batch)
        self.known = table.schema
        return DecodedBatch(table)

    def _decode_each(self, batch: MessageBatch) -> DecodedBatch:
        poison: list[tuple[Message, str]] = []
        records: list[dict[str, Any]] = []
        dropped: set[str] = set()
        ids = self._message_ids(batch)
        for index, body in enumerate(batch.bodies):
            try:
                record = json.loads(body.decode("utf-8"))
                if self.nested == "struct" and isinstance(record, dict) and _EMPTY_OBJECT.search(body):
                    record = {name: empty_objects_null(value) for name, value in record.items()}
            # ValueError: not UTF-8, not JSON, or an integer of more digits than Python converts;
            # RecursionError: nested deeper than the parser's stack allows (it blocked the queue)
            except (ValueError, RecursionError) as exc:
                poison.append((batch.message(index), f"body is not UTF-8 JSON: {exc}"))
                continue
            if not isinstance(record, dict):
                poison.append((batch.message(index), f"body is a JSON {type(record).__name__}, not an object"))
                continue
            if ids is not None:
                message_id = ids[index]
            else:
                value = record.get(self.id_field or "")
                message_id = None if value is None else str(value)
            if message_id == "":  # not an id: every message sending one would be one row (class doc)
                message_id = None
            if any(name.lower() in self.reserved for name in record):
                dropped.update(name for name in record if name.lower() in self.reserved and name != self.id_field)
                record = {name: value for name, value in record.items() if name.lower() not in self.reserved}
            if message_id is None:
                source = {
                    "broker": "the broker's message id",
                    "key": "message key",
                    "field": f"field {self.id_field!r}",
                }[self.id_from]
                poison.append((batch.message(index), f"message has no id ({source} missing or empty)"))
                continue
            records.append({_INDEX: index, MESSAGE_ID: message_id, **record})
        converter = JsonRecords(
            self.stream,
            nested=self.nested,
            columns={_INDEX: pa.int64(), MESSAGE_ID: pa.string(), **self.columns},
            on_conflict="quarantine",
            primary_key=(MESSAGE_ID,),
            known=self._payload_schema(),
        )
        try:
            table = converter.convert(records, f"stream {self.stream}") if records else None
        except SchemaConflictError as exc:
            raise ValueError(f"{exc}; batch of {len(batch)} messages from {batch.message(0).origin}") from exc
        if dropped:
            converter.changes.append(f"body fields dropped, named as platform columns: {', '.join(sorted(dropped))}")
        for rejected in converter.rejected:
            record = rejected.record if isinstance(rejected.record, dict) else {}
            poison.append((batch.message(int(record[_INDEX])), rejected.reason))
        if table is None or table.num_rows == 0:
            return DecodedBatch(None, poison, converter.duplicates, converter.changes)
        table = self._with_attributes(table.drop_columns([_INDEX]), batch, table.column(_INDEX))
        self.known = table.schema
        return DecodedBatch(table, poison, converter.duplicates, converter.changes)
