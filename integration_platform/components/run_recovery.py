"""Runs whose process died: marked failed and their pool slots freed, without a person.

A run worker killed with SIGKILL never reports its end: the run stays STARTED and keeps the slot it
claimed in the ``duckdb`` pool (limit 1), so every later warehouse load waits for ever ("Step still
blocked by limit for pool duckdb"). Dagster's run monitoring cannot see this for the default run
launcher, which offers no worker health check, and only frees the slots of runs that already ended.

:func:`reclaim_dead_runs` finds the runs holding pool slots whose coordinating process (the process
that logged the run's start, ``DagsterEvent.pid``) no longer exists on this host, marks them failed
and frees their slots. It runs at the start of every lake step (lake steps are not in the pool, so a
run that needs the slot gets there first) and from the ``reclaim_dead_runs`` sensor while the daemon
runs (``make dev``), which also covers a warehouse-only run. Written here because Dagster has no such
check for local processes; where runs are launched elsewhere (Celery, Kubernetes) Dagster's run
monitoring with that launcher's health check does this job instead.
"""

import os
import socket
from collections.abc import Callable

import dagster as dg
from dagster._core.storage.dagster_run import FINISHED_STATUSES

#: Run tag: the host whose process coordinates the run (set at the run's first lake step). A run
#: tagged with another host is never judged from here: its PIDs mean nothing on this machine.
HOST_TAG = "integration_platform/host"


def process_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host (signal 0; a process of another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _coordinator_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    """The pid of the process that started the run (its RUN_START event), if it logged one."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.RUN_START, limit=1).records
    for record in records:
        event = record.event_log_entry.dagster_event
        if event is not None and event.pid is not None:
            return int(event.pid)
    return None


def reclaim_dead_runs(instance: dg.DagsterInstance, log: Callable[[str], None]) -> list[str]:
    """Fail the unfinished runs holding pool slots whose coordinating process is gone, and free the slots
    of those and of finished runs that still hold some. Returns the run ids handled; ``log`` gets one line
    per run (run id, pid, slots). A run of another host (:data:`HOST_TAG`) or without a start event yet is
    left alone. Never raises for a run that vanished meanwhile."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return []
    here = socket.gethostname()
    handled = []
    for run_id in sorted(storage.get_concurrency_run_ids()):
        run = instance.get_run_by_id(run_id)
        if run is None or run.tags.get(HOST_TAG, here) != here:
            continue
        if run.status not in FINISHED_STATUSES:
            pid = _coordinator_pid(instance, run_id)
            if pid is None or process_alive(pid):
                continue
            instance.report_run_failed(
                run, f"the run's process (pid {pid} on {here}) is gone (killed?): marked failed by the platform"
            )
            why = f"its process {pid} is gone"
        else:
            why = f"it ended ({run.status.value}) without freeing them"
        storage.free_concurrency_slots_for_run(run_id)
        log(f"freed the pool slots of run {run_id}: {why}")
        handled.append(run_id)
    return handled


def tag_run_host(context: dg.AssetExecutionContext) -> None:
    """Tag the step's run with this host (:data:`HOST_TAG`) unless it is tagged already."""
    if HOST_TAG not in context.run.tags:
        context.instance.add_run_tags(context.run.run_id, {HOST_TAG: socket.gethostname()})


@dg.sensor(
    name="reclaim_dead_runs",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Fails runs whose process died and frees the pool slots they held (see run_recovery.py).",
)
def reclaim_dead_runs_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    """The daemon's pass of :func:`reclaim_dead_runs`; it never requests runs."""
    handled = reclaim_dead_runs(context.instance, context.log.warning)
    return dg.SkipReason(f"reclaimed {len(handled)} dead run(s)" if handled else "no dead run holds a pool slot")
