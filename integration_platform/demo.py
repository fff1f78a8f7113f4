"""The main job (``make run``): materialise every unpartitioned asset of the code location once,
then every partition the file-drop sensors request (their cursors kept in ``$DAGSTER_HOME``),
in this process, on the Dagster instance at ``$DAGSTER_HOME``, and print what landed where.
The demo's HTTP sources are served by local stand-ins (:mod:`integration_platform.standins`).

In cluster mode (``IP_EXECUTOR=celery``, ``make run-cluster``) the same runs execute their steps on
the Celery workers (Dagster's ``execute_job`` of the code location's asset job, which workers
reconstruct from :func:`asset_job`), and the table names the worker of every step.

Running it again is incremental: cursors come from the previous materialisations.
Exit status: 0 when every step and every asset check passed, 1 otherwise.
"""

import json
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

import dagster as dg

from integration_platform.assets.cluster import cluster_mode
from integration_platform.definitions import defs
from integration_platform.standins import running_standins

#: What a run returns, in process or through an executor.
Result: TypeAlias = dg.ExecuteInProcessResult | dg.JobExecutionResult


@dataclass
class Row:
    asset: str
    rows: str
    bytes: str
    seconds: str
    where: str


def _value(metadata: Mapping[str, dg.MetadataValue], key: str) -> str:
    value = metadata.get(key)
    return "" if value is None else str(value.value)


def summarise(result: Result) -> list[Row]:
    """One row per materialised asset, from its materialisation metadata."""
    rows = []
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        md = materialization.metadata
        where = _value(md, "dagster/uri") or f"duckdb table {_value(md, 'dagster/table_name')}"
        landed = _value(md, "rows_landed") if "dagster/uri" in md else _value(md, "rows_loaded")
        name = materialization.asset_key.to_user_string()
        if materialization.partition:
            name += f" [{materialization.partition}]"
        seconds = _value(md, "seconds" if "seconds" in md else "seconds_in_run")  # a range run's are the run's
        rows.append(Row(name, landed, _value(md, "bytes"), seconds, where))
    return rows


def _assets(definitions: dg.Definitions) -> list[dg.AssetsDefinition]:
    """The assets and the asset checks defined as ops of their own (``rows_match_source``, freshness):
    without the checks, an in-process materialisation would leave those 29 checks of the demo out."""
    return [
        a
        for a in [*(definitions.assets or []), *(definitions.asset_checks or [])]
        if isinstance(a, dg.AssetsDefinition)
    ]


def _sensor_runs(
    definitions: dg.Definitions, instance: dg.DagsterInstance, cursors: dict[str, str | None]
) -> list[tuple[list[dg.AssetKey], str]]:
    """Look twice (files must be stable) with every drop sensor; the runs they request."""
    runs: list[tuple[list[dg.AssetKey], str]] = []
    for sensor in definitions.sensors or []:
        if not sensor.name.endswith("_drops"):
            continue
        for _ in range(2):
            with dg.build_sensor_context(
                cursor=cursors.get(sensor.name),
                definitions=definitions,
                resources=dict(definitions.resources or {}),
                instance=instance,
            ) as context:
                tick = sensor.evaluate_tick(context)
            cursors[sensor.name] = tick.cursor
            for request in tick.dynamic_partitions_requests or []:
                if isinstance(request, dg.AddDynamicPartitionsRequest):
                    instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
            keys = list(sensor.asset_selection.resolve(_assets(definitions))) if sensor.asset_selection else []
            runs.extend((keys, r.partition_key) for r in tick.run_requests or [] if r.partition_key)
    return runs


def asset_job() -> dg.JobDefinition:
    """A job of every asset of the code location (``demo``), as a Celery worker reconstructs it
    (``dg.reconstructable``; Dagster refuses its implicit ``__ASSET_JOB`` there, a reserved name)."""
    with_job = dg.Definitions.merge(defs(), dg.Definitions(jobs=[dg.define_asset_job("demo")]))
    return with_job.resolve_job_def("demo")


def step_workers(instance: dg.DagsterInstance, run_id: str) -> dict[str, list[str]]:
    """Step key -> the Celery workers (``name@host``) that started it, in order (a step handed to
    another worker after a worker was lost has two), from dagster-celery's engine events."""
    workers: dict[str, list[str]] = {}
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        event = entry.dagster_event
        data = event.engine_event_data if event else None
        if event and event.step_key and data and "Celery worker" in data.metadata:
            workers.setdefault(event.step_key, []).append(str(data.metadata["Celery worker"].value))
    return workers


def main() -> int:
    """Materialise every unpartitioned asset, then the partitions the drop sensors ask for."""
    results: list[Result] = []
    log_config = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
    clustered = cluster_mode()
    with running_standins() as started:
        for name, url in started.items():
            print(f"stand-in {name}={url}", flush=True)
        definitions = defs()
        assets = _assets(definitions)
        resources = dict(definitions.resources or {})
        with dg.DagsterInstance.get() as instance:

            def run(keys: Sequence[dg.AssetKey], partition: str | None = None) -> Result:
                if clustered:
                    tags = {"dagster/partition": partition} if partition else None
                    job = dg.reconstructable(asset_job)
                    return dg.execute_job(job, instance, run_config=log_config, tags=tags, asset_selection=list(keys))
                return dg.materialize(
                    assets,
                    resources=resources,
                    instance=instance,
                    selection=keys,
                    partition_key=partition,
                    run_config=log_config,
                    raise_on_error=False,
                )

            results.append(run([k for a in assets if a.partitions_def is None for k in a.keys]))
            cursor_file = Path(instance.root_directory) / "demo_sensor_cursors.json"
            cursors = json.loads(cursor_file.read_text()) if cursor_file.exists() else {}
            for keys, partition in _sensor_runs(definitions, instance, cursors):
                results.append(run(keys, partition))
            cursor_file.write_text(json.dumps(cursors))
            ran_on: dict[str, Counter[str]] = {}
            for result in results if clustered else []:
                for step, started_on in step_workers(instance, result.run_id).items():
                    ran_on.setdefault(step, Counter()).update(started_on)
    table = [row for result in results for row in summarise(result)]
    widths = [
        max(len(getattr(r, f)) for r in [Row("asset", "rows", "bytes", "seconds", "landed in"), *table])
        for f in ("asset", "rows", "bytes", "seconds")
    ]
    print(f"{'asset':<{widths[0]}}  {'rows':>{widths[1]}}  {'bytes':>{widths[2]}}  {'seconds':>{widths[3]}}  landed in")
    for r in table:
        cells = f"{r.asset:<{widths[0]}}  {r.rows:>{widths[1]}}  {r.bytes:>{widths[2]}}  {r.seconds:>{widths[3]}}"
        print(f"{cells}  {r.where}")
    checks = [c for result in results for c in result.get_asset_check_evaluations()]
    failed = [c for c in checks if not c.passed]
    ok = all(result.success for result in results)
    print(
        f"\n{len(table)} assets materialised in {len(results)} run(s); {len(checks) - len(failed)}/{len(checks)} "
        f"asset checks passed; {'success' if ok else 'FAILED'}"
    )
    for check in failed:
        print(f"  check failed: {check.asset_key.to_user_string()} {check.check_name} {check.metadata}")
    if clustered:
        print(f"\n{'step':<{max((len(s) for s in ran_on), default=4)}}  ran on (Celery worker x runs)")
        for step, counts in sorted(ran_on.items()):
            print(
                f"{step:<{max(len(s) for s in ran_on)}}  " + ", ".join(f"{w} x{n}" for w, n in sorted(counts.items()))
            )
    return 0 if ok and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
