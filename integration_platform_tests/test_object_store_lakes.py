"""The lake on Google Cloud Storage (fake-gcs-server) and Azure Blob Storage (Azurite), real servers on loopback.

The chinook demo lands with the lake in each store and reconciles with the same run on a local
lake; a landing killed after its Parquet upload and before its manifest leaves nothing visible, and
the retry lands each row once and removes the orphan upload. Reading many objects at once (the
manifests of a partitioned stream) keeps their order on every store, S3 (moto) and a local lake included.
"""

import base64
import hashlib
import json
import signal
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any, cast

import boto3
import dagster as dg
import duckdb
import pyarrow as pa
import pytest

from integration_platform.core.lake import FsspecLake, LakeStore, LocalLake, S3Lake
from integration_platform.core.landing import land, list_manifests
from integration_platform.core.loading import duckdb_paths, load, pending
from integration_platform.core.manifest_reads import forget_read, is_version_of, read_listed
from integration_platform.core.streams import StreamSpec
from integration_platform.resources.lake import LakeResource
from integration_platform.resources.object_stores import AzureBlobSettings, GcsSettings
from integration_platform_tests.run_stream import LAKE_ENV, killed_in
from integration_platform_tests.services import REPO, missing, moto_server
from sandbox import ServerMissing
from sandbox.harness import landed_rows, latest_metadata, platform
from sandbox.object_stores import azurite, fake_gcs_server

CHINOOK_YAML = (REPO / "integration_platform" / "defs" / "chinook" / "defs.yaml").read_text()
STORES = ["gs", "az"]


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, Any]]:
    """Both servers, started once for the module: ``{"gs": endpoint URL, "az": connection string}``."""
    with ExitStack() as stack:
        try:
            yield {"gs": fake_gcs_server(stack), "az": azurite(stack).connection_string}
        except ServerMissing as exc:
            missing(str(exc))


@pytest.fixture
def chinook_sqlite(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHINOOK_DB_URL", f"sqlite:///{REPO / 'sandbox' / 'chinook' / 'chinook.sqlite'}")


def lake_fields(store: str, servers: dict[str, Any]) -> dict[str, Any]:
    """:class:`LakeResource` fields (but ``s3``) of a lake in a new bucket or container of ``store``."""
    bucket = f"lake-{uuid.uuid4().hex[:12]}"
    if store == "gs":
        fields: dict[str, Any] = {"gcs": {"endpoint_url": servers["gs"], "token": "anon", "project": "test"}}
    else:
        fields = {"azure": {"connection_string": servers["az"]}}
    fields["url"] = f"{store}://{bucket}/raw"
    resource(fields)._filesystem(store).mkdir(bucket)  # a bucket is made by its owner, not by the platform
    return fields


def resource(fields: dict[str, Any]) -> LakeResource:
    return LakeResource(
        url=fields["url"],
        gcs=GcsSettings(**fields.get("gcs", {})),
        azure=AzureBlobSettings(**fields.get("azure", {})),
    )


def table_rows(warehouse: Path) -> dict[str, Any]:
    """``{table: (rows, checksum of the data columns)}`` of every table in the warehouse."""
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        tables = conn.execute(
            "SELECT table_schema || '.' || table_name FROM information_schema.tables WHERE table_schema = 'chinook'"
        ).fetchall()
        found = {}
        for (table,) in tables:
            columns = [c for (c,) in conn.execute(f"SELECT column_name FROM (DESCRIBE {table})").fetchall()]
            data = ", ".join(f'"{c}"' for c in columns if not c.startswith("_ip_"))
            found[table] = conn.execute(f"SELECT count(*), sum(hash({data})) FROM {table}").fetchone()
    return found


#: The streams whose manifests are compared window by window (a full table, incremental ones).
COMPARED = ("track", "invoice", "customer")


@pytest.fixture(scope="module")
def local_reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The demo landed twice (the second run incremental) on a local lake, once for the module:
    ``{"tables": table_rows(...), "manifests": {stream: [(window, rows)]}}``."""
    work = tmp_path_factory.mktemp("local")
    with pytest.MonkeyPatch.context() as patch, dg.instance_for_test() as instance:
        patch.setenv("CHINOOK_DB_URL", f"sqlite:///{REPO / 'sandbox' / 'chinook' / 'chinook.sqlite'}")
        local = platform(CHINOOK_YAML, work, instance)
        assert local.materialize().success and local.materialize().success
    store = local.lake.store()
    return {"tables": table_rows(local.warehouse_path), "manifests": manifest_rows(store)}


def manifest_rows(lake: LakeStore) -> dict[str, list[tuple[str, int]]]:
    return {
        stream: sorted(
            (m.window, m.rows)
            for m in list_manifests(lake, StreamSpec(source="chinook", name=stream, write_disposition="append"))
        )
        for stream in COMPARED
    }


@pytest.mark.parametrize("store", STORES)
def test_the_demo_lands_in_the_store_as_it_lands_locally(
    store: str, servers: dict[str, Any], local_reference: dict[str, Any], chinook_sqlite: None, tmp_path: Path
) -> None:
    with dg.instance_for_test() as instance:
        fields = lake_fields(store, servers)
        remote = platform(CHINOOK_YAML, tmp_path, instance, lake=resource(fields))
        result = remote.materialize()
        assert result.success and all(e.passed for e in result.get_asset_check_evaluations())
        assert not (tmp_path / "lake").exists(), "nothing landed locally"
        lake = resource(fields).store()
        keys = lake.list_keys("chinook/track/")
        assert "chinook/track/_manifests/snapshot.json" in keys and any(k.endswith(".parquet") for k in keys)
        uri = latest_metadata(instance, dg.AssetKey(["chinook", "track"]))["dagster/uri"]
        assert uri == f"{fields['url']}/chinook/track/_manifests/snapshot.json"
        assert landed_rows(remote.materialize())["chinook/invoice"] == 0, "incremental in the store too"
    expected = local_reference["tables"]
    assert len(expected) == 11 and expected["chinook.track"][0] == 3503
    assert table_rows(remote.warehouse_path) == expected
    assert manifest_rows(lake) == local_reference["manifests"]


@pytest.mark.parametrize("store", STORES)
def test_a_landing_killed_before_its_manifest_leaves_nothing_visible(
    store: str, servers: dict[str, Any], chinook_sqlite: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fields = lake_fields(store, servers)
    monkeypatch.setenv(LAKE_ENV, json.dumps(fields))
    source = tmp_path / "chinook.yaml"
    source.write_text(CHINOOK_YAML)
    home = tmp_path / "home"
    home.mkdir()
    keys = ["chinook/invoice", "warehouse/chinook.invoice"]
    killed = killed_in(
        "integration_platform.core.lake", "FsspecLake", "put_json", str(source), str(tmp_path), str(home), *keys
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-3000:]
    lake = resource(fields).store()
    spec = StreamSpec(source="chinook", name="invoice", write_disposition="append")
    uploaded = lake.list_keys("chinook/invoice/")
    assert uploaded and all(k.endswith(".parquet") for k in uploaded), "the Parquet file was uploaded, no manifest"
    assert list_manifests(lake, spec) == [], "readers trust only manifests: nothing is visible"
    assert not (tmp_path / "warehouse.duckdb").exists() or not table_rows(tmp_path / "warehouse.duckdb")

    with dg.instance_for_test(temp_dir=str(home)) as instance:
        retry = platform(CHINOOK_YAML, tmp_path, instance, lake=resource(fields))
        result = retry.materialize([dg.AssetKey(k.split("/")) for k in keys])
        assert result.success and landed_rows(result) == {"chinook/invoice": 412}
        assert retry.query('SELECT count(*), count(DISTINCT "InvoiceId") FROM chinook.invoice') == [(412, 412)]
    (manifest,) = list_manifests(lake, spec)
    listed = {k for k in lake.list_keys("chinook/invoice/") if k.endswith(".parquet")}
    assert listed == {f.key for f in manifest.files}, "the orphan upload of the killed landing is gone"
    assert not listed & set(uploaded)


@pytest.mark.fast
@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://host/lake", "use a folder path, file://, s3://, gs://"),
        ("gs:///raw", "names no bucket"),
        ("az://", "names no bucket"),
        # a scheme without its "//" landed in a local folder named "s3:" as if the lake were on S3
        ("s3:/bucket/lake", "write s3://bucket/prefix"),
        ("gs:bucket", "write gs://bucket/prefix"),
        ("abfs:/container", "write abfs://bucket/prefix"),
        ("S3:/bucket/lake", "write s3://bucket/prefix"),
        ("file:", "names no folder"),
        ("file://", "names no folder"),
    ],
)
def test_a_lake_url_the_platform_cannot_open_is_refused_naming_it(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as refused:
        resource({"url": url}).store()
    assert repr(url) in str(refused.value)


@pytest.mark.fast
def test_a_file_uri_without_its_slashes_is_the_folder_it_names(tmp_path: Path) -> None:
    """RFC 8089's ``file:/path`` is that path (it was a folder named ``file:`` in the working directory)."""
    for url in (f"file:{tmp_path}/lake", f"FILE:{tmp_path}/lake", f"FILE://{tmp_path}/lake"):
        store = resource({"url": url}).store()
        assert isinstance(store, LocalLake) and Path(store.root) == tmp_path / "lake", url


@pytest.mark.fast
@pytest.mark.parametrize("url", ["lake", "s3://bucket/prefix"])
def test_a_resource_opens_its_store_once(url: str, tmp_path: Path) -> None:
    """A backfill asks for the store once per partition: the second call returns the first store (an S3
    store is a boto3 client, 234 ms to build), and another resource opens its own. Building an S3 client
    does not connect, so no server is needed."""
    fields = {"url": str(tmp_path / url) if "://" not in url else url}
    lake = resource(fields)
    first = lake.store()
    assert lake.store() is first
    assert resource(fields).store() is not first


@pytest.mark.fast
def test_a_step_opens_the_store_on_its_own_copy_of_the_resource(tmp_path: Path) -> None:
    """The store is kept on the object Dagster sets up for the step, never on the one the definitions
    hold (a client opened there would be shared by every process forked from a preloaded server)."""
    shared = LakeResource(url=str(tmp_path / "lake"))
    opened: list[LakeStore] = []

    @dg.asset
    def probe(lake: LakeResource) -> None:
        opened.append(lake.store())

    assert dg.materialize([probe], resources={"lake": shared}).success
    assert len(opened) == 1 and shared._store is None


@pytest.mark.parametrize("store", STORES)
def test_a_hostile_key_never_reaches_the_store(store: str, servers: dict[str, Any]) -> None:
    lake = resource(lake_fields(store, servers)).store()
    for key in ("../other/x.json", "a/../../b.json", "a/./b.json", "a//b.json"):
        with pytest.raises(ValueError):
            lake.put_json(key, {})
    assert lake.list_keys("") == []
    for key in ("w/*.json", "w/a.json", "w/a[1].json", "w/a1.json"):
        lake.put_json(key, {"key": key})
    lake.delete(["w/*.json", "w/a[1].json", "w/missing.json"])  # literal keys, never globs
    assert lake.list_keys("w/") == ["w/a.json", "w/a1.json"]
    if store == "az":  # adlfs reads "?versionid=" as a blob version: such a key would land elsewhere
        with pytest.raises(ValueError, match="versionid"):
            lake.put_json("w/partition=a?versionid=1.json", {})


def reads_many_in_order(lake: LakeStore) -> None:
    """``get_bytes_many`` of 25 keys (names a glob would expand among them) returns each object in the keys'
    order, as ``get_json`` one by one does; a missing key raises what ``get_json`` raises."""
    keys = [f"m/{name}.json" for name in ("a*", "a[1]", "a?", *(f"{i:02d}" for i in range(22)))]
    for key in keys:
        lake.put_json(key, {"key": key})
    order = keys[::-1]
    read = [json.loads(body) for body in lake.get_bytes_many(order)]
    assert read == [{"key": key} for key in order] == [lake.get_json(k) for k in order]
    with pytest.raises(Exception) as one:
        lake.get_json("m/missing.json")
    with pytest.raises(type(one.value)):
        lake.get_bytes_many([*keys[:12], "m/missing.json", *keys[12:]])


class CountingReads:
    """A real store whose reads are counted (every other call goes to it unchanged)."""

    def __init__(self, lake: LakeStore) -> None:
        self.lake, self.read = lake, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.lake, name)

    def get_bytes_many(self, keys: list[str]) -> list[bytes]:
        self.read += len(keys)
        return self.lake.get_bytes_many(keys)


def reads_only_what_changed(lake: LakeStore, versioned: bool) -> None:
    """A second listing takes the manifests this process read from memory where the store versions them
    (an object store's ETag) and reads them all again where it does not (a local lake); a manifest written
    again, a new one and a removed one are seen at once either way, and no caller shares a read object."""
    forget_read()
    counted = CountingReads(lake)
    store = cast(LakeStore, counted)
    for i in range(30):
        lake.put_json(f"s/_manifests/{i:02d}.json", {"i": i, "landing_id": uuid.uuid4().hex})
    first = read_listed(store, "s/_manifests/")
    assert [m["i"] for m in first] == list(range(30)) and counted.read == 30
    first[0]["i"] = "changed by a caller"
    again = read_listed(store, "s/_manifests/")
    assert [m["i"] for m in again] == list(range(30)) and again[1:] == first[1:]
    assert counted.read == (30 if versioned else 60)
    lake.put_json("s/_manifests/03.json", {"i": 103, "landing_id": uuid.uuid4().hex})
    lake.put_json("s/_manifests/30.json", {"i": 30, "landing_id": uuid.uuid4().hex})
    lake.delete(["s/_manifests/07.json"])
    before = counted.read
    third = [m["i"] for m in read_listed(store, "s/_manifests/")]
    assert third == [0, 1, 2, 103, 4, 5, 6, *range(8, 31)]
    assert counted.read - before == (2 if versioned else 30)


class WrittenAfterListing(CountingReads):
    """A real store where another writer replaces ``key`` with ``body`` right after each listing."""

    def __init__(self, lake: LakeStore, key: str, body: dict[str, Any]) -> None:
        super().__init__(lake)
        self.key, self.body = key, body

    def list_versions(self, prefix: str) -> dict[str, str | None]:
        listed = self.lake.list_versions(prefix)
        self.lake.put_json(self.key, self.body)
        return listed


def keeps_no_read_under_another_version(lake: LakeStore) -> None:
    """A manifest written again between the listing and the read is returned as read, but not kept under
    the listing's version: where the ETag is the content's MD5 (S3, fake-gcs-server) the first content
    written back brings that version back, and it must read as the first content, not the second."""
    forget_read()
    first, second = {"landing_id": "first"}, {"landing_id": "second"}
    lake.put_json("r/_manifests/day.json", first)
    racing = cast(LakeStore, WrittenAfterListing(lake, "r/_manifests/day.json", second))
    assert read_listed(racing, "r/_manifests/") == [second]
    lake.put_json("r/_manifests/day.json", first)  # restored: the same bytes, the same content-hash ETag
    assert read_listed(lake, "r/_manifests/") == [first]


@pytest.mark.fast
def test_a_content_hash_etag_must_be_the_md5_of_what_was_read() -> None:
    body = b'{"landing_id": "x"}'
    md5 = hashlib.md5(body, usedforsecurity=False)
    assert is_version_of(body, f'"{md5.hexdigest()}"') and is_version_of(body, md5.hexdigest().upper())
    assert is_version_of(body, base64.b64encode(md5.digest()).decode())
    assert not is_version_of(b"{}", f'"{md5.hexdigest()}"')
    assert not is_version_of(b"{}", base64.b64encode(md5.digest()).decode())
    # ETags that name one write (Azure's, GCS's generation-based, S3's multipart or encrypted ones)
    for tag in ('"0x8DC1F2A3B4C5D6E"', "CKih16GjycICEAE=", '"9b2cf535f27731c974343645a3985328-3"'):
        assert is_version_of(b"{}", tag)


@pytest.mark.parametrize("store", STORES)
def test_a_listing_reads_only_the_manifests_that_changed(store: str, servers: dict[str, Any]) -> None:
    reads_only_what_changed(resource(lake_fields(store, servers)).store(), versioned=True)
    keeps_no_read_under_another_version(resource(lake_fields(store, servers)).store())


@pytest.mark.parametrize("store", STORES)
def test_many_objects_are_read_at_once_in_their_order(store: str, servers: dict[str, Any]) -> None:
    reads_many_in_order(resource(lake_fields(store, servers)).store())


def test_many_objects_are_read_at_once_and_only_when_changed_on_s3_and_locally(tmp_path: Path) -> None:
    reads_many_in_order(LocalLake(tmp_path))
    with moto_server() as endpoint:
        s3 = boto3.client(
            "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="t", aws_secret_access_key="t"
        )
        s3.create_bucket(Bucket="lake")
        reads_many_in_order(S3Lake(s3, "lake", "raw"))
        reads_only_what_changed(S3Lake(s3, "lake", f"raw-{uuid.uuid4().hex[:8]}"), versioned=True)
        keeps_no_read_under_another_version(S3Lake(s3, "lake", f"raw-{uuid.uuid4().hex[:8]}"))
    reads_only_what_changed(LocalLake(tmp_path / "local"), versioned=False)


@pytest.mark.parametrize("store", STORES)
def test_duckdb_reads_the_lake_through_its_registered_filesystem(store: str, servers: dict[str, Any]) -> None:
    """The loader reads a GCS / Azure lake where it lies (the store's fsspec filesystem registered on
    the DuckDB connection for the load, then unregistered), never as a glob: windows named ``a*``,
    ``a[1]`` and ``ab`` each load their own rows once."""
    lake = resource(lake_fields(store, servers)).store()
    assert isinstance(lake, FsspecLake)
    spec = StreamSpec(source="s", name="events", write_disposition="append")
    schema = pa.schema([("id", pa.int64()), ("window", pa.string())])
    for window, ids in (("a*", range(0, 5)), ("ab", range(5, 12)), ("a[1]", range(12, 14))):
        rows = pa.record_batch([pa.array(list(ids), pa.int64()), pa.array([window] * len(ids))], schema=schema)
        land(lake, spec, window, [rows], schema, full=False)
    with duckdb.connect() as conn, ExitStack() as stack:
        manifests = pending(conn, lake, spec)
        paths = duckdb_paths(stack, conn, lake, manifests)
        remote = {key.split("/")[2] for key, path in paths.items() if path.startswith(f"{lake.protocols[0]}://")}
        assert remote == {"ab"}  # a window with a glob character is read from a local copy
        assert set(conn.list_filesystems()) & set(lake.protocols)
        stack.close()
        assert not set(conn.list_filesystems()) & set(lake.protocols), "unregistered after the load"
        assert load(conn, lake, spec, manifests).table_rows == 14
        counts = conn.execute('SELECT "window", count(*), sum(id) FROM s.events GROUP BY 1 ORDER BY 1').fetchall()
        assert counts == [("a*", 5, 10), ("a[1]", 2, 25), ("ab", 7, 56)]
        assert conn.list_filesystems() == []
