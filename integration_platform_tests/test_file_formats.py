"""Every file format, over explicit FTPS (a real pyftpdlib server), one dynamic partition per file.

One real daily drop (21 regions) is written as CSV, JSON, NDJSON, Parquet, XML and Excel;
each lands through its own stream and reconciles with the CSV it came from.
"""

import csv
import json
from pathlib import Path

import dagster as dg
import pyarrow.csv as pv
import pyarrow.parquet as pq
import pytest
from lxml import etree  # type: ignore[import-untyped]
from openpyxl import Workbook

from integration_platform_tests.ftp_servers import FtpServer, ftps_server
from integration_platform_tests.services import shared_file
from sandbox.harness import platform

DAY = "dpc-covid19-ita-regioni-20210115.csv"
FORMATS = {
    "csv": ("csv", "{type: csv}"),
    "json": ("json", "{type: json, records: $}"),
    "ndjson": ("ndjson", "{type: ndjson}"),
    "parquet": ("parquet", "{type: parquet}"),
    "xml": ("xml", "{type: xml, record_path: //row}"),
    "excel": ("xlsx", "{type: excel, sheet: regions}"),
}


def _write_all(source: Path, root: Path) -> None:
    (root / "day.csv").write_bytes(source.read_bytes())
    table = pv.read_csv(source)
    records = table.to_pylist()
    (root / "day.json").write_text(json.dumps(records, default=str))
    (root / "day.ndjson").write_text("\n".join(json.dumps(r, default=str) for r in records) + "\n")
    pq.write_table(table, root / "day.parquet")
    rows = etree.Element("rows")
    for record in records:
        row = etree.SubElement(rows, "row")
        for key, value in record.items():
            etree.SubElement(row, key).text = "" if value is None else str(value)
    (root / "day.xml").write_bytes(etree.tostring(rows, xml_declaration=True, encoding="utf-8"))
    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.title = "regions"
    sheet.append(list(records[0]))
    for record in records:
        sheet.append([str(v) if hasattr(v, "isoformat") else v for v in record.values()])
    workbook.save(root / "day.xlsx")


def _ftp_source(server: FtpServer, source: str) -> str:
    """The head of a FileSource YAML reading from ``server`` (its ``streams:`` list follows)."""
    return f"""
type: integration_platform.components.FileSource
attributes:
  source: {source}
  connection:
    protocol: ftp
    host: {server.host}
    port: {server.port}
    username: {server.user}
    password_env: IP_TEST_FTP_PASSWORD
    ca_bundle: {server.ca_bundle}
  streams:"""


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_each_format_lands_the_same_rows(
    name: str, tmp_path: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = shared_file("dpc-covid19-ita-regioni-daily", "dati-regioni", DAY)
    root = tmp_path / "ftp"
    root.mkdir()
    _write_all(source, root)
    suffix, fmt = FORMATS[name]
    with ftps_server(root) as server:
        monkeypatch.setenv("IP_TEST_FTP_PASSWORD", server.password)
        text = (
            _ftp_source(server, "formats")
            + f"""
    - name: {name}
      directory: /
      glob: "*.{suffix}"
      partition: {{type: per_file}}
      format: {fmt}
"""
        )
        p = platform(text, tmp_path, instance)
        instance.add_dynamic_partitions(f"formats__{name}__files", [f"day.{suffix}"])
        lake, warehouse = dg.AssetKey(["formats", name]), dg.AssetKey(["warehouse", f"formats.{name}"])
        assert p.materialize([lake, warehouse], partition_key=f"day.{suffix}").success
    with source.open(encoding="utf-8") as f:
        expected = {row["denominazione_regione"]: int(row["totale_casi"]) for row in csv.DictReader(f)}
    landed = p.query(f"SELECT denominazione_regione, totale_casi::BIGINT, _ip_file FROM formats.{name}")
    assert {region: total for region, total, _ in landed} == expected
    assert {file for _, _, file in landed} == {f"day.{suffix}"}


def test_a_server_allowing_one_login_still_backfills_without_read_ahead(
    tmp_path: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backfill reads the next files ahead on a second session; a server that refuses it (one login
    per user) costs only the read-ahead: every day lands, read on the step's own session."""
    days = ["20210110", "20210111", "20210112", "20210113"]
    root = tmp_path / "ftp"
    root.mkdir()
    for day in days:
        name = f"dpc-covid19-ita-regioni-{day}.csv"
        (root / name).write_bytes(shared_file("dpc-covid19-ita-regioni-daily", "dati-regioni", name).read_bytes())
    with ftps_server(root, max_logins=1) as server:
        monkeypatch.setenv("IP_TEST_FTP_PASSWORD", server.password)
        text = (
            _ftp_source(server, "covid")
            + """
    - name: regions
      directory: /
      glob: "dpc-covid19-ita-regioni-*.csv"
      partition: {type: daily, start: "2021-01-10", end: "2021-01-14"}
"""
        )
        p = platform(text, tmp_path, instance)
        tags = {"dagster/asset_partition_range_start": "2021-01-10", "dagster/asset_partition_range_end": "2021-01-13"}
        result = p.materialize(
            [dg.AssetKey(["covid", "regions"]), dg.AssetKey(["warehouse", "covid.regions"])], tags=tags
        )
    assert result.success
    assert p.query("SELECT count(*), count(DISTINCT _ip_file) FROM covid.regions")[0] == (84, 4)
    lake = {
        e.partition: e.step_materialization_data.materialization.metadata
        for e in result.get_asset_materialization_events()
        if e.asset_key == dg.AssetKey(["covid", "regions"])
    }
    assert {day: m["files_read_ahead"].value for day, m in lake.items()} == {
        "2021-01-10": 0,
        "2021-01-11": 0,
        "2021-01-12": 0,
        "2021-01-13": 0,
    }
    assert "421" in str(lake["2021-01-10"]["read_ahead_stopped"].value)
    # each day's file was downloaded and parsed by the step itself, and timed as such; the wait for
    # the read-ahead that failed is the read-ahead's, not the download's
    assert all(float(m["download_and_parse_seconds"].value) >= 0 for m in lake.values())  # type: ignore[arg-type]
    assert all(float(m["read_ahead_wait_seconds"].value) >= 0 for m in lake.values())  # type: ignore[arg-type]
