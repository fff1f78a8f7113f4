"""The outbound core: rows since the high-water mark, in cursor order, sent, the mark advanced
only over acknowledged rows. Broker publishing and HTTP sync (reverse ETL) both use it.

Why our own code: this is the platform's delivery guarantee for pushed data, which no library
holds: a row is read again (``>=`` the mark) until it is acknowledged, and every send of the same
row version carries the same id, so a consumer that de-duplicates on it keeps one copy.

- :func:`select_since` reads a relation from a DuckDB connection, :func:`select_since_sqlalchemy`
  from any SQLAlchemy engine; both yield chunks of rows as dicts, in cursor order, from the mark on.
- :func:`row_id` is the one idempotency id: SHA-256 of (scope, key values, cursor value), or of the
  whole row when no key columns are given; :func:`batch_id` is the id of several rows sent at once.
- :class:`Watermark` advances the mark over acknowledged rows and stops at the first row that
  was not (the next run starts at its value).
"""

import datetime as dt
import hashlib
import json
from collections.abc import Collection, Iterator, Sequence
from decimal import Decimal
from typing import Any

import duckdb
import sqlalchemy as sa

from integration_platform.core.cursors import CursorValue
from integration_platform.core.extract import MissingColumnError
from integration_platform.core.loading import quote

Row = dict[str, Any]


def json_default(value: Any) -> Any:
    """``json.dumps`` ``default=`` for warehouse values: date/time as ISO 8601 text, Decimal as
    text (no float rounding), bytes as hex, anything else as ``str``."""
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def relation_sql(table: str | None, query: str | None, catalog: str | None = None) -> str:
    """The FROM item for a ``schema.table`` (each part quoted; in ``catalog`` when given, as the warehouse
    names a stream's table, since ``temp.t`` or ``system.t`` alone is an ambiguous reference in DuckDB) or
    a query (parenthesised)."""
    if table:
        return ".".join(quote(part) for part in ([catalog] if catalog else []) + table.split("."))
    return f"({query})"


def row_id(scope: Sequence[str], row: Row, key_columns: Sequence[str], cursor: str | None) -> str:
    """A row version's idempotency id: 64 hex digits, SHA-256 of the JSON of ``[*scope, identity]``
    where identity is the key values plus the cursor value, or the whole row without key columns.
    ``scope`` names the sender (a publication: source and name; a sync: its name)."""
    identity: Any = [row[c] for c in key_columns] + ([row[cursor]] if cursor else []) if key_columns else row
    text = json.dumps([*scope, identity], sort_keys=True, default=json_default)
    return hashlib.sha256(text.encode()).hexdigest()


def batch_id(ids: Sequence[str]) -> str:
    """The idempotency id of rows sent in one request: SHA-256 of their ids, in order (64 hex digits)."""
    return hashlib.sha256("".join(ids).encode()).hexdigest()


def _select(relation: str, cursor: str | None, mark: str | None) -> str:
    sql = f"SELECT * FROM {relation} AS t"
    if cursor:
        if mark is not None:
            sql += f" WHERE {quote(cursor)} >= {mark}"
        sql += f" ORDER BY {quote(cursor)}"
    return sql


def _require(relation: str, have: Collection[str], names: Sequence[str]) -> None:
    missing = [c for c in names if c not in have]
    if missing:
        raise MissingColumnError(f"column(s) {missing} not in {relation}")


def select_since(
    conn: duckdb.DuckDBPyConnection,
    relation: str,
    cursor: str | None,
    mark: CursorValue | None,
    chunk_rows: int,
    required: Sequence[str] = (),
) -> Iterator[list[Row]]:
    """Chunks of at most ``chunk_rows`` rows of ``relation`` (see :func:`relation_sql`) from a
    DuckDB connection, in ``cursor`` order and from ``mark`` on (``>=``; the mark is compared as
    the cursor column's type, whatever kind it was stored as). Raises :class:`MissingColumnError`
    when ``cursor`` or a ``required`` column is not in the relation, ``duckdb.Error`` on bad SQL."""
    described = conn.execute(f"DESCRIBE SELECT * FROM {relation} AS t").fetchall()
    types = {str(row[0]): str(row[1]) for row in described}
    _require(relation, types, [*required, *([cursor] if cursor else [])])
    bound = f"CAST(? AS {types[cursor]})" if cursor and mark is not None else None
    result = conn.execute(_select(relation, cursor, bound), [mark.text] if bound and mark else [])
    columns = [d[0] for d in result.description]
    while rows := result.fetchmany(chunk_rows):
        yield [dict(zip(columns, values, strict=True)) for values in rows]


def select_since_sqlalchemy(
    engine: sa.Engine,
    relation: str,
    cursor: str | None,
    mark: CursorValue | None,
    chunk_rows: int,
    required: Sequence[str] = (),
) -> Iterator[list[Row]]:
    """:func:`select_since` for any database SQLAlchemy reaches (rows streamed, ``chunk_rows`` at a
    time; the mark bound as its Python value). Raises :class:`MissingColumnError` for a ``required``
    column the result lacks, ``sqlalchemy.exc.SQLAlchemyError`` (a missing cursor column among them)."""
    sql = _select(relation, cursor, ":mark" if cursor and mark is not None else None)
    params = {"mark": mark.to_python()} if cursor and mark is not None else {}
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=chunk_rows).execute(sa.text(sql), params)
        _require(relation, result.keys(), required)
        for part in result.mappings().partitions(chunk_rows):
            yield [dict(r) for r in part]


class Watermark:
    """The high-water mark of rows sent in cursor order: it follows each row whose cursor value is
    not null while every row before it was acknowledged, and stays at the value of the first row
    that was not (so the next run, reading ``>=`` the mark, sends that row again).

    ``value`` is the mark to record: the starting mark when no row advanced it."""

    def __init__(self, start: CursorValue | None) -> None:
        self._start = start
        self._last: Any = None
        self.blocked = False

    def observe(self, cursor_value: Any, acknowledged: bool) -> None:
        """One row's cursor value (``None``: the row does not move the mark) and its outcome."""
        if self.blocked or cursor_value is None:
            return
        self._last = cursor_value
        self.blocked = not acknowledged

    @property
    def value(self) -> CursorValue | None:
        return self._start if self._last is None else CursorValue.from_python(self._last)
