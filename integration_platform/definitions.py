"""The code location: every source under ``defs/`` plus the platform-wide resources.

Resources (all overridable by environment, read when definitions load, never at import):

- ``lake``: ``LAKE_URL`` (default ``<project>/.data/lake``; ``s3://bucket/prefix`` for S3 with
  ``S3_ENDPOINT_URL``, ``AWS_REGION``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` and
  ``AWS_SESSION_TOKEN``;
  ``gs://bucket/prefix`` for Google Cloud Storage with ``GCS_PROJECT``, ``GCS_TOKEN`` and
  ``GCS_ENDPOINT_URL``; ``az://container/prefix`` for Azure Blob Storage with
  ``AZURE_STORAGE_ACCOUNT_NAME`` and ``AZURE_STORAGE_ACCOUNT_KEY`` or ``AZURE_STORAGE_CONNECTION_STRING``).
- ``warehouse``: dagster-duckdb's ``DuckDBResource`` on ``WAREHOUSE_PATH`` (default
  ``<project>/.data/warehouse.duckdb``).
"""

import functools
import os
import warnings
from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource

from integration_platform.assets.automation import warehouse_follows_lake
from integration_platform.assets.cluster import (
    celery_executor,
    celery_queues_sensor,
    cluster_mode,
    require_shared_lake,
)
from integration_platform.assets.executor import run_sized_executor
from integration_platform.assets.run_recovery import reclaim_dead_runs_sensor
from integration_platform.components import KINDS
from integration_platform.resources.lake import LakeResource
from integration_platform.resources.object_stores import AzureBlobSettings, GcsSettings, S3Settings

PROJECT_ROOT = Path(__file__).resolve().parent.parent

#: The executor of every job: in process for a run of at most 6 steps (one stream: its lake and
#: warehouse steps and their checks), a process per step otherwise, forked from a server that has
#: imported every kind and pandas and built these definitions (:mod:`integration_platform.assets.executor`).
EXECUTOR = run_sized_executor([*KINDS.values(), "pandas", "integration_platform.preload"])


def _secret(name: str) -> str | dg.EnvVar | None:
    return dg.EnvVar(name) if os.environ.get(name) else None


def platform_resources() -> dict[str, dg.ConfigurableResource]:
    """The ``lake`` and ``warehouse`` resources every stream uses, configured from the environment."""
    s3 = S3Settings(
        endpoint_url=os.environ.get("S3_ENDPOINT_URL") or None,
        region_name=os.environ.get("AWS_REGION", "us-east-1"),
        aws_access_key_id=_secret("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=_secret("AWS_SECRET_ACCESS_KEY"),
        aws_session_token=_secret("AWS_SESSION_TOKEN"),
    )
    gcs = GcsSettings(
        project=os.environ.get("GCS_PROJECT") or None,
        token=_secret("GCS_TOKEN"),  # gcsfs also takes a raw access token here
        endpoint_url=os.environ.get("GCS_ENDPOINT_URL") or None,
    )
    azure = AzureBlobSettings(
        account_name=os.environ.get("AZURE_STORAGE_ACCOUNT_NAME") or None,
        account_key=_secret("AZURE_STORAGE_ACCOUNT_KEY"),
        connection_string=_secret("AZURE_STORAGE_CONNECTION_STRING"),
    )
    data = PROJECT_ROOT / ".data"
    return {
        "lake": LakeResource(url=os.environ.get("LAKE_URL") or str(data / "lake"), s3=s3, gcs=gcs, azure=azure),
        "warehouse": DuckDBResource(database=os.environ.get("WAREHOUSE_PATH") or str(data / "warehouse.duckdb")),
    }


@dg.definitions
def defs() -> dg.Definitions:
    """Everything under ``integration_platform/defs`` plus the platform resources and the
    sensors ``reclaim_dead_runs`` (frees the pool slots of runs whose process died) and
    ``warehouse_follows_lake`` (loads a warehouse table when its lake asset changed without it), and
    the executor of every job (:data:`EXECUTOR`, or Dagster's Celery executor when ``IP_EXECUTOR=celery``:
    :mod:`integration_platform.assets.cluster`).

    Built once per process for the same environment and the same files under ``defs/``: Dagster
    calls this function four times in one ``dagster asset materialize`` (to find the target, the
    repository, the job and the job's load data), 0.3 s each after the first."""
    folder = PROJECT_ROOT / "integration_platform" / "defs"
    # Not __pycache__: importing defs/ writes it, and the first build would not match the next call.
    files = tuple(
        (str(f), f.stat().st_mtime_ns, f.stat().st_size)
        for f in sorted(folder.rglob("*"))
        if f.is_file() and "__pycache__" not in f.parts
    )
    return _built(tuple(sorted(os.environ.items())), files)


@functools.lru_cache(maxsize=4)
def _built(environment: tuple[tuple[str, str], ...], files: tuple[tuple[str, int, int], ...]) -> dg.Definitions:
    """The definitions for one environment and one state of ``defs/`` (the key; read from the process).

    The project's ``defs/`` folder through Dagster's ``ComponentTree``, its tree attached for the UI,
    rather than ``dg.load_from_defs_folder``: that also imports every installed package registered as
    a component library, to list their component types in the UI, and dagster-aws's import alone
    (all its components, boto3, Dagster's test utilities) took 0.65 s of the 1.7 s each run and step
    process spent loading this code location. (The code server still imports them once, when Dagster
    snapshots the component tree for the UI.) The project declares its sources in ``defs/`` and adds
    no component through the UI, so the listing and UI-managed components are all it leaves out.
    Dagster's preview and beta warnings about its own component machinery are silenced as
    ``load_from_defs_folder`` silences them."""
    resources = platform_resources()
    if cluster_mode():
        require_shared_lake(resources["lake"].url)  # type: ignore[attr-defined]
    tree = dg.ComponentTree.for_project(path_within_project=PROJECT_ROOT)
    with warnings.catch_warnings():
        for category in (dg.PreviewWarning, dg.BetaWarning, dg.SupersessionWarning):
            warnings.simplefilter("ignore", category)
        folder = tree.build_defs(tree.defs_module_path)
    return dg.Definitions.merge(
        folder,
        dg.Definitions(
            resources=resources,
            # the queue-depth sensor only in cluster mode: elsewhere there is no broker to ask
            sensors=[
                reclaim_dead_runs_sensor,
                warehouse_follows_lake,
                *([celery_queues_sensor] if cluster_mode() else []),
            ],
            executor=celery_executor() if cluster_mode() else EXECUTOR,
            component_tree=tree,
        ),
    )
