"""The YAML model of a ``QueueSource``: connection, streams and the drain's run config."""

from typing import Literal

import dagster as dg
from pydantic import Field, model_validator

from integration_platform.assets.config_model import (
    SafeModel,
    cron_problem,
    from_env,
    port_from_env,
    require_exactly_one,
    secret_from_env,
)
from integration_platform.core.names import ENV_NAME
from integration_platform.core.records import ARROW_TYPES
from integration_platform.core.streams import IDENTIFIER
from integration_platform.resources.kafka import MAX_CONSUME, KafkaResource
from integration_platform.resources.rabbitmq import MAX_PREFETCH, RabbitMQResource
from integration_platform.sources.queues.messages import IdFrom


def librdkafka_value(value: str | bool | int | float) -> str:
    """A librdkafka property value as the text it parses (YAML's ``true`` -> ``"true"``, ``2000`` -> ``"2000"``)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


class QueueConnection(SafeModel, dg.Resolvable):
    """The broker. Secrets only by environment variable name (``*_env``).

    RabbitMQ: ``host``/``host_env``, ``port``/``port_env``, ``username``, ``password_env``,
    ``virtual_host``. Kafka: ``bootstrap_servers``/``bootstrap_servers_env``,
    ``security_protocol``, ``sasl_mechanism``, ``username``, ``password_env`` and
    ``client_config`` (further librdkafka properties).
    """

    broker: Literal["rabbitmq", "kafka"]
    host: str | None = None
    host_env: str | None = Field(default=None, pattern=ENV_NAME)
    port: int | None = Field(default=None, ge=1, le=65535)
    port_env: str | None = Field(default=None, pattern=ENV_NAME)
    username: str | None = None
    password_env: str | None = Field(default=None, pattern=ENV_NAME)
    virtual_host: str = "/"
    bootstrap_servers: str | None = None
    bootstrap_servers_env: str | None = Field(default=None, pattern=ENV_NAME)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str | None = None
    client_config: dict[str, str | bool | int | float] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _complete(self) -> "QueueConnection":
        if self.broker == "rabbitmq":
            require_exactly_one(self, "host", "host_env", "connection: ")
            if self.port is not None and self.port_env is not None:
                raise ValueError("connection: set 'port' or 'port_env', not both")
        else:
            require_exactly_one(self, "bootstrap_servers", "bootstrap_servers_env", "connection: kafka: ")
        return self

    def resource(self) -> RabbitMQResource | KafkaResource:
        """The broker's resource; what is given by env var stays ``EnvVar`` (read at run time)."""
        password = secret_from_env(self.password_env)
        if self.broker == "kafka":
            return KafkaResource(
                bootstrap_servers=from_env(self.bootstrap_servers, self.bootstrap_servers_env, "bootstrap_servers"),
                security_protocol=self.security_protocol,
                sasl_mechanism=self.sasl_mechanism,
                sasl_username=self.username,
                sasl_password=password,
                client_config={name: librdkafka_value(value) for name, value in self.client_config.items()},
            )
        return RabbitMQResource(
            host=from_env(self.host, self.host_env, "host"),
            port=port_from_env(self.port, self.port_env, 5672),
            username=self.username or "guest",
            password=password or "guest",
            virtual_host=self.virtual_host,
        )


class BacklogSensor(SafeModel, dg.Resolvable):
    """When the backlog sensor requests a drain: at least ``min_messages`` waiting."""

    min_messages: int = Field(default=1, ge=1)
    interval_seconds: int = Field(default=30, ge=5)


class QueueStream(SafeModel, dg.Resolvable):
    """One queue (RabbitMQ) or topic (Kafka) as a stream of JSON messages."""

    name: str = Field(pattern=IDENTIFIER.pattern)
    queue: str | None = Field(default=None, min_length=1, description="RabbitMQ: the queue.")
    topic: str | None = Field(default=None, min_length=1, description="Kafka: the topic.")
    group_id: str | None = Field(
        default=None, description="Kafka consumer group; default integration_platform.<source>.<stream>."
    )
    dead_letter_topic: str | None = Field(default=None, description="Kafka; default <topic>.dead-letter.")
    message_id: IdFrom = "broker"
    id_field: str | None = None
    columns: dict[str, str] = Field(default_factory=dict, description=f"Declared types: {', '.join(ARROW_TYPES)}.")
    nested: Literal["struct", "json"] = "struct"
    batch_size: int = Field(default=10_000, ge=1)  # at most RabbitMQ's MAX_PREFETCH, Kafka's MAX_CONSUME
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
        if self.schedule is not None and (problem := cron_problem(self.schedule)):
            raise ValueError(f"stream {self.name!r}: schedule: {problem}")
        return self

    @property
    def target(self) -> str:
        """The queue or topic."""
        return self.queue or self.topic or ""

    def validate_for(self, broker: str) -> None:
        """Raise ``ValueError`` naming the field when the stream does not fit ``broker``."""
        if broker == "kafka":
            if not self.topic or self.queue:
                raise ValueError(f"stream {self.name!r}: a kafka stream needs 'topic' (not 'queue')")
            if self.dead_letter_exchange or self.dead_letter_queue:
                raise ValueError(f"stream {self.name!r}: kafka dead letters go to 'dead_letter_topic'")
            if self.batch_size > MAX_CONSUME:
                raise ValueError(
                    f"stream {self.name!r}: batch_size {self.batch_size} exceeds librdkafka's "
                    f"limit of {MAX_CONSUME} messages per consume call"
                )
        else:
            if not self.queue or self.topic:
                raise ValueError(f"stream {self.name!r}: a rabbitmq stream needs 'queue' (not 'topic')")
            if self.message_id == "key":
                raise ValueError(f"stream {self.name!r}: message_id 'key' is for kafka streams")
            if self.batch_size > MAX_PREFETCH:
                raise ValueError(
                    f"stream {self.name!r}: batch_size {self.batch_size} exceeds RabbitMQ's "
                    f"prefetch limit {MAX_PREFETCH}"
                )


class DrainRunConfig(dg.Config):
    """Run config of a drain (set it in the launchpad)."""

    max_messages: int | None = Field(default=None, ge=1)
    """Take at most this many messages in this run (default: the stream's ``max_messages_per_run``). At least 1:
    0 read as unset took up to a million, and -1 made a run that took nothing and succeeded."""
    offset_reset: Literal["committed", "earliest", "latest", "timestamp"] = "committed"
    """Kafka: where this run starts reading (messages already in the lake are not landed again)."""
    reset_timestamp: str | None = None
    """Kafka, with ``offset_reset: timestamp``: ISO 8601 date-time (UTC when no offset is given)."""
