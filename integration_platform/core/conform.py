"""Conform one file's table to the stream's known schema, row by row where it must.

Why our own code: a stream made of many files (one per day, say) must keep one set of column
types although each file's types are inferred on their own: a column empty in early files
is Arrow's null type, a column with one stray text value is read as strings. The stream's
*known schema* (the Arrow schema of its latest landing, kept in each manifest) decides:

- a column the file lacks -> nulls of the known type;
- a column whose name differs from a known one only in case (``amount`` for ``Amount``) -> the known
  column, as DuckDB matches names (unless the file has another name of that spelling);
- a column the stream lacks -> a new nullable column (a schema change, recorded);
- a known null column gets the file's type; a widening by the one rule of
  :mod:`~integration_platform.core.schema_evolution` (int64 -> double, exact up to 2^53)
  widens it (recorded); otherwise values are cast to the known type, and the rows whose value does
  not convert, or not exactly (:func:`_changed_by_cast`), are bad rows: quarantined with the reason,
  or, with ``on_bad_rows="fail"``, a
  :class:`BadRowsError` naming file, row, column and value.

Declared column types (YAML ``columns``) always win.
"""

import base64
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc

from integration_platform.core.landing import Manifest
from integration_platform.core.records import ARROW_ERRORS, Rejected, cast
from integration_platform.core.schema_evolution import widened

#: The manifest entry holding the landing's Arrow schema (base64 of its IPC form; see ``landing.land``).
ARROW_SCHEMA = "arrow_schema"


class BadRowsError(ValueError):
    """Rows of a file do not fit the stream's types and the stream does not quarantine them."""


def known_schema(manifests: list[Manifest]) -> pa.Schema | None:
    """The Arrow schema of the newest landing that recorded one, as names and types only (nullable
    fields, no metadata: what :func:`conform` builds), or ``None``."""
    for manifest in sorted(manifests, key=lambda m: m.landed_at, reverse=True):
        text = manifest.extra.get(ARROW_SCHEMA)
        if text:
            recorded = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text)))
            return pa.schema(list(zip(recorded.names, recorded.types, strict=True)))
    return None


@dataclass
class Conformed:
    """A file's rows in the stream's schema, what was set aside and what changed."""

    table: pa.Table
    rejected: list[Rejected] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)


def _bad_rows(column: pa.Array, kind: pa.DataType) -> list[int]:
    """Indexes of the values of ``column`` that do not cast to ``kind`` (safe cast)."""
    bad = []
    for index, value in enumerate(column):
        if not value.is_valid:
            continue
        try:
            pa.array([value.as_py()], type=column.type).cast(kind)
        except (*ARROW_ERRORS, OverflowError):
            bad.append(index)
    return bad


#: A text value written as a code (a leading zero before a digit: ``08``, ``01067``), which no number holds.
_CODE_TEXT = r"^[ \t]*[+-]?0[0-9]"


def _text(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)


def _time(kind: pa.DataType) -> bool:
    """A point or time of day (a duration is a number of units)."""
    return pa.types.is_timestamp(kind) or pa.types.is_date(kind) or pa.types.is_time(kind)


def _changed_by_cast(column: pa.Array, converted: pa.Array) -> list[int]:
    """Indexes of the values of ``column`` that its cast ``converted`` does not hold:

    - text into a number: a code (``01067`` into an ``int64`` column became 1067, ``08`` into a
      ``double`` one 8.0); other text is not checked (it is parsed or written: ``1.50`` or a time
      written with ``T`` does not come back as written, though it converted exactly);
    - a time and a number (or a boolean) are different kinds: every value (a day's timestamps into an
      ``int64`` column landed as epoch seconds);
    - a timestamp into a ``time`` column: every value (the date is gone);
    - else, cast back, they differ (a day's ``2`` into a ``bool`` column was landed as ``true``, a time
      of day into a ``date`` column lost it); where Arrow cannot cast back or compare (nested types),
      the safe cast is trusted."""
    source, target = column.type, converted.type
    valid = column.is_valid()
    if _text(source) or _text(target):
        if not (
            _text(source)
            and (pa.types.is_integer(target) or pa.types.is_floating(target) or pa.types.is_decimal(target))
        ):
            return []
        changed = pc.fill_null(pc.match_substring_regex(column, _CODE_TEXT), False)
    elif _time(source) != _time(target) or (pa.types.is_timestamp(source) and pa.types.is_time(target)):
        return pc.indices_nonzero(valid).to_pylist()
    else:
        try:
            back = converted.cast(source)
            same = pc.fill_null(pc.equal(back, column), False)
            if pa.types.is_floating(source):
                same = pc.or_(same, pc.fill_null(pc.and_(pc.is_nan(back), pc.is_nan(column)), False))
        except ARROW_ERRORS:
            return []
        changed = pc.invert(same)
    changed = pc.and_(changed, valid)
    return pc.indices_nonzero(changed).to_pylist() if pc.any(changed).as_py() else []


def conform(
    table: pa.Table,
    known: pa.Schema | None,
    origin: str,
    *,
    declared: Mapping[str, pa.DataType] | None = None,
    on_bad_rows: Literal["fail", "quarantine"] = "quarantine",
) -> tuple[Conformed, pa.Schema]:
    """``table`` (one file) in the stream's schema; returns it with the updated known schema: ``known``
    itself when the file changes nothing and ``known`` is names and types only (nullable fields, no
    metadata; the conformed table then has ``known`` as its schema), else a new schema of names and types.

    ``origin`` names the file in reasons; rejected rows are ``"<origin> row <n>"`` (1-based,
    data rows). Raises :class:`BadRowsError` for bad rows when ``on_bad_rows="fail"``, and
    ``ValueError`` when two columns of ``table`` have the same name.

    Over 60 lines: one pass over the columns whose four cases (new, same, widened, cast with bad
    rows) share the running schema and the row mask; split, each piece would take all of them.
    """
    names = table.column_names
    if len(set(names)) != len(names):
        repeated = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(
            f"{origin}: column names {repeated} appear more than once; no column can be told from its twin"
        )
    target = dict(zip(known.names, known.types, strict=True)) if known is not None else {}
    order = list(target)
    # The known schema changes (a new column, a widened or declared type), or is not one of names and
    # types only (a nullable field without metadata): a new one is built.
    changed = known is None or known.metadata is not None or not all(f.nullable and not f.metadata for f in known)
    result = Conformed(table)
    for name, kind in (declared or {}).items():
        if name in target and target[name] != kind and known is not None:
            result.changes.append(f"column {name}: declared {kind}, was {target[name]}")
        changed = changed or target.get(name) != kind
        target[name] = kind
        if name not in order:
            order.append(name)
    keep: pa.Array | None = None  # the rows kept, once some are set aside
    rejected_rows: set[int] = set()
    columns: dict[str, pa.Array] = {}
    # A file's ``amount`` is the known ``Amount`` (DuckDB matches names without case: as a new column it
    # was loaded as ``amount_1``), unless the file has another name of that spelling (``Amount``, ``AMOUNT``):
    # mapped onto one column, one of them would lose its values.
    uncased = {known_name.lower(): known_name for known_name in reversed(order)}
    spellings = Counter(name.lower() for name in names)
    for name, chunked in zip(names, table.columns, strict=True):
        if name not in target and spellings[name.lower()] == 1:
            name = uncased.get(name.lower(), name)
        column = chunked.chunk(0) if chunked.num_chunks == 1 else chunked.combine_chunks()
        if name not in target:
            target[name] = column.type
            order.append(name)
            changed = True
            if known is not None:
                result.changes.append(f"new column {name} ({column.type}) first seen in {origin}")
            columns[name] = column
            continue
        kind = target[name]
        if column.type == kind or pa.types.is_null(column.type):
            columns[name] = pa.nulls(len(column), kind) if pa.types.is_null(column.type) else column
            continue
        wider = None if name in (declared or {}) else widened(kind, column.type)
        try:  # int64 into double: exact up to 2**53; beyond, the values are bad rows below
            as_wider = None if wider is None else cast(column, wider)
        except ARROW_ERRORS:
            as_wider = None
        if wider is not None and as_wider is not None:
            if wider != kind and not pa.types.is_null(kind):
                result.changes.append(f"column {name} widened from {kind} to {wider} in {origin}")
            changed = changed or wider != kind
            target[name] = wider
            columns[name] = as_wider
            continue
        try:  # every value converts exactly (the usual case): one cast, not one per value
            converted = column.cast(kind)
            bad = _changed_by_cast(column, converted)
            if not bad:
                columns[name] = converted
                continue
        except (*ARROW_ERRORS, OverflowError):
            bad = _bad_rows(column, kind)
            if len(bad) < len(column) - column.null_count:  # the values that convert: exactly?
                unconvertible = pc.is_in(pa.array(range(len(column))), value_set=pa.array(bad, pa.int64()))
                rest = pc.if_else(unconvertible, pa.nulls(len(column), column.type), column)
                bad = sorted({*bad, *_changed_by_cast(rest, rest.cast(kind))})
        for index in bad:
            reason = f"column {name!r}: {column[index].as_py()!r} is not {kind}"
            if on_bad_rows == "fail":
                raise BadRowsError(f"{origin} row {index + 1}: {reason}")
            if index not in rejected_rows:  # a row with several bad values is set aside once
                rejected_rows.add(index)
                row: dict[str, Any] = {n: table.column(n)[index].as_py() for n in table.column_names}
                result.rejected.append(Rejected(f"{origin} row {index + 1}", reason, row))
        if bad:
            mask = [True] * table.num_rows
            for index in bad:
                mask[index] = False
            keep = pa.array(mask) if keep is None else pc.and_(keep, pa.array(mask))
            column = pc.if_else(pa.array(mask), column, pa.nulls(len(column), column.type))
        # no value left when every one was bad: nulls of the type (a cast Arrow lacks, date to int, raised)
        columns[name] = column.cast(kind) if column.null_count < len(column) else pa.nulls(len(column), kind)
    # Every array in ``columns`` has its column's target type by now (kept, cast or widened above).
    schema = known if not changed and known is not None else pa.schema([(name, target[name]) for name in order])
    arrays = [columns[name] if name in columns else pa.nulls(table.num_rows, target[name]) for name in order]
    conformed = pa.Table.from_arrays(arrays, schema=schema)
    result.table = conformed if keep is None else conformed.filter(keep)
    return result, schema
