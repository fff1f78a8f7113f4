"""KafkaResource: a Kafka cluster through confluent-kafka (librdkafka).

Protocol details and where they come from (Apache Kafka protocol guide, librdkafka's
CONFIGURATION.md):

- Offsets are per partition; the *committed* offset of a consumer group is the next offset
  to read. Committing ``offset + 1`` of the last landed message is what "land, then commit"
  means here. The group's commits live in the broker (``OffsetCommit``), not in Dagster.
- A consumer with ``assign()`` (not ``subscribe()``) reads the partitions it names without a
  group rebalance, and still commits under its ``group.id`` (generation -1, the "simple
  consumer" commit).
- Brokers older than 0.10 do not answer ``ApiVersions``: such a cluster needs
  ``api.version.request: "false"`` and ``broker.version.fallback: "<version>"`` in
  ``client_config``. Message timestamps need 0.10, ``offsets_for_times`` 0.10.1
  (``ListOffsets`` v1), headers 0.11 (record format v2): with an older fallback version those
  features are refused here with a clear error (librdkafka would silently drop headers and
  answer ``offsets_for_times`` wrongly on 0.9, as the tests found).

What this module adds: configuration as a Dagster resource (secrets by ``EnvVar``), the
broker version the client is told, and errors that name the cluster without the password.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dagster as dg
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient
from pydantic import Field

from integration_platform.resources.brokers import BrokerError

#: librdkafka properties this resource sets itself (from its own fields).
OWN_PROPERTIES = (
    "bootstrap.servers", "group.id", "sasl.username", "sasl.password", "enable.auto.commit", "transactional.id",
)  # fmt: skip
#: The most messages librdkafka's ``Consumer.consume`` takes in one call (more is a ``ValueError``).
MAX_CONSUME = 1_000_000
#: Record format v2 arrived in Kafka 0.11, and with it headers, idempotent producers and
#: transactions (InitProducerId).
RECORD_V2_SINCE = (0, 11)


def version_tuple(text: str) -> tuple[int, ...]:
    """``"0.9.0.1"`` -> ``(0, 9, 0, 1)``; raises ``ValueError`` for anything else."""
    return tuple(int(part) for part in text.split("."))


class KafkaResource(dg.ConfigurableResource):
    """A Kafka cluster. ``bootstrap_servers``: ``host:port[,host:port...]``.

    Authentication: ``security_protocol`` (``PLAINTEXT``, ``SSL``, ``SASL_PLAINTEXT``,
    ``SASL_SSL``) with ``sasl_mechanism`` / ``sasl_username`` / ``sasl_password`` (set the
    password with ``dg.EnvVar``). ``client_config``: any further librdkafka property (for a
    0.9 broker: ``api.version.request: "false"``, ``broker.version.fallback: "0.9.0.1"``).
    ``timeout`` (seconds) bounds each metadata, offset and commit request.
    """

    bootstrap_servers: str
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    client_config: dict[str, str] = Field(default_factory=dict)
    timeout: float = Field(default=30.0, gt=0)

    @property
    def where(self) -> str:
        """``kafka://servers``: how errors name the cluster."""
        return f"kafka://{self.bootstrap_servers}"

    def broker_version(self) -> tuple[int, ...] | None:
        """The broker version the client is told (``broker.version.fallback`` when
        ``api.version.request`` is off), or ``None`` when the client asks the broker."""
        if str(self.client_config.get("api.version.request", "true")).lower() == "false":
            return version_tuple(str(self.client_config.get("broker.version.fallback", "0.10.0")))
        return None

    def supports(self, version: tuple[int, ...]) -> bool:
        """Whether the broker is at least ``version`` (true when the client negotiates)."""
        told = self.broker_version()
        return told is None or told >= version

    def _config(self) -> dict[str, Any]:
        clash = sorted(set(self.client_config) & set(OWN_PROPERTIES))
        if clash:
            raise ValueError(f"{self.where}: set {clash} through the resource's fields, not client_config")
        config: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
            **self.client_config,
        }
        if self.sasl_mechanism:
            config["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username is not None:
            config["sasl.username"] = self.sasl_username
            config["sasl.password"] = self.sasl_password or ""
        return config

    def error(self, what: str, exc: BaseException | KafkaError) -> BrokerError:
        """A :class:`BrokerError` for ``what`` that names the cluster (never the password)."""
        error = exc.args[0] if isinstance(exc, KafkaException) and exc.args else exc
        text = error.str() if isinstance(error, KafkaError) else str(error)
        if self.sasl_password:
            text = text.replace(self.sasl_password, "***")
        return BrokerError(f"{what} on {self.where}: {text}")

    @contextmanager
    def consumer(self, group_id: str) -> Iterator[Consumer]:
        """A consumer in ``group_id`` with automatic commits off, closed when the block ends."""
        consumer = Consumer(
            {
                **self._config(),
                "group.id": group_id,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "enable.partition.eof": False,
                "auto.offset.reset": "earliest",
                # librdkafka's default, said here: messages of open or aborted transactions are
                # never landed (the consumer stops at the last stable offset).
                "isolation.level": "read_committed",
            }
        )
        try:
            yield consumer
        finally:
            consumer.close()

    def new_producer(self, transactional_id: str | None = None) -> Producer:
        """A producer waiting for every in-sync replica (``acks=all``); the caller flushes it.

        Idempotent (``enable.idempotence``: the broker drops a batch the client retries after a
        lost answer, and keeps each partition's order) unless the broker is told to be older than
        0.11 or ``client_config`` turns it off. With ``transactional_id`` the producer is
        transactional (the caller runs ``init_transactions``); raises :class:`BrokerError` when
        the broker is told to be older than 0.11."""
        config = {**self._config(), "acks": "all", "linger.ms": 5}
        if self.supports(RECORD_V2_SINCE):
            config.setdefault("enable.idempotence", True)
        if transactional_id is not None:
            if not self.supports(RECORD_V2_SINCE):
                raise BrokerError(
                    f"transactions need Kafka >= 0.11; {self.where} is configured as "
                    f"{'.'.join(map(str, self.broker_version() or ()))}"
                )
            config["transactional.id"] = transactional_id
        return Producer(config)

    def new_admin(self) -> AdminClient:
        """An AdminClient for the cluster (metadata such as topic ids; it has no ``close``)."""
        return AdminClient(self._config())

    def partitions(self, consumer: Consumer, topic: str) -> list[int]:
        """The partition ids of ``topic``; raises :class:`BrokerError` when it does not exist."""
        try:
            metadata = consumer.list_topics(topic, timeout=self.timeout)
        except KafkaException as exc:
            raise self.error(f"metadata of topic {topic!r}", exc) from None
        found = metadata.topics.get(topic)
        if found is None or found.error is not None or not found.partitions:
            reason = found.error.str() if found is not None and found.error is not None else "no partitions"
            raise BrokerError(f"topic {topic!r} on {self.where}: {reason}")
        return sorted(found.partitions)
