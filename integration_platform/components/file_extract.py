"""Extraction of one partition of a file stream: list, download, parse, conform, hand to landing.

The partition's files are found again at run time (the listing may have changed since the
sensor looked), downloaded into a temporary folder, parsed (:mod:`file_formats`) and
conformed to the stream's known schema (:mod:`~integration_platform.pipeline.conform`).
Each row gets ``_ip_file``, the name of the file it came from. Rows set aside (bad column
count, values that do not convert) go to the report and from there to the quarantine; a
file that cannot be parsed at all fails the run, and nothing of the partition lands.
"""

import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pyarrow as pa

from integration_platform.components.file_drops import DropRules
from integration_platform.components.file_formats import FileFormat, read_file
from integration_platform.components.stream_assets import ExtractionReport
from integration_platform.pipeline.conform import conform, known_schema
from integration_platform.pipeline.landing import list_manifests
from integration_platform.pipeline.streams import StreamSpec
from integration_platform.resources.lake import LakeStore
from integration_platform.resources.remote_files import RemoteFile, RemoteFileError, RemoteFiles
from integration_platform.resources.row_filter import RowFilter

FILE_COLUMN = "_ip_file"

#: Opens a connection to the drop server (the resource's ``connect``).
Connector = Callable[[], AbstractContextManager[RemoteFiles]]


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


def partition_files(files: list[RemoteFile], rules: DropRules, partition: str) -> list[RemoteFile]:
    """The files of ``partition``, by name."""
    chosen = [f for f in files if rules.matches(f.name) and rules.partition_key(f) == partition]
    return sorted(chosen, key=lambda f: f.name)


def _tables(
    plan: FileStreamPlan, remote: RemoteFiles, files: list[RemoteFile], store: LakeStore, report: ExtractionReport
) -> Iterator[pa.Table]:
    known = known_schema(list_manifests(store, plan.spec))
    if known is not None and FILE_COLUMN in known.names:  # added below, after conforming
        known = known.remove(known.get_field_index(FILE_COLUMN))
    declared = dict(plan.columns)
    downloaded = 0
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ip-drop-") as folder:
        for index, file in enumerate(files):
            local = Path(folder) / f"{index:05d}{Path(file.name).suffix}"  # openpyxl goes by the suffix
            downloaded += remote.download(file.path, local)
            table, rejected = read_file(local, plan.fmt, file.name, plan.spec.path)
            local.unlink()
            report.rejected.extend(rejected)
            result, known = conform(table, known, file.name, declared=declared, on_bad_rows=plan.on_bad_rows)
            report.rejected.extend(result.rejected)
            report.schema_changes.extend(result.changes)
            names = pa.array([file.name] * result.table.num_rows, pa.string())
            yield result.table.append_column(FILE_COLUMN, names)
    seconds = time.monotonic() - started
    report.metadata.update(
        {
            "files": ", ".join(f.name for f in files),
            "file_count": len(files),
            "bytes_downloaded": downloaded,
            "download_and_parse_seconds": round(seconds, 3),
        }
    )


def extract_files(
    plan: FileStreamPlan,
    connector: Connector,
    store: LakeStore,
    partition: str,
    report: ExtractionReport,
) -> pa.RecordBatchReader:
    """The rows of ``partition``'s files in the stream's schema.

    Raises :class:`~integration_platform.resources.remote_files.RemoteFileError` when the
    partition has no file or a transfer fails, ``FileFormatError`` for a file that is not
    parseable, ``BadRowsError`` for bad rows when the stream does not quarantine them.
    """
    with connector() as remote:
        files = partition_files(list(remote.list(plan.directory)), plan.rules, partition)
        if not files:
            raise RemoteFileError(f"no file in {plan.directory} belongs to partition {partition!r}")
        tables = list(_tables(plan, remote, files, store, report))
    # Files parsed earlier in the loop may predate a column a later one added: unify.
    table = pa.concat_tables(tables, promote_options="permissive")
    if plan.archive_directory:
        report.after_commit.append(lambda: _archive(connector, files, plan.archive_directory or ""))
    return pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=65536))


def _archive(connector: Connector, files: list[RemoteFile], directory: str) -> None:
    with connector() as remote:
        for file in files:
            remote.rename(file.path, f"{directory.rstrip('/')}/{file.name}")


def extractor_for(
    plan: FileStreamPlan, connector: Connector, store: LakeStore, partition: str, report: ExtractionReport
) -> Callable[[RowFilter | None], pa.RecordBatchReader]:
    """The :data:`~integration_platform.pipeline.extract.Extractor` of one partition."""
    return lambda _: extract_files(plan, connector, store, partition, report)
