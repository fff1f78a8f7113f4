"""SftpResource against a real OpenSSH sshd on 127.0.0.1 serving real partner drops (DPC COVID-19 daily CSVs)."""

import importlib.util
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from integration_platform.core.streams import StreamSpec
from integration_platform.sources.files.drops import DropRules
from integration_platform.sources.files.extract import READ_AHEAD_FILES, FileStreamPlan, _ReadAhead
from integration_platform.sources.files.formats import FileFormat
from integration_platform.sources.files.remote_files import (
    Download,
    HostKeyError,
    MissingDirectoryError,
    RemoteFile,
    RemoteFileError,
    download_all,
)
from integration_platform.sources.files.sftp import SftpResource
from integration_platform_tests.services import REPO, missing, shared_file
from integration_platform_tests.sftp_servers import SshServer, fingerprint_of, openssh_server
from sandbox.processes import stop

SANDBOX_SFTP = REPO / "sandbox" / "sftp" / "server.py"
#: A spread of the daily drops: first day, the last 24-column file, the first 30-column one, the last day.
DROPS = (
    "dpc-covid19-ita-regioni-20200224.csv",
    "dpc-covid19-ita-regioni-20210114.csv",
    "dpc-covid19-ita-regioni-20210115.csv",
    "dpc-covid19-ita-regioni-20250108.csv",
)


@pytest.fixture(scope="module")
def drop_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``<tmp>/root/drop`` with the DROPS (mtimes kept), a subdirectory and a symlink; returns ``<tmp>/root``."""
    source = shared_file("dpc-covid19-ita-regioni-daily", "dati-regioni")
    root = tmp_path_factory.mktemp("sftp") / "root"
    drop = root / "drop"
    (drop / "older").mkdir(parents=True)
    for name in DROPS:
        shutil.copy2(source / name, drop / name)
    shutil.copy2(source / "dpc-covid19-ita-regioni-20200301.csv", drop / "older" / "nested.csv")
    (drop / "latest.csv").symlink_to(drop / DROPS[-1])
    return root


@pytest.fixture(scope="module")
def server(drop_root: Path) -> Iterator[SshServer]:
    with openssh_server(drop_root) as running:
        yield running


def resource(server: SshServer, **overrides: object) -> SftpResource:
    settings: dict[str, object] = {
        "host": server.host,
        "port": server.port,
        "username": server.username,
        "private_key": server.private_key_pem,
        "known_hosts": str(server.known_hosts),
        "connect_timeout": 5.0,
        "timeout": 10.0,
    }
    settings.update(overrides)
    return SftpResource(**settings)  # type: ignore[arg-type]


def test_list_shows_regular_files_with_sizes_and_mtimes(server: SshServer, drop_root: Path) -> None:
    drop = drop_root / "drop"
    with resource(server).connect() as files:
        listed = {f.name: f for f in files.list(str(drop))}
    assert sorted(listed) == sorted(DROPS)  # not the subdirectory, not the symlink
    for name, remote in listed.items():
        local = os.stat(drop / name)
        assert remote.path == f"{drop}/{name}"
        assert remote.size == local.st_size
        assert remote.mtime == int(local.st_mtime)  # SFTP v3 carries whole seconds


def test_download_is_byte_identical(server: SshServer, drop_root: Path, tmp_path: Path) -> None:
    drop = drop_root / "drop"
    with resource(server).connect() as files:
        paths = [f"{drop}/{name}" for name in DROPS]
        for remote, local in download_all(files, paths, tmp_path):
            assert local.read_bytes() == Path(remote).read_bytes()
        assert files.download(paths[0], tmp_path / "again.csv") == (drop / DROPS[0]).stat().st_size


def test_download_pipelines_large_files_and_survives_short_replies(
    server: SshServer, drop_root: Path, tmp_path: Path
) -> None:
    big = drop_root / "big.bin"
    big.write_bytes(os.urandom(3_000_017))
    try:
        # odd request size, few requests in flight: many rounds, a last partial request
        with resource(server, request_size=100_003, max_concurrent_requests=3).connect() as files:
            assert files.download(str(big), tmp_path / "a.bin") == big.stat().st_size
        assert (tmp_path / "a.bin").read_bytes() == big.read_bytes()
        # asking for more than OpenSSH answers (255 KiB per read): every reply is short, the rest is re-asked
        with resource(server).connect() as files:
            files._read_size = 1 << 20
            assert files.download(str(big), tmp_path / "b.bin") == big.stat().st_size
        assert (tmp_path / "b.bin").read_bytes() == big.read_bytes()
    finally:
        big.unlink()


def test_download_shorter_than_reported_size_fails(server: SshServer, drop_root: Path, tmp_path: Path) -> None:
    """A file whose reads end before the size its fstat reported (a file that shrank after it was opened)
    fails naming the path. Real and deterministic: sysfs reports 4,096 bytes for a file of a few bytes,
    and the test sshd serves the whole file system by absolute path."""
    path = "/sys/devices/system/cpu/online"
    assert Path(path).stat().st_size > len(Path(path).read_bytes()), "sysfs no longer reports 4096 bytes"
    with resource(server).connect() as files, pytest.raises(RemoteFileError, match="download ended after") as error:
        files.download(path, tmp_path / "short.csv")
    assert path in str(error.value)
    # one file of several: those before it are yielded, it fails, and the session stays usable
    with resource(server).connect() as files:
        listed = {f.name: f for f in files.list(f"{drop_root}/drop")}
        first = listed[DROPS[0]]
        todo: queue.SimpleQueue[Download | None] = queue.SimpleQueue()
        for item in [Download(first.path, tmp_path / "1.csv", first.size), Download(path, tmp_path / "2"), None]:
            todo.put(item)
        done = []
        with pytest.raises(RemoteFileError, match=f"{path}: download ended after"):
            for download, size in files.download_many(todo):
                done.append((download.path, size))
        assert done == [(first.path, first.size)]
        assert not (tmp_path / "2").exists(), "the short copy is removed"
        assert files.download(first.path, tmp_path / "again.csv") == first.size


def _open_drop_files(drop_root: Path) -> list[str]:
    """The files under ``drop_root`` that any process holds open (read from /proc: the sshd session's
    sftp server is the only one that opens them)."""
    held = []
    for fds in Path("/proc").glob("[0-9]*/fd"):
        with suppress(OSError):
            for fd in fds.iterdir():
                with suppress(OSError):
                    if os.readlink(fd).startswith(f"{drop_root}/"):
                        held.append(os.readlink(fd))
    return held


def test_a_failed_file_closes_the_others_in_flight(server: SshServer, drop_root: Path, tmp_path: Path) -> None:
    """The first of several files in flight is missing: its error is raised, nothing is yielded, and the
    server holds no handle of the files opened after it (their closes were sent and answered first)."""
    with resource(server).connect() as files:
        listed = sorted((f for f in files.list(f"{drop_root}/drop")), key=lambda f: f.name)
        todo: queue.SimpleQueue[Download | None] = queue.SimpleQueue()
        todo.put(Download(f"{drop_root}/drop/vanished.csv", tmp_path / "0.csv"))
        for number, file in enumerate(listed, start=1):
            todo.put(Download(file.path, tmp_path / f"{number}.csv", file.size))
        todo.put(None)
        with pytest.raises(RemoteFileError, match=r"vanished\.csv: open failed"):
            next(files.download_many(todo))
        assert _open_drop_files(drop_root) == []
        # closing the generator part-way closes what is in flight too
        for number, file in enumerate(listed):
            todo.put(Download(file.path, tmp_path / f"again-{number}.csv", file.size))
        todo.put(None)
        downloads = files.download_many(todo)
        assert next(downloads)[1] == listed[0].size
        downloads.close()
        assert _open_drop_files(drop_root) == []
        assert files.download(listed[0].path, tmp_path / "last.csv") == listed[0].size


def test_missing_directory_and_file_name_the_path(server: SshServer, drop_root: Path, tmp_path: Path) -> None:
    with resource(server).connect() as files:
        with pytest.raises(MissingDirectoryError) as error:  # told apart from a refused listing
            list(files.list(f"{drop_root}/no-such-dir"))
        assert f"sftp://127.0.0.1:{server.port}{drop_root}/no-such-dir" in str(error.value)
        with pytest.raises(RemoteFileError, match=r"no-such-file\.csv"):
            files.download(f"{drop_root}/drop/no-such-file.csv", tmp_path / "x.csv")
        # the session is still usable after a failed operation
        assert len(list(files.list(f"{drop_root}/drop"))) == len(DROPS)


def test_a_name_that_is_not_utf8_fails_the_listing_naming_it(server: SshServer, drop_root: Path) -> None:
    hostile = drop_root / "hostile"
    hostile.mkdir()
    (hostile / "ok.csv").write_text("a\n1\n")
    with open(os.fsencode(hostile) + b"/bad\xff.csv", "wb") as out:  # a byte name no UTF-8 decodes
        out.write(b"a\n2\n")
    with resource(server).connect() as files:
        with pytest.raises(RemoteFileError) as error:
            list(files.list(str(hostile)))
        assert str(error.value) == (
            f"sftp://127.0.0.1:{server.port}{hostile}: listing failed: the server sent text that is not UTF-8, "
            "b'bad\\xff.csv' (a file name, or the listing line of one): rename that file"
        )
        # the session is still usable
        assert len(list(files.list(f"{drop_root}/drop"))) == len(DROPS)


def test_rename_into_a_new_archive_directory(server: SshServer, drop_root: Path) -> None:
    drop = drop_root / "drop"
    name = "to-archive.csv"
    shutil.copy2(drop / DROPS[0], drop / name)
    target = f"{drop_root}/archive/2020/02/{name}"
    with resource(server).connect() as files:
        files.rename(f"{drop}/{name}", target)
        assert not (drop / name).exists()
        assert Path(target).read_bytes() == (drop / DROPS[0]).read_bytes()
        shutil.copy2(drop / DROPS[0], drop / name)  # the same name dropped again: the archive copy exists
        with pytest.raises(RemoteFileError, match="exists"):
            files.rename(f"{drop}/{name}", target)
    (drop / name).unlink()


def test_a_server_whose_sftp_subsystem_never_answers_fails_within_the_timeout(tmp_path: Path) -> None:
    """paramiko's from_transport waited for the server's VERSION with no timeout (the channel's came
    after): a server that accepted the login but never started SFTP held connect() for ever."""
    with openssh_server(tmp_path) as stalled:
        stalled.stop()
        stalled.sftp_subsystem = "/bin/sleep 30"  # accepts the subsystem request, never speaks SFTP
        stalled.start()
        failed: dict[str, BaseException] = {}

        def connect() -> None:
            try:
                with resource(stalled, connect_timeout=2.0, timeout=1.0).connect():
                    pass
            except BaseException as exc:
                failed["error"] = exc

        started = time.monotonic()
        thread = threading.Thread(target=connect, daemon=True)
        thread.start()
        thread.join(15)
        assert not thread.is_alive(), "connect() still waits for the SFTP subsystem"
    assert time.monotonic() - started < 10
    error = failed["error"]
    assert isinstance(error, RemoteFileError), error
    assert f"127.0.0.1:{stalled.port}" in str(error) and "SFTP subsystem" in str(error) and "timeout=1.0s" in str(error)


def test_a_server_that_never_answers_the_subsystem_request_fails_within_the_timeout(tmp_path: Path) -> None:
    """paramiko waits for the reply to the subsystem request with no timeout: an SSH server (paramiko's own,
    here) that takes the request and never answers held connect() for ever, past the channel's timeout."""
    import socket

    import paramiko
    from paramiko.common import AUTH_SUCCESSFUL, OPEN_SUCCEEDED

    host_key, user_key = paramiko.RSAKey.generate(2048), paramiko.RSAKey.generate(2048)
    answered = threading.Event()

    class Silent(paramiko.ServerInterface):
        def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
            return AUTH_SUCCESSFUL

        def get_allowed_auths(self, username: str) -> str:
            return "publickey"

        def check_channel_request(self, kind: str, chanid: int) -> int:
            return OPEN_SUCCEEDED

        def check_channel_subsystem_request(self, channel: paramiko.Channel, name: str) -> bool:
            answered.wait(30)  # no reply while the client waits
            return False

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        with suppress(OSError):
            conn, _ = listener.accept()
            transport = paramiko.Transport(conn)
            transport.add_server_key(host_key)
            transport.start_server(server=Silent())
            answered.wait(30)
            transport.close()

    threading.Thread(target=serve, daemon=True).start()
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_key.get_name()} {host_key.get_base64()}\n")
    key_file = tmp_path / "id_rsa"
    user_key.write_private_key_file(str(key_file))
    files = SftpResource(
        host="127.0.0.1", port=port, username="etl", private_key=key_file.read_text(),
        known_hosts=str(known_hosts), connect_timeout=2.0, timeout=1.0,
    )  # fmt: skip
    started = time.monotonic()
    try:
        with pytest.raises(RemoteFileError, match=r"cannot start the SFTP subsystem: no reply within timeout=1.0s"):
            with files.connect():
                pass
    finally:
        answered.set()
        listener.close()
    assert time.monotonic() - started < 8


def test_unknown_host_key_is_refused(server: SshServer, tmp_path: Path) -> None:
    other = tmp_path / "known_hosts"
    other.write_text(f"[127.0.0.1]:{server.port + 1} {server.host_public_key}\n")  # another server only
    with pytest.raises(HostKeyError) as error:
        with resource(server, known_hosts=str(other)).connect():
            pass
    message = str(error.value)
    assert f"127.0.0.1:{server.port}" in message and "ssh-ed25519" in message
    assert server.host_key_fingerprint in message and "not in known_hosts" in message
    assert server.private_key_pem.splitlines()[1] not in message


def test_fingerprint_pin_accepts_the_right_key_and_refuses_another(server: SshServer, drop_root: Path) -> None:
    pinned = resource(server, known_hosts=None, host_key_fingerprint=server.host_key_fingerprint)
    with pinned.connect() as files:
        assert len(list(files.list(f"{drop_root}/drop"))) == len(DROPS)
    wrong = "SHA256:" + "A" * 43
    with pytest.raises(HostKeyError) as error:
        with resource(server, known_hosts=None, host_key_fingerprint=wrong).connect():
            pass
    message = str(error.value)
    assert server.host_key_fingerprint in message and wrong in message and "ssh-ed25519" in message


def test_no_host_key_setting_is_refused(server: SshServer) -> None:
    with pytest.raises(HostKeyError, match=r"set known_hosts .* or host_key_fingerprint"):
        with resource(server, known_hosts=None).connect():
            pass


def test_private_key_formats_and_passphrase(server: SshServer, drop_root: Path) -> None:
    key = serialization.load_ssh_private_key(server.private_key_pem.encode(), None)
    pkcs8 = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()
    locked = key.private_bytes(Encoding.PEM, PrivateFormat.OpenSSH, BestAvailableEncryption(b"s3cret-phrase")).decode()
    for settings in ({"private_key": pkcs8}, {"private_key": locked, "private_key_passphrase": "s3cret-phrase"}):
        with resource(server, **settings).connect() as files:
            assert len(list(files.list(f"{drop_root}/drop"))) == len(DROPS)
    with pytest.raises(RemoteFileError, match="is encrypted; set private_key_passphrase"):
        with resource(server, private_key=locked).connect():
            pass
    with pytest.raises(RemoteFileError, match="wrong private_key_passphrase") as error:
        with resource(server, private_key=locked, private_key_passphrase="not-it").connect():
            pass
    assert "not-it" not in str(error.value)


def test_wrong_client_key_fails_without_leaking_it(server: SshServer) -> None:
    stranger = ed25519.Ed25519PrivateKey.generate()
    text = stranger.private_bytes(Encoding.PEM, PrivateFormat.OpenSSH, NoEncryption()).decode()
    with pytest.raises(RemoteFileError, match=r"authentication as .* failed") as error:
        with resource(server, private_key=text).connect():
            pass
    assert text.splitlines()[1] not in str(error.value)


def test_changed_host_key_is_refused(drop_root: Path, tmp_path: Path) -> None:
    with openssh_server(drop_root) as server:
        old_known_hosts = server.write_known_hosts(tmp_path / "known_hosts")
        old_fingerprint = server.host_key_fingerprint
        with resource(server, known_hosts=str(old_known_hosts)).connect() as files:
            assert len(list(files.list(f"{drop_root}/drop"))) == len(DROPS)
        new_fingerprint = server.replace_host_key()
        assert new_fingerprint != old_fingerprint
        with pytest.raises(HostKeyError) as error:
            with resource(server, known_hosts=str(old_known_hosts)).connect():
                pass
        message = str(error.value)
        assert "CHANGED" in message and old_fingerprint in message and new_fingerprint in message
        assert f"127.0.0.1:{server.port}" in message
        with resource(server).connect() as files:  # the new key, once in known_hosts, is accepted
            assert len(list(files.list(f"{drop_root}/drop"))) == len(DROPS)


def test_sandbox_asyncssh_server_serves_the_resource(drop_root: Path, tmp_path: Path) -> None:
    """The demo's pure-Python server (sandbox/sftp/server.py): password and key logins, chroot, rename, SIGTERM."""
    if importlib.util.find_spec("asyncssh") is None:
        missing("asyncssh (the sandbox extra)")
    client = ed25519.Ed25519PrivateKey.generate()
    (tmp_path / "client.pub").write_bytes(client.public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH))
    host_key = tmp_path / "host_key"
    process = subprocess.Popen(
        [sys.executable, str(SANDBOX_SFTP), "--root", str(drop_root), "--port", "0", "--user", "partner",
         "--host-key", str(host_key), "--authorized-key", str(tmp_path / "client.pub"), "--password-env", "SFTP_PW"],
        stdout=subprocess.PIPE, env={**os.environ, "SFTP_PW": "drop-pass"},
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = process.stdout.readline().decode().strip()
        assert line.startswith("listening on sftp://127.0.0.1:"), line
        port = int(line.rsplit(":", 1)[1])
        fingerprint = fingerprint_of((tmp_path / "host_key.pub").read_text())
        key_text = client.private_bytes(Encoding.PEM, PrivateFormat.OpenSSH, NoEncryption()).decode()
        for password, private_key in (("drop-pass", None), (None, key_text)):
            config = SftpResource(
                host="127.0.0.1",
                port=port,
                username="partner",
                host_key_fingerprint=fingerprint,
                password=password,
                private_key=private_key,
            )
            with config.connect() as files:
                listed = sorted(f.name for f in files.list("/drop"))  # chroot: / is drop_root
                assert listed == sorted(DROPS)
                assert (
                    files.download(f"/drop/{DROPS[1]}", tmp_path / "d.csv")
                    == (drop_root / "drop" / DROPS[1]).stat().st_size
                )
                assert (tmp_path / "d.csv").read_bytes() == (drop_root / "drop" / DROPS[1]).read_bytes()
                files.rename(f"/drop/{DROPS[1]}", f"/sandbox-archive/{DROPS[1]}")
                files.rename(f"/sandbox-archive/{DROPS[1]}", f"/drop/{DROPS[1]}")
        with pytest.raises(RemoteFileError, match="authentication"):
            with SftpResource(host="127.0.0.1", port=port, username="partner", host_key_fingerprint=fingerprint,
                              password="wrong").connect():  # fmt: skip
                pass
    finally:
        stop(process)
    assert process.returncode == 0


def test_the_read_ahead_ends_cleanly_after_a_failed_download(
    server: SshServer, drop_root: Path, tmp_path: Path
) -> None:
    """A backfill's read-ahead over more files than it reads ahead, where the second file vanished between
    the listing and its download: the first is read ahead, the second and those after are left to the step
    (``take`` returns None and says why), and closing the read-ahead returns at once. Before, taking the
    first file queued more files for a download thread that had ended, and closing waited on them for ever."""
    many = tmp_path / "many"
    many.mkdir()
    for day in range(READ_AHEAD_FILES + 4):
        shutil.copy2(drop_root / "drop" / DROPS[0], many / f"dpc-covid19-ita-regioni-202003{day + 1:02d}.csv")
    plan = FileStreamPlan(StreamSpec("covid", "regions", "append"), str(many), DropRules(glob="*.csv"), FileFormat())
    with resource(server).connect() as files:
        listed = sorted(files.list(str(many)), key=lambda f: f.name)
    vanished = RemoteFile(f"{many}/dpc-covid19-ita-regioni-20200229.csv", "vanished.csv", 5000, 0.0)
    order = [listed[0], vanished, *listed[1:]]
    outcome: dict[str, Any] = {}

    def backfill() -> None:
        with ExitStack() as stack:
            ahead = _ReadAhead(plan, resource(server).connect, order, stack)
            assert ahead.downloader is not None
            ahead.downloader.result(timeout=10)  # the download thread ended at the vanished file
            outcome["first"] = ahead.take(order[0])
            time.sleep(0.5)  # landing the first partition: the parse thread takes up the next file meanwhile
            outcome["rest"] = [ahead.take(file) for file in order[1:]]
            outcome["stopped"] = ahead.stopped
        outcome["closed"] = True

    thread = threading.Thread(target=backfill, daemon=True)
    thread.start()
    thread.join(timeout=30)
    assert outcome.get("closed"), f"the read-ahead did not close: {outcome}"
    table, rejected, size = outcome["first"]
    assert table.num_rows == 21 and not rejected and size == listed[0].size
    assert outcome["rest"] == [None] * len(order[1:]), "the step reads the vanished file and the rest itself"
    assert "20200229.csv: open failed" in outcome["stopped"]


def test_a_local_copy_that_cannot_be_written_is_named_as_such(
    server: SshServer, drop_root: Path, tmp_path: Path
) -> None:
    """The local side failing is not a remote read failure: a missing local folder (a one-read file) and a
    full disk part-way through a larger file (a child process limited to 1 MB per file, RLIMIT_FSIZE) both
    say "writing the local copy ... failed", leave no partial copy, and the session stays usable."""
    path = f"{drop_root}/drop/{DROPS[0]}"
    with resource(server).connect() as files:
        with pytest.raises(RemoteFileError, match=r"writing the local copy .*/missing/x\.csv failed"):
            files.download(path, tmp_path / "missing" / "x.csv")
        assert files.download(path, tmp_path / "x.csv") == (drop_root / "drop" / DROPS[0]).stat().st_size
    big = drop_root / "big-local.bin"
    big.write_bytes(os.urandom(3_000_000))
    settings = {
        "host": server.host,
        "port": server.port,
        "username": server.username,
        "private_key": server.private_key_pem,
        "known_hosts": str(server.known_hosts),
    }
    script = f"""
import json, resource, signal, sys
from pathlib import Path
from integration_platform.sources.files.remote_files import RemoteFileError
from integration_platform.sources.files.sftp import SftpResource
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
local = Path(sys.argv[1])
with SftpResource(**json.loads(sys.argv[2])).connect() as files:
    try:
        files.download({str(big)!r}, local)
    except RemoteFileError as exc:
        print("ERROR", exc)
    print("EXISTS", local.exists())
    print("AGAIN", files.download({path!r}, local.with_name("small.csv")))
"""
    try:
        child = subprocess.run(
            [sys.executable, "-c", script, str(tmp_path / "big.bin"), json.dumps(settings)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
        )
    finally:
        big.unlink()
    assert child.returncode == 0, child.stderr
    assert "writing the local copy failed" in child.stdout and "File too large" in child.stdout, child.stdout
    assert "read failed" not in child.stdout
    assert "EXISTS False" in child.stdout
    assert f"AGAIN {(drop_root / 'drop' / DROPS[0]).stat().st_size}" in child.stdout
