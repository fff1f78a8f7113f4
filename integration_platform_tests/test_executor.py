"""The executor chooses by run size, through the path a user takes: ``dagster asset materialize`` on the
project's code location, with an instance on disk. A run of one stream (four steps) executes in the
CLI's process; a run of two streams, or one with ``in_process_max_steps: 0``, uses a process per step;
both land the same rows."""

import itertools
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import dagster as dg
import duckdb

from integration_platform.instance import write_instance

REPO = Path(__file__).resolve().parent.parent
DAGSTER = str(Path(sys.executable).parent / "dagster")
ONE_STREAM = "chinook/invoice,warehouse/chinook.invoice"
TWO_STREAMS = f"{ONE_STREAM},chinook/customer,warehouse/chinook.customer"


def materialize(env: dict[str, str], selection: str, *extra: str) -> str:
    """Run the CLI; returns its run's engine-event messages (how it executed its steps)."""
    done = subprocess.run(
        [DAGSTER, "asset", "materialize", "-m", "integration_platform.definitions", "--select", selection, *extra],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        run = instance.get_runs(limit=1)[0]
        assert run.is_success
        engine = [
            entry.message
            for entry in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
            if entry.message.startswith("Executing steps")
        ]
    assert len(engine) == 1, engine
    return engine[0]


def project_env(tmp_path: Path) -> dict[str, str]:
    """This process's environment with the project's instance, lake and warehouse under ``tmp_path``
    (the instance's ``dagster.yaml`` written)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_")}
    env.update(
        DAGSTER_HOME=str(tmp_path / "home"),
        LAKE_URL=str(tmp_path / "lake"),
        WAREHOUSE_PATH=str(tmp_path / "warehouse.duckdb"),
    )
    write_instance(tmp_path / "home", env)
    return env


def test_a_run_of_one_stream_executes_in_process_and_a_larger_one_per_step(tmp_path: Path) -> None:
    env = project_env(tmp_path)
    assert materialize(env, ONE_STREAM).startswith("Executing steps in process")
    forced = '{"execution": {"config": {"in_process_max_steps": 0}}}'
    assert materialize(env, ONE_STREAM, "--config-json", forced).startswith("Executing steps using multiprocess")
    assert materialize(env, TWO_STREAMS).startswith("Executing steps using multiprocess")
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as conn:
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM chinook.invoice), (SELECT count(DISTINCT InvoiceId) FROM chinook.invoice), "
            "(SELECT count(*) FROM chinook.customer)"
        ).fetchone()
    source = REPO / "sandbox" / "chinook" / "chinook.sqlite"
    with sqlite3.connect(source) as lite:
        expected = lite.execute("SELECT (SELECT count(*) FROM Invoice), (SELECT count(*) FROM Invoice), "
                                "(SELECT count(*) FROM Customer)").fetchone()  # fmt: skip
    assert counts == expected


def test_warehouse_steps_of_a_multiprocess_run_never_wait_on_the_duckdb_pool(tmp_path: Path) -> None:
    """Four streams, eight steps that open the DuckDB file (warehouse assets, rows_match_source checks):
    the executor starts them one at a time, so none is ever blocked on the pool's slot (which Dagster
    re-checks after ever longer waits, up to 15 s)."""
    env = project_env(tmp_path)
    tables = ("artist", "album", "genre", "media_type")
    selection = ",".join(f"chinook/{t},warehouse/chinook.{t}" for t in tables)
    assert materialize(env, selection).startswith("Executing steps using multiprocess")
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        run = instance.get_runs(limit=1)[0]
        messages = [e.message for e in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)]
        steps = {s.step_key: s for s in instance.get_run_step_stats(run.run_id)}
    assert not [m for m in messages if "blocked by limit for pool" in m], messages
    pooled = sorted((s.start_time or 0, s.end_time or 0) for k, s in steps.items() if k.startswith("warehouse__"))
    assert len(pooled) == 2 * len(tables)
    assert all(end <= start for (_, end), (start, _) in itertools.pairwise(pooled)), pooled
