"""Names from hostile servers never leave their stream's folder in the lake.

Real servers that list names no honest server sends (``../../other_source/x``, ``a/b.csv``): the sandbox's
pyftpdlib FTP server and asyncssh SFTP server, each with ``--hostile-name``. The lake is a folder and a real
S3 API (moto). Each test asserts that the name is refused with an error naming it, and that not one byte
of the lake outside the stream changed.
"""

import hashlib
import importlib.util
import os
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import boto3
import dagster as dg
import pyarrow as pa
import pytest

from integration_platform.core.lake import LakeStore, LocalLake, S3Lake
from integration_platform.core.landing import land
from integration_platform.core.names import UnsafeNameError, check_segment
from integration_platform.core.quarantine import write_quarantine
from integration_platform.core.records import Rejected
from integration_platform.core.streams import StreamSpec
from integration_platform.sources.files.ftp import FtpResource
from integration_platform.sources.files.remote_files import RemoteFileError
from integration_platform.sources.files.sftp import SftpResource
from integration_platform_tests.ftp_servers import PASSWORD_ENV, FtpServer, ftps_server
from integration_platform_tests.services import REPO, missing, moto_server
from integration_platform_tests.sftp_servers import fingerprint_of
from sandbox.harness import failure_messages, platform
from sandbox.processes import start_listening

ESCAPE = "../../../../other_source/x"
HOSTILE = (ESCAPE, "sub/evil.csv", "back\\slash.csv", "nul\x00.csv", "line\nbreak.csv")
SCHEMA = pa.schema([("id", pa.int64())])


def _snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` with the SHA-256 of its bytes."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


def _ftp(server: FtpServer) -> FtpResource:
    return FtpResource(host=server.host, port=server.port, username=server.user, password=server.password, tls=False)


@pytest.mark.parametrize("name", [n for n in HOSTILE if "\x00" not in n and "\n" not in n])
def test_ftp_listing_refuses_a_name_that_is_not_one_path_segment(tmp_path: Path, name: str) -> None:
    (tmp_path / "honest.csv").write_text("id\n1\n")
    with ftps_server(tmp_path, tls=False, hostile_names=(name,)) as server, _ftp(server).connect() as files:
        with pytest.raises(RemoteFileError) as refused:
            list(files.list(""))
    message = str(refused.value)
    assert repr(name) in message and "one plain path segment" in message
    assert f"{server.host}:{server.port}" in message


@pytest.fixture
def hostile_sftp(tmp_path: Path) -> Iterator[tuple[SftpResource, Path]]:
    """The sandbox asyncssh server over ``tmp_path/root`` listing every :data:`HOSTILE` name in each directory."""
    if importlib.util.find_spec("asyncssh") is None:
        missing("asyncssh (the sandbox extra)")
    root = tmp_path / "root"
    (root / "drop").mkdir(parents=True)
    (root / "drop" / "honest.csv").write_text("id\n1\n")
    args = [str(REPO / "sandbox" / "sftp" / "server.py"), "--root", str(root), "--port", "0", "--user", "partner",
            "--host-key", str(tmp_path / "host_key"), "--password-env", "IP_TEST_SFTP_PW"]  # fmt: skip
    for name in HOSTILE:
        if "\x00" not in name:  # a command line cannot carry a NUL
            args += ["--hostile-name", name]
    with ExitStack() as stack:
        _, url = start_listening(stack, args, "hostile SFTP server", {**os.environ, "IP_TEST_SFTP_PW": "pw"})
        fingerprint = fingerprint_of((tmp_path / "host_key.pub").read_text())
        port = int(url.rsplit(":", 1)[1])
        yield (
            SftpResource(
                host="127.0.0.1", port=port, username="partner", password="pw", host_key_fingerprint=fingerprint
            ),
            root,
        )


def test_sftp_listing_refuses_names_that_are_not_one_path_segment(hostile_sftp: tuple[SftpResource, Path]) -> None:
    resource, _ = hostile_sftp
    with resource.connect() as files, pytest.raises(RemoteFileError) as refused:
        list(files.list("/drop"))
    message = str(refused.value)
    assert repr(ESCAPE) in message and "one plain path segment" in message
    assert f"sftp://127.0.0.1:{resource.port}/drop" in message


def _file_source(source: str, stream: str, server: FtpServer) -> str:
    return f"""
type: integration_platform.components.FileSource
attributes:
  source: {source}
  connection: {{protocol: ftp, host: {server.host}, port: {server.port}, username: {server.user},
                password_env: {PASSWORD_ENV}, tls: false}}
  streams:
    - name: {stream}
      directory: "."
      glob: "*"
      partition: {{type: per_file}}
"""


def test_a_hostile_ftp_listing_changes_nothing_in_the_lake(
    tmp_path: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The probe that once deleted another source's lake data: a per-file stream over a server listing
    ``../../../../other_source/x``. Now the sensor and the run fail naming the name; the lake is untouched."""
    drops = tmp_path / "drops"
    drops.mkdir()
    (drops / "x").write_text("id,amount\n1,2.5\n2,3.5\n")
    # the victim: another source whose stream folder the hostile name points at, landed for real
    with ftps_server(drops, tls=False) as honest:
        monkeypatch.setenv(PASSWORD_ENV, honest.password)
        victim = platform(_file_source("other_source", "x", honest), tmp_path, instance)
        instance.add_dynamic_partitions("other_source__x__files", ["x"])
        assert victim.materialize([dg.AssetKey(["other_source", "x"])], partition_key="x").success
    lake = tmp_path / "lake"
    before = _snapshot(lake)
    assert any(k.startswith("other_source/x/") and k.endswith(".parquet") for k in before)

    with ftps_server(drops, tls=False, hostile_names=(ESCAPE,)) as hostile:
        monkeypatch.setenv(PASSWORD_ENV, hostile.password)
        attacker = platform(_file_source("partner", "orders", hostile), tmp_path, instance)
        sensor = next(s for s in attacker.defs.sensors or [] if s.name == "partner_orders_drops")
        with (
            dg.build_sensor_context(
                definitions=attacker.defs, resources=dict(attacker.defs.resources or {}), instance=instance
            ) as context,
            pytest.raises(Exception) as tick,
        ):
            sensor.evaluate_tick(context)
        assert repr(ESCAPE) in str(tick.value) and "one plain path segment" in str(tick.value)
        # a person adding the partition by hand gets the same refusal from the run
        instance.add_dynamic_partitions("partner__orders__files", [ESCAPE])
        result = attacker.materialize([dg.AssetKey(["partner", "orders"])], partition_key=ESCAPE, raise_on_error=False)
    assert not result.success
    assert any(repr(ESCAPE) in m for m in failure_messages(result)), failure_messages(result)
    assert _snapshot(lake) == before, "the lake changed"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LakeStore]:
    """A lake with another stream's files in it, on disk or on S3."""
    spec = StreamSpec(source="other_source", name="x", write_disposition="replace")
    if request.param == "local":
        lake: LakeStore = LocalLake(tmp_path / "lake")
    else:
        endpoint = request.getfixturevalue("s3_endpoint")
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                              aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip
        bucket = f"lake-{os.getpid()}-{abs(hash(str(tmp_path))) % 10**8}"
        client.create_bucket(Bucket=bucket)
        lake = S3Lake(client, bucket, "raw")
    land(lake, spec, "snapshot", iter([pa.record_batch([pa.array([1, 2])], schema=SCHEMA)]), SCHEMA, full=True)
    yield lake


def _contents(lake: LakeStore) -> dict[str, bytes]:
    out = {}
    for key in lake.list_keys(""):
        with lake.local_copy(key) as path:
            out[key] = path.read_bytes()
    return out


@pytest.mark.parametrize(
    "window",
    ["partition=../../../../other_source/x", "../other_source", "..", ".", "", "a/b", "a\\b", "x\x00y", "x\ny",
     "partition=" + "z" * 300],
)  # fmt: skip
def test_landing_refuses_a_window_outside_its_stream_and_deletes_nothing(store: LakeStore, window: str) -> None:
    lake = store
    before = _contents(lake)
    spec = StreamSpec(source="partner", name="orders", write_disposition="append")
    batches = iter([pa.record_batch([pa.array([7])], schema=SCHEMA)])
    with pytest.raises(UnsafeNameError, match="window of lake stream partner/orders"):
        land(lake, spec, window, batches, SCHEMA, full=False, partition=window)
    with pytest.raises(UnsafeNameError):
        write_quarantine(lake, spec, window, [Rejected("origin", "reason", {"id": 1})], "run")
    with pytest.raises(UnsafeNameError):
        write_quarantine(lake, spec, window, [], "run")  # the delete of an empty quarantine too
    assert _contents(lake) == before


def test_stores_refuse_keys_with_dot_segments(store: LakeStore) -> None:
    lake = store
    before = _contents(lake)
    for key in ("partner/../other_source/x/_manifests/snapshot.json", "../outside.json", "a//b.json"):
        with pytest.raises(UnsafeNameError):
            lake.delete([key])
        with pytest.raises(UnsafeNameError):
            lake.put_json(key, {"evil": True})
    assert _contents(lake) == before


def test_check_segment_accepts_the_names_real_drops_have() -> None:
    for name in ("dpc-covid19-ita-regioni-20210105.csv", "Report 2021 (final).xlsx", "données_été.csv", "a..b.csv"):
        assert check_segment(name, "file name") == name


@pytest.mark.parametrize(("source", "stream"), [("a__b", "c"), ("shop_", "x"), ("_shop", "x")])
def test_a_source_name_whose_joined_names_meet_another_sources_is_refused(source: str, stream: str) -> None:
    """Dagster's op of a stream is ``<source>__<stream>`` (a per-file stream's partitions
    ``<source>__<stream>__files``): ``a__b``'s stream ``c`` was the op of ``a``'s stream ``b__c``,
    ``shop_``'s ``x`` that of ``shop``'s ``_x``, and a code location holding both failed to load naming
    neither (``node ... does not have output``). Source names are words joined by single underscores."""
    with pytest.raises(ValueError, match=rf"source name '{source}' must be lowercase letters and digits in words"):
        StreamSpec(source, stream, "append")
    StreamSpec("a", f"b__{stream}", "append")  # a stream's name may hold '__': the source's may not
