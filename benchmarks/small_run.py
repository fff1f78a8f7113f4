"""Small runs: an incremental run of one small table, as a user starts it, and where its seconds go.

Usage::

    .venv/bin/python benchmarks/small_run.py            # 3 runs per method
    .venv/bin/python benchmarks/small_run.py --runs 5

The stream: the demo's ``chinook/invoice`` (SQLite, vendored in ``sandbox/chinook``; a ``merge``
stream with the high-water mark ``InvoiceDate``, 412 rows) and its warehouse table, with their
asset checks: four steps. Everything lives in a temporary folder (Dagster's instance on SQLite
storage, as ``make run`` without ``DAGSTER_PG_URL``; ``LAKE_URL``, ``WAREHOUSE_PATH``); the stream is
materialised once untimed, so every measured run is incremental with nothing new, as the run a
schedule or a user starts most often.

Methods, each run in its own fresh process, runs interleaved, medians:

- ``platform_cli`` (platform): ``dagster asset materialize -m integration_platform.definitions
  --select chinook/invoice,warehouse/chinook.invoice``, spawn to exit: four steps, so the run
  executes in the CLI's process (``in_process_max_steps``, ``integration_platform.assets.executor``).
- ``multiprocess_cli`` (peer: the same platform before the executor chose by run size): the same
  command with ``--config-json`` setting ``in_process_max_steps: 0``, a process per step forked
  from a preloaded server.
- ``ui_click`` (platform): the UI's Materialize click, the ``launchRun`` mutation with the two assets
  selected, sent to ``dagster-webserver`` with ``dagster-daemon`` running on the project's
  ``workspace.yaml`` (both started untimed in the child, stopped by pid), timed until the run's
  status reads ``SUCCESS`` through GraphQL as the UI polls it (every 0.1 s).
- ``import_definitions`` (platform): importing ``integration_platform.definitions`` and building
  its ``Definitions`` (``defs()``) in a fresh interpreter, Dagster's import included.
- ``steps_in_process`` (limit: the steps' own work plus Dagster's in-process execution):
  ``dg.materialize`` of the same two assets with the same resources, definitions imported untimed.

After the table, one more ``platform_cli`` run is taken apart from Dagster's event log: spawn to
``RUN_START`` (Python, Dagster's CLI, loading the code location, creating the run), ``RUN_START`` to
``RUN_SUCCESS`` (each step's own seconds listed), ``RUN_SUCCESS`` to exit (the interpreter's
shutdown). Goals (#18): ``platform_cli`` <= 5 s, ``ui_click`` <= 8 s, ``import_definitions`` <= 1.5 s.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import (
    REPO_ROOT,
    Method,
    child_report,
    parse_args,
    python_child,
    report,
    run_interleaved,
    select,
)

SCRIPT = Path(__file__).resolve()
SELECTION = "chinook/invoice,warehouse/chinook.invoice"
ASSET_PATHS = (["chinook", "invoice"], ["warehouse", "chinook.invoice"])
GOALS = {"platform_cli": 5.0, "ui_click": 8.0, "import_definitions": 1.5}
DAGSTER = str(Path(sys.executable).parent / "dagster")

LAUNCH_RUN = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""
RUN_STATUS = """
query Status($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }
"""
#: Run statuses after which the run does nothing more.
RUN_DONE = ("SUCCESS", "FAILURE", "CANCELED")


def environment(tmp: Path) -> dict[str, str]:
    """The benchmark's environment: its own instance, lake and warehouse under ``tmp``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_")}
    env.update(
        DAGSTER_HOME=str(tmp / "home"),
        LAKE_URL=str(tmp / "lake"),
        WAREHOUSE_PATH=str(tmp / "warehouse.duckdb"),
        PYTHONPATH=str(REPO_ROOT),
    )
    return env


def materialize_argv(*extra: str) -> list[str]:
    return [DAGSTER, "asset", "materialize", "-m", "integration_platform.definitions", "--select", SELECTION, *extra]


def run_import_definitions() -> None:
    def work() -> dict[str, Any]:
        import integration_platform.definitions as definitions

        started = time.perf_counter()
        built = definitions.defs()
        return {"assets": len(list(built.resolve_all_asset_keys())), "defs_s": time.perf_counter() - started}

    child_report(work)


def run_steps_in_process() -> None:
    import dagster as dg

    import integration_platform.definitions as definitions

    built = definitions.defs()
    keys = [dg.AssetKey(path) for path in ASSET_PATHS]
    assets = [a for a in built.assets or [] if isinstance(a, dg.AssetsDefinition) and set(a.keys) & set(keys)]
    with dg.DagsterInstance.get() as instance:

        def work() -> dict[str, Any]:
            result = dg.materialize(
                assets, selection=keys, resources=dict(built.resources or {}), instance=instance, raise_on_error=True
            )
            return {"success": result.success}

        child_report(work)


def run_ui_click(tmp: Path) -> None:
    """Start the webserver and the daemon on the project's workspace (untimed), then time one click."""
    import dagster as dg

    from sandbox.dagster_ui import graphql, webserver_and_daemon

    env = dict(os.environ)
    logs = Path(tempfile.mkdtemp(prefix="ui-", dir=tmp))
    with (
        dg.DagsterInstance.get() as instance,
        webserver_and_daemon(REPO_ROOT / "workspace.yaml", REPO_ROOT, env, logs) as services,
    ):
        selector = {
            "repositoryLocationName": "integration_platform",
            "repositoryName": "__repository__",
            "pipelineName": "__ASSET_JOB",
            "assetSelection": [{"path": path} for path in ASSET_PATHS],
        }
        params = {"selector": selector, "runConfigData": {}, "mode": "default", "executionMetadata": {"tags": []}}

        def work() -> dict[str, Any]:
            clicked = time.time()
            launched = graphql(services.url, LAUNCH_RUN, {"params": params})["launchRun"]
            if launched["__typename"] != "LaunchRunSuccess":
                raise SystemExit(f"ui_click: launchRun failed: {launched}")
            run_id = launched["run"]["runId"]
            deadline = time.monotonic() + 300
            while (status := graphql(services.url, RUN_STATUS, {"id": run_id})["runOrError"]["status"]) not in RUN_DONE:
                if time.monotonic() > deadline:
                    raise SystemExit(f"ui_click: run {run_id} not done in 300 s\n{services.log_tails()}")
                time.sleep(0.1)
            if status != "SUCCESS":
                raise SystemExit(f"ui_click: run {run_id} ended {status}\n{services.log_tails()}")
            record = instance.get_run_record_by_id(run_id)
            started = record.start_time - clicked if record and record.start_time else None
            return {"to_run_start_s": started}

        child_report(work)


def breakdown(env: dict[str, str]) -> dict[str, Any]:
    """One more ``platform_cli`` run taken apart from the event log (seconds, from spawn)."""
    import dagster as dg

    spawned = time.time()
    subprocess.run(materialize_argv(), env=env, cwd=REPO_ROOT, check=True, capture_output=True)
    exited = time.time()
    os.environ.update(env)
    with dg.DagsterInstance.get() as instance:
        run = instance.get_runs(limit=1)[0]
        times: dict[str, float] = {}
        wanted = (dg.DagsterEventType.RUN_START, dg.DagsterEventType.RUN_SUCCESS)
        for entry in instance.all_logs(run.run_id):
            event = entry.dagster_event
            if event is not None and event.event_type in wanted:
                times[event.event_type.name] = entry.timestamp
        steps = {
            s.step_key: round(float(s.end_time - s.start_time), 3)
            for s in instance.get_run_step_stats(run.run_id)
            if s.start_time is not None and s.end_time is not None
        }
    return {
        "spawn_to_run_start_s": round(times["RUN_START"] - spawned, 2),
        "run_start_to_success_s": round(times["RUN_SUCCESS"] - times["RUN_START"], 2),
        "success_to_exit_s": round(exited - times["RUN_SUCCESS"], 2),
        "total_s": round(exited - spawned, 2),
        "steps_s": steps,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tmp", default=None, help=argparse.SUPPRESS)
    args = parse_args(parser, argv)
    if args.child:
        return {
            "import_definitions": lambda: run_import_definitions(),
            "steps_in_process": lambda: run_steps_in_process(),
            "ui_click": lambda: run_ui_click(Path(args.tmp)),
        }[args.child]() or 0

    from integration_platform.instance import write_instance

    with tempfile.TemporaryDirectory(prefix="ip-small-run-") as name:
        tmp = Path(name)
        env = environment(tmp)
        write_instance(tmp / "home", env)
        # the first run lands the table; every measured run is then incremental with nothing new
        first = subprocess.run(materialize_argv(), env=env, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
        if first.returncode:
            print(f"the untimed first run failed:\n{first.stderr[-3000:]}", file=sys.stderr)
            return 1
        no_split = '{"execution": {"config": {"in_process_max_steps": 0}}}'
        methods = [
            Method("platform_cli", "platform", materialize_argv(), None, env=env),
            Method("multiprocess_cli", "peer", materialize_argv("--config-json", no_split), None, env=env),
            Method("ui_click", "platform", python_child(SCRIPT, "ui_click", "--tmp", str(tmp)), None, env=env),
            Method("import_definitions", "platform", python_child(SCRIPT, "import_definitions"), None, env=env),
            Method("steps_in_process", "limit", python_child(SCRIPT, "steps_in_process"), None, env=env),
        ]
        summaries = run_interleaved(select(methods, args.methods), args.runs)
        report("small_run", summaries, "steps_in_process", "-", [("to_run_start", "to_run_start_s", ".2f")])
        print("\ngoals (#18):")
        for summary in summaries:
            goal = GOALS.get(summary.method.name)
            if goal is not None:
                verdict = "met" if summary.seconds <= goal else "NOT met"
                print(f"  {summary.method.name:<20} {summary.seconds:6.2f} s  goal <= {goal} s: {verdict}")
        if not args.methods or "platform_cli" in args.methods:
            print("\nwhere one platform_cli run's seconds go:", json.dumps(breakdown(env), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
