"""QueueSource: one YAML file declares a broker's queues or topics, landed exactly once.

``defs/<source>/defs.yaml``::

    type: integration_platform.components.QueueSource
    attributes:
      source: shop_events                 # asset group, lake prefix, DuckDB schema
      connection:
        broker: rabbitmq                  # rabbitmq | kafka
        host_env: RABBITMQ_HOST           # or host: 127.0.0.1
        port: 5672
        username: guest
        password_env: RABBITMQ_PASSWORD
      streams:
        - name: orders
          queue: orders                   # kafka: topic: orders
          message_id: property            # property | field (with id_field) | body_sha256
          batch_size: 10000               # messages per landing (RabbitMQ: at most 65535)
          max_wait_seconds: 5             # a batch closes after this long
          columns: {amount: float64}
          sensor: {min_messages: 1, interval_seconds: 30}
          schedule: "*/15 * * * *"        # optional drain schedule (cron, UTC)
      publish:                            # optional: warehouse rows out to the broker
        - name: orders_out
          table: shop.orders
          queue: orders_replay

Per stream: ``<source>/<stream>`` drains the queue into the lake (``queue_drain``: land, then
acknowledge), ``warehouse/<source>/<stream>`` merges on ``_ip_message_id``, a sensor
``<source>_<stream>_backlog`` (stopped by default) requests a drain when messages wait, and
the optional schedule. Poison messages go to the dead-letter exchange and queue
(RabbitMQ: ``<queue>.dlx`` / ``<queue>.dead-letter``) or topic (Kafka:
``<topic>.dead-letter``) with the reason. Per ``publish`` entry: an asset publishing a
warehouse table (``queue_publish``).
"""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import dagster as dg
from dagster._utils.schedules import is_valid_cron_string
from pydantic import Field, model_validator

from integration_platform.components.queue_drain import DrainLimits, MessageSource, drain
from integration_platform.components.queue_publish import PublishSpec, publish_asset
from integration_platform.components.rabbitmq_stream import ATTRIBUTES as RABBIT_ATTRIBUTES
from integration_platform.components.rabbitmq_stream import RabbitQueueSource, rabbit_publisher
from integration_platform.components.stream_assets import warehouse_asset
from integration_platform.pipeline.messages import MESSAGE_ID, IdFrom, MessageDecoder
from integration_platform.pipeline.records import ARROW_TYPES
from integration_platform.pipeline.streams import IDENTIFIER, StreamSpec
from integration_platform.resources.lake import LakeResource
from integration_platform.resources.rabbitmq import MAX_PREFETCH, RabbitMQResource

ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
#: Tag of every drain run, so the backlog sensor sees a drain in flight.
DRAIN_TAG = "integration_platform/drain"
ACTIVE = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


class QueueConnection(dg.Model, dg.Resolvable):
    """The broker. Secrets only by environment variable name (``*_env``)."""

    broker: Literal["rabbitmq"]
    host: str | None = None
    host_env: str | None = Field(default=None, pattern=ENV_NAME)
    port: int | None = Field(default=None, ge=1, le=65535)
    port_env: str | None = Field(default=None, pattern=ENV_NAME)
    username: str = "guest"
    password_env: str | None = Field(default=None, pattern=ENV_NAME)
    virtual_host: str = "/"

    @model_validator(mode="after")
    def _complete(self) -> "QueueConnection":
        if (self.host is None) == (self.host_env is None):
            raise ValueError("connection: set exactly one of 'host' and 'host_env'")
        if self.port is not None and self.port_env is not None:
            raise ValueError("connection: set 'port' or 'port_env', not both")
        return self

    def resource(self) -> RabbitMQResource:
        """The broker's resource; what is given by env var stays ``EnvVar`` (read at run time)."""
        return RabbitMQResource(
            host=dg.EnvVar(self.host_env) if self.host_env else self.host,  # type: ignore[arg-type]
            port=dg.EnvVar.int(self.port_env) if self.port_env else (self.port or 5672),  # type: ignore[arg-type]
            username=self.username,
            password=dg.EnvVar(self.password_env) if self.password_env else "guest",  # type: ignore[arg-type]
            virtual_host=self.virtual_host,
        )


class BacklogSensor(dg.Model, dg.Resolvable):
    """When the backlog sensor requests a drain: at least ``min_messages`` waiting."""

    min_messages: int = Field(default=1, ge=1)
    interval_seconds: int = Field(default=30, ge=5)


class QueueStream(dg.Model, dg.Resolvable):
    """One queue (RabbitMQ) or topic (Kafka) as a stream of JSON messages."""

    name: str = Field(pattern=IDENTIFIER.pattern)
    queue: str | None = Field(default=None, min_length=1)
    message_id: IdFrom = "property"
    id_field: str | None = None
    columns: dict[str, str] = Field(default_factory=dict, description=f"Declared types: {', '.join(ARROW_TYPES)}.")
    nested: Literal["struct", "json"] = "struct"
    batch_size: int = Field(default=10_000, ge=1)
    max_wait_seconds: float = Field(default=5.0, gt=0)
    max_messages_per_run: int = Field(default=1_000_000, ge=1)
    max_seconds_per_run: float = Field(default=600.0, gt=0)
    dead_letter_exchange: str | None = None
    dead_letter_queue: str | None = None
    sensor: BacklogSensor = Field(default_factory=BacklogSensor)
    schedule: str | None = Field(default=None, description="Cron (UTC) of a drain schedule.")

    @model_validator(mode="after")
    def _consistent(self) -> "QueueStream":
        if self.message_id == "field" and not self.id_field:
            raise ValueError(f"stream {self.name!r}: message_id 'field' needs 'id_field'")
        bad = {k: v for k, v in self.columns.items() if v not in ARROW_TYPES}
        if bad:
            raise ValueError(f"stream {self.name!r}: columns {bad}: allowed types are {', '.join(ARROW_TYPES)}")
        if self.schedule is not None and not is_valid_cron_string(self.schedule):
            raise ValueError(f"stream {self.name!r}: schedule {self.schedule!r} is not a cron string")
        return self

    def validate_for(self, broker: str) -> None:
        """Raise ``ValueError`` naming the field when the stream does not fit ``broker``."""
        if broker == "rabbitmq":
            if not self.queue:
                raise ValueError(f"stream {self.name!r}: a rabbitmq stream needs 'queue'")
            if self.batch_size > MAX_PREFETCH:
                raise ValueError(
                    f"stream {self.name!r}: batch_size {self.batch_size} exceeds RabbitMQ's "
                    f"prefetch limit {MAX_PREFETCH}"
                )


class DrainRunConfig(dg.Config):
    """Run config of a drain (set it in the launchpad)."""

    max_messages: int | None = None
    """Take at most this many messages in this run (default: the stream's ``max_messages_per_run``)."""


class QueueSource(dg.Component, dg.Model, dg.Resolvable):
    """A broker whose queues or topics land in the lake and the warehouse (see module doc)."""

    source: str = Field(pattern=IDENTIFIER.pattern, description="Asset group, lake prefix and DuckDB schema.")
    connection: QueueConnection
    streams: list[QueueStream] = Field(default_factory=list)
    publish: list[PublishSpec] = Field(default_factory=list)

    @property
    def resource_key(self) -> str:
        return f"{self.source}_broker"

    def spec(self, stream: QueueStream) -> StreamSpec:
        """The pipeline's view of ``stream``: merged on the message id."""
        return StreamSpec(
            source=self.source,
            name=stream.name,
            write_disposition="merge",
            primary_key=(MESSAGE_ID,),
            description=f"Messages of {self.connection.broker} queue {stream.queue}, landed exactly once.",
            metadata={"queue": stream.queue or ""},
        )

    @contextmanager
    def _open(self, broker: RabbitMQResource, stream: QueueStream) -> Iterator[MessageSource]:
        assert stream.queue is not None
        with broker.connect() as session:
            yield RabbitQueueSource(
                session,
                stream.queue,
                f"{self.source}/{stream.name}",
                # Twice the batch: the broker keeps delivering while a batch lands.
                prefetch=min(2 * stream.batch_size, MAX_PREFETCH),
                dead_letter_exchange=stream.dead_letter_exchange or f"{stream.queue}.dlx",
                dead_letter_queue=stream.dead_letter_queue or f"{stream.queue}.dead-letter",
            )

    def _lake_asset(self, stream: QueueStream, spec: StreamSpec) -> dg.AssetsDefinition:
        key = self.resource_key

        @dg.asset(
            key=spec.lake_key,
            group_name=self.source,
            kinds={self.connection.broker, "parquet"},
            required_resource_keys={"lake", key},
            description=spec.description,
            metadata={"write_disposition": "merge", "primary_key": MESSAGE_ID, **spec.metadata},
        )
        def _drain(context: dg.AssetExecutionContext, config: DrainRunConfig) -> dg.MaterializeResult:
            lake: LakeResource = context.resources.lake
            store = lake.store()
            limits = DrainLimits(
                batch_size=stream.batch_size,
                max_wait_seconds=stream.max_wait_seconds,
                max_messages=config.max_messages or stream.max_messages_per_run,
                max_seconds=stream.max_seconds_per_run,
            )
            decoder = MessageDecoder(
                spec.path,
                id_from=stream.message_id,
                id_field=stream.id_field,
                columns={k: ARROW_TYPES[v] for k, v in stream.columns.items()},
                nested=stream.nested,
                attributes=RABBIT_ATTRIBUTES,
            )
            with self._open(getattr(context.resources, key), stream) as source:
                stats = drain(context, store, spec, source, decoder, limits)
            return dg.MaterializeResult(metadata={**stats.metadata(), "dagster/uri": store.uri(spec.path)})

        return _drain

    def _sensor(self, stream: QueueStream, spec: StreamSpec) -> dg.SensorDefinition:
        key = self.resource_key

        @dg.sensor(
            name=f"{self.source}_{stream.name}_backlog",
            minimum_interval_seconds=stream.sensor.interval_seconds,
            asset_selection=[spec.lake_key, spec.warehouse_key],
            required_resource_keys={key},
            default_status=dg.DefaultSensorStatus.STOPPED,
            description=f"Requests a drain of {stream.queue} when {stream.sensor.min_messages}+ messages wait.",
        )
        def _backlog(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
            broker: RabbitMQResource = getattr(context.resources, key)
            assert stream.queue is not None
            with broker.connect() as session:
                depth, _ = session.queue_depth(stream.queue)
            if depth < stream.sensor.min_messages:
                return dg.SkipReason(f"{depth} message(s) waiting in {stream.queue}")
            in_flight = context.instance.get_runs(
                filters=dg.RunsFilter(tags={DRAIN_TAG: spec.path}, statuses=ACTIVE), limit=1
            )
            if in_flight:
                return dg.SkipReason(f"{depth} message(s) waiting; drain run {in_flight[0].run_id} in flight")
            # Delivery tags are channel-scoped and exist only once a message is delivered, so a
            # sensor (which must not consume) cannot key on them: the key is a request counter.
            sequence = int(context.cursor or 0) + 1
            return dg.SensorResult(
                run_requests=[dg.RunRequest(run_key=f"{spec.path}#{sequence}", tags={DRAIN_TAG: spec.path})],
                cursor=str(sequence),
            )

        return _backlog

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        yaml_path = Path(context.path) / "defs.yaml"
        names = [s.name for s in self.streams] + [p.name for p in self.publish]
        assets: list[dg.AssetsDefinition] = []
        sensors, schedules = [], []
        for i, stream in enumerate(self.streams):
            where = f"{yaml_path}: attributes.streams[{i}]"
            if names.count(stream.name) > 1:
                raise ValueError(f"{where}.name: {stream.name!r} is declared twice")
            try:
                stream.validate_for(self.connection.broker)
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from None
            spec = self.spec(stream)
            assets += [self._lake_asset(stream, spec), warehouse_asset(spec)]
            sensors.append(self._sensor(stream, spec))
            if stream.schedule:
                job = dg.define_asset_job(
                    f"{self.source}_{stream.name}_drain",
                    selection=[spec.lake_key, spec.warehouse_key],
                    tags={DRAIN_TAG: spec.path},
                )
                schedules.append(
                    dg.ScheduleDefinition(
                        name=f"{self.source}_{stream.name}_drain_schedule",
                        job=job,
                        cron_schedule=stream.schedule,
                        execution_timezone="UTC",
                        default_status=dg.DefaultScheduleStatus.STOPPED,
                    )
                )
        for i, entry in enumerate(self.publish):
            if names.count(entry.name) > 1:
                raise ValueError(f"{yaml_path}: attributes.publish[{i}].name: {entry.name!r} is declared twice")
            assets.append(
                publish_asset(self.source, entry, self.resource_key, self.connection.broker, rabbit_publisher)
            )
        return dg.Definitions(
            assets=assets,
            sensors=sensors,
            schedules=schedules,
            resources={self.resource_key: self.connection.resource()},
        )
