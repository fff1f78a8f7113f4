"""The main job (``make run``): materialise every unpartitioned asset of the code location once,
in this process, on the Dagster instance at ``$DAGSTER_HOME``, and print what landed where.
The demo's HTTP sources are served by local stand-ins (:mod:`integration_platform.standins`).

Running it again is incremental: cursors come from the previous materialisations.
Exit status: 0 when every step and every asset check passed, 1 otherwise.
"""

import sys
from collections.abc import Mapping
from dataclasses import dataclass

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
        landed = _value(md, "dagster/row_count") if "dagster/uri" in md else _value(md, "rows_loaded")
        rows.append(
            Row(materialization.asset_key.to_user_string(), landed, _value(md, "bytes"), _value(md, "seconds"), where)
        )
    return rows


def main() -> int:
    with running_standins() as started:
        for name, url in started.items():
            print(f"stand-in {name}={url}", flush=True)
        definitions = defs()
        job = definitions.resolve_implicit_global_asset_job_def()
        with dg.DagsterInstance.get() as instance:
            result = job.execute_in_process(
                instance=instance,
                raise_on_error=False,
                run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},
            )
    table = summarise(result)
    widths = [
        max(len(getattr(r, f)) for r in [Row("asset", "rows", "bytes", "seconds", "landed in"), *table])
        for f in ("asset", "rows", "bytes", "seconds")
    ]
    print(f"{'asset':<{widths[0]}}  {'rows':>{widths[1]}}  {'bytes':>{widths[2]}}  {'seconds':>{widths[3]}}  landed in")
    for r in table:
        cells = f"{r.asset:<{widths[0]}}  {r.rows:>{widths[1]}}  {r.bytes:>{widths[2]}}  {r.seconds:>{widths[3]}}"
        print(f"{cells}  {r.where}")
    checks = result.get_asset_check_evaluations()
    failed = [c for c in checks if not c.passed]
    print(
        f"\n{len(table)} assets materialised; {len(checks) - len(failed)}/{len(checks)} asset checks passed; "
        f"run {result.run_id} ({'success' if result.success else 'FAILED'})"
    )
    for check in failed:
        print(f"  check failed: {check.asset_key.to_user_string()} {check.check_name} {check.metadata}")
    return 0 if result.success and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
