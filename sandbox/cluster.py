"""Cluster mode on one machine (``make run-cluster``), and the worker helpers its test shares.

``python sandbox/cluster.py`` (what ``make run-cluster`` runs) starts what cluster mode needs that
is not already running: an S3 API server on loopback for the lake (moto), a fresh PostgreSQL
database for Dagster's storage on the machine's server (127.0.0.1:5432, unless ``DAGSTER_PG_URL``
names one), the demo's stand-in servers, and three Celery workers as separate processes with
separate working folders under ``.data/cluster/``: ``wh`` serves the ``warehouse`` queue with one
process next to the DuckDB file, ``w1`` and ``w2`` the ``dagster`` queue and have no warehouse.
RabbitMQ (the broker) and Redis (the result backend) are the machine's. It then runs the same demo
as ``make run`` through them (:mod:`integration_platform.demo` in cluster mode), which prints the
summary and the worker of every step, and stops everything it started, by pid; the database it
created is dropped.
"""

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import psycopg
from kombu import Connection

from integration_platform.assets.cluster import DEFAULT_QUEUE, WAREHOUSE_QUEUE, celery_config
from integration_platform.instance import write_instance
from integration_platform.standins import running_standins, stop
from sandbox.object_stores import moto_s3

REPO = Path(__file__).resolve().parent.parent
PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
READY_SECONDS = 60


def purge_queues(broker: str) -> None:
    """Empty the ``dagster`` and ``warehouse`` queues on ``broker``: no message of an earlier,
    interrupted run reaches new workers. A queue that does not exist yet has nothing to purge."""
    with Connection(broker) as connection:
        for queue in (DEFAULT_QUEUE, WAREHOUSE_QUEUE):
            channel = connection.channel()
            try:
                channel.queue_purge(queue)
            except Exception:  # kombu raises the broker's 404 (NOT_FOUND) as a channel error
                pass
            finally:
                channel.close()


def start_worker(
    name: str, queues: str, env: dict[str, str], folder: Path, concurrency: int = 1
) -> subprocess.Popen[bytes]:
    """``python -m integration_platform.cluster worker`` in ``folder`` (created; its log in
    ``worker.log``), in a session of its own, so that a signal to its process group reaches the
    worker and its pool processes as a lost machine would; returns once Celery logs it ready.
    Raises ``RuntimeError`` with the log's tail when it exits or is not ready in 60 s."""
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "worker.log"
    argv = [sys.executable, "-m", "integration_platform.cluster", "worker", "--name", name, "--queues", queues]
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*argv, "--concurrency", str(concurrency)],
            cwd=folder,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + READY_SECONDS
    while True:
        text = log.read_text(errors="replace")
        if f"{name}@" in text and " ready." in text:
            return process
        if process.poll() is not None or time.monotonic() > deadline:
            stop(process)
            raise RuntimeError(f"Celery worker {name} did not start:\n{text[-3000:]}")
        time.sleep(0.2)


@contextmanager
def fresh_database(prefix: str = "ip_cluster_demo") -> Iterator[str]:
    """A new PostgreSQL database (``<prefix>_<random>``) on the machine's server for Dagster's
    storage, dropped on exit, its connections closed; yields its SQLAlchemy URL. Raises psycopg's
    ``OperationalError`` when the server at 127.0.0.1:5432 cannot be reached."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def main() -> int:
    """Run the demo on a two-worker cluster of this machine; its exit status (0: every step and check passed)."""
    import boto3

    from integration_platform import demo

    folder = REPO / ".data" / "cluster"
    with ExitStack() as stack:
        endpoint = moto_s3(stack)
        boto3.client(
            "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="demo", aws_secret_access_key="demo"
        ).create_bucket(Bucket="lake")
        os.environ.update(
            {
                "IP_EXECUTOR": "celery",
                "DAGSTER_HOME": str(folder / "home"),
                "DAGSTER_PG_URL": os.environ.get("DAGSTER_PG_URL") or stack.enter_context(fresh_database()),
                "LAKE_URL": "s3://lake/raw",
                "S3_ENDPOINT_URL": endpoint,
                "AWS_ACCESS_KEY_ID": "demo",
                "AWS_SECRET_ACCESS_KEY": "demo",
                "WAREHOUSE_PATH": str(folder / "wh" / "warehouse.duckdb"),
                "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
            }
        )
        for stale in (folder / "wh" / "warehouse.duckdb", folder / "home" / "demo_sensor_cursors.json"):
            stale.unlink(missing_ok=True)
        write_instance(folder / "home")
        print(f"lake s3://lake/raw on {endpoint}; Dagster storage {os.environ['DAGSTER_PG_URL']}", flush=True)
        stack.enter_context(running_standins())  # exported before the workers start: they reach them too
        purge_queues(str(celery_config()["broker"]))
        # w1 and w2 stand for other machines: their warehouse path is one no step of theirs may open.
        for name, queues in (("wh", WAREHOUSE_QUEUE), ("w1", DEFAULT_QUEUE), ("w2", DEFAULT_QUEUE)):
            env = dict(os.environ)
            if name != "wh":
                env["WAREHOUSE_PATH"] = str(folder / name / "no-warehouse-here.duckdb")
            worker = start_worker(name, queues, env, folder / name)
            stack.callback(stop, worker)
            print(f"Celery worker {name} (pid {worker.pid}) serves {queues}; its log: {folder / name / 'worker.log'}")
        return demo.main()


if __name__ == "__main__":
    sys.exit(main())
