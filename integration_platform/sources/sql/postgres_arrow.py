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
  digit is lost. Casting on the client is cheaper than any server-side rewrite measured
  (``(col * 10^s)::int8`` cost the backend 20% more CPU than the plain COPY).
- types the driver does not decode (``tsvector``, geometric types, ...) arrive as opaque
  binary; they are selected as ``col::text`` instead.

The query is composed with ``psycopg.sql`` (identifiers and literals quoted by psycopg), so
a table name or a cursor value cannot inject SQL. Bound parameters would force the driver
off its COPY path, which is why literals are rendered rather than bound.
"""

from collections.abc import Iterator

import adbc_driver_postgresql.dbapi as adbc
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql

from integration_platform.core.row_filter import RowFilter

NUMERIC_TYPMOD_OFFSET = 4
DECIMAL256_MAX_PRECISION = 76


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


def _plan(probe: pa.Schema, typmods: dict[str, int]) -> tuple[list[sql.Composable], pa.Schema]:
    """Select list and output schema from the schema of a ``LIMIT 0`` probe.

    ``typmods`` maps each ``numeric`` column to its ``atttypmod`` (-1 when unconstrained).
    """
    select: list[sql.Composable] = []
    fields: list[pa.Field] = []
    for field in probe:
        ident = sql.Identifier(field.name)
        if _is_numeric(field):
            select.append(ident)
            fields.append(pa.field(field.name, _numeric_type(typmods.get(field.name, -1))))
        elif _is_opaque(field):
            select.append(sql.SQL("{}::text AS {}").format(ident, ident))
            fields.append(pa.field(field.name, pa.string()))
        else:
            select.append(ident)
            fields.append(pa.field(field.name, field.type))
    return select, pa.schema(fields)


def _numeric_typmods(cur: adbc.Cursor, target: sql.Composable) -> dict[str, int]:
    """Type modifier of every ``numeric`` column of the table or view ``target``.

    For a column of a domain over ``numeric`` (which the driver also reports as numeric) the
    precision and scale live on the domain type (``pg_type.typtypmod``), not the column.
    """
    query = sql.SQL(
        "SELECT a.attname::text AS name,"
        " CASE WHEN t.typtype = 'd' THEN t.typtypmod ELSE a.atttypmod END AS typmod"
        " FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid"
        " WHERE a.attrelid = {}::regclass AND a.attnum > 0 AND NOT a.attisdropped"
        " AND (a.atttypid = 'numeric'::regtype OR (t.typtype = 'd' AND t.typbasetype = 'numeric'::regtype))"
    ).format(sql.Literal(target.as_string()))
    cur.execute(query.as_string())
    rows = cur.fetch_arrow_table().to_pylist()
    return {row["name"]: int(row["typmod"]) for row in rows}


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


def _convert(batch: pa.RecordBatch, schema: pa.Schema, where: str) -> pa.RecordBatch:
    arrays = []
    for column, field in zip(batch.columns, schema, strict=True):
        if isinstance(column.type, pa.BaseExtensionType):
            column = column.storage
            if column.type != field.type:
                try:
                    column = pc.cast(column, field.type)
                except pa.ArrowInvalid as exc:
                    problem = f"cannot read numeric as {field.type}: {exc}"
                    raise ValueError(f"{where} column {field.name!r}: {problem}") from exc
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
        probe = cur.fetch_record_batch().schema
        typmods = _numeric_typmods(cur, target) if any(_is_numeric(f) for f in probe) else {}
        select, out_schema = _plan(probe, typmods)
        query = sql.SQL("SELECT {} FROM {}{}").format(sql.SQL(", ").join(select), target, _where(row_filter))
        cur.execute(query.as_string())
        source = cur.fetch_record_batch()
    except BaseException:
        conn.close()
        raise

    where = target.as_string()

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            for batch in source:
                yield _convert(batch, out_schema, where)
        finally:
            source.close()
            cur.close()
            conn.close()

    return pa.RecordBatchReader.from_batches(out_schema, batches())
