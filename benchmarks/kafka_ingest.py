"""Kafka -> Parquet -> DuckDB: 1,000,000 small JSON messages drained from a current-protocol broker.

Usage::

    .venv/bin/python benchmarks/kafka_ingest.py                      # 1,000,000 messages, 3 runs
    .venv/bin/python benchmarks/kafka_ingest.py --messages 200000    # quicker

The parent starts noida-db's Kafka broker on loopback (``sandbox/kafka_current.py``; the dev and
bench extras install it), creates one topic of 3 partitions and produces ``--messages`` messages
to it once (untimed; confluent-kafka, ``acks=all``, keys ``0..N-1``). Each message is the same JSON
object of about 100 bytes as ``queue_ingest.py``'s. Every client takes Fetch answers of up to 1 GB
(``RECEIVE_MAX``: this broker ignores the requested size limits). Every run of every method reads the whole topic
from the start under a consumer group of its own, so the runs see the same messages.

Methods, each in its own fresh process (see ``common.py``), interleaved, medians:

- ``platform`` (platform): the project's ``QueueSource`` on a Kafka stream (``batch_size`` 10,000,
  ``max_wait_seconds`` 1) built as the tests build it (``sandbox.harness.platform``) on a fresh
  lake, DuckDB file and ``dg.instance_for_test()``; timed: one run materialising the lake asset
  (drain: consume, decode, land, commit offsets) and the warehouse asset (merge on
  ``_ip_message_id``, checks). The child then checks that DuckDB holds exactly N distinct ids.
- ``bare_consume`` (limit): confluent-kafka ``consume(10,000)`` in a loop until N messages, bodies
  not read, one synchronous commit at the end: the fastest one Python consumer gets them off the broker.
- ``kafka_pandas_duckdb`` (peer): the script a user would write: the same loop, per 10,000 messages
  ``json.loads`` each, ``pandas.DataFrame``, ``to_parquet``, DuckDB ``INSERT INTO ... SELECT * FROM
  read_parquet(...)``, then a synchronous commit. No de-duplication, no dead letters, no schema
  evolution, no record of offsets in the lake.

Printed: rows/s (messages landed per second), the ratio to the limit, peak RSS.
"""

import argparse
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from common import Method, child_report, parse_args, python_child, report, run_interleaved, select, warm_imports
from queue_ingest import body, drain_once

SCRIPT = Path(__file__).resolve()
BATCH = 10_000
PARTITIONS = 3
#: noida-db answers a Fetch with everything up to the end of each partition, whatever the request's
#: size limits (test_kafka_current.py); librdkafka drops answers above ``receive.message.max.bytes``
#: (100 MB) and retries forever: 1,000,000 messages are 122 MB. Every method gets the same setting.
RECEIVE_MAX = 1_000_000_000
#: Seconds a peer may take before it is failed (messages missing would otherwise loop for ever).
TIMEOUT = 600

PLATFORM_YAML = """
type: integration_platform.components.QueueSource
attributes:
  source: bench
  connection:
    broker: kafka
    bootstrap_servers: "{bootstrap}"
    client_config: {{receive.message.max.bytes: "{receive_max}"}}
  streams:
    - name: events
      topic: {topic}
      group_id: {group}
      batch_size: {batch}
      max_wait_seconds: 1
      max_messages_per_run: 100000000
      max_seconds_per_run: 3600
"""


def fill(bootstrap: str, topic: str, count: int) -> None:
    """Produce ``count`` messages to ``topic``, every one delivered."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 20})
    failed: list[str] = []
    for i in range(count):
        while True:
            try:
                producer.produce(topic, body(i), str(i), on_delivery=lambda e, _: failed.append(str(e)) if e else None)
                break
            except BufferError:
                producer.poll(0.1)
        if i % 10_000 == 0:
            producer.poll(0)
    if producer.flush(120) or failed:
        raise SystemExit(f"filling {topic}: {len(failed)} message(s) not delivered: {failed[:3]}")


def _consumer(args: argparse.Namespace) -> Any:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": f"bench-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "receive.message.max.bytes": RECEIVE_MAX,
        }
    )
    consumer.assign([TopicPartition(args.topic, p, 0) for p in range(PARTITIONS)])
    return consumer


# ---------------------------------------------------------------- methods (child processes)


def run_bare(args: argparse.Namespace) -> None:
    def work() -> dict[str, Any]:
        consumer, got, deadline = _consumer(args), 0, time.monotonic() + TIMEOUT
        try:
            while got < args.messages:
                if time.monotonic() > deadline:
                    raise SystemExit(f"bare_consume: {got} of {args.messages} messages after {TIMEOUT} s")
                got += sum(1 for m in consumer.consume(BATCH, 1.0) if m.error() is None)
            consumer.commit(asynchronous=False)
        finally:
            consumer.close()
        return {"rows": got}

    child_report(work)


def run_pandas(args: argparse.Namespace) -> None:
    import duckdb
    import pandas as pd

    def work() -> dict[str, Any]:
        consumer, got, batch, deadline = _consumer(args), 0, [], time.monotonic() + TIMEOUT
        with tempfile.TemporaryDirectory() as folder, duckdb.connect(f"{folder}/w.duckdb") as db:
            try:
                while got < args.messages:
                    if time.monotonic() > deadline:
                        raise SystemExit(f"kafka_pandas_duckdb: {got} of {args.messages} after {TIMEOUT} s")
                    batch += [m.value() for m in consumer.consume(BATCH - len(batch), 1.0) if m.error() is None]
                    if len(batch) < BATCH and got + len(batch) < args.messages:
                        continue
                    path = f"{folder}/batch-{got}.parquet"  # one file per batch (see queue_ingest.py)
                    pd.DataFrame([json.loads(b) for b in batch]).to_parquet(path)
                    verb = "CREATE TABLE events AS" if got == 0 else "INSERT INTO events"
                    db.execute(f"{verb} SELECT * FROM read_parquet('{path}')")
                    Path(path).unlink()
                    consumer.commit(asynchronous=False)
                    got, batch = got + len(batch), []
            finally:
                consumer.close()
            rows = db.execute("SELECT count(*) FROM events").fetchone()
        return {"rows": int(rows[0]) if rows else 0}

    child_report(work)


def run_platform(args: argparse.Namespace) -> None:
    import dagster as dg

    from sandbox.harness import platform

    keys = [dg.AssetKey(["bench", "events"]), dg.AssetKey(["warehouse", "bench.events"])]
    yaml = PLATFORM_YAML.format(
        bootstrap=args.bootstrap,
        topic=args.topic,
        group=f"bench-{uuid.uuid4().hex}",
        batch=BATCH,
        receive_max=RECEIVE_MAX,
    )
    with tempfile.TemporaryDirectory() as folder, dg.instance_for_test() as instance:
        target = platform(yaml, Path(folder), instance)

        child_report(lambda: drain_once(target, instance, keys, args.messages))


CHILDREN = {"platform": run_platform, "bare_consume": run_bare, "kafka_pandas_duckdb": run_pandas}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="kafka_ingest.py", description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000, help="messages per run (default 1,000,000)")
    parser.add_argument("--bootstrap", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--topic", default=None, help=argparse.SUPPRESS)
    args = parse_args(parser, argv)
    if args.child:
        CHILDREN[args.child](args)
        return
    from sandbox.kafka_current import start_noida_kafka

    with start_noida_kafka() as broker:
        topic = f"ip_bench_{uuid.uuid4().hex[:8]}"
        broker.create_topic(topic, PARTITIONS)
        started = time.perf_counter()
        fill(broker.bootstrap, topic, args.messages)
        print(f"  (produced {args.messages:,} messages to {topic} in {time.perf_counter() - started:.1f} s)")
        common = ["--messages", str(args.messages), "--bootstrap", broker.bootstrap, "--topic", topic, "--runs", "3"]
        methods = select(
            [
                Method("platform", "platform", python_child(SCRIPT, "platform", *common), args.messages),
                Method("bare_consume", "limit", python_child(SCRIPT, "bare_consume", *common), args.messages),
                Method(
                    "kafka_pandas_duckdb",
                    "peer",
                    python_child(SCRIPT, "kafka_pandas_duckdb", *common),
                    args.messages,
                ),
            ],
            args.methods,
            always=("platform", "bare_consume"),
        )
        print(
            f"kafka_ingest: {args.messages:,} JSON messages of ~{len(body(args.messages // 2))} bytes per run, "
            f"topic {topic} ({PARTITIONS} partitions) on {broker.name} at {broker.bootstrap}",
            flush=True,
        )
        summaries = run_interleaved(methods, args.runs, warmup=[warm_imports("dagster", "sandbox.harness", "pandas")])
        report(
            "kafka_ingest",
            summaries,
            reference="bare_consume",
            bytes_label="(not applicable)",
            extra_columns=[("batch_max_s", "batch_seconds_max", ".2f"), ("import_RSS_MB", "baseline_rss_mb", ".0f")],
        )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
