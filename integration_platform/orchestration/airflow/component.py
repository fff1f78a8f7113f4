"""An asset that stands for an external Airflow DAG's output: materialised when a triggered run succeeds.

In Python, :func:`airflow_dag_asset`; in ``defs/<name>/defs.yaml``, the :class:`AirflowDag` component::

    type: integration_platform.components.AirflowDag
    attributes:
      asset_key: airflow/example_output
      dag_id: integration_platform_example
      conf: {output_path: /data/example.json}   # the DAG run's conf (a JSON object)
      deps: [pokeapi/berries]                   # upstream assets the DAG reads
      timeout_s: 3600                           # how long a materialisation waits for the run
      connection:                               # optional: the resource, else defs provide "airflow"
        base_url_env: AIRFLOW_URL
        username_env: AIRFLOW_USERNAME
        password_env: AIRFLOW_PASSWORD
        api_version: v2                         # v1 for Airflow 2

A materialisation triggers one run of the DAG and waits for it. Its ``dag_run_id`` is derived
from the Dagster run id, the asset key and the partition key (:func:`dag_run_id_for`), so a
retried step finds the run it started instead of starting another (a new Dagster run, such as
a re-execution, triggers a new Airflow run). The logical date is the partition's start for a
time-partitioned asset, else the time of the trigger. Run config ``conf`` (the launchpad) is
merged over the declared conf. Metadata: ``dag_id``, ``dag_run_id``, ``state``, ``logical_date``,
``duration_s`` and ``airflow_url`` (the run's page). A run that fails or does not end within the
timeout fails the step with a ``dg.Failure`` naming the DAG, the run, its state and failed tasks.
"""

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import dagster as dg
from pydantic import Field, model_validator

from integration_platform.assets.config_model import SafeModel, SecretSafeComponent, current_asset_keys
from integration_platform.core.names import ENV_NAME
from integration_platform.orchestration.airflow.resource import (
    AirflowError,
    AirflowResource,
    AirflowRunFailed,
    AirflowTimeout,
    DagRun,
    json_conf_problem,
)

UNSAFE = re.compile(r"[^A-Za-z0-9_.~:+-]")
_RESOURCES: dict[str, AirflowResource] = {}


class AirflowRunConfig(dg.Config):
    """Launchpad settings of one materialisation."""

    conf: dict[str, Any] = Field(default_factory=dict, description="Merged over the asset's declared DAG run conf.")
    timeout_s: float | None = Field(
        default=None, gt=0, description="Seconds to wait for the run, instead of the asset's."
    )


def dag_run_id_for(dagster_run_id: str, key: dg.AssetKey, partition_key: str | None = None) -> str:
    """``dagster__<key parts joined by .>[__<partition>]__<Dagster run id>``, e.g.
    ``dagster__airflow.example__2024-06-03__<uuid>``: the same for every attempt of a step.

    Only characters of Airflow's default ``allowed_run_id_pattern`` are kept (others become
    ``_``); when that changes a value (or a key part holds a ``.``, or the name passes 150
    characters) 8 hex digits of a hash of the original follow, so distinct keys stay distinct.
    """
    key_text = ".".join(UNSAFE.sub("_", part) for part in key.path)
    partition_text = UNSAFE.sub("_", partition_key) if partition_key is not None else None
    readable = key_text + (f"__{partition_text}" if partition_text is not None else "")
    lossy = any("." in part or UNSAFE.search(part) for part in key.path) or partition_text != partition_key
    if lossy or len(readable) > 150:
        digest = hashlib.sha256("\0".join([*key.path, partition_key or ""]).encode()).hexdigest()[:8]
        readable = f"{readable[:150]}__{digest}"
    return f"dagster__{readable}__{UNSAFE.sub('_', dagster_run_id)}"[:250]


def _logical_date(context: dg.AssetExecutionContext) -> datetime:
    if context.has_partition_key and isinstance(context.assets_def.partitions_def, dg.TimeWindowPartitionsDefinition):
        return context.partition_time_window.start
    return datetime.now(UTC)


def _metadata(run: DagRun) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "dag_id": run.dag_id,
        "dag_run_id": run.run_id,
        "state": run.state,
        "logical_date": run.logical_date or "",
        "airflow_url": dg.MetadataValue.url(run.url),
    }
    if run.duration_s is not None:
        metadata["duration_s"] = round(run.duration_s, 3)
    return metadata


def _as_key(key: dg.AssetKey | str | Sequence[str]) -> dg.AssetKey:
    """An ``AssetKey`` from a key, a ``"a/b"`` string or a list of parts."""
    if isinstance(key, dg.AssetKey):
        return key
    return dg.AssetKey.from_user_string(key) if isinstance(key, str) else dg.AssetKey(list(key))


def airflow_dag_asset(
    key: dg.AssetKey | str | Sequence[str],
    dag_id: str,
    *,
    resource_key: str = "airflow",
    conf: Mapping[str, Any] | None = None,
    deps: Iterable[dg.AssetKey | str | Sequence[str] | dg.AssetsDefinition] = (),
    timeout_s: float | None = None,
    poll_s: float | None = None,
    partitions_def: dg.PartitionsDefinition | None = None,
    group_name: str | None = None,
    description: str | None = None,
    retry_policy: dg.RetryPolicy | None = None,
) -> dg.AssetsDefinition:
    """An asset (kind ``airflow``) materialised by a successful run of Airflow DAG ``dag_id``.

    ``key`` is an ``AssetKey``, a ``"a/b"`` string or a list of parts; ``conf`` the DAG run conf;
    ``timeout_s``/``poll_s`` seconds (default: the resource's ``run_timeout``/``poll_interval``).
    The resource under ``resource_key`` must be an
    :class:`~integration_platform.orchestration.airflow.resource.AirflowResource`. Raises ``dg.Failure``
    when the run fails, times out or cannot be triggered; a retry policy may retry only a timeout
    (the retry waits on the same run) or a transport/5xx/429 error, since a retry of a failed
    run's id would only find the same failed run.

    Over 60 lines: the decorator's arguments and the mapping of Airflow's errors to retryable or
    final failures, kept together so the retry rules above read next to the code that applies them.
    """
    asset_key = _as_key(key)
    declared = dict(conf or {})

    @dg.asset(
        key=asset_key,
        deps=[_as_key(d) if isinstance(d, str) else d for d in deps],
        partitions_def=partitions_def,
        group_name=group_name,
        description=description or f"The output of Airflow DAG {dag_id!r}, materialised by a successful run.",
        kinds={"airflow"},
        required_resource_keys={resource_key},
        metadata={"dag_id": dag_id},
        retry_policy=retry_policy,
    )
    def _airflow_dag(context: dg.AssetExecutionContext, config: AirflowRunConfig) -> dg.MaterializeResult:
        airflow: AirflowResource = getattr(context.resources, resource_key)
        partition = context.partition_key if context.has_partition_key else None
        run_id = dag_run_id_for(context.run.run_id, asset_key, partition)
        note = f"Dagster run {context.run.run_id}, asset {asset_key.to_user_string()}" + (
            f", partition {partition}" if partition is not None else ""
        )
        seen: list[str] = []

        def report(run: DagRun) -> None:
            if not seen or seen[-1] != run.state:
                seen.append(run.state)
                context.log.info(f"Airflow DAG {dag_id} run {run.run_id}: {run.state} ({run.url})")

        try:
            run = airflow.trigger_dag_run(
                dag_id, {**declared, **config.conf}, _logical_date(context), dag_run_id=run_id, note=note
            )
            run = airflow.wait_for_dag_run(dag_id, run.run_id, config.timeout_s or timeout_s, poll_s, on_poll=report)
        except AirflowRunFailed as exc:
            raise dg.Failure(str(exc), metadata=_metadata(exc.run), allow_retries=False) from None
        except AirflowTimeout as exc:
            raise dg.Failure(str(exc), metadata=_metadata(exc.run)) from None
        except ValueError as exc:  # a conf that is no JSON object (the launchpad's): a retry sends it again
            raise dg.Failure(f"Airflow DAG {dag_id!r}: {exc}", allow_retries=False) from None
        except AirflowError as exc:  # a 4xx other than 429 (unknown DAG, logical date taken) recurs on retry
            transient = exc.status is None or exc.status == 429 or exc.status >= 500
            raise dg.Failure(f"Airflow DAG {dag_id!r}, run {run_id!r}: {exc}", allow_retries=transient) from None
        return dg.MaterializeResult(metadata=_metadata(run))

    return _airflow_dag


class AirflowConnection(SafeModel, dg.Resolvable):
    """The Airflow deployment, every value read from an environment variable at run time."""

    resource_key: str = "airflow"
    base_url_env: str = Field(default="AIRFLOW_URL", pattern=ENV_NAME)
    username_env: str = Field(default="AIRFLOW_USERNAME", pattern=ENV_NAME)
    password_env: str = Field(default="AIRFLOW_PASSWORD", pattern=ENV_NAME)
    api_version: Literal["v2", "v1"] = "v2"
    verify_tls: bool = True
    ca_bundle: str | None = None

    def resource(self) -> AirflowResource:
        """The resource; one object per distinct connection, so that several components declaring
        the same connection merge (``Definitions.merge`` accepts a key twice only for one object)."""
        cache_key = self.model_dump_json()
        if cache_key not in _RESOURCES:
            _RESOURCES[cache_key] = AirflowResource(
                base_url=dg.EnvVar(self.base_url_env),
                username=dg.EnvVar(self.username_env),
                password=dg.EnvVar(self.password_env),
                api_version=self.api_version,
                verify_tls=self.verify_tls,
                ca_bundle=self.ca_bundle,
            )
        return _RESOURCES[cache_key]


class AirflowDag(SecretSafeComponent, dg.Component, SafeModel, dg.Resolvable):
    """An external Airflow DAG's output as an asset (see the module doc for the YAML)."""

    asset_key: str = Field(min_length=1, description="'a/b' for the key ['a', 'b'].")
    dag_id: str = Field(min_length=1)
    conf: dict[str, Any] = Field(default_factory=dict)
    deps: list[str] = Field(default_factory=list)
    timeout_s: float | None = Field(default=None, gt=0)
    poll_s: float | None = Field(default=None, gt=0)
    group_name: str | None = None
    description: str | None = None
    connection: AirflowConnection | None = None

    @model_validator(mode="after")
    def _current_deps(self) -> "AirflowDag":
        current_asset_keys(self.deps)
        problem = json_conf_problem(self.conf)
        if problem:
            raise ValueError(f"conf {problem}")
        return self

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        resource_key = self.connection.resource_key if self.connection else "airflow"
        asset = airflow_dag_asset(
            self.asset_key,
            self.dag_id,
            resource_key=resource_key,
            conf=self.conf,
            deps=self.deps,
            timeout_s=self.timeout_s,
            poll_s=self.poll_s,
            group_name=self.group_name,
            description=self.description,
        )
        resources = {resource_key: self.connection.resource()} if self.connection else {}
        return dg.Definitions(assets=[asset], resources=resources)
