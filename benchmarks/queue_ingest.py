"""RabbitMQ -> Parquet -> DuckDB: 1,000,000 small JSON messages drained from the machine's real broker.

Usage::

    .venv/bin/python benchmarks/queue_ingest.py                      # 1,000,000 messages, 3 runs
    .venv/bin/python benchmarks/queue_ingest.py --messages 200000    # quicker

Before every run of every method the parent purges a fresh durable queue and publishes
``--messages`` persistent messages to it (untimed; pika, no confirms, then waits until the broker
reports them all ready). Each message is one JSON object of about 110 bytes, with an AMQP
``message_id``: ``{"event_id": i, "user": "u<i % 5000>", "kind": "click|view|buy", "amount": x.yz,
"at": "2024-..Z", "tags": ["a", "b"]}``.

Methods, each in its own fresh process (see ``common.py``), interleaved, medians:

- ``platform`` (platform): the project's ``QueueSource`` (``batch_size`` 10,000, ``max_wait_seconds``
  1) built as the tests build it (``sandbox.harness.platform``) on a fresh lake,
  DuckDB file and ``dg.instance_for_test()``; timed: one run materialising the lake asset (drain:
  consume, decode, land, ack) and the warehouse asset (merge on ``_ip_message_id``, checks). The child
  then checks that DuckDB holds exactly N distinct ids. Before the timed part it measures the latency
  of one batch end to end (``batch_latency_s``) on a second, empty queue: publish 10,000 messages and
  run that stream's lake + warehouse assets until they are in DuckDB (a Dagster run's start-up,
  the 1 s ``max_wait_seconds`` that closes the short second batch and the checks included).
- ``bare_pika_consume`` (limit): pika ``basic_consume`` with ``prefetch_count`` 10,000 and a
  ``basic_ack(multiple=True)`` every 10,000 messages; the body is not even read. The fastest one
  Python consumer gets the messages off this broker.
- ``pika_pandas_duckdb`` (peer): the script a user would write: the same consume loop, per 10,000
  messages ``json.loads`` each, ``pandas.DataFrame``, ``to_parquet``, DuckDB ``INSERT INTO ... SELECT
  * FROM read_parquet(...)``, then ack. No de-duplication, no dead-lettering, no schema evolution.

Printed: rows/s (messages landed per second), the ratio to the limit, peak RSS, and for the platform
the latency of one batch.
"""

import argparse
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from common import (
    Method,
    child_report,
    parse_args,
    python_child,
    report,
    run_interleaved,
    select,
    warm_imports,
)

SCRIPT = Path(__file__).resolve()
HOST, PORT = "127.0.0.1", 5672
BATCH = 10_000
KINDS = ("click", "view", "buy")

PLATFORM_YAML = """
type: integration_platform.components.QueueSource
attributes:
  source: bench
  connection: {{broker: rabbitmq, host: {host}, port: {port}}}
  streams:
    - name: events
      queue: {queue}
      batch_size: {batch}
      max_wait_seconds: 1
      max_messages_per_run: 100000000
      max_seconds_per_run: 3600
    - name: probe
      queue: {queue}_probe
      batch_size: {batch}
      max_wait_seconds: 1
"""


def _connection() -> Any:
    import pika

    return pika.BlockingConnection(
        pika.ConnectionParameters(HOST, PORT, credentials=pika.PlainCredentials("guest", "guest"))
    )


def body(i: int) -> bytes:
    at = f"2024-{1 + i % 12:02d}-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:00Z"
    event = {
        "event_id": i,
        "user": f"u{i % 5000}",
        "kind": KINDS[i % 3],
        "amount": round(i % 1000 * 0.37, 2),
        "at": at,
        "tags": ["a", "b"][: 1 + i % 2],
    }
    return json.dumps(event, separators=(",", ":")).encode()


def fill(queue: str, count: int, start: int = 0) -> None:
    """Purge ``queue`` (declaring it durable) and publish ``count`` persistent messages; wait until ready."""
    import pika

    with _connection() as conn:
        channel = conn.channel()
        channel.queue_declare(queue, durable=True)
        channel.queue_purge(queue)
        for i in range(start, start + count):
            channel.basic_publish("", queue, body(i), pika.BasicProperties(message_id=str(i), delivery_mode=2))
        deadline = time.monotonic() + 300
        while channel.queue_declare(queue, passive=True).method.message_count < count:
            if time.monotonic() > deadline:
                raise SystemExit(f"{queue}: the broker did not report {count} messages ready within 300 s")
            time.sleep(0.2)


# ---------------------------------------------------------------- methods (child processes)


def run_bare(args: argparse.Namespace) -> None:
    def work() -> dict[str, Any]:
        got = 0
        with _connection() as conn:
            channel = conn.channel()
            channel.basic_qos(prefetch_count=BATCH)

            def on_message(ch: Any, method: Any, _props: Any, _body: bytes) -> None:
                nonlocal got
                got += 1
                if got % BATCH == 0 or got == args.messages:
                    ch.basic_ack(method.delivery_tag, multiple=True)

            channel.basic_consume(args.queue, on_message)
            while got < args.messages:
                conn.process_data_events(time_limit=1)
        return {"rows": got}

    child_report(work)


def run_pandas(args: argparse.Namespace) -> None:
    import duckdb
    import pandas as pd

    def work() -> dict[str, Any]:
        got = 0
        batch: list[bytes] = []
        with tempfile.TemporaryDirectory() as folder, duckdb.connect(f"{folder}/w.duckdb") as db, _connection() as conn:
            channel = conn.channel()
            channel.basic_qos(prefetch_count=BATCH)

            def land(tag: int) -> None:
                nonlocal batch
                frame = pd.DataFrame([json.loads(b) for b in batch])
                # One file per batch: DuckDB caches what it read of a Parquet file by path, and a
                # batch rewritten under the same name within the cache's validity was read back
                # as the previous batch's bytes ("Snappy decompression failure").
                path = f"{folder}/batch-{got}.parquet"
                frame.to_parquet(path)
                if got == len(batch):
                    db.execute(f"CREATE TABLE events AS SELECT * FROM read_parquet('{path}')")
                else:
                    db.execute(f"INSERT INTO events SELECT * FROM read_parquet('{path}')")
                Path(path).unlink()
                channel.basic_ack(tag, multiple=True)
                batch = []

            def on_message(_ch: Any, method: Any, _props: Any, data: bytes) -> None:
                nonlocal got
                got += 1
                batch.append(data)
                if len(batch) == BATCH or got == args.messages:
                    land(method.delivery_tag)

            channel.basic_consume(args.queue, on_message)
            while got < args.messages:
                conn.process_data_events(time_limit=1)
            rows = db.execute("SELECT count(*) FROM events").fetchone()
        return {"rows": int(rows[0]) if rows else 0}

    child_report(work)


def run_platform(args: argparse.Namespace) -> None:
    import dagster as dg

    from sandbox.harness import platform

    keys = [dg.AssetKey(["bench", "events"]), dg.AssetKey(["warehouse", "bench.events"])]
    probe = [dg.AssetKey(["bench", "probe"]), dg.AssetKey(["warehouse", "bench.probe"])]
    yaml = PLATFORM_YAML.format(host=HOST, port=PORT, queue=args.queue, batch=BATCH)
    with tempfile.TemporaryDirectory() as folder, dg.instance_for_test() as instance:
        target = platform(yaml, Path(folder), instance)
        batch_latency = latency(f"{args.queue}_probe", target, probe)

        def work() -> dict[str, Any]:
            return {**drain_once(target, instance, keys, args.messages), "batch_latency_s": batch_latency}

        child_report(work)


def drain_once(target: Any, instance: Any, keys: list[Any], messages: int) -> dict[str, Any]:
    """One platform run materialising ``keys`` (the stream's lake and warehouse assets); exits when
    it fails or when ``bench.events`` does not hold exactly ``messages`` distinct message ids.
    Returns the rows and the slowest batch's seconds (also kafka_ingest.py's platform method)."""
    if not target.materialize(keys).success:
        raise SystemExit("platform run failed")
    rows = target.query("SELECT count(*), count(DISTINCT _ip_message_id) FROM bench.events")[0]
    if rows != (messages, messages):
        raise SystemExit(f"platform: DuckDB holds {rows} (rows, distinct ids), expected {messages}")
    event = instance.get_latest_materialization_event(keys[0])
    meta = event.asset_materialization.metadata if event and event.asset_materialization else {}
    batch_max = meta.get("batch_seconds_max")
    return {"rows": rows[0], "batch_seconds_max": batch_max.value if batch_max else None}


def latency(queue: str, target: Any, keys: list[Any]) -> float:
    """Seconds from publishing one batch of 10,000 messages to ``queue`` (the probe stream's) to its
    rows in DuckDB, through one Dagster run of the lake and warehouse assets (untimed otherwise)."""
    import pika

    with _connection() as conn:
        conn.channel().queue_declare(queue, durable=True)
    try:
        started = time.perf_counter()
        with _connection() as conn:
            channel = conn.channel()
            for i in range(BATCH):
                channel.basic_publish("", queue, body(i), pika.BasicProperties(message_id=str(i), delivery_mode=2))
        target.materialize(keys)
        seconds = time.perf_counter() - started
    finally:
        with _connection() as conn:
            for name in (queue, f"{queue}.dead-letter"):
                conn.channel().queue_delete(name)
            conn.channel().exchange_delete(f"{queue}.dlx")
    rows = target.query("SELECT count(*) FROM bench.probe")[0][0]
    if rows != BATCH:
        raise SystemExit(f"platform latency probe: {rows} rows, expected {BATCH}")
    return round(seconds, 3)


CHILDREN = {"platform": run_platform, "bare_pika_consume": run_bare, "pika_pandas_duckdb": run_pandas}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="queue_ingest.py", description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000, help="messages per run (default 1,000,000)")
    parser.add_argument("--queue", default=None, help=argparse.SUPPRESS)
    args = parse_args(parser, argv)
    if args.child:
        CHILDREN[args.child](args)
        return
    args.queue = f"ip_bench_{uuid.uuid4().hex[:8]}"
    common = ["--messages", str(args.messages), "--queue", args.queue, "--runs", "3"]

    def prepare() -> None:
        started = time.perf_counter()
        fill(args.queue, args.messages)
        print(
            f"  (filled {args.queue} with {args.messages:,} messages in {time.perf_counter() - started:.1f} s)",
            flush=True,
        )

    methods = select(
        [
            Method("platform", "platform", python_child(SCRIPT, "platform", *common), args.messages, prepare=prepare),
            Method(
                "bare_pika_consume",
                "limit",
                python_child(SCRIPT, "bare_pika_consume", *common),
                args.messages,
                prepare=prepare,
            ),
            Method(
                "pika_pandas_duckdb",
                "peer",
                python_child(SCRIPT, "pika_pandas_duckdb", *common),
                args.messages,
                prepare=prepare,
            ),
        ],
        args.methods,
        always=("platform", "bare_pika_consume"),
    )
    print(
        f"queue_ingest: {args.messages:,} JSON messages of ~{len(body(args.messages // 2))} bytes per run, "
        f"queue {args.queue} on {HOST}:{PORT}",
        flush=True,
    )
    try:
        summaries = run_interleaved(methods, args.runs, warmup=[warm_imports("dagster", "sandbox.harness", "pandas")])
        report(
            "queue_ingest",
            summaries,
            reference="bare_pika_consume",
            bytes_label="(not applicable)",
            extra_columns=[
                ("batch_max_s", "batch_seconds_max", ".2f"),
                ("latency_s", "batch_latency_s", ".2f"),
                ("import_RSS_MB", "baseline_rss_mb", ".0f"),
            ],
        )
    finally:
        with _connection() as conn:
            conn.channel().queue_delete(args.queue)
            conn.channel().queue_delete(f"{args.queue}.dead-letter")
            conn.channel().exchange_delete(f"{args.queue}.dlx")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
