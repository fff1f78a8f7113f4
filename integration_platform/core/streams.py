"""What a stream is: the contract every source (SQL, REST, files, queues) hands to the pipeline.

A *stream* is one table-shaped flow of records from one source: a database table, an API
endpoint, a family of dropped files. Its :class:`StreamSpec` says how it is keyed
(primary key), how it is kept up to date (cursor / high-water mark, look-back lag, write
disposition) and how it is partitioned. The pipeline (landing, loading, cursors) only ever
sees a ``StreamSpec`` and Arrow record batches, never the source system.
"""

import re
from dataclasses import dataclass, field
from typing import Literal

WriteDisposition = Literal["replace", "append", "merge"]
DeleteMode = Literal["hard", "soft"]
Granularity = Literal["daily", "monthly", "dynamic"]

#: Identifiers we put into lake keys, asset keys and DuckDB names.
IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")
#: What a source's name may be: an :data:`IDENTIFIER` of lowercase words (letters and digits, the first
#: starting with a letter) joined by single underscores. Dagster's names join a source's name and a
#: stream's with ``__`` (the op ``<source>__<stream>``, a file stream's partitions
#: ``<source>__<stream>__files``): a ``__`` or a trailing ``_`` in a source's name made two streams of two
#: sources (``a``'s ``b__c`` and ``a__b``'s ``c``) one op, and the code location failed to load naming neither.
SOURCE_NAME = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
#: Why a name is not a :data:`SOURCE_NAME`, for error messages.
SOURCE_NAME_RULE = (
    "lowercase letters and digits in words joined by single underscores, starting with a letter (shop, "
    "chinook_api): no '__' and no leading or trailing '_', since Dagster's op and partition names join a "
    "source's name and a stream's with '__'"
)

#: The warehouse schema of the platform's own tables (the load ledger, ``core.loading``).
LEDGER_SCHEMA = "_integration_platform"
#: Names a source cannot take, since its streams' tables go to the DuckDB schema of that name:
#: DuckDB's own schemas (they take no tables) and the platform's ledger.
RESERVED_SOURCES = frozenset({"information_schema", "pg_catalog", LEDGER_SCHEMA})

#: Lineage column added to every warehouse table: the landing window a row came from.
WINDOW_COLUMN = "_ip_window"
#: Columns of a change row (change data capture, :mod:`~integration_platform.core.changes`): the
#: operation (``snapshot``/``insert``/``update``/``delete``; a tombstone of
#: :mod:`~integration_platform.core.deletes` has only this one), the commit's log position, the
#: change's order within its transaction, the commit time; and the soft-delete stamp.
OP_COLUMN = "_ip_op"
POSITION_COLUMN = "_ip_log_position"
SEQ_COLUMN = "_ip_change_seq"
COMMITTED_COLUMN = "_ip_committed_at"
DELETED_COLUMN = "_ip_deleted_at"
CHANGE_COLUMNS = (OP_COLUMN, POSITION_COLUMN, SEQ_COLUMN, COMMITTED_COLUMN)
#: Staging column of the warehouse loader: the position of a row's landing among those applied together.
STAGED_SEQ_COLUMN = "_ip_seq"
#: Columns only the platform writes, lower-case: the loader takes a landed column of one of these names
#: (in any case: DuckDB matches names without case) for its own, so a source's column of that name
#: would pass for a tombstone, a window or a change and delete or duplicate rows.
LOADER_COLUMNS = frozenset(name.lower() for name in (WINDOW_COLUMN, *CHANGE_COLUMNS, DELETED_COLUMN, STAGED_SEQ_COLUMN))


def to_identifier(name: str) -> str:
    """Turn a source-side name (``InvoiceLine``, ``order-items``) into a snake_case identifier.

    Returns a string matching :data:`IDENTIFIER`. Raises ``ValueError`` when nothing usable
    remains (for example a name made only of punctuation).
    """
    snake = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name.strip())
    snake = re.sub(r"[^0-9a-zA-Z_]+", "_", snake).strip("_").lower()
    if not snake:
        raise ValueError(f"cannot derive an identifier from the name {name!r}")
    if snake[0].isdigit():
        snake = "_" + snake
    return snake


@dataclass(frozen=True)
class Partitioning:
    """How a stream is partitioned; each partition lands (and is replaced) on its own.

    - ``daily`` / ``monthly``: half-open UTC windows ``[start, end)`` from ``start`` (an ISO
      date, ``YYYY-MM-DD``). ``column`` is the timestamp or date column a SQL source filters
      on (a date or a timestamp without time zone by its own day, whatever the server's time zone;
      a timestamptz by its UTC day); ``None`` when the source finds a partition's rows itself
      (files named by date).
      ``end`` (an ISO date, exclusive) closes a finished dataset: no partition from that date on,
      so none that cannot hold data; without it the partitions run up to the current one.
    - ``dynamic``: partitions added at run time (one per dropped file), named ``name``.
    """

    column: str | None
    granularity: Granularity
    start: str | None = None
    name: str | None = None
    end: str | None = None

    def __post_init__(self) -> None:
        if self.granularity == "dynamic" and not self.name:
            raise ValueError("dynamic partitioning needs a name")
        if self.granularity != "dynamic" and not self.start:
            raise ValueError(f"{self.granularity} partitioning needs a start date")
        if self.end is not None and (self.start is None or self.end <= self.start):
            raise ValueError(f"partition end {self.end} must come after its start {self.start}")


@dataclass(frozen=True)
class ChangeCapture:
    """A stream read from a database's change log (change data capture) rather than by a cursor.

    Its landings hold change rows: the table's columns plus the change columns of
    :mod:`~integration_platform.core.changes` (operation, log position, order within the
    transaction, commit time). Loading merges them by primary key in log order:

    - ``deletes``: ``hard`` removes a deleted row from the table; ``soft`` keeps it with the time
      of its deletion in ``_ip_deleted_at`` (``NULL`` for rows that exist).
    - ``history``: also append every change to ``<stream>__history`` (all versions of every row,
      the snapshot's first), for audit.
    """

    deletes: DeleteMode = "hard"
    history: bool = False


@dataclass(frozen=True)
class StreamSpec:
    """One stream of one source, as the pipeline sees it.

    - ``source``/``name``: a :data:`SOURCE_NAME` and an :data:`IDENTIFIER`; the lake prefix is ``source/name``
      and the DuckDB table ``"<source>"."<name>"`` in the warehouse's catalog (``core.loading.table_name``;
      the asset keys are made in ``assets/stream_assets.py``).
    - ``primary_key``: column names; required for ``merge``; may be empty otherwise.
    - ``cursor``: the high-water-mark column of an incremental stream, or ``None``.
    - ``lag``: look-back applied below the high-water mark (seconds for date/time cursors,
      units for numeric ones); rows already landed inside it are de-duplicated.
    - ``partitioning``: time partitions for append-only facts (exclusive with ``cursor``).
    - ``changes``: the stream is read from a change log (merge by primary key, no cursor).
    """

    source: str
    name: str
    write_disposition: WriteDisposition
    primary_key: tuple[str, ...] = ()
    cursor: str | None = None
    lag: float = 0.0
    partitioning: Partitioning | None = None
    description: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    #: Column name -> what the source says it holds (a database's column comments).
    column_descriptions: dict[str, str] = field(default_factory=dict)
    changes: ChangeCapture | None = None

    def __post_init__(self) -> None:
        for label, value in (("source", self.source), ("stream", self.name)):
            if not IDENTIFIER.fullmatch(value):
                raise ValueError(f"{label} name {value!r} must match {IDENTIFIER.pattern}")
        if self.source in RESERVED_SOURCES:
            owner = "the platform's load ledger" if self.source == LEDGER_SCHEMA else "DuckDB's own"
            raise ValueError(
                f"source name {self.source!r} is reserved: a source's tables go to the warehouse schema of its "
                f"name, and {self.source!r} is {owner}; choose another"
            )
        if not SOURCE_NAME.fullmatch(self.source):
            raise ValueError(f"source name {self.source!r} must be {SOURCE_NAME_RULE}")
        if self.write_disposition == "merge" and not self.primary_key:
            raise ValueError(f"stream {self.path}: write disposition 'merge' needs a primary key")
        if self.cursor and self.write_disposition == "replace":
            raise ValueError(
                f"stream {self.path}: a cursor (incremental stream) needs write disposition "
                "'append' or 'merge', not 'replace'"
            )
        if self.cursor and self.partitioning:
            raise ValueError(f"stream {self.path}: use either a cursor or partitioning, not both")
        if self.changes and (self.write_disposition != "merge" or self.cursor or self.partitioning):
            raise ValueError(
                f"stream {self.path}: change data capture merges by primary key: write disposition 'merge', "
                "no cursor, no partitioning"
            )
        if self.lag < 0:
            raise ValueError(f"stream {self.path}: lag must be >= 0, got {self.lag}")

    @property
    def path(self) -> str:
        """``source/name``: the stream's prefix in the lake."""
        return f"{self.source}/{self.name}"

    @property
    def incremental(self) -> bool:
        return self.cursor is not None
