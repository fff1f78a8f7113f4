"""Cluster mode on a real cluster of one machine: Dagster's Celery executor over the running RabbitMQ,
the Redis result backend, Dagster's storage in PostgreSQL, the lake on an S3 API server (moto), and
three Celery workers started by ``python -m integration_platform.cluster worker`` as separate processes
with separate working folders: ``wh`` serves the ``warehouse`` queue with one process next to the
DuckDB file, ``w1`` and ``w2`` the ``dagster`` queue and have no warehouse.

The run is ``dagster asset materialize`` of six chinook streams (SQLite, vendored) with
``IP_EXECUTOR=celery``; the same selection also runs in one process (the default executor) on a local
lake and warehouse of its own, and both warehouses must hold the same rows."""

import itertools
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import dagster as dg
import duckdb
import pytest
from kombu import Connection, Queue

from integration_platform.assets.cluster import DEFAULT_QUEUE, WAREHOUSE_QUEUE, celery_queues_sensor, queue_depths
from integration_platform.assets.run_recovery import HOST_TAG
from integration_platform.demo import step_workers
from integration_platform.instance import write_instance
from integration_platform_tests.services import PG_HOST, PG_PORT, REPO, moto_server, psql, require_port
from sandbox.cluster import purge_queues, start_worker
from sandbox.processes import stop

BROKER = "pyamqp://guest:guest@127.0.0.1:5672//"
BACKEND = "redis://127.0.0.1:6379/15"  # a database of its own on the machine's Redis
TABLES = ("artist", "album", "genre", "media_type", "playlist", "employee")
SELECTION = ",".join([*(f"chinook/{t}" for t in TABLES), *(f"warehouse/chinook.{t}" for t in TABLES)])
DAGSTER = str(Path(sys.executable).parent / "dagster")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    """The environment of a code location in cluster mode, with both workers running."""
    require_port(PG_HOST, PG_PORT, "PostgreSQL")
    require_port("127.0.0.1", 5672, "RabbitMQ")
    require_port("127.0.0.1", 6379, "Redis")
    root = tmp_path_factory.mktemp("cluster")
    database = f"ip_test_cluster_{uuid.uuid4().hex[:8]}"
    psql("postgres", "-c", f"CREATE DATABASE {database}")
    workers: list[subprocess.Popen[bytes]] = []
    try:
        with moto_server() as endpoint:
            boto3.client(
                "s3",
                endpoint_url=endpoint,
                region_name="us-east-1",
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
            ).create_bucket(Bucket="lake")
            env = {
                **os.environ,
                "DAGSTER_HOME": str(root / "home"),
                "DAGSTER_PG_URL": f"postgresql+psycopg2://postgres@{PG_HOST}:{PG_PORT}/{database}",
                "IP_EXECUTOR": "celery",
                "IP_CELERY_BROKER": BROKER,
                "IP_CELERY_BACKEND": BACKEND,
                "LAKE_URL": "s3://lake/raw",
                "S3_ENDPOINT_URL": endpoint,
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "WAREHOUSE_PATH": str(root / "wh" / "warehouse.duckdb"),
                "CHINOOK_DB_URL": f"sqlite:///{REPO / 'sandbox' / 'chinook' / 'chinook.sqlite'}",
                "PYTHONPATH": str(REPO),
            }
            write_instance(root / "home", env)
            purge_queues(BROKER)
            workers.append(start_worker("wh", WAREHOUSE_QUEUE, env, root / "wh"))
            for name in ("w1", "w2"):
                no_warehouse = {**env, "WAREHOUSE_PATH": str(root / name / "no-warehouse-here.duckdb")}
                workers.append(start_worker(name, DEFAULT_QUEUE, no_warehouse, root / name))
            yield {"env": env, "root": root, "workers": workers}
    finally:
        for worker in workers:
            stop(worker)
        psql("postgres", "-c", f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


def _materialize(env: dict[str, str], cwd: Path, selection: str = SELECTION) -> subprocess.CompletedProcess[str]:
    argv = [DAGSTER, "asset", "materialize", "-m", "integration_platform.definitions", "--select", selection]
    return subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)


def _submissions(instance: dg.DagsterInstance, run_id: str) -> dict[str, float]:
    """Step key -> when the run's coordinator submitted its Celery task (dagster-celery's engine event)."""
    return {
        entry.step_key: entry.timestamp
        for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
        if entry.step_key and entry.user_message.startswith("Submitting celery task")
    }


def _rows(warehouse: Path) -> dict[str, list[tuple[object, ...]]]:
    """Each table's rows without the platform's columns, sorted."""
    data_columns = "COLUMNS(c -> c NOT LIKE '\\_ip\\_%' ESCAPE '\\')"
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        return {t: sorted(conn.execute(f"SELECT {data_columns} FROM chinook.{t}").fetchall()) for t in TABLES}


def test_steps_run_on_both_workers_and_warehouse_steps_only_on_its_worker(cluster: dict[str, object]) -> None:
    env = dict(cluster["env"])  # type: ignore[call-overload]
    root = Path(str(cluster["root"]))
    done = _materialize(env, root)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DAGSTER_PG_URL", env["DAGSTER_PG_URL"])
        instance = dg.DagsterInstance.from_config(env["DAGSTER_HOME"])
        run = instance.get_runs(limit=1)[0]
        assert run.status == dg.DagsterRunStatus.SUCCESS
        worker_of = {step: on[-1].split("@")[0] for step, on in step_workers(instance, run.run_id).items()}
        spans = {s.step_key: (s.start_time, s.end_time) for s in instance.get_run_step_stats(run.run_id)}
        submitted = _submissions(instance, run.run_id)
        instance.dispose()

    lake_steps = {k: w for k, w in worker_of.items() if k.startswith("chinook__")}
    # The warehouse assets and their rows_match_source checks; the freshness check reads only the event log.
    warehouse_steps = {k: w for k, w in worker_of.items() if k.startswith("warehouse__")}
    assert len(lake_steps) == len(TABLES) and len(warehouse_steps) == 2 * len(TABLES), worker_of
    assert set(lake_steps.values()) == {"w1", "w2"}, f"lake steps spread over both workers: {lake_steps}"
    assert set(warehouse_steps.values()) == {"wh"}, f"warehouse steps only on wh: {warehouse_steps}"
    assert not any((root / name / "no-warehouse-here.duckdb").exists() for name in ("w1", "w2"))
    # No Dagster pool holds them back in this mode: several are submitted while one runs, and the
    # queue's one process runs them one after the other, never two at once on the DuckDB file.
    ordered = sorted((spans[k] for k in warehouse_steps), key=lambda span: span[0] or 0)
    assert all(a[1] is not None and b[0] is not None and a[1] <= b[0] for a, b in itertools.pairwise(ordered)), ordered
    first_end = min(end for _, end in ordered if end is not None)
    assert sum(1 for k in warehouse_steps if submitted[k] < first_end) >= 2, (submitted, ordered)
    # Steps run away from the run's coordinator: no step may tag the run as one of its host's, or a
    # worker of another host would judge the coordinator's pid there and fail a live run.
    assert HOST_TAG not in run.tags
    # Queue depth as the UI's sensor page shows it: both queues drained, w1 and w2 on dagster, wh on warehouse.
    with dg.build_sensor_context() as context:
        tick = celery_queues_sensor(context)
    assert isinstance(tick, dg.SkipReason)
    assert tick.skip_message == "dagster: 0 waiting, 2 workers; warehouse: 0 waiting, 1 worker"

    # The same selection in one process, on a lake and warehouse of its own.
    local = root / "local"
    single = {k: v for k, v in env.items() if k not in ("IP_EXECUTOR", "DAGSTER_PG_URL", "LAKE_URL", "S3_ENDPOINT_URL")}
    single |= {"DAGSTER_HOME": str(local / "home"), "LAKE_URL": str(local / "lake")}
    single["WAREHOUSE_PATH"] = str(local / "warehouse.duckdb")
    write_instance(local / "home", single)
    alone = _materialize(single, root)
    assert alone.returncode == 0, alone.stdout[-3000:] + alone.stderr[-3000:]
    clustered, in_one_process = _rows(Path(env["WAREHOUSE_PATH"])), _rows(local / "warehouse.duckdb")
    assert {t: len(r) for t, r in clustered.items()} == {t: len(r) for t, r in in_one_process.items()}
    assert clustered == in_one_process
    assert len(clustered["artist"]) == 275


def test_a_second_warehouse_worker_is_refused(cluster: dict[str, object]) -> None:
    """``wh`` consumes the warehouse queue: another worker of it would open the DuckDB file beside it
    (on this machine: the lock ``wh`` holds through its exec) or write a second warehouse (on another
    machine: the broker already has its consumer)."""
    env = dict(cluster["env"])  # type: ignore[call-overload]
    root = Path(str(cluster["root"]))
    argv = [sys.executable, "-m", "integration_platform.cluster", "worker", "--name", "wh2", "--queues", "warehouse"]
    beside = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert beside.returncode == 2, beside.stdout + beside.stderr
    assert f"another worker of the 'warehouse' queue holds {env['WAREHOUSE_PATH']}.worker.lock" in beside.stderr
    elsewhere = {**env, "WAREHOUSE_PATH": str(root / "wh2" / "warehouse.duckdb")}
    refused = subprocess.run(argv, env=elsewhere, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "the 'warehouse' queue already has 1 worker(s) on the broker" in refused.stderr
    assert queue_depths(BROKER, [WAREHOUSE_QUEUE]) == {WAREHOUSE_QUEUE: (0, 1)}


def test_the_daemons_sensor_runs_execute_on_the_workers(cluster: dict[str, object]) -> None:
    """``dagster-daemon run`` on a code location with a sensor: the run it requests is launched by the
    daemon (its run queue and run launcher, unchanged) and its steps run on the Celery workers, the
    warehouse step on ``w1``. A schedule's run takes the same path (``cluster_location.py``)."""
    env = dict(cluster["env"])  # type: ignore[call-overload]
    root = Path(str(cluster["root"]))
    location = Path(__file__).with_name("cluster_location.py")
    daemon_log = root / "daemon.log"
    with daemon_log.open("wb") as out:
        daemon = subprocess.Popen(
            [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-f", str(location)],
            cwd=root,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("DAGSTER_PG_URL", env["DAGSTER_PG_URL"])
            instance = dg.DagsterInstance.from_config(env["DAGSTER_HOME"])
            deadline = time.monotonic() + 150
            done: dict[str, dg.DagsterRun] = {}
            while not done:
                assert time.monotonic() < deadline, f"runs so far: {done}\n{daemon_log.read_text()[-3000:]}"
                assert daemon.poll() is None, daemon_log.read_text()[-3000:]
                for run in instance.get_runs(filters=dg.RunsFilter(job_name="genre_by_sensor")):
                    if run.status in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE):
                        done.setdefault("genre_by_sensor", run)
                time.sleep(1)
            workers = {name: step_workers(instance, run.run_id) for name, run in done.items()}
            instance.dispose()
    finally:
        stop(daemon)
    assert {name: run.status for name, run in done.items()} == {"genre_by_sensor": dg.DagsterRunStatus.SUCCESS}
    assert done["genre_by_sensor"].tags.get("dagster/sensor_name") == "genre_once"
    for name, on in workers.items():
        assert {"chinook__genre", "warehouse__chinook__genre"} <= set(on), (name, on)  # every step on a worker
        assert on["warehouse__chinook__genre"][-1].startswith("wh@"), (name, on)


#: Imported by every Python process of the killed worker (``sitecustomize``): its first upload of a
#: lake part SIGKILLs the worker's whole process group, mid-lake-step, as a machine lost would stop.
KILL_AT_FIRST_UPLOAD = """
import os, signal
from integration_platform.core import lake

def _killed(*args, **kwargs):
    os.killpg(os.getpgid(0), signal.SIGKILL)

lake.S3Lake._upload = _killed
"""
KILL_TABLES = ("customer", "track", "invoice_line", "playlist_track")


def test_a_worker_killed_mid_lake_step_loses_and_duplicates_nothing(cluster: dict[str, object]) -> None:
    """SIGKILL of a whole worker during a lake step's upload: the broker hands the unacknowledged step
    to the surviving worker, the run succeeds, and every table holds each source row once."""
    env = dict(cluster["env"])  # type: ignore[call-overload]
    root = Path(str(cluster["root"]))
    workers: list[subprocess.Popen[bytes]] = cluster["workers"]  # type: ignore[assignment]
    stop(workers.pop())  # w2: the killed worker takes its place, so it surely gets a lake step
    hook = root / "kill_hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(KILL_AT_FIRST_UPLOAD)
    doomed = {**env, "PYTHONPATH": f"{hook}{os.pathsep}{env['PYTHONPATH']}"}
    doomed["WAREHOUSE_PATH"] = str(root / "w3" / "no-warehouse-here.duckdb")
    killed = start_worker("w3", DEFAULT_QUEUE, doomed, root / "w3")
    workers.append(killed)
    selection = ",".join([*(f"chinook/{t}" for t in KILL_TABLES), *(f"warehouse/chinook.{t}" for t in KILL_TABLES)])
    done = _materialize(env, root, selection)
    assert killed.wait(timeout=60) == -signal.SIGKILL, "the worker was killed by its first upload"
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DAGSTER_PG_URL", env["DAGSTER_PG_URL"])
        instance = dg.DagsterInstance.from_config(env["DAGSTER_HOME"])
        run = instance.get_runs(limit=1)[0]
        starts = {step: [w.split("@")[0] for w in on] for step, on in step_workers(instance, run.run_id).items()}
        instance.dispose()
    assert run.status == dg.DagsterRunStatus.SUCCESS
    again = {step: ran_on for step, ran_on in starts.items() if len(ran_on) > 1}
    assert list(again.values()) == [["w3", "w1"]], f"one step, started on w3 and run again on w1: {starts}"

    source = sqlite3.connect(REPO / "sandbox" / "chinook" / "chinook.sqlite")
    with duckdb.connect(env["WAREHOUSE_PATH"], read_only=True) as conn:
        for table in KILL_TABLES:
            name = "".join(part.capitalize() for part in table.split("_"))
            expected = source.execute(f"SELECT count(*) FROM {name}").fetchone()
            rows, distinct = conn.execute(
                f"SELECT count(*), (SELECT count(*) FROM (SELECT DISTINCT * EXCLUDE ({_platform_columns(conn, table)}) "
                f"FROM chinook.{table})) FROM chinook.{table}"
            ).fetchone() or (0, 0)
            assert expected is not None and rows == distinct == expected[0], (table, rows, distinct, expected)
    source.close()


def _platform_columns(conn: duckdb.DuckDBPyConnection, table: str) -> str:
    """The platform's own columns of a warehouse table (``_ip_*``), comma-separated."""
    columns = conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'chinook' AND table_name = ? "
        "AND column_name LIKE '\\_ip\\_%' ESCAPE '\\'",
        [table],
    ).fetchall()
    return ", ".join(c[0] for c in columns)


def test_queue_depths_count_waiting_messages_and_consumers() -> None:
    require_port("127.0.0.1", 5672, "RabbitMQ")
    name = f"ip_test_depth_{uuid.uuid4().hex[:8]}"
    with Connection(BROKER) as connection:
        queue = Queue(name, routing_key=name)
        with connection.Producer() as producer:
            for i in range(3):
                producer.publish({"n": i}, routing_key=name, declare=[queue])
        try:
            assert queue_depths(BROKER, [name, f"{name}_absent"]) == {name: (3, 0), f"{name}_absent": None}
        finally:
            queue(connection.default_channel).delete()


#: The first upload of a lake part hangs (as a step stuck on a dead connection would); Celery's soft
#: limit interrupts the sleep.
HANG_AT_FIRST_UPLOAD = """
import os
import pathlib
import time
from integration_platform.core import lake

def _hang(*args, **kwargs):
    pathlib.Path(os.environ["IP_TEST_HUNG_AT"]).touch()
    time.sleep(600)

lake.S3Lake._upload = _hang
"""
#: The same hang, deaf to every exception (as a step stuck in code that swallows them): only the hard
#: limit's kill ends it.
DEAF_SLEEP = """    while True:
        try:
            time.sleep(600)
        except BaseException:
            pass
"""
HANG_DEAF_AT_FIRST_UPLOAD = HANG_AT_FIRST_UPLOAD.replace("    time.sleep(600)\n", DEAF_SLEEP)
#: The step's hard time limit (its soft limit is half of it, 15 s, counted from when the worker took
#: the task): an idle 2-core machine starts the step and reaches its first upload in about 2 s; under
#: a parallel load a 2 s soft limit once struck before it, which the hook's file tells apart.
STEP_LIMIT_S = 30
SOFT_LIMIT_S = 15


def _hanging_worker(cluster: dict[str, object], name: str, hook_code: str) -> tuple[dict[str, str], Path]:
    """Leave one worker of the ``dagster`` queue: ``name``, whose first lake upload runs ``hook_code``
    and which has no time limit of its own. Returns the coordinator's environment, with the step
    time limit set, and the file the hook touches when it starts hanging."""
    env = dict(cluster["env"])  # type: ignore[call-overload]
    root = Path(str(cluster["root"]))
    workers: list[subprocess.Popen[bytes]] = cluster["workers"]  # type: ignore[assignment]
    for worker in workers[1:]:  # every one but wh (and an earlier test's hanging worker)
        stop(worker)
    hook = root / name / "hook"
    hook.mkdir(parents=True)
    (hook / "sitecustomize.py").write_text(hook_code)
    # The coordinator's limit travels in each task's message (Celery's timelimit header): the worker
    # has none of its own here, so only the message can stop the step.
    env["IP_CELERY_STEP_TIME_LIMIT"] = str(STEP_LIMIT_S)
    hung_at = root / name / "hung"
    hanging = {**env, "PYTHONPATH": f"{hook}{os.pathsep}{env['PYTHONPATH']}", "IP_CELERY_STEP_TIME_LIMIT": "0"}
    hanging["IP_TEST_HUNG_AT"] = str(hung_at)
    hanging["WAREHOUSE_PATH"] = str(root / name / "no-warehouse-here.duckdb")
    workers.append(start_worker(name, DEFAULT_QUEUE, hanging, root / name))
    return env, hung_at


def _run_into_the_hang(
    cluster: dict[str, object], name: str, hook_code: str, within_s: float
) -> tuple[dict[str, str], "subprocess.CompletedProcess[str]", str]:
    """Materialise chinook/invoice with worker ``name`` hanging at its first upload (:func:`_hanging_worker`);
    asserts the run failed within ``within_s`` seconds, after the step reached the hang and the soft
    limit struck. Returns the coordinator's environment, the materialisation's process and the worker's log."""
    root = Path(str(cluster["root"]))
    env, hung_at = _hanging_worker(cluster, name, hook_code)
    started = time.monotonic()
    done = _materialize(env, root, "chinook/invoice")
    seconds = time.monotonic() - started
    assert done.returncode != 0, done.stdout[-3000:]
    assert hung_at.exists(), "the step was stopped before it reached its first upload"
    assert seconds < within_s, f"the run failed after {seconds:.0f} s, not at the step's time limits"
    log = (root / name / "worker.log").read_text()
    assert f"Soft time limit ({SOFT_LIMIT_S}s) exceeded" in log
    return env, done, log


def _last_run_failed_with_nothing_landed(env: dict[str, str]) -> dict[str, str]:
    """Asserts the instance's last run failed and chinook/invoice has no materialisation; returns its
    step key -> status."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DAGSTER_PG_URL", env["DAGSTER_PG_URL"])
        instance = dg.DagsterInstance.from_config(env["DAGSTER_HOME"])
        try:
            run = instance.get_runs(limit=1)[0]
            assert run.status == dg.DagsterRunStatus.FAILURE
            assert instance.get_latest_materialization_event(dg.AssetKey(["chinook", "invoice"])) is None
            return {s.step_key: s.status.value for s in instance.get_run_step_stats(run.run_id) if s.status}
        finally:
            instance.dispose()


def test_a_step_past_its_soft_time_limit_fails_the_run_and_says_what_it_discarded(cluster: dict[str, object]) -> None:
    """dagster-celery's coordinator waits on a step's result with no timeout: a step hung on a worker
    would hold its run for ever. At the soft limit Celery raises ``SoftTimeLimitExceeded`` inside the
    step, which discards its staged landing and records its failure, so the run fails naming the
    step and what it discarded. (Near the end of this module: it stops the other workers of the
    ``dagster`` queue, so that the hanging worker gets the step.)"""
    env, done, log = _run_into_the_hang(cluster, "w4", HANG_AT_FIRST_UPLOAD, within_s=60)
    assert "Hard time limit" not in log
    assert "landing chinook/invoice window 'initial' failed, nothing landed" in done.stderr, done.stderr[-3000:]
    assert "SoftTimeLimitExceeded" in done.stderr, done.stderr[-3000:]
    assert _last_run_failed_with_nothing_landed(env) == {"chinook__invoice": "FAILURE"}


def test_a_step_deaf_to_its_soft_limit_is_killed_at_the_hard_one(cluster: dict[str, object]) -> None:
    """A step that swallows the soft limit's exception is killed at the hard limit (SIGTERM, SIGKILL
    0.1 s later): the run fails naming the step and Celery's ``TimeLimitExceeded``, nothing of it
    lands. (Last in this module, after the soft limit's test, whose worker it stops.)"""
    env, done, log = _run_into_the_hang(cluster, "w5", HANG_DEAF_AT_FIRST_UPLOAD, within_s=90)
    assert f"Hard time limit ({STEP_LIMIT_S}s) exceeded" in log
    killed = f"[chinook__invoice]: billiard.exceptions.TimeLimitExceeded: TimeLimitExceeded({STEP_LIMIT_S},)"
    assert killed in done.stderr, done.stderr[-3000:]
    _last_run_failed_with_nothing_landed(env)
