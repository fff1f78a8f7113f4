"""The main job (``make run``): materialise every unpartitioned asset of the code location once,
then every partition the file-drop sensors request (their cursors kept in ``$DAGSTER_HOME``),
in this process, on the Dagster instance at ``$DAGSTER_HOME``, and print what landed where.
The demo's HTTP sources are served by local stand-ins (:mod:`integration_platform.standins`).

Running it again is incremental: cursors come from the previous materialisations.
Exit status: 0 when every step and every asset check passed, 1 otherwise.
"""

import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from integration_platform.definitions import defs
from integration_platform.standins import running_standins


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


def summarise(result: dg.ExecuteInProcessResult) -> list[Row]:
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
        rows.append(Row(name, landed, _value(md, "bytes"), _value(md, "seconds"), where))
    return rows


def _assets(definitions: dg.Definitions) -> list[dg.AssetsDefinition]:
    return [a for a in definitions.assets or [] if isinstance(a, dg.AssetsDefinition)]


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


def main() -> int:
    """Materialise every unpartitioned asset, then the partitions the drop sensors ask for."""
    results: list[dg.ExecuteInProcessResult] = []
    log_config = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
    with running_standins() as started:
        for name, url in started.items():
            print(f"stand-in {name}={url}", flush=True)
        definitions = defs()
        assets = _assets(definitions)
        resources = dict(definitions.resources or {})
        with dg.DagsterInstance.get() as instance:
            plain = [k for a in assets if a.partitions_def is None for k in a.keys]
            results.append(
                dg.materialize(
                    assets,
                    resources=resources,
                    instance=instance,
                    selection=plain,
                    run_config=log_config,
                    raise_on_error=False,
                )
            )
            cursor_file = Path(instance.root_directory) / "demo_sensor_cursors.json"
            cursors = json.loads(cursor_file.read_text()) if cursor_file.exists() else {}
            for keys, partition in _sensor_runs(definitions, instance, cursors):
                results.append(
                    dg.materialize(
                        assets,
                        resources=resources,
                        instance=instance,
                        selection=keys,
                        partition_key=partition,
                        run_config=log_config,
                        raise_on_error=False,
                    )
                )
            cursor_file.write_text(json.dumps(cursors))
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
    return 0 if ok and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
