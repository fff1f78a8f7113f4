"""The platform's PostgreSQL event log inserts a batch of asset events with one executemany
(``integration_platform.event_log.postgres``) and stores exactly what dagster-postgres's own statement
stores: the same events in the same order, the same indexed tags on the same events, the same latest
event per asset."""

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dagster as dg
import pytest
from dagster._core.definitions.data_version import DATA_VERSION_TAG
from dagster._core.events import DagsterEvent, DagsterEventType, StepMaterializationData
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.event_log.base import EventLogStorage
from dagster_postgres import PostgresEventLogStorage
from dagster_shared.check.functions import CheckError

from integration_platform.event_log.postgres import PlatformPostgresEventLogStorage
from integration_platform_tests.services import PG_HOST, PG_PORT, psql, require_port

KEY = dg.AssetKey(["bench", "days"])
#: More events than SQLAlchemy's insertmanyvalues page (1,000), so that the ids of several pages are read.
EVENTS = 2_345


def materialization(run_id: str, number: int) -> EventLogEntry:
    """Materialisation ``number`` of ``KEY``: its own partition, an indexed tag on every third."""
    tags = {DATA_VERSION_TAG: f"v{number}"} if number % 3 == 0 else {"not/indexed": "x"}
    event = DagsterEvent(
        event_type_value=DagsterEventType.ASSET_MATERIALIZATION.value,
        job_name="__ASSET_JOB",
        step_key="days",
        event_specific_data=StepMaterializationData(
            dg.AssetMaterialization(asset_key=KEY, partition=f"p{number:05d}", metadata={"rows": number}, tags=tags)
        ),
    )
    return EventLogEntry(
        error_info=None,
        level=20,
        user_message="",
        run_id=run_id,
        timestamp=time.time(),
        step_key="days",
        job_name="__ASSET_JOB",
        dagster_event=event,
    )


@contextmanager
def database() -> Iterator[str]:
    name = f"ip_test_batch_{uuid.uuid4().hex[:8]}"
    psql("postgres", "-c", f"CREATE DATABASE {name}")
    try:
        yield f"postgresql://postgres@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        psql("postgres", "-c", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def stored(
    storage: EventLogStorage, run_id: str
) -> tuple[list[tuple[int, str | None, Any]], list[dict[str, str]], str]:
    """What a reader sees: (rank of its id, partition, rows) per materialisation in id order, the indexed tags
    by event, and the partition of the asset's latest materialisation."""
    records = storage.fetch_materializations(KEY, limit=EVENTS + 10, ascending=True).records
    first = records[0].storage_id
    seen = [(r.storage_id - first, r.partition_key, r.asset_materialization.metadata["rows"].value) for r in records]  # type: ignore[union-attr]
    tags = [dict(t) for t in storage.get_event_tags_for_asset(KEY)]
    latest = storage.get_latest_materialization_events([KEY])[KEY]
    assert latest is not None and latest.run_id == run_id
    return seen, sorted(tags, key=lambda t: t[DATA_VERSION_TAG]), str(latest.asset_materialization.partition)  # type: ignore[union-attr]


def test_a_batch_is_stored_as_dagster_postgres_stores_it() -> None:
    require_port(PG_HOST, PG_PORT, "PostgreSQL")
    run_id = str(uuid.uuid4())
    events = [materialization(run_id, n) for n in range(EVENTS)]
    with database() as ours_url, database() as theirs_url:
        ours = PlatformPostgresEventLogStorage(postgres_url=ours_url)
        theirs = PostgresEventLogStorage(postgres_url=theirs_url)
        try:
            for storage in (ours, theirs):
                for start in range(0, EVENTS, 1_000):  # as DAGSTER_EVENT_BATCH_SIZE=1000 hands them over
                    storage.store_event_batch(events[start : start + 1_000])
            mine, dagsters = stored(ours, run_id), stored(theirs, run_id)
        finally:
            ours.dispose()
            theirs.dispose()
    assert mine == dagsters
    seen, tags, latest = mine
    assert [partition for _, partition, _ in seen] == [f"p{n:05d}" for n in range(EVENTS)]
    assert [rank for rank, _, _ in seen] == list(range(EVENTS)), "one id per event, in the batch's order"
    assert len(tags) == len(range(0, EVENTS, 3)) and latest == f"p{EVENTS - 1:05d}"


@pytest.mark.parametrize("kind", ["empty", "mixed"])
def test_other_batches_take_dagster_postgres_path(kind: str) -> None:
    """An empty batch stores nothing; a batch with a kind Dagster does not batch is refused as Dagster refuses it."""
    require_port(PG_HOST, PG_PORT, "PostgreSQL")
    run_id = str(uuid.uuid4())
    with database() as url:
        ours = PlatformPostgresEventLogStorage(postgres_url=url)
        try:
            if kind == "empty":
                ours.store_event_batch([])
                assert not ours.fetch_materializations(KEY, limit=10).records
            else:
                other = materialization(run_id, 1)
                step_start = other._replace(
                    dagster_event=DagsterEvent(
                        event_type_value=DagsterEventType.STEP_START.value, job_name="__ASSET_JOB", step_key="days"
                    )
                )
                with pytest.raises(CheckError, match="only currently supported events for batch writes"):
                    ours.store_event_batch([materialization(run_id, 0), step_start])
        finally:
            ours.dispose()
