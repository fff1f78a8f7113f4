"""SFTP drops end to end: a real OpenSSH sshd serving the 1,781 daily CSV drops of the Italian
Civil Protection (24 columns until 2021-01-14, 30 from 2021-01-15), the drop sensor, the
partitioned lake and warehouse assets, quarantine and host-key checking."""

import contextlib
import csv
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow.parquet as pq
import pytest

from integration_platform.assets import stream_assets
from integration_platform.assets.run_queue import SOURCE_RUN_TAG
from integration_platform.core import landing
from integration_platform.sources.files import extract
from integration_platform.sources.files.remote_files import RemoteFile
from integration_platform_tests.services import shared_file
from integration_platform_tests.sftp_servers import SshServer, openssh_server
from sandbox.harness import Platform, failure_messages, latest_metadata, platform

LAKE = dg.AssetKey(["covid", "regions"])
WAREHOUSE = dg.AssetKey(["warehouse", "covid.regions"])


@pytest.fixture
def drops(tmp_path: Path) -> Path:
    """A drop directory holding a copy of every daily file."""
    source = shared_file("dpc-covid19-ita-regioni-daily", "dati-regioni")
    target = tmp_path / "drops"
    shutil.copytree(source, target)
    return target


def _yaml(server: SshServer, directory: Path, extra: str = "") -> str:
    return f"""
type: integration_platform.components.FileSource
attributes:
  source: covid
  connection:
    protocol: sftp
    host: {server.host}
    port: {server.port}
    username: {server.username}
    private_key_env: IP_TEST_SFTP_KEY
    known_hosts: {server.known_hosts}
  streams:
    - name: regions
      directory: {directory}
      glob: "dpc-covid19-ita-regioni-*.csv"
      partition: {{type: daily, start: "2020-02-24"}}
      primary_key: [data, codice_regione]
{extra}"""


def _sensor_tick(p: Platform, cursor: str | None) -> tuple[list[dg.RunRequest], str | None]:
    sensor = next(s for s in p.defs.sensors or [] if s.name == "covid_regions_drops")
    resources = dict(p.defs.resources or {})
    with dg.build_sensor_context(
        cursor=cursor, definitions=p.defs, resources=resources, instance=p.instance
    ) as context:
        result = sensor.evaluate_tick(context)
    return list(result.run_requests or []), result.cursor


def _day(name: str) -> str:
    digits = name.rsplit("-", 1)[1].removesuffix(".csv")
    return f"{digits[:4]}-{digits[4:6]}-{digits[6:]}"


def _drops_of(drops: Path, days: list[str], folder: Path) -> Path:
    """``folder`` (created) holding a copy of the drops of ``days`` only."""
    folder.mkdir()
    for day in days:
        name = f"dpc-covid19-ita-regioni-{day.replace('-', '')}.csv"
        shutil.copyfile(drops / name, folder / name)
    return folder


def _source_rows(directory: Path, days: list[str]) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    for day in days:
        with (directory / f"dpc-covid19-ita-regioni-{day.replace('-', '')}.csv").open(encoding="utf-8") as f:
            rows.extend(csv.DictReader(f))
    return rows


def test_the_sensor_requests_every_file_once_and_drift_lands_as_one_table(
    drops: Path, tmp_path: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    with openssh_server(drops) as server:
        monkeypatch.setenv("IP_TEST_SFTP_KEY", server.private_key_pem)
        p = platform(_yaml(server, drops, "      max_partitions_per_tick: 2000"), tmp_path, instance)
        first, cursor = _sensor_tick(p, None)
        second, cursor = _sensor_tick(p, cursor)
        third, _ = _sensor_tick(p, cursor)
        days = ["2020-02-24", "2021-01-13", "2021-01-14", "2021-01-15", "2021-01-16", "2025-01-08"]
        for day in days:
            assert p.materialize([LAKE, WAREHOUSE], partition_key=day).success
    files = sorted(os.listdir(drops))
    assert len(files) == 1781
    assert first == []  # nothing is stable at the first look
    assert sorted(r.partition_key or "" for r in second) == [_day(f) for f in files]
    assert len({r.run_key for r in second}) == 1781
    assert {r.tags.get(SOURCE_RUN_TAG) for r in second} == {"covid"}  # the run queue's limit per source
    assert third == []  # every file requested exactly once
    types = dict(
        p.query(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'covid' AND table_name = 'regions'"
        )
    )
    columns = list(types)
    assert types["codice_regione"] == "VARCHAR"  # region codes keep their leading zero ("01")
    assert p.query("SELECT count(*) FROM covid.regions WHERE codice_regione = '01'")[0][0] == 6
    assert len([c for c in columns if not c.startswith("_ip_")]) == 30, columns
    nulls = p.query(
        "SELECT data < '2021-01-15' AS early, count(*), count(codice_nuts_1) FROM covid.regions GROUP BY ALL ORDER BY 1"
    )
    assert nulls == [(False, 63, 63), (True, 63, 0)]
    # per-region totals in DuckDB reconcile with the source files
    expected: dict[str, int] = {}
    for row in _source_rows(drops, days):
        expected[row["denominazione_regione"]] = expected.get(row["denominazione_regione"], 0) + int(row["totale_casi"])
    landed = dict(p.query("SELECT denominazione_regione, sum(totale_casi) FROM covid.regions GROUP BY ALL"))
    assert landed == expected
    changes = latest_metadata(instance, WAREHOUSE)
    assert changes["table_rows"] == 126
    assert changes["dagster/row_count"] == 21  # the rows of its partition (2025-01-08), not the table's


def test_a_republished_file_replaces_its_partition(
    drops: Path, tmp_path: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    day, name = "2020-03-01", "dpc-covid19-ita-regioni-20200301.csv"
    with openssh_server(drops) as server:
        monkeypatch.setenv("IP_TEST_SFTP_KEY", server.private_key_pem)
        p = platform(_yaml(server, drops, "      max_partitions_per_tick: 2000"), tmp_path, instance)
        _, cursor = _sensor_tick(p, None)
        _, cursor = _sensor_tick(p, cursor)
        assert p.materialize([LAKE, WAREHOUSE], partition_key=day).success
        lines = (drops / name).read_text(encoding="utf-8").splitlines()
        corrected = [lines[0], *[line.replace(",ITA,", ",ITA,", 1) for line in lines[1:11]]]  # 10 regions only
        (drops / name).write_text("\n".join(corrected) + "\n", encoding="utf-8")
        os.utime(drops / name, (1_900_000_000, 1_900_000_000))
        seen, cursor = _sensor_tick(p, cursor)  # changed: not stable yet
        again, cursor = _sensor_tick(p, cursor)
        assert p.materialize([LAKE, WAREHOUSE], partition_key=day).success
    assert seen == [] and [r.partition_key for r in again] == [day]
    assert p.query("SELECT count(*), count(DISTINCT codice_regione) FROM covid.regions")[0] == (10, 10)


def _tick(p: Platform, cursor: str | None) -> tuple[list[dg.RunRequest], str | None, str | None]:
    """One tick: its run requests, its cursor and its skip reason."""
    sensor = next(s for s in p.defs.sensors or [] if s.name == "covid_regions_drops")
    with dg.build_sensor_context(
        cursor=cursor, definitions=p.defs, resources=dict(p.defs.resources or {}), instance=p.instance
    ) as context:
        result = sensor.evaluate_tick(context)
    return list(result.run_requests or []), result.cursor, result.skip_message


def test_the_sensor_remembers_through_the_lake_not_its_cursor(
    drops: Path, tmp_path: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Days landed by a backfill (no sensor involved) are never requested; the cursor holds only what
    has not landed and is empty once everything has; the skip reason says what the sensor waits for."""
    days = [f"2021-01-{d:02d}" for d in range(10, 16)]
    incoming = _drops_of(drops, days, tmp_path / "incoming")
    with openssh_server(incoming) as server:
        monkeypatch.setenv("IP_TEST_SFTP_KEY", server.private_key_pem)
        p = platform(_yaml(server, incoming), tmp_path, instance)
        backfill = p.materialize(
            [LAKE, WAREHOUSE],
            tags={"dagster/asset_partition_range_start": days[0], "dagster/asset_partition_range_end": days[3]},
        )
        assert backfill.success
        first, cursor, first_skip = _tick(p, None)  # a sensor switched on after the backfill
        second, cursor, _ = _tick(p, cursor)
        assert first == [] and first_skip is not None
        assert "6 file(s) listed; 4 already in the lake; 2 waiting to be stable" in first_skip
        assert sorted(r.partition_key or "" for r in second) == days[4:]  # only what the lake lacks
        third, cursor, third_skip = _tick(p, cursor)
        assert third == [] and third_skip is not None and "2 requested, not landed yet" in third_skip
        for request in second:
            assert p.materialize([LAKE, WAREHOUSE], partition_key=request.partition_key).success
        fourth, cursor, _ = _tick(p, cursor)
        assert fourth == [] and cursor == '{"looked":{},"requested":{}}'  # everything landed: nothing kept

        # A re-published day is a new version: requested again once stable, and only it.
        republished = incoming / f"dpc-covid19-ita-regioni-{days[1].replace('-', '')}.csv"
        os.utime(republished, (1_900_000_000, 1_900_000_000))
        fifth, cursor, _ = _tick(p, cursor)
        sixth, cursor, _ = _tick(p, cursor)
        # Another deployment, without this cursor, agrees: the lake is the memory, so it too asks
        # for the re-published day only (once it has seen the file twice).
        _, fresh_cursor, _ = _tick(p, None)
        fresh_sensor, _, _ = _tick(p, fresh_cursor)
    assert fifth == [] and [r.partition_key for r in sixth] == [days[1]]
    assert [r.partition_key for r in fresh_sensor] == [days[1]]


def test_a_day_without_a_drop_is_skipped_with_the_reason(
    drops: Path, tmp_path: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    shutil.copy(drops / "dpc-covid19-ita-regioni-20210110.csv", incoming)
    reason = (
        f"partition 2021-01-11 of covid/regions has no file in {incoming} (the matching files cover 2021-01-10 .. "
        "2021-01-10); nothing was landed for it"
    )
    with openssh_server(incoming) as server:
        monkeypatch.setenv("IP_TEST_SFTP_KEY", server.private_key_pem)
        p = platform(_yaml(server, incoming), tmp_path, instance)
        missing = p.materialize([LAKE, WAREHOUSE], partition_key="2021-01-11", raise_on_error=False)
        assert p.store.list_keys("covid/regions/_manifests") == []
        # A single-run backfill over both days lands the one with a file; the other says why it has nothing.
        days = {"dagster/asset_partition_range_start": "2021-01-10", "dagster/asset_partition_range_end": "2021-01-11"}
        both = p.materialize([LAKE, WAREHOUSE], tags=days)
        # The day landed, its file then gone from the drop directory (archive_directory moves every landed
        # file): a range run skips it, and its row count stays what the lake holds, not 0.
        (incoming / "dpc-covid19-ita-regioni-20210110.csv").unlink()
        shutil.copy(drops / "dpc-covid19-ita-regioni-20210112.csv", incoming)
        later = {"dagster/asset_partition_range_start": "2021-01-10", "dagster/asset_partition_range_end": "2021-01-12"}
        archived = p.materialize([LAKE, WAREHOUSE], tags=later)
    # Alone, the day is skipped: the run succeeds, nothing is materialised, the warehouse load is skipped.
    assert missing.success
    assert missing.get_asset_materialization_events() == []
    skipped = [e.step_key for e in missing.all_events if e.event_type == dg.DagsterEventType.STEP_SKIPPED]
    assert skipped == ["warehouse__covid__regions"]
    warnings = [r.user_message for r in instance.all_logs(missing.run_id) if int(r.level) >= logging.WARNING]
    assert f"skipped: {reason}" in warnings
    by_partition = {
        (m.asset_key.to_user_string(), m.partition): m.metadata
        for m in (e.step_materialization_data.materialization for e in both.get_asset_materialization_events())
    }
    assert by_partition[("covid/regions", "2021-01-10")]["rows_landed"].value == 21
    assert by_partition[("covid/regions", "2021-01-11")]["rows_landed"].value == 0
    assert by_partition[("covid/regions", "2021-01-11")]["skipped"].value == reason
    assert by_partition[("covid/regions", "2021-01-11")]["dagster/row_count"].value == 0  # not the other day's
    assert "window" not in by_partition[("covid/regions", "2021-01-11")]
    assert by_partition[("covid/regions", "2021-01-10")]["window"].value == "partition=2021-01-10"
    assert p.query("SELECT count(*) FROM covid.regions")[0][0] == 42  # 2021-01-10 and, after archiving, 2021-01-12
    assert [k.rsplit("/", 1)[-1] for k in p.store.list_keys("covid/regions/_manifests")] == [
        "partition=2021-01-10.json",
        "partition=2021-01-12.json",
    ]
    after_archiving = {
        m.partition: m.metadata
        for m in (e.step_materialization_data.materialization for e in archived.get_asset_materialization_events())
        if m.asset_key == LAKE
    }
    held = after_archiving["2021-01-10"]
    assert stream_assets.SKIPPED in held and held["rows_landed"].value == 0, "nothing of it landed in this run"
    assert held["dagster/row_count"].value == 21, "the lake still holds the day's 21 rows"
    assert after_archiving["2021-01-11"]["dagster/row_count"].value == 0, "a day never landed holds none"
    assert after_archiving["2021-01-12"]["rows_landed"].value == 21


def test_a_growing_file_waits_until_it_is_stable(
    drops: Path, tmp_path: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    source = (drops / "dpc-covid19-ita-regioni-20220101.csv").read_bytes()
    target = incoming / "dpc-covid19-ita-regioni-20220101.csv"
    with openssh_server(incoming) as server:
        monkeypatch.setenv("IP_TEST_SFTP_KEY", server.private_key_pem)
        p = platform(_yaml(server, incoming), tmp_path, instance)
        ticks: list[list[dg.RunRequest]] = []
        cursor = None
        for end in (len(source) // 3, 2 * len(source) // 3, len(source), None):
            if end is not None:
                target.write_bytes(source[:end])  # a partner still writing; None: done, look again
            requests, cursor = _sensor_tick(p, cursor)
            ticks.append(requests)
        assert p.materialize([LAKE, WAREHOUSE], partition_key="2022-01-01").success
    assert [len(t) for t in ticks] == [0, 0, 0, 1]
    assert p.query("SELECT count(*) FROM covid.regions")[0][0] == 21


def test_a_day_is_not_requested_while_another_of_its_files_is_still_growing(
    drops: Path, tmp_path: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run lands every file of its day listed when it starts: a request made for a stable file while a
    second file of the same day was still being written landed the second one half (here cut at a line
    end, so its first rows landed as the day's whole), and the warehouse held the half day until the next run."""
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    whole = (drops / "dpc-covid19-ita-regioni-20220101.csv").read_bytes()
    header, *lines = whole.splitlines(keepends=True)
    (incoming / "dpc-covid19-ita-regioni-20220101.csv").write_bytes(whole)
    late = incoming / "dpc-covid19-ita-regioni-20220101-late.csv"
    with openssh_server(incoming) as server:
        monkeypatch.setenv("IP_TEST_SFTP_KEY", server.private_key_pem)
        p = platform(_yaml(server, incoming), tmp_path, instance)
        first, cursor = _sensor_tick(p, None)  # the first file seen
        late.write_bytes(header + b"".join(lines[:5]))  # the partner starts sending the second
        second, cursor = _sensor_tick(p, cursor)
        late.write_bytes(whole)  # done
        third, cursor = _sensor_tick(p, cursor)
        fourth, cursor = _sensor_tick(p, cursor)
        assert [len(t) for t in (first, second, third)] == [0, 0, 0], "requested while a file of the day grows"
        assert [r.partition_key for r in fourth] == ["2022-01-01"]
        assert p.materialize([LAKE, WAREHOUSE], partition_key="2022-01-01").success
    assert p.query("SELECT count(*) FROM covid.regions")[0][0] == 2 * len(lines)


def test_a_changed_host_key_is_refused(
    drops: Path, tmp_path: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    with openssh_server(drops) as server:
        monkeypatch.setenv("IP_TEST_SFTP_KEY", server.private_key_pem)
        p = platform(_yaml(server, drops), tmp_path, instance)
        assert p.materialize([LAKE], partition_key="2020-02-24").success
        server.replace_host_key()
        refused = p.materialize([LAKE], partition_key="2020-02-25", raise_on_error=False)
    assert not refused.success
    messages = failure_messages(refused)
    assert any("HostKeyError" in m and f"{server.port}" in m for m in messages), messages


def test_bad_rows_go_to_quarantine_and_an_unparsable_file_fails_whole(
    drops: Path, tmp_path: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    good = (drops / "dpc-covid19-ita-regioni-20220101.csv").read_text(encoding="utf-8").splitlines()
    bad = [*good[:3], good[3] + ",extra,columns", good[4].replace(",ITA,", ",ITA,", 1), *good[5:]]
    fields = bad[4].split(",")
    fields[6] = "n/a"  # ricoverati_con_sintomi is an integer column
    bad[4] = ",".join(fields)
    for day, lines in (("02", good), ("03", bad)):  # the same drop, dated as the day it stands for
        text = "\n".join(lines).replace("2022-01-01T", f"2022-01-{day}T") + "\n"
        (incoming / f"dpc-covid19-ita-regioni-202201{day}.csv").write_text(text, encoding="utf-8")
    (incoming / "dpc-covid19-ita-regioni-20220104.csv").write_bytes(b"\xff\xfe\x00garbage\x00\n\x01,\x02\n")
    with openssh_server(incoming) as server:
        monkeypatch.setenv("IP_TEST_SFTP_KEY", server.private_key_pem)
        p = platform(_yaml(server, incoming), tmp_path, instance)
        assert p.materialize([LAKE, WAREHOUSE], partition_key="2022-01-02").success
        result = p.materialize([LAKE, WAREHOUSE], partition_key="2022-01-03")
        broken = p.materialize([LAKE], partition_key="2022-01-04", raise_on_error=False)
    assert p.query("SELECT count(*) FROM covid.regions WHERE data::date = '2022-01-03'")[0][0] == 19
    quarantine = pq.read_table(tmp_path / "lake" / "covid" / "regions" / "_quarantine" / "partition=2022-01-03.parquet")
    rows: list[dict[str, Any]] = quarantine.to_pylist()
    assert sorted(r["origin"] for r in rows) == [
        "dpc-covid19-ita-regioni-20220103.csv line 4",
        "dpc-covid19-ita-regioni-20220103.csv row 3",
    ]
    assert {r["run_id"] for r in rows} == {result.run_id}
    assert any("expected 30 columns, got 32" in r["reason"] for r in rows)
    assert any("'ricoverati_con_sintomi': 'n/a' is not int64" in r["reason"] for r in rows)
    check = next(c for c in result.get_asset_check_evaluations() if c.check_name == "quarantine_empty")
    assert not check.passed and check.metadata["quarantined_rows"].value == 2
    # The check alone (the UI's "Execute checks"), against what is landed: no landing, the same verdict.
    alone = p.materialize(dg.AssetSelection.checks_for_assets(LAKE))
    assert alone.get_asset_materialization_events() == []
    again = [c for c in alone.get_asset_check_evaluations() if c.check_name == "quarantine_empty"]
    assert len(again) == 1 and not again[0].passed and again[0].metadata["quarantined_rows"].value == 2
    assert not broken.success
    assert any("dpc-covid19-ita-regioni-20220104.csv: holds binary data" in m for m in failure_messages(broken)), (
        failure_messages(broken)
    )
    assert not (tmp_path / "lake" / "covid" / "regions" / "_manifests" / "partition=2022-01-04.json").exists()


def test_html_cut_and_empty_drops_fail_their_partition_and_change_nothing_else(
    drops: Path, tmp_path: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    good = (drops / "dpc-covid19-ita-regioni-20220101.csv").read_text(encoding="utf-8")
    (incoming / "dpc-covid19-ita-regioni-20220101.csv").write_text(good, encoding="utf-8")
    bad = {
        "05": (b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head></html>\n", "is an HTML page"),
        "06": (good.encode()[: len(good.encode()) - 40], "the last line is cut"),
        "07": (b"", "the file is empty"),
        # a column the platform adds to each row (the file's name): two columns of one name before
        "08": (
            "".join(f"{line},{'_IP_FILE' if n == 0 else 'x'}\n" for n, line in enumerate(good.splitlines())).encode(),
            "has a column '_ip_file'",
        ),
    }
    for day, (content, _) in bad.items():
        (incoming / f"dpc-covid19-ita-regioni-202201{day}.csv").write_bytes(content)
    with openssh_server(incoming) as server:
        monkeypatch.setenv("IP_TEST_SFTP_KEY", server.private_key_pem)
        p = platform(_yaml(server, incoming), tmp_path, instance)
        assert p.materialize([LAKE, WAREHOUSE], partition_key="2022-01-01").success
        before = p.query("SELECT * FROM covid.regions ORDER BY ALL")
        columns = p.query("SELECT column_name FROM information_schema.columns WHERE table_name = 'regions'")
        for day, (_, reason) in bad.items():
            result = p.materialize([LAKE, WAREHOUSE], partition_key=f"2022-01-{day}", raise_on_error=False)
            name = f"dpc-covid19-ita-regioni-202201{day}.csv"
            assert not result.success
            assert any(name in m and reason in m for m in failure_messages(result)), failure_messages(result)
            assert not (
                tmp_path / "lake" / "covid" / "regions" / "_manifests" / f"partition=2022-01-{day}.json"
            ).exists()
    assert p.query("SELECT * FROM covid.regions ORDER BY ALL") == before  # nothing else changed
    assert p.query("SELECT column_name FROM information_schema.columns WHERE table_name = 'regions'") == columns
    assert sorted(os.listdir(tmp_path / "lake" / "covid" / "regions" / "_manifests")) == ["partition=2022-01-01.json"]


def test_a_backfill_of_many_days_lands_in_one_run(
    drops: Path, tmp_path: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The manifest listings the warehouse step makes (it reads every manifest of the stream each time).
    in_warehouse_step, listings = [False], []
    apply_pending, read_listed = stream_assets._apply_pending, landing.read_listed

    def counted_step(*args: Any) -> Any:
        in_warehouse_step[0] = True
        try:
            yield from apply_pending(*args)
        finally:
            in_warehouse_step[0] = False

    def counted_listing(store: Any, prefix: str, *args: Any) -> Any:
        if in_warehouse_step[0]:
            listings.append(prefix)
        return read_listed(store, prefix, *args)

    monkeypatch.setattr(stream_assets, "_apply_pending", counted_step)
    monkeypatch.setattr(landing, "read_listed", counted_listing)
    with openssh_server(drops) as server:
        monkeypatch.setenv("IP_TEST_SFTP_KEY", server.private_key_pem)
        p = platform(_yaml(server, drops), tmp_path, instance)
        result = p.materialize(
            [LAKE, WAREHOUSE],
            tags={
                "dagster/asset_partition_range_start": "2021-01-10",
                "dagster/asset_partition_range_end": "2021-01-20",
            },
        )
    assert result.success
    # once for the load and its row check together (it was twice: the check listed them again)
    assert listings == ["covid/regions/_manifests/"], listings
    assert p.query("SELECT count(*), count(DISTINCT _ip_file), count(codice_nuts_1) FROM covid.regions")[0] == (
        231,
        11,
        126,
    )
    landed = {e.partition or "" for e in result.get_asset_materialization_events() if e.asset_key == LAKE}
    assert len(landed) == 11 and min(landed) == "2021-01-10" and max(landed) == "2021-01-20"
    run = latest_metadata(instance, LAKE)
    assert run["partitions_landed"] == 11 and run["rows_landed_in_run"] == 231 and run["seconds_in_run"] > 0
    assert run["rows_per_second_in_run"] == round(231 / max(run["seconds_in_run"], 1e-3))
    # a partition's own seconds are the step's time on it (its file was read ahead): no rate from them
    assert "rows_per_second" not in run and run["bytes"] < run["bytes_in_run"]
    # One run, eleven materialisations, each with its own partition's figures (not the run's total).
    for asset in (LAKE, WAREHOUSE):
        counts = {
            e.partition: e.step_materialization_data.materialization.metadata["dagster/row_count"].value
            for e in result.get_asset_materialization_events()
            if e.asset_key == asset
        }
        assert counts == {day: 21 for day in landed}, asset
    lake = {
        e.partition: e.step_materialization_data.materialization.metadata
        for e in result.get_asset_materialization_events()
        if e.asset_key == LAKE
    }
    ahead = {day: m["files_read_ahead"].value for day, m in lake.items()}
    assert ahead == {day: 1 for day in landed}, "each day's file was downloaded and parsed ahead"
    # the step did not download or parse a file read ahead: it shows the time it waited for it
    assert all("download_and_parse_seconds" not in m for m in lake.values())
    waits = [m["read_ahead_wait_seconds"].value for m in lake.values()]
    assert all(isinstance(w, float) and 0 <= w < run["seconds_in_run"] for w in waits)


def test_a_backfill_reads_ahead_but_stops_at_the_first_bad_file(
    drops: Path, tmp_path: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The next files are downloaded and parsed ahead on their own connection; a bad one fails the
    step when its turn comes, naming it, after the days before it landed and with nothing after it
    landed; the read-ahead thread and its folder are gone when the step ends."""
    days = [f"2022-01-0{d}" for d in range(1, 8)]
    incoming = _drops_of(drops, days, tmp_path / "incoming")
    (incoming / "dpc-covid19-ita-regioni-20220105.csv").write_bytes(b"<!DOCTYPE html>\n<html></html>\n")
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    tempfile.tempdir = None  # re-read TMPDIR
    try:
        with openssh_server(incoming) as server:
            monkeypatch.setenv("IP_TEST_SFTP_KEY", server.private_key_pem)
            p = platform(_yaml(server, incoming), tmp_path, instance)
            tags = {"dagster/asset_partition_range_start": days[0], "dagster/asset_partition_range_end": days[-1]}
            result = p.materialize([LAKE, WAREHOUSE], tags=tags, raise_on_error=False)
    finally:
        tempfile.tempdir = None
    assert not result.success
    assert any("dpc-covid19-ita-regioni-20220105.csv: is an HTML page" in m for m in failure_messages(result))
    manifests = sorted(os.listdir(tmp_path / "lake" / "covid" / "regions" / "_manifests"))
    assert manifests == [f"partition={day}.json" for day in days[:4]]
    assert not [t.name for t in threading.enumerate() if t.name.startswith(("drop-download", "drop-parse"))]
    assert not [p.name for p in (tmp_path / "tmp").iterdir() if p.name.startswith("ip-drop")]


def test_files_parsed_together_each_land_or_fail_in_their_own_turn(
    drops: Path, tmp_path: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The parse thread parses the files downloaded by the time it gets to them in one go; here it
    waits for every queued download first, so the grouping is certain: a bad file among them fails the
    step in its own turn, naming it, and the days before it land with their own rows."""
    days = [f"2022-01-0{d}" for d in range(1, 8)]
    incoming = _drops_of(drops, days, tmp_path / "incoming")
    (incoming / "dpc-covid19-ita-regioni-20220104.csv").write_bytes(b"<!DOCTYPE html>\n<html></html>\n")
    parsed_together: list[int] = []
    real_parse, real_read_files = extract._ReadAhead._parse, extract.read_files

    def parse_when_all_downloaded(self: Any, file: Any, downloaded: Any) -> Any:
        deadline = time.monotonic() + 30
        while self.waiting and time.monotonic() < deadline:  # every file put in the queue
            time.sleep(0.005)
        with self.lock:
            queued = [done for _, done in self.queued]
        for done in queued:  # a download's failure is the file's own; only its end is awaited here
            with contextlib.suppress(Exception):
                done.result(timeout=30)
        return real_parse(self, file, downloaded)

    def counted(files: Any, *args: Any) -> Any:
        parsed_together.append(len(files))
        return real_read_files(files, *args)

    monkeypatch.setattr(extract._ReadAhead, "_parse", parse_when_all_downloaded)
    monkeypatch.setattr(extract, "read_files", counted)
    with openssh_server(incoming) as server:
        monkeypatch.setenv("IP_TEST_SFTP_KEY", server.private_key_pem)
        p = platform(_yaml(server, incoming), tmp_path, instance)
        tags = {"dagster/asset_partition_range_start": days[0], "dagster/asset_partition_range_end": days[-1]}
        result = p.materialize([LAKE, WAREHOUSE], tags=tags, raise_on_error=False)
    assert parsed_together[0] == 7, parsed_together  # all seven files in one go
    assert not result.success
    assert any("dpc-covid19-ita-regioni-20220104.csv: is an HTML page" in m for m in failure_messages(result))
    manifests = sorted(os.listdir(tmp_path / "lake" / "covid" / "regions" / "_manifests"))
    assert manifests == [f"partition={day}.json" for day in days[:3]]


def test_marker_files_gate_the_sensor_and_landed_files_can_be_archived(
    drops: Path, tmp_path: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    name = "dpc-covid19-ita-regioni-20230301.csv"
    shutil.copy(drops / name, incoming / name)
    extra = f"      marker_suffix: .done\n      archive_directory: {incoming}/archive"
    with openssh_server(incoming) as server:
        monkeypatch.setenv("IP_TEST_SFTP_KEY", server.private_key_pem)
        p = platform(_yaml(server, incoming, extra), tmp_path, instance)
        first, cursor = _sensor_tick(p, None)
        second, cursor = _sensor_tick(p, cursor)  # stable, but no marker yet
        (incoming / f"{name}.done").write_text("")
        third, cursor = _sensor_tick(p, cursor)
        assert p.materialize([LAKE, WAREHOUSE], partition_key="2023-03-01").success
    assert (first, second, [r.partition_key for r in third]) == ([], [], ["2023-03-01"])
    assert not (incoming / name).exists()
    archived, marker = sorted(os.listdir(incoming / "archive"))  # the file went with its marker
    assert archived == extract.archived_name(_listed(incoming / "archive", name)) and marker == f"{archived}.done"
    assert (incoming / "archive" / archived).read_bytes() == (drops / name).read_bytes()
    assert p.query("SELECT count(*) FROM covid.regions")[0][0] == 21


def test_the_sensor_counts_the_files_it_lists_not_their_markers(
    drops: Path, tmp_path: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Markers are listed with their files but are none of the stream's: "4 file(s) listed; 2 already in
    the lake" for two landed files and their markers did not add up."""
    incoming = _drops_of(drops, ["2023-03-01", "2023-03-02"], tmp_path / "incoming")
    for name in os.listdir(incoming):
        (incoming / f"{name}.done").write_text("")
    with openssh_server(incoming) as server:
        monkeypatch.setenv("IP_TEST_SFTP_KEY", server.private_key_pem)
        p = platform(_yaml(server, incoming, "      marker_suffix: .done"), tmp_path, instance)
        for day in ("2023-03-01", "2023-03-02"):
            assert p.materialize([LAKE, WAREHOUSE], partition_key=day).success
        requests, skipped = p.tick("covid_regions_drops")
    assert requests == [] and skipped == "2 file(s) listed; 2 already in the lake"


def test_a_run_lands_and_archives_only_the_files_whose_marker_is_there(
    drops: Path, tmp_path: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Markers gate each file, as the sensor judges them: a same-day sibling still being uploaded
    (no marker yet) was landed half-written and archived by the run its sibling's marker triggered,
    and its remaining rows never landed."""
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    name, sibling = "dpc-covid19-ita-regioni-20230301.csv", "dpc-covid19-ita-regioni-20230301_b.csv"
    shutil.copy(drops / name, incoming / name)
    (incoming / f"{name}.done").write_text("")
    lines = (drops / name).read_text(encoding="utf-8").splitlines(keepends=True)
    (incoming / sibling).write_text("".join(lines[:6]), encoding="utf-8")  # half uploaded, no marker
    extra = f"      marker_suffix: .done\n      archive_directory: {incoming}/archive"
    with openssh_server(incoming) as server:
        monkeypatch.setenv("IP_TEST_SFTP_KEY", server.private_key_pem)
        p = platform(_yaml(server, incoming, extra), tmp_path, instance)
        assert p.materialize([LAKE, WAREHOUSE], partition_key="2023-03-01").success
    assert (incoming / sibling).exists(), "the file without its marker stays where it is"
    archived = extract.archived_name(_listed(incoming / "archive", name))
    assert sorted(os.listdir(incoming / "archive")) == [archived, f"{archived}.done"]
    assert p.query("SELECT DISTINCT _ip_file FROM covid.regions") == [(name,)]
    assert sibling in str(latest_metadata(instance, LAKE)["files_waiting_for_marker"])


def test_a_days_file_archived_earlier_keeps_its_rows_when_a_later_file_lands(
    drops: Path, tmp_path: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A landing replaces its day, and an archived file is gone from the listing: when a day's second
    file came later (its own marker), the day was landed from it alone and the first file's rows were
    lost. They are kept from the lake, and the sensor's memory still holds both files."""
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    name, sibling = "dpc-covid19-ita-regioni-20230301.csv", "dpc-covid19-ita-regioni-20230301_b.csv"
    shutil.copy(drops / name, incoming / name)
    (incoming / f"{name}.done").write_text("")
    extra = f"      marker_suffix: .done\n      archive_directory: {incoming}/archive"
    with openssh_server(incoming) as server:
        monkeypatch.setenv("IP_TEST_SFTP_KEY", server.private_key_pem)
        p = platform(_yaml(server, incoming, extra), tmp_path, instance)
        assert p.materialize([LAKE, WAREHOUSE], partition_key="2023-03-01").success
        shutil.copy(drops / name, incoming / sibling)
        (incoming / f"{sibling}.done").write_text("")
        assert p.materialize([LAKE, WAREHOUSE], partition_key="2023-03-01").success
    assert p.query("SELECT _ip_file, count(*) FROM covid.regions GROUP BY ALL ORDER BY 1") == [
        (name, 21),
        (sibling, 21),
    ]
    assert latest_metadata(instance, LAKE)["files_kept_from_archive"] == name
    # each file went with its marker: a file re-sent under its name waits for a new marker
    assert len(os.listdir(incoming / "archive")) == 4 and not list(incoming.glob("*.done"))


def test_a_days_file_no_longer_in_the_archive_is_not_kept(
    drops: Path, tmp_path: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a file the archive holds keeps its rows when its day lands again: one gone from both the
    drop directory and the archive (deleted at the source) is not carried on."""

    def deleted(incoming: Path) -> None:
        shutil.rmtree(incoming / "archive")

    p, again, (_, sibling) = _day_landed_again(drops, tmp_path, instance, monkeypatch, deleted)
    assert again.success
    assert p.query("SELECT _ip_file, count(*) FROM covid.regions GROUP BY ALL") == [(sibling, 21)]
    assert "files_kept_from_archive" not in latest_metadata(instance, LAKE)


def _listed(folder: Path, name: str) -> Any:
    """The :class:`RemoteFile` a listing gives of the one file in ``folder`` (archived from ``name``)."""

    (only,) = [p for p in folder.iterdir() if not p.name.endswith(".done")]
    return RemoteFile(str(only), name, only.stat().st_size, only.stat().st_mtime)


def test_a_file_replaced_after_it_was_landed_is_not_archived(tmp_path: Path) -> None:
    """Archiving went by name: a correction re-published between the download and the archive was
    moved to the archive unlanded. The archive checks each file's version against a listing taken
    at archive time and leaves a changed one for the sensor to land."""
    from integration_platform.core.extract import ExtractionReport, RunScope
    from integration_platform.core.lake import LocalLake
    from integration_platform.core.streams import StreamSpec
    from integration_platform.sources.files.drops import DropRules
    from integration_platform.sources.files.formats import FileFormat
    from integration_platform.sources.files.sftp import SftpResource

    incoming = tmp_path / "incoming"
    incoming.mkdir()
    (incoming / "orders_20240101.csv").write_text("id,amount\n1,10\n2,20\n")
    (incoming / "orders_20240102.csv").write_text("id,amount\n3,30\n")
    plan = extract.FileStreamPlan(
        StreamSpec("shop", "orders", "append"), str(incoming), DropRules(glob="orders_*.csv"), FileFormat(),
        archive_directory=str(incoming / "archive"),
    )  # fmt: skip
    with openssh_server(incoming) as server, contextlib.ExitStack() as stack:
        files = SftpResource(
            host=server.host, port=server.port, username=server.username,
            private_key=server.private_key_pem, known_hosts=str(server.known_hosts),
        )  # fmt: skip
        scope = RunScope(stack, partition_keys=("2024-01-01", "2024-01-02"))
        reports = {day: ExtractionReport(scope) for day in scope.partition_keys}
        for day, report in reports.items():
            assert extract.extract_files(plan, files.connect, LocalLake(tmp_path / "lake"), day, report).read_all()
        staged = incoming / ".orders_20240101.csv.part"  # the correction, uploaded then renamed into place
        staged.write_text("id,amount\n1,11\n2,22\n3,33\n")
        os.utime(staged, (1_900_000_000, 1_900_000_000))
        os.replace(staged, incoming / "orders_20240101.csv")
        for report in reports.values():
            for hook in report.after_commit:
                hook()
    assert sorted(os.listdir(incoming)) == ["archive", "orders_20240101.csv"]
    assert (incoming / "orders_20240101.csv").read_text().endswith("3,33\n"), "the correction stays to be landed"
    assert "orders_20240101.csv" in reports["2024-01-01"].metadata["files_not_archived"]
    assert "files_not_archived" not in reports["2024-01-02"].metadata
    assert len(os.listdir(incoming / "archive")) == 1


def test_a_corrected_file_re_sent_after_the_first_was_archived_lands_and_archives_too(
    drops: Path, tmp_path: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The archive target was ``archive/<name>``: the re-sent file landed, then the SFTP rename failed
    (the target exists), the run failed, the warehouse kept the old rows and the sensor, seeing the
    new version in the lake, never retried. Each version now archives under its own name."""
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    day, name = "2023-03-01", "dpc-covid19-ita-regioni-20230301.csv"
    shutil.copy(drops / name, incoming / name)
    with openssh_server(incoming) as server:
        monkeypatch.setenv("IP_TEST_SFTP_KEY", server.private_key_pem)
        p = platform(_yaml(server, incoming, f"      archive_directory: {incoming}/archive"), tmp_path, instance)
        assert p.materialize([LAKE, WAREHOUSE], partition_key=day).success
        lines = (drops / name).read_text(encoding="utf-8").splitlines()
        (incoming / name).write_text("\n".join(lines[:11]) + "\n", encoding="utf-8")  # the correction: 10 regions
        os.utime(incoming / name, (1_900_000_000, 1_900_000_000))
        _, cursor = _sensor_tick(p, None)
        again, cursor = _sensor_tick(p, cursor)
        assert [r.partition_key for r in again] == [day]
        assert p.materialize([LAKE, WAREHOUSE], partition_key=day).success
    assert not (incoming / name).exists()
    archived = sorted(os.listdir(incoming / "archive"))
    assert len(archived) == 2 and all(a.startswith(name.removesuffix(".csv") + ".") for a in archived), archived
    assert "20300317T" in archived[1] or "20300317T" in archived[0], "the version's mtime names it"
    assert p.query("SELECT count(*) FROM covid.regions")[0][0] == 10


def test_names_the_stream_does_not_take_never_fail_its_listings_or_hide_its_archive(
    drops: Path, tmp_path: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A partner's ``notes\\ops.txt`` beside the drops (a legal Unix name the platform refuses as a
    partition key), or such a name in the archive directory: the listing failed as a whole. In the drop
    directory that stopped the sensor and every run; in the archive it was read as "nothing archived",
    and the day landed again without the archived file's rows. Names the stream does not take are
    passed over: the day keeps both files' rows."""
    incoming = tmp_path / "incoming"
    (incoming / "archive").mkdir(parents=True)
    name, sibling = "dpc-covid19-ita-regioni-20230301.csv", "dpc-covid19-ita-regioni-20230301_b.csv"
    shutil.copy(drops / name, incoming / name)
    (incoming / "notes\\ops.txt").write_text("not a drop\n")
    (incoming / "archive" / "README\\old.20230101T000000Z-1B.txt").write_text("x\n")
    extra = f"      archive_directory: {incoming}/archive"
    with openssh_server(incoming) as server:
        monkeypatch.setenv("IP_TEST_SFTP_KEY", server.private_key_pem)
        p = platform(_yaml(server, incoming, extra), tmp_path, instance)
        _, cursor = _sensor_tick(p, None)
        requests, _ = _sensor_tick(p, cursor)
        assert [r.partition_key for r in requests] == ["2023-03-01"]
        assert p.materialize([LAKE, WAREHOUSE], partition_key="2023-03-01").success
        shutil.copy(drops / name, incoming / sibling)
        assert p.materialize([LAKE, WAREHOUSE], partition_key="2023-03-01").success
    assert p.query("SELECT _ip_file, count(*) FROM covid.regions GROUP BY ALL ORDER BY 1") == [
        (name, 21),
        (sibling, 21),
    ]
    assert latest_metadata(instance, LAKE)["files_kept_from_archive"] == name


def test_an_archive_that_cannot_be_listed_fails_the_day_instead_of_dropping_archived_rows(
    drops: Path, tmp_path: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The archive directory listing failing (here a name that is not UTF-8, which paramiko cannot decode:
    the whole listing fails) was read as "nothing archived": the day's second file landed alone and the
    first file's rows were gone from the lake and the warehouse, the run a success. The run fails naming
    the files and the archive, and the day keeps what it held."""

    def unlistable(incoming: Path) -> None:
        (incoming / "archive" / os.fsdecode(b"\xff.csv")).write_text("x\n")

    p, failed, (name, _) = _day_landed_again(drops, tmp_path, instance, monkeypatch, unlistable)
    incoming = tmp_path / "incoming"
    assert not failed.success
    assert any(
        f"{name}: landed earlier and no longer in {incoming}, but the archive directory {incoming}/archive could "
        "not be listed to keep their rows, so nothing lands" in m
        for m in failure_messages(failed)
    ), failure_messages(failed)
    assert p.query("SELECT _ip_file, count(*) FROM covid.regions GROUP BY ALL") == [(name, 21)]


def test_a_file_whose_archived_name_would_be_too_long_is_refused_before_it_lands(
    tmp_path: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 190-byte name (the limit is 200) archived with its version in the name took 211 bytes, which the
    archive listing then refused: the file's rows were lost when its day landed again. With an archive
    directory such a file fails its day before anything lands, naming it."""
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    long_name = "dpc-covid19-ita-regioni-20230301" + "x" * 154 + ".csv"
    (incoming / long_name).write_text("data,codice_regione,n\n2023-03-01,1,5\n")
    extra = f"      archive_directory: {incoming}/archive"
    with openssh_server(incoming) as server:
        monkeypatch.setenv("IP_TEST_SFTP_KEY", server.private_key_pem)
        p = platform(_yaml(server, incoming, extra), tmp_path, instance)
        failed = p.materialize([LAKE, WAREHOUSE], partition_key="2023-03-01", raise_on_error=False)
    assert not failed.success and len(long_name.encode()) == 190
    assert any(
        f"{incoming}/{long_name}: archived with its version in the name (and its marker's suffix), it would take "
        "211 bytes, more than the 200" in m
        for m in failure_messages(failed)
    ), failure_messages(failed)
    assert (incoming / long_name).exists() and not (incoming / "archive").exists()


def _day_landed_again(
    drops: Path,
    tmp_path: Path,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    meanwhile: Callable[[Path], None],
) -> tuple[Platform, dg.ExecuteInProcessResult, tuple[str, str]]:
    """Day 2023-03-01 landed from its one file with ``archive_directory`` (so the file is archived), then
    ``meanwhile(incoming)``, then the day landed again from a second file of the day; returns the
    platform, the second run (not raised) and the two files' names."""
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    name, sibling = "dpc-covid19-ita-regioni-20230301.csv", "dpc-covid19-ita-regioni-20230301_b.csv"
    shutil.copy(drops / name, incoming / name)
    extra = f"      archive_directory: {incoming}/archive"
    with openssh_server(incoming) as server:
        monkeypatch.setenv("IP_TEST_SFTP_KEY", server.private_key_pem)
        p = platform(_yaml(server, incoming, extra), tmp_path, instance)
        assert p.materialize([LAKE, WAREHOUSE], partition_key="2023-03-01").success
        meanwhile(incoming)
        shutil.copy(drops / name, incoming / sibling)
        again = p.materialize([LAKE, WAREHOUSE], partition_key="2023-03-01", raise_on_error=False)
    return p, again, (name, sibling)


class _SoftLimit(Exception):
    """What Celery's soft time limit raises in the step's thread (``SoftTimeLimitExceeded``: an ``Exception``)."""


def test_an_error_raised_in_the_step_while_it_waits_on_the_read_ahead_fails_the_step(
    drops: Path, tmp_path: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error raised in the step's own thread while it waited on a file read ahead (as Celery's soft time
    limit raises one from a signal handler) was taken for the read-ahead's failure: the step stopped reading
    ahead and went on landing, so the soft limit never ended it. It fails the step now."""
    days = [f"2022-01-0{d}" for d in range(1, 5)]
    incoming = _drops_of(drops, days, tmp_path / "incoming")
    real_parse = extract._ReadAhead._parse

    def slow_parse(self: Any, file: Any, downloaded: Any) -> Any:
        signal.setitimer(signal.ITIMER_REAL, 0.5)  # strikes the main thread, the step's, waiting on this parse
        time.sleep(3)
        return real_parse(self, file, downloaded)

    def soft_limit(*_: Any) -> None:
        raise _SoftLimit("soft time limit")

    monkeypatch.setattr(extract._ReadAhead, "_parse", slow_parse)
    previous = signal.signal(signal.SIGALRM, soft_limit)
    try:
        with openssh_server(incoming) as server:
            monkeypatch.setenv("IP_TEST_SFTP_KEY", server.private_key_pem)
            p = platform(_yaml(server, incoming), tmp_path, instance)
            tags = {"dagster/asset_partition_range_start": days[0], "dagster/asset_partition_range_end": days[-1]}
            result = p.materialize([LAKE], tags=tags, raise_on_error=False)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert not result.success
    assert any("soft time limit" in m for m in failure_messages(result)), failure_messages(result)


def test_a_file_re_sent_under_an_older_marker_waits_for_a_new_marker(
    drops: Path, tmp_path: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without an archive directory a landed file's marker stays: a partner re-sending the file under its
    name (overwriting it in place, then writing the marker again) had it requested and landed while half
    uploaded, the old marker taken for the new version's (5 of 21 rows replaced the day). A marker older
    than its file marks an earlier version: the file waits for a new one."""
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    day, name = "2023-03-01", "dpc-covid19-ita-regioni-20230301.csv"
    data, marker = incoming / name, incoming / f"{name}.done"
    shutil.copy(drops / name, data)
    marker.write_text("")
    os.utime(data, (1_900_000_000, 1_900_000_000))
    os.utime(marker, (1_900_000_001, 1_900_000_001))
    with openssh_server(incoming) as server:
        monkeypatch.setenv("IP_TEST_SFTP_KEY", server.private_key_pem)
        p = platform(_yaml(server, incoming, "      marker_suffix: .done"), tmp_path, instance)
        assert p.materialize([LAKE, WAREHOUSE], partition_key=day).success
        lines = (drops / name).read_text(encoding="utf-8").splitlines(keepends=True)
        data.write_text("".join(lines[:6]), encoding="utf-8")  # the re-send under way: 5 rows so far
        os.utime(data, (1_900_000_100, 1_900_000_100))
        during, _ = _sensor_tick(p, None)
        run = p.materialize([LAKE, WAREHOUSE], partition_key=day)
        rows_during = p.query("SELECT count(*) FROM covid.regions")[0][0]
        shutil.copy(drops / name, data)  # the re-send done, then its marker written again
        os.utime(data, (1_900_000_200, 1_900_000_200))
        os.utime(marker, (1_900_000_201, 1_900_000_201))
        after, _ = _sensor_tick(p, None)
    assert during == [], "requested while half uploaded"
    assert run.success and rows_during == 21, "the day kept its landed rows"
    warnings = [r.user_message for r in instance.all_logs(run.run_id) if int(r.level) >= logging.WARNING]
    assert any(f"1 without their .done marker yet, or with one older than the file: {name}" in w for w in warnings), (
        warnings
    )
    assert [r.partition_key for r in after] == [day]


def test_a_file_re_sent_unchanged_after_it_was_archived_does_not_fail_its_day(
    drops: Path, tmp_path: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A partner's delivery re-run with preserved times (``rsync -t``, ``scp -p``) re-sends a file already
    landed and archived, in the same version: the sensor rightly leaves it (the lake holds it), but the
    next landing of its day (a sibling arriving, a backfill) landed it and then failed the run archiving
    it (the SFTP rename onto its archived name, which exists), after the commit: the warehouse was not
    loaded, and every later run of the day failed the same way. It is left where it is, named under
    ``files_not_archived``."""
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    day, name, sibling = "2023-03-01", "dpc-covid19-ita-regioni-20230301.csv", "dpc-covid19-ita-regioni-20230301_b.csv"
    shutil.copy(drops / name, incoming / name)
    os.utime(incoming / name, (1_900_000_000, 1_900_000_000))
    with openssh_server(incoming) as server:
        monkeypatch.setenv("IP_TEST_SFTP_KEY", server.private_key_pem)
        p = platform(_yaml(server, incoming, f"      archive_directory: {incoming}/archive"), tmp_path, instance)
        assert p.materialize([LAKE, WAREHOUSE], partition_key=day).success
        shutil.copy(drops / name, incoming / name)  # the same file again, with its time preserved
        os.utime(incoming / name, (1_900_000_000, 1_900_000_000))
        _, cursor = _sensor_tick(p, None)
        unchanged, _ = _sensor_tick(p, cursor)
        shutil.copy(drops / name, incoming / sibling)
        again = p.materialize([LAKE, WAREHOUSE], partition_key=day, raise_on_error=False)
    assert unchanged == [], "the lake holds that version"
    assert again.success, failure_messages(again)
    assert p.query("SELECT _ip_file, count(*) FROM covid.regions GROUP BY ALL ORDER BY 1") == [
        (name, 21),
        (sibling, 21),
    ]
    assert name in str(latest_metadata(instance, LAKE)["files_not_archived"])
    assert len(os.listdir(incoming / "archive")) == 2  # the first copy of the file and the sibling


@pytest.mark.parametrize("name", ["orders_20240101.csv", "orders_20240101.", "orders_20240101", ".orders", "a.b.csv"])
def test_an_archived_name_reads_back_as_the_name_it_had(name: str) -> None:
    """``orders_20240101.`` was archived as ``orders_20240101.<version>``, read back as ``orders_20240101``: never
    known as archived (its rows left its day's next landing in silence), and one archived name with the file
    ``orders_20240101`` of the same size and time."""
    archived = extract.archived_name(RemoteFile(f"/in/{name}", name, 21, 1_700_000_000.0))
    assert extract._original_name(archived) == name
