"""The Dagster UI end to end: materialise ``chinook/artist`` from its asset page in headless Chromium.

Starts ``dagster-webserver`` and ``dagster-daemon run`` (the daemon launches the queued run) on a
fresh ``DAGSTER_HOME``, a temporary lake and warehouse, and the vendored Chinook SQLite database;
drives Debian's Chromium (``/usr/bin/chromium``, installed by ``.ci/install_browser.sh``) through
Playwright; and checks the run's success in the UI, through GraphQL and in the Dagster instance.

Run alone with ``pytest -m browser``. Without ``/usr/bin/chromium`` the test is skipped, unless
``CI`` is set: then it fails. On failure a screenshot is saved in the test's temporary folder
(its path is in the failure report), next to the webserver and daemon logs.
"""

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import requests
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from integration_platform.instance import write_instance
from sandbox.processes import free_port

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

SERVER_START_TIMEOUT_S = 90
RUN_TIMEOUT_S = 90
STOP_TIMEOUT_S = 20
UI_TIMEOUT_MS = 60_000


@dataclass(frozen=True)
class DagsterUI:
    url: str
    home: Path
    tmp: Path
    logs: tuple[Path, ...]

    def log_tails(self, lines: int = 40) -> str:
        parts = []
        for log in self.logs:
            text = log.read_text(errors="replace").splitlines() if log.exists() else []
            parts.append(f"--- {log.name} (last {lines} lines) ---\n" + "\n".join(text[-lines:]))
        return "\n".join(parts)


def _start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        # A session of its own, so that stopping it reaches the code servers and run workers it spawns.
        return subprocess.Popen(
            cmd,
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group we created (pgid == pid), SIGKILL it if it is still there after a while."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=STOP_TIMEOUT_S)


def _wait_for_server(url: str, procs: list[subprocess.Popen[bytes]], ui: DagsterUI) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                pytest.fail(f"{proc.args!r} exited with {proc.returncode} during start-up\n{ui.log_tails()}")
        try:
            if requests.get(f"{url}/server_info", timeout=2).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    pytest.fail(f"{url}/server_info did not answer within {SERVER_START_TIMEOUT_S}s\n{ui.log_tails()}")


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
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_")}
    # A fresh SQLite instance: DAGSTER_PG_URL (dropped above) would share runs with other users.
    env.update(
        DAGSTER_HOME=str(home),
        LAKE_URL=str(tmp / "lake"),
        WAREHOUSE_PATH=str(tmp / "warehouse.duckdb"),
        PYTHONUNBUFFERED="1",
    )
    write_instance(home, env)
    # Create the SQLite storages (and run their migrations) now: the webserver and the daemon
    # starting together on an empty DAGSTER_HOME race to create them ("table alembic_version
    # already exists") and one of them exits.
    with dg.DagsterInstance.from_config(str(home)):
        pass
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    webserver_log, daemon_log = tmp / "webserver.log", tmp / "daemon.log"
    ui = DagsterUI(url=url, home=home, tmp=tmp, logs=(webserver_log, daemon_log))

    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(
            _start(
                [str(BIN / "dagster-webserver"), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
                env,
                webserver_log,
            )
        )
        procs.append(_start([str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"], env, daemon_log))
        _wait_for_server(url, procs, ui)
        yield ui
    finally:
        for proc in reversed(procs):
            _stop(proc)


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
    payload = {"query": query, "variables": variables or {}}
    response = requests.post(f"{ui.url}/graphql", json=payload, timeout=10)
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    assert not body.get("errors"), body["errors"]
    return body["data"]


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


def _open_asset_page(page: Page) -> Locator:
    """Open chinook/artist and dismiss the first-visit community pop-up if it shows.

    Returns the Materialize button.
    """
    popup = _community_popup(page)
    page.goto("/assets/chinook/artist")
    materialize = page.get_by_role("button", name=re.compile(r"\bMaterialize$"))
    expect(materialize).to_be_enabled()  # the code location is loaded
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
    return materialize


def test_materialize_chinook_artist_from_the_ui(page: Page, dagster_ui: DagsterUI) -> None:
    try:
        materialize = _open_asset_page(page)
        materialize.click()

        # The UI confirms the launch with a toast "Launched run 1a2b3c4d" (the run id's first 8 characters).
        toast = page.get_by_text(re.compile(r"Launched run [0-9a-f]{8}"))
        expect(toast).to_be_visible(timeout=30_000)
        match = re.search(r"[0-9a-f]{8}", toast.inner_text())
        assert match, toast.inner_text()
        run_id = _run_id_by_prefix(dagster_ui, match.group(0))

        # The run page follows the run live (queued -> started -> success) and shows its status.
        page.goto(f"/runs/{run_id}")
        status = page.get_by_text(re.compile(r"^(Success|Failure|Canceled)$"))
        expect(status.first).to_be_visible(timeout=RUN_TIMEOUT_S * 1000)
        assert status.first.inner_text() == "Success", f"run {run_id} ended {status.first.inner_text()!r}"

        # The asset page shows the materialisation and its row count.
        page.goto("/assets/chinook/artist")
        expect(page.get_by_text("Row count", exact=True)).to_be_visible()
        expect(page.get_by_text(str(ARTIST_ROWS), exact=True).first).to_be_visible()
    except Exception as exc:
        shot = dagster_ui.tmp / "failure.png"
        try:
            page.screenshot(path=str(shot), full_page=True)
            exc.add_note(f"screenshot: {shot}")
        except Exception as shot_error:  # e.g. the browser is gone; keep the original error
            exc.add_note(f"no screenshot: {shot_error}")
        exc.add_note(dagster_ui.log_tails())
        raise

    # GraphQL: the run succeeded and materialised exactly chinook/artist.
    run = _graphql(dagster_ui, RUN_QUERY, {"runId": run_id})["runOrError"]
    assert run["__typename"] == "Run", run
    assert run["status"] == "SUCCESS", run
    assert run["assetSelection"] == [{"path": ["chinook", "artist"]}], run

    # The instance: the latest materialisation comes from that run and counted every artist.
    with dg.DagsterInstance.from_config(str(dagster_ui.home)) as instance:
        event = instance.get_latest_materialization_event(ASSET_KEY)
    assert event is not None and event.asset_materialization is not None
    assert event.run_id == run_id
    row_count = event.asset_materialization.metadata["dagster/row_count"]
    assert row_count.value == ARTIST_ROWS, row_count
