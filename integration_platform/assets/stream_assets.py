"""The pair of assets every stream gets, whatever its source: lake (Parquet) -> warehouse (DuckDB).

``<source>/<stream>`` extracts and lands; its materialisation metadata carries the
high-water mark (``cursor_after``), read back by the next run. ``warehouse/<source>.<stream>``
(labelled with its DuckDB table's name in the asset graph, so the pair never shows one name twice)
applies the pending landings to DuckDB inside one transaction, in the ``duckdb`` pool (limit
1 in ``dagster.yaml``: DuckDB allows one writer per file; in cluster mode the ``warehouse`` queue's
one worker process keeps that rule instead, :mod:`integration_platform.assets.cluster`), and runs
the table's checks.
"""

import datetime as dt
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any, Literal

import dagster as dg
import duckdb

from integration_platform.assets.automation import FOLLOWS_LAKE
from integration_platform.assets.cluster import warehouse_step
from integration_platform.assets.marks import mark_metadata, read_mark, refuse_ephemeral_marks
from integration_platform.assets.partition_metadata import add_partition_metadata
from integration_platform.assets.run_recovery import reclaim_dead_runs, tag_run_host
from integration_platform.core.collector import existing_objects_frozen
from integration_platform.core.extract import (
    Extraction,
    ExtractionReport,
    Extractor,
    NothingToLand,
    PartitionToLand,
    PartitionWindow,
    RunScope,
    extract_and_land,
    extract_and_land_partitions,
    rows_held,
)
from integration_platform.core.lake import LakeStore
from integration_platform.core.landing import Manifest, active_manifests, list_manifests
from integration_platform.core.loading import (
    LoadResult,
    applied_landings,
    keys_held,
    load,
    partition_rows,
    pending,
    quote,
    table_columns,
    table_name,
    table_rows,
)
from integration_platform.core.quarantine import quarantine_key, quarantined_rows, write_quarantine
from integration_platform.core.streams import Partitioning, StreamSpec
from integration_platform.resources.lake import LakeResource

FULL_REFRESH_TAG = "integration_platform/full_refresh"
PK_CHECK = "primary_key_unique_not_null"
ROWS_CHECK = "rows_reconcile_with_lake"
QUARANTINE_CHECK = "quarantine_empty"
#: Metadata of a partition that was skipped: why (the source had nothing for it).
SKIPPED = "skipped"


class RangeFailed(Exception):
    """A single-run backfill failed after some of its partitions landed: ``landed`` holds the metadata of
    each partition that landed (or was skipped) before the failure, by partition key, and ``cause`` is
    what failed (raised again once the landed partitions are materialised)."""

    def __init__(self, landed: dict[str, dict[str, Any]], cause: Exception) -> None:
        super().__init__(str(cause))
        self.landed = landed
        self.cause = cause


#: Builds the extractor of one landing from the run's context (which holds the resources) and
#: the partition key it lands (``None`` when unpartitioned); the extractor fills the report.
ExtractorFactory = Callable[[dg.AssetExecutionContext, ExtractionReport, str | None], Extractor]


class StreamRunConfig(dg.Config):
    """Run config of a lake asset (set it in the launchpad)."""

    full_refresh: bool = False
    """Ignore the high-water mark and land the whole stream again; the warehouse table is
    replaced by it. Same as the run tag ``integration_platform/full_refresh=true``."""


def lake_key(spec: StreamSpec) -> dg.AssetKey:
    """The lake asset of a stream: ``[source, name]``."""
    return dg.AssetKey([spec.source, spec.name])


def warehouse_table_key(table: str) -> dg.AssetKey:
    """The asset of the warehouse table ``schema.table`` (unquoted): ``["warehouse", "schema.table"]``.

    The table's qualified name is the key's last part because the asset graph labels a node with
    the last part alone: with ``["warehouse", source, name]`` (until December 2026) a stream's lake and
    warehouse assets both showed as ``name``."""
    return dg.AssetKey(["warehouse", table])


def warehouse_key(spec: StreamSpec) -> dg.AssetKey:
    """The warehouse asset of a stream: ``["warehouse", "<source>.<name>"]`` (see :func:`warehouse_table_key`)."""
    return warehouse_table_key(f"{spec.source}.{spec.name}")


def partitions_def(partitioning: Partitioning | None) -> dg.PartitionsDefinition | None:
    """The Dagster partitions of a stream's :class:`Partitioning` (``None`` when unpartitioned): dynamic
    ones by name, daily and monthly UTC windows from ``start`` up to ``end`` (exclusive) or, without
    it, including the current one."""
    if partitioning is None:
        return None
    if partitioning.granularity == "dynamic":
        return dg.DynamicPartitionsDefinition(name=partitioning.name)
    assert partitioning.start is not None
    start, end = partitioning.start, partitioning.end
    closed: dict[str, Any] = {"end_date": end} if end else {"end_offset": 1}
    if partitioning.granularity == "daily":
        return dg.DailyPartitionsDefinition(start_date=start, **closed)
    return dg.MonthlyPartitionsDefinition(start_date=start, **closed)


def _partitions(context: dg.AssetExecutionContext, spec: StreamSpec) -> list[PartitionWindow | None]:
    """The partitions this run materialises: one, or a whole range (a single-run backfill)."""
    if spec.partitioning is None:
        return [None]
    if spec.partitioning.granularity == "dynamic":
        return [PartitionWindow(key, None, None) for key in context.partition_keys]
    definition = partitions_def(spec.partitioning)
    assert isinstance(definition, dg.TimeWindowPartitionsDefinition)
    windows: list[PartitionWindow | None] = []
    for key in context.partition_keys:
        window = definition.time_window_for_partition_key(key)
        windows.append(PartitionWindow(key, window.start.astimezone(dt.UTC), window.end.astimezone(dt.UTC)))
    return windows


def column_schema(spec: StreamSpec, columns: Sequence[tuple[str, str]]) -> dg.TableSchema:
    """``(name, type)`` columns as Dagster's column schema, each with the source's description of it."""
    described = spec.column_descriptions
    return dg.TableSchema(
        columns=[dg.TableColumn(name, kind, description=described.get(name)) for name, kind in columns]
    )


def _landing_metadata(spec: StreamSpec, manifest: Manifest, uri: str, seconds: float) -> dict[str, Any]:
    """``seconds``: wall time of the whole extraction and landing (the manifest's own
    ``seconds`` starts when the first batch is ready, after e.g. all HTTP pages were fetched)."""
    return {
        "dagster/row_count": manifest.rows,
        "rows_landed": manifest.rows,
        "dagster/uri": uri,
        "dagster/column_schema": column_schema(spec, manifest.schema),
        "bytes": manifest.bytes,
        "seconds": round(seconds, 3),
        "rows_per_second": round(manifest.rows / max(seconds, 1e-6)),
        "window": manifest.window,
        "landing_id": manifest.landing_id,
        "files": len(manifest.files),
    }


def _quarantine_check(store: LakeStore, spec: StreamSpec, reasons: set[str]) -> tuple[int, dg.AssetCheckResult]:
    total = quarantined_rows(store, spec)
    check = dg.AssetCheckResult(
        asset_key=lake_key(spec),
        check_name=QUARANTINE_CHECK,
        passed=total == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"quarantined_rows": total, "reasons": "; ".join(sorted(reasons)[:5])},
    )
    return total, check


def _land_one(
    context: dg.AssetExecutionContext,
    store: LakeStore,
    spec: StreamSpec,
    extractor_factory: ExtractorFactory,
    window: PartitionWindow | None,
    full_refresh: bool,
    quarantine: bool,
    scope: RunScope,
) -> dict[str, Any]:
    """Extract and land one window (the stream, or one partition); returns its metadata, or only
    ``{SKIPPED: reason}`` when the source has nothing for it (:class:`NothingToLand`)."""
    before = None if spec.partitioning else read_mark(context.instance, lake_key(spec))
    report = ExtractionReport(scope=scope)
    started = time.monotonic()
    try:
        result = extract_and_land(
            store,
            spec,
            extractor_factory(context, report, window.key if window else None),
            cursor_before=before,
            full_refresh=full_refresh,
            partition=window,
            extra=report.landing_extra,
        )
    except NothingToLand as exc:  # a day without a drop: skipped, with the reason, not a failed run
        context.log.warning(f"skipped: {exc}")
        return {SKIPPED: str(exc)}
    seconds = time.monotonic() - started
    manifest = result.manifest
    context.log.info(
        f"landed {manifest.rows} rows ({manifest.bytes} bytes) of {spec.path} window {manifest.window} "
        f"in {seconds:.3f}s; {result.duplicates_dropped} already-landed rows dropped"
    )
    return _after_landing(context, store, spec, result, report, seconds, full_refresh, quarantine)


def _land_range(
    context: dg.AssetExecutionContext,
    store: LakeStore,
    spec: StreamSpec,
    extractor_factory: ExtractorFactory,
    windows: list[PartitionWindow],
    full_refresh: bool,
    quarantine: bool,
    scope: RunScope,
) -> list[dict[str, Any]]:
    """Extract and land the partitions of a single-run backfill through the core's range landing (small
    partitions share files, each keeps its own manifest); returns each one's metadata in ``windows``
    order, as :func:`_land_one` would. A failing partition fails the step after the partitions before
    it landed (and ran their after-commit hooks); a landed partition whose quarantine or hooks fail
    fails the step after every other landed partition ran its own. One log line per skipped
    partition, none per landed one (every log line is a stored event). Raises :class:`RangeFailed`
    (with the metadata of the partitions that landed) for either failure."""
    reports: dict[str, ExtractionReport] = {}

    def partitions() -> Iterator[PartitionToLand]:
        for window in windows:
            report = reports[window.key] = ExtractionReport(scope=scope)
            yield window, extractor_factory(context, report, window.key), report.landing_extra

    landed: dict[str, dict[str, Any]] = {}
    failed: Exception | None = None  # a landed partition's quarantine or hook failed: the others still run theirs
    try:
        for window, outcome, seconds in extract_and_land_partitions(store, spec, partitions()):
            if isinstance(outcome, NothingToLand):
                context.log.warning(f"skipped partition {window.key}: {outcome}")
                landed[window.key] = {SKIPPED: str(outcome)}
                continue
            report = reports.pop(window.key)
            try:
                landed[window.key] = _after_landing(
                    context, store, spec, outcome, report, seconds, full_refresh, quarantine
                )  # fmt: skip
            except Exception as exc:
                context.log.error(f"partition {window.key} landed, but what follows its landing failed: {exc}")
                failed = failed or exc
    except Exception as exc:  # a partition failed: those before it landed, and are materialised
        raise RangeFailed(landed, exc) from exc
    if failed is not None:
        raise RangeFailed(landed, failed) from failed
    return [landed[window.key] for window in windows]


def _per_partition(store: LakeStore, spec: StreamSpec, landed: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each partition's own metadata in a single-run backfill, from ``landed`` (each partition's landing
    metadata by key, in the range's order): a skipped partition says why it holds nothing new, with the
    rows the lake holds for it (an earlier landing whose files were archived; Dagster materialises the
    whole range); a landed one without its rate (its seconds are the step's own on it: its files were
    read ahead on other threads and its commit shared, so a rate from them would be untrue: 21 rows in
    0.4 ms, 52,500/s) and, but on the last landed one, without the column schema (the UI shows the
    columns of the latest materialisation)."""
    held = _rows_held_by_partition(store, spec) if any(SKIPPED in m for m in landed.values()) else {}
    last = [key for key, metadata in landed.items() if SKIPPED not in metadata][-1:]
    shown: dict[str, dict[str, Any]] = {}
    for key, metadata in landed.items():
        if SKIPPED in metadata:
            shown[key] = {SKIPPED: metadata[SKIPPED], "rows_landed": 0, "dagster/row_count": held.get(key, 0)}
        else:
            drop = {"_reasons", "rows_per_second"} | (set() if [key] == last else {"dagster/column_schema"})
            shown[key] = {name: value for name, value in metadata.items() if name not in drop}
    return shown


def _landed_before_failure(
    store: LakeStore, spec: StreamSpec, failure: RangeFailed
) -> Iterator[dg.AssetMaterialization]:
    """A materialisation of each partition a single-run backfill landed (or skipped) before it failed, with
    its own figures as the successful run shows them (:func:`_per_partition`) and the error: the lake
    holds those partitions (their files archived, their messages acknowledged), and before, the failed
    step left them shown as never landed (Dagster marks a planned partition without a materialisation as
    failed)."""
    for key, shown in _per_partition(store, spec, failure.landed).items():
        shown["run_failed_at_another_partition"] = str(failure.cause)[:500]
        yield dg.AssetMaterialization(asset_key=lake_key(spec), partition=key, metadata=shown)


def _after_landing(
    context: dg.AssetExecutionContext,
    store: LakeStore,
    spec: StreamSpec,
    result: Extraction,
    report: ExtractionReport,
    seconds: float,
    full_refresh: bool,
    quarantine: bool,
) -> dict[str, Any]:
    """What follows a committed landing, whatever landed it: its metadata (``seconds``: the wall time of
    its extraction and landing), its quarantined records written, then the extractor's after-commit
    hooks (archive the files, acknowledge messages)."""
    manifest = result.manifest
    metadata = _landing_metadata(spec, manifest, store.uri(manifest.key), seconds)
    metadata["rows_read"] = result.rows_read
    metadata["duplicates_dropped"] = result.duplicates_dropped
    metadata["full_refresh"] = full_refresh
    if spec.cursor:
        metadata.update(mark_metadata(result.cursor_before, result.cursor_after))
    if report.schema_changes:
        metadata["schema_changes"] = dg.MetadataValue.md("\n".join(f"- {c}" for c in report.schema_changes))
    if quarantine:
        written = write_quarantine(store, spec, manifest.window, report.rejected, context.run.run_id)
        metadata["quarantined"] = written
        if written:
            metadata["quarantine_uri"] = store.uri(quarantine_key(spec, manifest.window))
        metadata["_reasons"] = {r.reason for r in report.rejected}
    for hook in report.after_commit:
        hook()
    metadata.update(report.metadata)  # after the hooks: what they did is the extractor's to report too
    return metadata


def windows_text(windows: Sequence[str]) -> str:
    """The windows a step applied, for its metadata: all of them up to 5, else the first and the
    last with the count (run-wide metadata is copied onto each partition's materialisation)."""
    if len(windows) <= 5:
        return ", ".join(windows)
    return f"{windows[0]} .. {windows[-1]} ({len(windows)} windows)"


def _summed(landed: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    """Metadata of a run that landed several partitions (a single-run backfill; ``seconds``: the wall
    time of the whole range's extraction and landing). Dagster copies it onto every partition's
    materialisation, under that partition's own metadata (``_land_one``), so its keys say they are the
    run's: a skipped partition would otherwise show the run's bytes as its own."""
    rows = sum(int(m["rows_landed"]) for m in landed)
    shown = round(seconds, 3)  # the rate is the one these seconds give
    return {
        "rows_landed_in_run": rows,
        "partitions_landed": len(landed),
        "bytes_in_run": sum(int(m["bytes"]) for m in landed),
        "seconds_in_run": shown,
        "rows_per_second_in_run": round(rows / max(shown, 1e-3)),
        "windows_in_run": windows_text([str(m["window"]) for m in landed]),
        "quarantined_in_run": sum(int(m.get("quarantined", 0)) for m in landed),
    }


def default_tags(spec: StreamSpec, layer: Literal["lake", "warehouse"]) -> dict[str, str]:
    """The tags every stream asset carries, for the catalog's filters (``tag:layer=warehouse``):
    its layer, its source and its write disposition. ``post_processing`` in YAML adds to them."""
    return {"layer": layer, "source": spec.source, "write_disposition": spec.write_disposition}


def lake_asset_arguments(
    spec: StreamSpec,
    kind: str,
    source_resource: str,
    deps: Sequence[dg.AssetKey] = (),
    check_specs: Sequence[dg.AssetCheckSpec] = (),
) -> dict[str, Any]:
    """The ``dg.multi_asset`` arguments of a stream's lake asset, for every kind: the asset (key,
    group, kinds ``{kind, "parquet"}``, partitions, the stream's contract as definition metadata, the
    cursor and lag only for incremental streams), its checks, a single-run backfill policy when
    partitioned, and the lake and the source's resource. A multi-asset of one asset only to be
    subsettable: its checks can then run alone, against what is landed."""
    metadata: dict[str, Any] = {"write_disposition": spec.write_disposition, "primary_key": ", ".join(spec.primary_key)}
    if spec.cursor:
        metadata |= {"cursor": spec.cursor, "lag": spec.lag}
    partitions = partitions_def(spec.partitioning)
    asset = dg.AssetSpec(
        lake_key(spec),
        group_name=spec.source,
        kinds={kind, "parquet"},
        partitions_def=partitions,
        deps=list(deps),
        description=spec.description,
        metadata={**metadata, **spec.metadata},
        tags=default_tags(spec, "lake"),
    )
    return {
        "name": "__".join(lake_key(spec).path),
        "specs": [asset],
        "check_specs": list(check_specs),
        "can_subset": True,
        "partitions_def": partitions,
        "backfill_policy": dg.BackfillPolicy.single_run() if spec.partitioning else None,
        "required_resource_keys": {"lake", source_resource},
    }


def start_lake_step(context: dg.AssetExecutionContext, spec: StreamSpec) -> LakeStore:
    """What every lake step does first, whatever its kind: tag the run with this host, reclaim the
    pool slots of dead runs (before this run's load needs the slot), open the lake and remove the
    stream's staging files whose writer was killed (each landing then sweeps only its window)."""
    tag_run_host(context)
    reclaim_dead_runs(context.instance, context.log.warning)
    lake: LakeResource = context.resources.lake
    store = lake.store()
    store.remove_stale_staging(f"{spec.path}/")
    return store


def lake_asset(
    spec: StreamSpec,
    kind: str,
    source_resource: str,
    extractor_factory: ExtractorFactory,
    deps: Sequence[dg.AssetKey] = (),
    quarantine: bool = False,
) -> dg.AssetsDefinition:
    """The asset that extracts ``spec`` with the source's extractor and lands it in the lake.

    ``deps``: assets the extraction reads (a parent stream a child fans out from).
    ``quarantine``: the source may set records aside; adds the ``quarantine_empty`` check
    (severity WARN), which fails while the stream's quarantine holds records.

    Over 60 lines: most of it is the asset's declaration (Dagster's decorator arguments); the body
    reads as the order the guarantees need (refuse an ephemeral mark, tag, reclaim, land, check).
    """
    empty = "No records of this stream are in quarantine."
    check_specs = [dg.AssetCheckSpec(QUARANTINE_CHECK, asset=lake_key(spec), description=empty)] if quarantine else []

    @dg.multi_asset(**lake_asset_arguments(spec, kind, source_resource, deps, check_specs))
    def _lake(
        context: dg.AssetExecutionContext, config: StreamRunConfig
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult | dg.AssetMaterialization]:
        if lake_key(spec) not in context.selected_asset_keys:  # its check alone, against what is landed
            lake: LakeResource = context.resources.lake
            yield _quarantine_check(lake.store(), spec, set())[1]
            return
        refuse_ephemeral_marks(context, spec.incremental, spec.path)
        store = start_lake_step(context, spec)
        full_refresh = config.full_refresh or context.run.tags.get(FULL_REFRESH_TAG, "").lower() == "true"
        with ExitStack() as stack:
            stack.enter_context(existing_objects_frozen())  # no collection walks what the step inherits
            windows = _partitions(context, spec)
            scope = RunScope(stack, partition_keys=tuple(w.key for w in windows if w is not None))
            ranged = [w for w in windows if w is not None]
            started = time.monotonic()
            if len(windows) > 1 and len(ranged) == len(windows):  # a single-run backfill
                failure: RangeFailed | None = None
                try:
                    landed = _land_range(
                        context, store, spec, extractor_factory, ranged, full_refresh, quarantine, scope
                    )  # fmt: skip
                except RangeFailed as failed:
                    failure = failed
                if failure is not None:  # raised outside the handler: the error keeps its own cause
                    yield from _landed_before_failure(store, spec, failure)
                    raise failure.cause
            else:
                landed = [
                    _land_one(context, store, spec, extractor_factory, windows[0], full_refresh, quarantine, scope)
                ]
            seconds = time.monotonic() - started
        reasons = {reason for m in landed for reason in m.pop("_reasons", set())}
        skipped = sum(SKIPPED in m for m in landed)
        if skipped == len(landed):
            # nothing to land: not materialised (a subsettable asset's output is optional), and its
            # warehouse load is skipped with it
            return
        if len(landed) > 1:  # a single-run backfill: every partition of the range gets its own figures
            done = [m for m in landed if SKIPPED not in m]
            rows = sum(int(m["rows_landed"]) for m in done)
            context.log.info(f"landed {len(done)} partitions of {spec.path}, {rows} rows; {skipped} skipped")
            keyed = {window.key: m for window, m in zip(ranged, landed, strict=True)}
            add_partition_metadata(context, lake_key(spec), _per_partition(store, spec, keyed))
            metadata = {**_summed(done, seconds), "partitions_skipped": skipped}
        else:
            metadata = landed[0]
        if spec.partitioning is None:  # the rows the stream holds now, beside this landing's rows_landed
            metadata["dagster/row_count"] = rows_held(store, spec)
        checks = []
        if quarantine:
            metadata["quarantine_rows_total"], check = _quarantine_check(store, spec, reasons)
            checks.append(check)
        selected = context.selected_asset_check_keys
        checks = [c for c in checks if dg.AssetCheckKey(lake_key(spec), c.check_name or "") in selected]
        yield dg.MaterializeResult(asset_key=lake_key(spec), metadata=metadata, check_results=checks)

    return _lake


def _rows_held_by_partition(store: LakeStore, spec: StreamSpec) -> dict[str, int]:
    """``{partition key: rows}`` of every partition of ``spec`` the lake holds a landing of (its manifest's
    rows); raises what :func:`list_manifests` raises."""
    return {m.partition: m.rows for m in list_manifests(store, spec) if m.partition is not None}


def _expected_rows(
    conn: duckdb.DuckDBPyConnection, store: LakeStore, spec: StreamSpec, active: list[Manifest] | None = None
) -> int:
    """Rows the table must hold according to the lake and the load ledger; ``active``: the stream's
    active manifests as the load listed them (listed here when ``None``), which a merge stream does not
    use: it counts the keys in the landed files, and a lake step committing during the load may have
    deleted those of a landing it superseded."""
    applied = applied_landings(conn, spec)
    if active is None or spec.write_disposition == "merge":
        active = active_manifests(list_manifests(store, spec))
    manifests = [m for m in active if (m.window, m.landing_id) in applied]
    if spec.write_disposition != "merge":
        return sum(m.rows for m in manifests)
    return keys_held(store, spec, manifests)


def _selected(
    context: dg.AssetExecutionContext, spec: StreamSpec, checks: list[dg.AssetCheckResult]
) -> Iterator[dg.AssetCheckResult]:
    """The results of the checks this run selected (a subset run must not report the others)."""
    selected = context.selected_asset_check_keys
    return (c for c in checks if dg.AssetCheckKey(warehouse_key(spec), c.check_name or "") in selected)


def _checks(
    conn: duckdb.DuckDBPyConnection,
    store: LakeStore,
    spec: StreamSpec,
    table_rows: int,
    active: list[Manifest] | None = None,
) -> list[dg.AssetCheckResult]:
    results = []
    if spec.primary_key:
        keys = ", ".join(quote(k) for k in spec.primary_key)
        nulls = " OR ".join(f"{quote(k)} IS NULL" for k in spec.primary_key)
        # duplicates among the rows with a whole key: count(DISTINCT) leaves out a single column's nulls,
        # so every null-keyed row after the first was also counted as a duplicate key
        whole = f"FILTER (WHERE NOT ({nulls}))"
        counted = f"SELECT count(*) {whole} - count(DISTINCT ({keys})) {whole}, count(*) FILTER (WHERE {nulls})"
        row = (
            conn.execute(f"{counted} FROM {table_name(conn, spec)}").fetchone()
            if table_columns(conn, spec)
            else None  # no table: nothing has ever landed
        )
        duplicates, null_keys = (int(row[0]), int(row[1])) if row else (0, 0)
        results.append(
            dg.AssetCheckResult(
                check_name=PK_CHECK,
                passed=duplicates == 0 and null_keys == 0,
                metadata={"duplicate_keys": duplicates, "null_keys": null_keys},
            )
        )
    expected = _expected_rows(conn, store, spec, active)
    results.append(
        dg.AssetCheckResult(
            check_name=ROWS_CHECK,
            passed=expected == table_rows,
            metadata={"rows_in_duckdb": table_rows, "rows_expected_from_lake": expected},
        )
    )
    return results


_LOCK_HOLDER = re.compile(r"[Cc]onflicting lock is held in (.*?) \(PID (\d+)\)")


def lock_holder(database: str) -> str | None:
    """Who holds the DuckDB file ``database`` open (``"PID 123 (/usr/bin/python3)"``), or ``None`` when this
    process can open it for writing now. DuckDB lets one process at a time hold a file for writing, and its
    lock error names the holder's program and PID; the command line is left out (it may carry a password)."""
    try:
        duckdb.connect(database).close()
        return None
    except duckdb.ConnectionException:
        return None  # this process has the file open already (with another configuration): no lock to wait for
    except duckdb.IOException as exc:
        found = _LOCK_HOLDER.search(str(exc))
        if not found:
            raise
    return f"PID {found.group(2)} ({found.group(1)})"


@contextmanager
def warehouse_connection(
    context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext,
) -> Iterator[duckdb.DuckDBPyConnection]:
    """The warehouse resource's connection; when another process holds the DuckDB file, the step says who
    (PID and program) before dagster-duckdb's retries wait for it (about 100 s), and fails naming it if the
    file is still locked then. Readers block loads too: see the README on reading the warehouse."""
    resource = context.resources.warehouse
    holder = lock_holder(resource.database)
    if holder:
        context.log.warning(
            f"the warehouse {resource.database} is held open by {holder}; waiting for it to close (DuckDB "
            "lets one process at a time open a file for writing, and a reading process blocks writers too)"
        )
    with ExitStack() as stack:
        try:
            conn = stack.enter_context(resource.get_connection())
        except duckdb.IOException as exc:
            holder = lock_holder(resource.database) or holder or "another process"
            raise dg.Failure(
                description=f"the warehouse {resource.database} stayed locked by {holder}: close that connection "
                f"(an analyst's DuckDB session?) and retry; DuckDB said: {exc}"
            ) from None
        # dagster-duckdb closes its connection only when the block ends without an exception; a failed
        # step's connection stayed open until garbage collection, and any later connect in the process
        # with another configuration failed ("Can't open a connection to same database file with a
        # different configuration"). Closing twice is harmless.
        stack.callback(conn.close)
        yield conn


def _apply_pending(
    context: dg.AssetExecutionContext, spec: StreamSpec
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """The warehouse asset's body: apply the stream's pending landings (of the run's partitions) to its
    table and yield its materialisation and checks; or, with the checks selected alone, only those."""
    tag_run_host(context)  # the slot is held from here: a kill from now on is reclaimable
    lake: LakeResource = context.resources.lake
    store = lake.store()
    if warehouse_key(spec) not in context.selected_asset_keys:  # the checks alone
        with warehouse_connection(context) as conn:
            checks = _checks(conn, store, spec, table_rows(conn, spec))
        yield from _selected(context, spec, checks)
        return
    keys: list[str | None] = list(context.partition_keys) if spec.partitioning else [None]
    with warehouse_connection(context) as conn:
        # One listing for the load and, but for a merge, its row check (1,781 manifests read and parsed
        # once: 0.08 s less): the check then compares the table with the landings the load saw.
        active = active_manifests(list_manifests(store, spec))
        todo = pending(conn, store, spec, None if keys == [None] else {k for k in keys if k}, active=active)
        result = load(conn, store, spec, todo)
        checks = _checks(conn, store, spec, result.table_rows, active)
        columns = table_columns(conn, spec)
        schema = {"dagster/column_schema": column_schema(spec, [(c[0], c[1]) for c in columns])}
        figures = _load_figures(result, len(todo))
        if spec.partitioning is not None:  # each partition's page shows its own rows, not the table's
            held = partition_rows(conn, spec, [k for k in keys if k])
            # Run-wide metadata is copied onto every partition's materialisation: the column
            # schema goes on the last one only (the UI shows the latest's columns), and with more
            # than one partition the run's figures say they are the run's, beside each one's own.
            applied = {m.partition: m.window for m in todo}
            by_partition: dict[str, dict[str, Any]] = {}
            for key in keys:
                assert key is not None
                own = {
                    "rows_loaded": result.rows_by_window.get(applied[key], 0) if key in applied else 0,
                    "landing_applied": key in applied,
                }
                by_partition[key] = {
                    "dagster/row_count": held.get(key, 0),
                    **(own if len(keys) > 1 else {}),
                    **(schema if key == keys[-1] else {}),
                }
            add_partition_metadata(context, warehouse_key(spec), by_partition)
            schema = {}
            if len(keys) > 1:
                figures = {f"{name}_in_run": value for name, value in figures.items()}
    context.log.info(
        f"applied {len(todo)} landing(s), {result.rows_loaded} rows inserted, {result.rows_deleted} deleted, "
        f"to {spec.source}.{spec.name}"
    )
    yield dg.MaterializeResult(
        asset_key=warehouse_key(spec),
        metadata={
            **({} if spec.partitioning else {"dagster/row_count": result.table_rows}),
            "table_rows": result.table_rows,
            "dagster/table_name": f"{spec.source}.{spec.name}",
            **schema,
            **figures,
            "schema_changes": ", ".join(result.schema_changes),
        },
    )
    yield from _selected(context, spec, checks)


def _load_figures(result: LoadResult, landings: int) -> dict[str, Any]:
    """A load's own figures (a warehouse materialisation's): rows inserted (``rows_loaded``: an upserted
    key once, a tombstone or a delete change never), rows deletes removed, landings and windows
    applied, its seconds and rate."""
    return {
        "rows_loaded": result.rows_loaded,
        "rows_deleted": result.rows_deleted,
        "landings_applied": landings,
        "windows": windows_text(result.windows),
        "seconds": result.seconds,
        "rows_per_second": round(result.rows_loaded / max(result.seconds, 1e-6)),
    }


def warehouse_asset(spec: StreamSpec) -> dg.AssetsDefinition:
    """The asset that applies the stream's pending landings to its DuckDB table."""
    check_specs = [
        dg.AssetCheckSpec(
            ROWS_CHECK, asset=warehouse_key(spec), description="Rows in DuckDB equal the rows of the applied landings."
        )
    ]
    if spec.primary_key:
        check_specs.append(
            dg.AssetCheckSpec(
                PK_CHECK,
                asset=warehouse_key(spec),
                description=f"({', '.join(spec.primary_key)}) is unique and never null.",
            )
        )

    # A multi-asset only to be subsettable: its checks can then run alone, against what is loaded.
    @dg.multi_asset(
        name=f"warehouse__{spec.source}__{spec.name}",  # an op name: no dot allowed
        specs=[
            dg.AssetSpec(
                warehouse_key(spec),
                deps=[lake_key(spec)],
                group_name=spec.source,
                kinds={"duckdb"},
                partitions_def=partitions_def(spec.partitioning),
                description=f"DuckDB table {spec.source}.{spec.name} ({spec.write_disposition}).",
                automation_condition=FOLLOWS_LAKE,
                tags=default_tags(spec, "warehouse"),
            )
        ],
        check_specs=check_specs,
        can_subset=True,
        **warehouse_step(),
        partitions_def=partitions_def(spec.partitioning),
        backfill_policy=dg.BackfillPolicy.single_run() if spec.partitioning else None,
        required_resource_keys={"lake", "warehouse"},
    )
    def _warehouse(context: dg.AssetExecutionContext) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        yield from _apply_pending(context, spec)

    return _warehouse


def stream_assets(
    spec: StreamSpec,
    kind: str,
    source_resource: str,
    extractor_factory: ExtractorFactory,
    deps: Sequence[dg.AssetKey] = (),
    quarantine: bool = False,
) -> list[dg.AssetsDefinition]:
    """Both assets of a stream (see :func:`lake_asset` for ``deps`` and ``quarantine``)."""
    return [lake_asset(spec, kind, source_resource, extractor_factory, deps, quarantine), warehouse_asset(spec)]
