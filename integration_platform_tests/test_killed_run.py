"""A run SIGKILLed mid-extract: nothing partial is visible, the cursor stays, the retry lands each row once."""

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from integration_platform.core.lake import TMP_MARK
from integration_platform.core.landing import list_manifests
from integration_platform.core.streams import StreamSpec
from integration_platform_tests.run_stream import PROJECT_OVERRIDES, killed_in
from integration_platform_tests.services import PG_HOST, PG_PORT, REPO, psql, require_port
from sandbox.harness import landed_rows, latest_metadata, platform, platform_instance

YAML = """
type: integration_platform.components.SqlSource
attributes:
  source: big
  url_env: BIG_URL
  tables:
    - table: events
      primary_key: [id]
      cursor: updated_at
"""
FIRST_ROWS, LATER_ROWS = 200_000, 2_500_000
STREAM = StreamSpec(source="big", name="events", write_disposition="merge", primary_key=("id",), cursor="updated_at")
KEYS = [dg.AssetKey(["big", "events"]), dg.AssetKey(["warehouse", "big.events"])]


@pytest.fixture
def big_db(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    require_port(PG_HOST, PG_PORT, "PostgreSQL")
    name = f"ip_test_big_{uuid.uuid4().hex[:8]}"
    psql("postgres", "-c", f"CREATE DATABASE {name}")
    psql(
        name,
        "-c",
        "CREATE TABLE events AS SELECT g::bigint AS id, "
        "timestamptz '2024-01-01' + g * interval '1 second' AS updated_at, md5(g::text) AS payload "
        f"FROM generate_series(1, {FIRST_ROWS}) g",
        "-c",
        "ALTER TABLE events ADD PRIMARY KEY (id)",
    )
    monkeypatch.setenv("BIG_URL", f"postgresql+psycopg://postgres@{PG_HOST}:{PG_PORT}/{name}")
    yield name
    psql("postgres", "-c", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _staging_files(lake: Path) -> list[Path]:
    return list(lake.rglob(f"{TMP_MARK}*")) if lake.exists() else []


def test_kill_mid_extract_then_retry(big_db: str, tmp_path: Path) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    yaml_file = tmp_path / "big.yaml"
    yaml_file.write_text(YAML)
    with platform_instance(home) as instance:
        target = platform(YAML, tmp_path, instance)
        assert landed_rows(target.materialize(KEYS))["big/events"] == FIRST_ROWS
        mark = latest_metadata(instance, KEYS[0])["cursor_after"]

    psql(
        big_db,
        "-c",
        "INSERT INTO events SELECT g, timestamptz '2025-01-01' + g * interval '1 second', md5(g::text) "
        f"FROM generate_series({FIRST_ROWS + 1}, {FIRST_ROWS + LATER_ROWS}) g",
    )
    run = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "integration_platform_tests.run_stream",
            str(yaml_file),
            str(tmp_path),
            str(home),
            "big/events",
        ],
        cwd=REPO,
        env=os.environ.copy(),
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while not _staging_files(tmp_path / "lake" / "big") and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert run.poll() is None, "the run ended before it could be killed mid-extract"
    os.kill(run.pid, signal.SIGKILL)
    run.wait()

    with platform_instance(home) as instance:
        target = platform(YAML, tmp_path, instance)
        assert [m.window for m in list_manifests(target.store, STREAM)] == ["initial"], "no partial landing is visible"
        visible = target.store.list_keys("big/events/")
        assert all(TMP_MARK not in k for k in visible) and len(visible) == 2  # one file + one manifest
        assert latest_metadata(instance, KEYS[0])["cursor_after"] == mark, "the cursor did not advance"

        assert _staging_files(tmp_path / "lake"), "the killed writer left its staging file"
        retry = target.materialize(KEYS)
        assert landed_rows(retry)["big/events"] == LATER_ROWS
        assert not _staging_files(tmp_path / "lake"), "the next landing removes a killed writer's staging files"
        total = FIRST_ROWS + LATER_ROWS
        assert target.query("SELECT count(*), count(DISTINCT id) FROM big.events")[0] == (total, total)
        assert all(e.passed for e in retry.get_asset_check_evaluations())


CHINOOK_YAML = """
type: integration_platform.components.SqlSource
attributes:
  source: chinook
  url_env: CHINOOK_DB_URL
  tables:
    - table: InvoiceLine
      primary_key: [InvoiceLineId]
"""
INVOICE_LINES = [dg.AssetKey(["chinook", "invoice_line"]), dg.AssetKey(["warehouse", "chinook.invoice_line"])]


def test_a_run_killed_in_its_warehouse_step_does_not_block_the_next_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kill -9 inside the DuckDB load, while the run holds the duckdb pool's only slot: the next load runs
    unattended (no daemon), the dead run is marked failed, and the table holds every row once."""
    monkeypatch.setenv("CHINOOK_DB_URL", f"sqlite:///{REPO / 'sandbox' / 'chinook' / 'chinook.sqlite'}")
    home = tmp_path / "dagster_home"
    home.mkdir()
    yaml_file = tmp_path / "chinook.yaml"
    yaml_file.write_text(CHINOOK_YAML)
    keys = [k.to_user_string() for k in INVOICE_LINES]
    killed = killed_in("integration_platform.assets", "stream_assets", "load", "--project-instance",
                       str(yaml_file), str(tmp_path), str(home), *keys)  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    with platform_instance(home, overrides=PROJECT_OVERRIDES) as instance:
        info = instance.event_log_storage.get_concurrency_info("duckdb")
        assert [slot.step_key for slot in info.claimed_slots] == ["warehouse__chinook__invoice_line"]
        (dead,) = instance.get_runs()
        assert dead.status == dg.DagsterRunStatus.STARTED, "the killed run never reported its end"

    retry = subprocess.run(
        [sys.executable, "-m", "integration_platform_tests.run_stream", "--project-instance", str(yaml_file),
         str(tmp_path), str(home), *keys],
        cwd=REPO, capture_output=True, timeout=180, check=False,
    )  # fmt: skip
    assert retry.returncode == 0, retry.stderr[-3000:]
    with platform_instance(home, overrides=PROJECT_OVERRIDES) as instance:
        target = platform(CHINOOK_YAML, tmp_path, instance)
        reclaimed = instance.get_run_by_id(dead.run_id)
        assert reclaimed is not None and reclaimed.status == dg.DagsterRunStatus.FAILURE
        assert instance.event_log_storage.get_concurrency_info("duckdb").claimed_slots == []
        assert target.query('SELECT count(*), count(DISTINCT "InvoiceLineId") FROM chinook.invoice_line')[0] == (
            2240,
            2240,
        )


def test_a_load_waiting_for_a_reader_says_who_holds_the_warehouse(
    tmp_path: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An analyst's read-only DuckDB session holds the file: the load logs that process's PID and program,
    waits, and goes on once the session closes."""
    monkeypatch.setenv("CHINOOK_DB_URL", f"sqlite:///{REPO / 'sandbox' / 'chinook' / 'chinook.sqlite'}")
    target = platform(CHINOOK_YAML, tmp_path, instance)
    assert target.materialize(INVOICE_LINES).success
    code = (
        "import duckdb, sys, time\n"
        f"conn = duckdb.connect({str(target.warehouse_path)!r}, read_only=True)\n"
        "print('open', flush=True)\n"
        "time.sleep(3)\n"
    )
    reader = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        assert reader.stdout is not None and reader.stdout.readline().strip() == b"open"
        result = target.materialize([INVOICE_LINES[1]])
    finally:
        reader.wait(timeout=30)
    assert result.success
    warnings = [str(r.user_message) for r in instance.all_logs(result.run_id) if "held open by" in r.user_message]
    assert warnings and f"PID {reader.pid} (" in warnings[0] and "python" in warnings[0], warnings
    assert "time.sleep" not in warnings[0], "a command line may carry a password: only the program is named"
