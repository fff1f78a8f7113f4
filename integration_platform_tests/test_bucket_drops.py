"""File drops in a bucket: S3 (moto), Google Cloud Storage (fake-gcs-server), Azure Blob (Azurite).

Real servers on loopback, real daily CSV drops of the Italian Civil Protection: the drop sensor
requests each object once, the partitions land and reconcile with the files, a re-published object
lands again, a half-uploaded one is never seen, and landed objects are archived.
"""

import csv
import http.server
import io
import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any, ClassVar

import boto3
import dagster as dg
import pytest

from integration_platform.sources.files.bucket_files import BucketResource
from integration_platform.sources.files.remote_files import RemoteFileError
from integration_platform_tests.services import missing, shared_file
from sandbox import ServerMissing
from sandbox.harness import Platform, platform
from sandbox.object_stores import azurite, fake_gcs_server, moto_s3

LAKE = dg.AssetKey(["covid", "regions"])
WAREHOUSE = dg.AssetKey(["warehouse", "covid.regions"])
DAYS = ["2021-01-14", "2021-01-15", "2021-01-16"]  # 24 columns, then 30
STORES = ["s3", "gcs", "azure"]


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, Any]]:
    """The three object-store servers, once for the module; a server that is not installed is
    its :class:`ServerMissing`, and the tests of that store skip (:func:`new_bucket`)."""
    starts = {"s3": moto_s3, "gcs": fake_gcs_server, "azure": lambda s: azurite(s).connection_string}
    with ExitStack() as stack:
        started: dict[str, Any] = {}
        for store, start in starts.items():
            try:
                started[store] = start(stack)
            except ServerMissing as exc:
                started[store] = exc
        yield started


def connection_yaml(store: str, bucket: str, servers: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> str:
    """The ``connection:`` block of a FileSource on ``bucket`` of ``store`` (secrets by env var)."""
    if store == "s3":
        monkeypatch.setenv("IP_TEST_S3_KEY", "testing")
        monkeypatch.setenv("IP_TEST_S3_SECRET", "testing")
        return (
            f"protocol: s3\n    bucket: {bucket}\n    endpoint_url: {servers['s3']}\n    region: us-east-1\n"
            "    access_key_id_env: IP_TEST_S3_KEY\n    secret_access_key_env: IP_TEST_S3_SECRET"
        )
    if store == "gcs":
        monkeypatch.setenv("IP_TEST_GCS_TOKEN", "anon")
        endpoint = servers["gcs"]
        token = "gcs_token_env: IP_TEST_GCS_TOKEN"
        return f"protocol: gcs\n    bucket: {bucket}\n    endpoint_url: {endpoint}\n    {token}"
    monkeypatch.setenv("IP_TEST_AZURE_CONNECTION", servers["azure"])
    return f"protocol: azure\n    bucket: {bucket}\n    connection_string_env: IP_TEST_AZURE_CONNECTION"


def source_yaml(connection: str) -> str:
    return f"""
type: integration_platform.components.FileSource
attributes:
  source: covid
  connection:
    {connection}
  streams:
    - name: regions
      directory: incoming/regions
      glob: "dpc-covid19-ita-regioni-*.csv"
      partition: {{type: daily, start: "2020-02-24"}}
      primary_key: [data, codice_regione]
      archive_directory: archive/regions
"""


def bucket_resource(p: Platform) -> BucketResource:
    resources = dict(p.defs.resources or {})
    with dg.build_resources({"files": resources["covid_files"]}) as built:
        resource: BucketResource = built.files
    return resource


def s3_client(servers: dict[str, Any]) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=servers["s3"],
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def new_bucket(store: str, servers: dict[str, Any]) -> str:
    if isinstance(servers[store], ServerMissing):
        missing(str(servers[store]))
    bucket = f"drops-{uuid.uuid4().hex[:10]}"
    if store == "s3":
        s3_client(servers).create_bucket(Bucket=bucket)
    return bucket


def file_name(day: str) -> str:
    return f"dpc-covid19-ita-regioni-{day.replace('-', '')}.csv"


def sensor_tick(p: Platform, cursor: str | None) -> tuple[list[dg.RunRequest], str | None]:
    sensor = next(s for s in p.defs.sensors or [] if s.name == "covid_regions_drops")
    with (
        dg.partition_loading_context(dynamic_partitions_store=p.instance),  # as the sensor daemon sets it
        dg.build_sensor_context(
            cursor=cursor, definitions=p.defs, resources=dict(p.defs.resources or {}), instance=p.instance
        ) as context,
    ):
        result = sensor.evaluate_tick(context)
    return list(result.run_requests or []), result.cursor


def half_upload(store: str, fs: Any, bucket: str, key: str, servers: dict[str, Any]) -> Any:
    """Begin an upload of ``key`` and do not complete it (a multipart upload, a resumable session,
    an uncommitted block); returns what must stay referenced while it is pending (the GCS file
    handle: closing it would complete the upload)."""
    if store == "s3":
        client = s3_client(servers)
        upload = client.create_multipart_upload(Bucket=bucket, Key=key)
        client.upload_part(Bucket=bucket, Key=key, UploadId=upload["UploadId"], PartNumber=1, Body=b"data,x\n" * 10)
    elif store == "gcs":
        handle = fs.open(f"{bucket}/{key}", "wb", block_size=256 * 1024)
        handle.write(b"data,x\n" * 60_000)  # > one block: the resumable session is opened and a chunk sent
        handle.flush()
        assert handle.location, "the resumable upload session is open"
        return handle
    else:
        from azure.storage.blob import BlobServiceClient

        blob = BlobServiceClient.from_connection_string(servers["azure"]).get_blob_client(bucket, key)
        blob.stage_block("YmxvY2stMQ==", b"data,x\n" * 10)  # staged, no block list committed
    return None


@pytest.mark.parametrize("store", STORES)
def test_the_sensor_lands_each_object_once_and_a_republished_one_again(
    store: str, servers: dict[str, Any], tmp_path: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    drops = shared_file("dpc-covid19-ita-regioni-daily", "dati-regioni")
    bucket = new_bucket(store, servers)
    p = platform(source_yaml(connection_yaml(store, bucket, servers, monkeypatch)), tmp_path, instance)
    resource = bucket_resource(p)
    with resource.connect() as files:
        fs = files.fs
        if store != "s3":
            fs.mkdir(bucket)
        for day in DAYS:
            fs.pipe_file(f"{bucket}/incoming/regions/{file_name(day)}", (drops / file_name(day)).read_bytes())
        fs.pipe_file(f"{bucket}/incoming/regions/older/{file_name('2020-03-01')}", b"not,listed\n")  # deeper
        pending = half_upload(store, fs, bucket, f"incoming/regions/{file_name('2021-01-17')}", servers)
        listed = sorted(f.name for f in files.list("incoming/regions"))
    assert listed == [file_name(d) for d in DAYS], "neither a deeper object nor a half-uploaded one is listed"

    first, cursor = sensor_tick(p, None)
    second, cursor = sensor_tick(p, cursor)
    third, cursor = sensor_tick(p, cursor)
    assert first == [] and third == []
    assert sorted(r.partition_key or "" for r in second) == DAYS, "each stable object requested once"
    if pending is not None:
        pending.discard()  # the GCS session ends without an object
    for request in second:
        assert p.materialize([LAKE, WAREHOUSE], partition_key=request.partition_key).success

    expected: dict[str, int] = {}
    for day in DAYS:
        for row in csv.DictReader(io.StringIO((drops / file_name(day)).read_text(encoding="utf-8"))):
            expected[row["denominazione_regione"]] = expected.get(row["denominazione_regione"], 0) + int(
                row["totale_casi"]
            )
    assert dict(p.query("SELECT denominazione_regione, sum(totale_casi) FROM covid.regions GROUP BY ALL")) == expected
    assert p.query("SELECT count(*) FROM covid.regions WHERE codice_regione = '01'")[0][0] == 3
    with resource.connect() as files:
        archived = sorted(f.name for f in files.list("archive/regions"))  # <stem>.<mtime>-<size>B[-<tag>].csv
        assert [n.split(".")[0] for n in archived] == [file_name(d).removesuffix(".csv") for d in DAYS], archived
        assert list(files.list("incoming/regions")) == [], "landed objects were archived"

        # The partner re-publishes one day with 10 regions only.
        lines = (drops / file_name(DAYS[1])).read_text(encoding="utf-8").splitlines()
        files.fs.pipe_file(f"{bucket}/incoming/regions/{file_name(DAYS[1])}", ("\n".join(lines[:11]) + "\n").encode())
    seen, cursor = sensor_tick(p, cursor)
    again, cursor = sensor_tick(p, cursor)
    assert seen == [] and [r.partition_key for r in again] == [DAYS[1]]
    assert p.materialize([LAKE, WAREHOUSE], partition_key=DAYS[1]).success
    assert p.query(f"SELECT count(*) FROM covid.regions WHERE CAST(data AS DATE) = DATE '{DAYS[1]}'")[0][0] == 10
    assert p.query("SELECT count(*) FROM covid.regions")[0][0] == 52
    with resource.connect() as files:  # the re-sent object archived next to the first, not over it
        archived = sorted(f.name for f in files.list("archive/regions"))
        assert [n.split(".")[0] for n in archived].count(file_name(DAYS[1]).removesuffix(".csv")) == 2, archived
        assert list(files.list("incoming/regions")) == []


@pytest.mark.parametrize("store", STORES)
def test_per_file_partitions_wait_for_their_marker_object(
    store: str, servers: dict[str, Any], tmp_path: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``partition: per_file`` with ``marker_suffix: .done``: an object is requested once its
    ``<name>.done`` object exists (the marker says it is complete), never before and never twice,
    each as its own dynamic partition, and lands its own rows."""
    drops = shared_file("dpc-covid19-ita-regioni-daily", "dati-regioni")
    bucket = new_bucket(store, servers)
    yaml = source_yaml(connection_yaml(store, bucket, servers, monkeypatch)).replace(
        'partition: {type: daily, start: "2020-02-24"}', "partition: {type: per_file}\n      marker_suffix: .done"
    )
    p = platform(yaml, tmp_path, instance)
    # The sensor asks for each file's partition with its run request; the daemon adds it first, a
    # sensor evaluated by hand checks the request against the partitions that exist already.
    instance.add_dynamic_partitions("covid__regions__files", [file_name(d) for d in DAYS[:2]])
    with bucket_resource(p).connect() as files:
        if store != "s3":
            files.fs.mkdir(bucket)
        for day in DAYS[:2]:
            files.fs.pipe_file(f"{bucket}/incoming/regions/{file_name(day)}", (drops / file_name(day)).read_bytes())
        files.fs.pipe_file(f"{bucket}/incoming/regions/{file_name(DAYS[0])}.done", b"")
        first, cursor = sensor_tick(p, None)
        second, cursor = sensor_tick(p, cursor)
        files.fs.pipe_file(f"{bucket}/incoming/regions/{file_name(DAYS[1])}.done", b"")
        third, cursor = sensor_tick(p, cursor)
        fourth, cursor = sensor_tick(p, cursor)
    assert [r.partition_key for r in first] == [file_name(DAYS[0])], "only the object with its marker"
    assert second == [] and fourth == []
    assert [r.partition_key for r in third] == [file_name(DAYS[1])]
    for request in first + third:
        assert p.materialize([LAKE, WAREHOUSE], partition_key=request.partition_key).success
    rows = sum(len((drops / file_name(d)).read_text(encoding="utf-8").splitlines()) - 1 for d in DAYS[:2])
    assert p.query("SELECT count(*) FROM covid.regions")[0][0] == rows


@pytest.mark.parametrize("store", ["gcs", "azure"])
def test_an_object_republished_with_the_same_size_in_the_same_second_is_a_new_version(
    store: str, servers: dict[str, Any], tmp_path: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = new_bucket(store, servers)
    p = platform(source_yaml(connection_yaml(store, bucket, servers, monkeypatch)), tmp_path, instance)
    with bucket_resource(p).connect() as files:
        files.fs.mkdir(bucket)
        path = f"{bucket}/incoming/regions/{file_name(DAYS[0])}"
        files.fs.pipe_file(path, b"data,x\n2021-01-14,1\n")
        (before,) = files.list("incoming/regions")
        files.fs.pipe_file(path, b"data,x\n2021-01-14,2\n")
        (after,) = files.list("incoming/regions")
    assert before.size == after.size and before.tag and after.tag and before.tag != after.tag


@pytest.mark.parametrize("store", STORES)
def test_names_with_glob_characters_and_folder_markers_are_plain_names(
    store: str, servers: dict[str, Any], tmp_path: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``a?.csv`` archives itself only (fsspec's mv and rm would expand it as a glob); a zero-byte
    ``<prefix>/`` folder marker (Hadoop and Spark write them) hides nothing; on Azure a name adlfs
    would read as a blob version is refused."""
    bucket = new_bucket(store, servers)
    p = platform(source_yaml(connection_yaml(store, bucket, servers, monkeypatch)), tmp_path, instance)
    with bucket_resource(p).connect() as files:
        if store != "s3":
            files.fs.mkdir(bucket)
        for name in ("a?.csv", "ab.csv", "*.csv"):
            files.fs.pipe_file(f"{bucket}/in/{name}", name.encode())
        if store != "s3":  # pyarrow's S3 filesystem refuses a key ending in "/"
            files.fs.pipe_file(f"{bucket}/in/", b"")
        assert sorted(f.name for f in files.list("in")) == ["*.csv", "a?.csv", "ab.csv"]
        files.rename("in/a?.csv", "archive/a?.csv")
        files.rename("in/*.csv", "archive/*.csv")
        assert [f.name for f in files.list("in")] == ["ab.csv"]
        assert sorted(f.name for f in files.list("archive")) == ["*.csv", "a?.csv"]
        if store == "azure":  # written by Azure's own SDK: adlfs itself would write "in/b.csv"
            from azure.storage.blob import BlobServiceClient

            service = BlobServiceClient.from_connection_string(servers["azure"])
            service.get_blob_client(bucket, "in/b.csv?versionid=1").upload_blob(b"x")
            with pytest.raises(ValueError, match="versionid"):
                list(files.list("in"))


@pytest.mark.parametrize("store", STORES)
def test_a_bucket_that_does_not_exist_fails_the_listing_and_an_empty_prefix_lists_nothing(
    store: str, servers: dict[str, Any], tmp_path: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fsspec's find drops a failed listing (``on_error="omit"``): a misspelled bucket read as an
    empty drop, the run "succeeded" landing nothing and the sensor saw 0 files. A prefix with no
    object (never written, or emptied by archiving) is an empty listing."""
    bucket = new_bucket(store, servers)
    p = platform(source_yaml(connection_yaml(store, bucket, servers, monkeypatch)), tmp_path, instance)
    with bucket_resource(p).connect() as files:
        if store != "s3":
            files.fs.mkdir(bucket)
        files.fs.pipe_file(f"{bucket}/incoming/other/x.csv", b"x\n")
        assert list(files.list("incoming/regions")) == []
        assert list(files.list("never/written")) == []
    missing_bucket = f"{bucket}-typo"
    p = platform(source_yaml(connection_yaml(store, missing_bucket, servers, monkeypatch)), tmp_path / "2", instance)
    with bucket_resource(p).connect() as files, pytest.raises(RemoteFileError) as failed:
        list(files.list("incoming/regions"))
    assert missing_bucket in str(failed.value) and "incoming/regions" in str(failed.value)
    result = p.materialize([LAKE, WAREHOUSE], partition_key=DAYS[0], raise_on_error=False)
    assert not result.success, "a run on a missing bucket fails rather than landing nothing"


class _Denied(http.server.BaseHTTPRequestHandler):
    """An S3 endpoint that refuses every request with 403 AccessDenied."""

    def _deny(self) -> None:
        body = b"<?xml version='1.0'?><Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"
        self.send_response(403)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = do_PUT = do_POST = _deny

    def log_message(self, *args: Any) -> None:
        pass


def test_access_denied_fails_the_listing_naming_the_bucket_and_the_cause() -> None:
    """A 403 on the listing read as an empty prefix (fsspec's walk dropped it)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Denied)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        resource = BucketResource(
            store="s3", bucket="drops", endpoint_url=f"http://127.0.0.1:{server.server_port}",
            access_key_id="a", secret_access_key="b",
        )  # fmt: skip
        with resource.connect() as files, pytest.raises(RemoteFileError) as failed:
            list(files.list("incoming"))
    finally:
        server.shutdown()
        server.server_close()
    message = str(failed.value)
    assert "s3://drops" in message and "'incoming'" in message and "ACCESS_DENIED" in message.upper(), message
    assert "b" not in message.split("failed:")[0].replace("s3://drops", ""), "no secret"


class _Partner(http.server.BaseHTTPRequestHandler):
    """A partner's storage endpoint that records each request's ``Authorization`` and session-token headers
    and lists nothing; ``POST /token`` is an OAuth2 token endpoint handing out the deployment's token."""

    seen: ClassVar[list[str | None]] = []

    def do_GET(self) -> None:
        _Partner.seen += [self.headers.get("Authorization"), self.headers.get("X-Amz-Security-Token")]
        body = b'{"kind": "storage#objects"}' if self.path.startswith("/storage/") else b""
        self.send_response(200 if body else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_HEAD = do_GET

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b'{"access_token": "ya29.DEPLOYMENT-TOKEN", "expires_in": 3600, "token_type": "Bearer"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.parametrize("store", ["s3", "gcs"])
def test_a_bucket_at_another_endpoint_never_gets_the_deployments_own_credentials(
    store: str, tmp_path: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A drop bucket with ``endpoint_url`` (a partner's server) and no credentials of its own in the YAML
    was read with the default chains': S3 requests signed with the deployment's AWS key id and session
    token, and GCS requests carrying the bearer token of ``GOOGLE_APPLICATION_CREDENTIALS`` (the lake's),
    which that endpoint could replay against Google. It is read anonymously."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Partner)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_port}"
    _Partner.seen = []
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIADEPLOYMENTLAKE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "deployment-secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "deployment-session-token")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    account = {
        "type": "service_account", "project_id": "lake", "private_key_id": "1", "private_key": key.decode(),
        "client_email": "lake@lake.iam.gserviceaccount.com", "client_id": "1", "token_uri": f"{endpoint}/token",
    }  # fmt: skip
    (tmp_path / "lake-account.json").write_text(json.dumps(account))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "lake-account.json"))
    connection = f"protocol: {store}\n    bucket: drops\n    endpoint_url: {endpoint}"
    try:
        with bucket_resource(platform(source_yaml(connection), tmp_path, instance)).connect() as files:
            try:
                list(files.list("incoming/regions"))
            except RemoteFileError:
                pass  # the partner's answer does not matter: what was sent does
    finally:
        server.shutdown()
        server.server_close()
    assert _Partner.seen, "the endpoint was asked"
    assert not any(_Partner.seen), _Partner.seen


@pytest.mark.parametrize(
    ("endpoint", "default_credentials", "anonymous"),
    [
        ("https://bucket.vpce-0a1b.s3.us-east-1.vpce.amazonaws.com", True, False),  # said to be AWS's own
        ("https://s3-fips.us-east-1.amazonaws.com", True, False),
        ("https://s3-1234567890.us-east-1.elb.amazonaws.com", False, True),  # a customer's load balancer
        ("http://127.0.0.1:9000@s3.amazonaws.com", False, True),  # pyarrow connects to 127.0.0.1:9000
        ("http://127.0.0.1:9000", False, True),  # a partner's MinIO
    ],
)
def test_default_credentials_go_to_an_endpoint_only_when_the_yaml_says_it_is_the_clouds(
    endpoint: str, default_credentials: bool, anonymous: bool, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """An endpoint AWS itself runs (a VPC interface endpoint, FIPS) takes the instance profile only with
    ``default_credentials: true``: a host name cannot tell, as customers run hosts under ``amazonaws.com``
    (a load balancer named s3, API Gateway, another account's PrivateLink service), and a URL's userinfo
    made a check of the host name pass while pyarrow connected elsewhere."""
    flag = "\n    default_credentials: true" if default_credentials else ""
    connection = f"protocol: s3\n    bucket: drops\n    endpoint_url: '{endpoint}'{flag}"
    resource = bucket_resource(platform(source_yaml(connection), tmp_path, instance))
    assert resource._s3().fs.__reduce__()[1][0]["anonymous"] is anonymous


def test_default_credentials_are_refused_for_a_protocol_that_does_not_read_them() -> None:
    from integration_platform.sources.files.component import FileConnection

    with pytest.raises(ValueError, match="azure does not read default_credentials"):
        FileConnection(protocol="azure", bucket="drops", account_name="a", default_credentials=True)


def test_a_column_whose_header_changes_case_stays_one_column(
    servers: dict[str, Any], tmp_path: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Day 1's drop says ``Totale``, day 2's ``totale`` (and a decimal): one column, as the README says of
    names that differ only in case, widened to a double. Before, the conforming of day 2 took ``totale``
    for a new column, the landing held both, and DuckDB (whose names have no case) loaded day 2's values
    into a column it named ``totale_1``, with day 1's column empty for that day."""
    bucket = new_bucket("s3", servers)
    p = platform(source_yaml(connection_yaml("s3", bucket, servers, monkeypatch)), tmp_path, instance)
    with bucket_resource(p).connect() as files:
        for day, body in [(DAYS[0], b"Totale\n2021-01-14,01,10\n"), (DAYS[1], b"totale\n2021-01-15,01,2.75\n")]:
            files.fs.pipe_file(f"{bucket}/incoming/regions/{file_name(day)}", b"data,codice_regione," + body)
    for day in DAYS[:2]:
        assert p.materialize([LAKE, WAREHOUSE], partition_key=day).success
    columns = [name for name, *_ in p.query("DESCRIBE covid.regions")]
    assert [c for c in columns if c.lower().startswith("totale")] == ["Totale"], columns
    assert p.query("SELECT CAST(data AS VARCHAR), Totale FROM covid.regions ORDER BY 1") == [
        ("2021-01-14", 10.0),
        ("2021-01-15", 2.75),
    ]
