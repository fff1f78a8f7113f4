"""SqlSource: one YAML file declares a database's streams; this component turns it into assets.

``defs/<source>/defs.yaml``::

    type: integration_platform.components.SqlSource
    attributes:
      source: pagila                  # asset group, lake prefix, DuckDB schema
      url_env: PAGILA_URL             # env var holding the SQLAlchemy URL (read at run time);
                                      # or url: for one without a password (a SQLite file)
      schema_name: public             # database schema (optional)
      include: ["*"]                  # every table matching a glob (reflected at load time)
      exclude: ["payment_p*"]
      defaults: {cursor: last_update, lag: 0}   # applied to tables that have the column
      tables:                         # explicit streams; override discovered ones
        - table: payment
          primary_key: [payment_id, payment_date]
          partition: {column: payment_date, granularity: monthly, start: "2022-01-01"}
        - table: film                 # change data capture (PostgreSQL): deletes and every
          cdc: {deletes: hard}        # change, from a replication slot (sources/sql/change_assets.py)
      schedule: "0 3 * * *"           # daily incremental refresh (cron, UTC)

Per stream: ``<source>/<stream>`` (Parquet in the lake) and ``warehouse/<source>.<stream>``
(DuckDB), asset checks, a ``<source>_refresh`` job and its daily schedule, and one job and
schedule per partition granularity.

Table discovery for ``include`` is cached state (Dagster's state-backed components): the tables
found and their columns and primary keys are kept in a JSON file under ``defs/.local_defs_state/``,
keyed by source and by a hash of the database URL. Definitions load from that file without
touching the database, so a database that is down never stops the code location from loading.
The first load without a file discovers once and writes it; ``python -m
integration_platform.refresh_state`` (run by ``make run`` and ``make dev``) refreshes it on
demand, keeping the previous file when the database cannot be reached.
"""

import datetime as dt
import hashlib
import json
import logging
import os
import re
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import dagster as dg
import pyarrow as pa
from dagster.components.utils.defs_state import DefsStateConfig
from dagster.components.utils.project_paths import get_local_state_path
from dagster_shared.serdes.objects.models.defs_state_info import DefsStateManagementType
from pydantic import Field, model_validator

from integration_platform.assets.cluster import warehouse_step
from integration_platform.assets.config_model import (
    SafeModel,
    SecretSafeComponent,
    cron_problem,
    from_env,
    require_exactly_one,
)
from integration_platform.assets.freshness import freshness_checks
from integration_platform.assets.run_queue import source_run_tags
from integration_platform.assets.run_recovery import tag_run_host
from integration_platform.assets.schedules import ended_partition_schedule, refresh_job
from integration_platform.assets.stream_assets import (
    ExtractionReport,
    ExtractorFactory,
    lake_key,
    partitions_def,
    stream_assets,
    warehouse_asset,
    warehouse_connection,
    warehouse_key,
)
from integration_platform.core.deletes import land_deletes
from integration_platform.core.extract import Extractor, missing_column, refuse_null_cursor
from integration_platform.core.loading import live_rows
from integration_platform.core.names import ENV_NAME
from integration_platform.core.row_filter import RowFilter
from integration_platform.core.streams import (
    SOURCE_NAME,
    SOURCE_NAME_RULE,
    ChangeCapture,
    Partitioning,
    StreamSpec,
    to_identifier,
)
from integration_platform.resources.lake import LakeResource
from integration_platform.sources.sql.change_assets import SqlChangeCapture, change_lake_asset, change_sensor
from integration_platform.sources.sql.database import SqlDatabaseResource, TableInfo

LOG = logging.getLogger(__name__)
SOURCE_CHECK = "rows_match_source"
#: Query parameters of a URL that carry credentials (``?password=``, ODBC's ``odbc_connect=...PWD=``).
SECRET_QUERY = re.compile(r"pass|pwd|secret|token|key|credential|odbc_connect", re.IGNORECASE)
#: A password written as ``PWD=`` or ``Password=`` anywhere in a URL: ODBC connection-string pairs,
#: which pyodbc's dialect passes on from the URL's database part (``mssql+pyodbc://host/db;PWD=...``)
#: where SQLAlchemy sees neither a password nor a query.
PASSWORD_PAIR = re.compile(r"(pwd|passw(or)?d)\s*=", re.IGNORECASE)
#: A URL with no host part, ``dialect+driver:///path`` (a SQLite file). In SQLAlchemy's URL grammar
#: (``sqlalchemy.engine.url._parse_url``) user, password, host and port stand between ``://`` and the
#: next ``/``, and query parameters after a ``?``: such a URL without a ``?`` holds no credential and
#: no port to get wrong, and the definitions of its source load without importing SQLAlchemy (0.09 s).
#: Every other URL is parsed by SQLAlchemy itself.
NO_AUTHORITY = re.compile(r"[\w+]+:///[^?]*\Z")

KINDS = {"postgresql": "postgres", "mysql": "mysql", "mariadb": "mariadb", "sqlite": "sqlite"}


class SqlPartition(SafeModel, dg.Resolvable):
    """Time partitions on a date/timestamp column, for append-only fact tables."""

    column: str
    granularity: Literal["daily", "monthly"]
    start: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$", description="First partition, YYYY-MM-DD.")
    end: str | None = Field(
        default=None, pattern=r"^\d{4}-\d{2}-\d{2}$", description="First date without a partition (exclusive)."
    )

    @model_validator(mode="after")
    def _ordered(self) -> "SqlPartition":
        """Raises ``ValueError`` for a ``start`` or ``end`` that is no calendar date (``2024-02-30`` failed
        in Dagster's partitions naming no file), an ``end`` not after ``start``, and a monthly ``start`` or
        ``end`` not on the 1st: the months run from the 1st, so the first partition was the next whole
        month and the rows of the days before it (or after the last whole month) were never read."""
        for name in ("start", "end"):
            value = getattr(self, name)
            try:
                day = dt.date.fromisoformat(value) if value is not None else None
            except ValueError:
                raise ValueError(f"partition: {name} {value} is not a calendar date (YYYY-MM-DD)") from None
            if day is not None and self.granularity == "monthly" and day.day != 1:
                raise ValueError(
                    f"partition: a monthly partition's {name} must be the 1st of a month ({value[:8]}01): months "
                    f"run from the 1st, and the days of {value[:7]} would be in no partition"
                )
        if self.end is not None and self.end <= self.start:
            raise ValueError(f"partition: end {self.end} must come after start {self.start}")
        return self


class SqlTableStream(SafeModel, dg.Resolvable):
    """One table as a stream. Unset fields come from ``defaults`` and reflection."""

    table: str = Field(min_length=1)
    name: str | None = Field(default=None, description="Stream name; default: the table name in snake_case.")
    primary_key: list[str] | None = None
    cursor: str | None = None
    lag: float | None = Field(default=None, ge=0, description="Look-back (seconds for time cursors).")
    write_disposition: Literal["replace", "append", "merge"] | None = None
    partition: SqlPartition | None = None
    cdc: SqlChangeCapture | None = Field(
        default=None, description="Read the table from the database's change log (PostgreSQL logical replication)."
    )
    delete_missing: bool = Field(
        default=False,
        description="Without a change log: after each incremental landing, compare the source's primary keys "
        "with the lake's and delete the rows whose key is gone (a full key scan of the table per run).",
    )

    @model_validator(mode="after")
    def _cursor_or_partition(self) -> "SqlTableStream":
        if self.cursor and self.partition:
            raise ValueError(f"table {self.table!r}: set either 'cursor' or 'partition', not both")
        if self.delete_missing and (self.cdc or self.partition or self.write_disposition in ("replace", "append")):
            raise ValueError(
                f"table {self.table!r}: 'delete_missing' is for incremental merge streams (a cursor and a primary "
                "key): 'cdc' sees deletes itself, and a stream without a cursor lands the whole table each run"
            )
        if self.cdc and (self.cursor or self.partition or self.write_disposition not in (None, "merge")):
            raise ValueError(
                f"table {self.table!r}: 'cdc' merges changes by primary key: no 'cursor', no 'partition', "
                "write_disposition 'merge' or unset"
            )
        if self.write_disposition == "replace" and self.cursor:
            raise ValueError(f"table {self.table!r}: a 'cursor' needs write_disposition 'append' or 'merge'")
        return self


class StreamDefaults(SafeModel, dg.Resolvable):
    """Applied to every stream that does not set the field itself."""

    cursor: str | None = Field(default=None, description="Cursor column, used where the table has it.")
    lag: float = Field(default=0.0, ge=0)


def _write_tables(state_path: Path, tables: dict[str, TableInfo]) -> None:
    """``tables`` as the state file's JSON, written to a staging name and renamed over it."""
    state_path.parent.mkdir(parents=True, exist_ok=True)
    staging = state_path.with_name(f".{state_path.name}.{os.getpid()}.tmp")
    document = {
        name: {
            "columns": list(i.columns),
            "primary_key": list(i.primary_key),
            "comment": i.comment,
            "column_comments": dict(i.column_comments),
        }
        for name, i in tables.items()
    }
    staging.write_text(json.dumps({"tables": document}, indent=1, sort_keys=True))
    os.replace(staging, state_path)


class SqlSource(SecretSafeComponent, dg.StateBackedComponent, SafeModel, dg.Resolvable):
    """A relational database whose tables land in the lake and the warehouse (see module doc)."""

    source: str = Field(description="Identifier: asset group, lake prefix and DuckDB schema.")
    url: str | None = Field(
        default=None,
        description="SQLAlchemy URL without a password (a SQLite file: "
        "'sqlite:///{{ context.project_root }}/data.sqlite'); a URL with one goes in url_env.",
    )
    url_env: str | None = Field(default=None, pattern=ENV_NAME, description="Env var with the SQLAlchemy URL.")
    schema_name: str | None = None
    include: list[str] = Field(default_factory=list, description="Globs of tables to land (reflected).")
    exclude: list[str] = Field(default_factory=list)
    tables: list[SqlTableStream] = Field(default_factory=list)
    defaults: StreamDefaults = Field(default_factory=StreamDefaults)
    schedule: str = Field(default="0 3 * * *", description="Cron (UTC) of the daily incremental refresh.")

    def _url(self) -> str:
        """The URL: ``url``, or the value of ``url_env`` (empty when that is not set)."""
        return self.url or os.environ.get(self.url_env or "", "")

    def validate_declaration(self, yaml_path: Path) -> None:
        """Checks beyond the field types, each failing with ``ValueError("<file>: <field>: ...")``."""
        if not SOURCE_NAME.fullmatch(self.source):
            raise ValueError(f"{yaml_path}: attributes.source: {self.source!r} must be {SOURCE_NAME_RULE}")
        if problem := cron_problem(self.schedule):
            raise ValueError(f"{yaml_path}: attributes.schedule: {problem}")
        try:
            require_exactly_one(self, "url", "url_env", "attributes: ")
        except ValueError as exc:
            raise ValueError(f"{yaml_path}: {exc}") from None
        # never a password in YAML, where the UI and the repository show it
        secret = self.url is not None and bool(PASSWORD_PAIR.search(self.url))
        if self.url is not None and not secret and not NO_AUTHORITY.match(self.url):
            import sqlalchemy as sa  # SQLAlchemy's own parser, for a URL that may hold a credential

            try:
                parsed = sa.engine.make_url(self.url)
            except (sa.exc.ArgumentError, ValueError):  # ValueError: a port that is no number (never echoed)
                raise ValueError(f"{yaml_path}: attributes.url: not a SQLAlchemy URL") from None
            secret = parsed.password is not None or any(SECRET_QUERY.search(name) for name in parsed.query)
        if secret:
            raise ValueError(
                f"{yaml_path}: attributes.url: holds a password; put the URL in an environment variable "
                "named by url_env"
            )
        if not self.include and not self.tables:
            raise ValueError(f"{yaml_path}: attributes: declare 'tables', or 'include' globs, or both")
        seen: dict[str, int] = {}
        for i, entry in enumerate(self.tables):
            if entry.table in seen:  # the later entry would silently win over the earlier one
                raise ValueError(
                    f"{yaml_path}: attributes.tables[{i}].table: {entry.table!r} is already declared at "
                    f"tables[{seen[entry.table]}]; declare each table once"
                )
            seen[entry.table] = i

    @property
    def resource_key(self) -> str:
        return f"{self.source}_db"

    def _database(self) -> SqlDatabaseResource:
        url = self._url()
        if not url:
            raise ValueError(
                f"source {self.source!r}: environment variable {self.url_env} (SQLAlchemy URL) is not set; "
                "it is needed to discover the tables 'include' selects"
            )
        return SqlDatabaseResource(url=url)

    def _stream(self, entry: SqlTableStream, info: TableInfo | None) -> StreamSpec:
        columns = set(info.columns) if info else set()
        cursor = entry.cursor
        defaulted = entry.partition is None and entry.cdc is None and entry.write_disposition != "replace"
        if cursor is None and defaulted and self.defaults.cursor in columns:
            cursor = self.defaults.cursor  # a table set to replace opts out (a full read, no mark)
        primary_key = tuple(entry.primary_key if entry.primary_key is not None else (info.primary_key if info else ()))
        disposition = entry.write_disposition or (
            "merge"
            if entry.cdc
            else "append"
            if entry.partition
            else "merge"
            if cursor and primary_key
            else "append"
            if cursor
            else "replace"
        )
        partitioning = (
            Partitioning(
                entry.partition.column, entry.partition.granularity, entry.partition.start, end=entry.partition.end
            )
            if entry.partition
            else None
        )
        spec = StreamSpec(
            source=self.source,
            name=entry.name or to_identifier(entry.table),
            write_disposition=disposition,
            primary_key=primary_key,
            cursor=cursor,
            lag=entry.lag if entry.lag is not None else self.defaults.lag,
            partitioning=partitioning,
            description=(
                info.comment if info and info.comment else f"Table {entry.table} of the {self.source} database."
            ),
            metadata={"source_table": entry.table},
            column_descriptions=dict(info.column_comments) if info else {},
            changes=ChangeCapture(entry.cdc.deletes, entry.cdc.history) if entry.cdc else None,
        )
        if entry.delete_missing and not (spec.cursor and spec.primary_key and spec.write_disposition == "merge"):
            raise ValueError(
                f"table {entry.table!r}: 'delete_missing' needs a cursor and a primary key (a merge stream); this "
                f"stream has cursor {spec.cursor!r} and primary key {list(spec.primary_key)}"
            )
        missing = missing_column(spec, info.columns) if info is not None else None
        if info is not None and missing is not None:  # columns known without the network: check now
            raise ValueError(
                f"table {entry.table!r}: {missing[0]} {missing[1]!r} is not a column of the table "
                f"({', '.join(info.columns)}); if the table changed since its columns were cached, "
                "run `python -m integration_platform.refresh_state`"
            )
        return spec

    @property
    def defs_state_config(self) -> DefsStateConfig:
        """Local-file state keyed by source and by a hash of what discovery depends on (the URL,
        never in the clear: it may hold a password; the schema, ``include`` and ``exclude``);
        refreshed on demand, not by ``dagster dev`` (module doc)."""
        selection = json.dumps([self._url(), self.schema_name, self.include, self.exclude])
        digest = hashlib.sha256(selection.encode()).hexdigest()[:16]
        return DefsStateConfig(
            key=f"SqlSource.{self.source}.{digest}",
            management_type=DefsStateManagementType.LOCAL_FILESYSTEM,
            refresh_if_dev=False,
        )

    def discover(self) -> dict[str, TableInfo]:
        """The tables ``include``/``exclude`` select, with columns and primary keys, read from the
        database ({} without ``include``). Raises ``ValueError`` when ``url_env`` is not set and
        ``sqlalchemy.exc.SQLAlchemyError`` when the database cannot be read."""
        if not self.include:
            return {}
        database = self._database()
        try:
            return {
                table: database.describe(table, self.schema_name)
                for table in database.list_tables(self.schema_name, self.include, self.exclude)
            }
        finally:
            database.dispose()

    def write_state_to_path(self, state_path: Path) -> None:
        """Discover the tables and write them to ``state_path`` as JSON, atomically: a failed
        discovery raises (as :meth:`discover`) and leaves any previous file as it was."""
        _write_tables(state_path, self.discover())

    def _cached_tables(self, context: dg.ComponentLoadContext, state_path: Path | None) -> dict[str, TableInfo] | None:
        """The discovered tables from the state file; without one, discovered now and written
        (once). A database that cannot be reached then gives ``None`` (only the declared ``tables``
        load), with a warning naming the source and the error (never the URL); a folder that cannot
        be written (a read-only deployment) keeps what was discovered for this load only."""
        if not self.include:
            return {}
        if state_path is not None:
            data: dict[str, Any] = json.loads(state_path.read_text())
            return {
                name: TableInfo(
                    name=name,
                    columns=tuple(t["columns"]),
                    primary_key=tuple(t["primary_key"]),
                    comment=t.get("comment"),  # absent from states cached before comments were kept
                    column_comments=tuple(t.get("column_comments", {}).items()),
                )
                for name, t in data["tables"].items()
            }
        import sqlalchemy as sa  # discovery reaches the database through it anyway

        try:
            tables = self.discover()
        except (ValueError, sa.exc.SQLAlchemyError) as exc:
            LOG.warning(
                "source %s: tables for 'include' could not be discovered (%s); loading only the declared "
                "tables until `python -m integration_platform.refresh_state` succeeds",
                self.source,
                type(exc).__name__,
            )
            return None
        try:
            _write_tables(get_local_state_path(self.defs_state_config.key, context.project_root), tables)
        except OSError as exc:
            LOG.warning("source %s: discovered tables could not be cached (%s)", self.source, exc)
        return tables

    def streams(self, infos: dict[str, TableInfo] | None = None) -> list[tuple[StreamSpec, str]]:
        """``(spec, source table)`` for every declared table and every table in ``infos`` (the
        discovered ones; read from the database when not given). Raises ``ValueError`` naming the stream
        names two tables map to, or a stream named as another's change history table (``<stream>__history``)."""
        explicit = {t.table: t for t in self.tables}
        infos = self.discover() if infos is None else infos
        specs = []
        for table in sorted(set(infos) | set(explicit)):
            entry = explicit.get(table) or SqlTableStream(table=table)
            specs.append((self._stream(entry, infos.get(table)), table))
        names = [s.name for s, _ in specs]
        clashes = sorted({n for n in names if names.count(n) > 1})
        if clashes:
            raise ValueError(f"source {self.source!r}: several tables map to the stream name(s) {clashes}; set 'name'")
        # a change-captured stream with history keeps it in the DuckDB table <stream>__history
        histories = sorted({f"{s.name}__history" for s, _ in specs if s.changes and s.changes.history} & set(names))
        if histories:
            raise ValueError(
                f"source {self.source!r}: the stream name(s) {histories} are the DuckDB tables of other streams' "
                "change history (cdc: {history: true}); both would load into one table: set 'name'"
            )
        return specs

    def _declared_streams(self) -> list[tuple[StreamSpec, str]]:
        """The declared tables when discovery failed (the database is down at the first load): a table
        whose loading depends on what only the database can say (its primary key, the write
        disposition inferred from it, whether it has the default cursor column) is left out, with a
        warning naming it, so that the code location still loads and no table loads another way than
        it will once the database answers."""
        specs = []
        for entry in self.tables:
            default_cursor = self.defaults.cursor and entry.cursor is None and entry.partition is None
            if (entry.primary_key is None and entry.write_disposition is None) or default_cursor:
                LOG.warning(
                    "source %s: table %s is left out until its database can be read: its primary key, "
                    "write disposition or cursor comes from the database",
                    self.source,
                    entry.table,
                )
                continue
            try:
                specs.append((self._stream(entry, None), entry.table))
            except ValueError as exc:
                LOG.warning(
                    "source %s: table %s is left out until its database can be read: %s", self.source, entry.table, exc
                )
        return specs

    def _extractor(self, table: str, spec: StreamSpec, delete_missing: bool = False) -> ExtractorFactory:
        """Reads the table; with ``delete_missing``, once the landing committed, lands tombstones for the
        keys the source no longer has (:func:`~integration_platform.core.deletes.land_deletes`)."""
        key, schema = self.resource_key, self.schema_name

        def factory(context: dg.AssetExecutionContext, report: ExtractionReport, __: str | None) -> Extractor:
            database: SqlDatabaseResource = getattr(context.resources, key)
            if delete_missing:

                def detect_deletes() -> None:
                    lake: LakeResource = context.resources.lake
                    keys = database.read_keys(table, schema, spec.primary_key)
                    tombstones = land_deletes(lake.store(), spec, keys, context.run.run_id)
                    report.metadata["rows_deleted_at_source"] = tombstones.rows if tombstones else 0
                    if tombstones:
                        context.log.info(f"{spec.path}: {tombstones.rows} row(s) gone from the source, tombstoned")

                report.after_commit.append(detect_deletes)
            if spec.cursor is None or spec.partitioning is not None or spec.changes is not None:
                return lambda row_filter: database.read(table, schema, row_filter)
            return lambda row_filter: _read_by_cursor(database, table, schema, spec, row_filter)

        return factory

    def _source_check(self, spec: StreamSpec, table: str) -> dg.AssetChecksDefinition:
        """``rows_match_source`` (WARN) on the warehouse table: its row count (without soft-deleted rows)
        against ``COUNT(*)`` at the source. Rows deleted at the source are not tracked by a cursor, so
        ``rows_reconcile_with_lake`` can pass while the table holds rows the source no longer has; this
        check says so."""
        key, schema = self.resource_key, self.schema_name

        @dg.asset_check(
            asset=warehouse_key(spec),
            name=SOURCE_CHECK,
            required_resource_keys={key, "warehouse"},
            **warehouse_step(),  # it opens the DuckDB file, which only one process may hold
            description=f"Rows in DuckDB equal COUNT(*) of {table} at the source (warns on drift, e.g. deletes).",
        )
        def _rows_match_source(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
            database: SqlDatabaseResource = getattr(context.resources, key)
            at_source = database.count_rows(table, schema)
            tag_run_host(context)
            with warehouse_connection(context) as conn:
                in_duckdb = live_rows(conn, spec)
            drift = in_duckdb - at_source
            return dg.AssetCheckResult(
                passed=drift == 0,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={"rows_at_source": at_source, "rows_in_duckdb": in_duckdb, "rows_not_at_source": drift},
                description=None
                if drift == 0
                else (
                    f"DuckDB holds {drift:+d} rows against the source: "
                    + (
                        "changes made since the last drain are not applied yet"
                        if spec.changes
                        else "rows deleted at the source are not tracked by a cursor; a full refresh (run config "
                        "full_refresh: true) makes the table match again"
                    )
                ),
            )

        return _rows_match_source

    def _partition_jobs(
        self, specs: list[StreamSpec]
    ) -> "tuple[list[dg.UnresolvedAssetJobDefinition], list[dg.ScheduleDefinition]]":
        """One job (and its stopped schedule, :func:`ended_partition_schedule`) per partitions definition of the
        partitioned ``specs``: a job's assets must share it."""
        jobs: list[dg.UnresolvedAssetJobDefinition] = []
        schedules: list[dg.ScheduleDefinition] = []
        for granularity in ("daily", "monthly"):
            group = [s for s in specs if s.partitioning and s.partitioning.granularity == granularity]
            ranges = {(s.partitioning.start or "", s.partitioning.end or "") for s in group if s.partitioning}
            for start, end in sorted(ranges):
                members = [
                    s
                    for s in group
                    if s.partitioning and (s.partitioning.start or "", s.partitioning.end or "") == (start, end)
                ]
                suffix = (
                    ""
                    if len(ranges) == 1
                    else f"_{start.replace('-', '')}" + (f"_{end.replace('-', '')}" if end else "")
                )
                job = dg.define_asset_job(
                    f"{self.source}_{granularity}_partitions{suffix}",
                    selection=dg.AssetSelection.assets(*[k for s in members for k in (lake_key(s), warehouse_key(s))]),
                    tags=source_run_tags(self.source),
                )
                jobs.append(job)
                periods = partitions_def(members[0].partitioning)
                assert isinstance(periods, dg.TimeWindowPartitionsDefinition)
                schedules.append(ended_partition_schedule(job, periods))
        return jobs, schedules

    def _assets(
        self, specs: list[tuple[StreamSpec, str]], kind: str
    ) -> tuple[list[dg.AssetsDefinition], list[dg.SensorDefinition]]:
        """Both assets of every stream, and the drain sensor of each change-captured one."""
        explicit = {t.table: t for t in self.tables}
        assets: list[dg.AssetsDefinition] = []
        sensors: list[dg.SensorDefinition] = []
        for spec, table in specs:
            options = explicit[table].cdc if table in explicit else None
            if options is None:
                delete_missing = table in explicit and explicit[table].delete_missing
                assets += stream_assets(spec, kind, self.resource_key, self._extractor(table, spec, delete_missing))
                continue
            if kind == "sqlite":  # other kinds are known only at run time when the URL's env var is unset
                raise ValueError(f"table {table!r}: 'cdc' needs PostgreSQL or MySQL/MariaDB (this source is {kind})")
            key, schema = self.resource_key, self.schema_name
            assets += [change_lake_asset(spec, kind, key, table, schema, options), warehouse_asset(spec)]
            sensors.append(change_sensor(spec, key, table, schema, options))
        return assets, sensors

    def build_defs_from_state(self, context: dg.ComponentLoadContext, state_path: Path | None) -> dg.Definitions:
        """The source's definitions from its declaration and the cached discovery (module doc)."""
        yaml_path = Path(context.path) / "defs.yaml"
        self.validate_declaration(yaml_path)
        url = self._url()
        kind = KINDS.get(url.split(":", 1)[0].split("+", 1)[0], "sql")
        try:
            tables = self._cached_tables(context, state_path)
            specs = self.streams(tables) if tables is not None else self._declared_streams()
        except ValueError as exc:
            raise ValueError(f"{yaml_path}: attributes.tables: {exc}") from exc
        assets, sensors = self._assets(specs, kind)
        jobs: list[dg.UnresolvedAssetJobDefinition] = []
        schedules: list[dg.ScheduleDefinition] = []
        plain = [s for s, _ in specs if s.partitioning is None]
        fresh: list[dg.AssetChecksDefinition] = []
        if plain:
            selection = dg.AssetSelection.assets(*[k for s in plain for k in (lake_key(s), warehouse_key(s))])
            job, schedule = refresh_job(
                f"{self.source}_refresh",
                self.source,
                selection,
                self.schedule,
                f"Incremental refresh of every unpartitioned {self.source} stream.",
            )
            jobs.append(job)
            schedules.append(schedule)
            fresh, fresh_sensor = freshness_checks(job.name, [warehouse_key(s) for s in plain], self.schedule)
            sensors.append(fresh_sensor)
        partitioned_jobs, partitioned_schedules = self._partition_jobs([spec for spec, _ in specs])
        jobs.extend(partitioned_jobs)
        schedules.extend(partitioned_schedules)
        # an append stream keeps every version of a row, so only replace and merge tables can match COUNT(*)
        checks = [
            self._source_check(spec, table)
            for spec, table in specs
            if spec.partitioning is None and spec.write_disposition != "append"
        ]
        return dg.Definitions(
            assets=assets,
            asset_checks=[*checks, *fresh],
            jobs=jobs,
            schedules=schedules,
            sensors=sensors,
            resources={self.resource_key: SqlDatabaseResource(url=from_env(self.url, self.url_env, "url"))},
        )


def _read_by_cursor(
    database: SqlDatabaseResource, table: str, schema: str | None, spec: StreamSpec, row_filter: RowFilter | None
) -> pa.RecordBatchReader:
    """The table's rows for an incremental stream: those at or above the mark and those whose cursor is
    NULL, which fail the landing (:func:`~integration_platform.core.extract.refuse_null_cursor`): no
    ``cursor >= mark`` matches them, so they were passed over in silence once the first run had landed."""
    if row_filter is not None and row_filter.column == spec.cursor:
        row_filter = replace(row_filter, nulls=True)
    reader = database.read(table, schema, row_filter)
    return pa.RecordBatchReader.from_batches(reader.schema, refuse_null_cursor(spec, reader))
