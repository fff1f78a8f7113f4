"""JSON -> Arrow with a stable schema, against a real server whose records drift: a field that
appears later becomes a nullable column (recorded), a type conflict fails the run naming the
field and the URL, or, when the stream asks for it, sends the record to quarantine."""

import json
import shutil
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from integration_platform_tests.rest_servers import pokeapi_server
from integration_platform_tests.services import shared_file
from sandbox.harness import failure_messages, latest_metadata, platform

DETAILS = dg.AssetKey(["drift", "details"])


@pytest.fixture
def drifting_berries(tmp_path: Path) -> Path:
    """The mirror's berries; from id 40 on they carry a new field, and berry 50's growth_time is text."""
    source = shared_file("pokeapi-subset", "data", "api", "v2")
    target = tmp_path / "mirror" / "api" / "v2"
    shutil.copytree(source / "berry", target / "berry")
    shutil.copy(source / "index.json", target / "index.json")
    for detail in (target / "berry").glob("*/index.json"):
        record = json.loads(detail.read_text())
        if record["id"] >= 40:
            record["season"] = "summer" if record["id"] % 2 else "winter"
        if record["id"] == 50:
            record["growth_time"] = "slow"
        detail.write_text(json.dumps(record))
    return tmp_path / "mirror"


def _yaml(url: str, on_conflict: str) -> str:
    return f"""
type: integration_platform.components.RestSource
attributes:
  source: drift
  base_url: {url}
  concurrency: 8
  streams:
    - name: list
      path: /api/v2/berry/
      records: results
      paginator: {{type: offset, limit: 100, total_path: count}}
    - name: details
      path: "{{url}}"
      parent: {{stream: list}}
      records: $
      primary_key: [id]
      on_schema_conflict: {on_conflict}
"""


def test_new_fields_become_columns_and_conflicts_go_to_quarantine(
    drifting_berries: Path, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    with pokeapi_server(drifting_berries) as server:
        p = platform(_yaml(server.url, "quarantine"), tmp_path, instance)
        result = p.materialize()
    assert result.success
    assert p.query("SELECT count(*) FROM drift.details")[0][0] == 67
    seasons = dict(p.query("SELECT season IS NULL, count(*) FROM drift.details GROUP BY ALL"))
    assert seasons == {True: 39, False: 28}
    assert p.query("SELECT typeof(growth_time) FROM drift.details LIMIT 1")[0][0] == "BIGINT"
    metadata = latest_metadata(instance, DETAILS)
    assert "new column season (string)" in metadata["schema_changes"]
    assert metadata["quarantined"] == 1 and metadata["quarantine_rows_total"] == 1
    quarantine = pq.read_table(tmp_path / "lake" / "drift" / "details" / "_quarantine" / "snapshot.parquet")
    row = quarantine.to_pylist()[0]
    assert row["origin"].endswith("/api/v2/berry/50/ record 0")
    assert "field 'growth_time': expected int64" in row["reason"]
    assert json.loads(row["record"])["id"] == 50 and row["run_id"] == result.run_id
    check = next(c for c in result.get_asset_check_evaluations() if c.check_name == "quarantine_empty")
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN


def test_a_type_conflict_fails_the_run_naming_field_and_url(
    drifting_berries: Path, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    with pokeapi_server(drifting_berries) as server:
        p = platform(_yaml(server.url, "fail"), tmp_path, instance)
        result = p.materialize(raise_on_error=False)
    assert not result.success
    causes = failure_messages(result)
    assert any(
        "stream drift/details: field 'growth_time': expected int64, got \"slow\"" in c and "/api/v2/berry/50/" in c
        for c in causes
    ), causes
    assert not (tmp_path / "lake" / "drift" / "details" / "_manifests").exists()
