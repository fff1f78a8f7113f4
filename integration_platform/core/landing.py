"""Landing: Arrow record batches -> Parquet files + a manifest in the lake, all or nothing.

Written here rather than taken from a library because the landing guarantees are the
platform's core job: no library gives "deterministic key per window, staged then committed,
manifest last, retry overwrites" over both a local folder and S3 while streaming.

Layout of one stream in the lake::

    <source>/<stream>/<window>/part-<landing>-<n>.parquet   data, unique per landing
    <source>/<stream>/_shared/<time>-<landing>-<n>.parquet  data of many small partitions landed by
                                                            one step (core.partition_landing)
    <source>/<stream>/_manifests/<window>.json              written last = the commit point

A *window* is the unit a retry overwrites: ``snapshot`` for a full-replace stream,
``initial`` / ``after-<hash of the high-water mark>`` for an incremental stream and
``partition=<key>`` for a partitioned one. A reader only trusts files named by a manifest,
so files of a landing that died before its manifest are invisible and removed by the next
landing of the same window.
"""

import base64
import datetime as dt
import hashlib
import itertools
import queue
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from integration_platform.core.cursors import CursorRange, CursorValue
from integration_platform.core.lake import LakeStore
from integration_platform.core.manifest_reads import read_listed
from integration_platform.core.names import MAX_KEY_SEGMENT_BYTES, check_segment
from integration_platform.core.streams import StreamSpec

MANIFESTS = "_manifests"
DEFAULT_ROW_GROUP_ROWS = 1_000_000
#: A row group is also closed once its Arrow data reaches this size, which bounds memory for
#: wide rows (see benchmarks/sql_extract.py for the RSS / file-size trade-off measured here).
DEFAULT_ROW_GROUP_BYTES = 32 << 20
DEFAULT_FILE_ROWS = 20_000_000
QUEUE_DEPTH = 1
#: A column is dictionary-encoded when at most this share of its values in the first row
#: group (up to ``DICTIONARY_SAMPLE_ROWS``) are distinct.
DICTIONARY_MAX_DISTINCT_SHARE = 0.1
DICTIONARY_SAMPLE_ROWS = 100_000
#: A whole landing of fewer rows keeps the writer's default (a dictionary for every column).
DICTIONARY_MIN_ROWS = 10_000


class LandingError(RuntimeError):
    """A landing failed; nothing of it became visible. The message names stream and window."""


@dataclass
class LandedFile:
    """One Parquet file of a landing: its key, the landing's rows in it and their bytes.

    ``offset`` is set when the file is shared by the landings of several partitions (one step
    landing a range, see :mod:`~integration_platform.core.partition_landing`): the landing's rows are
    then the file's rows ``[offset, offset + rows)`` and ``bytes`` is their share of the file's size
    (by rows). ``None``: the landing owns the whole file."""

    key: str
    rows: int
    bytes: int
    offset: int | None = None


@dataclass
class Manifest:
    """What one committed landing holds. Serialised as JSON next to the data.

    ``full`` is true when the landing holds the whole stream (a replace snapshot or the
    first / full-refresh load of an incremental stream): loading it replaces the table.
    Cursor values are :class:`CursorValue` JSON dicts (``None`` for no rows / no cursor).
    """

    stream: str
    window: str
    landing_id: str
    landed_at: str
    full: bool
    files: list[LandedFile]
    rows: int
    bytes: int
    seconds: float
    schema: list[tuple[str, str]]
    primary_key: list[str]
    cursor_column: str | None = None
    cursor_before: dict[str, str] | None = None
    cursor_min: dict[str, str] | None = None
    cursor_max: dict[str, str] | None = None
    partition: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return manifest_key(self.stream, self.window)

    def to_json(self) -> dict[str, Any]:
        """The manifest as JSON; a file's ``offset`` only when set, so a manifest of a whole-file landing
        reads the same as before shared files existed (and older code can read it)."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}  # asdict deep-copies: 0.5 ms a manifest
        data["files"] = [
            {"key": f.key, "rows": f.rows, "bytes": f.bytes, **({} if f.offset is None else {"offset": f.offset})}
            for f in self.files
        ]
        data["schema"] = [list(column) for column in self.schema]
        data["extra"] = dict(self.extra)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Manifest":
        files = [LandedFile(**f) for f in data.pop("files")]
        data["schema"] = [tuple(x) for x in data["schema"]]
        return cls(files=files, **data)


def manifest_key(stream_path: str, window: str) -> str:
    """``<stream_path>/_manifests/<window>.json``; raises ``UnsafeNameError`` for a window that is
    not one plain path segment (it may hold a remote file name)."""
    return f"{stream_path}/{MANIFESTS}/{check_window(stream_path, window)}.json"


def check_window(stream_path: str, window: str) -> str:
    """``window`` when it is one plain path segment (see :func:`check_segment`), else
    ``UnsafeNameError`` (a ``ValueError``) naming the stream: a window holds partition keys, which may come from
    remote file names, and must never address a folder outside its stream."""
    # "<window>.parquet" (quarantine) is the longest name a window becomes
    return check_segment(window, f"window of lake stream {stream_path}", MAX_KEY_SEGMENT_BYTES - len(".parquet"))


def incremental_window(cursor_before: CursorValue | None) -> str:
    """Window name of an incremental landing that starts at ``cursor_before`` (deterministic)."""
    if cursor_before is None:
        return "initial"
    digest = hashlib.sha256(f"{cursor_before.kind}:{cursor_before.text}".encode()).hexdigest()
    return f"after-{digest[:20]}"


def stamped_window(kind: str, run_id: str) -> str:
    """Window name of a landing that has no natural window (a micro-batch, a snapshot, tombstones):
    ``<kind>-<UTC time to the microsecond>-<run id's first 8 characters>``, which sorts by time."""
    return f"{kind}-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S%f}-{run_id[:8]}"


def list_manifests(store: LakeStore, spec: StreamSpec) -> list[Manifest]:
    """Every committed manifest of the stream, oldest landing first."""
    manifests = [Manifest.from_json(data) for data in read_listed(store, f"{spec.path}/{MANIFESTS}/")]
    return sorted(manifests, key=lambda m: m.landed_at)


def active_manifests(manifests: list[Manifest]) -> list[Manifest]:
    """The landings that make up the stream now: the newest full landing and all after it.

    For partitioned streams every partition's manifest is active.
    """
    if any(m.partition is not None for m in manifests):
        return manifests
    last_full = max((i for i, m in enumerate(manifests) if m.full), default=None)
    return manifests[last_full:] if last_full is not None else manifests


def _leaf_count(kind: pa.DataType) -> int:
    """Parquet leaf columns one Arrow field of type ``kind`` becomes."""
    if isinstance(kind, pa.BaseExtensionType):
        return _leaf_count(kind.storage_type)
    if pa.types.is_struct(kind):
        return sum(_leaf_count(kind.field(i).type) for i in range(kind.num_fields))
    if pa.types.is_map(kind):
        return _leaf_count(kind.key_type) + _leaf_count(kind.item_type)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        return _leaf_count(kind.value_type)
    return 1


def _few_distinct(column: pa.ChunkedArray) -> bool:
    """True when at most ``DICTIONARY_MAX_DISTINCT_SHARE`` of the present values are distinct,
    or when the type has no distinct-count kernel (the writer's default then applies)."""
    present = len(column) - column.null_count
    if present == 0 or pa.types.is_dictionary(column.type):
        return True
    if isinstance(column.type, pa.BaseExtensionType):
        column = pa.chunked_array([chunk.storage for chunk in column.chunks], column.type.storage_type)
    try:
        distinct = pc.count_distinct(column).as_py()
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid, pa.ArrowTypeError):
        return True
    return bool(distinct <= DICTIONARY_MAX_DISTINCT_SHARE * present)


def dictionary_columns(table: pa.Table) -> list[str] | bool:
    """Parquet column paths of ``table`` worth dictionary encoding: few distinct values in a sample.

    Parquet writers try a dictionary for every column and fall back to plain encoding once
    it outgrows its page; for near-unique columns (keys, timestamps, free text) that attempt
    is pure cost. Measured on the 5M-row benchmark table: dictionary on every column took
    1.93 s of CPU for 159 MB, none 1.39 s for 144 MB. Nested columns keep the writer's
    default (a dictionary on every leaf). Returns ``True`` when every column qualifies, else
    the leaf paths (``tags.list.element``) as the writer's ``use_dictionary`` expects them,
    read from the Parquet schema pyarrow itself derives for ``table``.

    Flat columns are their own path (no Parquet schema is derived for them).
    """
    sample = table.slice(0, DICTIONARY_SAMPLE_ROWS)
    keep = [pa.types.is_nested(c.type) or _few_distinct(c) for c in sample.columns]
    if all(keep):
        return True
    if not any(pa.types.is_nested(f.type) for f in table.schema):
        return [f.name for f, wanted in zip(table.schema, keep, strict=True) if wanted]
    buffer = pa.BufferOutputStream()
    pq.write_table(table.schema.empty_table(), buffer)
    parquet_schema = pq.read_metadata(pa.BufferReader(buffer.getvalue())).schema
    paths = [parquet_schema.column(i).path for i in range(len(parquet_schema))]
    counts = [_leaf_count(field.type) for field in table.schema]
    if sum(counts) != len(paths):  # a layout this function does not know: the writer's default
        return True
    chosen, start = [], 0
    for count, wanted in zip(counts, keep, strict=True):
        if wanted:
            chosen += paths[start : start + count]
        start += count
    return chosen


def parquet_writer(path: Any, schema: pa.Schema, dictionary: list[str] | bool) -> pq.ParquetWriter:
    """The lake's Parquet writer for ``schema`` at ``path``: zstd level 1, statistics, a dictionary for
    the ``dictionary`` columns (see :func:`dictionary_columns`)."""
    return pq.ParquetWriter(
        path, schema, compression="zstd", compression_level=1, write_statistics=True, use_dictionary=dictionary
    )


class _ParquetSink:
    """Writes batches into row groups of at most ``row_group_rows`` rows / ``row_group_bytes``
    bytes of Arrow data, and rolls to a new file at ``file_rows``."""

    def __init__(
        self,
        store: LakeStore,
        prefix: str,
        schema: pa.Schema,
        row_group_rows: int,
        row_group_bytes: int,
        file_rows: int,
        cursor: CursorRange,
    ) -> None:
        self.store, self.prefix, self.schema = store, prefix, schema
        self.row_group_rows, self.file_rows, self.cursor = row_group_rows, file_rows, cursor
        self.pending: list[pa.RecordBatch] = []
        self.pending_rows = 0
        self.pending_bytes = 0
        self.row_group_bytes = row_group_bytes
        self.writer: pq.ParquetWriter | None = None
        self.staging: list[tuple[Any, str]] = []
        self.file_rows_written = 0
        self.files: list[LandedFile] = []
        self.dictionary: list[str] | bool | None = None
        #: Set by :meth:`finish`: a file opened from now on holds the landing's last rows.
        self.finishing = False

    def _open(self, first: pa.Table) -> pq.ParquetWriter:
        key = f"{self.prefix}-{len(self.staging):05d}.parquet"
        path = self.store.staging_path(key)
        self.staging.append((path, key))
        self.file_rows_written = 0
        if self.dictionary is None:
            # A whole landing under DICTIONARY_MIN_ROWS rows keeps the writer's default: the choice
            # costs more than it saves there (2 ms of a 10 ms landing of a 21-row daily file).
            small = self.finishing and first.num_rows < DICTIONARY_MIN_ROWS
            self.dictionary = True if small else dictionary_columns(first)
        return parquet_writer(path, self.schema, self.dictionary)

    def add(self, batch: pa.RecordBatch) -> None:
        if not batch.schema.equals(self.schema):
            try:
                batch = batch.cast(self.schema)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as exc:
                # not a LandingError: land() wraps it naming the stream and the window
                raise ValueError(f"a batch does not fit the stream's schema ({exc}); got {batch.schema}") from exc
        self.cursor.observe(batch)
        self.pending.append(batch)
        self.pending_rows += batch.num_rows
        self.pending_bytes += batch.nbytes
        if self.pending_rows >= self.row_group_rows or self.pending_bytes >= self.row_group_bytes:
            self._flush()

    def _flush(self) -> None:
        if not self.pending_rows and self.writer is not None:
            return
        table = pa.Table.from_batches(self.pending, schema=self.schema)
        if self.writer is None:
            self.writer = self._open(table)
        self.writer.write_table(table, row_group_size=max(table.num_rows, 1))
        self.file_rows_written += table.num_rows
        self.pending, self.pending_rows, self.pending_bytes = [], 0, 0
        # Hand the row group's freed buffers back to the OS now: pyarrow's mimalloc pool
        # otherwise keeps them, and a 5M-row extract peaked 10-25 MB higher.
        pa.default_memory_pool().release_unused()
        if self.file_rows_written >= self.file_rows:
            self._close_file()

    def _close_file(self) -> None:
        if self.writer is None:
            return
        self.writer.close()
        self.writer = None
        path, key = self.staging[-1]
        self.files.append(LandedFile(key=key, rows=self.file_rows_written, bytes=path.stat().st_size))

    def finish(self) -> None:
        self.finishing = True
        # An empty landing still writes one file, which carries the schema to the warehouse;
        # a stream with no columns at all (an API that returned nothing) writes none.
        if self.pending_rows or (not self.staging and len(self.schema)):
            self._flush()
        self._close_file()

    def discard(self) -> None:
        if self.writer is not None:
            self.writer.close()
        for path, _ in self.staging:
            self.store.discard(path)


def _write_on_thread(sink: _ParquetSink, batches: Iterable[pa.RecordBatch]) -> None:
    """Run the Parquet writer on its own thread behind a bounded queue.

    Extraction (network, decoding) and Parquet encoding overlap; the queue depth bounds the
    batches in flight, so memory stays flat. An error on either side stops both.

    A landing of one batch (a small file, one API page) is written on this thread: with nothing
    to overlap, the hand-over to another thread only costs (1.4 ms of a 7 ms landing of a
    21-row file, measured in a loop of 300). The second batch is read before the thread starts.
    """
    iterator = iter(batches)
    first, second = next(iterator, None), None
    if first is not None:
        second = next(iterator, None)
    if second is None:
        if first is not None:
            sink.add(first)
        sink.finish()
        return
    batches = itertools.chain((first, second), iterator)
    q: queue.Queue[pa.RecordBatch | None] = queue.Queue(maxsize=QUEUE_DEPTH)
    failure: list[BaseException] = []

    def consume() -> None:
        item: pa.RecordBatch | None = None
        try:
            while (item := q.get()) is not None:
                sink.add(item)
            sink.finish()
        except BaseException as exc:
            failure.append(exc)
            while item is not None:  # drain so the producer is never blocked forever
                item = q.get()

    thread = threading.Thread(target=consume, name="parquet-writer", daemon=True)
    thread.start()
    try:
        for batch in batches:
            if failure:
                break
            q.put(batch)
    finally:
        q.put(None)
        thread.join()
    if failure:
        raise failure[0]


def land(
    store: LakeStore,
    spec: StreamSpec,
    window: str,
    batches: Iterable[pa.RecordBatch],
    schema: pa.Schema,
    *,
    full: bool,
    cursor_before: CursorValue | None = None,
    partition: str | None = None,
    row_group_rows: int = DEFAULT_ROW_GROUP_ROWS,
    row_group_bytes: int = DEFAULT_ROW_GROUP_BYTES,
    file_rows: int = DEFAULT_FILE_ROWS,
    extra: dict[str, Any] | None = None,
) -> Manifest:
    """Write ``batches`` (all of ``schema``) as Parquet under ``window`` and commit a manifest.

    Memory: at most one row group (``row_group_rows`` rows or ``row_group_bytes`` of Arrow
    data, whichever comes first) plus ``QUEUE_DEPTH`` batches in flight.
    Returns the committed :class:`Manifest`. On any error (from the batch iterator, the
    writer or the store) every staged file is discarded, the previous landing of the window
    stays as it was, and a :class:`LandingError` naming the stream and window is raised.
    """
    check_window(spec.path, window)  # before anything is written or deleted
    started = time.monotonic()
    landing_id = uuid.uuid4().hex[:12]
    cursor = CursorRange(spec.cursor)
    prefix = f"{spec.path}/{window}/part-{landing_id}"
    sink = _ParquetSink(store, prefix, schema, row_group_rows, row_group_bytes, file_rows, cursor)
    try:
        _write_on_thread(sink, batches)
        for path, key in sink.staging:
            store.commit(path, key)
    except BaseException as exc:
        sink.discard()
        if isinstance(exc, LandingError | KeyboardInterrupt | SystemExit):
            raise
        raise LandingError(f"landing {spec.path} window {window!r} failed, nothing landed: {exc}") from exc
    return commit_manifest(
        store, spec, window, landing_id, started, sink.files, schema, cursor, full, cursor_before, partition, extra
    )


def commit_manifest(
    store: LakeStore,
    spec: StreamSpec,
    window: str,
    landing_id: str,
    started: float,
    files: list[LandedFile],
    schema: pa.Schema,
    cursor: CursorRange,
    full: bool,
    cursor_before: CursorValue | None = None,
    partition: str | None = None,
    extra: dict[str, Any] | None = None,
) -> Manifest:
    """Write the manifest of a landing whose ``files`` are committed (the commit point), then remove what
    it superseded (:func:`_collect_garbage`). ``started``: ``time.monotonic()`` when the landing began."""
    low, high = cursor.bounds()
    manifest = Manifest(
        stream=spec.path,
        window=window,
        landing_id=landing_id,
        landed_at=dt.datetime.now(dt.UTC).isoformat(timespec="microseconds"),
        full=full,
        files=files,
        rows=sum(f.rows for f in files),
        bytes=sum(f.bytes for f in files),
        seconds=round(time.monotonic() - started, 3),
        schema=[(f.name, str(f.type)) for f in schema],
        primary_key=list(spec.primary_key),
        cursor_column=spec.cursor,
        cursor_before=cursor_before.as_json() if cursor_before else None,
        cursor_min=low.as_json() if low else None,
        cursor_max=high.as_json() if high else None,
        partition=partition,
        extra={**(extra or {}), "arrow_schema": base64.b64encode(schema.serialize().to_pybytes()).decode()},
    )
    store.put_json(manifest.key, manifest.to_json())
    _collect_garbage(store, spec, manifest)
    return manifest


def read_landed(
    store: LakeStore, landed: LandedFile, columns: list[str] | None = None, filters: Any = None
) -> pa.Table:
    """The rows one landing holds in ``landed``: :func:`read_landed_files` of that one file."""
    return read_landed_files(store, [landed], columns, filters)[0]


def read_landed_files(
    store: LakeStore, files: Sequence[LandedFile], columns: list[str] | None = None, filters: Any = None
) -> list[pa.Table]:
    """The rows each of ``files`` holds, one table per entry in order: a whole file, or of a shared
    file only its own range (reading only the row groups that overlap it), with ``columns`` (all when
    ``None``) and, when given, only the rows passing ``filters`` (``(column, op, value)`` triples, all to
    hold; an integer compared exactly whatever the column's integer type, see :func:`_filter_expression`). Each
    lake file is fetched once however many entries name it (a shared file holds many partitions; on
    S3 a fetch is a download). Raises what pyarrow raises for a missing column or an unreadable file."""
    tables: list[pa.Table | None] = [None] * len(files)
    by_key: dict[str, list[int]] = {}
    for index, landed in enumerate(files):
        by_key.setdefault(landed.key, []).append(index)
    for key, indexes in by_key.items():
        with store.local_copy(key) as path:
            for index in indexes:
                table = _read_range(path, files[index], columns)
                tables[index] = table if filters is None else table.filter(_filter_expression(filters, table.schema))
    return [t for t in tables if t is not None]


#: Wide enough for every Arrow integer and every value of one (uint64's 20 digits, int64's negatives).
_ANY_INTEGER = pa.decimal128(38, 0)


def _filter_expression(filters: Sequence[tuple[str, str, Any]], schema: pa.Schema) -> pc.Expression:
    """``filters`` (``(column, op, value)`` triples, all to hold) as one expression over ``schema``'s
    columns. An integer is compared in its column's type, or, when that type cannot hold it (a
    ``uint64`` cursor above 2**63, or a mark moved below 0 by the lag against an unsigned column), both
    in ``decimal128(38, 0)``: pyarrow's own form (``pq.filters_to_expression``) made every integer an
    int64 scalar, which raised a bare ``OverflowError`` above 2**63 and cast a ``uint64`` column holding
    such values to int64 (``ArrowInvalid``)."""
    typed = []
    for column, op, value in filters:
        kind = schema.field(column).type if column in schema.names else None
        if isinstance(value, int) and not isinstance(value, bool) and kind is not None and pa.types.is_integer(kind):
            try:
                typed.append((pc.field(column), op, pa.scalar(value, kind)))
            except (OverflowError, pa.ArrowInvalid):
                typed.append((pc.field(column).cast(_ANY_INTEGER), op, pa.scalar(value, _ANY_INTEGER)))
        else:
            typed.append((pc.field(column), op, pa.scalar(value)))
    expressions = [_COMPARISONS[op](field, scalar) for field, op, scalar in typed]
    combined = expressions[0]
    for expression in expressions[1:]:
        combined = combined & expression
    return combined


_COMPARISONS: dict[str, Any] = {
    "==": lambda a, b: a == b,
    "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def _read_range(path: Path, landed: LandedFile, columns: list[str] | None) -> pa.Table:
    """``landed``'s rows of the local Parquet file ``path`` (see :func:`read_landed_files`)."""
    if landed.offset is None:
        return pq.read_table(path, columns=columns)
    parquet = pq.ParquetFile(path)
    groups, start, first = [], 0, None
    for index in range(parquet.metadata.num_row_groups):
        rows = parquet.metadata.row_group(index).num_rows
        if start < landed.offset + landed.rows and start + rows > landed.offset:
            groups.append(index)
            first = start if first is None else first
        start += rows
    table = parquet.read_row_groups(groups, columns=columns) if groups else parquet.schema_arrow.empty_table()
    if columns is not None and not groups:
        table = table.select(columns)
    return table.slice(landed.offset - (first or 0), landed.rows)


def _collect_garbage(store: LakeStore, spec: StreamSpec, committed: Manifest) -> None:
    """Remove what the new manifest superseded: older files of its window and, after a full
    landing of a non-partitioned stream, every older window; and the staging files in that same
    folder whose writer was killed (``LakeStore.remove_stale_staging``). Runs after the commit, so a
    crash here leaves only unreferenced files, which the next landing of the window removes.

    Only the window's own folder is swept: a sweep of the whole stream per landing lists every
    window each time (quadratic over a backfill: 7 ms of a 27 ms daily-file landing at 400 days).
    A lake step sweeps the whole stream once when it starts (``start_lake_step``)."""
    keep = {f.key for f in committed.files} | {committed.key}
    if committed.full and committed.partition is None:
        prefix = f"{spec.path}/"
    else:
        prefix = f"{spec.path}/{check_window(spec.path, committed.window)}/"
    # Only keys of this stream (and window) are ever deleted, whatever a store's listing returns.
    stale = [k for k in store.list_keys(prefix) if k.startswith(prefix) and k not in keep]
    store.delete(stale)
    store.remove_stale_staging(prefix)  # files of this window's writers that were killed
