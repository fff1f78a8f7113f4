"""The Dagster UI end to end, in headless Chromium, after ``make run`` on a fresh instance.

Starts the demo's stand-ins, runs the main job (``python -m integration_platform.demo``, what
``make run`` runs) on a fresh ``DAGSTER_HOME`` with a temporary lake and warehouse, then starts
``dagster-webserver`` and ``dagster-daemon run`` on it (the daemon launches queued runs and runs
backfills and sensors), drives Debian's Chromium (``/usr/bin/chromium``, installed by
``.ci/install_browser.sh``) through Playwright, and checks what a person sees against GraphQL and
the Dagster instance:

- materialising ``chinook/artist`` from its asset page succeeds, and the warehouse table follows
  through declarative automation (no click on it);
- after an incremental run that finds nothing, ``chinook/invoice`` shows 0 rows landed and the
  412 rows the stream holds;
- each partition of a 3-day single-run backfill of ``covid/regions`` shows its own row count;
- the partitions of ``covid/regions`` end with its last drop (2021-01-31);
- the drop sensor switched on after ``make run`` requests nothing, and says why.

Run alone with ``pytest -m browser``. Without ``/usr/bin/chromium`` the tests are skipped, unless
``CI`` is set: then they fail. On failure a screenshot and the page's text are saved in the
module's temporary folder (their paths are in the failure report), next to the webserver and
daemon logs.
"""

import os
import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from integration_platform.instance import write_instance
from integration_platform.standins import running_standins
from sandbox.dagster_ui import (
    BACKFILL_RUNNING,
    BACKFILL_STATUS,
    LAUNCH_BACKFILL,
    DagsterServices,
    DagsterUIError,
    graphql,
    webserver_and_daemon,
)

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parent.parent
BIN = REPO / ".venv" / "bin"  # the Makefile's venv
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",  # CI containers often have a 64 MB /dev/shm
]
ASSET_KEY = dg.AssetKey(["chinook", "artist"])
ARTIST_ROWS = 275  # rows of the Artist table in sandbox/chinook/chinook.sqlite
INVOICE_ROWS = 412  # rows of the Invoice table
REGIONS_ROWS_PER_DAY = 21  # each covid drop holds one row per Italian region (and autonomous province)
REGIONS_LAST_DAY = "2021-01-31"  # the last drop in sandbox/covid/drops
LOCATION_PATH = "/locations/__repository__@integration_platform"

DEMO_TIMEOUT_S = 600
AUTOMATION_TIMEOUT_S = 180  # the automation sensor ticks every 30 s, then its run must finish
BACKFILL_TIMEOUT_S = 300
SENSOR_TICK_TIMEOUT_S = 120

RUN_TIMEOUT_S = 90
UI_TIMEOUT_MS = 60_000


@dataclass(frozen=True)
class DagsterUI:
    url: str
    home: Path
    tmp: Path
    services: DagsterServices

    def log_tails(self, lines: int = 40) -> str:
        return self.services.log_tails(lines)


@pytest.fixture(scope="module")
def chromium_path() -> Path:
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing: install it with .ci/install_browser.sh (Debian's chromium package)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return CHROMIUM


@pytest.fixture(scope="module")
def dagster_ui(chromium_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DagsterUI]:
    tmp = tmp_path_factory.mktemp("ui_browser")
    home = tmp / "dagster_home"
    with running_standins():  # exports the stand-ins' URLs and the SFTP password into os.environ
        env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_")}
        # A fresh SQLite instance: DAGSTER_PG_URL (dropped above) would share runs with other users.
        env.update(
            DAGSTER_HOME=str(home),
            LAKE_URL=str(tmp / "lake"),
            WAREHOUSE_PATH=str(tmp / "warehouse.duckdb"),
            PYTHONUNBUFFERED="1",
            DAGSTER_EVENT_BATCH_SIZE="1000",  # as the Makefile exports it for `make run` and `make dev`
        )
        write_instance(home, env)
        # Create the SQLite storages (and run their migrations) now: the webserver and the daemon
        # starting together on an empty DAGSTER_HOME race to create them ("table alembic_version
        # already exists") and one of them exits.
        with dg.DagsterInstance.from_config(str(home)):
            pass
        # `make run`: the main job lands every demo source on this instance, through the same stand-ins.
        demo_log = tmp / "demo.log"
        with demo_log.open("wb") as out:
            demo = subprocess.run(
                [str(BIN / "python"), "-m", "integration_platform.demo"],
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=DEMO_TIMEOUT_S,
            )
        assert demo.returncode == 0, demo_log.read_text(errors="replace")[-4000:]
        try:
            with webserver_and_daemon(REPO / "workspace.yaml", REPO, env, tmp, bin_dir=BIN) as services:
                yield DagsterUI(url=services.url, home=home, tmp=tmp, services=services)
        except DagsterUIError as exc:
            pytest.fail(str(exc))


@pytest.fixture()
def page(dagster_ui: DagsterUI, chromium_path: Path) -> Iterator[Page]:
    with sync_playwright() as pw:
        browser: Browser = pw.chromium.launch(executable_path=str(chromium_path), headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(base_url=dagster_ui.url, viewport={"width": 1400, "height": 900})
            page = context.new_page()
            page.set_default_timeout(UI_TIMEOUT_MS)
            yield page
        finally:
            browser.close()


def _graphql(ui: DagsterUI, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    return graphql(ui.url, query, variables, timeout=10)


RUNS_QUERY = "{ runsOrError { __typename ... on Runs { results { runId status } } } }"
RUN_QUERY = """
query Run($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { runId status assetSelection { path } }
    ... on PythonError { message }
  }
}
"""


def _run_id_by_prefix(ui: DagsterUI, prefix: str) -> str:
    runs = _graphql(ui, RUNS_QUERY)["runsOrError"]["results"]
    matches = [run["runId"] for run in runs if run["runId"].startswith(prefix)]
    assert len(matches) == 1, f"expected one run starting with {prefix!r}, got {runs}"
    return str(matches[0])


def _community_popup(page: Page) -> Locator:
    return page.get_by_role("dialog").filter(has_text=re.compile("Dagster community", re.IGNORECASE))


def _dismiss(popup: Locator) -> None:
    popup.get_by_role("button", name=re.compile(r"\b(Skip|Dismiss|Close|No thanks|Not now)\b", re.I)).click()


def _open(page: Page, path: str, loaded: str = r"\bMaterialize") -> None:
    """Open ``path``, wait for a button named like ``loaded`` (the code location is loaded), and
    dismiss the first-visit community pop-up if it shows (once per browser)."""
    popup = _community_popup(page)
    page.goto(path)
    expect(page.get_by_role("button", name=re.compile(loaded)).first).to_be_visible()
    try:
        popup.wait_for(state="visible", timeout=5_000)  # the UI opens it ~1 s after the first render
    except PlaywrightTimeoutError:
        pass  # not shown: already dismissed for this instance, or a UI without it
    else:
        _dismiss(popup)
        expect(popup).to_be_hidden()
    # From now on, should it (re)appear late, Playwright dismisses it before any action or assertion
    # it would get in the way of. (Registered only now: the handler also fires inside wait_for above.)
    page.add_locator_handler(popup, _dismiss)


@contextmanager
def _evidence(page: Page, ui: DagsterUI, name: str) -> Iterator[None]:
    """On failure, note a screenshot, the page's text and the servers' log tails on the error."""
    try:
        yield
    except (Exception, pytest.fail.Exception) as exc:  # pytest.fail (a timed-out wait) is a BaseException
        shot, text = ui.tmp / f"{name}.png", ui.tmp / f"{name}.txt"
        try:
            page.screenshot(path=str(shot), full_page=True)
            text.write_text(page.inner_text("body"))
            exc.add_note(f"screenshot: {shot}; page text: {text}")
        except Exception as shot_error:  # e.g. the browser is gone; keep the original error
            exc.add_note(f"no screenshot: {shot_error}")
        exc.add_note(ui.log_tails())
        raise


def _materialize_from_asset_page(page: Page, ui: DagsterUI, asset_path: str) -> str:
    """Click Materialize on the asset page, wait for the run's end on its run page; returns the run id."""
    _open(page, f"/assets/{asset_path}")
    materialize = page.get_by_role("button", name=re.compile(r"\bMaterialize$"))
    expect(materialize).to_be_enabled()
    materialize.click()
    # The UI confirms the launch with a toast "Launched run 1a2b3c4d" (the run id's first 8 characters).
    toast = page.get_by_text(re.compile(r"Launched run [0-9a-f]{8}"))
    expect(toast).to_be_visible(timeout=30_000)
    match = re.search(r"[0-9a-f]{8}", toast.inner_text())
    assert match, toast.inner_text()
    run_id = _run_id_by_prefix(ui, match.group(0))
    # The run page follows the run live (queued -> started -> success) and shows its status.
    page.goto(f"/runs/{run_id}")
    status = page.get_by_text(re.compile(r"^(Success|Failure|Canceled)$"))
    expect(status.first).to_be_visible(timeout=RUN_TIMEOUT_S * 1000)
    assert status.first.inner_text() == "Success", f"run {run_id} ended {status.first.inner_text()!r}"
    return run_id


def _expect_metadata(page: Page, key: str, value: str) -> None:
    """The metadata table of the event shown (asset events view, partition page) has ``key`` = ``value``."""
    row = page.get_by_role("row").filter(has=page.get_by_role("cell", name=key, exact=True))
    expect(row).to_have_count(1)
    expect(row.get_by_role("cell", name=value, exact=True)).to_be_visible()


def _wait_for(what: str, seconds: float, probe: Any) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(2)
    pytest.fail(f"{what}: not within {seconds:.0f} s")


def test_materialize_from_the_ui_and_the_warehouse_follows(page: Page, dagster_ui: DagsterUI) -> None:
    lake_key, warehouse_key = ASSET_KEY, dg.AssetKey(["warehouse", "chinook.artist"])
    with _evidence(page, dagster_ui, "materialize"):
        run_id = _materialize_from_asset_page(page, dagster_ui, "chinook/artist")
        # The asset page shows the materialisation and its row count.
        page.goto("/assets/chinook/artist")
        expect(page.get_by_text("Row count", exact=True)).to_be_visible()
        expect(page.get_by_text(str(ARTIST_ROWS), exact=True).first).to_be_visible()

    # GraphQL: the run succeeded and materialised exactly chinook/artist (the lake asset alone).
    run = _graphql(dagster_ui, RUN_QUERY, {"runId": run_id})["runOrError"]
    assert run["__typename"] == "Run", run
    assert run["status"] == "SUCCESS", run
    assert run["assetSelection"] == [{"path": ["chinook", "artist"]}], run
    with dg.DagsterInstance.from_config(str(dagster_ui.home)) as instance:
        event = instance.get_latest_materialization_event(lake_key)
        assert event is not None and event.asset_materialization is not None
        assert event.run_id == run_id
        row_count = event.asset_materialization.metadata["dagster/row_count"]
        assert row_count.value == ARTIST_ROWS, row_count

        # Declarative automation (the daemon's warehouse_follows_lake sensor) loads the warehouse
        # table after the lake asset changed without it, in a run nobody clicked.
        def followed() -> dg.EventLogEntry | None:
            latest = instance.get_latest_materialization_event(warehouse_key)
            return latest if latest is not None and latest.timestamp > event.timestamp else None

        loaded = _wait_for("warehouse/chinook.artist loaded by automation", AUTOMATION_TIMEOUT_S, followed)
        automation_run = instance.get_run_by_id(loaded.run_id)
    assert automation_run is not None and automation_run.run_id != run_id
    assert automation_run.tags.get("dagster/sensor_name") == "warehouse_follows_lake", automation_run.tags
    assert loaded.asset_materialization is not None
    assert loaded.asset_materialization.metadata["dagster/row_count"].value == ARTIST_ROWS

    # The UI shows the warehouse table's latest materialisation as that run's.
    with _evidence(page, dagster_ui, "automation"):
        page.goto("/assets/warehouse/chinook.artist?view=events")
        expect(page.get_by_text(f"Materialized in run {automation_run.run_id[:8]}")).to_be_visible()
        _expect_metadata(page, "rows_loaded", str(ARTIST_ROWS))


def test_incremental_run_with_nothing_new_shows_the_stream_total(page: Page, dagster_ui: DagsterUI) -> None:
    with _evidence(page, dagster_ui, "incremental"):
        run_id = _materialize_from_asset_page(page, dagster_ui, "chinook/invoice")
        page.goto("/assets/chinook/invoice?view=events")
        expect(page.get_by_text(f"Materialized in run {run_id[:8]}")).to_be_visible()
        _expect_metadata(page, "rows_landed", "0")  # this landing
        _expect_metadata(page, "dagster/row_count", str(INVOICE_ROWS))  # what the stream holds


def test_backfill_partitions_show_their_own_row_counts(page: Page, dagster_ui: DagsterUI) -> None:
    days = ["2021-01-05", "2021-01-06", "2021-01-07"]
    keys = [{"path": ["covid", "regions"]}, {"path": ["warehouse", "covid.regions"]}]
    params = {"partitionNames": days, "assetSelection": keys, "fromFailure": False}
    launched = _graphql(dagster_ui, LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    backfill_id = launched["backfillId"]

    def finished() -> dict[str, Any] | None:
        backfill = _graphql(dagster_ui, BACKFILL_STATUS, {"id": backfill_id})["partitionBackfillOrError"]
        return backfill if backfill["status"] not in BACKFILL_RUNNING else None

    backfill = _wait_for(f"backfill {backfill_id}", BACKFILL_TIMEOUT_S, finished)
    assert backfill["status"] == "COMPLETED_SUCCESS", backfill
    runs = backfill["runs"]
    assert len(runs) == 1 and runs[0]["status"] == "SUCCESS", runs  # single-run backfill: 3 partitions, 1 run
    with dg.DagsterInstance.from_config(str(dagster_ui.home)) as instance:
        for day in days:
            for key in (dg.AssetKey(["covid", "regions"]), dg.AssetKey(["warehouse", "covid.regions"])):
                records = instance.fetch_materializations(
                    dg.AssetRecordsFilter(asset_key=key, asset_partitions=[day]), limit=1
                ).records
                assert records and records[0].run_id == runs[0]["runId"], (key, day, records)

    for day in days:
        with _evidence(page, dagster_ui, f"partition_{day}"):
            _open(page, f"/assets/covid/regions?view=partitions&partition={day}")
            expect(page.get_by_text(runs[0]["runId"][:8]).first).to_be_visible()
            _expect_metadata(page, "dagster/row_count", str(REGIONS_ROWS_PER_DAY))  # not the run's 63
            _expect_metadata(page, "rows_landed_in_run", str(3 * REGIONS_ROWS_PER_DAY))


def test_partitions_end_with_the_last_drop(page: Page, dagster_ui: DagsterUI) -> None:
    with _evidence(page, dagster_ui, "partitions"):
        _open(page, "/assets/covid/regions?view=partitions")
        expect(page.get_by_text(re.compile(r"\b31 partitions?\b", re.I)).first).to_be_visible()
        expect(page.get_by_text(REGIONS_LAST_DAY).first).to_be_visible()
        expect(page.get_by_text("2021-02-01")).to_have_count(0)


SENSOR_QUERY = """
query Sensor($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    __typename
    ... on Sensor { sensorState { status ticks(limit: 10) { status skipReason runIds } } }
  }
}
"""


def test_drop_sensor_switched_on_after_make_run_requests_nothing(page: Page, dagster_ui: DagsterUI) -> None:
    sensor = "covid_regions_drops"
    selector = {
        "repositoryLocationName": "integration_platform",
        "repositoryName": "__repository__",
        "sensorName": sensor,
    }
    with _evidence(page, dagster_ui, "sensor"):
        _open(page, f"{LOCATION_PATH}/sensors/{sensor}", loaded="Preview tick result")
        switch = page.get_by_role("checkbox").first
        expect(switch).not_to_be_checked()
        page.locator(f"label[for='{switch.get_attribute('id')}']").click()  # the input itself is hidden
        expect(switch).to_be_checked()

        def ticked() -> list[dict[str, Any]] | None:
            state = _graphql(dagster_ui, SENSOR_QUERY, {"selector": selector})["sensorOrError"]["sensorState"]
            ended = [t for t in state["ticks"] if t["status"] in ("SKIPPED", "SUCCESS", "FAILURE")]
            return ended or None

        ticks = _wait_for(f"a tick of {sensor}", SENSOR_TICK_TIMEOUT_S, ticked)
        assert [t["status"] for t in ticks] == ["SKIPPED"] * len(ticks), ticks
        assert all(not t["runIds"] for t in ticks), ticks
        assert "31 already in the lake" in ticks[0]["skipReason"], ticks[0]
        # The sensor page shows the latest tick requested nothing; hovering it shows why.
        page.reload()
        latest = page.get_by_text("0 runs requested").first
        latest.hover()
        expect(page.get_by_text(re.compile(r"31 file\(s\) listed; 31 already in the lake")).first).to_be_visible()
    with dg.DagsterInstance.from_config(str(dagster_ui.home)) as instance:
        assert instance.get_runs(filters=dg.RunsFilter(tags={"dagster/sensor_name": sensor})) == []
