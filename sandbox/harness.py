"""Build a code location from a source YAML and run its assets for real, in process.

The YAML goes through the same component class as ``defs/``; only the lake and the
warehouse are pointed at the test's temporary folder (or a real S3 server).
"""

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import yaml
from dagster.components.core.component_tree import ComponentTree
from dagster_duckdb import DuckDBResource

from integration_platform.components import FileSource, HtmlSource, HttpSync, QueueSource, RestSource, SqlSource
from integration_platform.core.lake import LakeStore
from integration_platform.instance import storage_config
from integration_platform.resources.lake import LakeResource
from integration_platform.resources.object_stores import S3Settings

Source = SqlSource | RestSource | FileSource | QueueSource | HttpSync | HtmlSource
SOURCE_TYPES: dict[str, type[Source]] = {
    "integration_platform.components.SqlSource": SqlSource,
    "integration_platform.components.RestSource": RestSource,
    "integration_platform.components.FileSource": FileSource,
    "integration_platform.components.QueueSource": QueueSource,
    "integration_platform.components.HttpSync": HttpSync,
    "integration_platform.components.HtmlSource": HtmlSource,
}


def load_source(text: str) -> Source:
    """The source component declared by the text of a ``defs.yaml``."""
    document = yaml.safe_load(text)
    return SOURCE_TYPES[document["type"]].from_attributes_dict(attributes=document["attributes"])


@contextmanager
def platform_instance(
    home: str | Path, postgres_url: str | None = None, overrides: dict[str, Any] | None = None
) -> Iterator[dg.DagsterInstance]:
    """A Dagster instance in the folder ``home`` (created if missing) with the platform's storage
    (``integration_platform.instance.storage_config``: SQLite there, or dagster-postgres at
    ``postgres_url``) and ``overrides`` (other instance settings), as ``dg.instance_for_test`` makes it."""
    Path(home).mkdir(parents=True, exist_ok=True)
    config = {**(overrides or {}), **storage_config(home, postgres_url)}
    with dg.instance_for_test(temp_dir=str(home), overrides=config) as instance:
        yield instance


@dataclass
class Platform:
    """One source's definitions wired to a test lake and warehouse, on a persistent instance."""

    defs: dg.Definitions
    instance: dg.DagsterInstance
    lake: LakeResource
    warehouse_path: Path

    @property
    def store(self) -> LakeStore:
        return self.lake.store()

    def materialize(
        self,
        selection: Sequence[dg.AssetKey] | dg.AssetSelection | str | None = None,
        *,
        partition_key: str | None = None,
        run_config: dict[str, Any] | None = None,
        tags: dict[str, str] | None = None,
        raise_on_error: bool = True,
    ) -> dg.ExecuteInProcessResult:
        assets = [a for a in self.defs.assets or [] if isinstance(a, dg.AssetsDefinition)]
        if selection is None:
            selection = [k for a in assets if a.partitions_def is None for k in a.keys]
        checks = list(self.defs.asset_checks or [])  # checks defined apart from their asset
        return dg.materialize(
            [*assets, *checks],
            resources=dict(self.defs.resources or {}),
            instance=self.instance,
            selection=selection,
            partition_key=partition_key,
            run_config=run_config,
            tags=tags,
            raise_on_error=raise_on_error,
        )

    def query(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        with duckdb.connect(str(self.warehouse_path), read_only=True) as conn:
            return conn.execute(sql, list(params)).fetchall()

    def tick(self, sensor_name: str) -> tuple[list[dg.RunRequest], str | None]:
        """One evaluation of sensor ``sensor_name`` on the instance: its run requests and skip message."""
        sensor = next(s for s in self.defs.sensors or [] if s.name == sensor_name)
        assert isinstance(sensor, dg.SensorDefinition)
        resources = dict(self.defs.resources or {})
        with dg.build_sensor_context(definitions=self.defs, resources=resources, instance=self.instance) as context:
            result = sensor.evaluate_tick(context)
        return list(result.run_requests or []), result.skip_message


def platform(
    source_yaml: str,
    tmp_path: Path,
    instance: dg.DagsterInstance,
    *,
    lake_url: str | None = None,
    s3_endpoint: str | None = None,
    lake: LakeResource | None = None,
) -> Platform:
    """Definitions for ``source_yaml`` with the lake under ``tmp_path`` (or ``lake_url``, or ``lake``)."""
    defs, lake, warehouse_path = definitions(
        source_yaml, tmp_path, lake_url=lake_url, s3_endpoint=s3_endpoint, lake=lake
    )
    return Platform(defs=defs, instance=instance, lake=lake, warehouse_path=warehouse_path)


def definitions(
    source_yaml: str,
    tmp_path: Path,
    *,
    lake_url: str | None = None,
    s3_endpoint: str | None = None,
    lake: LakeResource | None = None,
) -> tuple[dg.Definitions, LakeResource, Path]:
    """``source_yaml``'s definitions with the ``lake`` (under ``tmp_path``, or ``lake_url``, or ``lake`` as
    given) and the ``warehouse`` (``tmp_path/warehouse.duckdb``) resources; also returns those two. What
    :func:`platform` wires, for a code location of its own (a webserver and daemon loading it)."""
    component = load_source(source_yaml)
    built = component.build_defs(ComponentTree.for_test().load_context)
    s3 = S3Settings(
        endpoint_url=s3_endpoint, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    lake = lake or LakeResource(url=lake_url or str(tmp_path / "lake"), s3=s3)
    warehouse_path = tmp_path / "warehouse.duckdb"
    defs = dg.Definitions.merge(
        built, dg.Definitions(resources={"lake": lake, "warehouse": DuckDBResource(database=str(warehouse_path))})
    )
    return defs, lake, warehouse_path


def latest_metadata(instance: dg.DagsterInstance, key: dg.AssetKey) -> dict[str, Any]:
    """Metadata values of the asset's latest materialisation ({} if none)."""
    event = instance.get_latest_materialization_event(key)
    if event is None or event.asset_materialization is None:
        return {}
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def landed_rows(result: dg.ExecuteInProcessResult) -> dict[str, int]:
    """``{lake asset: rows landed}`` for the lake assets materialised by ``result``."""
    rows = {}
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        key = materialization.asset_key
        if key.path[0] != "warehouse":
            value = materialization.metadata["rows_landed"].value
            assert isinstance(value, int)
            rows[key.to_user_string()] = value
    return rows


def failure_messages(result: dg.ExecuteInProcessResult) -> list[str]:
    """The messages of the exceptions that failed steps of ``result`` (what the UI shows first)."""
    messages = []
    for event in result.all_events:
        if event.event_type != dg.DagsterEventType.STEP_FAILURE:
            continue
        error = event.step_failure_data.error
        while error is not None and error.cause is not None:
            error = error.cause
        if error is not None:
            messages.append(error.message)
    return messages


@contextmanager
def meanwhile(work: Callable[[threading.Event], int]) -> Iterator[Callable[[], int]]:
    """Run ``work(stop)`` on a thread of its own while the ``with`` block runs (a writer at the source
    during a snapshot); after the block ``stop`` is set and the thread joined. Yields a callable giving
    what ``work`` returned (how many writes), raising what it raised."""
    stop = threading.Event()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="meanwhile") as pool:
        future = pool.submit(work, stop)
        try:
            yield future.result
        finally:
            stop.set()
            future.exception()  # joined: the block's own error, if any, is the one that propagates
