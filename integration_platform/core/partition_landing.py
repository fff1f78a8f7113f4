"""Landing many small partitions at once: shared Parquet files, one manifest per partition.

Written here rather than taken from a library because it is the landing guarantee itself, made
cheap for a backfill: a step that lands a range of partitions (1,781 daily drops of 21 rows) would
otherwise open, encode, commit and sweep one Parquet file per partition, and the file's fixed
costs (footer, writer set-up, a commit) are most of a small landing's time.

Layout::

    <source>/<stream>/_shared/<UTC time>-<pid>@<host>-<id>-<n>.parquet   rows of consecutive partitions
    <source>/<stream>/_manifests/partition=<key>.json       one per partition, as before

Each partition's manifest names the shared file with the partition's ``offset`` and ``rows``
(:class:`~integration_platform.core.landing.LandedFile`): readers take only that range, so every
partition still has its own landing, its own row count and its own retry. The guarantees stay
those of :mod:`~integration_platform.core.landing`:

- a shared file is committed whole before any manifest names it, and a partition's manifest is
  its commit point: a step killed in between leaves only an unreferenced file;
- a partition re-landed later gets a new manifest (in a shared file or its own); the old rows in
  the shared file are no longer referenced, and the file is deleted by :func:`sweep_shared` once
  no manifest names it and no landing can name it any more: its name is older than
  :data:`SHARED_GRACE` or its writer is gone (a landing writes its manifests right after committing
  the file, so a young unreferenced file of a live writer may be about to be named);
- only a partition that is small (its batches fit :data:`SHARED_PARTITION_BYTES`) is shared; a
  larger one is landed on its own by :func:`~integration_platform.core.landing.land`, with its
  writer thread overlapping extraction as before.

A partition never spans two files; a file holds one schema (a partition bringing another schema
starts a new file).
"""

import datetime as dt
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from integration_platform.core.cursors import CursorRange
from integration_platform.core.lake import LakeStore
from integration_platform.core.landing import (
    DEFAULT_ROW_GROUP_BYTES,
    DICTIONARY_MIN_ROWS,
    UNREFERENCED_GRACE,
    LandedFile,
    LandingError,
    Manifest,
    check_window,
    commit_manifest,
    dictionary_columns,
    landed_name,
    list_manifests,
    parquet_writer,
    sweep_unreferenced,
)
from integration_platform.core.streams import StreamSpec

SHARED = "_shared"
#: A partition whose batches hold at most this many bytes of Arrow data is landed into a shared file.
SHARED_PARTITION_BYTES = 8 << 20
#: A shared file is closed (and its partitions' manifests written) before it passes either bound, and
#: once it has been open this long: a partition's manifest is then never long behind its extraction.
SHARED_FILE_ROWS = 1_000_000
SHARED_FILE_BYTES = 64 << 20
SHARED_FILE_SECONDS = 60.0
#: An unreferenced shared file of a live writer is deleted only when the time in its name is older than this.
SHARED_GRACE = UNREFERENCED_GRACE
#: DuckDB reads a shared file's ranges through its ``file_row_number`` column, which a stream's own
#: column of that name would clash with: such a stream lands each partition on its own.
ROW_NUMBER_COLUMN = "file_row_number"


def shareable(schema: pa.Schema) -> bool:
    """Whether partitions of ``schema`` may share files: it has columns (a landing without columns writes
    no file) and none named :data:`ROW_NUMBER_COLUMN` (any case)."""
    return len(schema) > 0 and ROW_NUMBER_COLUMN not in {name.lower() for name in schema.names}


@dataclass
class _Partition:
    """A partition written into the open shared file, waiting for the file's commit."""

    key: str
    schema: pa.Schema
    offset: int
    rows: int
    cursor: CursorRange
    extra: dict[str, Any]
    seconds: float


@dataclass
class _OpenFile:
    path: Any
    schema: pa.Schema
    opened: float
    rows: int = 0
    #: Arrow bytes of every partition added (written or pending).
    bytes: int = 0
    pending: list[pa.RecordBatch] = field(default_factory=list)
    pending_bytes: int = 0
    writer: Any = None
    partitions: list[_Partition] = field(default_factory=list)


class SharedLanding:
    """Lands whole small partitions of one stream into shared Parquet files (see the module docstring).

    For each partition: when :meth:`needs_new_file` says so, :meth:`finish` first (it commits the open
    file and yields its partitions' manifests), then :meth:`add`. :meth:`finish` at the end. On an error
    from the writer or the store, :meth:`discard` removes the open file: its partitions did not land.
    Memory: the open file's unwritten rows, at most ``DEFAULT_ROW_GROUP_BYTES`` of Arrow data plus one
    partition.
    """

    def __init__(
        self,
        store: LakeStore,
        spec: StreamSpec,
        file_rows: int = SHARED_FILE_ROWS,
        file_bytes: int = SHARED_FILE_BYTES,
    ) -> None:
        self.store, self.spec = store, spec
        self.file_rows, self.file_bytes = file_rows, file_bytes
        self.landing_id = uuid.uuid4().hex[:12]
        self.prefix = f"{spec.path}/{SHARED}/"
        self.files = 0
        self.open: _OpenFile | None = None

    def needs_new_file(self, schema: pa.Schema, rows: int, size: int) -> bool:
        """Whether a partition of ``schema``, ``rows`` rows and ``size`` Arrow bytes must go into a new
        file: the open one has another schema, would pass ``file_rows`` or ``file_bytes``, or has been
        open :data:`SHARED_FILE_SECONDS`."""
        current = self.open
        return current is not None and (
            not current.schema.equals(schema)
            or current.rows + rows > self.file_rows
            or current.bytes + size > self.file_bytes
            or time.monotonic() - current.opened > SHARED_FILE_SECONDS
        )

    def add(
        self,
        key: str,
        schema: pa.Schema,
        batches: list[pa.RecordBatch],
        extra: dict[str, Any],
        seconds: float,
        *,
        size: int | None = None,
    ) -> None:
        """Write partition ``key``'s rows (``batches``, all of ``schema``, possibly none) into the open
        shared file (opening one). ``seconds``: the partition's extraction time, reported in its manifest.
        ``size``: the batches' Arrow bytes as handed, before any cast, when the caller has them
        (``RecordBatch.nbytes`` costs 0.13-0.23 ms for a 30-column batch, whatever its row count); asked
        of the batches after the cast when ``None``.

        Raises ``UnsafeNameError`` for a key that is no plain window name, :class:`LandingError` when a
        batch does not fit ``schema`` (nothing of the partition is added), and :class:`LandingError`
        when writing the open file fails: the file is discarded, so none of its partitions (this one
        and the uncommitted ones before it) landed."""
        check_window(self.spec.path, f"partition={key}")
        fitted = []
        for batch in batches:
            try:
                fitted.append(batch if batch.schema.equals(schema) else batch.cast(schema))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as exc:
                raise LandingError(
                    f"partition {key} of {self.spec.path}: a batch does not fit its schema ({exc}); "
                    "nothing of it landed"
                ) from exc
        if self.open is None:
            path = self.store.staging_path(f"{self.prefix}{self.landing_id}.parquet")
            self.open = _OpenFile(path, schema, time.monotonic())
        target = self.open
        cursor = CursorRange(self.spec.cursor)
        rows = 0
        for batch in fitted:
            cursor.observe(batch)
            rows += batch.num_rows
            target.pending.append(batch)
        added = sum(batch.nbytes for batch in fitted) if size is None else size
        target.pending_bytes += added
        target.bytes += added
        target.partitions.append(_Partition(key, schema, target.rows, rows, cursor, extra, seconds))
        target.rows += rows
        if target.pending_bytes >= DEFAULT_ROW_GROUP_BYTES:
            try:
                self._write_pending(target)
            except Exception as exc:  # Arrow closes the file on a write error: nothing in it can commit
                first, last = target.partitions[0].key, target.partitions[-1].key
                self.discard()
                raise LandingError(
                    f"writing the shared file of {self.spec.path} failed ({type(exc).__name__}: {exc}); "
                    f"partitions {first}..{last}, in that file, did not land"
                ) from exc

    def _write_pending(self, target: _OpenFile) -> None:
        table = pa.Table.from_batches(target.pending, schema=target.schema)
        if target.writer is None:
            small = table.num_rows < DICTIONARY_MIN_ROWS
            target.writer = parquet_writer(target.path, target.schema, True if small else dictionary_columns(table))
        if table.num_rows:
            target.writer.write_table(table, row_group_size=table.num_rows)
        target.pending, target.pending_bytes = [], 0

    def finish(self) -> Iterator[Manifest]:
        """Commit the open shared file, then write the manifest of each partition in it, in order,
        yielding each once written (so a failure half-way still hands back those before it). Nothing
        to do when no file is open."""
        target, self.open = self.open, None
        if target is None:
            return
        try:
            if target.pending or target.writer is None:
                self._write_pending(target)
            target.writer.close()
            size = target.path.stat().st_size
            # Named when committed: the time in the name is when the file became visible (see sweep_shared).
            key = f"{self.prefix}{landed_name(self.landing_id, self.files)}"
            self.files += 1
            self.store.commit(target.path, key)
        except BaseException:
            self._discard(target)
            raise
        for part in target.partitions:
            share = round(size * part.rows / target.rows) if target.rows else 0
            landed = LandedFile(key=key, rows=part.rows, bytes=share, offset=part.offset)
            started = time.monotonic() - part.seconds
            window = f"partition={part.key}"
            yield commit_manifest(
                self.store, self.spec, window, self.landing_id, started, [landed], part.schema, part.cursor,
                full=False, partition=part.key, extra=part.extra,
            )  # fmt: skip

    def _discard(self, target: _OpenFile) -> None:
        if target.writer is not None:
            try:
                target.writer.close()
            except Exception:  # the file is discarded anyway
                pass
        self.store.discard(target.path)

    def discard(self) -> None:
        """Remove the open file (its partitions did not land)."""
        target, self.open = self.open, None
        if target is not None:
            self._discard(target)


def sweep_shared(store: LakeStore, spec: StreamSpec, now: dt.datetime | None = None) -> list[str]:
    """Delete the stream's shared files that no manifest names and that no landing can still name
    (:func:`~integration_platform.core.landing.abandoned` at ``now``, default the current UTC time);
    returns their keys. Only names :func:`~integration_platform.core.landing.landed_name` writes are
    touched. The manifests are read only when such a file exists, named or not: once a stream has one,
    every call reads them (a range landing calls it once, at its end)."""
    return sweep_unreferenced(
        store, f"{spec.path}/{SHARED}/", lambda: {f.key for m in list_manifests(store, spec) for f in m.files}, now
    )
