"""Extraction of one partition of a file stream: list, download, parse, conform, hand to landing.

The partition's files are found again at run time (the listing may have changed since the
sensor looked), downloaded into a temporary folder, parsed (:mod:`~integration_platform.sources.files.formats`) and
conformed to the stream's known schema (:mod:`~integration_platform.core.conform`).
Each row gets ``_ip_file``, the name of the file it came from. Rows set aside (bad column
count, values that do not convert) go to the report and from there to the quarantine; a
file that cannot be parsed at all fails the run, and nothing of the partition lands.
"""

import datetime as dt
import hashlib
import queue
import re
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack, closing, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc

from integration_platform.core.conform import conform, known_schema
from integration_platform.core.extract import ExtractionReport, NothingToLand, RunScope
from integration_platform.core.lake import LakeStore
from integration_platform.core.landing import Manifest, active_manifests, list_manifests, read_landed_files
from integration_platform.core.names import MAX_SEGMENT_BYTES
from integration_platform.core.records import Rejected
from integration_platform.core.row_filter import RowFilter
from integration_platform.core.streams import StreamSpec
from integration_platform.sources.files.csv_batch import FileResult, read_files
from integration_platform.sources.files.drops import LANDED_FILES, DropRules, version
from integration_platform.sources.files.formats import FileFormat, FileFormatError, read_file
from integration_platform.sources.files.remote_files import (
    Download,
    MissingDirectoryError,
    RemoteFile,
    RemoteFileError,
    RemoteFiles,
    TargetExistsError,
)

FILE_COLUMN = "_ip_file"

#: Opens a connection to the drop server (the resource's ``connect``).
Connector = Callable[[], AbstractContextManager[RemoteFiles]]


class NoFileError(NothingToLand):
    """A partition asked for has no file on the server (a day without a drop): it is skipped."""


@dataclass(frozen=True)
class FileStreamPlan:
    """One file stream as the extractor runs it (resolved from the source's YAML)."""

    spec: StreamSpec
    directory: str
    rules: DropRules
    fmt: FileFormat
    columns: tuple[tuple[str, pa.DataType], ...] = ()
    on_bad_rows: Literal["fail", "quarantine"] = "quarantine"
    archive_directory: str | None = None


#: A step landing several partitions reads at most this many of the next files ahead, and at most
#: ``READ_AHEAD_BYTES`` of them (by their listed size), but always the next one.
READ_AHEAD_FILES = 16
READ_AHEAD_BYTES = 64 << 20

#: A file read ahead: its parsed rows, the rows its parser set aside and the bytes downloaded.
_Read = tuple[pa.Table, list[Rejected], int]


class _ReadStopped(Exception):
    """The read-ahead stopped before this file (an earlier file's download failed, or the step closed it)."""


class _ReadAhead:
    """Downloads the files of the step's next partitions on one thread with its own connection
    (:meth:`~integration_platform.sources.files.remote_files.RemoteFiles.download_many`: SFTP keeps
    several files in flight) and parses the downloaded files on a second thread, those downloaded by
    the time it gets to them together (:func:`~integration_platform.sources.files.csv_batch.read_files`),
    while the step's thread conforms and lands the current partition: a pipeline of three stages.

    Written here rather than taken from a library because the order and the bound are the
    landing's: files come in the step's partition order, and what is read ahead is bounded by
    files and bytes. Conforming stays on the step's thread (each file's schema evolves from the
    one before). A file that does not parse raises its error when it is taken, as the step's own
    read would; any other failure (a transfer) stops reading ahead, and the step reads that file and
    the next ones itself. Measured on 1,781 daily files over SFTP
    (``benchmarks/file_ingest.py``, lake step): with download and parse on one thread the step
    waited on it for 3.9 s of its 9.1 s.
    """

    def __init__(self, plan: FileStreamPlan, connector: Connector, files: list[RemoteFile], stack: ExitStack) -> None:
        self.plan, self.connector = plan, connector
        self.waiting = deque(files)
        self.pending: dict[str, Future[_Read]] = {}
        self.ahead_bytes = self.submitted = 0
        self.stopped: str | None = None
        self.folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ip-drop-ahead-")))
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="drop-download")
        self.parser = ThreadPoolExecutor(max_workers=1, thread_name_prefix="drop-parse")
        self.todo: queue.SimpleQueue[Download | None] = queue.SimpleQueue()
        self.downloads: deque[Future[tuple[Path, int]]] = deque()  # in the order put on todo, not yet done
        self.closing = False
        self.ended = False  # the download thread ended: nothing more is downloaded ahead
        self.lock = threading.Lock()
        self.downloader: Future[None] | None = None
        self.queued: deque[tuple[RemoteFile, Future[tuple[Path, int]]]] = deque()  # submitted, not yet parsed
        self.parsed: dict[str, tuple[FileResult, int]] = {}  # parsed with an earlier file, not yet asked for
        stack.callback(self.close)
        self._fill()

    def _fill(self) -> None:
        while self.waiting and len(self.pending) < READ_AHEAD_FILES:
            file = self.waiting[0]
            if self.pending and self.ahead_bytes + file.size > READ_AHEAD_BYTES:
                return
            self.waiting.popleft()
            self.ahead_bytes += file.size
            self.submitted += 1
            downloaded: Future[tuple[Path, int]] = Future()
            with self.lock:  # the download thread, once ended, takes nothing more: the file fails at once
                if self.ended:
                    downloaded.set_exception(_ReadStopped())
                else:
                    self.downloads.append(downloaded)
                    local = self.folder / f"{self.submitted:06d}{Path(file.name).suffix}"
                    self.todo.put(Download(file.path, local, file.size))
                self.queued.append((file, downloaded))
            self.pending[file.path] = self.parser.submit(self._parse, file, downloaded)
        if self.downloader is None and self.downloads:
            self.downloader = self.pool.submit(self._download_all)

    def _download_all(self) -> None:
        """The download thread: every file put on ``todo``, in order, on its own connection; each file's
        future gets its local copy, or the failure (the files after a failed one: :class:`_ReadStopped`)."""
        try:
            with self.connector() as remote, closing(remote.download_many(self.todo)) as downloads:
                for download, size in downloads:
                    self.downloads.popleft().set_result((download.local, size))
                    if self.closing:  # the step stopped reading ahead: what is in flight is dropped
                        return
        except Exception as exc:
            if self.downloads:
                self.downloads.popleft().set_exception(exc)
        finally:
            with self.lock:
                self.ended = True
                while self.downloads:
                    self.downloads.popleft().set_exception(_ReadStopped())

    def _parse(self, file: RemoteFile, downloaded: Future[tuple[Path, int]]) -> _Read:
        """The parse thread's task for ``file``: its rows, parsed together with the files queued
        after it whose downloads are done (:func:`~integration_platform.sources.files.csv_batch.read_files`:
        one pair of pyarrow reads for a group of small CSV files), unless an earlier task parsed it."""
        with self.lock:  # tasks run in the order submitted, and none after one is cancelled
            assert self.queued and self.queued[0][0] is file, f"{file.path} is not the next file queued"
            self.queued.popleft()
            later = list(self.queued)
        if file.path in self.parsed:
            result, size = self.parsed.pop(file.path)
        else:
            local, size = downloaded.result()  # the download's failure, raised for this file
            batch = [(file, local, size)]
            for other, done in later:
                if not done.done() or done.exception() is not None:
                    break
                batch.append((other, *done.result()))
            try:
                results = read_files([(path, f.name) for f, path, _ in batch], self.plan.fmt, self.plan.spec.path)
            finally:
                for _, path, _ in batch:
                    path.unlink(missing_ok=True)
            result = results[0]
            for (other, _, other_size), other_result in zip(batch[1:], results[1:], strict=True):
                self.parsed[other.path] = (other_result, other_size)
        if isinstance(result, Exception):  # raised in this file's turn (a FileFormatError fails the step)
            raise result
        table, rejected = result
        return table, rejected, size

    def take(self, file: RemoteFile) -> _Read | None:
        """The rows of ``file`` when it was read ahead, else None: the step then reads it itself.

        A file that does not parse raises its :class:`FileFormatError` here, as the step's own read
        would. Any other failure (the server refused a second session, as servers allowing one login
        per user do; the connection broke) stops the read-ahead for the rest of the step, is kept in
        :attr:`stopped`, and the step reads this file and the next ones on its own connection. An error
        raised in the step's thread while it waits (Celery's soft time limit) is raised."""
        future = self.pending.pop(file.path, None)
        if future is None:  # asked out of order, or stopped: the step reads it itself
            with suppress(ValueError):
                self.waiting.remove(file)
            return None
        self.ahead_bytes -= file.size
        try:
            read = future.result()
        except FileFormatError:
            raise
        except Exception as exc:
            if not future.done() or future.exception() is not exc:  # raised in this thread while it waited
                raise  # (Celery's soft time limit), not by the read
            self.stopped = f"{type(exc).__name__}: {exc}"
            self._cancel()
            return None
        self._fill()
        return read

    def _cancel(self) -> None:
        """Read nothing more ahead: drop what waits, end the download thread after the file it is on."""
        self.waiting.clear()
        self.closing = True
        self.todo.put(None)
        for future in self.pending.values():
            future.cancel()
        self.pending.clear()

    def close(self) -> None:
        self._cancel()
        self.pool.shutdown(wait=True)
        self.parser.shutdown(wait=True)  # a parse waits on a download that the ended download thread resolved


def _download(remote: RemoteFiles, file: RemoteFile, folder: Path, number: int) -> tuple[Path, int]:
    """Download ``file`` into ``folder`` as ``<number><suffix>`` (openpyxl goes by the suffix); returns the
    local path and the bytes downloaded. Raises what the download raises (:class:`RemoteFileError`),
    leaving no local copy."""
    local = folder / f"{number:06d}{Path(file.name).suffix}"
    try:
        return local, remote.download(file.path, local, file.size)
    except BaseException:
        local.unlink(missing_ok=True)
        raise


def _parse(plan: FileStreamPlan, file: RemoteFile, local: Path) -> tuple[pa.Table, list[Rejected]]:
    """Parse the local copy of ``file`` and remove it. Raises what the parser raises (:class:`FileFormatError`)."""
    try:
        return read_file(local, plan.fmt, file.name, plan.spec.path)
    finally:
        local.unlink(missing_ok=True)


def _download_and_read(plan: FileStreamPlan, remote: RemoteFiles, file: RemoteFile, folder: Path, number: int) -> _Read:
    """:func:`_download` then :func:`_parse`: the rows of ``file``, the rows set aside, the bytes downloaded."""
    local, size = _download(remote, file, folder, number)
    table, rejected = _parse(plan, file, local)
    return table, rejected, size


@dataclass
class _Session:
    """One connection and one listing for all partitions a step lands (a single-run backfill
    of 1,781 days would otherwise open 1,781 sessions and list the directory 1,781 times),
    and, when it lands several, the reader of the next files (:class:`_ReadAhead`)."""

    remote: RemoteFiles
    partitions: dict[str, list[RemoteFile]]
    known: pa.Schema | None
    ahead: _ReadAhead | None = None
    #: Files of each partition left out for want of their marker (streams with ``marker_suffix``).
    unmarked: dict[str, list[str]] = field(default_factory=dict)
    #: Each partition's latest active landing when the step started (a stream with an archive directory
    #: keeps the rows of its files archived since: :func:`_archived_rows`).
    landed_before: dict[str, Manifest] = field(default_factory=dict)
    #: The directory as listed for archiving (:func:`_archive_listing`) and when (``time.monotonic()``).
    archive_listing: dict[str, RemoteFile] | None = None
    #: The original names of the files in the archive directory (:func:`_in_archive`), once listed.
    archived: set[str] | None = None
    archive_listed_at: float = 0.0


def _session(plan: FileStreamPlan, connector: Connector, store: LakeStore, scope: RunScope) -> _Session:
    session = scope.cache.get("file_session")
    if isinstance(session, _Session):
        return session
    remote = scope.stack.enter_context(connector())
    partitions: dict[str, list[RemoteFile]] = {}
    unmarked: dict[str, list[str]] = {}
    listed = list(remote.list(plan.directory, plan.rules.listed))
    # with markers, each file waits for its own, written after it: a sibling's marker, or its own left from
    # an earlier version, does not make a file still being uploaded ready (the sensor judges each file so;
    # the run must take the same files)
    marked = plan.rules.marked(listed) if plan.rules.marker_suffix else None
    for file in listed:
        key = plan.rules.partition_key(file) if plan.rules.matches(file.name) else None
        if key is None:
            continue
        if marked is not None and file.name not in marked:
            unmarked.setdefault(key, []).append(file.name)
        else:
            partitions.setdefault(key, []).append(file)
    manifests = list_manifests(store, plan.spec)
    known = known_schema(manifests)
    if known is not None and FILE_COLUMN in known.names:  # added after conforming
        known = known.remove(known.get_field_index(FILE_COLUMN))
    session = scope.cache["file_session"] = _Session(remote, partitions, known, unmarked=unmarked)
    if plan.archive_directory:
        session.landed_before = {m.partition: m for m in active_manifests(manifests) if m.partition is not None}
    if len(scope.partition_keys) > 1:
        files = [f for key in scope.partition_keys for f in sorted(partitions.get(key, []), key=lambda f: f.name)]
        session.ahead = _ReadAhead(plan, connector, files, scope.stack)
    return session


def _tables(
    plan: FileStreamPlan, session: _Session, files: list[RemoteFile], report: ExtractionReport
) -> list[pa.Table]:
    """The conformed rows of each of ``files`` (read ahead, or downloaded and parsed here). Adds to
    ``report.metadata``: ``files``, ``file_count``, ``bytes_downloaded``, ``files_read_ahead``,
    ``read_ahead_stopped`` (why, when it stopped), ``download_and_parse_seconds`` (the files read here)
    and, when the step reads ahead, ``read_ahead_wait_seconds`` (waiting for the files read ahead).
    Raises ``FileFormatError`` for a file that does not parse, and a failed download as the connection raises it."""
    declared = dict(plan.columns)
    downloaded = ahead = 0
    waited = read_here = 0.0  # seconds waiting for files read ahead / downloading and parsing the others
    tables = []
    with ExitStack() as stack:
        folder: Path | None = None  # made when a file was not read ahead (a read-ahead range rarely needs it)
        for index, file in enumerate(files):
            started = time.monotonic()
            read = session.ahead.take(file) if session.ahead else None
            waited += time.monotonic() - started  # a read-ahead that failed on this file included
            ahead += read is not None
            if read is None:
                folder = folder or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ip-drop-")))
                started = time.monotonic()
                read = _download_and_read(plan, session.remote, file, folder, index)
                read_here += time.monotonic() - started
            table, rejected, size = read
            downloaded += size
            report.rejected.extend(rejected)
            if any(name.lower() == FILE_COLUMN for name in table.column_names):
                raise FileFormatError(
                    f"{file.name}: has a column {FILE_COLUMN!r}, the name of the platform's column of each row's file"
                )
            result, known = conform(table, session.known, file.name, declared=declared, on_bad_rows=plan.on_bad_rows)
            report.rejected.extend(result.rejected)
            report.schema_changes.extend(result.changes)
            names = pa.array([file.name] * result.table.num_rows, pa.string())
            tables.append(result.table.append_column(FILE_COLUMN, names))
            session.known = known
    report.metadata.update(
        {
            "files": ", ".join(f.name for f in files),
            "file_count": len(files),
            "bytes_downloaded": downloaded,
            "files_read_ahead": ahead,
            **({"read_ahead_stopped": session.ahead.stopped} if session.ahead and session.ahead.stopped else {}),
            # seconds: a file read ahead was downloaded and parsed on other threads, overlapping other
            # partitions; what this partition spent on it is the wait for it, named as such
            **({"download_and_parse_seconds": round(read_here, 3)} if ahead < len(files) else {}),
            **({"read_ahead_wait_seconds": round(waited, 3)} if session.ahead else {}),
        }
    )
    return tables


#: A step archiving several partitions lists the directory again for the version check when its
#: archive listing is older than this (seconds): one listing per step in the common case, not one
#: stat per file; a file replaced after the listing and before its rename is still moved.
ARCHIVE_LISTING_MAX_AGE = 2.0


def _archive_listing(plan: FileStreamPlan, session: _Session) -> dict[str, RemoteFile]:
    """The stream's directory by file name, as listed at archive time (reused for
    :data:`ARCHIVE_LISTING_MAX_AGE` seconds). Raises what the listing raises (:class:`RemoteFileError`)."""
    now = time.monotonic()
    if session.archive_listing is None or now - session.archive_listed_at > ARCHIVE_LISTING_MAX_AGE:
        session.archive_listing = {f.name: f for f in session.remote.list(plan.directory, plan.rules.listed)}
        session.archive_listed_at = now
    return session.archive_listing


def archived_name(file: RemoteFile) -> str:
    """The name ``file`` takes in the archive directory: its name with its version before the suffix,
    ``orders_20240101.20240102T030405Z-1234B.csv`` (mtime in UTC, size in bytes, and 8 hex digits of
    the store's tag where it has one), so a corrected file re-sent under the same name archives next
    to the first (an SFTP rename onto an existing name fails; FTP servers and buckets overwrite)."""
    stem, dot, suffix = file.name.rpartition(".")
    if not dot or not stem:
        stem, dot, suffix = file.name, "", ""
    stamp = dt.datetime.fromtimestamp(int(file.mtime), dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    tag = f"-{hashlib.sha256(file.tag.encode()).hexdigest()[:8]}" if file.tag else ""
    # a name ending in a dot keeps it: without, orders_20240101. read back as orders_20240101
    return f"{stem}.{stamp}-{file.size}B{tag}{dot}{suffix}"


def _in_archive(plan: FileStreamPlan, session: _Session, gone: list[str]) -> set[str]:
    """The original names of the stream's files in the archive directory (:func:`archived_name` read
    back), from one listing per step; other names there are passed over unchecked. Raises
    :class:`RemoteFileError` naming ``gone`` (the files landed earlier and no longer listed) when the
    archive directory cannot be listed: counting that as "nothing archived" replaced the partition
    without their rows."""
    if session.archived is None:
        assert plan.archive_directory is not None

        def ours(name: str) -> bool:
            original = _original_name(name)
            return original is not None and plan.rules.listed(original)

        try:
            names = [f.name for f in session.remote.list(plan.archive_directory, ours)]
        except MissingDirectoryError:  # nothing archived yet: the files were deleted at the source
            names = []
        except (RemoteFileError, ValueError) as exc:  # ValueError: UnsafeNameError from a bucket listing
            raise RemoteFileError(
                f"{', '.join(gone[:3])}{' ...' if len(gone) > 3 else ''}: landed earlier and no longer in "
                f"{plan.directory}, but the archive directory {plan.archive_directory} could not be listed to "
                f"keep their rows, so nothing lands: {exc}"
            ) from None
        session.archived = {original for name in names if (original := _original_name(name)) is not None}
    return session.archived


def _original_name(archived: str) -> str | None:
    """The name a file had before :func:`archived_name` renamed it, or ``None`` for a name it never made."""
    match = _ARCHIVED_NAME.match(archived)
    return None if match is None else match.group(1) + (match.group(2) or "")


#: An :func:`archived_name`: the original stem, the version, the original suffix (with its dot).
_ARCHIVED_NAME = re.compile(r"^(.+)\.\d{8}T\d{6}Z-\d+B(?:-[0-9a-f]{8})?(\.[^.]*)?$")


def _archived_rows(
    plan: FileStreamPlan, store: LakeStore, session: _Session, partition: str, files: list[RemoteFile],
    landed: dict[str, str], report: ExtractionReport,
) -> list[pa.Table]:  # fmt: skip
    """The rows that the partition's landing before this step holds of files it landed that are no longer
    listed but are in the archive directory, conformed to the stream's schema now, added to ``landed``
    (the new landing's files and versions); ``files_kept_from_archive`` names them in ``report.metadata``.
    A file gone from the listing but not archived (deleted at the source) is not kept.

    Why: a landing replaces its partition, and with an archive directory a file landed earlier is gone from
    the listing once archived. A day whose second file came later (its own marker), or whose file was
    re-published, was landed from the files listed then, and the archived file's rows were lost."""
    before = session.landed_before.get(partition)
    earlier: dict[str, str] = dict(before.extra.get(LANDED_FILES) or {}) if before is not None else {}
    gone = sorted(set(earlier) - {f.name for f in files})
    kept = [name for name in gone if name in _in_archive(plan, session, gone)] if gone else []
    if before is None or not kept:
        return []
    rows = pa.concat_tables(read_landed_files(store, before.files), promote_options="permissive")
    tables = []
    for name in kept:  # one file at a time, as its rows landed: each keeps its own name
        own = rows.filter(pc.equal(rows[FILE_COLUMN], name)).drop_columns([FILE_COLUMN])
        result, session.known = conform(
            own,
            session.known,
            f"{name} (kept from the lake)",
            declared=dict(plan.columns),
            on_bad_rows=plan.on_bad_rows,
        )
        report.rejected.extend(result.rejected)
        report.schema_changes.extend(result.changes)
        tables.append(result.table.append_column(FILE_COLUMN, pa.array([name] * result.table.num_rows, pa.string())))
    landed.update({name: earlier[name] for name in kept})
    report.metadata["files_kept_from_archive"] = ", ".join(kept)
    return tables


def extract_files(
    plan: FileStreamPlan,
    connector: Connector,
    store: LakeStore,
    partition: str,
    report: ExtractionReport,
) -> pa.RecordBatchReader:
    """The rows of ``partition``'s files in the stream's schema.

    The connection, the directory listing and the known schema are shared by every partition
    of the step (``report.scope``). With markers, only the files whose own marker is listed are taken.
    With an archive directory, each file is moved after the commit only while a listing taken then still
    shows the version landed and its archived name is free (else ``files_not_archived`` names it), under
    :func:`archived_name`.
    Raises :class:`NoFileError` when the partition has no file ready (the step skips it),
    :class:`~integration_platform.sources.files.remote_files.RemoteFileError` when a transfer
    fails, ``FileFormatError`` for a file that is not parseable, ``BadRowsError`` for bad rows
    when the stream does not quarantine them.
    """
    session = _session(plan, connector, store, report.scope)
    files = sorted(session.partitions.get(partition, []), key=lambda f: f.name)
    if not files:
        days = sorted(session.partitions)
        cover = f"the matching files cover {days[0]} .. {days[-1]}" if days else "no file matches"
        waiting = session.unmarked.get(partition, [])
        if waiting:
            older = ", or with one older than the file" if plan.rules.marker_after_file else ""
            cover += (
                f"; {len(waiting)} without their {plan.rules.marker_suffix} marker yet{older}: {', '.join(waiting[:3])}"
            )
        raise NoFileError(
            f"partition {partition} of {plan.spec.path} has no file in {plan.directory} ({cover}); "
            "nothing was landed for it"
        )
    landed = {f.name: version(f) for f in files}
    if plan.archive_directory:
        for file in files:  # an archived name the archive listing refuses would hide the file's rows later
            size = len((archived_name(file) + (plan.rules.marker_suffix or "")).encode("utf-8", "surrogatepass"))
            if size > MAX_SEGMENT_BYTES:
                raise RemoteFileError(
                    f"{file.path}: archived with its version in the name (and its marker's suffix), it would "
                    f"take {size} bytes, more than the {MAX_SEGMENT_BYTES} a listing accepts, and could not be "
                    "read back; nothing lands: rename it shorter"
                )
    report.landing_extra[LANDED_FILES] = landed  # the drop sensor's memory
    if session.unmarked.get(partition):
        report.metadata["files_waiting_for_marker"] = ", ".join(session.unmarked[partition])
    tables = _tables(plan, session, files, report)
    if plan.archive_directory:
        tables += _archived_rows(plan, store, session, partition, files, landed, report)
    # Files parsed earlier in the loop may predate a column a later one added: unify.
    table = pa.concat_tables(tables, promote_options="permissive")
    if plan.archive_directory:
        target = plan.archive_directory.rstrip("/")

        def archive() -> None:
            current = _archive_listing(plan, session)
            left, held = [], []
            for file in files:
                now = current.get(file.name)
                if now is None or version(now) != landed[file.name]:
                    left.append(file.name)  # replaced (or gone) since it was listed: the sensor lands the new one
                    continue
                try:
                    session.remote.rename(file.path, f"{target}/{archived_name(file)}")
                except TargetExistsError:  # this version re-sent unchanged after it was archived (rsync -t)
                    held.append(file.name)
                    continue
                marker = f"{file.name}{plan.rules.marker_suffix}" if plan.rules.marker_suffix else None
                if marker in current:  # a re-sent file of this name must wait for its own new marker
                    session.remote.rename(
                        current[marker].path, f"{target}/{archived_name(file)}{plan.rules.marker_suffix}"
                    )
            why = [f"{', '.join(left)} (changed since listed: not archived)"] if left else []
            if held:
                why.append(f"{', '.join(held)} (this version is archived already: left in {plan.directory})")
            if why:
                report.metadata["files_not_archived"] = "; ".join(why)

        report.after_commit.append(archive)
    return pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=65536))


def extractor_for(
    plan: FileStreamPlan, connector: Connector, store: LakeStore, partition: str, report: ExtractionReport
) -> Callable[[RowFilter | None], pa.RecordBatchReader]:
    """The :data:`~integration_platform.core.extract.Extractor` of one partition."""
    return lambda _: extract_files(plan, connector, store, partition, report)
