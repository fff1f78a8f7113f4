"""Decoding PostgreSQL's ``pgoutput`` logical replication messages (protocol version 1, text values).

Source of the format: PostgreSQL 15 documentation, "55.9. Logical Replication Message Formats"
(``https://www.postgresql.org/docs/15/protocol-logicalrep-message-formats.html``). Every integer is
big-endian; a String is NUL-terminated UTF-8; a TupleData is an Int16 column count followed by,
per column, ``n`` (NULL), ``u`` (an unchanged TOASTed value, not sent) or ``t`` + Int32 length +
that many bytes of the value's text form. Times are microseconds since 2000-01-01 UTC; LSNs are
unsigned 64-bit WAL positions.

Written here because no well-kept library decodes pgoutput (psycopg 2 and 3 hand over the raw
bytes; ``pypgoutput`` is unmaintained and pulls in pydantic models per message), and the decoder is
small and fully specified. The bytes come from the database server, which is trusted to speak the
protocol, but a message this decoder does not know (``M`` logical messages, streamed transactions)
raises :class:`PgOutputError` rather than being skipped silently.
"""

import datetime as dt
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

POSTGRES_EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
_INT16 = struct.Struct(">h")
_INT32 = struct.Struct(">i")
_UINT32 = struct.Struct(">I")
_INT64 = struct.Struct(">q")
_UINT64 = struct.Struct(">Q")


class PgOutputError(ValueError):
    """A pgoutput message that cannot be decoded or is not supported (names the message type and LSN)."""


def lsn_text(lsn: int) -> str:
    """An LSN as PostgreSQL writes it: ``XXXXXXXX/XXXXXXXX`` (hex, upper and lower 32 bits)."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def lsn_int(text: str) -> int:
    """The integer of an LSN written as ``XXXXXXXX/XXXXXXXX``; raises ``ValueError`` for anything else."""
    high, sep, low = text.partition("/")
    if not sep or not high or not low or len(high) > 8 or len(low) > 8:
        raise ValueError(f"not an LSN: {text!r}")
    return (int(high, 16) << 32) | int(low, 16)


@dataclass(frozen=True)
class Column:
    """A column of a relation message: name, type OID, type modifier, part of the replica identity."""

    name: str
    type_oid: int
    type_modifier: int
    key: bool


@dataclass(frozen=True)
class Relation:
    """A ``R`` message: the table a change's relation OID stands for, with its columns then."""

    oid: int
    namespace: str
    name: str
    replica_identity: str
    columns: tuple[Column, ...]


#: One column value of a tuple: its text, ``None`` for NULL, or :data:`UNCHANGED`.
Value = str | None | object
UNCHANGED = object()


@dataclass
class Change:
    """One row change: ``insert``/``update``/``delete``; ``new`` (insert, update) and ``old`` (an
    update or delete's replica identity: the key columns, the others NULL, when sent with marker
    ``K``; the whole row with REPLICA IDENTITY FULL, marker ``O``, then ``old_is_row``; ``None``
    when not sent: an update that changed no key column), as values in the relation's column order."""

    op: str
    relation: Relation
    new: list[Value] | None
    old: list[Value] | None
    old_is_row: bool = False


@dataclass
class Transaction:
    """One committed transaction: its commit LSN, end LSN (where the next starts: the position to
    confirm), commit time, and its changes in order."""

    commit_lsn: int
    end_lsn: int
    committed_at: dt.datetime
    changes: list[Change] = field(default_factory=list)
    truncated: list[Relation] = field(default_factory=list)


class _Reader:
    def __init__(self, data: bytes, lsn: int) -> None:
        self.data, self.at, self.lsn = data, 1, lsn

    def take(self, size: int) -> bytes:
        if self.at + size > len(self.data):
            raise _truncated(self.data, self.lsn)
        chunk = self.data[self.at : self.at + size]
        self.at += size
        return chunk

    def int8(self) -> int:
        return self.take(1)[0]

    def int16(self) -> int:
        return int(_INT16.unpack(self.take(2))[0])

    def int32(self) -> int:
        return int(_INT32.unpack(self.take(4))[0])

    def uint32(self) -> int:
        return int(_UINT32.unpack(self.take(4))[0])

    def uint64(self) -> int:
        return int(_UINT64.unpack(self.take(8))[0])

    def time(self) -> dt.datetime:
        return POSTGRES_EPOCH + dt.timedelta(microseconds=int(_INT64.unpack(self.take(8))[0]))

    def string(self) -> str:
        end = self.data.find(b"\0", self.at)
        if end < 0:
            raise PgOutputError(f"pgoutput message at {lsn_text(self.lsn)}: string without its terminator")
        try:
            text = self.data[self.at : end].decode()
        except UnicodeDecodeError as exc:
            raise _not_utf8(self.data, self.lsn, exc) from None
        self.at = end + 1
        return text


def _truncated(data: bytes, lsn: int) -> PgOutputError:
    """The error for a message that ends before what it announces (a length past its end, or negative)."""
    return PgOutputError(f"pgoutput message {data[:1]!r} at {lsn_text(lsn)} is truncated")


def _not_utf8(data: bytes, lsn: int, exc: UnicodeDecodeError) -> PgOutputError:
    """The error for text that is not UTF-8 (the decoder reads every name and value as UTF-8)."""
    return PgOutputError(
        f"pgoutput message {data[:1]!r} at {lsn_text(lsn)}: text that is not UTF-8 ({exc.reason} at byte "
        f"{exc.start} of a value)"
    )


def _tuple_data(data: bytes, at: int, lsn: int) -> tuple[list[Value], int]:
    """The TupleData at offset ``at`` of ``data`` and the offset after it, read with offsets into the
    message (no slice per field: this loop is the decoder's hot path, one iteration per column of
    every change). Raises :class:`PgOutputError` when the message ends inside it (or a length is
    negative), or a value is not text, or not UTF-8."""
    end = len(data)
    values: list[Value] = []
    count = 0
    try:
        (count,) = _INT16.unpack_from(data, at)
        at += 2
        append = values.append
        for _ in range(count):
            kind = data[at]
            at += 1
            if kind == 116:  # t: text
                (size,) = _INT32.unpack_from(data, at)
                at += 4
                if size < 0 or at + size > end:
                    break
                append(data[at : at + size].decode())
                at += size
            elif kind == 110:  # n: NULL
                append(None)
            elif kind == 117:  # u: unchanged TOASTed value
                append(UNCHANGED)
            else:
                raise PgOutputError(f"pgoutput tuple at {lsn_text(lsn)}: value kind {chr(kind)!r} (binary mode?)")
    except (struct.error, IndexError):
        at = end + 1
    except UnicodeDecodeError as exc:
        raise _not_utf8(data, lsn, exc) from None
    if at > end or len(values) < count:
        raise _truncated(data, lsn)
    return values, at


def _relation(reader: _Reader) -> Relation:
    oid, namespace, name = reader.uint32(), reader.string(), reader.string()
    identity = chr(reader.int8())
    columns = []
    for _ in range(reader.int16()):
        flags = reader.int8()
        columns.append(Column(reader.string(), reader.uint32(), reader.int32(), bool(flags & 1)))
    return Relation(oid, namespace, name, identity, tuple(columns))


def _change(kind: bytes, data: bytes, lsn: int, relations: dict[int, Relation]) -> Change:
    """An ``I``, ``U`` or ``D`` message: relation OID (Int32), then the tuples, each after its marker
    byte (``K``/``O`` an old key or row, ``N`` the new row); read with offsets, without a
    :class:`_Reader`, as these are nearly every message of a capture."""
    if len(data) < 6:
        raise _truncated(data, lsn)
    (oid,) = _UINT32.unpack_from(data, 1)
    relation = relations.get(oid)
    if relation is None:
        raise PgOutputError(f"pgoutput {kind!r} at {lsn_text(lsn)}: relation {oid} was never described")
    old: list[Value] | None = None
    marker, at = data[5:6], 6
    old_is_row = marker == b"O"
    if kind != b"I" and marker in (b"K", b"O"):
        old, at = _tuple_data(data, at, lsn)
        if kind == b"D":
            return Change("delete", relation, None, old, old_is_row)
        if at >= len(data):
            raise _truncated(data, lsn)
        marker, at = data[at : at + 1], at + 1
    if marker != b"N":
        raise PgOutputError(f"pgoutput {kind!r} at {lsn_text(lsn)}: expected a new tuple, got {marker!r}")
    new, _ = _tuple_data(data, at, lsn)
    return Change("insert" if kind == b"I" else "update", relation, new, old, old_is_row)


def begin_final_lsn(data: bytes) -> int | None:
    """The commit LSN a ``B`` (begin) message announces for its transaction; ``None`` for another message."""
    return int(_UINT64.unpack_from(data, 1)[0]) if data[:1] == b"B" and len(data) >= 9 else None


def transactions(messages: Iterable[tuple[int, bytes]]) -> Iterator[Transaction]:
    """The committed transactions of ``messages`` (``(lsn, pgoutput message)`` in log order, as
    ``pg_logical_slot_peek_binary_changes`` returns them), each yielded at its commit message.

    Raises :class:`PgOutputError` for a message that cannot be decoded or is not supported.
    """
    relations: dict[int, Relation] = {}
    current: Transaction | None = None
    for lsn, data in messages:
        kind = data[:1]
        if kind in (b"I", b"U", b"D"):
            if current is None:
                raise PgOutputError(f"pgoutput change at {lsn_text(lsn)} outside a transaction")
            current.changes.append(_change(kind, data, lsn, relations))
            continue
        reader = _Reader(data, lsn)
        if kind == b"B":
            commit_lsn, committed_at = reader.uint64(), reader.time()
            current = Transaction(commit_lsn, 0, committed_at)
        elif kind == b"C":
            reader.int8()
            commit_lsn, end_lsn = reader.uint64(), reader.uint64()
            if current is None or current.commit_lsn != commit_lsn:
                raise PgOutputError(f"pgoutput commit at {lsn_text(lsn)} without its begin")
            current.end_lsn = end_lsn
            yield current
            current = None
        elif kind == b"R":
            relation = _relation(reader)
            relations[relation.oid] = relation
        elif kind == b"T":
            if current is None:
                raise PgOutputError(f"pgoutput truncate at {lsn_text(lsn)} outside a transaction")
            count = reader.uint32()
            reader.int8()
            current.truncated.extend(relations[reader.uint32()] for _ in range(count))
        elif kind in (b"Y", b"O"):  # a type's name, a replication origin: nothing to land
            continue
        else:
            raise PgOutputError(f"pgoutput message {kind!r} at {lsn_text(lsn)} is not supported")
