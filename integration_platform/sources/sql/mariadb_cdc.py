"""MariaDB / MySQL change data capture: the row-based binlog read as a change log.

The pieces, each from the server or a well-kept client:

- **snapshot**: ``START TRANSACTION WITH CONSISTENT SNAPSHOT`` and, in the same transaction,
  MariaDB's ``binlog_snapshot_file`` / ``binlog_snapshot_position`` status (the binlog position
  exactly consistent with the snapshot, without ``FLUSH TABLES WITH READ LOCK``; MariaDB docs,
  "Enhancements for START TRANSACTION WITH CONSISTENT SNAPSHOT"); the table is read on that
  connection by the SQL source's generic reader.
- **changes**: python-mysql-replication's ``BinLogStreamReader`` (non-blocking: it stops at the end
  of the binlog) from the position of the newest landing, row events of this table only, grouped
  into transactions by their ``Xid`` (commit) events. The position is the binlog file and the
  offset after a commit (``binlog.000003:4711``); as an ordering integer, the file's number in the
  high 32 bits and the offset in the low.
- **types**: each value goes through the generic reader's own converters
  (:func:`~integration_platform.sources.sql.sa_arrow.arrow_type`), so a change row has the snapshot's
  Arrow types; a ``TIME`` (a ``timedelta`` from the binlog) is written as MySQL's text
  (``-838:59:59``), as the snapshot selects it; a binary column's value gets back the trailing zero
  bytes of a ``BINARY(n)`` and the bytes of an empty value the binlog reader gives as text
  (:func:`binary_value`); a ``BIT`` (a string of bits from the binlog) is written as its integer's
  text (``5``), as the snapshot lands it (:func:`bit_value`).

Statements that change a table's rows without row events fail the run naming the table and
``full_refresh``: the binlog's ``QueryEvent`` of a ``TRUNCATE``, ``DROP``, ``RENAME``, ``CREATE OR
REPLACE``, renaming ``ALTER`` or partition-emptying ``ALTER`` of it (:func:`statement_tables`).
InnoDB's cascaded foreign-key changes are in no event at all: a table that is the child of a
cascading foreign key is refused.

There is no slot: the position lives only in the lake (each landing's manifest), so confirming is
a no-op and a binlog purged past it (``expire_logs_days``) makes :meth:`MariaDbChangeLog.resume`
answer False: the next run takes a new snapshot. Requires ``binlog_format=ROW``,
``binlog_row_image=FULL`` and ``binlog_row_metadata=FULL`` (column names in the table map, so
columns added later decode by name) and a user with ``REPLICATION SLAVE`` and
``REPLICATION CLIENT`` (``BINLOG MONITOR`` on MariaDB 10.5+).
"""

import datetime as dt
import hashlib
import random
import re
import time
import uuid
from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pyarrow as pa
import sqlalchemy as sa

from integration_platform.core.changes import (
    CHANGE_SCHEMA,
    ChangeBatch,
    ChangeCaptureError,
    ChangeLimits,
    refuse_renamed_columns,
)
from integration_platform.core.streams import CHANGE_COLUMNS
from integration_platform.sources.sql.database import SqlDatabaseResource
from integration_platform.sources.sql.sa_arrow import TypedColumn, arrow_batch

#: Binlog settings change capture needs, as the server must report them.
REQUIRED = {"log_bin": "ON", "binlog_format": "ROW", "binlog_row_image": "FULL", "binlog_row_metadata": "FULL"}


def position_int(position: str) -> int:
    """``binlog.000003:4711`` as one ordering integer (file number << 32 | offset); raises ``ValueError``."""
    name, _, offset = position.rpartition(":")
    return (int(name.rsplit(".", 1)[1]) << 32) | int(offset)


def time_text(value: Any) -> Any:
    """A binlog ``TIME`` (``timedelta``) as MySQL writes it (``-838:59:59``, ``25:00:00.5``); other
    values as they are."""
    if not isinstance(value, dt.timedelta):
        return value
    micros = abs(value) // dt.timedelta(microseconds=1)
    seconds, fraction = divmod(micros, 1_000_000)
    text = f"{'-' if value < dt.timedelta(0) else ''}{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
    return text + (f".{fraction:06d}" if fraction else "")


#: A table name in a statement: a backquoted (```` doubled inside) or plain identifier, maybe ``schema.``-qualified.
_NAME = r"(?:`(?:[^`]|``)+`|[\w$]+)"
_QUALIFIED = re.compile(rf"({_NAME})(?:\s*\.\s*({_NAME}))?")
#: Statements (binlog ``QueryEvent``) that replace a table's rows without row events: the verb, the rest.
_DDL = re.compile(
    r"^\s*(?:/\*.*?\*/\s*)*(TRUNCATE(?:\s+TABLE)?|DROP\s+(?:TEMPORARY\s+)?TABLES?(?:\s+IF\s+EXISTS)?|"
    r"CREATE\s+OR\s+REPLACE\s+TABLE|RENAME\s+TABLES?|ALTER\s+(?:ONLINE\s+)?(?:IGNORE\s+)?TABLE(?:\s+IF\s+EXISTS)?)"
    r"\s+(.*)$",
    re.IGNORECASE | re.DOTALL,
)
#: What :func:`statement_tables` reads past: a backquoted name (kept), a string literal (emptied), a
#: comment (dropped; an executable ``/*!NNNNN ... */`` or ``/*M!NNNNN ... */`` one is read as its text).
_LEXEME = re.compile(
    r"(?P<name>`(?:[^`]|``)*`)|(?P<string>'(?:[^'\\]|\\.|'')*'|\"(?:[^\"\\]|\\.|\"\")*\")"
    r"|/\*M?!\d*(?P<executable>.*?)\*/|(?P<comment>/\*.*?\*/|--(?:\s[^\n]*)?$|#[^\n]*$)",
    re.DOTALL | re.MULTILINE,
)
#: ``ALTER TABLE ... {TRUNCATE|DROP|EXCHANGE|CONVERT} PARTITION``, ``CONVERT TABLE ... TO PARTITION`` and
#: ``IMPORT ... TABLESPACE``: rows removed, swapped in or moved without row events; the other table of
#: an ``EXCHANGE PARTITION p WITH TABLE t2``, ``CONVERT PARTITION p TO TABLE t2`` or ``CONVERT TABLE t2``.
_ALTER_PARTITION = re.compile(
    rf"\b(?:(?:TRUNCATE|DROP)\s+PARTITION\b|EXCHANGE\s+PARTITION\s+{_NAME}\s+WITH\s+TABLE\s+"
    rf"({_NAME}(?:\s*\.\s*{_NAME})?)|CONVERT\s+PARTITION\s+{_NAME}\s+TO\s+TABLE\s+({_NAME}(?:\s*\.\s*{_NAME})?)"
    rf"|CONVERT\s+TABLE\s+({_NAME}(?:\s*\.\s*{_NAME})?)|IMPORT\s+(?:PARTITION\s.*?)?TABLESPACE\b)",
    re.IGNORECASE | re.DOTALL,
)
#: ``ALTER TABLE ... RENAME [TO|AS] name`` (not ``RENAME COLUMN/INDEX/KEY``): the new name.
_ALTER_RENAME = re.compile(
    rf"\bRENAME\s+(?!(?:COLUMN|INDEX|KEY)\b)(?:(?:TO|AS)\s+)?({_NAME}(?:\s*\.\s*{_NAME})?)", re.I
)
#: Foreign-key rules whose changes InnoDB makes itself, without a row event in the binlog.
CASCADING_RULES = ("CASCADE", "SET NULL", "SET DEFAULT")


def _unquoted(name: str) -> str:
    return name[1:-1].replace("``", "`") if name.startswith("`") else name


def _code(statement: str) -> str:
    """``statement`` without its comments and with its string literals emptied (``''``), so that words
    inside them (``COMMENT 'rename me'``) are not read as the statement's; backquoted names as they are."""

    def part(found: re.Match[str]) -> str:
        if found.group("name") is not None:
            return found.group(0)
        if found.group("string") is not None:
            return "''"
        if found.group("executable") is not None:
            return " " + _code(found.group("executable")) + " "
        return " "

    return _LEXEME.sub(part, statement)


def statement_tables(statement: str, schema: str) -> tuple[str, list[tuple[str, str]]] | None:
    """The verb (``TRUNCATE``, ``DROP TABLE``, ``RENAME TABLE``, ``ALTER TABLE``, ``CREATE OR``
    upper-cased) and the
    ``(schema, table)`` names a statement that replaces or moves tables' rows without row events
    touches, or ``None`` for any other statement. ``schema``: the session's database, for unqualified
    names. Every name of a ``DROP``/``RENAME TABLE`` (sources and targets: a table renamed into the
    captured one's name replaces it); of an ``ALTER TABLE``, the table and a new name only when it
    renames the table or removes, swaps or moves rows of partitions (``TRUNCATE``/``DROP``/``EXCHANGE``/
    ``CONVERT PARTITION``, with the other table of an exchange or conversion; ``IMPORT TABLESPACE``)
    (``ADD COLUMN`` and the like are followed by the row events' column names). Words inside string
    literals and comments are not read (:func:`_code`); a ``DROP TEMPORARY TABLE`` touches no captured
    table."""
    found = _DDL.match(_code(statement))
    if found is None:
        return None
    words = found.group(1).upper().split()
    if "TEMPORARY" in words:
        return None
    verb, rest = " ".join(words[:2]), found.group(2)
    if verb.startswith("ALTER"):
        first = _QUALIFIED.match(rest)
        if first is None:
            return None
        renamed = _ALTER_RENAME.search(rest)
        partition = _ALTER_PARTITION.search(rest)
        if renamed is None and partition is None:
            return None
        names = [first.group(0)] + ([renamed.group(1)] if renamed else [])
        names += [other for other in (partition.groups() if partition else ()) if other]
    elif verb.startswith(("TRUNCATE", "CREATE")):
        first = _QUALIFIED.match(rest)
        names = [first.group(0)] if first else []
    else:
        names = [m.group(0) for m in _QUALIFIED.finditer(rest.split("/*")[0]) if m.group(0).upper() not in ("TO",)]
    tables = []
    for name in names:
        parts = _QUALIFIED.fullmatch(name.strip())
        if parts is None:
            continue
        qualified = parts.group(2) is not None
        tables.append(
            (_unquoted(parts.group(1)), _unquoted(parts.group(2))) if qualified else (schema, _unquoted(parts.group(1)))
        )
    return verb, tables


#: ``information_schema.COLUMNS.DATA_TYPE`` of the columns whose values are bytes.
BINARY_TYPES = ("binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob")


def binary_value(value: Any, width: int | None) -> Any:
    """A binlog value of a binary column as the table holds it: text turned back into bytes (the
    binlog reader hands an empty ``VARBINARY`` over as ``''``; text is decoded as UTF-8 there, so it is
    encoded so here) and, for a ``BINARY(width)`` (``width`` not ``None``), the trailing zero bytes the
    server leaves out of the row image put back (MySQL docs, "The BINARY and VARBINARY Types": values
    are right-padded with 0x00; the binlog stores them without the padding); other values as they are."""
    if isinstance(value, str):
        value = value.encode()
    if width is not None and isinstance(value, bytes) and len(value) < width:
        value = value.ljust(width, b"\0")
    return value


def bit_value(value: Any) -> Any:
    """A binlog ``BIT`` value (python-mysql-replication's string of bits, ``00000101``) as the snapshot
    lands it: its integer's text (``5``; SQLAlchemy reads a ``BIT`` as an integer); other values as
    they are. As bits, an updated value landed as another number's digits and a delete by a ``BIT`` key
    matched no landed row."""
    return str(int(value, 2)) if isinstance(value, str) and value else value


#: Column types whose binlog values python-mysql-replication hands over as raw bytes with their trailing zero
#: bytes stripped, decoded as text into garbage (``UUID``, ``INET6``, ``INET4``, MariaDB 10.5+): MariaDB's own
#: text of them (a ``UUID`` stored in its index-friendly byte order, an IPv4-mapped ``INET6`` as
#: ``::ffff:1.2.3.4``) is not rebuilt here, so such a table is refused (:func:`refuse_binlog_garbled`).
BINLOG_GARBLED_TYPES = ("uuid", "inet6", "inet4")


def refuse_binlog_garbled(schema: str | None, table: str, kinds: list[tuple[str, str, Any]]) -> None:
    """Raise :class:`ChangeCaptureError` naming the columns of ``kinds`` (``(name, type, width)``, from
    ``information_schema.COLUMNS``) of a :data:`BINLOG_GARBLED_TYPES` type: their change rows landed as
    garbled text beside the snapshot's ``123e4567-...``, and a ``UUID`` key's updates and deletes matched no
    landed row. Checked at the snapshot and at every drain (a column may be added between)."""
    garbled = [f"{name} ({kind.upper()})" for name, kind, _ in kinds if kind in BINLOG_GARBLED_TYPES]
    if garbled:
        raise ChangeCaptureError(
            f"table {schema}.{table}: column(s) {', '.join(garbled)} cannot be read from the binlog as the "
            "table holds them (the binlog reader gives their raw bytes); capture the table without cdc: (a full "
            "or cursor extract), or read it through a view casting them to CHAR; nothing was landed"
        )


def _binary_columns(kinds: list[tuple[str, str, Any]]) -> dict[str, int | None]:
    """The binary columns (:data:`BINARY_TYPES`) of ``kinds`` (:meth:`MariaDbChangeLog._column_kinds`): name ->
    the width of a ``BINARY(n)``, ``None`` for the others."""
    return {name: int(width) if kind == "binary" else None for name, kind, width in kinds if kind in BINARY_TYPES}


class MariaDbChangeLog:
    """A table's changes from the binlog (module doc); implements
    :class:`~integration_platform.core.changes.ChangeLog`.

    ``database``: the SQL source's resource (a ``mysql+pymysql://`` or ``mariadb+pymysql://`` URL);
    ``table`` in ``schema`` (the database name; default: the URL's); ``primary_key``: the stream's key
    columns (an update changing them lands as a delete of the old key, then the update). Raises
    ``sqlalchemy.exc.SQLAlchemyError`` / ``pymysql.err.Error`` for connection and SQL errors and
    :class:`ChangeCaptureError` for a server whose binlog cannot be captured.
    """

    def __init__(
        self, database: SqlDatabaseResource, table: str, schema: str | None, primary_key: Sequence[str] = ()
    ) -> None:
        self.database, self.table, self.primary_key = database, table, tuple(primary_key)
        self.schema = schema or sa.make_url(database.url).database or ""
        self._position: str | None = None  # the position saved in the lake (a landing's manifest)
        self._with_rows: set[str] = set()  # positions of this run's batches that hold change rows

    def lock_name(self) -> str:
        """The server-wide lock (``GET_LOCK``) of this table's capture: ``ip_cdc_`` and a hash of the
        schema and table (the name is at most 64 characters)."""
        digest = hashlib.sha256(f"{self.schema}.{self.table}".encode()).hexdigest()[:24]
        return f"ip_cdc_{digest}"

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """``GET_LOCK(<lock_name>, 0)`` on a connection of its own while the capture runs; raises
        :class:`ChangeCaptureError` when another session holds it."""
        with self.database.engine().connect() as conn:
            conn.detach()  # the lock is the session's: it must not go back to the pool held
            if conn.exec_driver_sql("SELECT GET_LOCK(%s, 0)", (self.lock_name(),)).scalar() != 1:
                raise ChangeCaptureError(
                    f"table {self.schema}.{self.table}: another run is capturing its changes (lock "
                    f"{self.lock_name()!r} held); this run lands nothing"
                )
            yield  # released with the connection

    def new_cursor(self) -> str:
        """A name for this snapshot's generation (the binlog has no server-side cursor to name)."""
        return f"binlog_{uuid.uuid4().hex[:8]}"

    def _check_server(self, conn: sa.Connection) -> None:
        found = {
            str(name).lower(): str(value).upper()
            for name, value in conn.exec_driver_sql(
                "SHOW GLOBAL VARIABLES WHERE Variable_name IN "
                "('log_bin', 'binlog_format', 'binlog_row_image', "
                "'binlog_row_metadata')"
            )
        }
        wrong = {name: found.get(name) for name, value in REQUIRED.items() if found.get(name) != value}
        if wrong:
            raise ChangeCaptureError(
                f"table {self.schema}.{self.table}: change data capture needs the server's "
                f"{', '.join(f'{k}={v}' for k, v in REQUIRED.items())}; it has {wrong}"
            )

    def _check_cascades(self, conn: sa.Connection) -> None:
        """Refuse a table that is the child of a foreign key with ``ON DELETE``/``ON UPDATE`` ``CASCADE``,
        ``SET NULL`` or ``SET DEFAULT`` (``information_schema.REFERENTIAL_CONSTRAINTS``): InnoDB makes
        those changes itself and the binlog holds no row event of them (MariaDB docs, "Foreign Keys":
        cascaded changes are not written to the binary log), so its deletes and updates would be lost.
        Raises :class:`ChangeCaptureError` naming the constraint, the parent table and the fix."""
        rows = conn.exec_driver_sql(
            "SELECT CONSTRAINT_NAME, REFERENCED_TABLE_NAME, DELETE_RULE, UPDATE_RULE "
            "FROM information_schema.REFERENTIAL_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = %s AND TABLE_NAME = %s",
            (self.schema, self.table),
        ).all()
        cascading = [
            f"{name} (references {parent}: ON DELETE {on_delete}, ON UPDATE {on_update})"
            for name, parent, on_delete, on_update in rows
            if str(on_delete).upper() in CASCADING_RULES or str(on_update).upper() in CASCADING_RULES
        ]
        if cascading:
            raise ChangeCaptureError(
                f"table {self.schema}.{self.table} is the child of cascading foreign key(s) {'; '.join(cascading)}: "
                "InnoDB changes its rows for the parent's deletes and updates without writing them to the binlog, "
                "so change data capture would lose them. Capture it without cdc: (a full or cursor extract), or "
                "change the constraint to RESTRICT / NO ACTION"
            )

    @contextmanager
    def snapshot(self, cursor: str) -> Iterator[tuple[pa.RecordBatchReader, str]]:
        """The table as of a consistent snapshot and the binlog position it lines up with (module doc).
        TIMESTAMP values are read in UTC, as the binlog holds them: every session of the SQL sources'
        engine reads them so (:func:`~integration_platform.resources.sql_sessions.utc_sessions`)."""
        with self.database.engine().connect() as conn:
            self._check_server(conn)
            self._check_cascades(conn)
            refuse_binlog_garbled(self.schema, self.table, self._column_kinds())
            conn.exec_driver_sql("START TRANSACTION WITH CONSISTENT SNAPSHOT")
            status: dict[str, Any] = {
                str(name): value for name, value in conn.exec_driver_sql("SHOW STATUS LIKE 'binlog_snapshot_%%'")
            }
            if not status.get("Binlog_snapshot_file"):
                raise ChangeCaptureError(
                    f"table {self.schema}.{self.table}: the server reports no binlog_snapshot_file status, which "
                    "lines a snapshot up with its binlog position without locking tables (MariaDB has it; MySQL "
                    "does not): change data capture needs MariaDB"
                )
            position = f"{status['Binlog_snapshot_file']}:{status['Binlog_snapshot_position']}"
            rows = self.database._read_generic(self.table, self.schema, None, connection=conn)
            extra = [pa.scalar("snapshot"), pa.scalar(position_int(position)), pa.scalar(0, pa.int32()),
                     pa.scalar(dt.datetime.now(dt.UTC), pa.timestamp("us", "UTC"))]  # fmt: skip
            schema = pa.schema([*rows.schema, *CHANGE_SCHEMA])

            def with_change_columns() -> Iterator[pa.RecordBatch]:
                for batch in rows:
                    constants = [pa.array([v.as_py()] * batch.num_rows, v.type) for v in extra]
                    yield pa.RecordBatch.from_arrays([*batch.columns, *constants], schema=schema)

            self._position = position
            yield pa.RecordBatchReader.from_batches(schema, with_change_columns()), position
            conn.rollback()

    def resume(self, cursor: str, landed: str) -> bool:
        """False when the binlog file of ``landed`` was purged (a new snapshot is needed)."""
        with self.database.engine().connect() as conn:
            self._check_server(conn)
            self._check_cascades(conn)
            files = {str(row[0]) for row in conn.exec_driver_sql("SHOW BINARY LOGS")}
        self._position = landed
        return landed.rpartition(":")[0] in files

    def confirm(self, cursor: str, position: str) -> None:
        """Nothing to tell the server: the position is the landing's (module doc). Only a batch with
        change rows lands, and with it its position; a batch without (other tables' binlog) leaves the
        saved position where it was, and so does :meth:`status`."""
        if position in self._with_rows:
            self._position = position

    def drop_other_cursors(self, keep: str | None) -> list[str]:
        """No server-side cursor to drop."""
        return []

    def status(self, cursor: str, landed: str = "") -> dict[str, Any]:
        """The binlog position saved in the lake (this run's newest landing's, else ``landed``), also as
        ``log_position`` (a run that landed nothing read further, but the next one starts there
        again), the server's, and the binlog bytes between them."""
        with self.database.engine().connect() as conn:
            logs = [(str(name), int(size)) for name, size, *_ in conn.exec_driver_sql("SHOW BINARY LOGS")]
        sizes = dict(logs)
        position = self._position or landed
        name, _, offset = position.rpartition(":")
        if name not in sizes:
            return {"log_cursor_exists": False, "binlog_position": position, "log_position": position}
        after = [size for log, size in logs if log > name]
        behind = sizes[name] - int(offset) + sum(after)
        current = f"{logs[-1][0]}:{logs[-1][1]}"
        return {"log_cursor_exists": True, "log_retained_bytes": behind, "binlog_position": position,
                "log_position": position, "binlog_server_position": current}  # fmt: skip

    def waiting(self, cursor: str, landed: str) -> tuple[bool, str | None]:
        """Whether the binlog after ``landed`` holds a row change of the table (read from there up to
        the first such event, or to its end), and ``landed..<server position>`` as the label (``None``
        before the first snapshot)."""
        if not landed:
            return False, None
        with self.database.engine().connect() as conn:
            status = conn.exec_driver_sql("SHOW MASTER STATUS").first()
        label = f"{landed}..{status[0]}:{status[1]}" if status else landed
        stream = self._stream(landed, row_events_only=True)
        try:
            return next(iter(stream), None) is not None, label
        finally:
            stream.close()

    def _stream(self, position: str, row_events_only: bool = False) -> Any:
        """python-mysql-replication's non-blocking reader of the table's row events (and commits and
        statements, :meth:`_replacing_statement`) after ``position``."""
        from pymysqlreplication import BinLogStreamReader
        from pymysqlreplication.event import QueryEvent, XidEvent
        from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

        url = sa.make_url(self.database.url)
        log_file, _, log_pos = position.rpartition(":")
        events = [
            WriteRowsEvent,
            UpdateRowsEvent,
            DeleteRowsEvent,
            *([] if row_events_only else [XidEvent, QueryEvent]),
        ]
        return BinLogStreamReader(
            connection_settings={"host": url.host or "127.0.0.1", "port": url.port or 3306,
                                 "user": url.username or "root", "passwd": url.password or ""},
            server_id=random.randint(1 << 20, 1 << 30),  # a replica id no real replica uses
            blocking=False, resume_stream=True, log_file=log_file, log_pos=int(log_pos),
            only_events=events, only_schemas=[self.schema], only_tables=[self.table],
        )  # fmt: skip

    def batches(self, cursor: str, limits: ChangeLimits) -> Generator[ChangeBatch, None, None]:
        """Batches of whole transactions of this table after the landed position, up to the binlog's end
        when the run started (a run ends while writers keep committing)."""
        from pymysqlreplication.event import QueryEvent, XidEvent
        from pymysqlreplication.row_event import UpdateRowsEvent, WriteRowsEvent

        if self._position is None:
            raise ChangeCaptureError(f"table {self.schema}.{self.table}: no binlog position to read from")
        with self.database.engine().connect() as conn:
            end = conn.exec_driver_sql("SHOW MASTER STATUS").first()
        upto = position_int(f"{end[0]}:{end[1]}") if end else 1 << 62
        stream = self._stream(self._position)
        started, taken = time.monotonic(), 0
        typed = self.database.typed_columns(self.table, self.schema)
        kinds = self._column_kinds()
        refuse_binlog_garbled(self.schema, self.table, kinds)
        binary = _binary_columns(kinds)
        bits = {name for name, kind, _ in kinds if kind == "bit"}  # through bit_value
        current = [name for name, _, _ in typed]
        checked: set[tuple[str, ...]] = set()  # column lists of row events already found to match the table's
        pending: list[tuple[str, dict[str, Any]]] = []  # this transaction's changes
        done: list[tuple[str, dict[str, Any], int, int, dt.datetime]] = []  # landed-to-be, with position
        position = self._position
        try:
            for event in stream:
                # a non-transactional table's (MyISAM, Aria) changes end in a COMMIT statement, not an Xid:
                # waiting for an Xid left them unlanded by every run while no InnoDB commit followed
                commit = isinstance(event, QueryEvent) and str(event.query).strip().upper() == "COMMIT"
                if isinstance(event, QueryEvent) and not commit:
                    refused = self._replacing_statement(event, f"{stream.log_file}:{stream.log_pos}")
                    if refused is not None:
                        if done:  # what committed before it lands, so the error stays at the statement
                            yield self._batch(typed, binary, bits, done, position)
                        raise refused
                    continue
                if isinstance(event, XidEvent) or commit:
                    position = f"{stream.log_file}:{stream.log_pos}"
                    committed = dt.datetime.fromtimestamp(event.timestamp, dt.UTC)
                    order = position_int(position)
                    done.extend((op, row, order, seq, committed) for seq, (op, row) in enumerate(pending))
                    taken += len(pending)
                    pending = []
                    if order >= upto:
                        break
                    if len(done) >= limits.batch_changes:
                        yield self._batch(typed, binary, bits, done, position)
                        done = []
                        if taken >= limits.max_changes or time.monotonic() - started > limits.max_seconds:
                            return
                    continue
                logged = tuple(column.name for column in event.columns)
                if logged not in checked:  # once per column list: a row event's check is otherwise O(columns²)
                    refuse_renamed_columns(
                        f"{self.schema}.{self.table}", logged, current, f"{stream.log_file}:{stream.log_pos}"
                    )
                    checked.add(logged)
                for row in event.rows:
                    if isinstance(event, WriteRowsEvent):
                        pending.append(("insert", row["values"]))
                    elif isinstance(event, UpdateRowsEvent):
                        before, after = row["before_values"], row["after_values"]
                        if any(before.get(k) != after.get(k) for k in self.primary_key):
                            pending.append(("delete", before))  # the old key goes, then the new one comes
                        pending.append(("update", after))
                    else:
                        pending.append(("delete", row["values"]))
        finally:
            stream.close()
        yield self._batch(typed, binary, bits, done, position)

    def _replacing_statement(self, event: Any, at: str) -> ChangeCaptureError | None:
        """The error for a binlog ``QueryEvent`` whose statement replaces or moves the captured table's rows
        without row events (:func:`statement_tables`: a ``TRUNCATE``, ``DROP``, ``RENAME``, ``CREATE OR
        REPLACE`` or renaming ``ALTER`` of it), naming the table, the statement and the fix; ``None``
        for any other statement. ``at``: the binlog position after the statement."""
        session = event.schema.decode() if isinstance(event.schema, bytes) else str(event.schema or "")
        touched = statement_tables(str(event.query), session or self.schema)
        # names compared case-insensitively: with lower_case_table_names, the statement's case need not be the table's
        mine = (self.schema.lower(), self.table.lower())
        if touched is None or mine not in {(schema.lower(), table.lower()) for schema, table in touched[1]}:
            return None
        statement = " ".join(str(event.query).split())[:200]
        return ChangeCaptureError(
            f"table {self.schema}.{self.table}: {touched[0]} ({statement!r}, binlog before {at}) changed its "
            "rows without row events in the binlog, so the warehouse cannot "
            "follow it: run the stream with full_refresh: true to take a new snapshot"
        )

    def _column_kinds(self) -> list[tuple[str, str, Any]]:
        """``(name, DATA_TYPE lower-cased, CHARACTER_OCTET_LENGTH)`` of the table's columns, from
        ``information_schema.COLUMNS``."""
        with self.database.engine().connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT COLUMN_NAME, DATA_TYPE, CHARACTER_OCTET_LENGTH FROM information_schema.COLUMNS "
                "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s",
                (self.schema, self.table),
            ).all()
        return [(str(name), str(kind).lower(), width) for name, kind, width in rows]

    def _batch(
        self,
        typed: list[TypedColumn],
        binary: dict[str, int | None],
        bits: set[str],
        changes: list[tuple[str, dict[str, Any], int, int, dt.datetime]],
        position: str,
    ) -> ChangeBatch:
        """The change rows of ``changes`` (``(op, row by column name, position, seq, commit time)``) with
        the snapshot's types (``typed``); values of the ``binary`` columns go through :func:`binary_value`,
        of the ``bits`` columns through :func:`bit_value`."""
        counts: dict[str, int] = {}
        for op, *_ in changes:
            counts[op] = counts.get(op, 0) + 1
        if not changes:
            return ChangeBatch(None, position, counts)
        self._with_rows.add(position)
        columns = [
            [binary_value(row.get(name), binary[name]) for _, row, *_ in changes]
            if name in binary
            else [bit_value(row.get(name)) for _, row, *_ in changes]
            if name in bits
            else [time_text(row.get(name)) for _, row, *_ in changes]
            for name, _, _ in typed
        ]
        table = pa.Table.from_batches([arrow_batch(f"{self.schema}.{self.table}", typed, columns)])
        meta = [
            pa.array([c[0] for c in changes], pa.string()),
            pa.array([c[2] for c in changes], pa.int64()),
            pa.array([c[3] for c in changes], pa.int32()),
            pa.array([c[4] for c in changes], pa.timestamp("us", "UTC")),
        ]
        for name, values in zip(CHANGE_COLUMNS, meta, strict=True):
            table = table.append_column(name, values)
        return ChangeBatch(table, position, counts)
