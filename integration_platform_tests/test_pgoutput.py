"""The pgoutput decoder on messages built byte by byte as PostgreSQL 15 documents them ("55.9. Logical
Replication Message Formats"): each kind of change and value, and every way a message can be cut
short or hold what the decoder does not know, which must raise ``PgOutputError`` naming it."""

import datetime as dt
import struct

import pytest

from integration_platform.sources.sql.pgoutput import (
    POSTGRES_EPOCH,
    UNCHANGED,
    PgOutputError,
    Transaction,
    transactions,
)

pytestmark = pytest.mark.fast
OID = 16384
LSN = 0x1_0000_0100


def text(value: str) -> bytes:
    return value.encode() + b"\0"


def relation(columns: int = 3) -> bytes:
    described = b"".join(
        bytes([1 if i == 0 else 0]) + text(f"c{i}") + struct.pack(">Ii", 25, -1) for i in range(columns)
    )
    return (
        b"R" + struct.pack(">I", OID) + text("public") + text("films") + b"d" + struct.pack(">h", columns) + described
    )


def tuple_data(*values: object) -> bytes:
    out = struct.pack(">h", len(values))
    for value in values:
        if value is None:
            out += b"n"
        elif value is UNCHANGED:
            out += b"u"
        else:
            encoded = str(value).encode()
            out += b"t" + struct.pack(">i", len(encoded)) + encoded
    return out


def change(kind: bytes, *tuples: tuple[bytes, bytes]) -> bytes:
    return kind + struct.pack(">I", OID) + b"".join(marker + data for marker, data in tuples)


def begin(commit_lsn: int = LSN) -> bytes:
    return b"B" + struct.pack(">Qqi", commit_lsn, 86_400_000_000, 7)


def commit(commit_lsn: int = LSN) -> bytes:
    return b"C\0" + struct.pack(">QQq", commit_lsn, commit_lsn + 40, 86_400_000_000)


def decode(*messages: bytes) -> list[Transaction]:
    return list(transactions((LSN, m) for m in messages))


def test_each_kind_of_change_and_value_is_decoded() -> None:
    (decoded,) = decode(
        relation(),
        begin(),
        change(b"I", (b"N", tuple_data("1", 'Zoë\'s "cut"', None))),
        change(b"U", (b"N", tuple_data("1", "new", UNCHANGED))),
        change(b"U", (b"K", tuple_data("1", None, None)), (b"N", tuple_data("2", "moved", "x"))),
        change(b"U", (b"O", tuple_data("2", "moved", "x")), (b"N", tuple_data("2", "again", "x"))),
        change(b"D", (b"K", tuple_data("2", None, None))),
        commit(),
    )
    assert (decoded.commit_lsn, decoded.end_lsn) == (LSN, LSN + 40)
    assert decoded.committed_at == POSTGRES_EPOCH + dt.timedelta(days=1)
    got = [(c.op, c.new, c.old, c.old_is_row) for c in decoded.changes]
    assert got == [
        ("insert", ["1", 'Zoë\'s "cut"', None], None, False),
        ("update", ["1", "new", UNCHANGED], None, False),
        ("update", ["2", "moved", "x"], ["1", None, None], False),
        ("update", ["2", "again", "x"], ["2", "moved", "x"], True),
        ("delete", None, ["2", None, None], False),
    ]
    assert {c.relation.name for c in decoded.changes} == {"films"}


@pytest.mark.parametrize(
    "message",
    [
        change(b"I", (b"N", tuple_data("1", "Zoë €", None))),
        change(b"U", (b"K", tuple_data("1", None, None)), (b"N", tuple_data("2", "b", "c"))),
        change(b"D", (b"O", tuple_data("1", "a", "b"))),
    ],
    ids=["insert", "update with old key", "delete with old row"],
)
def test_a_change_cut_short_anywhere_fails_as_truncated(message: bytes) -> None:
    """Every proper prefix, including one that ends inside a character of several bytes."""
    for length in range(1, len(message)):
        with pytest.raises(PgOutputError, match="is truncated"):
            decode(relation(), begin(), message[:length], commit())
    assert len(decode(relation(), begin(), message, commit())[0].changes) == 1


def test_what_the_decoder_does_not_know_fails_naming_it() -> None:
    binary = change(b"I", (b"N", tuple_data("1")[:2] + b"b" + struct.pack(">i", 1) + b"\x01"))
    negative = change(b"I", (b"N", struct.pack(">h", 3) + b"t" + struct.pack(">i", -5) + b"nn"))
    latin1 = change(b"I", (b"N", struct.pack(">h", 1) + b"t" + struct.pack(">i", 4) + "Zoë".encode("latin-1") + b"!"))
    latin1_name = relation().replace(text("films"), "Zoë".encode("latin-1") + b"\0")
    failures = [
        ("binary mode", [relation(), begin(), binary, commit()]),
        ("is truncated", [relation(), begin(), negative, commit()]),
        ("not UTF-8", [relation(), begin(), latin1, commit()]),
        ("not UTF-8", [latin1_name, begin(), commit()]),
        (f"relation {OID} was never described", [begin(), change(b"I", (b"N", tuple_data("1"))), commit()]),
        ("outside a transaction", [relation(), change(b"I", (b"N", tuple_data("1")))]),
        ("expected a new tuple", [relation(), begin(), change(b"U", (b"X", tuple_data("1"))), commit()]),
        ("is not supported", [begin(), b"M\0" + struct.pack(">Q", LSN) + text("prefix"), commit()]),
        ("without its begin", [commit()]),
    ]
    for reason, messages in failures:
        with pytest.raises(PgOutputError, match=reason):
            decode(*messages)
