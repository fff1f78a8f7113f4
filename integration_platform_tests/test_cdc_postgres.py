"""Change data capture from a real PostgreSQL (our own cluster, ``wal_level=logical``) on pagila.

Snapshot + changes equal the source row for row; a run killed between landing and confirming
neither loses nor repeats a change; every version is kept in the history table; a new column
appears; the slot's confirmed position advances and retains little WAL after a drain; no slot is
left behind.
"""

import datetime as dt
import json
import random
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
import pytest

from integration_platform.core.changes import ChangeCaptureError
from integration_platform.core.landing import list_manifests
from integration_platform.core.streams import StreamSpec
from integration_platform.sources.sql.change_assets import POSITION_TAG, drain_retry
from integration_platform.sources.sql.postgres_cdc import PostgresChangeLog, array_constant
from integration_platform.sources.sql.slot_names import cursor_prefix
from integration_platform_tests.run_stream import killed_materialization
from integration_platform_tests.services import missing, shared_file
from sandbox.harness import Platform, failure_messages, latest_metadata, meanwhile, platform
from sandbox.postgres_cluster import logical_postgres

TEMPLATE = "pagila_cdc_template"
YAML = """
type: integration_platform.components.SqlSource
attributes:
  source: pagila
  url_env: PAGILA_CDC_URL
  schema_name: public
  include: [film, film_actor]
  tables:
    - table: film
      cdc: {history: true, batch_changes: BATCH}
    - table: film_actor
      cdc: {deletes: soft, batch_changes: BATCH}
"""
FILM = dg.AssetKey(["pagila", "film"])
#: film's columns as both sides compare them (tsvector as text).
FILM_COLUMNS = (
    "film_id, title, description, release_year, language_id, original_language_id, rental_duration, rental_rate, "
    "length, replacement_cost, rating::text, last_update, special_features, fulltext::text"
)


def yaml(batch: int = 20_000) -> str:
    return YAML.replace("BATCH", str(batch))


def one_table(table: str) -> str:
    """The YAML capturing ``table`` of pagila alone (``cdc: {}``)."""
    text = YAML.replace("include: [film, film_actor]", f"include: [{table}]").split("  tables:")[0]
    return text + f"  tables:\n    - table: {table}\n      cdc: {{}}\n"


@pytest.fixture(scope="session")
def cdc_cluster() -> Iterator[str]:
    """Our own PostgreSQL with logical decoding, pagila loaded once as a template; yields the server URI."""
    if not shutil.which("psql"):
        missing("psql client")
    with logical_postgres() as uri:
        base = uri.rsplit("/", 1)[0]
        with psycopg.connect(uri, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {TEMPLATE}")
        for name in ("pagila-schema.sql", "pagila-data.sql"):
            subprocess.run(
                ["psql", f"{base}/{TEMPLATE}", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(shared_file("pagila", name))],
                check=True,
                capture_output=True,
            )
        yield uri


@pytest.fixture
def source(cdc_cluster: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh copy of pagila in the cluster (URL in PAGILA_CDC_URL); its slots are dropped after the test,
    and the test fails if any was left active."""
    name = f"pagila_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(cdc_cluster, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
    url = f"{cdc_cluster.rsplit('/', 1)[0]}/{name}"
    monkeypatch.setenv("PAGILA_CDC_URL", url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        yield url
    finally:
        with psycopg.connect(cdc_cluster, autocommit=True) as conn:
            slots = conn.execute(
                "SELECT slot_name, active FROM pg_replication_slots WHERE database = %s", [name]
            ).fetchall()
            for slot, _ in slots:
                conn.execute("SELECT pg_drop_replication_slot(%s)", [slot])
            conn.execute(f"DROP DATABASE {name} WITH (FORCE)")
        assert not any(active for _, active in slots), f"slots still active after the test: {slots}"


def sql(url: str, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else []


def film_rows(url: str) -> list[tuple[Any, ...]]:
    return sql(url, f"SELECT {FILM_COLUMNS} FROM film ORDER BY film_id")


def warehouse_films(target: Platform) -> list[tuple[Any, ...]]:
    return target.query(f"SELECT {FILM_COLUMNS} FROM pagila.film ORDER BY film_id")


def mixed_changes(url: str, count: int, seed: int) -> dict[str, int]:
    """``count`` random inserts, updates and deletes of film and film_actor, in many small transactions
    (one key often changed several times); returns how many of each, and in ``film`` the rows of film
    those changed."""
    rng = random.Random(seed)
    done = {"insert": 0, "update": 0, "delete": 0, "film": 0}
    with psycopg.connect(url, autocommit=True) as conn:
        free = [
            r[0] for r in conn.execute("SELECT film_id FROM film WHERE film_id NOT IN (SELECT film_id FROM inventory)")
        ]
        for i in range(count):
            op = rng.choice(["insert", "update", "update", "delete"])
            with conn.transaction():
                if op == "insert":
                    film_id = conn.execute(
                        "INSERT INTO film (title, language_id, rental_rate, special_features, rating, fulltext) "
                        "VALUES (%s, 1, %s, %s, %s, to_tsvector(%s)) RETURNING film_id",
                        [
                            f"NEW FILM {i}",
                            rng.choice(["0.99", "12.50"]),
                            ["Trailers", f'it\'s "{i}"'],
                            "PG-13",
                            f"new film {i}",
                        ],
                    ).fetchone()[0]  # type: ignore[index]
                    free.append(film_id)
                    done["film"] += 1
                    conn.execute(
                        "INSERT INTO film_actor (actor_id, film_id) VALUES (%s, %s)", [rng.randint(1, 200), film_id]
                    )
                elif op == "update":
                    film_id = rng.randint(1, 1000) if rng.random() < 0.7 or not free else rng.choice(free)
                    done["film"] += conn.execute(
                        "UPDATE film SET title = title || '+', rental_rate = rental_rate + 0.01, description = NULL, "
                        "special_features = array_append(special_features, 'x,y') WHERE film_id = %s",
                        [film_id],
                    ).rowcount
                elif free:
                    film_id = free.pop(rng.randrange(len(free)))
                    conn.execute("DELETE FROM film_actor WHERE film_id = %s", [film_id])
                    conn.execute("DELETE FROM film_category WHERE film_id = %s", [film_id])
                    done["film"] += conn.execute("DELETE FROM film WHERE film_id = %s", [film_id]).rowcount
            done[op] += 1
        # the cluster commits asynchronously: logical decoding sees a commit once its WAL is flushed
        conn.execute("CHECKPOINT")
    return done


def test_snapshot_and_1000_mixed_changes_equal_the_source_row_for_row(
    source: str, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    target = platform(yaml(), tmp_path, instance)
    assert target.materialize().success
    first = latest_metadata(instance, FILM)
    assert first["snapshot_taken"] is True and first["snapshot_rows"] == 1000
    assert warehouse_films(target) == film_rows(source)

    counts = mixed_changes(source, 1000, seed=1)
    assert min(counts[op] for op in ("insert", "update", "delete")) > 100
    result = target.materialize()
    assert result.success
    meta = latest_metadata(instance, FILM)
    assert meta["snapshot_taken"] is False and meta["deletes"] > 0 and meta["inserts"] > 0
    film = StreamSpec("pagila", "film", "merge", primary_key=("film_id",))
    schemas = {json.dumps(m.schema) for m in list_manifests(target.store, film)}
    assert len(schemas) == 1, "a change landing's types differ from the snapshot's"
    assert warehouse_films(target) == film_rows(source)
    # soft deletes: the rows that exist equal the source; the deleted ones are kept, stamped
    pairs = "SELECT actor_id, film_id, last_update FROM {} ORDER BY 1, 2"
    kept = target.query(pairs.format("pagila.film_actor WHERE _ip_deleted_at IS NULL"))
    assert kept == sql(source, pairs.format("film_actor"))
    assert target.query("SELECT count(*) FROM pagila.film_actor WHERE _ip_deleted_at IS NOT NULL")[0][0] > 0
    checks = {
        (e.asset_check_evaluation_data.asset_key.path[-1], e.asset_check_evaluation_data.check_name): (
            e.asset_check_evaluation_data.passed,
            {k: v.value for k, v in e.asset_check_evaluation_data.metadata.items()},
        )
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }
    names = ("rows_reconcile_with_lake", "primary_key_unique_not_null", "rows_match_source")
    for table in ("film", "film_actor"):
        assert checks[(table, "log_lag_within_limit")][0], checks[(table, "log_lag_within_limit")]
        for name in names:
            passed, metadata = checks[(f"pagila.{table}", name)]
            assert passed, (table, name, metadata)


@pytest.mark.parametrize("killed_at", ["_decode", "confirm"])
def test_a_run_killed_mid_batch_loses_and_repeats_nothing(
    source: str, tmp_path: Path, instance: dg.DagsterInstance, killed_at: str
) -> None:
    """kill -9 while a batch is read (nothing landed) or right after its landing committed, before the
    slot was advanced: the rerun neither lands a change twice nor misses one (the history holds each
    change of the source once)."""
    text = yaml(batch=200)
    target = platform(text, tmp_path, instance)
    assert target.materialize([FILM]).success
    film_changes = mixed_changes(source, 600, seed=2)["film"]
    killed_materialization(
        tmp_path, text, "integration_platform.sources.sql.postgres_cdc", "PostgresChangeLog", killed_at, "pagila/film"
    )
    assert target.materialize([FILM, dg.AssetKey(["warehouse", "pagila.film"])]).success
    assert warehouse_films(target) == film_rows(source)
    history = target.query(
        "SELECT _ip_log_position, _ip_change_seq, count(*) FROM pagila.film__history "
        "WHERE _ip_op <> 'snapshot' GROUP BY ALL HAVING count(*) > 1"
    )
    assert history == [], "a change landed twice"
    changes = target.query("SELECT count(*) FROM pagila.film__history WHERE _ip_op <> 'snapshot'")[0][0]
    assert changes == film_changes, "a change was lost"


def test_five_updates_between_runs_keep_five_versions_and_new_columns_appear(
    source: str, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    target = platform(yaml(), tmp_path, instance)
    assert target.materialize().success
    for n in range(5):
        sql(source, "UPDATE film SET rental_rate = %s WHERE film_id = 7", [f"{n}.25"])
    sql(source, "ALTER TABLE film ADD COLUMN studio text")
    sql(source, "UPDATE film SET studio = 'Pagila Pictures' WHERE film_id IN (8, 9)")
    sql(source, "ALTER TABLE film ALTER COLUMN rental_duration TYPE bigint")  # widened: int2 -> int8
    sql(source, "UPDATE film SET rental_duration = 5000000000 WHERE film_id = 10")
    # a stored generated column is not in PostgreSQL 15's log: the server computes it from the row
    sql(
        source,
        "ALTER TABLE film ADD COLUMN rate_per_day numeric GENERATED ALWAYS AS (rental_rate / rental_duration) STORED",
    )
    sql(source, "UPDATE film SET rental_rate = 9.99, rental_duration = 3 WHERE film_id IN (11, 12)")
    result = target.materialize()
    assert result.success
    generated = "SELECT film_id, rate_per_day::text FROM {} WHERE film_id IN (11, 12) ORDER BY 1"
    assert target.query(generated.format("pagila.film")) == sql(source, generated.format("film"))
    assert sql(source, generated.format("film"))[0][1] == "3.3300000000000000"
    changed = latest_metadata(instance, dg.AssetKey(["warehouse", "pagila.film"]))["schema_changes"]
    assert "new column studio" in changed and "column rental_duration: SMALLINT -> BIGINT" in changed, changed
    assert target.query("SELECT rental_duration FROM pagila.film WHERE film_id = 10") == [(5000000000,)]
    versions = target.query(
        "SELECT _ip_op, rental_rate::text FROM pagila.film__history WHERE film_id = 7 "
        "ORDER BY _ip_log_position, _ip_change_seq"
    )
    assert versions == [("snapshot", "4.99"), *[("update", f"{n}.25") for n in range(5)]]
    studios = target.query("SELECT film_id, studio FROM pagila.film WHERE studio IS NOT NULL ORDER BY 1")
    assert studios == [(8, "Pagila Pictures"), (9, "Pagila Pictures")]
    assert target.query("SELECT rental_rate::text FROM pagila.film WHERE film_id = 7") == [("4.25",)]


def test_a_commit_not_yet_flushed_when_the_run_starts_is_captured_by_that_run(
    source: str, cdc_cluster: str, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """The cluster commits with synchronous_commit = off, and logical decoding reads only flushed WAL:
    with the WAL writer slowed to 3 s, the update committed just before the run is still unflushed
    when it starts; the run waits for that flush instead of ending the drain before the update."""
    target = platform(yaml(), tmp_path, instance)
    assert target.materialize([FILM]).success
    sql(cdc_cluster, "ALTER SYSTEM SET wal_writer_delay = '3s'")
    sql(cdc_cluster, "SELECT pg_reload_conf()")
    try:
        # An idle WAL writer flushes the first commit it is woken for at once, the next ones only once
        # wal_writer_delay has passed since: a first update, its flush awaited, then the one under test.
        lag = "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), pg_current_wal_flush_lsn())::bigint"
        sql(source, "UPDATE film SET title = 'FLUSHED' WHERE film_id = 2")
        deadline = time.monotonic() + 10
        while sql(source, lag)[0][0] > 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        sql(source, "UPDATE film SET title = 'COMMITTED JUST BEFORE' WHERE film_id = 3")
        assert sql(source, lag)[0][0] > 0, "the update's WAL was flushed at once: the case is not reproduced"
        assert target.materialize([FILM, dg.AssetKey(["warehouse", "pagila.film"])]).success
    finally:
        sql(cdc_cluster, "ALTER SYSTEM RESET wal_writer_delay")
        sql(cdc_cluster, "SELECT pg_reload_conf()")
    assert target.query("SELECT title FROM pagila.film WHERE film_id = 3") == [("COMMITTED JUST BEFORE",)]


def test_the_slot_advances_each_run_and_retains_little_wal_after_a_drain(
    source: str, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    text = yaml().replace("cdc: {history: true,", "cdc: {history: true, lag_warn_bytes: 16777216,")
    target = platform(text, tmp_path, instance)
    assert target.materialize([FILM]).success
    before = latest_metadata(instance, FILM)["confirmed_flush_lsn"]
    # 40 MB of WAL from a table nobody captures, and one change of film
    sql(source, "CREATE TABLE noise AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 150000) g")
    sql(source, "UPDATE film SET length = length + 1 WHERE film_id = 1")
    sql(source, "CHECKPOINT")
    held = sql(source, "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn) FROM pg_replication_slots")
    assert held[0][0] > 16 << 20, "the test's WAL is too small to show the slot lets it go"
    lag_check = dg.AssetCheckKey(FILM, "log_lag_within_limit")
    warned = target.materialize(dg.AssetSelection.checks(lag_check))  # the check alone: the slot before a drain
    (evaluation,) = [
        e.asset_check_evaluation_data for e in warned.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"
    ]
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
    assert target.materialize([FILM]).success
    meta = latest_metadata(instance, FILM)
    lsn = sql(source, "SELECT %s::pg_lsn > %s::pg_lsn", [meta["confirmed_flush_lsn"], before])
    assert lsn == [(True,)] and meta["updates"] == 1
    assert meta["wal_retained_bytes"] < 16 << 20, meta
    slots = sql(source, "SELECT slot_name FROM pg_replication_slots WHERE database = current_database()")
    assert [s for (s,) in slots] == [meta["log_cursor"]]


def test_a_truncate_fails_naming_the_table_and_a_full_refresh_recovers(
    source: str, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    target = platform(yaml(), tmp_path, instance)
    key = dg.AssetKey(["pagila", "film_actor"])
    assert target.materialize([key]).success
    old = latest_metadata(instance, key)["log_cursor"]
    sql(source, "TRUNCATE film_actor")
    failed = target.materialize([key], raise_on_error=False)
    assert not failed.success
    errors = failure_messages(failed)
    assert any("public.film_actor was truncated" in e and "full_refresh" in e for e in errors), errors
    assert target.materialize(
        [key], run_config={"ops": {"pagila__film_actor": {"config": {"full_refresh": True}}}}
    ).success
    meta = latest_metadata(instance, key)
    assert meta["snapshot_taken"] is True and meta["snapshot_rows"] == 0 and meta["log_cursor"] != old
    slots = sql(source, "SELECT slot_name FROM pg_replication_slots WHERE database = current_database()")
    assert [s for (s,) in slots] == [meta["log_cursor"]], "the old slot was not dropped"


def test_the_drain_sensor_requests_a_run_only_when_the_table_has_changes_waiting(
    source: str, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    target = platform(yaml(), tmp_path, instance)
    requests, skipped = target.tick("pagila_film_changes")
    assert requests == [] and skipped and "no change log position" in skipped
    assert target.materialize([FILM]).success
    sql(source, "UPDATE actor SET first_name = 'X' WHERE actor_id = 1")  # another table's change
    sql(source, "CHECKPOINT")
    assert target.tick("pagila_film_changes")[0] == []
    sql(source, "UPDATE film SET length = 99 WHERE film_id = 3")
    sql(source, "CHECKPOINT")
    requests, _ = target.tick("pagila_film_changes")
    assert len(requests) == 1 and (requests[0].run_key or "").startswith("pagila/film@")
    assert target.materialize([FILM]).success and latest_metadata(instance, FILM)["updates"] == 1
    assert target.tick("pagila_film_changes")[0] == []


def test_a_failed_drain_is_requested_again_later_each_time(
    source: str, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """Dagster requests a run key once, whatever that run's fate, and a failed drain leaves the log position
    where it was: with one key per position, the sensor asked for nothing more after a failure, while the
    slot's WAL grew. A failed drain of a position is now requested again after 1 minute, 2, 4, ..."""
    target = platform(yaml(), tmp_path, instance)
    assert target.materialize([FILM]).success
    sql(source, "UPDATE film SET length = 98 WHERE film_id = 4")
    sql(source, "CHECKPOINT")
    (request,), _ = target.tick("pagila_film_changes")
    position = request.tags[POSITION_TAG]
    assert request.run_key == f"pagila/film@{position}"

    @dg.asset(name="drain_that_fails")
    def fails() -> None:
        raise RuntimeError("the source went away")

    # a drain requested before the position tag, which failed: found by its run key
    before = {k: v for k, v in request.tags.items() if k != POSITION_TAG} | {"dagster/run_key": request.run_key}
    assert not dg.materialize([fails], instance=instance, tags=before, raise_on_error=False).success
    requests, skipped = target.tick("pagila_film_changes")
    assert requests == [] and skipped and "1 drain(s) from there failed" in skipped and "the next in" in skipped
    # a drain run from that position that failed, as the sensor finds it in the instance's runs
    assert not dg.materialize([fails], instance=instance, tags=request.tags, raise_on_error=False).success
    requests, skipped = target.tick("pagila_film_changes")
    assert requests == [] and skipped and "2 drain(s) from there failed" in skipped and "the next in" in skipped
    assert drain_retry("p", "0/1", 1, 1000.0, 1059.0) == (None, 1.0)
    assert drain_retry("p", "0/1", 1, 1000.0, 1060.0) == ("p@0/1#retry1", 0.0)
    assert drain_retry("p", "0/1", 3, 1000.0, 1200.0) == (None, 40.0)  # 4 minutes after the third
    assert drain_retry("p", "0/1", 3, 1000.0, 1240.0) == ("p@0/1#retry3", 0.0)
    assert drain_retry("p", "0/1", 30, 1000.0, 4599.0) == (None, 1.0)  # at most hourly
    assert drain_retry("p", "0/1", 5000, 1000.0, 4600.0) == ("p@0/1#retry5000", 0.0)


def test_text_sent_back_to_postgresql_round_trips_whatever_it_holds(cdc_cluster: str) -> None:
    """Values from the log go back to PostgreSQL as one array constant per column: quotes, backslashes,
    braces, commas, the word NULL, empty strings and newlines arrive as they left."""
    values = ["", "NULL", None, "a,b", '{"x"}', "back\\slash", "it's", "ünï ☃", "\\\"'\\'", "line\nbreak\ttab", "}{"]
    for standard_strings in ("on", "off"):
        with psycopg.connect(cdc_cluster, autocommit=True) as conn:
            conn.execute(f"SET standard_conforming_strings = {standard_strings}")
            back = conn.execute(f"SELECT unnest({array_constant(values)})").fetchall()
        assert [v for (v,) in back] == values


def test_writes_during_the_snapshot_are_neither_missed_nor_doubled(
    source: str, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """Snapshot and changes line up at the slot's consistent point: rows changed while the first run takes
    its snapshot land exactly once, through the snapshot or through the changes after it."""

    def writer(stop: threading.Event) -> int:
        written = 0
        with psycopg.connect(source, autocommit=True) as conn:
            while not stop.is_set():
                conn.execute(
                    "UPDATE film SET rental_rate = rental_rate + 0.01 WHERE film_id = %s", [written % 1000 + 1]
                )
                written += 1
            conn.execute("CHECKPOINT")
        return written

    with meanwhile(writer) as written:
        target = platform(yaml(batch=50), tmp_path, instance)
        assert target.materialize([FILM]).success
    assert written() > 20, "the writer did not overlap the snapshot"
    assert target.materialize([FILM, dg.AssetKey(["warehouse", "pagila.film"])]).success
    assert warehouse_films(target) == film_rows(source)
    doubled = target.query(
        "SELECT film_id, _ip_log_position, _ip_change_seq FROM pagila.film__history GROUP BY ALL HAVING count(*) > 1"
    )
    assert doubled == [], "a change landed twice"


def test_an_update_of_a_primary_key_moves_the_row_and_its_cascade(
    source: str, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """An update that changes the key lands as a delete of the old key and the new row: the old key does
    not stay in the warehouse, here or in film_actor, whose key follows by ON UPDATE CASCADE."""
    target = platform(yaml(), tmp_path, instance)
    assert target.materialize().success
    sql(source, "UPDATE film SET film_id = 5001 WHERE film_id = 1")
    sql(source, "CHECKPOINT")
    assert target.materialize().success
    assert target.query("SELECT count(*) FROM pagila.film WHERE film_id = 1") == [(0,)]
    assert warehouse_films(target) == film_rows(source)
    pairs = "SELECT actor_id, film_id, last_update FROM {} ORDER BY 1, 2"
    assert target.query(pairs.format("pagila.film_actor WHERE _ip_deleted_at IS NULL")) == sql(
        source, pairs.format("film_actor")
    )
    moved = target.query(
        "SELECT film_id, _ip_op FROM pagila.film__history WHERE film_id IN (1, 5001) AND _ip_op <> 'snapshot'"
    )
    assert sorted(moved) == [(1, "delete"), (5001, "update")]


def test_a_table_without_a_replica_identity_is_refused_and_stays_writable(source: str) -> None:
    """Publishing a table without a replica identity would make PostgreSQL refuse its updates and deletes:
    the capture refuses first, naming the fix, and publishes nothing."""
    sql(source, "CREATE TABLE note (body text)")
    sql(source, "INSERT INTO note VALUES ('a'), ('b')")
    log = PostgresChangeLog(source, "note", "public", cursor_prefix("pagila", "note"))
    with pytest.raises(ChangeCaptureError, match=r"public\.note has no replica identity.*REPLICA IDENTITY FULL"):
        with log.snapshot(log.new_cursor()):
            pass
    sql(source, "UPDATE note SET body = 'c' WHERE body = 'a'")
    sql(source, "DELETE FROM note WHERE body = 'b'")
    assert sql(source, "SELECT body FROM note") == [("c",)]
    assert sql(source, "SELECT count(*) FROM pg_publication") == [(0,)]
    assert sql(source, "SELECT count(*) FROM pg_replication_slots WHERE database = current_database()") == [(0,)]


def film_with_a_toasted_script(source: str, tmp_path: Path, instance: dg.DagsterInstance, film_id: int) -> Platform:
    """The film stream alone, its snapshot landed after film ``film_id`` got a ``script`` stored out of
    line (TOASTed, uncompressed): an update of another column then leaves the script out of the log."""
    text = YAML.replace("include: [film, film_actor]", "include: [film]").split("    - table: film_actor")[0]
    target = platform(text.replace("BATCH", "1000"), tmp_path, instance)
    sql(source, "ALTER TABLE film ADD COLUMN script text")
    sql(source, "ALTER TABLE film ALTER COLUMN script SET STORAGE EXTERNAL")
    sql(source, "UPDATE film SET script = repeat('INT. VIDEO STORE - NIGHT. ', 4000) WHERE film_id = %s", [film_id])
    assert target.materialize([FILM]).success
    return target


def test_an_unchanged_toasted_value_fails_naming_the_fix_and_replica_identity_full_recovers(
    source: str, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """pgoutput leaves an unchanged TOASTed value out of an update unless the table logs whole old rows:
    the run fails naming the column and the fix (never lands NULL); with REPLICA IDENTITY FULL and a full
    refresh, later updates carry the value."""
    target = film_with_a_toasted_script(source, tmp_path, instance, film_id=2)
    sql(source, "UPDATE film SET length = 1 WHERE film_id = 2")
    sql(source, "CHECKPOINT")
    failed = target.materialize([FILM], raise_on_error=False)
    assert not failed.success
    errors = failure_messages(failed)
    assert any("'script' out of the log" in e and "REPLICA IDENTITY FULL" in e and "full_refresh" in e for e in errors)
    sql(source, "ALTER TABLE film REPLICA IDENTITY FULL")
    assert target.materialize([FILM], run_config={"ops": {"pagila__film": {"config": {"full_refresh": True}}}}).success
    sql(source, "UPDATE film SET length = 2 WHERE film_id = 2")
    sql(source, "CHECKPOINT")
    assert target.materialize([FILM, dg.AssetKey(["warehouse", "pagila.film"])]).success
    assert latest_metadata(instance, FILM)["updates"] == 1
    assert target.query("SELECT length, md5(script) FROM pagila.film WHERE film_id = 2") == sql(
        source, "SELECT length, md5(script) FROM film WHERE film_id = 2"
    )


def test_an_unchanged_toasted_value_of_a_column_dropped_since_is_not_needed(
    source: str, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """An update logged before its table lost a column carries that column (the relation message is the
    table as it was), here as an unchanged TOASTed value: the column is no longer landed, so the update
    lands without it rather than failing for a value nothing asks for."""
    target = film_with_a_toasted_script(source, tmp_path, instance, film_id=3)
    sql(source, "UPDATE film SET length = 7 WHERE film_id = 3")  # script: an unchanged TOASTed value
    sql(source, "ALTER TABLE film DROP COLUMN script")
    sql(source, "CHECKPOINT")
    assert target.materialize([FILM, dg.AssetKey(["warehouse", "pagila.film"])]).success
    assert latest_metadata(instance, FILM)["updates"] == 1
    assert target.query("SELECT length FROM pagila.film WHERE film_id = 3") == [(7,)]


def test_a_table_column_named_as_a_change_column_fails_the_run_naming_it(
    source: str, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """A table column ``_IP_OP`` sat beside the decoder's own ``_ip_op``, which DuckDB takes for the same
    column: a row's ``'delete'`` could delete it. The change batch and a new snapshot both fail naming the
    column, and the warehouse keeps the row."""
    target = platform(yaml(), tmp_path, instance)
    both = [FILM, dg.AssetKey(["warehouse", "pagila.film"])]
    assert target.materialize(both).success
    sql(source, 'ALTER TABLE film ADD COLUMN "_IP_OP" text')
    sql(source, """UPDATE film SET "_IP_OP" = 'delete' WHERE film_id = 5""")
    sql(source, "CHECKPOINT")
    for config in ({}, {"ops": {"pagila__film": {"config": {"full_refresh": True}}}}):
        failed = target.materialize([FILM], run_config=config, raise_on_error=False)
        assert not failed.success
        assert any("the source has a column '_IP_OP'" in m for m in failure_messages(failed)), config
    assert target.query("SELECT count(*) FROM pagila.film WHERE film_id = 5") == [(1,)]


def test_a_lost_slot_is_dropped_and_a_new_snapshot_taken(
    source: str, cdc_cluster: str, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """A slot whose WAL was removed (past max_slot_wal_keep_size) cannot be read: the next run drops it
    and takes a new snapshot instead of failing for ever."""
    target = platform(yaml(), tmp_path, instance)
    assert target.materialize([FILM]).success
    old = latest_metadata(instance, FILM)["log_cursor"]
    sql(source, "UPDATE film SET length = 3 WHERE film_id = 4")
    try:
        sql(cdc_cluster, "ALTER SYSTEM SET max_slot_wal_keep_size = '32MB'")
        sql(cdc_cluster, "SELECT pg_reload_conf()")
        for _ in range(4):
            sql(source, "CREATE TABLE IF NOT EXISTS noise (pad text)")
            sql(source, "INSERT INTO noise SELECT repeat(md5(g::text), 8) FROM generate_series(1, 100000) g")
            sql(source, "SELECT pg_switch_wal()")
            sql(source, "CHECKPOINT")
        assert sql(source, "SELECT wal_status FROM pg_replication_slots WHERE slot_name = %s", [old]) == [("lost",)]
        requests, _ = target.tick("pagila_film_changes")  # the drain sensor asks for the run that replaces it
        assert len(requests) == 1 and (requests[0].run_key or "").endswith("(lost)")
    finally:
        sql(cdc_cluster, "ALTER SYSTEM RESET max_slot_wal_keep_size")
        sql(cdc_cluster, "SELECT pg_reload_conf()")
    assert target.materialize([FILM, dg.AssetKey(["warehouse", "pagila.film"])]).success
    meta = latest_metadata(instance, FILM)
    assert meta["snapshot_taken"] is True and meta["log_cursor"] != old
    slots = sql(source, "SELECT slot_name FROM pg_replication_slots WHERE database = current_database()")
    assert [s for (s,) in slots] == [meta["log_cursor"]]
    assert warehouse_films(target) == film_rows(source)


def test_a_second_drain_while_one_runs_fails_at_once_and_lands_nothing(
    source: str, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """Two drains of one stream would read the same landed position: the second one finds the capture's
    lock on the source held and fails, naming why, before it touches the slot or the lake."""
    target = platform(yaml(), tmp_path, instance)
    assert target.materialize([FILM]).success
    sql(source, "UPDATE film SET length = 5 WHERE film_id = 6")
    sql(source, "CHECKPOINT")
    manifests = len(list_manifests(target.store, StreamSpec("pagila", "film", "merge", primary_key=("film_id",))))
    with psycopg.connect(source, autocommit=True) as holder:  # what a first drain in flight holds
        holder.execute("SELECT pg_advisory_lock(hashtext(%s))", [cursor_prefix("pagila", "film")])
        failed = target.materialize([FILM], raise_on_error=False)
    assert not failed.success
    assert any("another run is capturing" in m for m in failure_messages(failed)), failure_messages(failed)
    assert (
        len(list_manifests(target.store, StreamSpec("pagila", "film", "merge", primary_key=("film_id",)))) == manifests
    )
    assert target.materialize([FILM]).success and latest_metadata(instance, FILM)["updates"] == 1


def test_batches_landing_slower_than_the_wal_sender_timeout_keep_the_stream(
    source: str, cdc_cluster: str, tmp_path: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stream is not read while a batch lands; the walsender drops a client silent for
    wal_sender_timeout. Each batch here takes 2.5 s to land against a 1 s timeout: the drain still ends
    with every change."""
    target = platform(yaml(batch=200), tmp_path, instance)
    assert target.materialize([FILM]).success
    film_changes = mixed_changes(source, 500, seed=5)["film"]
    confirm = PostgresChangeLog.confirm

    def slow_confirm(self: PostgresChangeLog, cursor: str, position: str) -> None:
        time.sleep(2.5)  # a slow lake: the stream stays unread this long
        confirm(self, cursor, position)

    monkeypatch.setattr(PostgresChangeLog, "confirm", slow_confirm)
    try:
        sql(cdc_cluster, "ALTER SYSTEM SET wal_sender_timeout = '1s'")
        sql(cdc_cluster, "SELECT pg_reload_conf()")
        assert target.materialize([FILM, dg.AssetKey(["warehouse", "pagila.film"])]).success
    finally:
        sql(cdc_cluster, "ALTER SYSTEM RESET wal_sender_timeout")
        sql(cdc_cluster, "SELECT pg_reload_conf()")
    assert latest_metadata(instance, FILM)["batches_landed"] >= 2
    assert warehouse_films(target) == film_rows(source)
    changes = target.query("SELECT count(*) FROM pagila.film__history WHERE _ip_op <> 'snapshot'")[0][0]
    assert changes == film_changes


def test_a_partitioned_table_lands_its_partitions_changes_even_from_an_older_publication(
    source: str, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """Changes to a partitioned table are written to its partitions; a publication without
    publish_via_partition_root sends them under the partitions' names, which would be skipped as other
    tables'. The stream's own publication, even one made before the option was set, is altered."""
    sql(source, "CREATE TABLE measure (id int, day date, v int, PRIMARY KEY (id, day)) PARTITION BY RANGE (day)")
    sql(source, "CREATE TABLE measure_2024 PARTITION OF measure FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')")
    sql(source, "CREATE TABLE measure_2025 PARTITION OF measure FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')")
    sql(source, "INSERT INTO measure VALUES (1, '2024-03-01', 10)")
    sql(source, f"CREATE PUBLICATION {cursor_prefix('pagila', 'measure')} FOR TABLE measure")  # as made before
    target = platform(one_table("measure"), tmp_path, instance)
    key = dg.AssetKey(["pagila", "measure"])
    assert target.materialize([key]).success
    sql(source, "INSERT INTO measure VALUES (2, '2024-05-01', 20), (3, '2025-02-01', 30)")
    sql(source, "UPDATE measure SET v = 11 WHERE id = 1")
    sql(source, "DELETE FROM measure WHERE id = 3")
    sql(source, "CHECKPOINT")
    assert target.materialize([key, dg.AssetKey(["warehouse", "pagila.measure"])]).success
    rows = "SELECT id, day, v FROM {} ORDER BY id"
    assert (
        target.query(rows.format("pagila.measure"))
        == sql(source, rows.format("measure"))
        == [
            (1, dt.date(2024, 3, 1), 11),
            (2, dt.date(2024, 5, 1), 20),
        ]
    )
    assert sql(source, "SELECT pubviaroot FROM pg_publication") == [(True,)]


def test_a_running_partitioned_stream_whose_publication_lacks_the_partition_root_keeps_running(
    source: str, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """A deployment whose own publication predates publish_via_partition_root: pg_publication_tables lists
    the partitions, not the table. The run does not take the table for dropped or renamed: it sets the
    option and goes on from the landed position."""
    sql(source, "CREATE TABLE measure (id int, day date, v int, PRIMARY KEY (id, day)) PARTITION BY RANGE (day)")
    sql(source, "CREATE TABLE measure_2024 PARTITION OF measure FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')")
    sql(source, "INSERT INTO measure VALUES (1, '2024-03-01', 10)")
    target = platform(one_table("measure"), tmp_path, instance)
    key, warehouse = dg.AssetKey(["pagila", "measure"]), dg.AssetKey(["warehouse", "pagila.measure"])
    assert target.materialize([key, warehouse]).success
    publication = cursor_prefix("pagila", "measure")
    sql(source, f"ALTER PUBLICATION {publication} SET (publish_via_partition_root = false)")  # as made before
    assert sql(source, "SELECT tablename FROM pg_publication_tables") == [("measure_2024",)]
    assert target.materialize([key, warehouse]).success
    assert sql(source, "SELECT pubviaroot FROM pg_publication") == [(True,)]
    sql(source, "INSERT INTO measure VALUES (2, '2024-05-01', 20)")
    sql(source, "UPDATE measure SET v = 11 WHERE id = 1")
    sql(source, "CHECKPOINT")
    assert target.materialize([key, warehouse]).success
    rows = "SELECT id, day, v FROM {} ORDER BY id"
    assert target.query(rows.format("pagila.measure")) == [(1, dt.date(2024, 3, 1), 11), (2, dt.date(2024, 5, 1), 20)]


def test_a_key_outside_the_replica_identity_is_refused_naming_it(
    source: str, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """With REPLICA IDENTITY USING INDEX on other columns, the log carries no old film_id for updates and
    deletes: deletes would land without their key. The run fails naming the key and the fix."""
    target = platform(yaml(), tmp_path, instance)
    assert target.materialize([FILM]).success
    sql(source, "CREATE UNIQUE INDEX film_title_key ON film (title)")
    sql(source, "ALTER TABLE film REPLICA IDENTITY USING INDEX film_title_key")
    sql(source, "UPDATE film SET length = 7 WHERE film_id = 8")
    sql(source, "CHECKPOINT")
    failed = target.materialize([FILM], raise_on_error=False)
    assert not failed.success
    messages = failure_messages(failed)
    assert any("['film_id'] has column(s) ['film_id'] outside the table's replica identity" in m for m in messages)


def test_a_deployment_on_another_database_of_the_cluster_keeps_its_slot(
    source: str, cdc_cluster: str, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """Slot names are cluster-wide: another database's deployment of the same source and stream shares
    the prefix. A run neither drops its slot as a stale one of its own nor takes the other's name."""
    other = f"pagila_{uuid.uuid4().hex[:8]}"
    sql(cdc_cluster, f"CREATE DATABASE {other}")
    other_url = f"{cdc_cluster.rsplit('/', 1)[0]}/{other}"
    prefix = cursor_prefix("pagila", "film")
    theirs = PostgresChangeLog(other_url, "film", None, prefix).new_cursor()
    try:
        sql(other_url, "SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", [theirs])
        target = platform(yaml(), tmp_path, instance)
        assert target.materialize([FILM]).success
        sql(source, "UPDATE film SET length = 9 WHERE film_id = 9")
        assert target.materialize([FILM]).success
        ours = latest_metadata(instance, FILM)["log_cursor"]
        assert sql(cdc_cluster, "SELECT slot_name FROM pg_replication_slots WHERE slot_name = %s", [theirs]), (
            "the other database's slot was dropped as a stale one"
        )
        assert ours.startswith(prefix + "_") and theirs.startswith(prefix + "_")
        assert ours[len(prefix) + 1 :][:4] != theirs[len(prefix) + 1 :][:4], (ours, theirs)
    finally:
        sql(cdc_cluster, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = %s",
            [other])  # fmt: skip
        sql(cdc_cluster, f"DROP DATABASE {other} WITH (FORCE)")


@pytest.mark.parametrize(
    "replaced",
    ["DROP TABLE gizmo", "ALTER TABLE gizmo RENAME TO gizmo_old"],
)
def test_a_table_replaced_under_its_name_fails_naming_it_and_a_full_refresh_recovers(
    source: str, tmp_path: Path, instance: dg.DagsterInstance, replaced: str
) -> None:
    """The publication holds a table by OID: one dropped and re-created, or renamed away and another made
    under its name, is no longer published and its changes never arrive. The run fails naming the table
    and the fix instead of landing nothing for ever; a full refresh follows the new table."""
    sql(source, "CREATE TABLE gizmo (id int PRIMARY KEY, v int)")
    sql(source, "INSERT INTO gizmo VALUES (1, 1), (2, 2)")
    target = platform(one_table("gizmo"), tmp_path, instance)
    key, warehouse = dg.AssetKey(["pagila", "gizmo"]), dg.AssetKey(["warehouse", "pagila.gizmo"])
    assert target.materialize([key, warehouse]).success
    sql(source, replaced)
    sql(source, "CREATE TABLE gizmo (id int PRIMARY KEY, v int)")
    sql(source, "INSERT INTO gizmo VALUES (5, 5)")
    failed = target.materialize([key, warehouse], raise_on_error=False)
    assert not failed.success
    errors = failure_messages(failed)
    assert any("public.gizmo is no longer in publication" in e and "full_refresh" in e for e in errors), errors
    assert target.query("SELECT id, v FROM pagila.gizmo ORDER BY id") == [(1, 1), (2, 2)]
    config = {"ops": {"pagila__gizmo": {"config": {"full_refresh": True}}}}
    assert target.materialize([key, warehouse], run_config=config).success
    sql(source, "INSERT INTO gizmo VALUES (6, 6)")
    assert target.materialize([key, warehouse]).success
    assert target.query("SELECT id, v FROM pagila.gizmo ORDER BY id") == [(5, 5), (6, 6)]


def test_a_table_renamed_away_from_a_publication_for_all_tables_fails_naming_it(
    source: str, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """A publication FOR ALL TABLES holds every table, but none is called the stream's name any more:
    its changes would arrive under the new name and be skipped. The run fails naming the table."""
    sql(source, "CREATE TABLE gizmo (id int PRIMARY KEY, v int)")
    sql(source, "INSERT INTO gizmo VALUES (1, 1)")
    sql(source, "CREATE PUBLICATION every_table FOR ALL TABLES")
    yaml_text = one_table("gizmo").replace("cdc: {}", "cdc: {publication: every_table}")
    target = platform(yaml_text, tmp_path, instance)
    key, warehouse = dg.AssetKey(["pagila", "gizmo"]), dg.AssetKey(["warehouse", "pagila.gizmo"])
    assert target.materialize([key, warehouse]).success
    sql(source, "ALTER TABLE gizmo RENAME TO gizmo_old")
    sql(source, "UPDATE gizmo_old SET v = 2 WHERE id = 1")
    failed = target.materialize([key, warehouse], raise_on_error=False)
    assert not failed.success
    errors = failure_messages(failed)
    assert any("public.gizmo is no longer in publication" in e for e in errors), errors


def test_a_column_renamed_while_changes_wait_fails_naming_both_names(
    source: str, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """The log's rows are matched to today's columns by name: a change logged before a column was renamed
    would land it NULL. The run fails naming the old and the new name and the fix, landing nothing."""
    sql(source, "CREATE TABLE gizmo (id int PRIMARY KEY, v int)")
    sql(source, "INSERT INTO gizmo VALUES (1, 1)")
    target = platform(one_table("gizmo"), tmp_path, instance)
    key, warehouse = dg.AssetKey(["pagila", "gizmo"]), dg.AssetKey(["warehouse", "pagila.gizmo"])
    assert target.materialize([key, warehouse]).success
    sql(source, "UPDATE gizmo SET v = 2 WHERE id = 1")
    sql(source, "ALTER TABLE gizmo RENAME COLUMN v TO w")
    failed = target.materialize([key, warehouse], raise_on_error=False)
    assert not failed.success
    errors = failure_messages(failed)
    assert any(
        "['v'] the table no longer has, and lacks its column(s) ['w']" in e and "full_refresh" in e for e in errors
    ), errors
    assert target.query("SELECT id, v FROM pagila.gizmo") == [(1, 1)]


def test_values_landed_as_text_read_the_same_from_the_snapshot_and_the_log_in_any_time_zone(
    source: str, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """A type the snapshot lands as its text (a range of timestamptz, a timestamptz array) is written in the
    reading session's time zone; the log's text of the same value must be too, not the walsender's UTC."""
    sql(source, f"ALTER DATABASE {source.rsplit('/', 1)[1]} SET timezone = 'America/New_York'")
    sql(source, "CREATE TABLE span (id int PRIMARY KEY, r tstzrange, a timestamptz[], t timestamptz, i interval)")
    values = (
        "'[2024-01-01 00:00:00+00,2024-02-01 00:00:00+00)', '{2024-01-01 00:00:00+00}', "
        "'2024-01-01 05:00:00+00', '1 day 02:00'"
    )
    sql(source, f"INSERT INTO span VALUES (1, {values})")
    target = platform(one_table("span"), tmp_path, instance)
    assert target.materialize().success
    sql(source, f"INSERT INTO span VALUES (2, {values})")
    sql(source, "CHECKPOINT")
    assert target.materialize().success
    rows = target.query("SELECT id, r, a, t::text, i FROM pagila.span ORDER BY id")
    assert rows[0][1] == '["2023-12-31 19:00:00-05","2024-01-31 19:00:00-05")'
    assert rows[1][1:] == rows[0][1:]


def test_an_inet_host_key_from_the_log_matches_its_snapshot_text(
    source: str, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """The snapshot's reader writes an ``inet`` host with its netmask (``10.0.0.1/32``), PostgreSQL's text
    output (the log's) without it: a change landed as ``10.0.0.1`` matched no snapshot key, so an update
    left the old version beside the new row and a delete left its row in the warehouse."""
    sql(source, "CREATE DOMAIN host_address AS inet")
    sql(source, "CREATE TABLE host (ip inet PRIMARY KEY, name text, alias host_address)")
    sql(source, "INSERT INTO host VALUES ('10.0.0.1', 'a', '10.0.0.9'), ('10.0.0.2', 'b', NULL), ('::1', 'c', '::2')")
    target = platform(one_table("host"), tmp_path, instance)
    assert target.materialize().success
    sql(source, "UPDATE host SET name = 'a2' WHERE ip = '10.0.0.1'")
    sql(source, "DELETE FROM host WHERE ip = '10.0.0.2'")
    sql(source, "INSERT INTO host VALUES ('10.0.0.3', 'd', '10.0.0.9')")
    sql(source, "CHECKPOINT")
    assert target.materialize().success
    assert target.query("SELECT ip, name, alias FROM pagila.host ORDER BY name") == [
        ("10.0.0.1/32", "a2", "10.0.0.9/32"),
        ("::1/128", "c", "::2/128"),
        ("10.0.0.3/32", "d", "10.0.0.9/32"),
    ]


@pytest.mark.parametrize("style", ["SQL, DMY", "Postgres, MDY", "German"])
def test_a_time_before_standard_time_reads_from_the_log_in_any_date_style(
    source: str, tmp_path: Path, instance: dg.DagsterInstance, style: str
) -> None:
    """In a date style other than ISO PostgreSQL writes a time of a zone's local mean time with the
    abbreviation ``LMT``, which its own input refuses: a change holding one (a 0001-01-01 sentinel in
    Europe/Amsterdam) failed every run. The log is read in ISO; values landed as text are written in the
    reading session's style, as the snapshot wrote them."""
    database = source.rsplit("/", 1)[1]
    sql(source, f"ALTER DATABASE {database} SET timezone = 'Europe/Amsterdam'")
    sql(source, f"ALTER DATABASE {database} SET datestyle = '{style}'")
    sql(source, "CREATE TABLE span (id int PRIMARY KEY, t timestamptz, r tstzrange, a timestamptz[], d date, n text)")
    values = [
        "'0001-01-01 00:00:00+00', '[0001-01-01 00:00:00+00,)', '{0001-01-01 00:00:00+00}', '0001-01-01', 'x'",
        "'2024-03-01 12:30:00+00', '[2024-03-01 12:30:00+00,)', '{2024-03-01 12:30:00+00}', '2024-03-01', 'y'",
    ]
    for number, value in enumerate(values):
        sql(source, f"INSERT INTO span VALUES ({number}, {value})")
    target = platform(one_table("span"), tmp_path, instance)
    assert target.materialize().success
    for number, value in enumerate(values):
        sql(source, f"INSERT INTO span VALUES ({number + 10}, {value})")
    sql(source, "UPDATE span SET n = n || '+' WHERE id < 10")
    sql(source, "CHECKPOINT")
    assert target.materialize().success
    rows = target.query("SELECT id, t, r, a, d, n FROM pagila.span ORDER BY id")
    assert [row[1:5] for row in rows[:2]] == [row[1:5] for row in rows[2:]]
    assert [row[5] for row in rows] == ["x+", "y+", "x", "y"]
    assert "LMT" in rows[0][2]


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ("FOR TABLE gizmo WITH (publish = 'insert, update')", "does not publish delete, truncate table"),
        ("FOR TABLE gizmo WITH (publish = 'insert, update, delete')", "does not publish truncate"),
        ("FOR TABLE gizmo (id, v)", "has a column list (columns added later go unpublished) for table"),
        ("FOR TABLE gizmo WHERE (id < 3)", "has a row filter for table"),
    ],
)
def test_a_named_publication_sending_part_of_the_changes_is_refused_naming_it(
    source: str, tmp_path: Path, instance: dg.DagsterInstance, options: str, named: str
) -> None:
    """A publication the YAML names that leaves out deletes or truncates, columns (a column list) or rows (a
    row filter) of the table sends only part of its changes: deletes never reached the warehouse, a
    truncated table kept every row, unpublished columns landed NULL on each change, rows outside the
    filter stayed as the snapshot had them. It is refused before the snapshot, and a stream whose
    publication is altered so later fails its next run."""
    sql(source, "CREATE TABLE gizmo (id int PRIMARY KEY, v int, w text)")
    sql(source, "INSERT INTO gizmo VALUES (1, 1, 'a'), (2, 2, 'b'), (3, 3, 'c')")
    sql(source, f"CREATE PUBLICATION gizmos {options}")
    target = platform(one_table("gizmo").replace("cdc: {}", "cdc: {publication: gizmos}"), tmp_path, instance)
    for attempt in ("snapshot", "changes"):
        failed = target.materialize(raise_on_error=False)
        assert not failed.success, attempt
        errors = failure_messages(failed)
        assert any("publication 'gizmos'" in e and named in e for e in errors), (attempt, errors)
        if attempt == "snapshot":
            sql(source, "DROP PUBLICATION gizmos")
            sql(source, "CREATE PUBLICATION gizmos FOR TABLE gizmo")
            assert target.materialize().success
            sql(source, "DROP PUBLICATION gizmos")
            sql(source, f"CREATE PUBLICATION gizmos {options}")
            sql(source, "DELETE FROM gizmo WHERE id = 2")
            sql(source, "CHECKPOINT")
    assert target.query("SELECT id FROM pagila.gizmo ORDER BY id") == [(1,), (2,), (3,)]


def test_a_change_logged_before_its_column_was_retyped_fails_naming_the_table_and_the_fix(
    source: str, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """An update logged while ``v`` was text (``'abc'``), then ``ALTER COLUMN v TYPE integer``: the server
    cannot read that change as the column's type now. Every run failed with libpq's bare "invalid input
    syntax for type integer", naming neither the table nor what to do; it names both, and a full refresh
    recovers."""
    sql(source, "CREATE TABLE gizmo (id int PRIMARY KEY, v text)")
    sql(source, "INSERT INTO gizmo VALUES (1, '1')")
    target = platform(one_table("gizmo"), tmp_path, instance)
    assert target.materialize().success
    sql(source, "UPDATE gizmo SET v = 'abc'")
    sql(source, "UPDATE gizmo SET v = '5'")
    sql(source, "ALTER TABLE gizmo ALTER COLUMN v TYPE integer USING v::integer")
    sql(source, "CHECKPOINT")
    failed = target.materialize(raise_on_error=False)
    assert not failed.success
    errors = failure_messages(failed)
    assert any("public.gizmo" in e and '"abc"' in e and "full_refresh" in e for e in errors), errors
    assert target.materialize(run_config={"ops": {"pagila__gizmo": {"config": {"full_refresh": True}}}}).success
    assert target.query("SELECT id, v FROM pagila.gizmo") == [(1, 5)]
