"""PostgreSQL -> Arrow through ADBC (binary COPY under the hood), the fastest bounded-memory
reader measured on this stack (see ``benchmarks/sql_extract.py`` and DESIGN.md).

The ADBC PostgreSQL driver streams ``COPY (query) TO STDOUT (FORMAT binary)`` straight into
Arrow record batches. Two gaps are closed here:

- ``numeric`` arrives as an opaque string column (arbitrary precision), and parsing that
  text was the largest single cost of an extract. Using the column's type modifier
  (PostgreSQL encodes ``numeric(p, s)`` as ``((p << 16) | s) + 4``; see ``numeric.c``,
  ``make_numeric_typmod``), ``numeric(p <= 18, s)`` is selected as the exact integer
  ``value * 10^s`` in binary ``int8`` and reinterpreted as ``decimal128(p, s)``; wider
  ones are cast from the text. An unconstrained ``numeric`` stays text: no digit is lost.
- types the driver does not decode (``tsvector``, geometric types, ...) arrive as opaque
  binary; they are selected as ``col::text`` instead.

The query is composed with ``psycopg.sql`` (identifiers and literals quoted by psycopg), so
a table name or a cursor value cannot inject SQL. Bound parameters would force the driver
off its COPY path, which is why literals are rendered rather than bound.
"""

from collections.abc import Iterator

import adbc_driver_postgresql.dbapi as adbc
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql

from integration_platform.resources.row_filter import RowFilter

NUMERIC_TYPMOD_OFFSET = 4
#: numeric(p, s) with p up to 18 fits an int64 once scaled by 10^s (10^18 < 2^63).
SCALED_INT_MAX_PRECISION = 18


def _scaled_int64_to_decimal(column: pa.Array, kind: pa.Decimal128Type) -> pa.Array:
    """Reinterpret int64 values ``v`` (= value * 10^scale) as decimal128 ``v / 10^scale``.

    decimal128 stores a 16-byte little-endian two's-complement integer per value (Arrow
    columnar format spec), so each value is the int64 sign-extended to 128 bits.
    """
    if column.offset:
        column = pa.concat_arrays([column])  # materialise the slice at offset 0
    validity, data = column.buffers()
    low = np.frombuffer(data, dtype=np.int64, count=len(column))
    wide = np.empty((len(column), 2), dtype=np.int64)
    wide[:, 0] = low
    wide[:, 1] = low >> 63
    return pa.Array.from_buffers(kind, len(column), [validity, pa.py_buffer(wide)], null_count=column.null_count)


def _numeric_type(field: pa.Field) -> pa.DataType:
    """decimal128/256 for ``numeric(p, s)``, string for an unconstrained ``numeric``."""
    typmod = int((field.metadata or {}).get(b"POSTGRESQL:typmod", b"-1"))
    if typmod < NUMERIC_TYPMOD_OFFSET:
        return pa.string()
    packed = typmod - NUMERIC_TYPMOD_OFFSET
    precision, scale = (packed >> 16) & 0xFFFF, packed & 0xFFFF
    if scale > precision or scale > 1000:  # negative scale (PG 15+) is stored wrapped: keep text
        return pa.string()
    return pa.decimal128(precision, scale) if precision <= 38 else pa.decimal256(precision, scale)


def _is_opaque(field: pa.Field) -> bool:
    return isinstance(field.type, pa.BaseExtensionType) and field.type.extension_name == "arrow.opaque"


def _plan(probe: pa.Schema) -> tuple[list[sql.Composable], pa.Schema]:
    """Select list and output schema from the schema of a ``LIMIT 0`` probe."""
    select: list[sql.Composable] = []
    fields: list[pa.Field] = []
    for field in probe:
        ident = sql.Identifier(field.name)
        if _is_opaque(field) and field.type.type_name == "numeric":
            kind = _numeric_type(field)
            if pa.types.is_decimal128(kind) and kind.precision <= SCALED_INT_MAX_PRECISION:
                # numeric(p <= 18, s) travels as the exact integer value * 10^s (binary int8);
                # _convert reinterprets it as decimal128(p, s) without parsing text.
                factor = sql.Literal(10**kind.scale)
                select.append(sql.SQL("({} * {})::int8 AS {}").format(ident, factor, ident))
            else:
                select.append(ident)
            fields.append(pa.field(field.name, kind))
        elif _is_opaque(field):
            select.append(sql.SQL("{}::text AS {}").format(ident, ident))
            fields.append(pa.field(field.name, pa.string()))
        else:
            select.append(ident)
            fields.append(pa.field(field.name, field.type))
    return select, pa.schema(fields)


def _where(row_filter: RowFilter | None) -> sql.Composable:
    if row_filter is None:
        return sql.SQL("")
    parts = []
    column = sql.Identifier(row_filter.column)
    if row_filter.lower is not None:
        parts.append(sql.SQL("{} >= {}").format(column, sql.Literal(row_filter.lower)))
    if row_filter.upper is not None:
        parts.append(sql.SQL("{} < {}").format(column, sql.Literal(row_filter.upper)))
    return sql.SQL(" WHERE ") + sql.SQL(" AND ").join(parts) if parts else sql.SQL("")


def _convert(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    arrays = []
    for column, field in zip(batch.columns, schema, strict=True):
        if pa.types.is_int64(column.type) and pa.types.is_decimal128(field.type):
            arrays.append(_scaled_int64_to_decimal(column, field.type))
            continue
        if isinstance(column.type, pa.BaseExtensionType):
            column = column.storage
            if column.type != field.type:
                try:
                    column = pc.cast(column, field.type)
                except pa.ArrowInvalid as exc:
                    raise ValueError(f"column {field.name!r}: cannot read numeric as {field.type}: {exc}") from exc
        arrays.append(column)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def read_postgres(
    uri: str, table: str, schema: str | None, row_filter: RowFilter | None, batch_bytes: int = 8 << 20
) -> pa.RecordBatchReader:
    """Stream ``SELECT * FROM schema.table [WHERE filter]`` as Arrow batches.

    ``uri`` is a libpq URI (``postgresql://user@host:port/db``). Batches are about
    ``batch_bytes`` of Arrow data each. The connection closes when the reader is exhausted
    or closed. Raises ``adbc_driver_manager.Error`` subclasses for connection or SQL errors.
    """
    conn = adbc.connect(uri)
    try:
        cur = conn.cursor()
        cur.adbc_statement.set_options(**{"adbc.postgresql.batch_size_hint_bytes": str(batch_bytes)})
        target = sql.Identifier(schema, table) if schema else sql.Identifier(table)
        cur.execute(sql.SQL("SELECT * FROM {} LIMIT 0").format(target).as_string())
        select, out_schema = _plan(cur.fetch_record_batch().schema)
        query = sql.SQL("SELECT {} FROM {}{}").format(sql.SQL(", ").join(select), target, _where(row_filter))
        cur.execute(query.as_string())
        source = cur.fetch_record_batch()
    except BaseException:
        conn.close()
        raise

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            for batch in source:
                yield _convert(batch, out_schema)
        finally:
            source.close()
            cur.close()
            conn.close()

    return pa.RecordBatchReader.from_batches(out_schema, batches())
