"""The outbound core: rows since the high-water mark, in cursor order, sent, the mark advanced
only over acknowledged rows. Broker publishing and HTTP sync (reverse ETL) both use it.

Why our own code: this is the platform's delivery guarantee for pushed data, which no library
holds: a row is read again (``>=`` the mark) until it is acknowledged, and every send of the same
row version carries the same id, so a consumer that de-duplicates on it keeps one copy.

- :func:`select_since` reads a relation from a DuckDB connection, :func:`select_since_sqlalchemy`
  from any SQLAlchemy engine; both yield chunks of rows as dicts, in cursor order, from the mark on.
- :func:`row_id` is the one idempotency id: SHA-256 of (scope, key values, cursor value), or of the
  whole row when there are no key columns or no cursor (then the values are what tells one version
  of a row from the next); :func:`batch_id` is the id of several rows sent at once.
- :class:`Watermark` advances the mark over acknowledged rows and stops at the first row that
  was not (the next run starts at its value); it also lists the rows acknowledged at or after the
  mark, which the next run reads again and need not send again.
- :func:`json_body` writes a row as JSON, intervals as ISO 8601 durations, NaN and infinities (which JSON has
  no spelling for) as ``null``
  (:func:`~integration_platform.core.records.json_safe`), dict keys JSON cannot hold as text (:func:`text_keys`).
"""

import datetime as dt
import hashlib
import json
from collections.abc import Callable, Collection, Iterator, Sequence
from decimal import Decimal
from typing import Any

import duckdb
import sqlalchemy as sa

from integration_platform.core.cursors import CursorValue, markable_value
from integration_platform.core.extract import MissingColumnError
from integration_platform.core.loading import quote
from integration_platform.core.records import json_safe

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


def text_keys(value: Any, default: Callable[[Any], Any] = json_default) -> Any:
    """``value`` with every dict key JSON cannot hold (a DuckDB MAP keyed by dates or decimals reads as such a
    dict) written as its ``default`` text (ids: a time zone's instant in UTC), at any depth: ``json.dumps``
    never asks ``default`` about keys and raises ``TypeError`` instead."""
    if isinstance(value, dict):
        return {
            key if key is None or isinstance(key, str | int | float) else default(key): text_keys(item, default)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [text_keys(item, default) for item in value]
    return value


def _id_default(value: Any) -> Any:
    """:func:`json_default` for ids: an aware datetime in UTC first. DuckDB gives a TIMESTAMPTZ in the
    session's time zone (the process's ``TZ``), and an id hashing the offset changed with the host."""
    if isinstance(value, dt.datetime) and value.utcoffset() is not None:
        value = value.astimezone(dt.UTC)
    return json_default(value)


def iso_duration(value: dt.timedelta) -> str:
    """``value`` as an ISO 8601 duration in days, hours, minutes and seconds, negative with a leading ``-``
    (XML Schema's ``duration``): ``P1DT2H3M4.5S``, ``-PT1H``, ``PT0S``. Python's own text of a timedelta
    (``-1 day, 23:00:00`` for minus one hour) is read by nothing else."""
    micros = abs(value) // dt.timedelta(microseconds=1)
    seconds, micro = divmod(micros, 1_000_000)
    minutes, second = divmod(seconds, 60)
    hours, minute = divmod(minutes, 60)
    days, hour = divmod(hours, 24)
    whole = f"{second}.{micro:06d}".rstrip("0").rstrip(".") if micro else str(second)
    time = "".join(f"{n}{unit}" for n, unit in ((hour, "H"), (minute, "M")) if n)
    time += f"{whole}S" if second or micro or not (days or time) else ""
    return ("-" if value < dt.timedelta(0) else "") + "P" + (f"{days}D" if days else "") + (f"T{time}" if time else "")


def _body_default(value: Any) -> Any:
    """:func:`json_default` for what is sent: a Decimal's NaN or infinity (PostgreSQL's NUMERIC holds them) as
    ``None``, as a float's: its text ("NaN", "Infinity") went out where JSON ``null`` is promised; an interval
    (a timedelta) as its ISO 8601 duration (:func:`iso_duration`). Ids keep :func:`json_default`'s text."""
    if isinstance(value, Decimal) and not value.is_finite():
        return None
    if isinstance(value, dt.timedelta):
        return iso_duration(value)
    return json_default(value)


def json_body(value: Any) -> str:
    """``value`` as JSON text, NaN and infinities (floats' and Decimals') as ``null`` (:func:`json_safe`);
    values JSON lacks by ``json_default``, dict keys it lacks as their text (:func:`text_keys`). The walks run
    only when a first dump refuses such a float or key (they added about 60% to every row's dump)."""
    try:
        return json.dumps(value, default=_body_default, allow_nan=False)
    except (ValueError, TypeError):
        return json.dumps(json_safe(text_keys(value, _body_default)), default=_body_default, allow_nan=False)


def relation_sql(table: str | None, query: str | None, catalog: str | None = None) -> str:
    """The FROM item for a ``schema.table`` (each part quoted; in ``catalog`` when given, as the warehouse
    names a stream's table, since ``temp.t`` or ``system.t`` alone is an ambiguous reference in DuckDB) or
    a query (parenthesised, without its final ``;``, the closing parenthesis on a line of its own: a final
    ``-- comment`` swallowed it). The final ``;`` are found by DuckDB's tokenizer, which skips comments and
    reads string constants, so ``SELECT 1; -- done`` loses its ``;`` and ``SELECT ';'`` keeps its text."""
    if table:
        return ".".join(quote(part) for part in ([catalog] if catalog else []) + table.split("."))
    text = str(query)
    try:
        tokens = duckdb.tokenize(text)
    except duckdb.Error:  # not tokenizable: the query as written, its error shown when it runs
        tokens = []
    raw = text.encode()  # the tokenizer's positions are byte offsets into the UTF-8 text
    end = len(raw)
    while tokens and tokens[-1][1] == duckdb.token_type.operator and raw[tokens[-1][0] : tokens[-1][0] + 1] == b";":
        end = tokens.pop()[0]
    return f"({raw[:end].decode().rstrip()}\n)"


def row_id(scope: Sequence[str], row: Row, key_columns: Sequence[str], cursor: str | None) -> str:
    """A row version's idempotency id: 64 hex digits, SHA-256 of the JSON of ``[*scope, identity]``
    where identity is the key values plus the cursor value, or the whole row without key columns or
    without a cursor (key values alone would give a changed row its old version's id, and a target
    de-duplicating on it would keep the old version). ``scope`` names the sender (a publication:
    source and name; a sync: its name). A timestamp with a time zone counts as its instant in UTC, whatever
    zone it was read in (:func:`_id_default`)."""
    identity: Any = [*(row[c] for c in key_columns), row[cursor]] if key_columns and cursor else row
    try:
        text = json.dumps([*scope, identity], sort_keys=True, default=_id_default)
    except TypeError:  # a dict key JSON cannot hold: as its text (the ids of other rows stay as they were)
        text = json.dumps([*scope, text_keys(identity, _id_default)], sort_keys=True, default=_id_default)
    return hashlib.sha256(text.encode()).hexdigest()


def batch_id(ids: Sequence[str]) -> str:
    """The idempotency id of rows sent in one request: SHA-256 of their ids, in order (64 hex digits)."""
    return hashlib.sha256("".join(ids).encode()).hexdigest()


def _select(relation: str, cursor: str | None, mark: str | None, null_cursor_rows: bool = False) -> str:
    sql = f"SELECT * FROM {relation} AS t"
    if cursor:
        if mark is not None:
            nulls = f" OR {quote(cursor)} IS NULL" if null_cursor_rows else ""
            sql += f" WHERE ({quote(cursor)} >= {mark}{nulls})"
        # NULL cursors last on every database (SQLite, MySQL and SQL Server sort them first, and a refused
        # NULL-cursor row first in the order stopped a sync under on_failure: fail before any other row)
        sql += f" ORDER BY CASE WHEN {quote(cursor)} IS NULL THEN 1 ELSE 0 END, {quote(cursor)}"
    return sql


class RepeatedColumnError(MissingColumnError):
    """A column name the relation's result has more than once (PostgreSQL keeps both ``id`` of a join): a
    row read as a dict keeps only the last of them, and the other column's value went out under its name.
    A :class:`MissingColumnError`, so callers name their sync or publication the same way."""


class CursorTypeError(MissingColumnError):
    """The cursor column holds values no mark can be made of (``time``, ``uuid``, ``boolean``, ``bytes``...).
    A :class:`MissingColumnError`, so callers name their sync or publication the same way."""


def _checked(chunks: Iterator[list[Row]], relation: str, cursor: str | None) -> Iterator[list[Row]]:
    """``chunks`` as they are, once the first non-null cursor value is known to make a mark: raises
    :class:`CursorTypeError` before its chunk is yielded (every row was sent, then the run failed with a bare
    ``TypeError`` recording no mark, so every run sent every row again)."""
    checked = cursor is None
    for rows in chunks:
        if not checked and cursor is not None:
            value = next((row[cursor] for row in rows if row[cursor] is not None), None)
            if value is not None:
                try:
                    CursorValue.from_python(value)
                except TypeError as exc:
                    raise CursorTypeError(f"cursor column {cursor!r} of {relation}: {exc}") from None
                checked = True
        yield rows


def _require(relation: str, have: Collection[str], names: Sequence[str]) -> None:
    missing = [c for c in names if c not in have]
    if missing:
        raise MissingColumnError(f"column(s) {missing} not in {relation}")
    names_seen = list(have)
    repeated = sorted({c for c in names_seen if names_seen.count(c) > 1})
    if repeated:
        raise RepeatedColumnError(
            f"column name(s) {repeated} appear more than once in {relation}: give each column its own name (AS)"
        )


def select_since(
    conn: duckdb.DuckDBPyConnection,
    relation: str,
    cursor: str | None,
    mark: CursorValue | None,
    chunk_rows: int,
    required: Sequence[str] = (),
    null_cursor_rows: bool = False,
) -> Iterator[list[Row]]:
    """Chunks of at most ``chunk_rows`` rows of ``relation`` (see :func:`relation_sql`) from a
    DuckDB connection, in ``cursor`` order and from ``mark`` on (``>=``; the mark is compared as
    the cursor column's type, whatever kind it was stored as); with ``null_cursor_rows`` the rows
    whose cursor is NULL too, on every run (where the database sorts NULLs). Raises :class:`MissingColumnError`
    when ``cursor`` or a ``required`` column is not in the relation (:class:`CursorTypeError`, before the first
    chunk, when the cursor's values make no mark), ``duckdb.Error`` on bad SQL."""
    described = conn.execute(f"DESCRIBE SELECT * FROM {relation} AS t").fetchall()
    types = {str(row[0]): str(row[1]) for row in described}
    _require(relation, types, [*required, *([cursor] if cursor else [])])
    bound = f"CAST(? AS {types[cursor]})" if cursor and mark is not None else None
    sql = _select(relation, cursor, bound, null_cursor_rows)
    result = conn.execute(sql, [mark.text] if bound and mark else [])
    columns = [d[0] for d in result.description]

    def chunks() -> Iterator[list[Row]]:
        while rows := result.fetchmany(chunk_rows):
            yield [dict(zip(columns, values, strict=True)) for values in rows]

    yield from _checked(chunks(), relation, cursor)


def select_since_sqlalchemy(
    engine: sa.Engine,
    relation: str,
    cursor: str | None,
    mark: CursorValue | None,
    chunk_rows: int,
    required: Sequence[str] = (),
    null_cursor_rows: bool = False,
) -> Iterator[list[Row]]:
    """:func:`select_since` for any database SQLAlchemy reaches (rows streamed, ``chunk_rows`` at a
    time; the mark bound as its Python value). Raises :class:`MissingColumnError` for a ``required``
    column the result lacks (:class:`RepeatedColumnError` for a name it has twice: a row as a dict kept only
    the last), ``sqlalchemy.exc.SQLAlchemyError`` (a missing cursor column among them)."""
    sql = _select(relation, cursor, ":mark" if cursor and mark is not None else None, null_cursor_rows)
    params = {"mark": mark.to_python()} if cursor and mark is not None else {}
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=chunk_rows).execute(sa.text(sql), params)
        _require(relation, result.keys(), required)
        parts = ([dict(r) for r in part] for part in result.mappings().partitions(chunk_rows))
        yield from _checked(parts, relation, cursor)


class Watermark:
    """The high-water mark of rows sent in cursor order: it follows each row whose cursor value is
    not null while every row before it was acknowledged, and stays at the value of the first row
    that was not (so the next run, reading ``>=`` the mark, sends that row again). A row with a null
    cursor that was not acknowledged stops it too (at the value before it): the mark never passes a
    row that still has to be sent.

    ``value`` is the mark to record: the starting mark when no row advanced it. ``acknowledged`` lists
    the ids of the acknowledged rows the next run reads again (cursor at or after the mark): the rows
    that share the mark's value, and, once the mark stopped, every row acknowledged after it. The
    next run leaves them out (:meth:`done`), so a row version is not sent twice even when requests
    group rows differently (a batch's id is that of its rows)."""

    def __init__(self, start: CursorValue | None, acknowledged: Collection[str] = ()) -> None:
        self._start = start
        self._last: Any = None
        self._previous = frozenset(acknowledged)
        self._tail: list[str] = []
        self.blocked = False

    def done(self, row_id: str) -> bool:
        """True when ``row_id`` was acknowledged by an earlier run (listed in its ``acknowledged``)."""
        return row_id in self._previous

    def observe(self, cursor_value: Any, acknowledged: bool, row_id: str | None = None) -> None:
        """One row's cursor value (``None``: the row does not move the mark, but stops it when not
        acknowledged), its outcome and its id (kept in :attr:`acknowledged` when the next run reads
        the row again). Rows come in cursor order. A NaN or infinite cursor (a date's or timestamp's
        ``infinity`` included) does not move the mark either
        (:func:`~integration_platform.core.cursors.markable_value`): a mark of NaN or infinity compares
        above every later value, so no new row was ever sent again; such a row, read again by every run,
        is listed in :attr:`acknowledged` like the ties at the mark."""
        if cursor_value is None:
            self.blocked = self.blocked or not acknowledged
            return
        if not markable_value(cursor_value):
            self.blocked = self.blocked or not acknowledged
            if acknowledged and row_id is not None:
                self._tail.append(row_id)
            return
        if not self.blocked:
            if cursor_value != self._last:
                self._tail = []
            self._last = cursor_value
            self.blocked = not acknowledged
        if acknowledged and row_id is not None:
            self._tail.append(row_id)

    @property
    def acknowledged(self) -> list[str]:
        """Ids of acknowledged rows at or after the mark (sorted): the next run's :meth:`done` set."""
        return sorted(set(self._tail) if self._last is not None else self._previous | set(self._tail))

    @property
    def value(self) -> CursorValue | None:
        return self._start if self._last is None else CursorValue.from_python(self._last)
