"""Cluster mode: the same definitions with every run's steps on Celery workers, through Dagster's
own Celery executor (dagster-celery) over RabbitMQ, chosen by ``IP_EXECUTOR=celery`` and nothing in
any source's YAML.

Queues: a step that opens the DuckDB file (warehouse assets, the checks that query the warehouse,
publications and syncs reading it: :func:`warehouse_step`) carries dagster-celery's queue tag
``warehouse``, which exactly one worker process serves, next to the DuckDB file: DuckDB admits one
writing process per file, and that queue now enforces it, in the order the steps were submitted.
Outside this mode the rule is Dagster's pool ``duckdb`` of limit 1; in it the pool is left off,
since a step blocked on a pool is re-tried by the run's coordinator after ever longer waits (1 s
growing to 15 s, Dagster's ``InstanceConcurrencyContext``), and dagster-celery has no per-run tag
limit to start such steps one at a time: the demo's 29 warehouse steps spent most of a run in those
waits. Every other step goes to dagster-celery's default queue ``dagster``, which every worker
serves; they land in the lake, which must then be one every worker reaches (``LAKE_URL=s3://...``,
``gs://``, ``az://``).

Delivery: dagster-celery's defaults acknowledge a task when a worker receives it and return results
over ``rpc://``, so a worker killed mid-step loses the step. This mode sets Celery's own settings for
at-least-once delivery (``task_acks_late``, ``task_reject_on_worker_lost``) and a result backend that
outlives a worker (the Redis at ``IP_CELERY_BACKEND``). The platform's landing guarantees (two-phase
lake writes, the warehouse's ledger of applied landings) make a step run twice land its rows once.
A step that runs longer than its time limit (``IP_CELERY_STEP_TIME_LIMIT``) fails its run, naming the
step, rather than holding the run for ever: dagster-celery's coordinator waits on a step's result with
no timeout.

Environment (read when the definitions load):

- ``IP_EXECUTOR``: ``celery`` for this mode; unset or ``local`` for :mod:`.executor`'s choice by run size.
- ``IP_CELERY_BROKER``: the broker URL (default ``pyamqp://guest:guest@127.0.0.1:5672//``, RabbitMQ).
- ``IP_CELERY_BACKEND``: the result backend URL (default ``redis://127.0.0.1:6379/0``).
- ``IP_CELERY_STEP_TIME_LIMIT``: seconds a step may run on a worker (default 1740, 29 min; ``0`` for
  none): Celery's hard ``task_time_limit``. The run's coordinator writes it into each step's message
  (Celery's ``timelimit`` header, with the soft limit), which the worker obeys; a worker's own
  setting applies only to messages without one, so ``0`` means no limit only where the workers have
  ``0`` too. At the soft limit (:func:`soft_time_limit`, a grace before the hard one) Celery raises
  ``SoftTimeLimitExceeded`` inside the step's thread, which fails as on any error: its staged landing
  discarded, its failure recorded. Where the step carries on past an error (a range's partitions land
  those before a failing one; a partition whose quarantine or hook failed leaves the others to run
  theirs) it does so past this one too, and a thread it waits on (boto3's upload threads, up to
  their 60 s read timeout) or C code that does not return keeps it running: such a step meets the
  hard limit. At the hard limit Celery stops the step's process (SIGTERM, then
  SIGKILL 0.1 s later, billiard's pool): too soon to record anything, so the run fails with Celery's
  ``TimeLimitExceeded`` for the step and no word from it. The default
  stays under RabbitMQ's ``consumer_timeout`` (30 min by default): past it the broker takes an
  unacknowledged task back and hands it to another worker while the first still runs it. Raise
  both together for longer steps.
"""

import os
from typing import Any

import dagster as dg

from integration_platform.resources.lake import STORE_SCHEMES

MODE_ENV = "IP_EXECUTOR"
BROKER_ENV = "IP_CELERY_BROKER"
BACKEND_ENV = "IP_CELERY_BACKEND"
TIME_LIMIT_ENV = "IP_CELERY_STEP_TIME_LIMIT"
#: Seconds: one minute under RabbitMQ's default ``consumer_timeout`` of 30 min
#: (https://www.rabbitmq.com/docs/consumers#acknowledgement-timeout).
DEFAULT_TIME_LIMIT = 29 * 60
#: Seconds between the soft and the hard limit, at most: time for a step interrupted at its soft
#: limit to discard its staged landing and record its failure.
SOFT_LIMIT_GRACE = 60
DEFAULT_BROKER = "pyamqp://guest:guest@127.0.0.1:5672//"
DEFAULT_BACKEND = "redis://127.0.0.1:6379/0"

#: dagster-celery's step tag naming a step's queue (``dagster_celery.tags.DAGSTER_CELERY_QUEUE_TAG``,
#: written here so that defining assets does not import Celery).
CELERY_QUEUE_TAG = "dagster-celery/queue"
#: The queue of the steps that open the DuckDB file; one worker serves it.
WAREHOUSE_QUEUE = "warehouse"
#: dagster-celery's default queue, which every worker serves.
DEFAULT_QUEUE = "dagster"

#: Celery settings (https://docs.celeryq.dev/en/stable/userguide/configuration.html) for at-least-once
#: delivery: acknowledge a task when it has run, not when it is received, and put it back on the
#: queue when the worker process running it dies.
AT_LEAST_ONCE: dict[str, Any] = {
    "task_acks_late": True,
    "task_reject_on_worker_lost": True,
    "broker_connection_retry_on_startup": True,
}


#: The Dagster pool of the steps that open the DuckDB file outside cluster mode; ``dagster.yaml``
#: limits every pool to one step at a time across all runs.
DUCKDB_POOL = "duckdb"


def warehouse_step() -> dict[str, Any]:
    """The keyword arguments ``pool`` and ``op_tags`` of a step that opens the DuckDB file: the queue
    tag ``warehouse`` always (ignored by the other executors; the multiprocess executor limits it to
    one step at a time), and the pool :data:`DUCKDB_POOL` outside cluster mode, where the queue's one
    worker process keeps the single-writer rule instead (see the module's docstring)."""
    return {"pool": None if cluster_mode() else DUCKDB_POOL, "op_tags": {CELERY_QUEUE_TAG: WAREHOUSE_QUEUE}}


def cluster_mode() -> bool:
    """Whether ``IP_EXECUTOR`` selects cluster mode. Raises ``ValueError`` for a value it does not know."""
    mode = os.environ.get(MODE_ENV, "local").strip().lower() or "local"
    if mode not in ("local", "celery"):
        raise ValueError(f"{MODE_ENV}={mode!r}: use 'celery' (cluster mode) or 'local' (the default)")
    return mode == "celery"


def step_time_limit() -> int | None:
    """Seconds a step may run on a worker (``IP_CELERY_STEP_TIME_LIMIT``, default
    :data:`DEFAULT_TIME_LIMIT`), None for no limit (``0``). Raises ``ValueError`` naming the variable
    for a value that is not a whole number of seconds >= 0."""
    raw = os.environ.get(TIME_LIMIT_ENV, "").strip()
    if not raw:
        return DEFAULT_TIME_LIMIT
    if not raw.isdigit():
        raise ValueError(f"{TIME_LIMIT_ENV}={raw!r}: give whole seconds (0 for no limit)")
    return int(raw) or None


def soft_time_limit(limit: int) -> int:
    """The soft time limit (seconds) of a step whose hard limit is ``limit`` seconds (>= 1): the hard
    limit less :data:`SOFT_LIMIT_GRACE`, or half of it when that is shorter, so a 4 s limit has its
    soft limit at 2 s and the default 1,740 s at 1,680 s. billiard checks the limits about once a
    second, the hard one first: under 3 s the soft limit may never strike."""
    return limit - min(SOFT_LIMIT_GRACE, limit // 2)


def celery_config() -> dict[str, Any]:
    """dagster-celery's executor configuration for this mode: ``broker``, ``backend`` and
    ``config_source`` (the at-least-once settings and the step's hard and soft time limits). The same configuration
    starts the workers (``python -m integration_platform.cluster worker``), so both ends agree on the
    broker. Raises ``ValueError`` for a bad ``IP_CELERY_STEP_TIME_LIMIT``."""
    limit = step_time_limit()
    return {
        "broker": os.environ.get(BROKER_ENV) or DEFAULT_BROKER,
        "backend": os.environ.get(BACKEND_ENV) or DEFAULT_BACKEND,
        "config_source": {
            **AT_LEAST_ONCE,
            **({"task_time_limit": limit, "task_soft_time_limit": soft_time_limit(limit)} if limit else {}),
        },
    }


def worker_settings() -> dict[str, Any]:
    """The Celery settings of a worker (lower-case setting names): the broker, the result backend and
    the at-least-once settings of :func:`celery_config`, read from the environment when the worker
    starts, so that no password reaches a file."""
    config = celery_config()
    return {"broker_url": config["broker"], "result_backend": config["backend"], **config["config_source"]}


def require_shared_lake(lake_url: str) -> None:
    """Raises ``ValueError`` unless ``lake_url`` is an object store every worker reaches: in cluster
    mode a lake step lands on one worker and the warehouse step reads its landing on another, so a
    folder lake would leave the warehouse with nothing to load and the run would still succeed."""
    scheme = lake_url.partition("://")[0] if "://" in lake_url else ""
    if scheme not in STORE_SCHEMES:
        raise ValueError(
            f"{MODE_ENV}=celery needs a lake every worker reaches: set LAKE_URL to s3://, gs:// or az://bucket/prefix "
            f"(it is {lake_url!r})"
        )


def celery_executor() -> dg.ExecutorDefinition:
    """Dagster's Celery executor (dagster-celery) configured by :func:`celery_config`. Raises
    ``ImportError`` naming the extra when dagster-celery is not installed."""
    try:
        from dagster_celery import celery_executor as dagster_celery_executor
    except ImportError as exc:
        raise ImportError(
            f"cluster mode needs dagster-celery: pip install 'integration_platform[cluster]' ({exc})"
        ) from exc
    return dagster_celery_executor.configured(celery_config(), name="celery")


def queue_depths(broker: str, queues: list[str]) -> dict[str, tuple[int, int] | None]:
    """Queue name -> (messages waiting, consumers) on ``broker`` (AMQP ``queue.declare`` with
    ``passive``: reads, creates nothing), or None for a queue the broker does not have yet.
    Raises kombu's ``OperationalError`` when the broker cannot be reached in 5 s."""
    from kombu import Connection

    depths: dict[str, tuple[int, int] | None] = {}
    with Connection(broker, connect_timeout=5) as connection:
        for queue in queues:
            channel = connection.channel()
            try:
                _, waiting, consumers = channel.queue_declare(queue, passive=True)
                depths[queue] = (int(waiting), int(consumers))
            except connection.channel_errors:  # 404 NOT_FOUND: never declared
                depths[queue] = None
            finally:
                try:
                    channel.close()
                except connection.channel_errors:  # closed by the broker with the 404
                    pass
    return depths


def describe_depths(depths: dict[str, tuple[int, int] | None]) -> str:
    """``dagster: 3 waiting, 2 workers; warehouse: not declared yet`` (what the sensor's ticks show)."""
    return "; ".join(
        f"{queue}: not declared yet"
        if depth is None
        else f"{queue}: {depth[0]} waiting, {depth[1]} worker{'' if depth[1] == 1 else 's'}"
        for queue, depth in depths.items()
    )


@dg.sensor(
    name="celery_queues",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Cluster mode: messages waiting and workers consuming per Celery queue, in each tick's message.",
)
def celery_queues_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    """Reports the depth of the ``dagster`` and ``warehouse`` queues in its tick (the UI's sensor
    page lists each tick's message); it never requests runs."""
    broker = str(celery_config()["broker"])
    return dg.SkipReason(describe_depths(queue_depths(broker, [DEFAULT_QUEUE, WAREHOUSE_QUEUE])))
