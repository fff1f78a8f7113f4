"""SQLAlchemy column types as Arrow types, and the generic reader's rows as Arrow record batches.

Apart from :mod:`integration_platform.sources.sql.database` so that loading the definitions of a SQL
source does not import SQLAlchemy (0.09 s of the 1.0 s a code location takes to load): the resource
imports this module when it first reflects or reads a table.
"""

import json
import re
import threading
from collections.abc import Callable, Sequence
from typing import Any

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Engine

from integration_platform.resources.sql_sessions import is_mysql, utc_sessions

_ENGINES: dict[str, Engine] = {}
_ENGINES_LOCK = threading.Lock()


def engine_for(url: str) -> Engine:
    """A pooled engine per URL, shared by every resource instance in the process; a MySQL/MariaDB
    engine reflects spatial columns as :class:`Geometry` and its sessions read ``TIMESTAMP`` in UTC
    (:func:`~integration_platform.resources.sql_sessions.utc_sessions`)."""
    with _ENGINES_LOCK:
        if url not in _ENGINES:
            engine = sa.create_engine(url, pool_pre_ping=True)
            dialect: Any = engine.dialect  # MySQLDialect: its reflection's type-name table
            if is_mysql(dialect.name):  # this engine only, not the dialect class
                dialect.ischema_names = {**dialect.ischema_names, **dict.fromkeys(SPATIAL_TYPES, Geometry)}
            _ENGINES[url] = utc_sessions(engine)
        return _ENGINES[url]


def dispose_engine(url: str) -> None:
    """Close the pooled connections of ``url``'s engine and forget it (the next use opens a new one)."""
    with _ENGINES_LOCK:
        engine = _ENGINES.pop(url, None)
    if engine is not None:
        engine.dispose()


def reflect(engine: Engine, table: str, schema: str | None) -> sa.Table:
    """The table as the database describes it (columns, primary key, comments); raises
    ``NoSuchTableError`` when it is missing. On MySQL/MariaDB column names and SET/ENUM members are
    read back as declared (:func:`_as_declared`)."""
    listeners = [("column_reflect", _as_declared)] if is_mysql(engine.dialect.name) else []
    return sa.Table(table, sa.MetaData(), schema=schema, autoload_with=engine, listeners=listeners)


def _as_declared(inspector: Any, _: Any, column: dict[str, Any]) -> None:
    """A reflected MySQL/MariaDB column with its name and its SET/ENUM members as declared. SQLAlchemy
    parses ``SHOW CREATE TABLE``, which escapes them, and undoes only part of it:

    - a column name's backtick stays doubled (``up``d`` for up`d): every read of the table failed with
      "Unknown column" (its primary-key parser undoubles them);
    - a member's backslash escapes stay (``a\\\\b`` for ``a\\b``, ``\\n`` for a newline): a SET member
      with one was silently left out of the landed value, and an ENUM value with one failed the read with
      a ``LookupError`` naming neither table nor column.
    """
    quote = inspector.dialect.identifier_preparer.final_quote  # '"' on a server in ANSI_QUOTES mode
    column["name"] = column["name"].replace(quote * 2, quote)
    kind = column["type"]
    text = {"charset": kind.charset, "collation": kind.collation} if isinstance(kind, mysql.SET | mysql.ENUM) else {}
    if isinstance(kind, mysql.SET):
        members = [_unescaped(m) for m in kind.values]
        column["type"] = mysql.SET(*members, retrieve_as_bitwise=kind.retrieve_as_bitwise, **text)
    elif isinstance(kind, mysql.ENUM):
        column["type"] = mysql.ENUM(*[_unescaped(m) for m in kind.enums], **text)


#: MySQL's backslash escapes in a string literal (``SHOW CREATE TABLE`` writes \0, \n, \r, \Z and \\).
_ESCAPES = {"0": "\0", "n": "\n", "r": "\r", "t": "\t", "b": "\b", "Z": "\x1a"}
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)


def _unescaped(text: str) -> str:
    """``text`` (a member as SQLAlchemy reflected it) with MySQL's backslash escapes undone."""
    return _ESCAPE.sub(lambda m: _ESCAPES.get(m.group(1), m.group(1)), text)


class Geometry(sa.types.UserDefinedType[bytes]):
    """A MySQL/MariaDB spatial column (SQLAlchemy reflects them as an unknown type, whose bytes
    were decoded as UTF-8 and lost): read as standard WKB through ``ST_AsBinary``."""

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "GEOMETRY"


#: MySQL/MariaDB spatial type names (``information_schema``'s ``DATA_TYPE``).
SPATIAL_TYPES = (
    "geometry", "point", "linestring", "polygon", "multipoint", "multilinestring", "multipolygon",
    "geometrycollection", "geomcollection",
)  # fmt: skip


def _set_text(kind: mysql.SET) -> Callable[[Any], str | None]:
    """A SET value as MySQL's own text form: its members comma-separated in the order the column
    declares them (a Python set's order changes from process to process)."""
    members = list(kind.values)
    return lambda value: None if value is None else ",".join(m for m in members if m in value)


def arrow_type(sa_type: sa.types.TypeEngine[Any]) -> tuple[pa.DataType, Callable[[Any], Any] | None]:
    """Arrow type for a SQLAlchemy column type, and a per-value converter where needed.

    Unsigned integers (MySQL/MariaDB) take a type that holds their whole range (``SMALLINT
    UNSIGNED`` -> int32, ``BIGINT UNSIGNED`` -> uint64); ``SET`` is text in declaration order;
    MySQL's ``TIME`` (a duration up to 838 hours, negative too; as a time of day ``25:00:00``
    became 01:00 through SQLAlchemy's own conversion) is read as MySQL's text (``-838:59:59``);
    spatial types are WKB bytes. Unknown types become text (``str(value)``) rather than failing,
    so a new vendor type never stops a load; the column is still typed and stable across batches.
    """
    unsigned = bool(getattr(sa_type, "unsigned", False))
    if isinstance(sa_type, sa.Boolean):
        return pa.bool_(), None
    if isinstance(sa_type, Geometry):
        return pa.binary(), bytes_or_none
    if isinstance(sa_type, mysql.SET):
        return pa.string(), _set_text(sa_type)
    if isinstance(sa_type, mysql.TIME):  # a duration from -838:59:59 to 838:59:59, not a time of day
        return pa.string(), text_or_none  # selected as CAST(... AS CHAR): the driver's time wraps at 24h
    if isinstance(sa_type, sa.SmallInteger):
        return (pa.int32() if unsigned else pa.int16()), None
    if isinstance(sa_type, sa.Integer):
        return (pa.uint64() if unsigned and isinstance(sa_type, sa.BigInteger) else pa.int64()), None
    if isinstance(sa_type, sa.Float):  # before Numeric: Float is a Numeric subclass
        return pa.float64(), float_or_none
    if isinstance(sa_type, sa.Numeric):
        precision, scale = sa_type.precision, sa_type.scale or 0
        if precision and precision <= 38:
            return pa.decimal128(precision, scale), None
        if precision and precision <= 76:
            return pa.decimal256(precision, scale), None
        return pa.string(), text_or_none
    if isinstance(sa_type, sa.DateTime):
        return (pa.timestamp("us", tz="UTC") if sa_type.timezone else pa.timestamp("us")), None
    if isinstance(sa_type, sa.Date):
        return pa.date32(), None
    if isinstance(sa_type, sa.Time):
        return pa.time64("us"), None
    if isinstance(sa_type, sa.Interval):
        return pa.duration("us"), None
    if isinstance(sa_type, sa.LargeBinary | sa.types._Binary):
        return pa.binary(), bytes_or_none
    if isinstance(sa_type, sa.JSON):
        return pa.string(), json_or_none
    if isinstance(sa_type, sa.String):
        return pa.string(), text_or_none
    return pa.string(), text_or_none


def float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


def text_or_none(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)  # UUID, Decimal, enums, vendor types


def bytes_or_none(value: Any) -> bytes | None:
    return None if value is None else bytes(value)


def json_or_none(value: Any) -> str | None:
    return None if value is None else json.dumps(value, default=str)


_CONVERSION_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError, ValueError)


#: A column as the generic reader lands it: name, Arrow type, converter of each value (or None).
TypedColumn = tuple[str, pa.DataType, Callable[[Any], Any] | None]


def arrow_batch(table: str, typed: Sequence[TypedColumn], columns: Sequence[Sequence[Any]]) -> pa.RecordBatch:
    """One record batch of ``columns`` (values per column, in ``typed``'s order) with ``typed``'s types;
    raises ``ValueError`` naming the table, column and value that does not fit."""
    arrays = [
        _column(table, name, kind, convert, values)
        for (name, kind, convert), values in zip(typed, columns, strict=True)
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema([(name, kind) for name, kind, _ in typed]))


def _column(
    table: str, name: str, kind: pa.DataType, convert: Callable[[Any], Any] | None, values: Sequence[Any]
) -> pa.Array:
    """One column of a batch as ``kind``; raises ``ValueError`` naming the table, the column and the
    first value that does not fit (pyarrow's own message names neither)."""
    try:
        return pa.array([convert(v) for v in values] if convert else values, type=kind)
    except _CONVERSION_ERRORS as exc:
        for value in values:
            try:
                pa.array([convert(value) if convert else value], type=kind)
            except _CONVERSION_ERRORS:
                zero_date = isinstance(value, str) and value.startswith("0000-00-00")
                hint = (
                    "; MySQL's zero dates have no date value: make them NULL at the source, or read the table "
                    "through a view with NULLIF(column, '0000-00-00')"
                    if zero_date
                    else ""
                )
                raise ValueError(
                    f"table {table}: column {name!r}: value {value!r} does not fit {kind}: {exc}{hint}"
                ) from None
        raise ValueError(f"table {table}: column {name!r} does not convert to {kind}: {exc}") from None
