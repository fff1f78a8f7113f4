"""The platform's event logs store a batch of asset events in one statement or transaction
(``integration_platform.event_log``: an executemany on PostgreSQL, one transaction per database on
SQLite) and store exactly what Dagster's own storage stores given the same events one at a time: the
same events of the run in the same order, the same indexed tags on the same events, the same latest
materialisation and last run per asset. (dagster-postgres's own batch path updates only the batch's
last asset: a batch of two assets left the other one's latest materialisation behind.)"""

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from dagster._core.definitions.asset_checks.asset_check_evaluation import AssetCheckEvaluationPlanned
from dagster._core.definitions.data_version import DATA_VERSION_TAG
from dagster._core.events import (
    AssetMaterializationPlannedData,
    DagsterEvent,
    DagsterEventBatchMetadata,
    DagsterEventType,
    StepMaterializationData,
    generate_event_batch_id,
)
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.event_log import SqliteEventLogStorage
from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage
from dagster_postgres import PostgresEventLogStorage
from dagster_shared.check.functions import CheckError

from integration_platform.event_log.postgres import PlatformPostgresEventLogStorage
from integration_platform.event_log.sqlite import PlatformSqliteEventLogStorage
from integration_platform_tests.services import PG_HOST, PG_PORT, psql, require_port
from sandbox.harness import platform_instance

KEYS = (dg.AssetKey(["bench", "lake"]), dg.AssetKey(["bench", "warehouse"]))
#: Materialisations per test, handed over in batches of ``BATCH`` (``DAGSTER_EVENT_BATCH_SIZE``; ``make dev``
#: sets 1,000): two batches, the first of both assets. Dagster's own SQLite path, the reference, takes
#: about 13 ms per event.
EVENTS, BATCH = 300, 200


def planned(run_id: str, number: int) -> EventLogEntry:
    """The planned materialisation of :func:`materialization` ``number`` (logged before a run starts)."""
    done = materialization(run_id, number)
    key, partition = done.get_dagster_event().asset_key, done.get_dagster_event().partition
    event = DagsterEvent(
        event_type_value=DagsterEventType.ASSET_MATERIALIZATION_PLANNED.value,
        job_name="__ASSET_JOB",
        event_specific_data=AssetMaterializationPlannedData(key, partition),  # type: ignore[arg-type]
    )
    return done._replace(dagster_event=event, step_key=None)


def materialization(run_id: str, number: int) -> EventLogEntry:
    """Materialisation ``number``: of the first asset for the first half, then of the second; its own
    partition; an indexed tag on every third."""
    tags = {DATA_VERSION_TAG: f"v{number}"} if number % 3 == 0 else {"not/indexed": "x"}
    key = KEYS[0] if number < EVENTS // 2 else KEYS[1]
    event = DagsterEvent(
        event_type_value=DagsterEventType.ASSET_MATERIALIZATION.value,
        job_name="__ASSET_JOB",
        step_key="bench",
        event_specific_data=StepMaterializationData(
            dg.AssetMaterialization(asset_key=key, partition=f"p{number:05d}", metadata={"rows": number}, tags=tags)
        ),
    )
    return EventLogEntry(
        error_info=None,
        level=20,
        user_message="",
        run_id=run_id,
        timestamp=time.time(),
        step_key="bench",
        job_name="__ASSET_JOB",
        dagster_event=event,
    )


@contextmanager
def database() -> Iterator[str]:
    name = f"ip_test_batch_{uuid.uuid4().hex[:8]}"
    psql("postgres", "-c", f"CREATE DATABASE {name}")
    try:
        yield f"postgresql+psycopg2://postgres@{PG_HOST}:{PG_PORT}/{name}"  # dagster-postgres needs psycopg2
    finally:
        psql("postgres", "-c", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@contextmanager
def storages(backend: str, folder: Path) -> Iterator[tuple[SqlEventLogStorage, SqlEventLogStorage]]:
    """The platform's storage and Dagster's own, each on its own empty database(s)."""
    pair: tuple[SqlEventLogStorage, SqlEventLogStorage]
    if backend == "sqlite":
        pair = PlatformSqliteEventLogStorage(str(folder / "ours")), SqliteEventLogStorage(str(folder / "theirs"))
        yield pair
        return
    require_port(PG_HOST, PG_PORT, "PostgreSQL")
    with database() as ours, database() as theirs:
        pair = PlatformPostgresEventLogStorage(postgres_url=ours), PostgresEventLogStorage(postgres_url=theirs)
        try:
            yield pair
        finally:
            for storage in pair:
                storage.dispose()


def stored(storage: SqlEventLogStorage, run_id: str) -> dict[str, Any]:
    """What a reader sees: the run's events, per asset (rank of its id, partition, rows) per materialisation
    in id order, the indexed tags by event, the latest planned materialisation, the latest materialisation and
    the asset row's last run and materialisation."""
    seen: dict[str, Any] = {"run": [(e.dagster_event_type, e.timestamp) for e in storage.get_logs_for_run(run_id)]}
    for key in KEYS:
        records = storage.fetch_materializations(key, limit=EVENTS + 10, ascending=True).records
        first = records[0].storage_id if records else 0  # ids are compared relative to it
        info = storage.get_latest_planned_materialization_info(key)
        seen[f"{key} planned"] = info and (info.run_id, info.storage_id - first)
        seen[f"{key} ids"] = [r.storage_id - first for r in records]
        seen[f"{key} partitions"] = [(r.partition_key, r.asset_materialization.metadata["rows"].value) for r in records]  # type: ignore[union-attr]
        seen[f"{key} tags"] = sorted((dict(t) for t in storage.get_event_tags_for_asset(key)), key=str)
        latest = storage.get_latest_materialization_events([key])[key]
        seen[f"{key} latest"] = latest and (latest.run_id, latest.asset_materialization.partition)  # type: ignore[union-attr]
        asset = storage.get_asset_records([key])[0].asset_entry
        seen[f"{key} last run"] = asset.last_run_id
        last = asset.last_materialization_record
        seen[f"{key} last record"] = last and last.storage_id - first
    return seen


def stored_one_at_a_time(storage: SqlEventLogStorage, events: list[EventLogEntry], run_id: str) -> dict[str, Any]:
    """What a reader sees (:func:`stored`) once Dagster's own ``storage`` stored ``events`` one at a time; disposes
    of ``storage``."""
    try:
        for event in events:
            storage.store_event(event)
        return stored(storage, run_id)
    finally:
        storage.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_batch_is_stored_as_dagster_stores_it(backend: str, tmp_path: Path) -> None:
    run_id = str(uuid.uuid4())
    plans = [planned(run_id, n) for n in range(0, EVENTS, 4)]  # of both assets
    events = [materialization(run_id, n) for n in range(EVENTS)]
    with storages(backend, tmp_path) as (ours, theirs):
        ours.store_event_batch(plans)  # as Dagster hands them over: planned before the run, then done
        for start in range(0, EVENTS, BATCH):
            ours.store_event_batch(events[start : start + BATCH])
        for event in plans + events:
            theirs.store_event(event)
        mine, dagsters = stored(ours, run_id), stored(theirs, run_id)
    assert mine == dagsters
    first = EVENTS // 2
    assert mine[f"{KEYS[0]} partitions"] == [(f"p{n:05d}", n) for n in range(first)]
    assert mine[f"{KEYS[1]} ids"] == list(range(EVENTS - first)), "one id per event, in the batch's order"
    assert len(mine[f"{KEYS[0]} tags"]) + len(mine[f"{KEYS[1]} tags"]) == len(range(0, EVENTS, 3))
    assert mine[f"{KEYS[0]} latest"] == (run_id, f"p{first - 1:05d}") and len(mine["run"]) == len(plans) + EVENTS
    assert all(mine[f"{key} planned"][0] == run_id for key in KEYS)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_other_batches_are_stored_as_dagster_stores_them(backend: str, tmp_path: Path) -> None:
    """An empty batch stores nothing; a batch with a kind Dagster does not batch is refused as Dagster
    refuses it."""
    run_id = str(uuid.uuid4())
    with storages(backend, tmp_path) as (ours, _):
        ours.store_event_batch([])
        assert not ours.fetch_materializations(KEYS[0], limit=10).records
        step_start = materialization(run_id, 1)._replace(
            dagster_event=DagsterEvent(
                event_type_value=DagsterEventType.STEP_START.value, job_name="__ASSET_JOB", step_key="bench"
            )
        )
        if backend == "postgres":
            with pytest.raises(CheckError, match="only currently supported events for batch writes"):
                ours.store_event_batch([materialization(run_id, 0), step_start])
        else:  # Dagster's SQLite log stores any batch one event at a time
            ours.store_event_batch([materialization(run_id, 0), step_start])
            assert [e.dagster_event_type for e in ours.get_logs_for_run(run_id)] == [
                DagsterEventType.ASSET_MATERIALIZATION,
                DagsterEventType.STEP_START,
            ]


@contextmanager
def databases(backend: str) -> Iterator[tuple[str | None, str | None]]:
    """Two empty PostgreSQL databases' URLs, or ``(None, None)`` for SQLite (a folder each)."""
    if backend == "sqlite":
        yield None, None
        return
    require_port(PG_HOST, PG_PORT, "PostgreSQL")
    with database() as ours, database() as theirs:
        yield ours, theirs


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_batch_failing_midway_is_stored_once_by_dagsters_retry(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The index part of a batch fails after the insert (on SQLite: after the run's database committed):
    Dagster's ``handle_new_event`` then stores each event alone, and each is stored once."""
    monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", "1000")
    run_id = str(uuid.uuid4())
    events = [materialization(run_id, n) for n in range(0, EVENTS, 10)]
    with databases(backend) as (ours_url, theirs_url):
        theirs: SqlEventLogStorage = (
            SqliteEventLogStorage(str(tmp_path / "theirs"))
            if theirs_url is None
            else PostgresEventLogStorage(postgres_url=theirs_url)
        )
        dagsters = stored_one_at_a_time(theirs, events, run_id)
        with platform_instance(tmp_path / "home", ours_url) as instance:
            ours = instance.event_log_storage
            failures: list[str] = []

            def fail_once(*args: Any) -> None:
                if not failures:
                    failures.append("tags")
                    raise RuntimeError("the index database failed")
                type(ours)._store_asset_event_tags(ours, *args)  # type: ignore[attr-defined]

            monkeypatch.setattr(ours, "_store_asset_event_tags", fail_once)
            batch = generate_event_batch_id()
            for number, event in enumerate(events):
                instance.handle_new_event(
                    event, batch_metadata=DagsterEventBatchMetadata(batch, number == len(events) - 1)
                )
            assert failures == ["tags"], "the batch went through the platform's batch path and failed there"
            assert stored(ours, run_id) == dagsters  # type: ignore[arg-type]


def planned_check(run_id: str) -> EventLogEntry:
    """A planned asset check of the second asset, as Dagster logs it before a run (after the planned
    materialisations, Dagster's ``_log_asset_planned_events`` sorting by key)."""
    event = DagsterEvent(
        event_type_value=DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED.value,
        job_name="__ASSET_JOB",
        event_specific_data=AssetCheckEvaluationPlanned(asset_key=KEYS[1], check_name="rows"),
    )
    return materialization(run_id, 0)._replace(dagster_event=event, step_key=None)


def mixed_batch(run_id: str) -> list[EventLogEntry]:
    """Planned materialisations, then a planned check, then materialisations around a step's start: runs of
    one batched kind with other events between them."""
    step_start = materialization(run_id, 1)._replace(
        dagster_event=DagsterEvent(
            event_type_value=DagsterEventType.STEP_START.value, job_name="__ASSET_JOB", step_key="bench"
        )
    )
    plans = [planned(run_id, n) for n in range(0, EVENTS, 4)]
    done = [materialization(run_id, n) for n in range(EVENTS)]
    return [*plans, planned_check(run_id), *done[:100], step_start, *done[100:]]


def test_a_batch_of_several_kinds_stores_each_run_of_one_kind_in_one_transaction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run's planned events reach the storage in one batch per 1,000 (``DAGSTER_EVENT_BATCH_SIZE``), the
    planned materialisations and then the planned checks: such a batch had every event stored alone, 3.5 s of
    a 15 s backfill of 1,781 days. Each run of one batched kind is one transaction now, the rest stored alone,
    in order, as Dagster stores them."""
    run_id = str(uuid.uuid4())
    events = mixed_batch(run_id)
    with storages("sqlite", tmp_path) as (ours, theirs):
        runs: list[list[DagsterEventType | None]] = []
        one_kind = ours._store_one_kind  # type: ignore[attr-defined]

        def recorded(run: list[EventLogEntry]) -> None:
            runs.append([e.dagster_event_type for e in run])
            one_kind(run)

        monkeypatch.setattr(ours, "_store_one_kind", recorded)
        ours.store_event_batch(events)
        for event in events:
            theirs.store_event(event)
        mine, dagsters = stored(ours, run_id), stored(theirs, run_id)
        checks = [
            [
                (r.status, r.partition)
                for r in store.get_asset_check_execution_history(dg.AssetCheckKey(KEYS[1], "rows"), limit=5)
            ]
            for store in (ours, theirs)
        ]
    assert mine == dagsters
    assert [(kinds[0], len(kinds)) for kinds in runs] == [
        (DagsterEventType.ASSET_MATERIALIZATION_PLANNED, len(range(0, EVENTS, 4))),
        (DagsterEventType.ASSET_MATERIALIZATION, 100),
        (DagsterEventType.ASSET_MATERIALIZATION, EVENTS - 100),
    ]
    assert checks[0] == checks[1] and len(checks[0]) == 1, "the planned check stored once, as Dagster stores it"


@contextmanager
def mixed_batch_on_sqlite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, list[EventLogEntry], dict[str, Any], dg.DagsterInstance]]:
    """A run id, its :func:`mixed_batch`, what Dagster's SQLite storage holds of it stored one at a time, and
    an instance on the platform's SQLite event log batching by 1,000."""
    monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", "1000")
    run_id = str(uuid.uuid4())
    events = mixed_batch(run_id)
    dagsters = stored_one_at_a_time(SqliteEventLogStorage(str(tmp_path / "theirs")), events, run_id)
    with platform_instance(tmp_path / "home", None) as instance:
        yield run_id, events, dagsters, instance


def test_a_run_of_a_batch_failing_after_another_was_stored_leaves_each_event_stored_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second run of one kind fails in the index database after the first was stored: the rest of the batch
    is stored one event at a time, and Dagster's retry of the whole batch (which would store the first run
    again) never comes."""
    with mixed_batch_on_sqlite(tmp_path, monkeypatch) as (run_id, events, dagsters, instance):
        ours = instance.event_log_storage
        calls: list[int] = []

        def fail_second(conn: Any, batch: Any, ids: Any) -> None:
            calls.append(len(batch))
            if len(calls) == 2:
                raise RuntimeError("the index database failed")
            type(ours)._store_asset_event_tags(ours, conn, batch, ids)  # type: ignore[attr-defined]

        monkeypatch.setattr(ours, "_store_asset_event_tags", fail_second)
        batch = generate_event_batch_id()
        for number, event in enumerate(events):
            instance.handle_new_event(event, batch_metadata=DagsterEventBatchMetadata(batch, number == len(events) - 1))
        assert calls[:2] == [len(range(0, EVENTS, 4)), 100], "the second run went through the batch path and failed"
        assert stored(ours, run_id) == dagsters  # type: ignore[arg-type]


def test_an_event_stored_alone_failing_after_a_run_was_stored_leaves_each_event_stored_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The step's start (stored alone) fails once after the first run of materialisations was stored: it and
    the rest are stored one at a time here; Dagster's retry of the whole batch never comes."""
    with mixed_batch_on_sqlite(tmp_path, monkeypatch) as (run_id, events, dagsters, instance):
        ours = instance.event_log_storage
        failures: list[str] = []
        store_event = ours.store_event

        def fail_step_start_once(event: EventLogEntry) -> None:
            if event.dagster_event_type == DagsterEventType.STEP_START and not failures:
                failures.append("step start")
                raise RuntimeError("the run's database failed")
            store_event(event)

        monkeypatch.setattr(ours, "store_event", fail_step_start_once)
        batch = generate_event_batch_id()
        for number, event in enumerate(events):
            instance.handle_new_event(event, batch_metadata=DagsterEventBatchMetadata(batch, number == len(events) - 1))
        assert failures == ["step start"]
        assert stored(ours, run_id) == dagsters  # type: ignore[arg-type]
