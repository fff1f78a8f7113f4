"""Scale-out: the same independent streams on the in-process executor, the multiprocess executor,
one Celery worker and two, side by side; and the per-step tax of distribution on a tiny stream.

Usage::

    .venv/bin/python benchmarks/cluster_scale.py            # 3 runs per method
    .venv/bin/python benchmarks/cluster_scale.py --runs 1

The streams: every unpartitioned stream of the demo code location (``integration_platform.definitions``:
the 11 chinook tables from SQLite, the 2 chinook API streams and the 5 PokeAPI streams from the demo's
stand-ins), lake and warehouse assets with their checks, materialised in one run by ``dagster asset
materialize`` (spawn to exit, timed). Every run starts from nothing: a fresh PostgreSQL database for
Dagster's storage on the machine's server, a fresh prefix of an S3 bucket (moto, started once) for the
lake, a fresh DuckDB file. The machine's RabbitMQ and Redis serve the Celery methods; the workers are
started untimed before the run (``sandbox.cluster.start_worker``) and stopped after it.

Methods (runs interleaved, medians):

- ``in_process`` (reference): Dagster's in-process executor (``in_process_max_steps`` above the run's
  step count): every step one after the other in the CLI's process.
- ``multiprocess`` (the platform's choice on one machine for a run this size): a process per step,
  forked from a preloaded server, at most as many at once as the machine has cores.
- ``celery_1_worker``: ``IP_EXECUTOR=celery``, one machine: ``w1`` serving the ``dagster`` queue
  with 2 processes and ``wh`` the ``warehouse`` queue with its one process.
- ``celery_2_workers``: the same plus ``w2``, a second worker of the ``dagster`` queue with 2
  processes, in a working folder of its own.

Printed per method: seconds, the ratio to ``in_process`` and each worker's busy seconds (the sum of
its steps' durations from Dagster's step stats). Then the per-step tax: the lake step of one tiny
stream (``chinook/media_type``, 5 rows) alone, through one Celery worker against in process, and
its difference, the seconds distribution adds to every step (queue round trip, the worker
reconstructing the job and opening the instance).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import dagster as dg
from common import REPO_ROOT, parse_args

from integration_platform.assets.cluster import DEFAULT_QUEUE, WAREHOUSE_QUEUE
from integration_platform.demo import step_workers
from integration_platform.instance import write_instance
from integration_platform.standins import running_standins, stop
from sandbox.cluster import fresh_database, purge_queues, start_worker
from sandbox.object_stores import moto_s3

DAGSTER = str(Path(sys.executable).parent / "dagster")
BROKER = "pyamqp://guest:guest@127.0.0.1:5672//"
BACKEND = "redis://127.0.0.1:6379/14"
TINY = "chinook/media_type"
METHODS = ("in_process", "multiprocess", "celery_1_worker", "celery_2_workers")


def demo_selection() -> str:
    """Every unpartitioned asset of the demo, as a ``--select`` string."""
    from integration_platform.definitions import defs

    built = defs()
    keys = [
        key.to_user_string()
        for asset in built.assets or []
        if isinstance(asset, dg.AssetsDefinition) and asset.partitions_def is None
        for key in asset.keys
    ]
    return ",".join(sorted(keys))


def run_method(method: str, selection: str, endpoint: str, work: Path) -> dict[str, Any]:
    """One run of ``method`` from nothing; its seconds, steps and each worker's busy seconds."""
    folder = work / f"{method}-{uuid.uuid4().hex[:6]}"
    with fresh_database("ip_bench_cluster") as database:
        return _run(method, selection, endpoint, folder, database)


def _run(method: str, selection: str, endpoint: str, folder: Path, database: str) -> dict[str, Any]:
    env = {
        **os.environ,
        "DAGSTER_HOME": str(folder / "home"),
        "DAGSTER_PG_URL": database,
        "LAKE_URL": f"s3://lake/{folder.name}",
        "S3_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "WAREHOUSE_PATH": str(folder / "wh" / "warehouse.duckdb"),
        "IP_CELERY_BROKER": BROKER,
        "IP_CELERY_BACKEND": BACKEND,
        "PYTHONPATH": str(REPO_ROOT),
    }
    write_instance(folder / "home", env)
    argv = [DAGSTER, "asset", "materialize", "-m", "integration_platform.definitions", "--select", selection]
    workers: list[subprocess.Popen[bytes]] = []
    try:
        if method.startswith("celery"):
            env["IP_EXECUTOR"] = "celery"
            purge_queues(BROKER)
            workers.append(start_worker("wh", WAREHOUSE_QUEUE, env, folder / "wh"))
            workers.append(start_worker("w1", DEFAULT_QUEUE, env, folder / "w1", concurrency=2))
            if method == "celery_2_workers":
                workers.append(start_worker("w2", DEFAULT_QUEUE, env, folder / "w2", concurrency=2))
        else:
            env.pop("IP_EXECUTOR", None)
            (folder / "wh").mkdir(parents=True, exist_ok=True)
            max_steps = 10_000 if method == "in_process" else 0
            argv += ["--config-json", json.dumps({"execution": {"config": {"in_process_max_steps": max_steps}}})]
        started = time.perf_counter()
        done = subprocess.run(argv, env=env, cwd=folder, capture_output=True, text=True, timeout=1800)
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"{method}: the run failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
        return {"seconds": seconds, **_busy(env)}
    finally:
        for worker in workers:
            stop(worker)


def _busy(env: dict[str, str]) -> dict[str, Any]:
    """The run's step count and, per worker (``local`` outside Celery), the sum of its steps' seconds."""
    saved = os.environ.get("DAGSTER_PG_URL")
    os.environ["DAGSTER_PG_URL"] = env["DAGSTER_PG_URL"]
    try:
        instance = dg.DagsterInstance.from_config(env["DAGSTER_HOME"])
        run = instance.get_runs(limit=1)[0]
        on = {step: workers[-1].split("@")[0] for step, workers in step_workers(instance, run.run_id).items()}
        busy: dict[str, float] = defaultdict(float)
        stats = instance.get_run_step_stats(run.run_id)
        for stat in stats:
            if stat.start_time and stat.end_time:
                busy[on.get(stat.step_key, "local")] += stat.end_time - stat.start_time
        instance.dispose()
    finally:
        if saved is None:
            os.environ.pop("DAGSTER_PG_URL", None)
        else:
            os.environ["DAGSTER_PG_URL"] = saved
    return {"steps": len(stats), "busy_s": {w: round(s, 1) for w, s in sorted(busy.items())}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cluster_scale.py", description=__doc__.split("\n")[0])
    args = parse_args(parser, argv)
    methods = [m for m in METHODS if not args.methods or m in args.methods.split(",")]
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"ip-bench-cluster-{uuid.uuid4().hex[:6]}"
    results: dict[str, list[dict[str, Any]]] = defaultdict(list)
    tiny: dict[str, list[float]] = defaultdict(list)
    with ExitStack() as stack:
        endpoint = moto_s3(stack)
        import boto3

        boto3.client(
            "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="b", aws_secret_access_key="b"
        ).create_bucket(Bucket="lake")
        os.environ["CHINOOK_DB_URL"] = f"sqlite:///{REPO_ROOT / 'sandbox' / 'chinook' / 'chinook.sqlite'}"
        stack.enter_context(running_standins())
        selection = demo_selection()
        for run in range(args.runs):
            for method in methods:
                result = run_method(method, selection, endpoint, work)
                results[method].append(result)
                print(f"  run {run + 1}/{args.runs} {method:<18} {result['seconds']:7.2f} s  busy {result['busy_s']}")
            for method in ("in_process", "celery_1_worker"):
                tiny[method].append(run_method(method, TINY, endpoint, work)["seconds"])
    reference = statistics.median(r["seconds"] for r in results["in_process"]) if results["in_process"] else None
    streams = selection.count("warehouse/")
    print(f"\ncluster_scale: {streams} streams ({selection.count(',') + 1} assets), median of {args.runs} run(s)")
    print(f"{'method':<18} {'seconds':>8} {'x in_process':>12}  steps  busy seconds per worker (median run)")
    for method in methods:
        runs = sorted(results[method], key=lambda r: r["seconds"])
        middle = runs[len(runs) // 2]
        seconds = statistics.median(r["seconds"] for r in runs)
        ratio = f"{reference / seconds:.2f}x" if reference else "-"
        print(f"{method:<18} {seconds:8.2f} {ratio:>12}  {middle['steps']:5d}  {middle['busy_s']}")
    local, remote = statistics.median(tiny["in_process"]), statistics.median(tiny["celery_1_worker"])
    print(
        f"\nper-step tax ({TINY}, one lake step): in process {local:.2f} s, one Celery worker {remote:.2f} s, "
        f"distribution adds {remote - local:.2f} s"
    )
    path = REPO_ROOT / "benchmarks" / "results" / "cluster_scale.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps({"runs": results, "tiny": tiny, "streams": streams}, indent=1, default=str))
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
