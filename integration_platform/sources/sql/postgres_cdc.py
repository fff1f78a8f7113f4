"""PostgreSQL change data capture: a logical replication slot (``pgoutput``) read as a change log.

One stream = one table = one publication (``ip_<source>_<stream>_<hash>``, created when missing,
or the one the YAML names) and one replication slot, whose name ends in a generation suffix
recorded in the snapshot's manifest (see :mod:`~integration_platform.core.changes` for the order of
a run). The pieces, each from PostgreSQL itself:

- **snapshot**: ``CREATE_REPLICATION_SLOT <slot> LOGICAL pgoutput EXPORT_SNAPSHOT`` on a
  replication connection (psycopg 3, ``replication=database``); while that connection stays open,
  the table is read through the SQL source's own reader (ADBC binary COPY) in a repeatable-read
  transaction that imports the exported snapshot, so the snapshot holds exactly the changes the
  slot will not send.
- **changes**: psycopg 2's ``LogicalReplicationConnection`` streams the slot (psycopg 3 cannot
  stream the replication protocol's COPY BOTH) from its confirmed position; whole transactions are gathered into
  batches, each landed and only then confirmed as the stream's flush feedback (waiting for the
  server's answer, so the slot has moved when :meth:`PostgresChangeLog.confirm` returns). The run
  ends when the walsender's keepalive says it has decoded the WAL flushed when the run started.
  Measured in ``benchmarks/cdc.py`` on 1M changes: reading and decoding by this stream 4.2 s, by
  psycopg 3 polling ``pg_logical_slot_peek_binary_changes`` in batches then
  ``pg_replication_slot_advance`` 11.7 s (the advance decodes each range a second time).
- **types**: pgoutput sends each value as text. A column whose snapshot type Arrow parses exactly
  from that text (text, booleans, numbers, dates, timestamps) is typed in Arrow
  (:func:`arrow_from_text`); the others (and ``inet``, whose text the snapshot's driver writes with
  its netmask) go back to PostgreSQL as one ``text[]`` per column, cast to
  the table's column types (``format_type`` of the live catalog) and read through the same reader
  as the snapshot, so a change row has exactly the snapshot's Arrow types (arrays as lists,
  ``bytea`` as binary, infinities as DuckDB's...); PostgreSQL's own input functions parse them.
"""

import hashlib
import itertools
import select
import threading
import time
import uuid
from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql

from integration_platform.core.changes import (
    CHANGE_SCHEMA,
    ChangeBatch,
    ChangeCaptureError,
    ChangeLimits,
    refuse_renamed_columns,
)
from integration_platform.core.streams import COMMITTED_COLUMN, OP_COLUMN, POSITION_COLUMN, SEQ_COLUMN
from integration_platform.sources.sql.pgoutput import (
    UNCHANGED,
    Change,
    Relation,
    Transaction,
    begin_final_lsn,
    lsn_int,
    lsn_text,
    transactions,
)
from integration_platform.sources.sql.postgres_arrow import postgres_schema, read_postgres
from integration_platform.sources.sql.slot_names import SLOT_NAME

#: Seconds the server has to answer a confirmation (flush feedback) on the replication stream.
FEEDBACK_SECONDS = 30.0
#: A slot whose WAL is gone (``max_slot_wal_keep_size`` passed): it can give no more changes.
SLOT_LOST = "(wal_status = 'lost' OR restart_lsn IS NULL)"


def array_constant(values: Sequence[str | None]) -> str:
    """Text values (``None``: NULL) as one PostgreSQL ``text[]`` constant: an array literal (each
    element double-quoted, ``"`` and ``\\`` backslash-escaped; PostgreSQL docs 8.15.6) inside an escape
    string (``E'...'``, ``\\`` and ``'`` doubled, read the same whatever ``standard_conforming_strings``
    says; 4.1.2.2). Written here rather than through ``psycopg.sql.Literal`` because a batch is sent
    column by column and ``unnest`` back into rows: PostgreSQL parses 20,000 rows of 7 columns 4x
    faster that way than as a VALUES list (0.11 against 0.42 s, measured for ``benchmarks/cdc.py``),
    and text from the server cannot hold a NUL byte."""
    inner = ",".join("NULL" if v is None else '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values)
    return "E'{" + inner.replace("\\", "\\\\").replace("'", "''") + "}'::text[]"


def arrow_from_text(values: Sequence[str | None], kind: pa.DataType) -> pa.Array | None:
    """Values as pgoutput writes them (PostgreSQL's text output with a reading session's time zone and date style,
    :func:`_walsender_options`) as Arrow
    ``kind`` (the snapshot's type of the column), where Arrow parses that text exactly: text as is
    (every type the snapshot reads as text is read as its text form), ``t``/``f`` booleans, integers,
    floats (PostgreSQL writes the shortest exact form, ``NaN``, ``Infinity``), decimals that fit,
    dates and timestamps in the years 1-9999. ``None`` for anything else (arrays, bytea, times,
    ``infinity``, a value Arrow refuses): PostgreSQL then parses the column."""
    text = pa.array(values, pa.string())
    if pa.types.is_string(kind):
        return text
    if pa.types.is_boolean(kind):
        return pc.equal(text, "t")
    parseable = (pa.types.is_integer, pa.types.is_floating, pa.types.is_decimal, pa.types.is_date32)
    if not (any(check(kind) for check in parseable) or (pa.types.is_timestamp(kind) and kind.unit == "us")):
        return None
    try:
        return pc.cast(text, kind)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


def _walsender_options(conn: psycopg.Connection[Any]) -> tuple[str, bool]:
    """libpq ``options`` giving the walsender the ``TimeZone``, date order and ``IntervalStyle`` a reading
    session of the source has (the database's and role's defaults), and whether that session writes
    dates in ISO. pgoutput writes values with the walsender's settings, and a value the snapshot reads
    as its text (``tstzrange``, ``timestamptz[]``, ``interval``...) is written with the reading
    session's, so a change row's text is the snapshot's. Walsender times in UTC had landed
    ``["2024-01-01 00:00:00+00",...)`` for a snapshot's ``["2023-12-31 19:00:00-05",...)`` on a database
    in New York time. The walsender always writes dates in ISO (``DateStyle`` ``ISO, <order>``): in the
    other styles PostgreSQL writes a zone's local mean time as ``LMT`` (``01/01/0001 00:19:32 LMT`` in
    Europe/Amsterdam), which its own input refuses, so such a change failed every run. Arrow parses
    ISO dates and timestamps with their offsets (:func:`arrow_from_text`); when the reading session's
    style is not ISO, the columns landed as text go through the server (:meth:`PostgresChangeLog._decode`),
    which writes them in that style."""
    row = conn.execute(
        "SELECT current_setting('TimeZone'), current_setting('DateStyle'), current_setting('IntervalStyle')"
    ).fetchone()
    assert row is not None
    zone, style, interval = (str(value) for value in row)
    output, _, order = style.partition(",")
    settings = {"TimeZone": zone, "DateStyle": "ISO," + order if order else "ISO", "IntervalStyle": interval}
    escaped = (
        f"-c {name}={value.replace(chr(92), chr(92) * 2).replace(' ', chr(92) + ' ')}"
        for name, value in settings.items()
    )
    return " ".join([*escaped, "-c extra_float_digits=3"]), output.strip().upper() == "ISO"


def _column(rows: list[list[Any]], index: int | None) -> list[Any]:
    """The values at tuple index ``index`` of ``rows``, or NULLs where the relation had no such column."""
    return [None] * len(rows) if index is None else [row[index] for row in rows]


def _joined(parts: list[list[Any]]) -> list[Any]:
    """``parts`` one after the other (the one part itself, uncopied, when there is one)."""
    return parts[0] if len(parts) == 1 else list(itertools.chain.from_iterable(parts))


class _KeepAlive:
    """Sends a status message on the replication stream every ``interval`` seconds while a batch lands
    (the stream is not read then): the walsender drops a client silent for ``wal_sender_timeout``
    (PostgreSQL docs 20.6.1), and landing a batch to a slow lake can take longer. ``interval``: a
    quarter of the server's timeout; none when it is 0 (disabled)."""

    def __init__(self, lock: threading.Lock) -> None:
        self.lock, self.stopped = lock, threading.Event()
        self.thread: threading.Thread | None = None

    def start(self, stream: Any, interval: float) -> None:
        if interval > 0:
            self.thread = threading.Thread(target=self._run, args=(stream, interval), name="cdc-keepalive", daemon=True)
            self.thread.start()

    def _run(self, stream: Any, interval: float) -> None:
        while not self.stopped.wait(interval):
            with self.lock:
                try:
                    stream.send_feedback(force=True)  # the positions sent before, kept by psycopg 2
                except Exception:  # a closed or broken stream: batches() sees it on its next read
                    return

    def stop(self) -> None:
        self.stopped.set()
        if self.thread is not None:
            self.thread.join()


class PostgresChangeLog:
    """A table's changes through a logical replication slot (module doc); implements
    :class:`~integration_platform.core.changes.ChangeLog`.

    ``uri``: libpq URI of the database; ``table``/``schema``: the captured table; ``prefix``: from
    :func:`~integration_platform.sources.sql.slot_names.cursor_prefix`; ``publication``: an existing
    publication to read, or ``None`` to use (and create when missing) ``<prefix>``; ``primary_key``: the
    stream's key columns (an update that
    changes them lands as a delete of the old key, then the update; default: the replica identity's
    columns). Raises ``psycopg.Error`` for connection and SQL errors and :class:`ChangeCaptureError`
    for a table that cannot be captured or changes that cannot be landed.
    """

    def __init__(
        self,
        uri: str,
        table: str,
        schema: str | None,
        prefix: str,
        publication: str | None = None,
        primary_key: Sequence[str] = (),
    ) -> None:
        if not SLOT_NAME.match(prefix) or (publication is not None and not SLOT_NAME.match(publication)):
            raise ValueError(f"slot prefix {prefix!r} / publication {publication!r}: not a plain lowercase name")
        self.uri, self.table, self.schema = uri, table, schema or "public"
        self.primary_key = tuple(primary_key)
        self.prefix, self.publication = prefix, publication or prefix
        self._create_publication = publication is None
        self._stream: Any = None  # psycopg 2's replication cursor while batches() streams the slot
        self._stream_lock = threading.Lock()  # the stream is used by batches() and by its keepalive thread
        self._batches_conn: Any = None  # batches()' psycopg 3 connection while it streams
        self._iso_dates = True  # whether a reading session writes dates in ISO (_walsender_options)

    def _connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.uri, autocommit=True)

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """A session advisory lock on the source, keyed by the slot prefix (``pg_try_advisory_lock``
        of its ``hashtext``), held on a connection of its own while the capture runs; raises
        :class:`ChangeCaptureError` when another session holds it."""
        with self._connect() as conn:
            row = conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", [self.prefix]).fetchone()
            if not (row and row[0]):
                raise ChangeCaptureError(
                    f"table {self.schema}.{self.table}: another run is capturing its changes (advisory lock on "
                    f"hashtext('{self.prefix}') held); this run lands nothing"
                )
            yield  # the lock goes with the connection

    def new_cursor(self) -> str:
        """A new slot name: ``<prefix>_<database><generation>``, 4 hex digits of the SHA-256 of the
        database's name (``current_database()``) then 7 random ones (63 bytes at most).

        Replication slots are cluster-wide while publications, advisory locks and the tables are the
        database's: two deployments of one source name on two databases of a cluster share the prefix.
        The database part tells their slots apart when looked at, and every query of the stream's slots
        is limited to ``pg_replication_slots.database = current_database()`` (:meth:`drop_other_cursors`,
        :meth:`resume`, :meth:`status`, :meth:`waiting`, :meth:`confirm`; PostgreSQL itself refuses to
        advance, peek at or stream a logical slot of another database), so neither drops, advances nor
        reads the other's. A slot of the naming before
        the database part (``<prefix>_<8 hex>``, same prefix) keeps working: the snapshot's manifest
        names the slot, which is looked up by that exact name in this database, so an existing
        deployment keeps its position; its leftovers are still dropped as the stream's own."""
        with self._connect() as conn:
            row = conn.execute("SELECT current_database()::text").fetchone()
        database = hashlib.sha256(str(row[0] if row else "").encode()).hexdigest()[:4]
        return f"{self.prefix}_{database}{uuid.uuid4().hex[:7]}"

    def _ensure_publication(self, conn: psycopg.Connection[Any]) -> None:
        """Create the stream's publication when missing, or make it hold the table again when it does
        not (:meth:`_published`: the table was dropped and re-created, or renamed away, since the last
        snapshot; ``SET TABLE``); a partitioned table publishes its partitions' changes as its own
        (``publish_via_partition_root``). A table without a replica identity is refused first: once
        published, PostgreSQL rejects every UPDATE and DELETE on it. A publication the YAML names is
        never altered but refused when missing or without the table."""
        found = conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", [self.publication]).fetchone()
        if found is None or not self._published(conn):
            if not self._create_publication:
                raise ChangeCaptureError(
                    f"publication {self.publication!r} "
                    + ("does not exist in the source database" if found is None else
                       f"does not publish table {self.schema}.{self.table}: add it with ALTER PUBLICATION ... "
                       "ADD TABLE on the source")
                )  # fmt: skip
            target = sql.Identifier(self.schema, self.table)
            identity = conn.execute(
                "SELECT c.relreplident::text, "
                "EXISTS (SELECT FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary) "
                "FROM pg_class c WHERE c.oid = %s::regclass",
                [target.as_string(conn)],
            ).fetchone()
            if identity is None or identity[0] == "n" or (identity[0] == "d" and not identity[1]):
                raise ChangeCaptureError(
                    f"table {self.schema}.{self.table} has no replica identity (no primary key, or REPLICA IDENTITY "
                    "NOTHING): once published, PostgreSQL would refuse every UPDATE and DELETE on it. Add a primary "
                    "key, or run ALTER TABLE ... REPLICA IDENTITY FULL (or USING INDEX) on the source first"
                )
            command = (
                "CREATE PUBLICATION {} FOR TABLE {} WITH (publish_via_partition_root = true)"
                if found is None
                else "ALTER PUBLICATION {} SET TABLE {}"
            )
            conn.execute(sql.SQL(command).format(sql.Identifier(self.publication), target))
        self._check_partition_root(conn)
        self._check_publishes_all(conn)

    def _published(self, conn: psycopg.Connection[Any]) -> bool:
        """Whether the publication holds the table now under the stream's name: by name in
        ``pg_publication_tables`` (which names each published table as it is called now; ``FOR ALL
        TABLES``, ``FOR TABLES IN SCHEMA``), or by OID, the table called so now in ``pg_publication_rel``,
        or (a table called so existing) a publication ``FOR ALL TABLES``. A publication holds tables by
        OID: a table dropped and re-created, or renamed away and another created under its name, is not
        the one published, and its changes would never arrive. ``pg_publication_tables`` alone would not
        do: for a partitioned table in a publication without ``publish_via_partition_root`` it lists the
        partitions, not the table (:meth:`_check_partition_root` sets that option). A partition whose
        parent is published is not held: its changes would arrive under the parent's name."""
        row = conn.execute(
            "SELECT EXISTS (SELECT FROM pg_publication_tables WHERE pubname = %(pub)s AND schemaname = %(schema)s "
            "AND tablename = %(table)s) OR EXISTS (SELECT FROM pg_publication p WHERE p.pubname = %(pub)s "
            "AND ((p.puballtables AND to_regclass(%(name)s) IS NOT NULL) OR EXISTS (SELECT FROM "
            "pg_publication_rel r WHERE r.prpubid = p.oid AND r.prrelid = to_regclass(%(name)s))))",
            {
                "pub": self.publication,
                "schema": self.schema,
                "table": self.table,
                "name": sql.Identifier(self.schema, self.table).as_string(conn),
            },
        ).fetchone()
        return bool(row and row[0])

    def _check_still_published(self, conn: psycopg.Connection[Any], cursor: str) -> None:
        """Raise :class:`ChangeCaptureError` before a change is read when the publication no longer holds
        the table (:meth:`_published`): its changes since stopped reaching slot ``cursor``, and the log
        does not say the old table's rows went."""
        if not self._published(conn):
            raise ChangeCaptureError(
                f"table {self.schema}.{self.table} is no longer in publication {self.publication!r} (dropped, or "
                f"renamed, and maybe re-created under its name, since the snapshot of slot {cursor}): its changes "
                "no longer reach the slot and the warehouse would silently stop following it. Run the stream with "
                "full_refresh: true to take a new snapshot"
                + ("" if self._create_publication else " after adding the table to the publication")
            )

    def _check_publishes_all(self, conn: psycopg.Connection[Any]) -> None:
        """Raise :class:`ChangeCaptureError` when the publication sends only part of the table's changes:
        not every one of inserts, updates, deletes and truncates (``publish``), or only some columns (a
        column list) or rows (a row filter, ``WHERE``) of the table (PostgreSQL 15). The snapshot holds
        the whole table, so deletes would never reach the warehouse, a truncate would go unseen (the
        table keeps its rows), an unpublished column would land NULL on each change, and a row outside
        the filter would keep its snapshot's values for ever. The stream's own publication has none of
        these; one the YAML names is not altered (module doc). ``to_jsonb`` reads the column list and
        filter without naming them, as servers before 15 have neither."""
        row = conn.execute(
            "SELECT p.pubinsert, p.pubupdate, p.pubdelete, p.pubtruncate, to_jsonb(r) ->> 'prattrs' IS NOT NULL, "
            "to_jsonb(r) ->> 'prqual' IS NOT NULL FROM pg_publication p LEFT JOIN pg_publication_rel r "
            "ON r.prpubid = p.oid AND r.prrelid = to_regclass(%s) WHERE p.pubname = %s",
            [sql.Identifier(self.schema, self.table).as_string(conn), self.publication],
        ).fetchone()
        if row is None:
            return  # no such publication: _published() tells
        left_out = [
            op for op, sent in zip(("insert", "update", "delete", "truncate"), row[:4], strict=True) if not sent
        ]
        problems = [f"does not publish {', '.join(left_out)}"] if left_out else []
        problems += [
            what
            for what, some in zip(
                ("has a column list (columns added later go unpublished) for", "has a row filter for"),
                row[4:],
                strict=True,
            )
            if some
        ]
        if problems:
            fixes = ["ALTER PUBLICATION ... SET (publish = 'insert, update, delete, truncate')"] if left_out else []
            if any(row[4:]):
                fixes.append("ALTER PUBLICATION ... SET TABLE without a column list or WHERE clause")
            fix = " and ".join(fixes)
            raise ChangeCaptureError(
                f"publication {self.publication!r} {' and '.join(problems)} table {self.schema}.{self.table}: the "
                f"warehouse would silently differ from the table. Run {fix} on the source (or name another "
                "publication), then run the stream with full_refresh: true"
            )

    def _check_partition_root(self, conn: psycopg.Connection[Any]) -> None:
        """A partitioned table's changes must arrive under its own name, or they would be taken for another
        table's and skipped: the stream's own publication is altered to ``publish_via_partition_root``
        (one created before it was set), a publication the YAML names without it is refused."""
        row = conn.execute(
            "SELECT p.pubviaroot, c.relkind::text FROM pg_publication p, pg_class c "
            "WHERE p.pubname = %s AND c.oid = to_regclass(%s)",
            [self.publication, sql.Identifier(self.schema, self.table).as_string(conn)],
        ).fetchone()
        if row is None or row[0] or row[1] != "p":
            return
        if not self._create_publication:
            raise ChangeCaptureError(
                f"publication {self.publication!r} publishes the partitions of {self.schema}.{self.table} under their "
                "own names: run ALTER PUBLICATION ... SET (publish_via_partition_root = true) on the source"
            )
        conn.execute(
            sql.SQL("ALTER PUBLICATION {} SET (publish_via_partition_root = true)").format(
                sql.Identifier(self.publication)
            )
        )

    @contextmanager
    def snapshot(self, cursor: str) -> Iterator[tuple[pa.RecordBatchReader, str]]:
        """Create slot ``cursor`` and yield the table as of its consistent point (module doc); the slot
        is dropped again when the snapshot could not be landed."""
        with self._connect() as conn:
            self._ensure_publication(conn)
        replication = psycopg.connect(self.uri, autocommit=True, replication="database")
        try:
            command = sql.SQL("CREATE_REPLICATION_SLOT {} LOGICAL pgoutput EXPORT_SNAPSHOT").format(
                sql.Identifier(cursor)
            )
            row = replication.execute(command).fetchone()
            assert row is not None
            position, snapshot = str(row[1]), str(row[2])
            extra = [
                sql.SQL("'snapshot'::text AS {}").format(sql.Identifier(OP_COLUMN)),
                sql.SQL("{}::bigint AS {}").format(sql.Literal(lsn_int(position)), sql.Identifier(POSITION_COLUMN)),
                sql.SQL("0::integer AS {}").format(sql.Identifier(SEQ_COLUMN)),
                sql.SQL("now() AS {}").format(sql.Identifier(COMMITTED_COLUMN)),
            ]
            try:
                reader = read_postgres(
                    self.uri, self.table, self.schema, None, snapshot=snapshot, extra=extra, extra_schema=CHANGE_SCHEMA
                )
                yield reader, position
            except BaseException:
                replication.execute(sql.SQL("DROP_REPLICATION_SLOT {}").format(sql.Identifier(cursor)))
                raise
        finally:
            replication.close()

    def resume(self, cursor: str, landed: str) -> bool:
        """False when slot ``cursor`` is gone, or lost (its WAL was removed past
        ``max_slot_wal_keep_size``: it is dropped then); else advance it to ``landed`` when it is behind."""
        with self._connect() as conn:
            row = conn.execute(
                f"SELECT confirmed_flush_lsn::text, {SLOT_LOST} FROM pg_replication_slots "
                "WHERE slot_name = %s AND database = current_database()",
                [cursor],
            ).fetchone()
            if row is None:  # gone, or another database's (a lake pointed at another database)
                return False
            if row[1]:
                conn.execute("SELECT pg_drop_replication_slot(%s)", [cursor])
                return False
            if lsn_int(str(row[0])) < lsn_int(landed):
                conn.execute("SELECT pg_replication_slot_advance(%s, %s::pg_lsn)", [cursor, landed])
            return True

    def confirm(self, cursor: str, position: str) -> None:
        """Advance slot ``cursor`` to ``position`` (the WAL before it may be recycled): while
        :meth:`batches` streams it, as the stream's flush feedback, waiting for the server's answer
        (it then has moved the slot); otherwise with ``pg_replication_slot_advance``."""
        if self._stream is None:
            with self._connect() as conn:
                conn.execute("SELECT pg_replication_slot_advance(%s, %s::pg_lsn)", [cursor, position])
            return
        # The stream is not read here (a message read would be lost to batches()): the walsender
        # applies feedback even while its sends wait on us, and the slot's view shows when it has.
        target, deadline, pause = lsn_int(position), time.monotonic() + FEEDBACK_SECONDS, 0.002
        with self._stream_lock:
            self._stream.send_feedback(flush_lsn=target, force=True)
        conn = self._batches_conn  # batches()' own connection: it is suspended while a batch is confirmed
        while True:
            row = conn.execute(
                "SELECT confirmed_flush_lsn::text, active FROM pg_replication_slots WHERE slot_name = %s "
                "AND database = current_database()",
                [cursor],
            ).fetchone()
            if row is not None and row[0] is not None and lsn_int(str(row[0])) >= target:
                return
            if row is None or not row[1] or time.monotonic() > deadline:
                why = "its replication connection was lost" if row is None or not row[1] else "no answer in time"
                raise ChangeCaptureError(
                    f"slot {cursor}: the server did not apply the confirmation of {position} ({why}); "
                    "the next run reads the batch again and skips what landed"
                )
            time.sleep(pause)  # the walsender applies it within milliseconds, unless busy decoding
            pause = min(pause * 2, 0.05)

    def drop_other_cursors(self, keep: str | None) -> list[str]:
        """Drop the stream's inactive slots other than ``keep`` (left by a run killed mid-snapshot), of
        this database only: another database's deployment of the same source shares the prefix
        (:meth:`new_cursor`)."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT slot_name::text FROM pg_replication_slots WHERE database = current_database() "
                "AND starts_with(slot_name::text, %s) AND slot_name <> %s AND NOT active",
                [self.prefix + "_", keep or ""],
            ).fetchall()
            for (name,) in rows:
                conn.execute("SELECT pg_drop_replication_slot(%s)", [name])
        return [str(name) for (name,) in rows]

    def status(self, cursor: str, landed: str = "") -> dict[str, Any]:
        """The slot's confirmed position and the bytes of WAL it retains (``restart_lsn`` to now), also
        as the keys every change log reports (``log_cursor_exists``, ``log_retained_bytes``); a lost
        slot (``wal_status`` ``lost``) counts as gone."""
        with self._connect() as conn:
            row = conn.execute(
                "SELECT confirmed_flush_lsn::text, pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint, "
                f"pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint, wal_status, {SLOT_LOST} "
                "FROM pg_replication_slots WHERE slot_name = %s AND database = current_database()",
                [cursor],
            ).fetchone()
        if row is None or row[4]:
            return {"log_cursor_exists": False, "slot": cursor, "wal_status": row[3] if row else "dropped"}
        return {"log_cursor_exists": True, "log_retained_bytes": int(row[1]), "slot": cursor,
                "confirmed_flush_lsn": row[0], "wal_retained_bytes": int(row[1]),
                "wal_unconfirmed_bytes": int(row[2])}  # fmt: skip

    def waiting(self, cursor: str, landed: str = "") -> tuple[bool, str | None]:
        """Whether slot ``cursor`` (the one the stream's snapshot started) has a change of the table
        waiting, and its confirmed position (``None`` when there is no such slot: the next run takes a
        snapshot); ``landed`` is not needed (the slot knows). Peeks one change, consumes nothing; a slot
        a run is streaming cannot be peeked at and counts as nothing waiting; a lost slot (its WAL
        removed) counts as a change waiting, so that a drain replaces it with a new snapshot."""
        with self._connect() as conn:
            row = conn.execute(
                f"SELECT confirmed_flush_lsn::text, {SLOT_LOST} FROM pg_replication_slots "
                "WHERE slot_name = %s AND database = current_database() AND NOT active",
                [cursor],
            ).fetchone()
            if row is None:
                in_use = conn.execute(
                    "SELECT 1 FROM pg_replication_slots WHERE slot_name = %s AND database = current_database()",
                    [cursor],
                ).fetchone()
                return False, (f"{cursor} (being read)" if in_use else None)
            if row[1]:
                return True, f"{cursor} (lost)"
            try:
                peeked = conn.execute(
                    "SELECT data FROM pg_logical_slot_peek_binary_changes(%s, NULL, 1, "
                    "'proto_version', '1', 'publication_names', %s)",
                    [cursor, self.publication],
                ).fetchall()
            except psycopg.errors.ObjectInUse:  # a run started streaming it since the query above
                return False, f"{cursor} (being read)"
            except psycopg.errors.ObjectNotInPrerequisiteState:  # lost since the query above
                return True, f"{cursor} (lost)"
        return any(bytes(data)[:1] in (b"I", b"U", b"D", b"T") for (data,) in peeked), str(row[0])

    def _columns(self, conn: psycopg.Connection[Any]) -> list[tuple[str, str, str | None]]:
        """``(name, SQL type, generation expression)`` of the table's columns now (types and the
        expressions of stored generated columns schema-qualified where not built in; ``None`` for a
        column that is not generated)."""
        with conn.transaction():
            conn.execute("SET LOCAL search_path = ''")
            rows = conn.execute(
                "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), "
                "CASE WHEN a.attgenerated <> '' THEN pg_get_expr(d.adbin, d.adrelid) END "
                "FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
                "WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
                [sql.Identifier(self.schema, self.table).as_string(conn)],
            ).fetchall()
        return [
            (str(name), str(kind), None if expression is None else str(expression)) for name, kind, expression in rows
        ]

    def _rewritten_text(self, conn: psycopg.Connection[Any]) -> set[str]:
        """The table's columns the snapshot's reader lands as text other than PostgreSQL's text output,
        which the log holds: ``inet`` (or a domain over it, at any depth), which the driver writes with
        its netmask (``10.0.0.1/32``, ``::1/128``) where PostgreSQL leaves a host's out. Their change
        values go through the server and that reader (:meth:`_parse_on_server`), or a change's
        ``10.0.0.1`` would match no snapshot key."""
        rows = conn.execute(
            "WITH RECURSIVE base (name, kind) AS (SELECT a.attname::text, a.atttypid FROM pg_attribute a "
            "WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped UNION ALL "
            "SELECT b.name, t.typbasetype FROM base b JOIN pg_type t ON t.oid = b.kind WHERE t.typtype = 'd') "
            "SELECT name FROM base WHERE kind = 'inet'::regtype",
            [sql.Identifier(self.schema, self.table).as_string(conn)],
        ).fetchall()
        return {str(name) for (name,) in rows}

    def batches(self, cursor: str, limits: ChangeLimits) -> Generator[ChangeBatch, None, None]:
        """Batches of whole transactions after slot ``cursor``'s confirmed position, up to the WAL
        flushed when the run started, streamed through psycopg 2's ``LogicalReplicationConnection``;
        the last one (maybe without rows) confirms up to that end, so the slot does not hold WAL of
        other tables' changes."""
        import psycopg2
        import psycopg2.extras

        started, taken = time.monotonic(), 0
        with self._connect() as conn:
            self._batches_conn = conn
            self._check_partition_root(conn)  # first: it makes the publication send the table's own changes
            self._check_still_published(conn, cursor)
            self._check_publishes_all(conn)
            upto = self._flushed_upto(conn)
            keepalive = _KeepAlive(self._stream_lock)
            options, self._iso_dates = _walsender_options(conn)
            replication = psycopg2.connect(
                self.uri, connection_factory=psycopg2.extras.LogicalReplicationConnection, options=options
            )
            try:
                self._stream = replication.cursor()
                self._stream.start_replication(
                    slot_name=cursor,
                    decode=False,
                    options={"proto_version": "1", "publication_names": self.publication},
                )
                timeout = conn.execute("SELECT setting::int FROM pg_settings WHERE name = 'wal_sender_timeout'")
                keepalive.start(self._stream, int(timeout.fetchone()[0]) / 4000)  # type: ignore[index]
                pending: list[Transaction] = []
                count, end = 0, 0
                for transaction in transactions(self._messages(upto)):
                    pending.append(transaction)
                    count, end = count + len(transaction.changes), transaction.end_lsn
                    if count >= limits.batch_changes:
                        taken += count
                        yield self._decode(conn, pending, lsn_text(end))
                        pending, count = [], 0
                        if taken >= limits.max_changes or time.monotonic() - started > limits.max_seconds:
                            return
                yield self._decode(conn, pending, lsn_text(max(upto, end)))
            finally:
                keepalive.stop()
                self._stream = self._batches_conn = None
                replication.close()

    @staticmethod
    def _flushed_upto(conn: psycopg.Connection[Any]) -> int:
        """The WAL insert position now, once the server has flushed WAL up to it (as an integer LSN).

        Logical decoding reads only flushed WAL, and a commit made with ``synchronous_commit = off``
        returns before its WAL is flushed (the WAL writer flushes it within ``3 * wal_writer_delay``,
        0.6 s by default; PostgreSQL docs, "Asynchronous Commit"). Ending the drain at the flush
        position alone would leave such a commit, made before the run started, for a later run;
        ending it at the insert position without waiting would confirm past WAL not yet decoded.
        After 10 s without the flush (a stalled disk) the flushed position is taken."""
        flushed = "SELECT pg_wal_lsn_diff(pg_current_wal_flush_lsn(), '0/0')::bigint"
        inserted = conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::bigint").fetchone()[0]  # type: ignore[index]
        deadline = time.monotonic() + 10
        while (done := conn.execute(flushed).fetchone()[0]) < inserted and time.monotonic() < deadline:  # type: ignore[index]
            time.sleep(0.005)
        return int(min(inserted, done))

    def _messages(self, upto: int) -> Iterator[tuple[int, bytes]]:
        """``(LSN, pgoutput message)`` from the stream up to the WAL position ``upto``: it stops before
        the first transaction committed after it (its begin message announces its commit LSN; pgoutput
        sends transactions in commit order), so a run ends while writers keep committing; or, when
        the stream is idle, once the walsender has decoded the WAL up to ``upto`` and no transaction
        is open: its keepalives carry the position it has sent up to (``wal_end``), and an idle stream
        asks for one at once, then every 0.5 s."""
        stream, inside, asked = self._stream, False, 0.0
        while True:
            with self._stream_lock:
                message = stream.read_message()
            if message is not None:
                data = bytes(message.payload)
                final = begin_final_lsn(data)
                if final is not None and final > upto:
                    return
                inside = final is not None or (inside and data[:1] != b"C")
                yield message.data_start, data
                continue
            if not inside and stream.wal_end >= upto:
                return
            if time.monotonic() - asked > 0.5:
                with self._stream_lock:
                    stream.send_feedback(reply=True)
                asked = time.monotonic()
            select.select([stream], [], [], 0.1)

    def _decode(self, conn: psycopg.Connection[Any], batch: Sequence[Transaction], position: str) -> ChangeBatch:
        """The changes of ``batch`` to this table as Arrow rows of the snapshot's types (module doc).

        Rows are gathered whole and turned into columns at the end, one list comprehension per column
        and run of rows with one relation message, rather than one call per value (200,000 changes
        of 7 columns: 0.55 s of the capture's thread before, py-spy). A row holding an unchanged
        TOASTed value gets it from :meth:`_unchanged` first."""
        columns = self._columns(conn)
        runs: list[tuple[list[int | None], list[list[Any]]]] = []  # (tuple index of each column, rows)
        ops: list[str | None] = []
        positions: list[int] = []
        seqs: list[int] = []
        times: list[str] = []
        counts: dict[str, int] = {}
        where: dict[int, list[int | None]] = {}  # relation message -> tuple index of each current column
        keys: dict[int, list[int]] = {}  # relation message -> tuple index of each key column
        used: dict[int, set[int]] = {}  # relation message -> the tuple indexes of current columns
        for transaction in batch:
            for relation in transaction.truncated:
                if (relation.namespace, relation.name) == (self.schema, self.table):
                    raise ChangeCaptureError(
                        f"table {self.schema}.{self.table} was truncated at {lsn_text(transaction.commit_lsn)}: "
                        "run the stream with full_refresh: true to take a new snapshot"
                    )
            commit_lsn, committed_at = transaction.commit_lsn, transaction.committed_at.isoformat()
            seq = 0
            for change in transaction.changes:
                relation = change.relation
                if (relation.namespace, relation.name) != (self.schema, self.table):
                    continue
                mapping = where.get(id(relation))
                if mapping is None:
                    self._check_relation(conn, relation, transaction)
                    names = [c.name for c in relation.columns]
                    refuse_renamed_columns(
                        f"{self.schema}.{self.table}",
                        names,
                        [n for n, _, generated in columns if not generated],
                        lsn_text(transaction.commit_lsn),
                    )
                    mapping = where[id(relation)] = [names.index(n) if n in names else None for n, _, _ in columns]
                    keys[id(relation)] = self._key_indexes(relation)
                    used[id(relation)] = {index for index in mapping if index is not None}
                if not runs or runs[-1][0] is not mapping:
                    runs.append((mapping, []))
                rows = runs[-1][1]
                for op, row in self._rows(change, keys[id(relation)]):
                    if UNCHANGED in row:
                        row = [
                            self._unchanged(change, index, transaction)
                            if value is UNCHANGED and index in used[id(relation)]
                            else value
                            for index, value in enumerate(row)
                        ]
                    rows.append(row)
                    ops.append(op)
                    positions.append(commit_lsn)
                    seqs.append(seq)
                    times.append(committed_at)
                    counts[op] = counts.get(op, 0) + 1
                    seq += 1
        if not ops:
            return ChangeBatch(None, position, counts)
        values: list[list[str | None]] = [
            _joined([_column(rows, mapping[at]) for mapping, rows in runs]) for at in range(len(columns))
        ]
        values.append(ops)
        target = postgres_schema(self.uri, self.table, self.schema)
        rewritten = self._rewritten_text(conn)
        if not self._iso_dates:  # text the log wrote in ISO, the snapshot in the reading session's style
            rewritten |= {field.name for field in target if pa.types.is_string(field.type)}
        typed = {  # generated columns are not in the log (PostgreSQL 15): computed by the server below
            name: None if generated or name in rewritten else arrow_from_text(column, target.field(name).type)
            for (name, _, generated), column in zip(columns, values[: len(columns)], strict=True)
        }
        slow = [name for name, array in typed.items() if array is None]
        if slow:  # what Arrow cannot parse as PostgreSQL writes it: PostgreSQL's own input functions
            try:
                parsed = self._parse_on_server(columns, values, slow)
            except ValueError as error:  # pa.ArrowInvalid: the server's error, or a value the reader refused
                raise ChangeCaptureError(
                    f"table {self.schema}.{self.table}: the changes up to {position} cannot be read as the table's "
                    f"column types now ({str(error).strip()}). A value logged before its column's type changed "
                    "(ALTER COLUMN ... TYPE) may not be one of the new type: run the stream with full_refresh: true "
                    "to take a new snapshot"
                ) from None  # the server's message is in it: the first thing the run's failure shows
            typed |= {name: parsed.column(name) for name in slow}
        meta = [
            pa.array(ops, pa.string()),
            pa.array(positions, pa.int64()),
            pa.array(seqs, pa.int32()),
            pc.cast(pa.array(times, pa.string()), pa.timestamp("us", "UTC")),
        ]
        table = pa.table([*typed.values(), *meta], schema=pa.schema([*target, *CHANGE_SCHEMA]))
        return ChangeBatch(table, position, counts)

    def _parse_on_server(
        self, columns: list[tuple[str, str, str | None]], values: list[list[str | None]], slow: list[str]
    ) -> pa.Table:
        """The ``slow`` columns' text cast to their types by PostgreSQL and read by the snapshot's reader
        (the other columns as NULLs): one ``text[]`` constant per column, unnested into rows. A stored
        generated column is computed from its expression over the row's other columns (all of them
        sent then), for inserts and updates; the expression runs on the source with the capture
        user's rights, as the table's own writes run it."""
        generates = any(generated for _, _, generated in columns)
        sent = [(name, kind) for name, kind, generated in columns if not generated and (generates or name in slow)]
        texts = dict(zip((name for name, _, _ in columns), values, strict=False))
        if generates:  # the operation goes along: a delete carries only its key, its expression is not evaluated
            sent.append((OP_COLUMN, "text"))
            texts[OP_COLUMN] = values[len(columns)]
        typed = sql.SQL(", ").join(
            sql.SQL("r.{}::{} AS {}").format(sql.Identifier(name), sql.SQL(kind), sql.Identifier(name))
            for name, kind in sent
        )
        outer = sql.SQL(", ").join(
            sql.SQL("CASE WHEN t.{} <> 'delete' THEN ({})::{} END AS {}").format(
                sql.Identifier(OP_COLUMN), sql.SQL(generated), sql.SQL(kind), sql.Identifier(name)
            )
            if generated
            else sql.SQL("t.{0} AS {0}" if name in slow else "NULL::{1} AS {0}").format(
                sql.Identifier(name), sql.SQL(kind)
            )
            for name, kind, generated in columns
        )
        arrays = sql.SQL(", ".join(array_constant(texts[name]) for name, _ in sent))
        listed = sql.SQL("(SELECT {} FROM (SELECT {} FROM unnest({}) AS r ({})) AS t) AS v").format(
            outer, typed, arrays, sql.SQL(", ").join(sql.Identifier(name) for name, _ in sent)
        )
        return read_postgres(self.uri, self.table, self.schema, None, relation=listed).read_all()

    def _check_relation(self, conn: psycopg.Connection[Any], relation: Relation, transaction: Transaction) -> None:
        """Raise :class:`ChangeCaptureError` when ``relation`` (a relation message naming the table) is not
        the table now (its OID differs: the table was dropped and re-created, or renamed away and another
        created under its name, and a publication of all tables sends both): the log does not say the
        old table's rows went."""
        row = conn.execute(
            "SELECT to_regclass(%s)::oid", [sql.Identifier(self.schema, self.table).as_string(conn)]
        ).fetchone()
        if row is None or row[0] != relation.oid:
            raise ChangeCaptureError(
                f"table {self.schema}.{self.table}: a change at {lsn_text(transaction.commit_lsn)} is of the table "
                f"with OID {relation.oid}, the table of that name now has {row[0] if row else None}: it was dropped "
                "(or renamed) and re-created since. Run the stream with full_refresh: true to take a new snapshot"
            )

    def _key_indexes(self, relation: Relation) -> list[int]:
        """Tuple indexes of the stream's key columns in ``relation``. The log carries an update's or a
        delete's old key only in replica-identity columns: a key outside them (REPLICA IDENTITY USING
        INDEX on other columns) would land deletes without a key and miss key changes, so it is
        refused, as is a key column the table no longer has."""
        names = [c.name for c in relation.columns]
        key = self.primary_key or tuple(c.name for c in relation.columns if c.key)
        missing = [k for k in key if k not in names]
        outside = [k for k in key if k in names and not relation.columns[names.index(k)].key]
        if missing or (outside and relation.replica_identity != "f"):
            raise ChangeCaptureError(
                f"table {self.schema}.{self.table}: the stream's primary key {list(key)} "
                + (f"names column(s) {missing} the table does not have" if missing else
                   f"has column(s) {outside} outside the table's replica identity, so the log does not carry "
                   "them for updates and deletes: make the key the table's primary key, or set REPLICA "
                   "IDENTITY FULL (or USING INDEX on the key) on the source")
            )  # fmt: skip
        return [names.index(k) for k in key]

    @staticmethod
    def _rows(change: Change, keys: Sequence[int]) -> list[tuple[str, list[Any]]]:
        """The change rows of ``change`` as ``(op, tuple)``: an update that changed a key column (its old
        tuple then differs in a key column) is a delete of the old key followed by the update, so the
        old key does not stay in the warehouse."""
        if change.new is None:
            return [(change.op, change.old or [])]
        old = change.old
        if (
            change.op == "update"
            and old is not None
            and any(
                old[k] is not UNCHANGED and change.new[k] is not UNCHANGED and old[k] != change.new[k] for k in keys
            )
        ):
            return [("delete", old), ("update", change.new)]
        return [(change.op, change.new)]

    def _unchanged(self, change: Change, index: int, transaction: Transaction) -> str | None:
        """The text of column ``index`` that ``change`` left out as an unchanged TOASTed value: taken from the
        old row when the log sent it whole (REPLICA IDENTITY FULL), or raises :class:`ChangeCaptureError`."""
        whole = change.old_is_row or change.relation.columns[index].key  # a key-only old tuple has the key
        value = change.old[index] if change.old is not None and whole else UNCHANGED
        if value is UNCHANGED:
            name = change.relation.columns[index].name
            raise ChangeCaptureError(
                f"table {self.schema}.{self.table}: an update at {lsn_text(transaction.commit_lsn)} left column "
                f"{name!r} out of the log (an unchanged TOASTed value, which only a whole old row carries). Run "
                "ALTER TABLE ... REPLICA IDENTITY FULL on the source so that later updates carry it, then run "
                "the stream with full_refresh: true (the log cannot give this update's value again)"
            )
        return value if isinstance(value, str) else None  # a tuple holds text, NULL or UNCHANGED
