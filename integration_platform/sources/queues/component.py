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
          message_id: broker              # broker | key (Kafka) | field (with id_field) | body_sha256
          batch_size: 10000               # messages per landing (RabbitMQ: at most 65535; Kafka: 1000000)
          max_wait_seconds: 5             # a batch closes after this long
          columns: {amount: float64}
          sensor: {min_messages: 1, interval_seconds: 30}
          schedule: "*/15 * * * *"        # optional drain schedule (cron, UTC)
      publish:                            # optional: warehouse rows out to the broker
        - name: orders_out
          table: shop.orders
          queue: orders_replay

Per stream: ``<source>/<stream>`` drains the queue into the lake in micro-batches
(``drain.py`` reads them, ``core.micro_batches`` lands each, then it is acknowledged),
``warehouse/<source>.<stream>`` merges on ``_ip_message_id``, a sensor
``<source>_<stream>_backlog`` (stopped by default) requests a drain when messages wait, and
the optional schedule. Poison messages go to the dead-letter exchange and queue
(RabbitMQ: ``<queue>.dlx`` / ``<queue>.dead-letter``) or topic (Kafka:
``<topic>.dead-letter``) with the reason. Per ``publish`` entry: an asset publishing a
warehouse table (:mod:`~integration_platform.outbound.publish`).
"""

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import dagster as dg
from pydantic import Field

from integration_platform.assets.config_model import SafeModel, SecretSafeComponent
from integration_platform.assets.run_queue import ACTIVE_RUN_STATUSES, source_run_tags
from integration_platform.assets.schedules import refresh_job
from integration_platform.assets.stream_assets import (
    lake_asset_arguments,
    lake_key,
    start_lake_step,
    warehouse_asset,
    warehouse_key,
)
from integration_platform.core.extract import rows_held
from integration_platform.core.lake import LakeStore
from integration_platform.core.records import ARROW_TYPES
from integration_platform.core.streams import SOURCE_NAME, StreamSpec
from integration_platform.outbound.publish import PublishSpec, publish_asset
from integration_platform.resources.kafka import KafkaResource
from integration_platform.resources.rabbitmq import MAX_PREFETCH, RabbitMQResource
from integration_platform.sources.queues.config import DrainRunConfig, QueueConnection, QueueStream
from integration_platform.sources.queues.drain import DrainLimits, MessageSource, drain
from integration_platform.sources.queues.kafka_stream import ATTRIBUTES as KAFKA_ATTRIBUTES
from integration_platform.sources.queues.kafka_stream import KafkaTopicSource, kafka_publisher, landed_offsets
from integration_platform.sources.queues.kafka_stream import backlog as kafka_backlog
from integration_platform.sources.queues.messages import MESSAGE_ID, MessageDecoder
from integration_platform.sources.queues.rabbitmq_stream import ATTRIBUTES as RABBIT_ATTRIBUTES
from integration_platform.sources.queues.rabbitmq_stream import RabbitQueueSource, rabbit_publisher

#: Tag of every drain run, so the backlog sensor sees a drain in flight.
DRAIN_TAG = "integration_platform/drain"


class QueueSource(SecretSafeComponent, dg.Component, SafeModel, dg.Resolvable):
    """A broker whose queues or topics land in the lake and the warehouse (see module doc)."""

    source: str = Field(
        pattern=SOURCE_NAME.pattern, description="Asset group, lake prefix, DuckDB schema (words joined by single _)."
    )
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
            description=f"Messages of {self.connection.broker} {'topic' if stream.topic else 'queue'} {stream.target}, "
            "landed exactly once.",
            metadata={"topic" if stream.topic else "queue": stream.target},
        )

    def group_id(self, stream: QueueStream) -> str:
        return stream.group_id or f"integration_platform.{self.source}.{stream.name}"

    @contextmanager
    def _open(
        self,
        broker: RabbitMQResource | KafkaResource,
        stream: QueueStream,
        spec: StreamSpec,
        store: LakeStore,
        config: DrainRunConfig,
    ) -> Iterator[MessageSource]:
        if isinstance(broker, KafkaResource):
            assert stream.topic is not None
            at = dt.datetime.fromisoformat(config.reset_timestamp) if config.reset_timestamp else None
            with broker.consumer(self.group_id(stream)) as consumer:
                source = KafkaTopicSource(
                    broker,
                    consumer,
                    stream.topic,
                    dead_letter_topic=stream.dead_letter_topic or f"{stream.topic}.dead-letter",
                    landed=landed_offsets(store, spec, stream.topic),
                    reset=config.offset_reset,
                    reset_timestamp=at.replace(tzinfo=at.tzinfo or dt.UTC) if at else None,
                    offset_ids=stream.message_id == "broker",
                )
                try:
                    yield source
                finally:
                    source.close()
            return
        if config.offset_reset != "committed":
            raise dg.Failure(f"{spec.path}: offset_reset applies to Kafka topics; a RabbitMQ queue has no offsets")
        assert stream.queue is not None
        with broker.connect() as session:
            yield RabbitQueueSource(
                session,
                stream.queue,
                spec.path,
                # Twice the batch: the broker keeps delivering while a batch lands.
                prefetch=min(2 * stream.batch_size, MAX_PREFETCH),
                dead_letter_exchange=stream.dead_letter_exchange or f"{stream.queue}.dlx",
                dead_letter_queue=stream.dead_letter_queue or f"{stream.queue}.dead-letter",
            )

    def _backlog(self, broker: RabbitMQResource | KafkaResource, stream: QueueStream) -> tuple[int, str | None]:
        """Messages waiting, and the run key part that names them (Kafka: the offset ranges)."""
        if isinstance(broker, KafkaResource):
            assert stream.topic is not None
            return kafka_backlog(broker, stream.topic, self.group_id(stream))
        assert stream.queue is not None
        with broker.connect() as session:
            return session.queue_depth(stream.queue)[0], None

    def _lake_asset(self, stream: QueueStream, spec: StreamSpec) -> dg.AssetsDefinition:
        key, spec_key = self.resource_key, lake_key(spec)

        @dg.multi_asset(**lake_asset_arguments(spec, self.connection.broker, key))
        def _drain(context: dg.AssetExecutionContext, config: DrainRunConfig) -> dg.MaterializeResult:
            store = start_lake_step(context, spec)
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
                attributes=KAFKA_ATTRIBUTES if self.connection.broker == "kafka" else RABBIT_ATTRIBUTES,
            )
            with self._open(getattr(context.resources, key), stream, spec, store, config) as source:
                stats = drain(
                    store, spec, source, decoder, limits, context.run.run_id, context.log.info, context.log.warning
                )
                extra = source.run_metadata()
            return dg.MaterializeResult(
                asset_key=spec_key,
                metadata={
                    **stats.metadata(),
                    "dagster/row_count": rows_held(store, spec, each_key_once=True),
                    **{k: dg.MetadataValue.json(v) if isinstance(v, dict) else v for k, v in extra.items()},
                    "dagster/uri": store.uri(spec.path),
                },
            )

        return _drain

    def _sensor(self, stream: QueueStream, spec: StreamSpec) -> dg.SensorDefinition:
        key = self.resource_key

        @dg.sensor(
            name=f"{self.source}_{stream.name}_backlog",
            minimum_interval_seconds=stream.sensor.interval_seconds,
            asset_selection=[lake_key(spec), warehouse_key(spec)],
            required_resource_keys={key},
            default_status=dg.DefaultSensorStatus.STOPPED,
            description=f"Requests a drain of {stream.target} when {stream.sensor.min_messages}+ messages wait.",
        )
        def _backlog(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
            depth, ranges = self._backlog(getattr(context.resources, key), stream)
            if depth < stream.sensor.min_messages:
                return dg.SkipReason(f"{depth} message(s) waiting in {stream.target}")
            in_flight = context.instance.get_runs(
                filters=dg.RunsFilter(tags={DRAIN_TAG: spec.path}, statuses=ACTIVE_RUN_STATUSES), limit=1
            )
            if in_flight:
                return dg.SkipReason(f"{depth} message(s) waiting; drain run {in_flight[0].run_id} in flight")
            # Kafka: the offset ranges waiting name the work. RabbitMQ's delivery tags are
            # channel-scoped and exist only once a message is delivered, so a sensor (which must
            # not consume) cannot key on them: the key is a request counter.
            sequence = int(context.cursor or 0) + 1
            run_key = f"{spec.path}@{ranges}" if ranges else f"{spec.path}#{sequence}"
            return dg.SensorResult(
                run_requests=[
                    dg.RunRequest(run_key=run_key, tags={DRAIN_TAG: spec.path, **source_run_tags(spec.source)})
                ],
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
                _, schedule = refresh_job(
                    f"{self.source}_{stream.name}_drain",
                    self.source,
                    [lake_key(spec), warehouse_key(spec)],
                    stream.schedule,
                    tags={DRAIN_TAG: spec.path},
                )
                schedules.append(schedule)
        kafka = self.connection.broker == "kafka"
        for i, entry in enumerate(self.publish):
            if names.count(entry.name) > 1:
                raise ValueError(f"{yaml_path}: attributes.publish[{i}].name: {entry.name!r} is declared twice")
            if kafka != (entry.topic is not None):
                wanted = "'topic'" if kafka else "'queue' or 'exchange'"
                raise ValueError(
                    f"{yaml_path}: attributes.publish[{i}]: a {self.connection.broker} publication needs {wanted}"
                )
            opener = partial(kafka_publisher, source=self.source) if kafka else rabbit_publisher
            assets.append(publish_asset(self.source, entry, self.resource_key, self.connection.broker, opener))
        return dg.Definitions(
            assets=assets,
            sensors=sensors,
            schedules=schedules,
            resources={self.resource_key: self.connection.resource()},
        )
