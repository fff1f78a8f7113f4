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

from collections.abc import Callable

import dagster as dg
from dagster._core.storage.dagster_run import FINISHED_STATUSES

from integration_platform.assets.cluster import cluster_mode
from integration_platform.core.lake import host_id, process_alive

#: Run tag: the host (``core.lake.host_id``: host name, boot id, PID namespace) whose processes run
#: the run's steps, set by every lake and warehouse step. Only runs tagged with this host are judged
#: from here: an untagged run, or one of another host or container, has PIDs that mean nothing here.
HOST_TAG = "integration_platform/host"


def _coordinator(instance: dg.DagsterInstance, run_id: str) -> tuple[int, float] | None:
    """The pid of the process that started the run and when (its RUN_START event), if it logged one."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.RUN_START, limit=1).records
    for record in records:
        event = record.event_log_entry.dagster_event
        if event is not None and event.pid is not None:
            return int(event.pid), float(record.event_log_entry.timestamp)
    return None


def reclaim_dead_runs(instance: dg.DagsterInstance, log: Callable[[str], None]) -> list[str]:
    """Fail the unfinished runs holding pool slots whose coordinating process is gone, and free the slots
    of those and of finished runs that still hold some. Returns the run ids handled; ``log`` gets one line
    per run (run id, pid, slots). An unfinished run of another host (:data:`HOST_TAG`), an untagged one
    (cluster mode's) or one without a start event yet is left alone; a finished run's slots are freed
    whatever its host, since no process of it can still use them. Never raises for a run that vanished
    meanwhile."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return []
    here = host_id()
    handled = []
    for run_id in sorted(storage.get_concurrency_run_ids()):
        run = instance.get_run_by_id(run_id)
        if run is None or (run.status not in FINISHED_STATUSES and run.tags.get(HOST_TAG) != here):
            continue
        if run.status not in FINISHED_STATUSES:
            started = _coordinator(instance, run_id)
            if started is None or process_alive(started[0], started_by=started[1]):
                continue
            pid = started[0]
            instance.report_run_failed(
                run, f"the run's process (pid {pid}) is gone (killed?): marked failed by the platform"
            )
            why = f"its process {pid} is gone"
        else:
            why = f"it ended ({run.status.value}) without freeing them"
        storage.free_concurrency_slots_for_run(run_id)
        log(f"freed the pool slots of run {run_id}: {why}")
        handled.append(run_id)
    return handled


def tag_run_host(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext) -> None:
    """Tag the step's run with this host (:data:`HOST_TAG`) unless it is tagged already.

    Not in cluster mode (``IP_EXECUTOR=celery``): there the step runs on a Celery worker, and the
    process that coordinates the run (whose pid :func:`reclaim_dead_runs` judges) lives on another
    host, so a worker would take a live coordinator for a dead one and fail a running run. Such runs
    stay untagged, which this module leaves alone."""
    if cluster_mode():
        return
    if HOST_TAG not in context.run.tags:
        context.instance.add_run_tags(context.run.run_id, {HOST_TAG: host_id()})


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
