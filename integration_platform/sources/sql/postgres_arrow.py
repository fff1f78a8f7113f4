"""PostgreSQL -> Arrow through ADBC (binary COPY under the hood), the fastest bounded-memory
reader measured on this stack (see ``benchmarks/sql_extract.py`` and DESIGN.md).

The ADBC PostgreSQL driver streams ``COPY (query) TO STDOUT (FORMAT binary)`` straight into
Arrow record batches. The driver is pinned at 1.8.0: the wheels of 1.9.0 to 1.13.0 are
built without compiler optimisation (functions keep their ``-O0`` frame set-up, byte swaps
are calls), and decode the same stream with 2.5x the CPU (3.8 s against 1.5 s for the
5M-row benchmark table), CPU the PostgreSQL backend and the Parquet writer need on a small
machine. Two gaps are closed here:

- ``numeric`` arrives as an opaque string column (arbitrary precision). With the column's
  type modifier, read from ``pg_attribute.atttypmod`` (PostgreSQL encodes ``numeric(p, s)``
  as ``((p << 16) | s) + 4``; see ``numeric.c``, ``make_numeric_typmod``), it is cast to
  ``decimal128(p, s)`` (``decimal256`` beyond 38 digits); Arrow's cast refuses, rather
  than rounds, a value that does not fit. An unconstrained ``numeric`` stays text: no
  digit is lost; its field carries :data:`~integration_platform.core.cursors.NOT_A_CURSOR`, so a cursor on
  it is refused before anything lands (its text maximum is no numeric maximum). Casting on the client
  is cheaper than any server-side rewrite measured (``(col * 10^s)::int8`` cost the backend 20% more
  CPU than the plain COPY).
- types the driver does not decode (``tsvector``, geometric types, ...) arrive as opaque
  binary; they are selected as ``col::text`` instead. So is ``interval`` (Arrow's
  month-day-nano interval has no Parquet form, and a month is no fixed duration).
- ``oid`` (unsigned 32-bit) arrives as int32, so OIDs above 2^31 turned negative; it is
  selected as ``bigint``.
- ``money`` arrives as bare int64 cents; it is selected as ``numeric`` and lands as
  ``decimal128(30, 6)``, exact for every locale's fraction digits.
- ``infinity``/``-infinity`` of ``timestamp``, ``timestamptz`` and ``date`` overflow in the
  driver's shift from PostgreSQL's epoch (2000-01-01) to Unix's, into two values near year
  290,000 BC; those exact values are mapped back to DuckDB's own infinities (the largest and
  smallest int64 microseconds, int32 days), which DuckDB shows as ``infinity``/``-infinity``.
- arrays and composite types arrive as lists and structs, but with none of the fixes above applied
  inside them (money as cents, ``infinity`` as 290,000 BC, ``uuid`` as raw bytes, ...), and a
  multi-dimensional array flattened (``{{1,2},{3,4}}`` as ``[1,2,3,4]``) or its lower bound dropped.
  An array or composite stays a list or struct only when its elements or fields, at any depth, are
  types the driver renders exactly (:data:`NESTED_FAITHFUL_OIDS`, enums, composites of those; read from
  ``pg_type``/``pg_attribute`` in one recursive query) and an array column is declared with at most one
  dimension; otherwise it is selected as ``col::text``. PostgreSQL does not enforce declared dimensions,
  so each list column carries a server-side shape check (:func:`_shape_check`, NULL for every ordinary
  value, one null count per batch on the client): a value a list cannot hold fails the read naming
  table, column and value.

The query is composed with ``psycopg.sql`` (identifiers and literals quoted by psycopg), so
a table name or a cursor value cannot inject SQL. Bound parameters would force the driver
off its COPY path, which is why literals are rendered rather than bound. A time bound is rendered
as the filter column's own type (``date``, ``timestamp`` or ``timestamptz``; see :func:`_where`).
"""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql

from integration_platform.core.cursors import NOT_A_CURSOR
from integration_platform.core.extract import MissingColumnError
from integration_platform.core.row_filter import RowFilter, TimeKind, bound_for

if TYPE_CHECKING:
    from integration_platform.sources.sql.adbc_session import AdbcSession

NUMERIC_TYPMOD_OFFSET = 4
DECIMAL256_MAX_PRECISION = 76
MONEY_TYPE = pa.decimal128(30, 6)
_POSTGRES_EPOCH_US = 946_684_800_000_000  # 2000-01-01 in Unix microseconds
_POSTGRES_EPOCH_DAYS = 10_957
#: storage type -> (wrapped +infinity, wrapped -infinity, DuckDB +infinity, DuckDB -infinity)
WRAPPED_INFINITY = {
    pa.int64(): (-(2**63) + _POSTGRES_EPOCH_US - 1, -(2**63) + _POSTGRES_EPOCH_US, 2**63 - 1, -(2**63) + 1),
    pa.int32(): (-(2**31) + _POSTGRES_EPOCH_DAYS - 1, -(2**31) + _POSTGRES_EPOCH_DAYS, 2**31 - 1, -(2**31) + 1),
}


#: Why a ``numeric`` landed as text cannot be a cursor (:data:`~integration_platform.core.cursors.NOT_A_CURSOR`).
NUMERIC_TEXT_CURSOR = (
    b"it is an unconstrained PostgreSQL numeric (or one of more than 76 digits), which lands as its text to keep "
    b"every digit, and text compares as text (the mark of 1..120 was '99', and 'NaN' stopped it for good): declare "
    b"the column numeric(p, s), which lands as a decimal, or read the table through a view casting it"
)


def _numeric_type(typmod: int) -> pa.DataType:
    """decimal128/256 for ``numeric(p, s)`` (from its ``atttypmod``), string for an unconstrained ``numeric``."""
    if typmod < NUMERIC_TYPMOD_OFFSET:
        return pa.string()
    packed = typmod - NUMERIC_TYPMOD_OFFSET
    precision, scale = (packed >> 16) & 0xFFFF, packed & 0xFFFF
    if scale > precision or scale > 1000:  # negative scale (PG 15+) is stored wrapped: keep text
        return pa.string()
    if precision > DECIMAL256_MAX_PRECISION:  # numeric allows 1000 digits, Arrow 76: keep text
        return pa.string()
    return pa.decimal128(precision, scale) if precision <= 38 else pa.decimal256(precision, scale)


def _is_opaque(field: pa.Field) -> bool:
    return isinstance(field.type, pa.BaseExtensionType) and field.type.extension_name == "arrow.opaque"


def _is_numeric(field: pa.Field) -> bool:
    return _is_opaque(field) and field.type.type_name == "numeric"


#: Built-in types (``pg_type.oid``, fixed across versions) the driver renders exactly inside an array or a
#: composite: ``int2``, ``int4``, ``int8``, ``float4``, ``float8``, ``bool``, ``text``, ``varchar``, ``bpchar``,
#: ``name``, ``bytea``, ``json``, ``jsonb`` (checked against PostgreSQL's own text by
#: ``test_postgres_types.py``). Not here, so such an array or composite lands as its text: ``numeric``
#: (the driver writes ``nan``/``inf`` for ``NaN``/``Infinity``), ``money`` (bare cents), ``oid`` (int32,
#: negative above 2^31), ``date``/``timestamp``/``timestamptz`` (``infinity`` wraps to 290,000 BC), ``time``
#: (``24:00`` becomes ``00:00``), ``interval`` (no Parquet form), ``uuid``, ``timetz``, network and other types
#: (raw binary). Enums (their labels) are faithful too.
NESTED_FAITHFUL_OIDS = frozenset({21, 23, 20, 700, 701, 16, 25, 1043, 1042, 19, 17, 114, 3802})


@dataclass(frozen=True)
class _PgType:
    """One row of :func:`_type_catalog`: ``pg_type`` with a composite's field types."""

    kind: str  # pg_type.typtype: b(ase), c(omposite), d(omain), e(num), p(seudo), r(ange), m(ultirange)
    base: int  # a domain's base type
    element: int  # a true array's element type (``typlen = -1 AND typelem <> 0``), else 0
    fields: tuple[int, ...]  # a composite's field types, in order


@dataclass(frozen=True)
class _Column:
    """A column's PostgreSQL type, from :func:`_column_types`: ``kind`` is its (domain's base) type name,
    ``typmod`` its type modifier (``numeric``: -1 when unconstrained), ``oid`` its type (a domain's own),
    ``dims`` the dimensions it was declared with (``pg_attribute.attndims``; 0 for a view's column)."""

    kind: str
    typmod: int
    oid: int = 0
    dims: int = 0


def _faithful(oid: int, catalog: dict[int, _PgType], depth: int = 0) -> bool:
    """Whether the driver renders every value of type ``oid`` (an array's element or a composite's field,
    at any depth) exactly: only :data:`NESTED_FAITHFUL_OIDS`, enums, and composites of those. An array
    below the top level is not: its shape (dimensions, lower bound) is not checked there."""
    entry = catalog.get(oid)
    if entry is None or depth > 32:
        return oid in NESTED_FAITHFUL_OIDS
    if entry.kind == "d":
        return _faithful(entry.base, catalog, depth + 1)
    if entry.element:
        return False
    if entry.kind == "c":
        return all(_faithful(field, catalog, depth + 1) for field in entry.fields)
    return entry.kind == "e" or oid in NESTED_FAITHFUL_OIDS


def _has_extension(kind: pa.DataType) -> bool:
    """Whether ``kind`` holds an extension type (the driver's opaque values) at any depth."""
    if isinstance(kind, pa.BaseExtensionType):
        return True
    return any(_has_extension(kind.field(i).type) for i in range(kind.num_fields))


def _nested_kept(field: pa.Field, column: _Column, catalog: dict[int, _PgType]) -> bool:
    """Whether the array or composite ``column`` (probed as ``field``) lands as the driver's list or
    struct: a one-dimensional array (as declared) or a composite whose elements or fields are all
    :func:`_faithful`. Otherwise it is selected as its text."""
    oid = column.oid
    while oid in catalog and catalog[oid].kind == "d":
        oid = catalog[oid].base
    entry = catalog.get(oid)
    if entry is None or _has_extension(field.type):
        return False
    if entry.element:
        return column.dims <= 1 and pa.types.is_list(field.type) and _faithful(entry.element, catalog)
    return pa.types.is_struct(field.type) and _faithful(oid, catalog)


def _is_nested(column: _Column, catalog: dict[int, _PgType]) -> bool:
    oid = column.oid
    while oid in catalog and catalog[oid].kind == "d":
        oid = catalog[oid].base
    entry = catalog.get(oid)
    return entry is not None and (bool(entry.element) or entry.kind == "c")


@dataclass
class _Plan:
    """What :func:`_plan` gives: the select list, the output schema, and per list column kept as the
    driver's list the expression of its shape check (:func:`_shape_check`), selected after all else."""

    select: list[sql.Composable]
    schema: pa.Schema
    checks: dict[str, sql.Composable]


def _shape_check(ident: sql.Identifier) -> sql.Composable:
    """The text of an array that a list cannot hold (more than one dimension, or a lower bound other than
    1: the driver flattens ``{{1,2},{3,4}}`` to ``[1,2,3,4]`` and drops the ``[0:2]=`` of a lower bound),
    NULL for every other value. PostgreSQL does not enforce an array column's declared dimensions."""
    return sql.SQL("CASE WHEN array_ndims({0}) > 1 OR array_lower({0}, 1) <> 1 THEN {0}::text END").format(ident)


def _plan(probe: pa.Schema, types: dict[str, _Column], catalog: dict[int, _PgType] | None = None) -> _Plan:
    """Select list, output schema and array shape checks from the schema of a ``LIMIT 0`` probe.

    ``types`` maps each column to its PostgreSQL type (:func:`_column_types`); ``catalog`` holds the
    types its arrays and composites are made of (:func:`_type_catalog`). An array or composite whose
    elements or fields the driver would not render exactly (:func:`_nested_kept`) is selected as text.
    """
    catalog = catalog or {}
    plan = _Plan([], pa.schema([]), {})
    fields: list[pa.Field] = []
    for field in probe:
        ident = sql.Identifier(field.name)
        column = types.get(field.name, _Column("", -1))
        kind, typmod = column.kind, column.typmod
        if kind == "oid":
            plan.select.append(sql.SQL("{}::bigint AS {}").format(ident, ident))
            fields.append(pa.field(field.name, pa.int64()))
        elif kind == "money":
            plan.select.append(sql.SQL("{}::numeric AS {}").format(ident, ident))
            fields.append(pa.field(field.name, MONEY_TYPE))
        elif _is_numeric(field):
            plan.select.append(ident)
            numeric = _numeric_type(typmod)
            text = pa.types.is_string(numeric)
            fields.append(pa.field(field.name, numeric, metadata={NOT_A_CURSOR: NUMERIC_TEXT_CURSOR} if text else None))
        elif (
            _is_opaque(field)
            or kind == "interval"
            or (_is_nested(column, catalog) and not _nested_kept(field, column, catalog))
        ):
            plan.select.append(sql.SQL("{}::text AS {}").format(ident, ident))
            fields.append(pa.field(field.name, pa.string()))
        else:
            plan.select.append(ident)
            fields.append(pa.field(field.name, field.type))
            if pa.types.is_list(field.type):
                plan.checks[field.name] = _shape_check(ident)
    plan.schema = pa.schema(fields)
    return plan


def _column_types(session: "AdbcSession", target: sql.Composable) -> dict[str, _Column]:
    """Each column of the table or view ``target`` and its type (:class:`_Column`).

    For a column of a domain the type is the domain's base type, and for a domain over
    ``numeric`` the precision and scale live on the domain type (``pg_type.typtypmod``).
    """
    query = sql.SQL(
        "SELECT a.attname::text AS name,"
        " CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE a.atttypid END::regtype::text AS kind,"
        " CASE WHEN t.typtype = 'd' THEN t.typtypmod ELSE a.atttypmod END AS typmod,"
        " a.atttypid::int8 AS oid, a.attndims::int8 AS dims"
        " FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid"
        " WHERE a.attrelid = {}::regclass AND a.attnum > 0 AND NOT a.attisdropped"
    ).format(sql.Literal(target.as_string()))
    rows = session.table(query.as_string()).to_pylist()
    return {
        row["name"]: _Column(str(row["kind"]), int(row["typmod"]), int(row["oid"]), int(row["dims"])) for row in rows
    }


def _type_catalog(session: "AdbcSession", target: sql.Composable) -> dict[int, _PgType]:
    """Every type the columns of ``target`` are made of (domains' bases, arrays' elements, composites'
    fields, at any depth), by ``pg_type.oid``: one recursive catalog query."""
    query = sql.SQL(
        "WITH RECURSIVE reach(oid) AS ("
        " SELECT a.atttypid FROM pg_attribute a"
        " WHERE a.attrelid = {}::regclass AND a.attnum > 0 AND NOT a.attisdropped"
        " UNION SELECT part.oid FROM reach r JOIN pg_type t ON t.oid = r.oid CROSS JOIN LATERAL ("
        "  SELECT t.typbasetype WHERE t.typtype = 'd'"
        "  UNION ALL SELECT t.typelem WHERE t.typlen = -1 AND t.typelem <> 0"
        "  UNION ALL SELECT f.atttypid FROM pg_attribute f"
        "   WHERE t.typtype = 'c' AND f.attrelid = t.typrelid AND f.attnum > 0 AND NOT f.attisdropped"
        " ) part(oid))"
        " SELECT t.oid::int8 AS oid, t.typtype::text AS kind, t.typbasetype::int8 AS base,"
        " CASE WHEN t.typlen = -1 AND t.typelem <> 0 AND t.typtype <> 'd' THEN t.typelem ELSE 0 END::int8 AS element,"
        " ARRAY(SELECT f.atttypid::int8 FROM pg_attribute f WHERE t.typtype = 'c' AND f.attrelid = t.typrelid"
        "  AND f.attnum > 0 AND NOT f.attisdropped ORDER BY f.attnum) AS fields"
        " FROM pg_type t WHERE t.oid IN (SELECT oid FROM reach)"
    ).format(sql.Literal(target.as_string()))
    return {
        int(row["oid"]): _PgType(str(row["kind"]), int(row["base"]), int(row["element"]), tuple(row["fields"] or ()))
        for row in session.table(query.as_string()).to_pylist()
    }


#: PostgreSQL's names of its time types (``regtype::text``, a domain's base type) -> what a bound becomes.
_TIME_KINDS: dict[str, TimeKind] = {
    "date": "date",
    "timestamp without time zone": "timestamp",
    "timestamp with time zone": "timestamptz",
}


def _where(
    row_filter: RowFilter | None,
    pages: tuple[int, int | None] | None = None,
    types: dict[str, _Column] | None = None,
) -> sql.Composable:
    """The WHERE clause of ``row_filter`` and ``pages``; ``types`` (:func:`_column_types`) gives the
    filter column's type, so a datetime bound is rendered as a ``date``, a ``timestamp`` (its wall-clock
    time) or a ``timestamptz`` literal as the column is (:func:`~integration_platform.core.row_filter.bound_for`):
    an aware bound rendered as ``timestamptz`` against a ``date`` or ``timestamp`` column was compared at
    the session time zone's midnight."""
    parts = []
    if row_filter is not None:
        column = sql.Identifier(row_filter.column)
        kind = _TIME_KINDS.get((types or {}).get(row_filter.column, _Column("", -1)).kind)
        bounds = []
        if row_filter.lower is not None:
            bounds.append(sql.SQL("{} >= {}").format(column, sql.Literal(bound_for(row_filter.lower, kind))))
        if row_filter.upper is not None:
            bounds.append(sql.SQL("{} < {}").format(column, sql.Literal(bound_for(row_filter.upper, kind))))
        if bounds and row_filter.nulls:
            parts.append(sql.SQL("({} OR {} IS NULL)").format(sql.SQL(" AND ").join(bounds), column))
        else:
            parts += bounds
    if pages is not None:
        first, end = pages
        parts.append(sql.SQL("ctid >= {}::tid").format(sql.Literal(f"({int(first)},0)")))
        if end is not None:
            parts.append(sql.SQL("ctid < {}::tid").format(sql.Literal(f"({int(end)},0)")))
    return sql.SQL(" WHERE ") + sql.SQL(" AND ").join(parts) if parts else sql.SQL("")


def _infinities(column: pa.Array) -> pa.Array:
    """``column`` (timestamp[us] or date32) with the driver's wrapped infinities (module doc)
    replaced by DuckDB's; untouched (and not scanned further) when no value is that early."""
    storage_type = pa.int32() if pa.types.is_date32(column.type) else pa.int64()
    raw = column.cast(storage_type)
    lowest = pc.min(raw).as_py()
    wrapped_pos, wrapped_neg, pos, neg = WRAPPED_INFINITY[storage_type]
    if lowest is None or lowest > wrapped_neg:
        return column
    raw = pc.if_else(pc.equal(raw, wrapped_pos), pa.scalar(pos, storage_type), raw)
    raw = pc.if_else(pc.equal(raw, wrapped_neg), pa.scalar(neg, storage_type), raw)
    return raw.cast(column.type)


#: The driver's text of numeric's special values -> PostgreSQL's own.
_NUMERIC_SPECIALS = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def _numeric_text(column: pa.Array) -> pa.Array:
    """An unconstrained ``numeric`` column (text) with the driver's ``nan``/``inf``/``-inf`` written as
    PostgreSQL writes them (``NaN``, ``Infinity``, ``-Infinity``); untouched when it holds none."""
    special = pc.is_in(column, value_set=pa.array(list(_NUMERIC_SPECIALS)))
    if not pc.any(special).as_py():
        return column
    for driver, postgres in _NUMERIC_SPECIALS.items():
        column = pc.if_else(pc.equal(column, driver), postgres, column)
    return column


def _convert(batch: pa.RecordBatch, schema: pa.Schema, where: str, checks: Sequence[str] = ()) -> pa.RecordBatch:
    """``batch`` as ``schema``: numerics cast, infinities mapped (module doc). ``checks`` names the list
    columns whose shape checks (:func:`_shape_check`) are ``batch``'s last columns, in order; raises
    ``ValueError`` naming ``where``, the column and the value when one holds an array a list cannot hold,
    or a value a decimal cannot hold."""
    if checks:
        shapes = batch.columns[len(batch.columns) - len(checks) :]
        batch = batch.select(range(len(batch.columns) - len(checks)))
        for name, shape in zip(checks, shapes, strict=True):
            if shape.null_count != len(shape):
                value = shape.filter(pc.is_valid(shape))[0].as_py()
                raise ValueError(
                    f"{where} column {name!r}: the array {value} has more than one dimension or does not start "
                    "at index 1, which a list cannot hold (it would land flattened or renumbered); read the table "
                    f"through a view selecting {name}::text, or declare the column with its dimensions (integer[][]: "
                    "it lands as its text)"
                )
    arrays = []
    for column, field in zip(batch.columns, schema, strict=True):
        if isinstance(column.type, pa.BaseExtensionType):
            column = column.storage
            if pa.types.is_string(column.type) and column.type == field.type:
                column = _numeric_text(column)
            elif column.type != field.type:
                try:
                    column = pc.cast(column, field.type)
                except pa.ArrowInvalid as exc:
                    problem = f"cannot read numeric as {field.type}: {exc}"
                    raise ValueError(f"{where} column {field.name!r}: {problem}") from exc
        elif (pa.types.is_timestamp(column.type) and column.type.unit == "us") or pa.types.is_date32(column.type):
            column = _infinities(column)
        arrays.append(column)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _only(plan: _Plan, columns: Sequence[str], where: str) -> _Plan:
    """``plan`` (:func:`_planned`) restricted to ``columns``, in their order; ``MissingColumnError``
    naming ``where`` and the columns it lacks."""
    planned = plan.schema
    missing = [c for c in columns if c not in planned.names]
    if missing:
        raise MissingColumnError(
            f"table {where}: column(s) {missing} are not among its columns ({', '.join(planned.names)})"
        )
    index = {name: i for i, name in enumerate(planned.names)}
    return _Plan(
        [plan.select[index[c]] for c in columns],
        pa.schema([planned.field(c) for c in columns]),
        {c: check for c, check in plan.checks.items() if c in columns},
    )


def _planned(session: "AdbcSession", target: sql.Composable) -> tuple[_Plan, dict[str, _Column]]:
    """The :func:`_plan` of ``target`` (from a ``LIMIT 0`` probe and the catalog), and its columns'
    types (:func:`_column_types`)."""
    with session.query(sql.SQL("SELECT * FROM {} LIMIT 0").format(target).as_string()) as reader:
        probe = reader.schema
    types = _column_types(session, target)
    nested = any(pa.types.is_nested(f.type) for f in probe)
    catalog = _type_catalog(session, target) if nested else {}
    return _plan(probe, types, catalog), types


def postgres_schema(uri: str, table: str, schema: str | None) -> pa.Schema:
    """The Arrow schema :func:`read_postgres` gives the table's rows (one probe, no rows read)."""
    from integration_platform.sources.sql.adbc_session import AdbcSession

    with AdbcSession(uri) as session:
        return _planned(session, sql.Identifier(schema, table) if schema else sql.Identifier(table))[0].schema


def read_postgres(
    uri: str,
    table: str,
    schema: str | None,
    row_filter: RowFilter | None,
    batch_bytes: int = 8 << 20,
    *,
    snapshot: str | None = None,
    relation: sql.Composable | None = None,
    extra: Sequence[sql.Composable] = (),
    extra_schema: pa.Schema | None = None,
    pages: tuple[int, int | None] | None = None,
    columns: Sequence[str] | None = None,
) -> pa.RecordBatchReader:
    """Stream ``SELECT * FROM schema.table [WHERE filter]`` as Arrow batches.

    ``uri`` is a libpq URI (``postgresql://user@host:port/db``). Batches are about
    ``batch_bytes`` of Arrow data each. The connection closes when the reader is exhausted
    or closed. Raises ``adbc_driver_manager.Error`` subclasses for connection or SQL errors.

    For change data capture: ``snapshot`` reads in the exported snapshot of that name (a
    repeatable-read transaction, ``SET TRANSACTION SNAPSHOT``); ``relation`` replaces the table in
    the FROM clause by rows typed exactly like the table's columns (a ``VALUES`` list with an alias),
    read through the same conversion so they get the table's Arrow types; ``extra`` are select-list
    items appended after the table's columns, of the Arrow types ``extra_schema`` gives (required with
    ``extra``: the reader's schema is known before the query runs).

    ``pages``: only the rows stored in heap pages ``[first, end)`` (``end`` ``None``: to the end of
    the table), a TID range scan (PostgreSQL 14+); :func:`read_postgres_parallel` reads a table
    as such ranges side by side.

    ``columns``: only these columns, in this order, each typed and rendered exactly as in a read of
    all of them (the keys delete detection compares with the landed rows' keys); raises
    :class:`~integration_platform.core.extract.MissingColumnError` naming the table and those it lacks.
    """
    # Imported here, not with the module: the driver is loaded when a PostgreSQL table is read
    from integration_platform.sources.sql.adbc_session import AdbcSession

    session = AdbcSession(uri)
    try:
        if snapshot is not None:
            session.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            session.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)).as_string())
        target = sql.Identifier(schema, table) if schema else sql.Identifier(table)
        plan, types = _planned(session, target)
        if columns is not None:
            plan = _only(plan, columns, target.as_string())
        out_schema = plan.schema
        if extra_schema is not None:
            out_schema = pa.schema([*out_schema, *extra_schema])
        checks = list(plan.checks)
        query = sql.SQL("SELECT {} FROM {}{}").format(
            sql.SQL(", ").join([*plan.select, *extra, *plan.checks.values()]),
            relation or target,
            _where(row_filter, pages, types),
        )
        source = session.query(query.as_string(), {"adbc.postgresql.batch_size_hint_bytes": str(batch_bytes)})
    except BaseException:
        session.close()
        raise

    where = target.as_string()

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            for batch in source:
                yield _convert(batch, out_schema, where, checks)
        finally:
            source.close()
            session.close()

    return pa.RecordBatchReader.from_batches(out_schema, batches())


#: A table smaller than this is read as one stream: two streams gained nothing measurable there.
PARALLEL_MIN_BYTES = 256 << 20
#: TID range scans (``ctid >= ... AND ctid < ...`` reading only those pages) came with PostgreSQL 14;
#: before, each range would scan the whole table.
TID_RANGE_SCAN_VERSION = 140000


def read_postgres_parallel(
    uri: str,
    table: str,
    schema: str | None,
    row_filter: RowFilter | None,
    readers: int,
    batch_bytes: int = 8 << 20,
    min_bytes: int = PARALLEL_MIN_BYTES,
) -> pa.RecordBatchReader:
    """:func:`read_postgres` as ``readers`` streams side by side, each over its own range of the
    table's heap pages (``ctid`` ranges, a TID range scan), all in one snapshot: a coordinating
    repeatable-read transaction exports it (``pg_export_snapshot``) and stays open until every
    reader has joined it, so the union is exactly the rows one ``SELECT`` would have read then, none
    twice (a row version lives in one page) and none missed (the last range is open-ended, so pages
    added after the table's size was read are covered). Batches arrive in no defined order; each
    reader's batches are ``batch_bytes / readers`` and at most ``readers`` of them wait, so memory
    stays about one stream's. A table under ``min_bytes`` of heap, a server before PostgreSQL 14 or
    ``readers`` below 2 get the single stream. Raises what :func:`read_postgres` raises, from the
    reader that failed, when the batch after the failure is taken.

    Measured (``benchmarks/sql_extract.py``, 2 cores, zstd Parquet landed): 10M rows 12.24 -> 10.73 s
    with two streams (median of 5); on 5M rows from 8% slower to 14% faster over three 3-run
    measurements; three streams were slower than one.

    Why our own code: no library splits a PostgreSQL COPY across connections in one snapshot (the
    extract is the platform's core path); the ranges and the queue are the whole of it.
    """
    import psycopg

    if readers < 2:  # no snapshot to share: the single stream as it is
        return read_postgres(uri, table, schema, row_filter, batch_bytes)
    target = sql.Identifier(schema, table) if schema else sql.Identifier(table)
    coordinator = psycopg.connect(uri)
    try:
        coordinator.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        snapshot = str(coordinator.execute("SELECT pg_export_snapshot()").fetchone()[0])  # type: ignore[index]
        version, pages, block = coordinator.execute(
            sql.SQL(
                "SELECT current_setting('server_version_num')::int, "
                "pg_relation_size({0}::regclass) / current_setting('block_size')::int, "
                "current_setting('block_size')::int"
            ).format(sql.Literal(target.as_string(coordinator)))
        ).fetchone()  # type: ignore[misc]
        if version < TID_RANGE_SCAN_VERSION or pages * block < min_bytes:
            return read_postgres(uri, table, schema, row_filter, batch_bytes)
        step = -(-int(pages) // readers)
        firsts = list(range(0, int(pages), step))
        ends: list[int | None] = [*firsts[1:], None]
        each = max(1 << 20, batch_bytes // len(firsts))
        opened: list[pa.RecordBatchReader] = []
        try:
            for pair in zip(firsts, ends, strict=True):
                opened.append(read_postgres(uri, table, schema, row_filter, each, snapshot=snapshot, pages=pair))
        except BaseException:
            # An unread reader's generator never ran, so its ``finally`` will not: dropping the reader
            # here (not when the traceback holding this frame goes) closes its session (AdbcSession).
            opened.clear()
            raise
    finally:
        coordinator.close()  # every reader has set its snapshot (each opened its transaction above)
    return _merged(opened)


def _merged(readers: Sequence[pa.RecordBatchReader]) -> pa.RecordBatchReader:
    """The batches of ``readers``, each drained by a thread of its own into one bounded queue."""
    import queue
    import threading

    done = object()
    pending: queue.Queue[object] = queue.Queue(maxsize=len(readers))
    stop = threading.Event()

    def drain(reader: pa.RecordBatchReader) -> None:
        try:
            for batch in reader:
                while not stop.is_set():
                    try:
                        pending.put(batch, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            pending.put(done)
        except BaseException as exc:  # handed to the consumer
            pending.put(exc)
        finally:
            reader.close()

    threads = [threading.Thread(target=drain, args=(r,), daemon=True, name="pg-range") for r in readers]

    def batches() -> Iterator[pa.RecordBatch]:
        left = len(threads)
        try:
            # Started with the first batch asked for, not when the reader is made: a reader dropped unread
            # (a key column renamed at the source fails the extract first) never runs this generator, and
            # threads started before kept both ranges' sessions, snapshot and locks until the process ended.
            for thread in threads:
                thread.start()
            while left:
                item = pending.get()
                if item is done:
                    left -= 1
                elif isinstance(item, BaseException):
                    raise item
                else:
                    yield item
        finally:
            stop.set()
            while any(t.is_alive() for t in threads if t.ident is not None):
                try:
                    pending.get(timeout=0.1)
                except queue.Empty:
                    pass

    return pa.RecordBatchReader.from_batches(readers[0].schema, batches())
