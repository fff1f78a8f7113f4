"""SqlDatabaseResource: any SQLAlchemy-reachable database, read as Arrow record batches.

SQLAlchemy is imported by the methods that reach the database, not with this module: the
definitions of a SQL source load without it (0.09 s of a code location's 1.0 s load).
"""

import fnmatch
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, unquote, urlencode

import dagster as dg
import pyarrow as pa
from pydantic import Field

from integration_platform.core.extract import MissingColumnError
from integration_platform.core.row_filter import RowFilter, TimeKind, bound_for

if TYPE_CHECKING:
    import sqlalchemy as sa

    from integration_platform.sources.sql.mariadb_cdc import MariaDbChangeLog
    from integration_platform.sources.sql.postgres_cdc import PostgresChangeLog
    from integration_platform.sources.sql.sa_arrow import TypedColumn


#: A SQLAlchemy URL's parts as SQLAlchemy 2 splits them (``sqlalchemy.engine.url.make_url``): the user ends
#: at the first ``:`` or ``/``, the password at the first ``@``, then a host (an IPv6 one in brackets), a
#: port, ``/database`` and ``?query``. A password may hold a raw ``/`` or ``%`` there, which a libpq URI
#: must have percent-encoded.
_SQLALCHEMY_URL = re.compile(
    r"(?P<scheme>[\w+]+)://"
    r"(?:(?P<user>[^:/]*)(?::(?P<password>[^@]*))?@)?"
    r"(?P<host>\[[^/?]+\]|[^/:?]+)?(?::(?P<port>[^/?]*))?"
    r"(?:/(?P<database>[^?]*))?"
    r"(?:\?(?P<query>.*))?",
    re.DOTALL,
)
_URL_SHAPE = "a SQL database url must look like dialect+driver://user:password@host:port/database"


def _url_parts(url: str) -> "re.Match[str]":
    """``url``'s parts (:data:`_SQLALCHEMY_URL`). Raises ``ValueError`` naming the shape a URL must have,
    never the URL (it holds the password)."""
    parts = _SQLALCHEMY_URL.fullmatch(url)
    if parts is None or not (parts["port"] or "0").isdigit():
        raise ValueError(_URL_SHAPE)
    return parts


def _encoded(text: str) -> str:
    """A user, password or database name as a libpq URI writes it: decoded as SQLAlchemy decodes it
    (``%xx`` escapes; a ``%`` before no hex digits stays), then every reserved character percent-encoded."""
    return quote(unquote(text), safe="")


@dataclass(frozen=True)
class TableInfo:
    """What reflection tells about one table: its columns (in order), primary key and the comments the
    database keeps on the table and its columns (``COMMENT ON``; none in SQLite)."""

    name: str
    columns: tuple[str, ...]
    primary_key: tuple[str, ...]
    comment: str | None = None
    column_comments: tuple[tuple[str, str], ...] = ()


class SqlDatabaseResource(dg.ConfigurableResource):
    """A relational database reached through SQLAlchemy (PostgreSQL, MySQL/MariaDB, SQLite, ...).

    ``url`` is a SQLAlchemy URL (``dialect+driver://user:password@host:port/database``),
    normally ``dg.EnvVar("...")`` so the password never sits in code or in the UI.
    PostgreSQL tables are read through ADBC's binary COPY (a full read of a large table as
    ``parallel_readers`` page ranges in one snapshot); every other dialect through a
    server-side cursor (``stream_results``) fetched ``batch_rows`` rows at a time straight
    into Arrow. Memory per read: about one batch.

    Errors: ``sqlalchemy.exc.NoSuchTableError`` for a missing table,
    ``sqlalchemy.exc.OperationalError`` (or the ADBC driver's ``OperationalError``) when the
    server cannot be reached; messages never contain the password.
    """

    url: str = Field(description="SQLAlchemy URL; use an EnvVar for anything with a password.")
    batch_rows: int = Field(default=50_000, description="Rows per Arrow batch on the generic path.")
    parallel_readers: int = Field(
        default=2,
        description="PostgreSQL: streams a full read of a table of 256 MB or more uses side by side, "
        "each over its own range of the table's pages, in one snapshot (1: one stream).",
    )

    def engine(self) -> "sa.Engine":
        """A pooled engine per URL, shared by every resource instance in the process."""
        from integration_platform.sources.sql.sa_arrow import engine_for

        return engine_for(self.url)

    def dispose(self) -> None:
        """Close the pooled connections of this URL and forget its engine (the next use opens a new
        one): a definitions load that discovered tables keeps no connection open."""
        from integration_platform.sources.sql.sa_arrow import dispose_engine

        dispose_engine(self.url)

    @property
    def dialect(self) -> str:
        """The URL's backend name (``postgresql``, ``mysql``, ``mariadb``, ``sqlite``, ...): its scheme up to a
        ``+driver``, as SQLAlchemy's ``URL.get_backend_name`` reads it."""
        return _url_parts(self.url)["scheme"].partition("+")[0]

    def list_tables(
        self, schema: str | None = None, include: Sequence[str] = ("*",), exclude: Sequence[str] = ()
    ) -> list[str]:
        """Base tables of ``schema`` whose names match an ``include`` glob and no ``exclude`` glob.

        PostgreSQL partitions of a partitioned table are left out (the parent is listed), in ``schema`` or,
        without one, the connection's own schema (``current_schema()``, where its ``search_path`` points).
        """
        import sqlalchemy as sa

        inspector = sa.inspect(self.engine())
        names = inspector.get_table_names(schema=schema)
        if self.dialect == "postgresql":
            with self.engine().connect() as conn:
                children = set(
                    conn.execute(
                        sa.text(
                            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                            "JOIN pg_namespace n ON n.oid = c.relnamespace "
                            "WHERE n.nspname = coalesce(CAST(:schema AS text), current_schema())"
                        ),
                        {"schema": schema},
                    ).scalars()
                )
            names = [n for n in names if n not in children]
        return sorted(
            n
            for n in names
            if any(fnmatch.fnmatchcase(n, p) for p in include) and not any(fnmatch.fnmatchcase(n, p) for p in exclude)
        )

    def count_rows(self, table: str, schema: str | None = None) -> int:
        """``SELECT COUNT(*)`` of one table (the name quoted by SQLAlchemy, never pasted into SQL).
        Raises ``NoSuchTableError`` or the driver's error as :meth:`read` does."""
        import sqlalchemy as sa

        reflected = sa.Table(table, sa.MetaData(), schema=schema)
        with self.engine().connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(reflected)).scalar_one())

    def describe(self, table: str, schema: str | None = None) -> TableInfo:
        """Columns, primary key and comments of one table. Raises ``NoSuchTableError`` when missing."""
        from integration_platform.sources.sql.sa_arrow import reflect

        reflected = reflect(self.engine(), table, schema)
        return TableInfo(
            name=table,
            columns=tuple(c.name for c in reflected.columns),
            primary_key=tuple(c.name for c in reflected.primary_key.columns),
            comment=reflected.comment or None,
            column_comments=tuple((c.name, c.comment) for c in reflected.columns if c.comment),
        )

    def libpq_uri(self) -> str:
        """The URL as a libpq URI (``postgresql://...``, password included) for PostgreSQL's own clients:
        split as SQLAlchemy splits it (:data:`_SQLALCHEMY_URL`), then the user, password and database
        percent-encoded as a libpq URI needs them (PostgreSQL's "Connection URIs"), the host's ``%`` too,
        and the query decoded as SQLAlchemy decodes it (``+`` a space) and encoded again. So libpq connects
        where SQLAlchemy would, a password with a raw ``/``, ``%`` or space included. Not rendered through
        SQLAlchemy's ``URL``: importing SQLAlchemy cost every run that reads a PostgreSQL table 0.11-0.17 s,
        and nothing else of it is used on that path. Raises ``ValueError`` for a URL of another shape,
        without quoting it."""
        parts = _url_parts(self.url)
        auth = ""
        if parts["user"] is not None:
            password = "" if parts["password"] is None else ":" + _encoded(parts["password"])
            auth = _encoded(parts["user"]) + password + "@"
        host = quote(parts["host"] or "", safe="[]:")  # an IPv6 zone id's % (fe80::1%eth0) encoded
        uri = f"postgresql://{auth}{host}" + (f":{parts['port']}" if parts["port"] else "")
        uri += "" if parts["database"] is None else "/" + _encoded(parts["database"])
        if parts["query"] is None:
            return uri
        # decoded as SQLAlchemy decodes a query (``+`` a space), written as libpq decodes one
        return uri + "?" + urlencode(parse_qsl(parts["query"], keep_blank_values=True), quote_via=quote)

    def change_log(
        self, table: str, schema: str | None, prefix: str, publication: str | None, primary_key: Sequence[str] = ()
    ) -> "PostgresChangeLog | MariaDbChangeLog":
        """The table's change log: a replication slot (:class:`PostgresChangeLog`; ``prefix`` names its
        slots, ``publication`` an existing publication) or the binlog (:class:`MariaDbChangeLog`);
        ``primary_key``: the stream's key columns (an update changing them lands as a delete of the old
        key and the update). Raises ``ValueError`` for a database without one the platform reads."""
        if self.dialect == "postgresql":
            from integration_platform.sources.sql.postgres_cdc import PostgresChangeLog  # psycopg: only here

            return PostgresChangeLog(self.libpq_uri(), table, schema, prefix, publication, primary_key)
        from integration_platform.resources.sql_sessions import is_mysql  # SQLAlchemy: only here

        if is_mysql(self.dialect):
            from integration_platform.sources.sql.mariadb_cdc import MariaDbChangeLog  # it imports this module

            return MariaDbChangeLog(self, table, schema, primary_key)
        raise ValueError(
            f"table {table}: change data capture (cdc) needs PostgreSQL or MySQL/MariaDB, not {self.dialect}"
        )

    def read(self, table: str, schema: str | None = None, row_filter: RowFilter | None = None) -> pa.RecordBatchReader:
        """Stream the table's rows (all columns) as an Arrow ``RecordBatchReader``.

        ``row_filter`` is pushed into the query's WHERE clause with bound or driver-quoted
        values; a datetime bound (a time partition's UTC-aware window) is compared as the column's
        kind of value: a date, a timestamp without time zone (the bound's wall-clock time) or an
        instant (:func:`~integration_platform.core.row_filter.bound_for`). The reader's schema is fixed
        before the first row is read.
        """
        if self.dialect != "postgresql":
            return self._read_generic(table, schema, row_filter)
        # psycopg is imported when a PostgreSQL table is read, not when the definitions load
        from integration_platform.sources.sql.postgres_arrow import read_postgres, read_postgres_parallel

        if row_filter is None:  # a filter may use an index: one stream
            return read_postgres_parallel(self.libpq_uri(), table, schema, None, self.parallel_readers)
        return read_postgres(self.libpq_uri(), table, schema, row_filter)

    def read_keys(self, table: str, schema: str | None, keys: Sequence[str]) -> Iterator[pa.RecordBatch]:
        """Every value of the ``keys`` columns of the table (batches of those columns only, in ``keys``'
        order), read by the very reader :meth:`read` lands the rows with, restricted to them: PostgreSQL
        through ADBC (batches of about 8 MB), other dialects through SQLAlchemy's server-side cursor
        (``batch_rows`` rows); memory is one batch. So a key compares with the landed rows' keys
        exactly: read through SQLAlchemy's generic mapping instead, PostgreSQL's ``inet`` lost its
        ``/32``, ``timetz`` its zone, an unconstrained ``numeric`` came as ``1E-7``, ``money`` as
        ``$1.25``, MariaDB's ``TIME`` as ``1 day, 1:00:00``, and delete detection tombstoned live rows.
        Raises ``MissingColumnError`` naming the keys the table lacks."""
        if self.dialect == "postgresql":
            from integration_platform.sources.sql.postgres_arrow import read_postgres

            reader = read_postgres(self.libpq_uri(), table, schema, None, columns=keys)
        else:
            reader = self._read_generic(table, schema, None, columns=keys)
        with reader:
            yield from reader

    def typed_columns(self, table: str, schema: str | None) -> "list[TypedColumn]":
        """``(name, Arrow type, converter)`` of each column of the table as the generic reader lands it
        (:func:`~integration_platform.sources.sql.sa_arrow.arrow_type`), for values read another way (a
        binlog) to land with the same types."""
        from integration_platform.sources.sql.sa_arrow import arrow_type, reflect

        reflected = reflect(self.engine(), table, schema)
        return [(c.name, *arrow_type(c.type)) for c in reflected.columns]

    def _read_generic(
        self,
        table: str,
        schema: str | None,
        row_filter: RowFilter | None,
        connection: "sa.Connection | None" = None,
        columns: Sequence[str] | None = None,
    ) -> pa.RecordBatchReader:
        """The generic reader; on ``connection`` when given (a transaction the caller opened, such as a
        consistent snapshot), else on a connection of its own. ``columns``: only these, in this order
        (``MissingColumnError`` naming those the table lacks)."""
        import sqlalchemy as sa
        from sqlalchemy.dialects import mysql

        from integration_platform.sources.sql.sa_arrow import Geometry, arrow_batch, arrow_type, reflect

        engine = self.engine()
        reflected = reflect(engine, table, schema)
        missing = [c for c in columns or () if c not in reflected.c]
        if missing:
            raise MissingColumnError(
                f"table {table}: column(s) {missing} are not among its columns ({', '.join(reflected.c.keys())})"
            )
        chosen = list(reflected.columns) if columns is None else [reflected.c[c] for c in columns]
        typed = [(c.name, *arrow_type(c.type)) for c in chosen]
        arrow_schema = pa.schema([(name, kind) for name, kind, _ in typed])
        selected = [
            sa.func.ST_AsBinary(c, type_=sa.LargeBinary).label(c.name)
            if isinstance(c.type, Geometry)
            else sa.cast(c, sa.String).label(c.name)
            if isinstance(c.type, mysql.TIME)
            # a FLOAT goes over the wire as text of 6 significant digits (16777216 as 16777200, 123456.7 as
            # 123457); as a DOUBLE it is the stored single-precision value exactly, as the binlog gives it
            else sa.cast(c, mysql.DOUBLE(asdecimal=False)).label(c.name)
            if isinstance(c.type, mysql.FLOAT)
            else c
            for c in chosen
        ]
        statement = sa.select(*selected).select_from(reflected)
        if row_filter is not None:
            if row_filter.column not in reflected.c:
                raise MissingColumnError(
                    f"table {table}: column {row_filter.column!r} to filter on is not among its columns "
                    f"({', '.join(reflected.c.keys())}); nothing was landed"
                )
            column = reflected.c[row_filter.column]
            kind = _time_kind(column.type)
            left, bound = compared(engine.dialect.name, column)
            bounds = []
            if row_filter.lower is not None:
                bounds.append(left >= bound(bound_for(row_filter.lower, kind)))
            if row_filter.upper is not None:
                bounds.append(left < bound(bound_for(row_filter.upper, kind)))
            if bounds:
                within = sa.and_(*bounds)
                # left, not the column: SQLite's julianday() is NULL for a time it cannot read, which the
                # comparison never matches either
                statement = statement.where(sa.or_(within, left.is_(None)) if row_filter.nulls else within)
        batch_rows = self.batch_rows

        def batches() -> Iterator[pa.RecordBatch]:
            with ExitStack() as stack:
                conn = connection or stack.enter_context(engine.connect())
                result = conn.execution_options(stream_results=True, max_row_buffer=batch_rows).execute(statement)
                for rows in result.partitions(batch_rows):
                    yield arrow_batch(table, typed, list(zip(*rows, strict=True)))

        return pa.RecordBatchReader.from_batches(arrow_schema, batches())


def compared(dialect: str, column: Any) -> tuple[Any, Callable[[Any], Any]]:
    """``column`` as a row filter compares it, and how a bound (a Python value) is put beside it.

    SQLite keeps times as text in whatever form was written (``'2024-01-01 10:00:00'``, as
    ``CURRENT_TIMESTAMP`` writes), and SQLAlchemy binds ``'2024-01-01 10:00:00.000000'``, which sorts
    after it: a row sharing the mark's time was never read again. There a date-time column is
    compared as julian days (SQLite's ``julianday()``; only milliseconds count, so times that differ
    below that compare equal and are re-read, then dropped as already landed); no index on the column
    is used then.

    A MariaDB or MySQL ``FLOAT`` (single precision) is compared with a bound that is the largest
    single-precision value not above it (as a double), which the stored values equal to it pass: a FLOAT is
    now selected as the exact double of its stored value, but the marks of landings before were its text
    (``1.3`` for 1.2999999523...), above the stored value, so rows sharing the mark's value were never read
    again. Elsewhere the column and the bound as they are."""
    import sqlalchemy as sa
    from sqlalchemy.dialects import mysql

    if dialect == "sqlite" and isinstance(column.type, sa.DateTime):
        return sa.func.julianday(column), lambda value: sa.func.julianday(sa.literal(value, column.type))
    if isinstance(column.type, mysql.FLOAT):
        return column, _single_precision_floor
    return column, lambda value: value


def _single_precision_floor(value: Any) -> Any:
    """``value`` (a number) as the largest single-precision float not above it, as a Python float; other
    values as they are."""
    import numpy as np

    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return value
    single = np.float32(value)
    if float(single) > float(value):
        single = np.nextafter(single, np.float32(-np.inf))
    return float(single)


def _time_kind(sa_type: "sa.types.TypeEngine[object]") -> TimeKind | None:
    """What a :class:`RowFilter` bound becomes for a column of ``sa_type``
    (:func:`~integration_platform.core.row_filter.bound_for`): a time partition's UTC-aware bounds bound
    as they were against a ``DATE`` column of SQLite were rendered as ``'2024-01-01 00:00:00.000000'``,
    a text after the date ``'2024-01-01'``, so each day's rows landed in the partition before."""
    import sqlalchemy as sa

    if isinstance(sa_type, sa.DateTime):
        return "timestamptz" if sa_type.timezone else "timestamp"
    if isinstance(sa_type, sa.Date):
        return "date"
    return None
