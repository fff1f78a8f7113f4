"""The project's example DAG, triggered by ``AirflowResource`` in the tests.

``integration_platform_example`` has no schedule (it runs when triggered) and two tasks:

- ``check_conf``: fails the run when the run's conf says ``{"fail": true}`` (``write_output``
  then ends ``upstream_failed``); sleeps ``sleep_seconds`` (default 0) first, so a caller's
  timeout can be tested.
- ``write_output``: writes ``{"conf": ..., "logical_date": ..., "run_id": ...}`` as JSON to the
  path in conf ``output_path`` (nothing is written without it).

It runs on Airflow 3 (``airflow.sdk``) and Airflow 2 (``airflow.decorators``). Airflow is not in
the project's virtualenv, so type checkers see the imports as untyped.
"""

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

try:  # Airflow 3
    from airflow.sdk import dag, get_current_context, task
except ImportError:  # Airflow 2
    from airflow.decorators import dag, task  # type: ignore[no-redef,attr-defined,unused-ignore]
    from airflow.operators.python import get_current_context  # type: ignore[no-redef,unused-ignore]


def _conf() -> dict[str, Any]:
    dag_run = get_current_context()["dag_run"]
    return dict(dag_run.conf or {})


@dag(
    dag_id="integration_platform_example",
    schedule=None,
    start_date=datetime(2024, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=8,
    default_args={"retries": 0},
    tags=["integration_platform", "example"],
    doc_md=__doc__,
)
def integration_platform_example() -> None:
    @task
    def check_conf() -> None:
        conf = _conf()
        time.sleep(float(conf.get("sleep_seconds", 0)))
        if conf.get("fail"):
            raise ValueError("the run's conf asked this run to fail ({'fail': true})")

    @task
    def write_output() -> str | None:
        context = get_current_context()
        conf = _conf()
        if not conf.get("output_path"):
            return None
        logical_date = context.get("logical_date")
        record = {
            "conf": conf,
            "logical_date": logical_date.isoformat() if logical_date else None,
            "run_id": context["run_id"],
        }
        path = Path(conf["output_path"])
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(record, sort_keys=True), encoding="utf-8")
        tmp.replace(path)
        return str(path)

    check_conf() >> write_output()


integration_platform_example()
