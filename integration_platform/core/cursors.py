"""High-water marks: how a cursor value is stored, compared and moved back by the look-back lag.

A cursor value travels through JSON (manifests, materialisation metadata) as a
:class:`CursorValue`: the value's kind and its text. Kinds: ``timestamp`` (ISO 8601, with
offset when the column is zoned), ``date`` (ISO date), ``int``, ``float``, ``decimal``,
``string``.
"""

import datetime as dt
import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

CursorPython = dt.datetime | dt.date | int | float | Decimal | str

#: Field metadata a source sets on a column that must not be a cursor, its value saying why (UTF-8):
#: PostgreSQL's unconstrained ``numeric`` lands as text, whose maximum is no numeric maximum.
#: :func:`cursor_type_problem` refuses such a cursor before anything lands.
NOT_A_CURSOR = b"integration_platform.not_a_cursor"

#: The Arrow types a cursor column may have (a dictionary of one of them too; a column of nulls only).
CURSOR_TYPES = "a timestamp, a date, an integer, a float, a decimal or a string"

#: Python's datetime range (years 1 to 9999) in each timestamp unit, and date32's in days.
_PY_RANGE = {
    "s": (-62_135_596_800, 253_402_300_799),
    "ms": (-62_135_596_800_000, 253_402_300_799_999),
    "us": (-62_135_596_800_000_000, 253_402_300_799_999_999),
    "ns": (-(2**63), 2**63 - 1),
    "date32[day]": (-719_162, 2_932_896),
    "date64[ms]": (-62_135_596_800_000, 253_402_300_799_999),
}


def cursor_type_problem(field: pa.Field) -> str | None:
    """Why the column ``field`` cannot be a cursor (its type is none of :data:`CURSOR_TYPES`, or its
    source set :data:`NOT_A_CURSOR`), or ``None`` when it can."""
    reason = (field.metadata or {}).get(NOT_A_CURSOR)
    if reason is not None:
        return reason.decode()
    kind = field.type.value_type if pa.types.is_dictionary(field.type) else field.type
    known = (
        pa.types.is_timestamp(kind)
        or pa.types.is_date(kind)
        or pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_decimal(kind)
        or pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_null(kind)
    )
    return None if known else f"its type is {field.type}"


def markable(values: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """``values`` (a cursor column) without the values a mark leaves out: a float's NaN and infinities,
    and a timestamp's or date's beyond Python's years 1 to 9999 (PostgreSQL's ``infinity``/``-infinity``,
    landed as DuckDB's, the largest and smallest int64/int32). A mark of NaN or infinity compares above
    every later value (PostgreSQL sorts NaN above all numbers), so the next runs read only those rows and
    every new row was lost; an infinite date failed every run with "date value out of range". Untouched
    (and not copied) when there is none."""
    if pa.types.is_dictionary(values.type):  # no min/max kernel for dictionaries
        values = values.dictionary_decode() if isinstance(values, pa.Array) else values.cast(values.type.value_type)
    if pa.types.is_floating(values.type):
        # min_max skips NaN (NaN only when all are); filter only when a bound is not finite
        bounds = pc.min_max(values).as_py()
        finite = [b for b in bounds.values() if b is not None and math.isfinite(b)]
        return values if len(finite) == 2 else values.filter(pc.is_finite(values))
    if pa.types.is_timestamp(values.type) or pa.types.is_date(values.type):
        if pa.types.is_timestamp(values.type):
            storage, (low, high) = pa.int64(), _PY_RANGE[values.type.unit]
        else:
            storage = pa.int32() if pa.types.is_date32(values.type) else pa.int64()
            low, high = _PY_RANGE[str(values.type)]
        raw = values.cast(storage)
        bounds = pc.min_max(raw).as_py()
        if bounds["min"] is not None and (bounds["min"] < low or bounds["max"] > high):
            return values.filter(pc.and_(pc.greater_equal(raw, low), pc.less_equal(raw, high)))
    return values


#: The Python values DuckDB gives for a date's or timestamp's ``infinity`` and ``-infinity``:
#: clamped to Python's last and first instants, so a mark of one compares above (below) every real value.
_CLAMPED_INFINITIES = (dt.date.max, dt.date.min, dt.datetime.max, dt.datetime.min)


def markable_value(value: object) -> bool:
    """Whether one Python cursor value, as DuckDB's Python API gives it, may become an outbound mark: not a
    float's or a decimal's NaN or infinity, nor a date or timestamp at Python's first or last instant,
    which is where DuckDB gives ``infinity`` and ``-infinity`` (a real 9999-12-31 too: as a mark it would
    hold back every later row just the same). :func:`markable` judges landed Arrow columns, where an
    infinity lies beyond those instants, and keeps them."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, Decimal):
        return value.is_finite()
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=None) not in _CLAMPED_INFINITIES
    if isinstance(value, dt.date):
        return value not in _CLAMPED_INFINITIES
    return True


@dataclass(frozen=True)
class CursorValue:
    """A typed high-water mark. ``text`` is what the UI shows and JSON stores."""

    kind: str
    text: str

    def to_python(self) -> CursorPython:
        """The value as the Python object a DB-API driver binds (datetime, date, int, ...)."""
        if self.kind == "timestamp":
            return dt.datetime.fromisoformat(self.text)
        if self.kind == "date":
            return dt.date.fromisoformat(self.text)
        if self.kind == "int":
            return int(self.text)
        if self.kind == "float":
            return float(self.text)
        if self.kind == "decimal":
            return Decimal(self.text)
        return self.text

    def minus_lag(self, lag: float) -> CursorPython:
        """The lower bound of the next extraction: this value moved back by ``lag``.

        ``lag`` is seconds for timestamps, days (rounded up) for dates and units for numbers.
        Raises ``ValueError`` for a non-zero lag on a string cursor.
        """
        value = self.to_python()
        if not lag:
            return value
        if isinstance(value, dt.datetime):
            return value - dt.timedelta(seconds=lag)
        if isinstance(value, dt.date):
            return value - dt.timedelta(days=int(-(-lag // 86400)))
        if isinstance(value, int):
            return value - int(lag)
        if isinstance(value, float):
            return value - lag
        if isinstance(value, Decimal):
            return value - Decimal(str(lag))
        raise ValueError(f"a look-back lag needs a time or numeric cursor, not {self.kind}")

    def is_below(self, other: Any) -> bool:
        """``self < other`` where ``other`` is a Python value or a CursorValue of the same kind."""
        right = other.to_python() if isinstance(other, CursorValue) else other
        left: Any = self.to_python()
        return bool(left < right)

    def as_json(self) -> dict[str, str]:
        return {"kind": self.kind, "text": self.text}

    @classmethod
    def from_json(cls, data: dict[str, str] | None) -> "CursorValue | None":
        return cls(data["kind"], data["text"]) if data else None

    @classmethod
    def from_python(cls, value: Any) -> "CursorValue":
        """Encode a Python value returned by Arrow or a driver. Raises ``TypeError`` otherwise."""
        if isinstance(value, dt.datetime):
            return cls("timestamp", value.isoformat())
        if isinstance(value, dt.date):
            return cls("date", value.isoformat())
        if isinstance(value, bool):
            raise TypeError("a boolean column cannot be a cursor")
        if isinstance(value, int):
            return cls("int", str(value))
        if isinstance(value, float):
            return cls("float", repr(value))
        if isinstance(value, Decimal):
            return cls("decimal", str(value))
        if isinstance(value, str):
            return cls("string", value)
        raise TypeError(f"unsupported cursor value type {type(value).__name__}")


class CursorRange:
    """Running minimum and maximum of the cursor column over the batches of one landing."""

    def __init__(self, column: str | None) -> None:
        self.column = column
        self.low: Any = None
        self.high: Any = None

    def observe(self, batch: pa.RecordBatch) -> None:
        """Fold one batch in. Raises ``KeyError`` when the batch lacks the cursor column.

        A floating-point cursor's NaN and infinite values, and a time's ``infinity``/``-infinity``, are
        left out of the range (:func:`markable`). The rows themselves land."""
        if self.column is None or batch.num_rows == 0:
            return
        if self.column not in batch.schema.names:
            raise KeyError(f"cursor column {self.column!r} is not in the extracted columns")
        values = markable(batch.column(self.column))
        bounds = pc.min_max(values).as_py()
        low, high = bounds["min"], bounds["max"]
        if low is not None and (self.low is None or low < self.low):
            self.low = low
        if high is not None and (self.high is None or high > self.high):
            self.high = high

    def bounds(self) -> tuple[CursorValue | None, CursorValue | None]:
        encode = CursorValue.from_python
        return (
            encode(self.low) if self.low is not None else None,
            encode(self.high) if self.high is not None else None,
        )
