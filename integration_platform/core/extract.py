"""One extraction of one stream: decide the window, read the source, drop rows already landed, land.

Every source kind plugs in through an :data:`Extractor`: given an optional row filter (a
range on the cursor or partition column), it returns an Arrow ``RecordBatchReader``.

Incremental streams (high-water mark in ``cursor_before``): the next read starts at
``cursor_before - lag`` with ``>=``, so rows committed late, or sharing the boundary value,
are read again; the rows among them that an earlier landing already holds (same primary
key and cursor value, or the same whole row when there is no key) are dropped before
landing. The new landing thus holds exactly the rows that changed.
"""

import itertools
import json
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from integration_platform.core.cursors import CURSOR_TYPES, CursorValue, cursor_type_problem, markable
from integration_platform.core.lake import LakeStore
from integration_platform.core.landing import (
    LandedFile,
    LandingError,
    Manifest,
    active_manifests,
    incremental_window,
    land,
    list_manifests,
    read_landed_files,
)
from integration_platform.core.partition_landing import SHARED_PARTITION_BYTES, SharedLanding, shareable, sweep_shared
from integration_platform.core.records import Rejected
from integration_platform.core.row_filter import RowFilter
from integration_platform.core.schema_evolution import widened
from integration_platform.core.streams import CHANGE_COLUMNS, LOADER_COLUMNS, OP_COLUMN, StreamSpec

ROW_INDEX = "__ip_row_index"
#: Working columns of :func:`landed_keys`: the position of a row's landing, and of the last tombstone of its key.
LANDING, DELETED_BY = "__ip_landing", "__ip_deleted_by"

Extractor = Callable[[RowFilter | None], pa.RecordBatchReader]


@dataclass
class RunScope:
    """What lives as long as the step (every partition of a single-run backfill): connections
    (closed by ``stack`` when the step ends) and what extractors cache in ``cache``, such as a
    directory listing or the stream's known schema."""

    stack: ExitStack
    cache: dict[str, Any] = field(default_factory=dict)
    #: The partitions the step lands, in landing order (empty when the stream is not partitioned):
    #: an extractor may read ahead (a file stream downloads the next partitions' files meanwhile).
    partition_keys: tuple[str, ...] = ()


@dataclass
class ExtractionReport:
    """What an extractor tells the lake asset besides its rows: records it set aside
    (written to the stream's quarantine), schema changes and source-specific metadata."""

    #: Shared by the landings of one step (connections, listings an extractor may reuse).
    scope: RunScope
    rejected: list[Rejected] = field(default_factory=list)
    schema_changes: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    #: Run after the landing committed (archiving a landed file, acknowledging messages).
    after_commit: list[Callable[[], None]] = field(default_factory=list)
    #: What the landing's manifest records besides rows (a file stream: the files and their
    #: versions, which the drop sensor reads back); filled by the extractor before its first row.
    landing_extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PartitionWindow:
    """A time partition to extract: its key and the half-open range ``[start, end)``."""

    key: str
    start: Any
    end: Any


@dataclass
class Extraction:
    """The committed landing, with the high-water marks before and after it."""

    manifest: Manifest
    cursor_before: CursorValue | None
    cursor_after: CursorValue | None
    rows_read: int
    duplicates_dropped: int


def landed_keys(
    store: LakeStore, spec: StreamSpec, keys: list[str], *, since: Any = None, skip_window: str | None = None
) -> pa.Table | None:
    """The distinct ``keys`` of the rows in the stream's active landings, or ``None`` when there
    are none: what "already landed" means for every kind (an incremental re-read inside its lag,
    a queue's redelivered messages). ``since``: only rows with ``cursor >= since`` (landings whose
    highest cursor is below it are not read); ``skip_window``: a window being replaced.

    A row whose key a later landing of tombstones deleted (:mod:`~integration_platform.core.deletes`) is
    not "already landed": the source has it again, so it lands again. Before, a key deleted and then
    restored unchanged at the source stayed deleted until a full refresh.

    Raises ``ValueError`` naming the stream, the cursor column and ``since`` when the landed cursor
    values cannot be compared with it."""
    manifests = active_manifests(list_manifests(store, spec))
    # by the key columns each landing has (a keyless stream's keys are all its columns, and a column
    # added since is not in the older landings: read as null); each group read at once, so a shared
    # file is fetched once per group
    groups: dict[tuple[str, ...], tuple[list[LandedFile], list[int]]] = {}
    for index, manifest in enumerate(manifests):
        high = CursorValue.from_json(manifest.cursor_max) if since is not None else None
        if manifest.window == skip_window or (since is not None and (high is None or high.is_below(since))):
            continue
        columns = {name for name, _ in manifest.schema}
        files, indexes = groups.setdefault(tuple(k for k in keys if k in columns), ([], []))
        files.extend(manifest.files)
        indexes.extend([index] * len(manifest.files))
    filters = [(spec.cursor, ">=", since)] if since is not None and spec.cursor else None
    parts, landings = [], []
    for present, (files, indexes) in groups.items():
        try:
            parts += read_landed_files(store, files, list(present), filters)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, OverflowError) as exc:
            raise ValueError(
                f"stream {spec.path}: the rows already landed cannot be compared with cursor column "
                f"{spec.cursor!r} >= {since!r} ({type(exc).__name__}: {exc}); full-refresh the stream"
            ) from exc
        landings += indexes
    if not parts:
        return None
    tombstones = [i for i, m in enumerate(manifests) if OP_COLUMN in dict(m.schema)] if spec.primary_key else []
    if tombstones and tombstones[-1] > min(landings):
        parts = [_not_deleted_since(store, spec, manifests, tombstones, parts, landings)]
    held = _concat(spec, parts)
    for key in keys:  # a column no landing has yet: null in all of them
        if key not in held.column_names:
            held = held.append_column(key, pa.nulls(held.num_rows))
    held = held.select(keys)
    return _nested_as_text(held).group_by(keys).aggregate([])


def _nested_as_text(table: Any) -> Any:
    """``table`` (a table or batch) with each nested column (struct, list, map) as the JSON text of its
    values, keys sorted, nulls kept: a keyless stream's rows are told apart by all their columns, and a
    hash join compares no nested value. Before, nested columns were left out of the comparison, and a
    new row differing from a landed one only in a nested field (``data.button``) was dropped as already
    landed. Cost: one ``json.dumps`` per nested value (keyless incremental streams only)."""
    for index, column in enumerate(table.schema):
        if pa.types.is_nested(column.type):
            text = [
                None if v is None else json.dumps(v, sort_keys=True, default=str)
                for v in table.column(index).to_pylist()
            ]
            table = table.set_column(index, column.name, pa.array(text, pa.string()))
    return table


def _not_deleted_since(
    store: LakeStore,
    spec: StreamSpec,
    manifests: list[Manifest],
    tombstones: list[int],
    parts: list[pa.Table],
    landings: list[int],
) -> pa.Table:
    """The rows of ``parts`` (read from ``manifests[landings[i]]``) whose primary key no later landing of
    ``tombstones`` (indexes into ``manifests``) deleted."""
    held = _concat(spec, parts)
    pk = list(spec.primary_key)
    deleted = _concat(
        spec,
        [
            part.append_column(DELETED_BY, pa.array([i] * part.num_rows, pa.int64()))
            for i in tombstones
            for part in read_landed_files(store, manifests[i].files, pk)
        ],
    )
    last = deleted.group_by(pk).aggregate([(DELETED_BY, "max")]).rename_columns([*pk, DELETED_BY])
    left, right = _joinable_keys(pk, [held[k] for k in pk], [last[k] for k in pk])
    names = [f"__ip_key_{i}" for i in range(len(left))]
    landing = pa.array([i for p, i in zip(parts, landings, strict=True) for _ in range(p.num_rows)], pa.int64())
    probe = pa.table([*left, landing, pa.array(range(held.num_rows), pa.int64())], names=[*names, LANDING, ROW_INDEX])
    joined = probe.join(
        pa.table([*right, last[DELETED_BY]], names=[*names, DELETED_BY]), keys=names, join_type="left outer"
    )
    live = pc.or_kleene(pc.is_null(joined[DELETED_BY]), pc.less(joined[DELETED_BY], joined[LANDING]))
    return held.take(joined.filter(live)[ROW_INDEX])


def _concat(spec: StreamSpec, parts: list[pa.Table]) -> pa.Table:
    """``parts`` (landed key columns) as one table, dictionaries decoded and a column's types widened to
    one; ``ValueError`` naming the stream when they conflict."""
    decoded = [
        part.cast(
            pa.schema([f.with_type(f.type.value_type) if pa.types.is_dictionary(f.type) else f for f in part.schema])
        )
        if any(pa.types.is_dictionary(f.type) for f in part.schema)
        else part
        for part in parts
    ]
    try:
        return pa.concat_tables(decoded, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ValueError(
            f"stream {spec.path}: its landings hold key columns of conflicting types ({exc}); "
            "declare the column's type in the source, or full-refresh the stream"
        ) from exc


def rows_held(store: LakeStore, spec: StreamSpec, *, each_key_once: bool = False) -> int:
    """The rows the stream's lake holds now (what its table holds once loaded): for a merge stream the
    distinct primary keys of its active landings, without those a change or a tombstone deleted (read
    only when there are landings after the last full one), otherwise the rows of its active landings.
    Partitioned streams: all partitions.
    ``each_key_once``: the source lands each key at most once (a queue, whose redelivered messages
    are dropped before landing), so the manifests' row counts are exact and no file is read."""
    manifests = active_manifests(list_manifests(store, spec))
    if spec.changes or any(OP_COLUMN in dict(m.schema) for m in manifests):  # deletes among the landings
        from integration_platform.core.loading import keys_held  # loading reads landings through this module

        return keys_held(store, spec, manifests)
    # a merge's one landing may hold a key twice too (an API's shifted pages), and its table holds it once
    if each_key_once or spec.write_disposition != "merge" or not spec.primary_key:
        return sum(m.rows for m in manifests)
    keys = landed_keys(store, spec, list(spec.primary_key))
    return 0 if keys is None else keys.num_rows


def without_landed(
    rows: pa.RecordBatch | pa.Table, seen: pa.Table | None, keys: list[str]
) -> pa.RecordBatch | pa.Table:
    """``rows`` without those whose ``keys`` are in ``seen`` (from :func:`landed_keys`), in their
    original order. Only the key columns are joined (Acero cannot carry nested columns through
    a join); the surviving rows are then taken from ``rows``.

    A null matches a null, as the warehouse's ``PARTITION BY`` groups them (Acero's join matches no
    null: a keyless stream's rows with any null were landed again by every run that re-read them),
    and a key column whose type widened since it landed (``int32`` to ``int64``, ``int64`` to
    ``double``) is compared in the wider type (the join refused the two). Raises ``ValueError``
    naming the column when its types cannot be compared (see :func:`_joinable_keys`)."""
    if seen is None or rows.num_rows == 0:
        return rows
    mine = _nested_as_text(rows.select(keys))
    left, right = _joinable_keys(keys, [mine.column(k) for k in keys], [seen.column(k) for k in keys])
    names = [f"__ip_key_{i}" for i in range(len(left))]
    probe = pa.table([*left, pa.array(range(rows.num_rows), pa.int64())], names=[*names, ROW_INDEX])
    survivors = probe.join(pa.table(right, names=names), keys=names, join_type="left anti").column(ROW_INDEX)
    survivors = survivors.combine_chunks()
    return rows.take(pc.take(survivors, pc.sort_indices(survivors)))


def _joinable_keys(
    keys: Sequence[str], left: list[pa.Array | pa.ChunkedArray], right: list[pa.Array | pa.ChunkedArray]
) -> tuple[list[Any], list[Any]]:
    """The key columns ``keys`` of both sides as a hash join can compare them: each pair in one type (the
    one that holds both, :func:`~integration_platform.core.schema_evolution.widened`, else either side's
    if the other's values, of the same kind, cast to it exactly: a time zone's other name, a finer time
    unit, another decimal precision; dictionaries decoded), and a pair holding nulls as its is-null
    flags plus its values with the nulls filled by one value common to both sides (its flags alone
    when it holds no value). Raises ``ValueError`` naming the column and both types when they cannot
    be compared."""
    out_left, out_right = [], []
    for key, a, b in zip(keys, left, right, strict=True):
        a, b = (c.cast(c.type.value_type) if pa.types.is_dictionary(c.type) else c for c in (a, b))
        if a.type != b.type:
            a, b = _one_type(key, a, b)
        if not (a.null_count or b.null_count):
            out_left.append(a)
            out_right.append(b)
            continue
        out_left.append(pc.is_null(a))
        out_right.append(pc.is_null(b))
        values = pc.drop_null(b) if len(b) > b.null_count else pc.drop_null(a)
        if len(values):
            filler = values[0]
            out_left.append(pc.fill_null(a, filler))
            out_right.append(pc.fill_null(b, filler))
    return out_left, out_right


#: Kinds of value whose types :func:`_one_type` may cast into each other (exactly, or not at all).
_KINDS = (pa.types.is_timestamp, pa.types.is_decimal, pa.types.is_date, pa.types.is_time, pa.types.is_duration)


def _one_type(key: str, new: Any, landed: Any) -> tuple[Any, Any]:
    """``new`` and ``landed`` (a key column's values now and as landed) cast to one type (see
    :func:`_joinable_keys`); ``ValueError`` when there is none."""
    wider = widened(landed.type, new.type)
    # else only one kind of value in two types (a zone's other name, another unit or precision): a
    # cast across kinds would make different values equal ("007" and 7)
    same = next((True for kind in _KINDS if kind(new.type) and kind(landed.type)), False)
    for kind in [wider] if wider is not None else [new.type, landed.type] if same else []:
        try:
            return new.cast(kind), landed.cast(kind)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            continue
    raise ValueError(
        f"key column {key!r} is {new.type} now but {landed.type} in the rows already landed, which cannot be "
        "compared; declare the column's type in the source, or full-refresh the stream"
    )


class NothingToLand(Exception):
    """Raised by an extractor when it is called (before it returns its reader) because the source
    holds nothing for its window (a day without a drop): the window is skipped, with this message
    as the reason; nothing lands and no manifest is written. Raised later, while batches are read,
    it fails the landing like any other error."""


class MissingColumnError(ValueError):
    """A stream's cursor, primary-key or partition column is not among the source's columns."""


class ReservedColumnError(ValueError):
    """A source's column has the name of one of the platform's own columns (:data:`LOADER_COLUMNS`)."""


class NullKeyError(ValueError):
    """A row of a merge stream has no value (null) in a primary-key column."""


class NullCursorError(ValueError):
    """A row of an incremental stream has no value (null) in its cursor column."""


def refuse_null_cursor(spec: StreamSpec, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """``batches`` unchanged; for a stream with a cursor, raises :class:`NullCursorError` (naming the column
    and the rows; the landing wraps it in a ``LandingError`` naming the stream and window) at the first
    batch with a null in the cursor column, so its landing fails whole.

    For a source read by ``cursor >= mark`` (a SQL table): no comparison matches NULL, so such a row
    landed with the first (full) read and one added or set to NULL later was passed over for good, in
    silence. The reader asks for those rows too (:attr:`~integration_platform.core.row_filter.RowFilter.nulls`),
    and they fail the run on every run until the source gives them a value. (dlt's incremental cursor
    raises on a NULL by default too, but only in rows it reads: its ``cursor >= mark`` query never reads
    a later one.) Cost: ``null_count`` is kept with an Arrow array."""
    for batch in batches:
        nulls = batch.column(spec.cursor).null_count if spec.cursor else 0
        if nulls:
            raise NullCursorError(
                f"{nulls:,} row(s) of a batch have no value in cursor column {spec.cursor!r}; a run reads the "
                "rows at or above the high-water mark, which a NULL never is, so such rows would be passed "
                "over: give them a value, read the table through a view whose cursor is e.g. "
                f"coalesce({spec.cursor}, created_at), or set the table's write_disposition to replace (a full "
                "read every run; it also opts the table out of defaults.cursor)"
            )
        yield batch


def refuse_null_keys(spec: StreamSpec, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """``batches`` unchanged; for a merge stream, raises :class:`NullKeyError` (naming the column and the
    rows; the landing wraps it in a ``LandingError`` naming the stream and window) at the first batch
    with a null in a primary-key column, so its landing fails whole.

    Why refused rather than landed: a merge matches rows by key, and SQL's null equals nothing, so
    such rows were neither replaced nor kept apart: DuckDB's ``PARTITION BY`` kept one of a load's
    null-key rows and dropped the others, while ``DELETE ... USING`` never matched the null-key rows of
    earlier loads, so they piled up. Other dispositions land them (their asset check reports the
    null). Cost: ``null_count`` is kept with an Arrow array."""
    keys = spec.primary_key if spec.write_disposition == "merge" else ()
    for batch in batches:
        for key in keys:
            nulls = batch.column(key).null_count
            if nulls:
                raise NullKeyError(
                    f"{nulls:,} row(s) of a batch have no value in primary-key "
                    f"column {key!r}; a merge matches rows by key, so each needs one: declare a primary key the "
                    "source always fills, or land the stream with write_disposition append"
                )
        yield batch


def missing_column(spec: StreamSpec, columns: Sequence[str]) -> tuple[str, str] | None:
    """``(role, column)`` of the first of the stream's cursor, primary-key and partition columns
    that ``columns`` lacks, or ``None``."""
    roles = [("cursor", spec.cursor)] + [("primary key", key) for key in spec.primary_key]
    if spec.partitioning is not None and spec.partitioning.column:
        roles.append(("partition", spec.partitioning.column))
    return next(((role, column) for role, column in roles if column and column not in columns), None)


def refuse_reserved_columns(spec: StreamSpec, schema: pa.Schema) -> None:
    """Raise :class:`ReservedColumnError` naming the stream and the column when ``schema`` (what a source
    brings to land) has a column of :data:`~integration_platform.core.streams.LOADER_COLUMNS`, in any
    case. A change stream's own change columns (``spec.changes``) are excepted once each: a second
    column of one of those names is the source table's (a change log's decoder adds its columns after
    the table's), which the decoder's would otherwise shadow or duplicate."""
    own = {c.lower() for c in CHANGE_COLUMNS} if spec.changes else set()
    lowered = [name.lower() for name in schema.names]
    reserved = next(
        (
            name
            for name, low in zip(schema.names, lowered, strict=True)
            if low in LOADER_COLUMNS and (low not in own or lowered.count(low) > 1)
        ),
        None,
    )
    if reserved is not None:
        raise ReservedColumnError(
            f"stream {spec.path}: the source has a column {reserved!r}, a name the platform keeps for its own "
            f"columns ({', '.join(sorted(LOADER_COLUMNS))}, in any case); rename it at the source; nothing was landed"
        )


class CursorTypeError(ValueError):
    """A stream's cursor column has a type a high-water mark cannot hold or compare."""


def require_columns(spec: StreamSpec, schema: pa.Schema) -> None:
    """Raise :class:`MissingColumnError` naming the stream, the column, its role and the columns
    that exist when ``schema`` (the extractor's, known before any row is read) lacks the cursor, a
    primary-key column or the partition column; :class:`ReservedColumnError` when it has a column of
    :data:`~integration_platform.core.streams.LOADER_COLUMNS` (the loader would take a source's
    ``_ip_op`` of ``delete`` for a tombstone); :class:`CursorTypeError` naming the stream, the cursor
    column, why and the types a cursor may have when the cursor's type cannot be a mark
    (:func:`~integration_platform.core.cursors.cursor_type_problem`: a ``time``, ``bytes``; before, the run
    failed with "unsupported cursor value type" after its files were written). A schema without columns
    (nothing was extracted) passes: there is nothing to land."""
    refuse_reserved_columns(spec, schema)
    missing = missing_column(spec, schema.names) if schema.names else None
    if missing is not None:
        role, column = missing
        raise MissingColumnError(
            f"stream {spec.path}: {role} column {column!r} is not among the source's columns "
            f"({', '.join(schema.names)}); nothing was landed"
        )
    if spec.cursor and spec.cursor in schema.names:
        problem = cursor_type_problem(schema.field(spec.cursor))
        if problem is not None:
            raise CursorTypeError(
                f"stream {spec.path}: cursor column {spec.cursor!r} cannot hold a high-water mark: {problem}; "
                f"a cursor may be {CURSOR_TYPES} column: choose another, or land the stream without one "
                "(a full replace each run); nothing was landed"
            )


def _drop_landed(
    reader: pa.RecordBatchReader,
    seen: pa.Table | None,
    keys: list[str],
    counts: dict[str, int],
    below: tuple[str, Any, Callable[[Any], pa.Table | None]] | None = None,
) -> Iterator[pa.RecordBatch]:
    """``reader``'s batches without their rows already landed (in ``seen``), counted in ``counts``.

    ``below``: ``(cursor, since, landed)``: ``seen`` holds the rows landed with ``cursor >= since``; a
    batch holding rows below ``since`` (an API filtering by day when sent a time) gets ``landed(its
    lowest cursor)`` first. Before, those rows were compared with nothing and landed again every run."""
    for batch in reader:
        counts["read"] += batch.num_rows
        if below is not None and batch.num_rows:
            cursor, since, landed = below
            low = pc.min(markable(batch.column(cursor))).as_py()
            lower = False
            with suppress(TypeError):  # a value that does not compare with the bound: as before
                lower = low is not None and low < since
            if lower:
                seen, below = landed(low), (cursor, low, landed)
        if seen is None or batch.num_rows == 0:
            yield batch
            continue
        fresh = without_landed(batch, seen, keys)
        counts["dropped"] += batch.num_rows - fresh.num_rows
        if fresh.num_rows:
            yield fresh


def extract_and_land(
    store: LakeStore,
    spec: StreamSpec,
    extractor: Extractor,
    *,
    cursor_before: CursorValue | None = None,
    full_refresh: bool = False,
    partition: PartitionWindow | None = None,
    extra: dict[str, Any] | None = None,
) -> Extraction:
    """Extract the stream's next window and land it (see the module docstring).

    - partitioned stream: ``partition`` is required; its rows replace the partition.
    - full-replace stream: the whole table lands as the ``snapshot`` window.
    - incremental stream: ``cursor_before`` is the high-water mark of the last committed
      landing (``None`` or ``full_refresh`` means load everything again).

    ``extra``: recorded in the manifest (:attr:`ExtractionReport.landing_extra`); read when the
    manifest is written, so the extractor may fill it while it reads.

    Raises ``ValueError`` for a partitioned stream without ``partition``,
    :class:`MissingColumnError` (before anything lands) for a declared column the source lacks; whatever the
    extractor raises, wrapped in :class:`LandingError` by :func:`land` when it happens
    mid-stream. The high-water mark moves only in the returned value, after the commit.

    Over 60 lines with this docstring: the three landings (partition, snapshot, incremental) are a
    few lines each and read best side by side.
    """
    counts = {"read": 0, "dropped": 0}
    if spec.partitioning is not None:
        if partition is None:
            raise ValueError(f"stream {spec.path} is partitioned: a partition is required")
        column = spec.partitioning.column
        reader = extractor(RowFilter(column, partition.start, partition.end) if column else None)
        require_columns(spec, reader.schema)
        manifest = land(
            store,
            spec,
            f"partition={partition.key}",
            _drop_landed(refuse_null_keys(spec, reader), None, [], counts),
            reader.schema,
            full=False,
            partition=partition.key,
            extra=extra,
        )
        return Extraction(manifest, None, None, counts["read"], 0)
    if spec.cursor is None:
        reader = extractor(None)
        require_columns(spec, reader.schema)
        manifest = land(
            store,
            spec,
            "snapshot",
            _drop_landed(refuse_null_keys(spec, reader), None, [], counts),
            reader.schema,
            full=True,
            extra=extra,
        )
        return Extraction(manifest, None, None, counts["read"], 0)

    before = None if full_refresh else cursor_before
    window = incremental_window(before)
    if before is None:
        reader = extractor(None)
        require_columns(spec, reader.schema)
        batches = _drop_landed(refuse_null_keys(spec, reader), None, [], counts)
    else:
        try:
            lower = before.minus_lag(spec.lag)
        except ValueError as exc:
            raise ValueError(
                f"stream {spec.path}: cursor {spec.cursor!r} holds {before.kind} values ({exc}); declare the "
                "cursor column's type (a timestamp or a number) in the source, or set lag: 0"
            ) from exc
        reader = extractor(RowFilter(spec.cursor, lower, None))
        require_columns(spec, reader.schema)
        # dict.fromkeys: a cursor that is the key itself (an id counting up) is one column, not two
        keys = list(dict.fromkeys([*spec.primary_key, spec.cursor])) if spec.primary_key else list(reader.schema.names)
        seen = landed_keys(store, spec, keys, since=lower, skip_window=window)

        def landed(since: Any) -> pa.Table | None:
            return landed_keys(store, spec, keys, since=since, skip_window=window)

        below = (spec.cursor, lower, landed)
        batches = _drop_landed(refuse_null_keys(spec, reader), seen, keys, counts, below)
    manifest = land(store, spec, window, batches, reader.schema, full=before is None, cursor_before=before, extra=extra)
    after = CursorValue.from_json(manifest.cursor_max)
    if before is not None and (after is None or after.is_below(before)):
        after = before  # late rows below the mark, or nothing new: the mark never moves back
    return Extraction(manifest, before, after, counts["read"], counts["dropped"])


#: One partition of a range to land: its window, its extractor and what its manifest records besides
#: rows (read when the manifest is written, so the extractor may fill it while it reads).
PartitionToLand = tuple[PartitionWindow, Extractor, dict[str, Any]]


def _small(batches: Iterator[pa.RecordBatch]) -> tuple[list[pa.RecordBatch], bool, int]:
    """The first batches of a partition, read until they pass ``SHARED_PARTITION_BYTES`` or end;
    whether they ended (the partition is small: all of it is in the list); and their Arrow bytes.
    The bytes are handed on rather than asked again: ``RecordBatch.nbytes`` costs 0.13-0.23 ms for a
    30-column batch whatever its row count (pyarrow 26), and was asked four times per partition of a
    backfill."""
    taken: list[pa.RecordBatch] = []
    size = 0
    for batch in batches:
        taken.append(batch)
        size += batch.nbytes
        if size > SHARED_PARTITION_BYTES:
            return taken, False, size
    return taken, True, size


def extract_and_land_partitions(
    store: LakeStore, spec: StreamSpec, partitions: Iterable[PartitionToLand]
) -> Generator[tuple[PartitionWindow, Extraction | NothingToLand, float], None, None]:
    """Extract and land a range of partitions of a partitioned stream (a single-run backfill), small
    ones into shared files (:mod:`~integration_platform.core.partition_landing`), each with its own
    manifest. Yields ``(window, Extraction, seconds)`` per partition once its manifest is committed (a
    shared file's partitions together, when the file is; ``seconds``: the partition's extraction and
    landing), or ``(window, NothingToLand, 0.0)`` for a skipped one.

    Each partition's rows replace that partition, exactly as :func:`extract_and_land` lands one.
    Raises what an extractor raises when called (:class:`MissingColumnError` too), ``LandingError`` for
    a failure while its batches are read or written, after committing, and yielding, the partitions
    before the failing one: a failure at day 500 keeps days 1..499 landed, as one landing per day
    would; except when writing the shared file itself fails (a full disk): that file's partitions
    (those since the last committed file) did not land either, and the error says which. Closed early
    (an interrupted run), it lands nothing more. Raises ``ValueError`` for an unpartitioned stream.

    Over 60 lines: the loop and its two ways out (commit what is whole on an error, drop the open
    file on an interrupt) share the open shared file; split, each piece would need all of it.
    """
    if spec.partitioning is None:
        raise ValueError(f"stream {spec.path} is not partitioned")
    column = spec.partitioning.column
    shared = SharedLanding(store, spec)
    windows: dict[str, tuple[PartitionWindow, float]] = {}

    def done(manifest: Manifest) -> tuple[PartitionWindow, Extraction, float]:
        window, seconds = windows.pop(str(manifest.partition))
        return window, Extraction(manifest, None, None, manifest.rows, 0), seconds or manifest.seconds

    try:
        for window, extractor, extra in partitions:
            started = time.monotonic()
            try:
                reader = extractor(RowFilter(column, window.start, window.end) if column else None)
            except NothingToLand as exc:
                yield window, exc, 0.0
                continue
            require_columns(spec, reader.schema)
            name = f"partition={window.key}"
            batches = refuse_null_keys(spec, reader)
            try:
                first, whole, size = _small(batches)
            except Exception as exc:
                raise LandingError(f"landing {spec.path} window {name!r} failed, nothing of it landed: {exc}") from exc
            if whole and shareable(reader.schema):
                rows = sum(b.num_rows for b in first)
                if shared.needs_new_file(reader.schema, rows, size):
                    yield from (done(m) for m in shared.finish())
                windows[window.key] = (window, 0.0)  # the manifest's own seconds: extraction + commit
                shared.add(window.key, reader.schema, first, extra, time.monotonic() - started, size=size)
                continue
            chained = itertools.chain(first, batches)
            manifest = land(store, spec, name, chained, reader.schema, full=False, partition=window.key, extra=extra)
            windows[window.key] = (window, time.monotonic() - started)
            yield done(manifest)
    except Exception:
        try:
            for manifest in shared.finish():  # the partitions before the failing one land
                yield done(manifest)
        finally:
            shared.discard()
        raise
    except BaseException:  # closed early, interrupted: what is open does not land
        shared.discard()
        raise
    yield from (done(m) for m in shared.finish())
    sweep_shared(store, spec)
