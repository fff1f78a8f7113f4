"""Schema evolution: the one rule for when a column's type may widen, for Arrow and for DuckDB.

Why our own code: every landing path (JSON records, files, the warehouse load) must agree on
which type changes keep every value exactly and which are conflicts. Arrow's
``unify_schemas(promote_options="permissive")`` is close but too generous for a lake that must
not lose values: it unifies ``int64`` with ``uint64`` as ``int64`` (values above 2^63 no longer
fit) and ``date32`` with nothing, while letting ``timestamp[s]`` become ``timestamp[ns]``
(dates past 2262 overflow). So the platform keeps its own table, :data:`WIDENINGS`, and
everything else derives from it:

- :func:`widened` (Arrow types): ``null`` takes any type; a pair in the table takes its
  result, in either order; structs merge field by field (fields of both, the known ones first)
  and lists by their value type, with the same rule applied inside; anything else is ``None``
  (a conflict for the caller to report or quarantine).
- :func:`sql_widened` (DuckDB type names): the same rule read through :data:`SQL_TYPES`; the
  warehouse loader reads nested DuckDB types (structs, lists) as Arrow types for :func:`widened`.

An integer widened to ``double`` is exact only up to 2^53 in magnitude; larger integers are
rounded to the nearest double, so declare such columns' types instead.
"""

import pyarrow as pa

_SIGNED = [pa.int8(), pa.int16(), pa.int32(), pa.int64()]
_UNSIGNED = [pa.uint8(), pa.uint16(), pa.uint32(), pa.uint64()]


def _pairs() -> dict[tuple[pa.DataType, pa.DataType], pa.DataType]:
    table: dict[tuple[pa.DataType, pa.DataType], pa.DataType] = {}
    for ladder in (_SIGNED, _UNSIGNED):
        for i, narrow in enumerate(ladder):
            for wide in ladder[i + 1 :]:
                table[(narrow, wide)] = wide
    for i, unsigned in enumerate(_UNSIGNED[:3]):  # uint8 and int8 both fit int16, ...; uint64 fits no int
        for j, signed in enumerate(_SIGNED):
            table[(unsigned, signed)] = _SIGNED[max(i + 1, j)]
    for integer in _SIGNED + _UNSIGNED:
        table[(integer, pa.float64())] = pa.float64()
        table[(integer, pa.float32())] = pa.float64()  # float32 holds integers exactly only to 2^24
    table[(pa.float32(), pa.float64())] = pa.float64()
    table[(pa.string(), pa.large_string())] = pa.large_string()
    table[(pa.binary(), pa.large_binary())] = pa.large_binary()
    return table


#: ``(known type, new type) -> the type that holds both``: the platform's one table of widenings.
WIDENINGS: dict[tuple[pa.DataType, pa.DataType], pa.DataType] = _pairs()

#: DuckDB's names of the scalar Arrow types in :data:`WIDENINGS` (what ``DESCRIBE`` prints).
SQL_TYPES: dict[str, pa.DataType] = {
    "TINYINT": pa.int8(),
    "SMALLINT": pa.int16(),
    "INTEGER": pa.int32(),
    "BIGINT": pa.int64(),
    "UTINYINT": pa.uint8(),
    "USMALLINT": pa.uint16(),
    "UINTEGER": pa.uint32(),
    "UBIGINT": pa.uint64(),
    "FLOAT": pa.float32(),
    "DOUBLE": pa.float64(),
}
_SQL_NAMES = {kind: name for name, kind in SQL_TYPES.items()}


def _merge_structs(known: pa.StructType, new: pa.StructType) -> pa.DataType | None:
    fields = []
    seen = {new.field(i).name: new.field(i) for i in range(new.num_fields)}
    for i in range(known.num_fields):
        field = known.field(i)
        other = seen.pop(field.name, None)
        kind = field.type if other is None else widened(field.type, other.type)
        if kind is None:
            return None
        fields.append(field.with_type(kind))
    fields.extend(seen.values())
    return pa.struct(fields)


def widened(known: pa.DataType, new: pa.DataType) -> pa.DataType | None:
    """The type a column of type ``known`` takes to also hold values of type ``new``: ``known``
    itself when it already holds them, a wider type by :data:`WIDENINGS`, or ``None`` when the
    two conflict (module doc). Pure; raises nothing."""
    if known == new or pa.types.is_null(new):
        return known
    if pa.types.is_null(known):
        return new
    pair = WIDENINGS.get((known, new)) or WIDENINGS.get((new, known))
    if pair is not None:
        return pair
    if pa.types.is_struct(known) and pa.types.is_struct(new):
        return _merge_structs(known, new)
    if pa.types.is_list(known) and pa.types.is_list(new):
        inner = widened(known.value_type, new.value_type)
        return None if inner is None else pa.list_(known.value_field.with_type(inner))
    if pa.types.is_large_list(known) and pa.types.is_large_list(new):
        inner = widened(known.value_type, new.value_type)
        return None if inner is None else pa.large_list(known.value_field.with_type(inner))
    return None


def sql_widened(known: str, new: str) -> str | None:
    """:func:`widened` for DuckDB column types given by name (``"INTEGER"``, ``"DOUBLE"``): the
    name of the type that holds both, or ``None`` when either is not in :data:`SQL_TYPES` or the
    two conflict. Pure; raises nothing."""
    if known == new:
        return known
    if known not in SQL_TYPES or new not in SQL_TYPES:
        return None
    kind = widened(SQL_TYPES[known], SQL_TYPES[new])
    return None if kind is None else _SQL_NAMES.get(kind)
