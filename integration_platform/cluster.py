"""Start a Celery worker of cluster mode (:mod:`integration_platform.assets.cluster`).

Usage::

    python -m integration_platform.cluster worker --name wh --queues warehouse   # next to the DuckDB file
    python -m integration_platform.cluster worker --name w1                      # on any machine, any number

The worker is dagster-celery's own (``celery -A dagster_celery.app worker``, as ``dagster-celery
worker start`` runs it) with the broker, result backend and at-least-once settings of
:func:`~integration_platform.assets.cluster.worker_settings`, from the same environment as the code
location (``IP_CELERY_BROKER``, ``IP_CELERY_BACKEND``, ``DAGSTER_HOME`` on the shared PostgreSQL
storage, ``LAKE_URL`` on the shared object store, ``WAREHOUSE_PATH`` on the warehouse's worker).
This process becomes the worker (``exec``), so its pid is the worker's: stop it with SIGTERM
(Celery's warm shutdown: running steps finish) or SIGQUIT.

Only one worker process may serve the ``warehouse`` queue: DuckDB admits one writing process per
file, and in cluster mode that queue is what keeps the rule (no Dagster pool holds the steps back).
A worker of that queue therefore serves it alone with one process (other queues or ``--concurrency``
above 1 are refused), holds an exclusive lock on ``<WAREHOUSE_PATH>.worker.lock`` for its whole
life (through the ``exec``, until its last process exits, warm shutdown included), and refuses to
start when the broker already has a consumer on that queue. These are guards against mistakes, not
a distributed lock: two such workers started at the same instant on two machines can both pass the
broker's check (RabbitMQ 3.10 has no policy for a single active consumer, and dagster-celery
declares the queues itself).
"""

import argparse
import fcntl
import os
import shutil
import sys
import tempfile
from pathlib import Path

from integration_platform.assets.cluster import DEFAULT_QUEUE, WAREHOUSE_QUEUE, celery_config, queue_depths


def worker_argv(name: str, queues: list[str], concurrency: int, config_dir: str) -> list[str]:
    """The ``celery worker`` command line of a worker named ``name`` (``name@host``) consuming
    ``queues`` with ``concurrency`` processes, its settings module in ``config_dir``."""
    celery = shutil.which("celery", path=str(Path(sys.executable).parent)) or shutil.which("celery")
    if celery is None:
        raise FileNotFoundError(
            "no celery executable next to this Python or on PATH: pip install 'integration_platform[cluster]'"
        )
    # One -Q with the list: Celery 5 keeps only the last of several -Q options (which
    # ``dagster-celery worker start`` passes, one per queue).
    argv = [celery, "-A", "dagster_celery.app", "worker", "--prefetch-multiplier=1", "--loglevel", "INFO"]
    return [*argv, "-Q", ",".join(queues), "-n", f"{name}@%h", "--concurrency", str(concurrency)]


#: The settings module dagster-celery's app loads by name (``dagster_celery_config``) when a worker
#: starts. It reads the settings from the environment then (:func:`worker_settings`): dagster-celery's
#: own ``worker start`` writes the broker URL, password included, into such a file instead. It also
#: builds the code location in the worker's main process, before Celery forks its pool processes
#: (:mod:`integration_platform.preload`).
SETTINGS_MODULE = """from integration_platform.assets.cluster import worker_settings

globals().update(worker_settings())

import integration_platform.preload  # noqa: E402,F401
"""


def settings_dir() -> str:
    """A new folder holding the ``dagster_celery_config.py`` of :data:`SETTINGS_MODULE` (no secret in it)."""
    folder = tempfile.mkdtemp(prefix="ip-celery-settings-")
    Path(folder, "dagster_celery_config.py").write_text(SETTINGS_MODULE)
    return folder


def hold_warehouse_lock(warehouse_path: str) -> int:
    """Take an exclusive ``flock`` on ``<warehouse_path>.worker.lock`` (created) and return its file
    descriptor, inheritable, so that the lock lasts through ``exec`` into the worker and its pool
    processes until the last of them exits. Raises ``ValueError`` naming the lock file when another
    process holds it (another warehouse worker of this machine, or one still finishing its steps)."""
    lock = f"{warehouse_path}.worker.lock"
    Path(lock).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ValueError(
            f"another worker of the {WAREHOUSE_QUEUE!r} queue holds {lock}: one process writes {warehouse_path}"
        ) from None
    os.set_inheritable(fd, True)
    return fd


def worker_concurrency(queues: list[str], concurrency: int | None) -> int:
    """The worker's process count: ``concurrency``, or 1 for a worker of the ``warehouse`` queue
    (:data:`~integration_platform.assets.cluster.WAREHOUSE_QUEUE`) and the machine's cores for the others.

    Raises ``ValueError`` when a ``warehouse`` worker is asked for another queue too or for more than
    one process."""
    if WAREHOUSE_QUEUE not in queues:
        return concurrency or os.cpu_count() or 1
    if len(queues) > 1:
        raise ValueError(
            f"--queues {','.join(queues)}: a worker of the {WAREHOUSE_QUEUE!r} queue serves it alone, with one "
            "process (DuckDB admits one writing process per file; steps of other queues would wait behind it): "
            "start another worker for the others"
        )
    if concurrency not in (None, 1):
        raise ValueError(
            f"--concurrency {concurrency}: a worker of the {WAREHOUSE_QUEUE!r} queue runs one process, since "
            "DuckDB admits one writing process per file; start other workers for the other queues"
        )
    return 1


def refuse_second_warehouse_consumer(broker: str) -> None:
    """Raises ``ValueError`` when ``broker`` already has a consumer on the ``warehouse`` queue
    (another worker holds the DuckDB file's writer role), or cannot be reached in 5 s to ask."""
    from kombu.exceptions import OperationalError

    try:
        consumers = (queue_depths(broker, [WAREHOUSE_QUEUE])[WAREHOUSE_QUEUE] or (0, 0))[1]
    except (OperationalError, OSError) as exc:
        raise ValueError(f"cannot ask the broker whether the {WAREHOUSE_QUEUE!r} queue has a worker: {exc}") from exc
    if consumers:
        raise ValueError(
            f"the {WAREHOUSE_QUEUE!r} queue already has {consumers} worker(s) on the broker: only one may serve it "
            "(DuckDB admits one writing process per file)"
        )


def main(argv: list[str] | None = None) -> None:
    """Parse ``worker --name N [--queues a,b] [--concurrency C]`` and exec the worker.

    Raises ``SystemExit`` on bad arguments or a second worker of the ``warehouse`` queue
    (:func:`worker_concurrency`, :func:`hold_warehouse_lock`, :func:`refuse_second_warehouse_consumer`),
    and ``ImportError`` naming the extra when dagster-celery is missing."""
    parser = argparse.ArgumentParser(prog="python -m integration_platform.cluster", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    worker = commands.add_parser("worker", help="run a Celery worker of cluster mode in this process")
    worker.add_argument("--name", required=True, help="worker name (the node is name@host)")
    worker.add_argument("--queues", default=DEFAULT_QUEUE, help="comma-separated queues (default: dagster)")
    worker.add_argument(
        "--concurrency", type=int, default=None, help="worker processes (default: 1 for warehouse, else the cores)"
    )
    args = parser.parse_args(argv)
    queues = [q.strip() for q in args.queues.split(",") if q.strip()]
    if not queues or len(queues) > 4:  # dagster-celery refuses more than four (a Celery 4 bug)
        parser.error("--queues: give one to four queue names")
    try:
        concurrency = worker_concurrency(queues, args.concurrency)
        if WAREHOUSE_QUEUE in queues:
            from dagster_duckdb import DuckDBResource

            from integration_platform.definitions import platform_resources

            warehouse = platform_resources()["warehouse"]
            assert isinstance(warehouse, DuckDBResource)
            hold_warehouse_lock(warehouse.database)
            refuse_second_warehouse_consumer(str(celery_config()["broker"]))
    except ValueError as exc:
        parser.error(str(exc))
    config_dir = settings_dir()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (config_dir, env.get("PYTHONPATH", "")) if p)
    command = worker_argv(args.name, queues, concurrency, config_dir)
    os.execve(command[0], command, env)


if __name__ == "__main__":
    main()
