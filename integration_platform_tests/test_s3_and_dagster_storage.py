"""The same assets land in a real S3 API server, and run on Postgres-backed Dagster storage."""

import uuid
from pathlib import Path

import boto3
import dagster as dg
import psycopg
import pytest

from integration_platform.instance import write_instance
from integration_platform_tests.services import PG_HOST, PG_PORT, REPO, moto_server, psql, require_port
from sandbox.harness import landed_rows, platform

CHINOOK_SQLITE_YAML = (REPO / "integration_platform" / "defs" / "chinook" / "defs.yaml").read_text()


@pytest.fixture
def chinook_sqlite(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHINOOK_DB_URL", f"sqlite:///{REPO / 'sandbox' / 'chinook' / 'chinook.sqlite'}")


def test_lake_on_s3(chinook_sqlite: None, tmp_path: Path, instance: dg.DagsterInstance) -> None:
    with moto_server() as endpoint:
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        s3.create_bucket(Bucket="lake")
        chinook = platform(CHINOOK_SQLITE_YAML, tmp_path, instance, lake_url="s3://lake/raw", s3_endpoint=endpoint)
        result = chinook.materialize()
        assert result.success and all(e.passed for e in result.get_asset_check_evaluations())
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="lake", Prefix="raw/chinook/track/")["Contents"]]
        assert any(k.endswith(".parquet") for k in keys) and "raw/chinook/track/_manifests/snapshot.json" in keys
        assert not (tmp_path / "lake").exists(), "nothing landed locally"
        assert chinook.query("SELECT count(*) FROM chinook.track")[0][0] == 3503
        event = instance.get_latest_materialization_event(dg.AssetKey(["chinook", "track"]))
        assert event and event.asset_materialization
        assert (
            event.asset_materialization.metadata["dagster/uri"].value
            == "s3://lake/raw/chinook/track/_manifests/snapshot.json"
        )
        assert landed_rows(chinook.materialize())["chinook/invoice"] == 0, "incremental on S3 too"


def test_full_materialisation_on_postgres_backed_storage(
    chinook_sqlite: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_port(PG_HOST, PG_PORT, "PostgreSQL")
    name = f"ip_test_dagster_{uuid.uuid4().hex[:8]}"
    psql("postgres", "-c", f"CREATE DATABASE {name}")
    try:
        monkeypatch.setenv("DAGSTER_PG_URL", f"postgresql+psycopg2://postgres@{PG_HOST}:{PG_PORT}/{name}")
        home = tmp_path / "home"
        config = write_instance(home).read_text()
        assert "postgres_url" in config and "DAGSTER_PG_URL" in config and "127.0.0.1" not in config
        with dg.DagsterInstance.from_config(str(home)) as instance:
            chinook = platform(CHINOOK_SQLITE_YAML, tmp_path, instance)
            result = chinook.materialize()
            assert result.success
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        with psycopg.connect(f"host={PG_HOST} port={PG_PORT} user=postgres dbname={name}") as conn:
            runs = conn.execute("SELECT count(*) FROM runs WHERE status = 'SUCCESS'").fetchone()
            materialisations = conn.execute(
                "SELECT count(*) FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION'"
            ).fetchone()
        assert runs == (1,)
        assert materialisations == (22,), "11 lake + 11 warehouse assets recorded in PostgreSQL"
    finally:
        psql("postgres", "-c", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_an_incremental_stream_refuses_an_ephemeral_instance(
    chinook_sqlite: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without DAGSTER_HOME the high-water mark would be kept nowhere: the run fails saying how to fix it,
    before anything lands; the documented switch lets it through (a full reload)."""
    invoice = [dg.AssetKey(["chinook", "invoice"])]
    monkeypatch.delenv("INTEGRATION_PLATFORM_ALLOW_EPHEMERAL", raising=False)
    chinook = platform(CHINOOK_SQLITE_YAML, tmp_path, dg.DagsterInstance.ephemeral())
    refused = chinook.materialize(invoice, raise_on_error=False)
    assert not refused.success
    (message,) = [e.step_failure_data.error.message for e in refused.all_events if e.is_step_failure]  # type: ignore[union-attr]
    assert "DAGSTER_HOME" in message and "INTEGRATION_PLATFORM_ALLOW_EPHEMERAL=1" in message
    assert not (tmp_path / "lake" / "chinook" / "invoice").exists(), "nothing landed"

    monkeypatch.setenv("INTEGRATION_PLATFORM_ALLOW_EPHEMERAL", "1")
    allowed = platform(CHINOOK_SQLITE_YAML, tmp_path, dg.DagsterInstance.ephemeral()).materialize(invoice)
    assert allowed.success and landed_rows(allowed) == {"chinook/invoice": 412}
