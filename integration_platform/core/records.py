"""JSON records -> Arrow with one stable schema per landing, for every source that speaks JSON
(REST pages, JSON/NDJSON files, queue messages).

Why our own code: the landing needs one schema for all of a stream's pages, known only at
the end, while pages arrive one at a time and must not all be held in memory. Arrow does
the conversions (``pa.array`` inference, casts); this module only keeps the running schema and
decides, by the one widening rule of :mod:`~integration_platform.core.schema_evolution`, what is
a change and what is a conflict:

- a field seen for the first time becomes a nullable column (recorded in ``changes``);
- a column widens by that rule (null -> any type, int64 -> double, a struct
  gaining fields), also recorded; int64 -> double is exact only for integers up to 2^53 in
  magnitude (larger ones are rounded to the nearest double), so declare such columns instead;
- anything else (a string where numbers were, a value that does not cast to a declared
  column type, a string or a field name with a lone surrogate, which UTF-8 cannot hold, a value
  nested deeper than a Parquet reader opens: :data:`PARQUET_MAX_DEPTH`) is a conflict:
  :class:`SchemaConflictError`, or, with ``on_conflict="quarantine"``, the offending
  records go to ``rejected`` with the reason.

``nested="json"`` keeps objects and lists as JSON text instead of structs and lists;
``json_columns`` does the same for the named fields only (any value, scalars included). The text is
compact (:func:`json_text`).
Converted pages go into a :class:`TableSpill` (memory up to a limit, then Arrow IPC files on
disk); :meth:`TableSpill.reader` streams them back conformed to the final schema.
"""

import json
import math
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from integration_platform.core.schema_evolution import widened

#: What Arrow raises for a value it cannot convert. ``UnicodeEncodeError``: a string with a lone
#: surrogate (Python's JSON parsers read ``"\\ud800"`` as one), which UTF-8 cannot hold.
ARROW_ERRORS = (
    pa.ArrowInvalid,
    pa.ArrowTypeError,
    pa.ArrowNotImplementedError,
    OverflowError,
    TypeError,
    UnicodeEncodeError,
)


_T = TypeVar("_T")

#: Arrow types a source's YAML may declare for a column, by name.
ARROW_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "int64": pa.int64(),
    "float64": pa.float64(),
    "bool": pa.bool_(),
    "date": pa.date32(),
    "timestamp": pa.timestamp("us"),
    "timestamptz": pa.timestamp("us", tz="UTC"),
}


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, infinities) replaced by ``None``, at any depth of dicts,
    lists and tuples (one frame per level, as ``json.dumps`` itself recurses): JSON (RFC 8259) has no
    spelling for them, and ``json.dumps`` would write ``NaN``, which readers refuse or misread. Used by the
    REST source's JSON text and by what the platform sends out (:mod:`~integration_platform.core.outbound`)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        finite = {}
        for key, item in value.items():
            finite[key] = json_safe(item)
        return finite
    if isinstance(value, list | tuple):
        items = []
        for item in value:
            items.append(json_safe(item))
        return items
    return value


def _json_dumps(value: Any, ascii_only: bool) -> str:
    """``value`` as compact JSON text by the standard library; non-finite floats as ``null``."""
    try:
        return json.dumps(value, ensure_ascii=ascii_only, separators=(",", ":"), allow_nan=False)
    except ValueError:  # a non-finite float
        return json.dumps(json_safe(value), ensure_ascii=ascii_only, separators=(",", ":"))


def json_text(value: Any) -> str:
    """A parsed JSON value (dict, list, str, int, float, bool or ``None``) as compact JSON text: no
    spaces after separators, object keys in their order, non-ASCII characters as they are, non-finite
    floats as ``null`` (``NaN`` and ``Infinity`` from a lenient parser, and numbers beyond a double's
    range such as ``1e400``, which Python's parsers read as infinities).

    orjson writes it: 2,400 PokeAPI ability records' nested values (34 MB) take 0.11 s against
    ``json.dumps``' 0.65 s, on the REST fan-out's own thread, which holds Python's lock while the
    workers wait for it. What orjson refuses goes through ``json.dumps`` in the same form: an integer
    beyond 64 bits, nesting deeper than 255 levels, a key that is not a string, a string with a lone
    surrogate (escaped as ``\\ud800``, since it cannot be written as UTF-8). Raises ``TypeError`` for
    a value JSON cannot hold (as ``json.dumps`` does), ``RecursionError`` for nesting deeper than
    ``json.dumps`` takes (about 990 levels).
    """
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # orjson.JSONEncodeError
        text = _json_dumps(value, ascii_only=False)
    try:
        text.encode()
    except UnicodeEncodeError:  # a lone surrogate: escaped, as only ASCII text can hold it
        return _json_dumps(value, ascii_only=True)
    return text


def _without(items: list[_T], gone: set[int]) -> list[_T]:
    """``items`` without the ones at the indexes in ``gone``."""
    return [item for i, item in enumerate(items) if i not in gone]


def _as_declared(values: list[Any], kind: pa.DataType) -> pa.Array:
    """``values`` (one field of a page's records) as the declared type ``kind``: converted together when
    Arrow infers one type for them, else each alone. A page mixing JSON types that each convert
    (``12345`` and ``"01234"`` for a declared ``string``, ``3`` and ``"12.50"`` for a ``float64``: what a
    column is declared for) failed the run, quarantine or not, as no record alone was to blame. Raises
    what :func:`cast` raises for a value that does not convert."""
    try:
        inferred = pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed JSON types: each value alone
        return pa.concat_arrays([cast(pa.array([value]), kind) for value in values])
    return cast(inferred, kind)


class SchemaConflictError(ValueError):
    """A record does not fit the stream's schema (names the stream, field, value and origin)."""


@dataclass(frozen=True)
class Rejected:
    """A record set aside: where it came from (URL, file:line, ...), why, and the record itself."""

    origin: str
    reason: str
    record: Any


#: The digits of a second's fraction each timestamp unit holds.
_FRACTION_DIGITS = {"s": 0, "ms": 3, "us": 6, "ns": 9}


def cast(array: pa.Array | pa.ChunkedArray, kind: pa.DataType) -> pa.Array | pa.ChunkedArray:
    """``array`` as ``kind``. Nested types are rebuilt from Python values: pyarrow 26's cast
    of a list<struct<list<struct<null ...>>>> array returns an invalid array (seen on
    PokeAPI's ``past_abilities``), even to its own type.

    Text to a timestamp: a fraction of a second finer than ``kind``'s unit is cut to it (truncated, as
    ordering needs: a cut value never passes a later one). .NET writes 7 digits
    (``2024-01-01T10:00:00.1234567Z``), Go up to 9; Arrow's cast refused every such value, so each record of
    such an API was a conflict for a declared ``timestamptz`` column. A number to a timestamp or a date
    raises ``ArrowInvalid``: Arrow counts it in the type's unit, so epoch seconds landed in January 1970.
    Raises what Arrow's cast raises (``ArrowInvalid`` for text that is no timestamp even so)."""
    if array.type == kind:
        return array
    if pa.types.is_nested(kind):
        return pa.array(array.to_pylist(), type=kind)
    if (pa.types.is_timestamp(kind) or pa.types.is_date(kind)) and (
        pa.types.is_integer(array.type) or pa.types.is_floating(array.type) or pa.types.is_decimal(array.type)
    ):
        # Arrow reads a number as a count of the unit: 1700000000 seconds landed as 1970-01-01 00:28:20
        raise pa.ArrowInvalid(
            f"a number is no {kind} (Arrow counts it in the type's unit from 1970-01-01: epoch seconds "
            "landed in January 1970): "
            "declare the column int64 and convert it in the warehouse"
        )
    try:
        return array.cast(kind)
    except pa.ArrowInvalid:
        text = pa.types.is_string(array.type) or pa.types.is_large_string(array.type)
        if not (text and pa.types.is_timestamp(kind)):
            raise
    digits = _FRACTION_DIGITS[kind.unit]
    finer = rf"(:\d\d\.\d{{{digits}}})\d+" if digits else r"(:\d\d)\.\d+"  # the seconds, then more digits
    return pc.replace_substring_regex(array, finer, r"\1").cast(kind)


def utf8_safe(text: str) -> str:
    """``text`` with each lone surrogate written as its escape (``\\ud800``), so that it encodes as
    UTF-8 (an error message, a quarantined record); ``text`` itself when it has none. In JSON text
    the escape is JSON's own, so the text still parses to the same value, except that a high
    surrogate followed by a low one parses as the one character they encode (as ``json.loads``
    reads the same escapes from an API)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode()
    return text


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def empty_objects_null(value: Any) -> Any:
    """``value`` (a parsed JSON value) with every empty object (``{}``), at any depth, replaced by
    ``None``: Arrow makes one a struct without fields, which Parquet cannot write
    (``ArrowNotImplementedError``). Raises ``RecursionError`` as deep as ``json.loads`` would."""
    if isinstance(value, dict):
        return {name: empty_objects_null(item) for name, item in value.items()} if value else None
    if isinstance(value, list):
        return [empty_objects_null(item) for item in value]
    return value


#: The deepest schema Parquet's reader opens (Arrow C++'s schema depth limit): its root, one level per
#: struct, two per list, one for the leaf. A deeper column was written, and then pyarrow could not open the
#: landing (``Parquet schema too deeply nested``): a child stream, an incremental run's "already landed"
#: comparison, every read of the stream's lake files failed.
PARQUET_MAX_DEPTH = 100


def parquet_depth(kind: pa.DataType) -> int:
    """The levels of a Parquet schema holding one column of Arrow type ``kind``, its root included (see
    :data:`PARQUET_MAX_DEPTH`). Walks the type without recursion: a body nested 800 levels deep is valid
    JSON, and recursing over its type had raised a bare ``RecursionError``."""
    deepest, todo = 0, [(kind, 2)]  # (type, levels down to it: the root, then the type's own)
    while todo:
        current, levels = todo.pop()
        deepest = max(deepest, levels)
        if pa.types.is_struct(current):
            todo.extend((current.field(i).type, levels + 1) for i in range(current.num_fields))
        elif pa.types.is_list(current) or pa.types.is_large_list(current) or pa.types.is_fixed_size_list(current):
            todo.append((current.value_type, levels + 2))
        elif pa.types.is_map(current):
            todo.extend([(current.key_type, levels + 2), (current.item_type, levels + 2)])
    return deepest


#: The most lists a column may nest: DuckDB 1.5's load of a Parquet column doubles its time about every
#: two levels of lists (20 lists 0.37 s for one value, 26 lists 19.5 s, 28 lists 35 s), and the warehouse
#: step holds the DuckDB file meanwhile; Parquet's own limit would allow 49.
MAX_LIST_DEPTH = 20


def list_depth(kind: pa.DataType) -> int:
    """The most lists (and maps) nested along any path of ``kind``; walks without recursion, as
    :func:`parquet_depth`."""
    deepest, todo = 0, [(kind, 0)]
    while todo:
        current, lists = todo.pop()
        deepest = max(deepest, lists)
        if pa.types.is_struct(current):
            todo.extend((current.field(i).type, lists) for i in range(current.num_fields))
        elif pa.types.is_list(current) or pa.types.is_large_list(current) or pa.types.is_fixed_size_list(current):
            todo.append((current.value_type, lists + 1))
        elif pa.types.is_map(current):
            todo.extend([(current.key_type, lists + 1), (current.item_type, lists + 1)])
    return deepest


def _too_deep(name: str, kind: pa.DataType) -> str | None:
    """Why column ``name`` of type ``kind`` cannot land (a Parquet schema deeper than the reader opens, or
    more lists than the warehouse loads in reasonable time), or ``None`` when it can."""
    if not pa.types.is_nested(kind):
        return None
    way_out = f"keep it as JSON text (columns: {{{name}: json}}, or nested: json)"
    depth = parquet_depth(kind)
    if depth > PARQUET_MAX_DEPTH:
        return (
            f"field {name!r} is nested {depth} Parquet levels deep, more than a reader opens "
            f"({PARQUET_MAX_DEPTH}); {way_out}"
        )
    lists = list_depth(kind)
    if lists > MAX_LIST_DEPTH:
        return (
            f"field {name!r} nests {lists} lists, more than the warehouse loads in reasonable time "
            f"({MAX_LIST_DEPTH}); {way_out}"
        )
    return None


def _has_empty_struct(kind: pa.DataType) -> bool:
    """Whether ``kind`` is, or holds at any depth, a struct without fields."""
    if pa.types.is_struct(kind):
        return kind.num_fields == 0 or any(_has_empty_struct(kind.field(i).type) for i in range(kind.num_fields))
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        return _has_empty_struct(kind.value_type)
    return False


def _has_null_field(kind: pa.DataType) -> bool:
    """Whether a struct in ``kind``, at any depth, has a field of Arrow's null type (null in every record)."""
    if pa.types.is_struct(kind):
        return any(
            pa.types.is_null(kind.field(i).type) or _has_null_field(kind.field(i).type) for i in range(kind.num_fields)
        )
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        return _has_null_field(kind.value_type)
    return False


def without_null_fields(value: Any, kind: pa.DataType) -> Any:
    """``value`` (a parsed JSON value Arrow typed ``kind``) without the objects' fields ``kind`` types as null
    (:func:`_has_null_field`): such a field carries no value, and landed as Parquet's null type, which
    DuckDB reads as ``INTEGER``, so a later run's text in it (``address.zip``, null in every record of one
    run) failed the warehouse load as a type conflict, run after run. Left out, it is a field a later
    landing adds. Raises nothing."""
    if isinstance(value, dict) and pa.types.is_struct(kind):
        fields = [kind.field(i) for i in range(kind.num_fields)]
        return {f.name: without_null_fields(value.get(f.name), f.type) for f in fields if not pa.types.is_null(f.type)}
    if isinstance(value, list) and (pa.types.is_list(kind) or pa.types.is_large_list(kind)):
        return [without_null_fields(item, kind.value_type) for item in value]
    return value


def _pair(values: list[Any]) -> tuple[list[Any], pa.Array]:
    return values, pa.array(values)


def _fields_with_values(values: list[Any], inferred: pa.Array) -> tuple[list[Any], pa.Array]:
    """``values`` and their array without the objects' fields null in every record
    (:func:`without_null_fields`), until none is left (an object left empty is a field of its own)."""
    while _has_null_field(inferred.type):
        values = [without_null_fields(value, inferred.type) for value in values]
        values = [empty_objects_null(value) for value in values]
        inferred = pa.array(values)
    return values, inferred


class JsonRecords:
    """Converts pages of JSON records to Arrow tables under one evolving schema (module doc).

    ``columns``: declared Arrow types that win over inference (a timestamp kept as text by the
    API, say). ``required``: fields every record must have (the primary key); records missing
    one are conflicts. ``primary_key``: of the records with one key in this landing, the first
    that fits the schema is kept, the later ones are dropped (counted in ``duplicates``); a
    rejected record does not hide a later good one with its key. ``version``: the field telling a
    key's versions apart (an incremental stream's cursor): records with one key and different values
    of it are not duplicates, they all land and the warehouse keeps the latest (a row updated while a
    run paged came twice, and keeping the first lost the update for good, as the high-water mark moved
    past it). ``known``: the stream's schema so
    far (its last landing's), so that types stay stable from landing to landing: a value that
    does not fit a known column is a conflict, a new field is a change.
    """

    def __init__(
        self,
        stream: str,
        *,
        nested: Literal["struct", "json"] = "struct",
        columns: Mapping[str, pa.DataType] | None = None,
        on_conflict: Literal["fail", "quarantine"] = "fail",
        primary_key: Sequence[str] = (),
        json_columns: Sequence[str] = (),
        known: pa.Schema | None = None,
        version: str | None = None,
    ) -> None:
        self.stream, self.nested, self.on_conflict = stream, nested, on_conflict
        self.declared = dict(columns or {})
        self.primary_key = tuple(primary_key)
        self.version = version if version and version not in self.primary_key else None
        self.json_columns = frozenset(json_columns)
        self.declared.update({name: pa.string() for name in self.json_columns})
        self.schema = pa.schema([(name, kind) for name, kind in self.declared.items()])
        for known_field in known or ():
            if known_field.name not in self.declared:
                self.schema = self.schema.append(known_field)
        self.changes: list[str] = []
        self.rejected: list[Rejected] = []
        self.duplicates = 0
        self._keys: set[tuple[Any, ...]] = set()
        self._converted = known is not None

    def _conflict(self, origin: str, reason: str, record: Any) -> None:
        reason = utf8_safe(reason)  # a value or an Arrow message quoting one may hold a lone surrogate
        if self.on_conflict == "fail":
            raise SchemaConflictError(f"stream {self.stream}: {reason} in {origin}")
        self.rejected.append(Rejected(origin, reason, record))

    def _column(self, name: str, values: list[Any]) -> tuple[pa.Array, pa.DataType]:
        """The column as an array and its (possibly widened) type; raises ArrowInvalid etc. on conflict.
        Where neither an object of the column nor the column's type so far has a field at some depth
        (``{}`` alone), those empty objects are null (:func:`empty_objects_null`): Parquet cannot write a
        struct without fields, and the landing failed on every run. Beside a known struct's fields they
        are objects of nulls, as Arrow casts them."""
        declared = self.declared.get(name)
        if declared is not None:
            return _as_declared(values, declared), declared
        inferred = pa.array(values)
        deep = _too_deep(name, inferred.type)
        if deep is not None:
            raise pa.ArrowInvalid(deep)
        values, inferred = _fields_with_values(values, inferred)
        index = self.schema.get_field_index(name)
        current = self.schema.field(index).type if index >= 0 else pa.null()
        unified = widened(current, inferred.type)
        if unified is not None and _has_empty_struct(unified):
            values, inferred = _fields_with_values(*_pair([empty_objects_null(value) for value in values]))
            unified = widened(current, inferred.type)
        if index < 0:
            return inferred, inferred.type
        if unified is None:
            raise pa.ArrowTypeError(f"expected {current}, got {inferred.type}")
        return cast(inferred, unified), unified

    def _fits(self, name: str, value: Any, kind: pa.DataType | None) -> str | None:
        """Why ``value`` cannot go into column ``name`` of type ``kind``, or None when it can."""
        try:
            array = pa.array([value])
            deep = None if name in self.declared else _too_deep(name, array.type)
            if deep is not None:
                return deep
            if kind is not None and kind != array.type:
                if name in self.declared:
                    cast(array, kind)
                elif widened(kind, array.type) is None:
                    return f"field {name!r}: expected {kind}, got {_short(value)}"
        except ARROW_ERRORS as exc:
            return f"field {name!r}: {_short(value)} does not convert: {exc}"
        return None

    def _isolate(self, name: str, objects: list[dict[str, Any]], origins: list[str]) -> list[int]:
        """The indexes of the records that fit column ``name``; the others raise or are set aside."""
        index = self.schema.get_field_index(name)
        kind = self.schema.field(index).type if index >= 0 else None
        if kind is None:  # a new column: the first non-null value that converts decides its type
            for obj in objects:
                if obj.get(name) is not None:
                    try:
                        candidate = pa.array([obj[name]]).type
                    except ARROW_ERRORS:
                        continue
                    if _too_deep(name, candidate) is None:
                        kind = candidate
                        break
        keep: list[int] = []
        for i, obj in enumerate(objects):
            reason = self._fits(name, obj.get(name), kind) if obj.get(name) is not None else None
            if reason is None:
                keep.append(i)
            else:
                self._conflict(origins[i], reason, obj)
        if len(keep) == len(objects):  # no single record is to blame: the page as a whole does not convert
            raise SchemaConflictError(f"stream {self.stream}: field {name!r} does not convert to one Arrow type")
        return keep

    def _named(self, unnamed: set[str], objects: list[dict[str, Any]], origins: list[str]) -> list[int]:
        """The indexes of the records with no field named in ``unnamed`` (names with a lone surrogate,
        which no column name can hold: UTF-8 cannot encode it); the others raise or are set aside."""
        keep: list[int] = []
        for i, obj in enumerate(objects):
            bad = next((name for name in obj if name in unnamed), None)
            if bad is None:
                keep.append(i)
            else:  # repr writes the surrogate as an escape
                self._conflict(origins[i], f"field name {bad!r} is not valid Unicode (a lone surrogate)", obj)
        return keep

    def _admit(
        self, records: Sequence[Any], origin: str
    ) -> tuple[list[dict[str, Any]], list[str], list[tuple[str, ...]]]:
        """The page's records that are objects with their primary key, each one's origin and key (of
        the values as received, before any become JSON text)."""
        objects: list[dict[str, Any]] = []
        origins: list[str] = []
        keys: list[tuple[str, ...]] = []
        origin = utf8_safe(origin)  # a file name may hold a lone surrogate
        for i, record in enumerate(records):
            where = f"{origin} record {i}"
            if not isinstance(record, dict):
                self._conflict(where, f"record is a JSON {type(record).__name__}, not an object", record)
                continue
            missing = [k for k in self.primary_key if record.get(k) is None]
            if missing:
                self._conflict(where, f"primary key field(s) {missing} missing or null", record)
                continue
            if self.primary_key:
                key = tuple(json.dumps(record[k], sort_keys=True) for k in self.primary_key)
                keys.append((*key, json.dumps(record.get(self.version), sort_keys=True)) if self.version else key)
            if self.json_columns:
                record = {k: json_text(v) if k in self.json_columns and v is not None else v for k, v in record.items()}
            if self.nested == "json":
                record = {k: json_text(v) if isinstance(v, dict | list) else v for k, v in record.items()}
            objects.append(record)
            origins.append(where)
        return objects, origins, keys

    def _first_of_each_key(self, keys: list[tuple[str, ...]]) -> list[int]:
        """The indexes of the records whose key neither an earlier record here nor an earlier
        landing (``_keys``) has: the ones kept; the others are duplicates."""
        landed, seen = self._keys, set()
        first: list[int] = []
        for i, key in enumerate(keys):
            if key not in landed and key not in seen:
                seen.add(key)
                first.append(i)
        return first

    def _names(self, objects: list[dict[str, Any]]) -> list[str]:
        """The schema's column names, then the fields new in ``objects`` in the order they first appear."""
        names = list(self.schema.names)
        for obj in objects:
            names.extend(k for k in obj if k not in names)
        return names

    @staticmethod
    def _page_of(
        name: str, objects: list[dict[str, Any]], origins: list[str], unlike: pa.DataType | None = None
    ) -> str:
        """The origin of the page of the first record with a non-null value of ``name`` (whose own Arrow
        type is not ``unlike``, when given: the value that widened the column)."""
        for obj, where in zip(objects, origins, strict=True):
            value = obj.get(name)
            if value is not None and (unlike is None or pa.array([value]).type != unlike):
                return where.rpartition(" record ")[0]
        return origins[0].rpartition(" record ")[0] if origins else ""

    def _columns(
        self, objects: list[dict[str, Any]], origins: list[str]
    ) -> tuple[list[pa.Array], list[pa.Field], list[int] | None]:
        """The records' columns and fields in the current schema (which they may widen or extend) and
        ``None``; or, when some records do not fit, the indexes of the ones that do (the others raised
        or were set aside)."""
        names = self._names(objects)
        unnamed = {name for name in names[len(self.schema.names) :] if utf8_safe(name) != name}
        if unnamed:
            return [], [], self._named(unnamed, objects, origins)
        arrays, fields = [], []
        for name in names:
            try:
                array, kind = self._column(name, [o.get(name) for o in objects])
            except ARROW_ERRORS:
                return [], [], self._isolate(name, objects, origins)
            arrays.append(array)
            fields.append(pa.field(name, kind))
        return arrays, fields, None

    def convert(self, records: Sequence[Any], origin: str) -> pa.Table:
        """One page of records as an Arrow table in the current schema (which it may extend).

        ``origin`` (a URL, a file name) goes into error messages and rejected records.
        Raises :class:`SchemaConflictError` on a conflict when ``on_conflict`` is ``fail``.
        """
        return self.convert_pages([(records, origin)])

    def convert_pages(self, pages: Sequence[tuple[Sequence[Any], str]]) -> pa.Table:
        """Several pages ``(records, origin)`` as one Arrow table, as :meth:`convert` would convert
        their records one page after the other (same schema, same conflicts and changes, each
        named by its own page's origin). Converting one column of many pages at once costs Arrow
        one array instead of one per page: on the fan-out benchmark's 2,400 one-record pages the
        process's CPU went from 16.5 to 14.0 s."""
        objects: list[dict[str, Any]] = []
        origins: list[str] = []
        keys: list[tuple[str, ...]] = []
        page_of: list[int] = []  # each record's page, by number
        for number, (records, origin) in enumerate(pages):
            admitted, where, admitted_keys = self._admit(records, origin)
            objects += admitted
            origins += where
            keys += admitted_keys
            page_of += [number] * len(admitted)
        # Duplicates are dropped after conversion, not before: when the first record of a key is
        # rejected, the next one with that key is the one that lands.
        while True:
            if self.primary_key:
                live = self._first_of_each_key(keys)
                view, view_origins = [objects[i] for i in live], [origins[i] for i in live]
            else:
                live, view, view_origins = list(range(len(objects))), objects, origins
            arrays, fields, keep = self._columns(view, view_origins)
            if keep is None:
                break
            gone = set(live) - {live[i] for i in keep}  # rejected: a field only they had is no column
            objects, origins = _without(objects, gone), _without(origins, gone)
            keys, page_of = _without(keys, gone), _without(page_of, gone)
        # the first page with records that land defines the schema of a stream's first landing
        first = page_of[live[0]] if live and not self._converted else -1
        defining = {k for i in live if page_of[i] == first for k in objects[i]}
        if self.primary_key:
            self.duplicates += len(objects) - len(live)
            self._keys.update(keys[i] for i in live)
        objects, origins = view, view_origins
        for field in fields:
            index = self.schema.get_field_index(field.name)
            if index < 0:
                if self._converted or field.name not in defining:
                    page = self._page_of(field.name, objects, origins)
                    self.changes.append(f"new column {field.name} ({field.type}) first seen in {page}")
                self.schema = self.schema.append(field)
            elif self.schema.field(index).type != field.type:
                old = self.schema.field(index).type
                if not pa.types.is_null(old):
                    page = self._page_of(field.name, objects, origins, unlike=old)
                    self.changes.append(f"column {field.name} widened from {old} to {field.type} in {page}")
                self.schema = self.schema.set(index, field)
        self._converted = self._converted or bool(objects)
        return pa.Table.from_arrays(arrays, schema=pa.schema(fields)) if fields else pa.table({})


def cast_to_schema(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with every column of ``schema`` (missing ones null), in its order and types."""
    columns = [
        cast(table.column(f.name), f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


class TableSpill:
    """Arrow tables held in memory up to ``limit_bytes``, then written to Arrow IPC files.

    Use as a context manager; the files go when it exits.
    """

    def __init__(self, limit_bytes: int = 64 << 20) -> None:
        self.limit = limit_bytes
        self._memory: list[pa.Table] = []
        self._bytes = 0
        self._dir = tempfile.TemporaryDirectory(prefix="ip-spill-")
        self._files: list[Path] = []
        self.rows = 0

    def __enter__(self) -> "TableSpill":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Drop what is held and remove the spill files."""
        self._memory = []
        self._dir.cleanup()

    def add(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        self.rows += table.num_rows
        self._memory.append(table)
        self._bytes += table.nbytes
        if self._bytes >= self.limit:
            for held in self._memory:
                path = Path(self._dir.name) / f"{len(self._files):06d}.arrow"
                with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, held.schema) as writer:
                    writer.write_table(held)
                self._files.append(path)
            self._memory, self._bytes = [], 0

    def tables(self) -> Iterator[pa.Table]:
        for path in self._files:
            with pa.memory_map(str(path)) as source:
                yield pa.ipc.open_file(source).read_all()
        yield from self._memory

    def reader(self, schema: pa.Schema, batch_rows: int = 65536) -> pa.RecordBatchReader:
        """Every held row conformed to ``schema``, as a stream of batches; the spill closes
        itself when the stream ends (or fails)."""

        def batches() -> Iterator[pa.RecordBatch]:
            try:
                for table in self.tables():
                    yield from cast_to_schema(table, schema).to_batches(max_chunksize=batch_rows)
            finally:
                self.close()

        return pa.RecordBatchReader.from_batches(schema, batches())
