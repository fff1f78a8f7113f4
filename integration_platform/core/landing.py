"""Landing: Arrow record batches -> Parquet files + a manifest in the lake, all or nothing.

Written here rather than taken from a library because the landing guarantees are the
platform's core job: no library gives "deterministic key per window, staged then committed,
manifest last, retry overwrites" over both a local folder and S3 while streaming.

Layout of one stream in the lake::

    <source>/<stream>/<window>/part-<name>       data, unique per landing (<name>: landed_name)
    <source>/<stream>/_shared/<name>            data of many small partitions landed by one step
                                                (core.partition_landing)
    <source>/<stream>/_manifests/<window>.json  written last = the commit point
    <source>/<stream>/_quarantine/<window>.parquet  records set aside (core.quarantine)

A *window* is the unit a retry overwrites: ``snapshot`` for a full-replace stream,
``initial`` / ``after-<hash of the high-water mark>`` for an incremental stream and
``partition=<key>`` for a partitioned one. A reader only trusts files named by a manifest,
so files of a landing that died before its manifest are invisible.

A landing deletes only what it replaced: the files of the manifest(s) it read just before writing its
own. Two landings of one window may run at once (two runs of one partition, two incremental runs
from one mark): each has committed its files before writing its manifest, so a sweep of everything
its manifest does not name would delete the other's files, which the other's manifest is about to
name. A file no manifest names is deleted by :func:`sweep_unreferenced` only once no writer can
name it any more: its writer's process is gone from this host, or its name's time is older than
:data:`UNREFERENCED_GRACE`.
"""

import base64
import datetime as dt
import hashlib
import itertools
import os
import queue
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from integration_platform.core.cursors import CursorRange, CursorValue
from integration_platform.core.lake import LakeStore, host_id, process_alive
from integration_platform.core.manifest_reads import read_listed
from integration_platform.core.names import MAX_KEY_SEGMENT_BYTES, check_segment
from integration_platform.core.streams import StreamSpec

MANIFESTS = "_manifests"
QUARANTINE = "_quarantine"
#: A landed file no manifest names is deleted when its name's time is older than this (or its writer is
#: gone): a landing writes its manifest right after committing its files.
UNREFERENCED_GRACE = dt.timedelta(hours=24)
#: A landed file's name (:func:`landed_name`); before the writer was in it: ``<time>-<landing>-<n>.parquet``
#: (shared files). Files named ``part-<landing>-<n>.parquet`` (older landings) are never swept.
_LANDED_NAME = re.compile(r"^(?:part-)?(\d{8}T\d{6}Z)-(?:(\d+)@([0-9a-f]{12})-)?[0-9a-f]{12}-\d{5}\.parquet$")
_NAME_TIME = "%Y%m%dT%H%M%SZ"
DEFAULT_ROW_GROUP_ROWS = 1_000_000
#: A row group is also closed once its Arrow data reaches this size, which bounds memory for
#: wide rows (see benchmarks/sql_extract.py for the RSS / file-size trade-off measured here).
DEFAULT_ROW_GROUP_BYTES = 32 << 20
DEFAULT_FILE_ROWS = 20_000_000
#: Batches waiting for the Parquet writer. While the writer encodes a row group, the reader goes on
#: filling this queue, so a database streaming to us is not held up (a stalled COPY leaves a core
#: idle). Measured on the 5M-row extract of ``benchmarks/sql_extract.py`` (4 MiB batches, 2 cores),
#: paired runs of 4: depth 1 2.78 / 2.84 / 3.09 s median, depth 4 2.64 / 2.75 / 2.85 s; depth 8 no
#: better than 4. Memory: 16 MiB more than depth 1 for that extract.
QUEUE_DEPTH = 4
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


def quarantine_key(spec: StreamSpec, window: str) -> str:
    """The lake key of ``window``'s quarantine file: ``<source>/<stream>/_quarantine/<window>.parquet``."""
    return f"{spec.path}/{QUARANTINE}/{check_window(spec.path, window)}.parquet"


def landed_name(landing_id: str, number: int) -> str:
    """The name of landed file ``number`` of ``landing_id``, committed now by this process:
    ``<UTC time>-<pid>@<host id>-<landing id>-<number, 5 digits>.parquet``. The time and the writer
    tell :func:`sweep_unreferenced` whether a file no manifest names yet may still be named."""
    now = dt.datetime.now(dt.UTC).strftime(_NAME_TIME)
    return f"{now}-{os.getpid()}@{host_id()}-{landing_id}-{number:05d}.parquet"


def abandoned(name: str, now: dt.datetime | None = None) -> bool:
    """Whether no landing can still name the landed file called ``name`` (see :func:`landed_name`): its
    name's time is older than :data:`UNREFERENCED_GRACE` before ``now`` (default: the current UTC time),
    or its writer was a process of this host that is gone (or whose pid was reused since). False for a
    name this module does not write."""
    found = _LANDED_NAME.match(name)
    if not found:
        return False
    written = dt.datetime.strptime(found.group(1), _NAME_TIME).replace(tzinfo=dt.UTC)
    if written < (now or dt.datetime.now(dt.UTC)) - UNREFERENCED_GRACE:
        return True
    pid, host = found.group(2), found.group(3)
    return pid is not None and host == host_id() and not process_alive(int(pid), started_by=written.timestamp())


def sweep_unreferenced(
    store: LakeStore, prefix: str, named: Callable[[], Iterable[str]], now: dt.datetime | None = None
) -> list[str]:
    """Delete the landed files under ``prefix`` that are :func:`abandoned` (at ``now``) and not among the
    keys ``named`` returns; returns their keys. ``named`` (the keys the manifests name) is called only
    when an abandoned file exists, after they were found: a manifest written meanwhile names only files
    of a live writer, which are not abandoned. Only names :func:`landed_name` writes are touched."""
    old = [
        key
        for key in store.list_keys(prefix)
        if key.startswith(prefix) and abandoned(key.rsplit("/", 1)[-1], now)  # only keys under prefix
    ]
    if not old:
        return []
    keep = set(named())
    stale = [key for key in old if key not in keep]
    store.delete(stale)
    return stale


def read_manifest(store: LakeStore, spec: StreamSpec, window: str) -> Manifest | None:
    """The committed manifest of ``window``, ``None`` when it has none. Raises what the store raises for
    an unreadable one (a missing one is ``FileNotFoundError`` in every store)."""
    try:
        return Manifest.from_json(store.get_json(manifest_key(spec.path, window)))
    except FileNotFoundError:
        return None


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
        self.staging: list[Any] = []
        self.file_rows_written = 0
        self.files: list[LandedFile] = []
        self.dictionary: list[str] | bool | None = None
        #: Set by :meth:`finish`: a file opened from now on holds the landing's last rows.
        self.finishing = False

    def _open(self, first: pa.Table) -> pq.ParquetWriter:
        path = self.store.staging_path(f"{self.prefix}-{len(self.staging):05d}.parquet")  # its folder
        self.staging.append(path)
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
        path = self.staging[-1]
        self.files.append(LandedFile(key="", rows=self.file_rows_written, bytes=path.stat().st_size))

    def finish(self) -> None:
        self.finishing = True
        # An empty landing still writes one file, which carries the schema to the warehouse;
        # a stream with no columns at all (an API that returned nothing) writes none.
        if self.pending_rows or (not self.staging and len(self.schema)):
            self._flush()
        self._close_file()

    def commit(self, folder: str, landing_id: str) -> None:
        """Commit every staged file as ``<folder>/part-<landed_name>`` and set its key in ``files``."""
        for number, (path, landed) in enumerate(zip(self.staging, self.files, strict=True)):
            landed.key = f"{folder}/part-{landed_name(landing_id, number)}"
            self.store.commit(path, landed.key)

    def discard(self) -> None:
        if self.writer is not None:
            self.writer.close()
        for path in self.staging:
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
    folder = f"{spec.path}/{window}"
    staged = f"{folder}/part-{landing_id}"  # staging names only: committed as landed_name
    sink = _ParquetSink(store, staged, schema, row_group_rows, row_group_bytes, file_rows, cursor)
    try:
        _write_on_thread(sink, batches)
        sink.commit(folder, landing_id)
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
    it superseded (:func:`_collect_garbage`): the manifests read just before writing it, the window's
    previous one or, for a full landing of an unpartitioned stream, every one of the stream.
    ``started``: ``time.monotonic()`` when the landing began."""
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
    if full and partition is None:
        replaced = list_manifests(store, spec)
    else:
        replaced = [m for m in [read_manifest(store, spec, window)] if m is not None]
    store.put_json(manifest.key, manifest.to_json())
    _collect_garbage(store, spec, manifest, replaced)
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


def _collect_garbage(store: LakeStore, spec: StreamSpec, committed: Manifest, replaced: list[Manifest]) -> None:
    """Remove what the new manifest superseded: the files the ``replaced`` manifests (read before it
    was written) name in their own window's folder (a shared file is left to
    :func:`~integration_platform.core.partition_landing.sweep_shared`), and, of another window (after a
    full landing of an unpartitioned stream), the manifest and its quarantine file. Then the
    :func:`sweep_unreferenced` files and the staging files whose writer was killed
    (``LakeStore.remove_stale_staging``) in the window's folder, or after a full landing of an
    unpartitioned stream the whole stream. Runs after the commit, so a crash here leaves only
    unreferenced files, which a later landing sweeps.

    Files no replaced manifest names are never deleted here at once: they may be a concurrent
    landing's of this window, committed and about to be named (see the module docstring).
    Only the window's own folder is swept: a sweep of the whole stream per landing lists every
    window each time (quadratic over a backfill: 7 ms of a 27 ms daily-file landing at 400 days).
    A lake step sweeps the stream's staging files once when it starts (``start_lake_step``)."""
    keep = {f.key for f in committed.files} | {committed.key}
    stale: list[str] = []
    for old in replaced:
        folder = f"{spec.path}/{check_window(spec.path, old.window)}/"
        # Only keys of this stream and the old window's folder are ever deleted, whatever a manifest says.
        stale += [f.key for f in old.files if f.key.startswith(folder) and f.key not in keep]
        if old.window != committed.window:
            stale += [old.key, quarantine_key(spec, old.window)]
    store.delete(stale)
    if committed.full and committed.partition is None:
        prefix = f"{spec.path}/"

        def named() -> set[str]:
            return {f.key for m in list_manifests(store, spec) for f in m.files}
    else:
        prefix = f"{spec.path}/{check_window(spec.path, committed.window)}/"

        def named() -> set[str]:  # the window's manifest as it is now: another landing's may follow ours
            current = read_manifest(store, spec, committed.window)
            return {f.key for f in committed.files} | ({f.key for f in current.files} if current else set())

    sweep_unreferenced(store, prefix, named)
    store.remove_stale_staging(prefix)  # files of this window's writers that were killed
