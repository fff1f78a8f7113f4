"""FileSource: one YAML file declares a partner's drop server and its file streams.

``defs/<source>/defs.yaml``::

    type: integration_platform.components.FileSource
    attributes:
      source: covid                         # asset group, lake prefix, DuckDB schema
      connection:
        protocol: sftp                      # sftp | ftp (explicit FTPS unless tls: false) | s3 | gcs | azure
        host_env: COVID_SFTP_HOST
        port: 2222
        username: partner
        private_key_env: COVID_SFTP_KEY     # PEM text; or password_env
        known_hosts: /etc/integration_platform/known_hosts   # or host_key_fingerprint: SHA256:...
      streams:
        - name: regions
          directory: /drops/dati-regioni
          glob: "dpc-covid19-ita-regioni-*.csv"
          partition: {type: daily, date_format: "%Y%m%d", start: "2020-02-24"}
          format: {type: csv}
          primary_key: [data, codice_regione]
          archive_directory: /drops/archive   # optional: move files there once landed

A bucket instead of a server (``directory`` is then a key prefix)::

      connection:
        protocol: gcs                       # or s3 (endpoint_url, region, *_env keys) or azure
        bucket: partner-drops               # the Azure container for azure
        gcs_token_env: DROPS_GCS_TOKEN      # holds a service-account JSON path (or anon); azure:
                                            # connection_string_env or account_name + account_key_env

Per stream: the lake and warehouse assets (partitioned daily by the date in the file name,
or one dynamic partition per file), a ``quarantine_empty`` check, a job ``<source>_<stream>``
(with a daily schedule, stopped by default, for daily partitions), and a sensor
``<source>_<stream>_drops`` that requests a run per stable file whose version the lake does not
hold (stopped by default; switch it on in the UI). Backfill any range of days from the UI.
"""

import datetime as dt
import posixpath
from pathlib import Path
from typing import Literal

import dagster as dg
from pydantic import Field, model_validator

from integration_platform.assets.config_model import (
    SafeModel,
    SecretSafeComponent,
    from_env,
    port_from_env,
    require_exactly_one,
    secret_from_env,
)
from integration_platform.assets.run_queue import source_run_tags
from integration_platform.assets.schedules import ended_partition_schedule
from integration_platform.assets.stream_assets import (
    ExtractionReport,
    ExtractorFactory,
    lake_key,
    partitions_def,
    stream_assets,
    warehouse_key,
)
from integration_platform.core.extract import Extractor
from integration_platform.core.landing import active_manifests, list_manifests
from integration_platform.core.names import ENV_NAME
from integration_platform.core.records import ARROW_TYPES
from integration_platform.core.streams import IDENTIFIER, SOURCE_NAME, Partitioning, StreamSpec
from integration_platform.resources.lake import LakeResource
from integration_platform.resources.object_stores import AzureBlobSettings, GcsSettings
from integration_platform.sources.files.bucket_files import BucketResource
from integration_platform.sources.files.drops import DEFAULT_DATE_REGEX, DropRules, DropState, landed, plan_tick
from integration_platform.sources.files.extract import FileStreamPlan, extractor_for
from integration_platform.sources.files.formats import FileFormat
from integration_platform.sources.files.ftp import FtpResource
from integration_platform.sources.files.sftp import SftpResource

#: Drop sources in an object store (``bucket_files.py``) rather than on a server.
BUCKET_PROTOCOLS = ("s3", "gcs", "azure")
DropResource = SftpResource | FtpResource | BucketResource
_SERVER = ("host", "host_env", "port", "port_env", "username", "password_env", "timeout")
#: The connection settings each protocol reads (:meth:`FileConnection.resource`); another one given is refused.
PROTOCOL_SETTINGS: dict[str, tuple[str, ...]] = {
    "sftp": (*_SERVER, "private_key_env", "private_key_passphrase_env", "known_hosts", "host_key_fingerprint"),
    "ftp": (*_SERVER, "tls", "ca_bundle"),
    "s3": (
        "bucket",
        "endpoint_url",
        "endpoint_url_env",
        "region",
        "access_key_id_env",
        "secret_access_key_env",
        "default_credentials",
    ),
    "gcs": ("bucket", "endpoint_url", "endpoint_url_env", "gcs_project", "gcs_token_env", "default_credentials"),
    "azure": ("bucket", "account_name", "account_key_env", "connection_string_env"),
}


class FileConnection(SafeModel, dg.Resolvable):
    """The drop server or bucket. Secrets only by environment variable name (``*_env``)."""

    protocol: Literal["sftp", "ftp", "s3", "gcs", "azure"]
    host: str | None = None
    host_env: str | None = Field(default=None, pattern=ENV_NAME)
    port: int | None = Field(default=None, ge=1, le=65535)
    port_env: str | None = Field(default=None, pattern=ENV_NAME, description="Env var holding the port instead.")
    username: str | None = None
    password_env: str | None = Field(default=None, pattern=ENV_NAME)
    private_key_env: str | None = Field(default=None, pattern=ENV_NAME, description="SFTP: PEM text of the key.")
    private_key_passphrase_env: str | None = Field(default=None, pattern=ENV_NAME)
    known_hosts: str | None = Field(default=None, description="SFTP: OpenSSH known_hosts file.")
    host_key_fingerprint: str | None = Field(default=None, pattern=r"^SHA256:[A-Za-z0-9+/]{43}$")
    tls: bool = Field(default=True, description="FTP: explicit FTPS (AUTH TLS, PROT P).")
    ca_bundle: str | None = None
    timeout: float = Field(default=60.0, gt=0)
    bucket: str | None = Field(default=None, description="s3/gcs: the bucket; azure: the container.")
    endpoint_url: str | None = Field(default=None, description="s3/gcs: another endpoint (MinIO, an emulator).")
    endpoint_url_env: str | None = Field(default=None, pattern=ENV_NAME)
    region: str | None = Field(default=None, description="s3: the bucket's region.")
    access_key_id_env: str | None = Field(default=None, pattern=ENV_NAME, description="s3: access key id.")
    secret_access_key_env: str | None = Field(default=None, pattern=ENV_NAME, description="s3: secret access key.")
    default_credentials: bool = Field(
        default=False,
        description="s3/gcs at an endpoint_url: use the deployment's default credential chain (an endpoint the "
        "cloud itself runs: a VPC interface endpoint, FIPS, Private Service Connect); otherwise it is read "
        "anonymously unless keys are named here.",
    )
    gcs_project: str | None = None
    gcs_token_env: str | None = Field(
        default=None, pattern=ENV_NAME, description="gcs: env var holding a service-account JSON path, or anon."
    )
    account_name: str | None = Field(default=None, description="azure: the storage account.")
    account_key_env: str | None = Field(default=None, pattern=ENV_NAME, description="azure: the account key.")
    connection_string_env: str | None = Field(default=None, pattern=ENV_NAME, description="azure: connection string.")

    @model_validator(mode="after")
    def _complete(self) -> "FileConnection":
        """Raises ``ValueError`` naming what is missing, given twice, or given but not read by the protocol
        (:data:`PROTOCOL_SETTINGS`: an Azure container's ``endpoint_url`` or a bucket's ``timeout`` was
        accepted and ignored)."""
        takes = PROTOCOL_SETTINGS[self.protocol]
        # given in the YAML, whatever its value: a bucket's ``timeout: 60`` (the default) was accepted
        ignored = [name for name in type(self).model_fields if name in self.model_fields_set - {"protocol", *takes}]
        if ignored:
            raise ValueError(
                f"connection: {self.protocol} does not read {', '.join(ignored)} "
                "(settings of another protocol, ignored): remove them"
            )
        if self.protocol in BUCKET_PROTOCOLS:
            if not self.bucket:
                raise ValueError(f"connection: {self.protocol} needs bucket")
            if self.endpoint_url and self.endpoint_url_env:
                raise ValueError("connection: set 'endpoint_url' or 'endpoint_url_env', not both")
            return self
        require_exactly_one(self, "host", "host_env", "connection: ")
        if not self.username:
            raise ValueError(f"connection: {self.protocol} needs username")
        if self.port is not None and self.port_env is not None:
            raise ValueError("connection: set 'port' or 'port_env', not both")
        if self.protocol == "sftp":
            if not (self.password_env or self.private_key_env):
                raise ValueError("connection: sftp needs private_key_env or password_env")
            if not (self.known_hosts or self.host_key_fingerprint):
                raise ValueError(
                    "connection: sftp needs known_hosts or host_key_fingerprint (unknown host keys are refused)"
                )
        elif not self.password_env:
            raise ValueError("connection: ftp needs password_env")
        return self

    def resource(self) -> DropResource:
        """The drop server's or bucket's resource; host, port, endpoint and secrets given by env var stay ``EnvVar``."""
        if self.protocol in BUCKET_PROTOCOLS:
            return self._bucket()
        host = from_env(self.host, self.host_env, "host")
        password = secret_from_env(self.password_env)
        port = port_from_env(self.port, self.port_env, 21 if self.protocol == "ftp" else 22)
        username = self.username or ""
        if self.protocol == "ftp":
            return FtpResource(
                host=host,
                port=port,
                username=username,
                password=from_env(None, self.password_env, "password"),
                tls=self.tls,
                ca_bundle=self.ca_bundle,
                timeout=self.timeout,
            )
        return SftpResource(
            host=host,
            port=port,
            username=username,
            password=password,
            private_key=secret_from_env(self.private_key_env),
            private_key_passphrase=secret_from_env(self.private_key_passphrase_env),
            known_hosts=self.known_hosts,
            host_key_fingerprint=self.host_key_fingerprint,
            timeout=self.timeout,
        )

    def _bucket(self) -> BucketResource:
        endpoint = (
            from_env(self.endpoint_url, self.endpoint_url_env, "endpoint_url")
            if (self.endpoint_url or self.endpoint_url_env)
            else None
        )
        return BucketResource(
            store=self.protocol,  # type: ignore[arg-type]  # one of BUCKET_PROTOCOLS, checked above
            bucket=self.bucket or "",
            endpoint_url=endpoint if self.protocol == "s3" else None,
            region=self.region,
            access_key_id=secret_from_env(self.access_key_id_env),
            secret_access_key=secret_from_env(self.secret_access_key_env),
            default_credentials=self.default_credentials,
            gcs=GcsSettings(
                project=self.gcs_project,
                token=secret_from_env(self.gcs_token_env),
                endpoint_url=endpoint if self.protocol == "gcs" else None,
            ),
            azure=AzureBlobSettings(
                account_name=self.account_name,
                account_key=secret_from_env(self.account_key_env),
                connection_string=secret_from_env(self.connection_string_env),
            ),
        )


class FilePartition(SafeModel, dg.Resolvable):
    """``daily`` (the date in the name, or the mtime) or ``per_file`` (a dynamic partition per file)."""

    type: Literal["daily", "per_file"] = "daily"
    date_from: Literal["name", "mtime"] = "name"
    date_regex: str = Field(
        default=DEFAULT_DATE_REGEX,
        description="Group 1 holds the date; default: 8 digits or ISO, then at most a compact time.",
    )
    date_format: str | None = Field(default=None, description="strptime format of the date; default ISO / YYYYMMDD.")
    start: str | None = Field(default=None, pattern=r"^\d{4}-\d{2}-\d{2}$", description="First daily partition.")
    end: str | None = Field(
        default=None,
        pattern=r"^\d{4}-\d{2}-\d{2}$",
        description="First day without a partition (exclusive), for a finished series of drops.",
    )

    @model_validator(mode="after")
    def _start(self) -> "FilePartition":
        """Raises ``ValueError`` for a daily partition without ``start``, an ``end`` not after it, and a setting
        given (whatever its value) that the partition does not read: ``start``, ``date_from`` and the date
        settings of a ``per_file`` partition, ``date_regex`` and ``date_format`` with ``date_from: mtime``
        (they were accepted and ignored)."""
        given = self.model_fields_set
        if self.type == "per_file":
            ignored = [name for name in ("start", "date_from", "date_regex", "date_format") if name in given]
            if ignored:
                raise ValueError(
                    f"partition: a per_file partition does not read {', '.join(ignored)} "
                    "(a setting of daily partitions, ignored): remove it"
                )
        elif self.date_from == "mtime":
            ignored = [name for name in ("date_regex", "date_format") if name in given]
            if ignored:
                raise ValueError(
                    f"partition: date_from: mtime does not read {', '.join(ignored)} (the date in the name, ignored): "
                    "remove it"
                )
        if self.type == "daily" and not self.start:
            raise ValueError("partition: a daily partition needs 'start' (YYYY-MM-DD)")
        if self.end is not None and (self.type != "daily" or self.start is None or self.end <= self.start):
            raise ValueError("partition: 'end' needs a daily partition and a date after 'start'")
        return self


class FileStream(SafeModel, dg.Resolvable):
    """One family of files in one directory."""

    name: str = Field(pattern=IDENTIFIER.pattern)
    directory: str = Field(min_length=1)
    glob: str | None = None
    regex: str | None = None
    partition: FilePartition = Field(
        default_factory=lambda: FilePartition(type="per_file"),
        description="Default per_file: a daily default would need a start date the platform cannot guess.",
    )
    format: FileFormat = Field(default_factory=FileFormat)
    columns: dict[str, str] = Field(default_factory=dict, description=f"Declared types: {', '.join(ARROW_TYPES)}.")
    primary_key: list[str] = Field(default_factory=list)
    write_disposition: Literal["append", "merge"] = "append"
    on_bad_rows: Literal["fail", "quarantine"] = "quarantine"
    marker_suffix: str | None = Field(default=None, description="A file is ready once <name><suffix> exists.")
    archive_directory: str | None = None
    sensor_interval_seconds: int = Field(default=60, ge=5)
    max_partitions_per_tick: int = Field(default=500, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> "FileStream":
        if self.glob and self.regex:
            raise ValueError(f"stream {self.name!r}: set 'glob' or 'regex', not both")
        bad = {k: v for k, v in self.columns.items() if v not in ARROW_TYPES}
        if bad:
            raise ValueError(f"stream {self.name!r}: columns {bad}: allowed types are {', '.join(ARROW_TYPES)}")
        if self.write_disposition == "merge" and not self.primary_key:
            raise ValueError(f"stream {self.name!r}: write_disposition 'merge' needs a primary_key")
        if self.archive_directory is not None and _same_folder(self.archive_directory, self.directory):
            # an archived file (its name with its version) still matches the stream: landed again on every
            # tick, its rows twice, its name longer each time until the listing refuses it
            raise ValueError(
                f"stream {self.name!r}: archive_directory {self.archive_directory!r} is the stream's directory: "
                "archive into another folder (a sub-folder is not listed)"
            )
        return self


def _same_folder(one: str, other: str) -> bool:
    """Whether two folder paths as written may name one folder: ``/in/`` and ``/in``, ``in/./`` and ``in``,
    ``//in`` and ``/in``, and ``in`` and ``/in`` (one prefix in a bucket; one folder on a server that
    locks the login into its home). Stricter than needed on a server where they differ: such a pair
    is refused though it would work (name the archive otherwise)."""
    return posixpath.normpath(one.strip() or ".").strip("/") == posixpath.normpath(other.strip() or ".").strip("/")


class FileSource(SecretSafeComponent, dg.Component, SafeModel, dg.Resolvable):
    """A file-drop server whose file streams land in the lake and the warehouse (see module doc)."""

    source: str = Field(
        pattern=SOURCE_NAME.pattern, description="Asset group, lake prefix, DuckDB schema (words joined by single _)."
    )
    connection: FileConnection
    streams: list[FileStream] = Field(min_length=1)

    @property
    def resource_key(self) -> str:
        return f"{self.source}_files"

    def _plan(self, stream: FileStream) -> FileStreamPlan:
        part = stream.partition
        if part.type == "daily":
            partitioning = Partitioning(None, "daily", start=part.start, end=part.end)
        else:
            partitioning = Partitioning(None, "dynamic", name=f"{self.source}__{stream.name}__files")
        spec = StreamSpec(
            source=self.source,
            name=stream.name,
            write_disposition=stream.write_disposition,
            primary_key=tuple(stream.primary_key),
            partitioning=partitioning,
            description=f"Files {stream.glob or stream.regex or '*'} in {stream.directory} ({stream.format.type}).",
            metadata={"directory": stream.directory},
        )
        rules = DropRules(
            glob=stream.glob,
            regex=stream.regex,
            partition=part.type,
            date_from=part.date_from,
            date_regex=part.date_regex,
            date_format=part.date_format,
            marker_suffix=stream.marker_suffix,
            marker_after_file=self.connection.protocol not in BUCKET_PROTOCOLS,
        )
        return FileStreamPlan(
            spec=spec,
            directory=stream.directory,
            rules=rules,
            fmt=stream.format,
            columns=tuple((k, ARROW_TYPES[v]) for k, v in stream.columns.items()),
            on_bad_rows=stream.on_bad_rows,
            archive_directory=stream.archive_directory,
        )

    def _factory(self, plan: FileStreamPlan) -> ExtractorFactory:
        key = self.resource_key

        def factory(context: dg.AssetExecutionContext, report: ExtractionReport, partition: str | None) -> Extractor:
            remote: DropResource = getattr(context.resources, key)
            lake: LakeResource = context.resources.lake
            assert partition is not None  # file streams are always partitioned
            return extractor_for(plan, remote.connect, lake.store(), partition, report)

        return factory

    def _sensor(self, plan: FileStreamPlan, stream: FileStream) -> dg.SensorDefinition:
        key, spec = self.resource_key, plan.spec
        dynamic = spec.partitioning.name if spec.partitioning and spec.partitioning.granularity == "dynamic" else None
        days = partitions_def(spec.partitioning)
        assert days is not None  # file streams are always partitioned

        @dg.sensor(
            name=f"{self.source}_{stream.name}_drops",
            minimum_interval_seconds=stream.sensor_interval_seconds,
            asset_selection=[lake_key(spec), warehouse_key(spec)],
            required_resource_keys={key, "lake"},
            default_status=dg.DefaultSensorStatus.STOPPED,
            description=f"Requests a run per stable file in {stream.directory} whose version the lake does not hold.",
        )
        def _drops(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
            remote: DropResource = getattr(context.resources, key)
            lake: LakeResource = context.resources.lake
            with remote.connect() as files:
                listing = list(files.list(plan.directory, plan.rules.listed))
            held = landed(
                (m.partition, m.extra, dt.datetime.fromisoformat(m.landed_at).timestamp(), m.landing_id)
                for m in active_manifests(list_manifests(lake.store(), spec))
            )
            state = DropState.from_cursor(context.cursor)
            files_listed = sum(plan.rules.matches(f.name) for f in listing)  # not their markers
            accepts = None if dynamic else days.has_partition_key
            tick = plan_tick(listing, state, plan.rules, stream.max_partitions_per_tick, held, accepts)
            if tick.outside:
                context.log.warning(f"{len(tick.outside)} file(s) dated outside the partitions: {tick.outside[:5]}")
            if tick.unparsable:
                context.log.warning(f"no date in the names of {len(tick.unparsable)} file(s): {tick.unparsable[:5]}")
            if not tick.partitions:
                # Skipping keeps the cursor: a SkipReason cannot carry one, so the stability memory is
                # updated through the context when it changed.
                if tick.state != state:
                    context.update_cursor(tick.state.to_cursor())
                return dg.SkipReason(tick.skip_reason(files_listed))
            tags = source_run_tags(plan.spec.source)
            requests = [
                dg.RunRequest(run_key=tick.run_key(p), partition_key=p, tags=tags) for p in sorted(tick.partitions)
            ]
            added = [dg.AddDynamicPartitionsRequest(dynamic, sorted(tick.partitions))] if dynamic else []
            context.log.info(f"{len(requests)} partition(s) requested; {tick.skip_reason(files_listed)}")
            return dg.SensorResult(
                run_requests=requests, cursor=tick.state.to_cursor(), dynamic_partitions_requests=added
            )

        return _drops

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        yaml_path = Path(context.path) / "defs.yaml"
        names = [s.name for s in self.streams]
        for i, stream in enumerate(self.streams):
            if names.count(stream.name) > 1:
                raise ValueError(f"{yaml_path}: attributes.streams[{i}].name: {stream.name!r} is declared twice")
        assets, sensors, jobs, schedules = [], [], [], []
        for stream in self.streams:
            plan = self._plan(stream)
            kind = self.connection.protocol
            assets.extend(stream_assets(plan.spec, kind, self.resource_key, self._factory(plan), quarantine=True))
            sensors.append(self._sensor(plan, stream))
            job = dg.define_asset_job(
                f"{self.source}_{stream.name}",
                selection=[lake_key(plan.spec), warehouse_key(plan.spec)],
                description=f"Land and load partitions of {plan.spec.path} (launch with a partition or a range).",
                tags=source_run_tags(plan.spec.source),
            )
            jobs.append(job)
            if stream.partition.type == "daily":  # each day, the day before: a drop that came on time
                days = partitions_def(plan.spec.partitioning)
                assert isinstance(days, dg.TimeWindowPartitionsDefinition)
                schedules.append(ended_partition_schedule(job, days))
        return dg.Definitions(
            assets=assets,
            sensors=sensors,
            jobs=jobs,
            schedules=schedules,
            resources={self.resource_key: self.connection.resource()},
        )
