"""FtpResource against a real pyftpdlib server (explicit FTPS unless said otherwise) serving real partner files:
the DPC regional daily CSV drops in /work/shared/data/dpc-covid19-ita-regioni-daily."""

import datetime as dt
import ftplib
import os
import shutil
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from integration_platform.sources.files.ftp import FtpResource, SessionReusingFTP_TLS, parse_time_val
from integration_platform.sources.files.remote_files import (
    MissingDirectoryError,
    RemoteFileError,
    TargetExistsError,
    download_all,
)
from integration_platform_tests.ftp_servers import FtpServer, ftps_server
from integration_platform_tests.services import shared_file

#: Both schemas (24 columns up to 2021-01-14, 30 from 2021-01-15), a leap day and the last file.
DAYS = ["20200224", "20200229", "20210114", "20210115", "20250108"]


def _csv(day: str) -> Path:
    return shared_file("dpc-covid19-ita-regioni-daily", "dati-regioni", f"dpc-covid19-ita-regioni-{day}.csv")


def _published(day: str) -> int:
    """The mtime given to a day's file: 17:00 UTC that day, as the DPC published them."""
    return int(dt.datetime.strptime(day + "17", "%Y%m%d%H").replace(tzinfo=dt.UTC).timestamp())


def _fill_drop(folder: Path) -> dict[str, Path]:
    """``folder`` with the DAYS files (mtimes set) and a subdirectory; returns name -> local original."""
    folder.mkdir(parents=True)
    (folder / "corrections").mkdir()  # a directory is not a file to land
    (folder / "corrections" / "ignored.csv").write_text("a,b\n")
    originals = {}
    for day in DAYS:
        source = _csv(day)
        copy = folder / source.name
        shutil.copyfile(source, copy)
        os.utime(copy, (_published(day), _published(day)))
        originals[source.name] = source
    return originals


def _refused(resource: FtpResource) -> RemoteFileError:
    """The error ``resource.connect()`` raises (the test fails when it connects)."""
    with pytest.raises(RemoteFileError) as refused, resource.connect():
        pass
    return refused.value


def _resource(server: FtpServer, **overrides: Any) -> FtpResource:
    config: dict[str, Any] = {
        "host": server.host,
        "port": server.port,
        "username": server.user,
        "password": server.password,
        "tls": server.ca_bundle is not None,
        "ca_bundle": str(server.ca_bundle) if server.ca_bundle else None,
        "timeout": 20.0,
    }
    return FtpResource(**{**config, **overrides})


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FtpServer]:
    """One FTPS server (TLS required on control and data) for the module; each test works in its own folder."""
    with ftps_server(tmp_path_factory.mktemp("ftp-root")) as running:
        yield running


@pytest.fixture
def drop(server: FtpServer, request: pytest.FixtureRequest) -> tuple[str, dict[str, Path]]:
    """A fresh ``in-<test>`` folder on the server; returns its remote name and name -> local original."""
    name = f"in-{request.node.name}".replace("[", "-").replace("]", "")
    return name, _fill_drop(server.root / name)


def test_list_shows_regular_files_with_sizes_and_mtimes(server: FtpServer, drop: tuple[str, dict[str, Path]]) -> None:
    folder, originals = drop
    with _resource(server).connect() as files:
        listed = list(files.list(folder))
    assert sorted(f.name for f in listed) == sorted(originals)  # not the "corrections" directory
    for file in listed:
        assert file.path == f"{folder}/{file.name}"
        assert file.size == originals[file.name].stat().st_size
        assert file.mtime == _published(file.name.removesuffix(".csv").rsplit("-", 1)[1])


@pytest.mark.parametrize("tls", [True, False], ids=["ftps", "plain-ftp"])
def test_servers_without_mlsd_are_listed_with_nlst_size_and_mdtm(tmp_path: Path, tls: bool) -> None:
    originals = _fill_drop(tmp_path / "drop")
    with ftps_server(tmp_path, tls=tls, mlsd=False) as plain, _resource(plain).connect() as files:
        listed = {f.name: f for f in files.list("drop")}
        with pytest.raises(MissingDirectoryError, match=r"list 'nope': no such directory"):
            files.list("nope")
        copied = files.download(f"drop/{_csv(DAYS[0]).name}", tmp_path / "copy.csv")
    assert sorted(listed) == sorted(originals)
    assert {f.size for f in listed.values()} == {p.stat().st_size for p in originals.values()}
    assert listed[_csv(DAYS[-1]).name].mtime == _published(DAYS[-1])
    assert copied == _csv(DAYS[0]).stat().st_size
    assert (tmp_path / "copy.csv").read_bytes() == _csv(DAYS[0]).read_bytes()


@pytest.mark.parametrize("mlsd", [True, False], ids=["mlsd", "nlst"])
def test_a_name_not_accepted_is_passed_over_unchecked(mlsd: bool, tmp_path: Path) -> None:
    """A name the listing refuses (a backslash: one plain path segment only) failed the whole listing, even
    for a stream that does not take that file; with ``accept`` it is passed over before it is checked."""
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "a.csv").write_text("x\n")
    (tmp_path / "odd" / "notes\\ops.txt").write_text("y\n")
    with ftps_server(tmp_path, tls=False, mlsd=mlsd) as plain, _resource(plain).connect() as files:
        with pytest.raises(RemoteFileError, match=r"refusing the file name"):
            list(files.list("odd"))
        accepted = [f.name for f in files.list("odd", lambda name: name.endswith(".csv"))]
    assert accepted == ["a.csv"]


@pytest.mark.parametrize("mlsd", [True, False], ids=["mlsd", "nlst"])
def test_a_folder_the_server_refuses_is_not_taken_for_a_missing_one(mlsd: bool, tmp_path: Path) -> None:
    """A 550 answers "no such folder" and "not allowed" alike, and CWD failing decided "missing": an archive
    folder the user may not enter counted as "nothing archived yet", and a day landed again lost its
    archived files' rows. Only a folder its parent lists without is missing."""
    (tmp_path / "drop" / "archive").mkdir(parents=True)
    with (
        ftps_server(tmp_path, tls=False, mlsd=mlsd, refused_dirs=("drop/archive",)) as plain,
        _resource(plain).connect() as files,
    ):
        with pytest.raises(RemoteFileError) as refused:
            files.list("drop/archive")
        with pytest.raises(MissingDirectoryError):
            files.list("drop/gone")
    assert not isinstance(refused.value, MissingDirectoryError), refused.value
    assert "drop/archive" in str(refused.value)


def test_downloads_are_byte_identical(server: FtpServer, drop: tuple[str, dict[str, Path]], tmp_path: Path) -> None:
    folder, originals = drop
    with _resource(server).connect() as files:
        paths = [f.path for f in files.list(folder)]
        landed = dict(download_all(files, paths, tmp_path))
    assert len(landed) == len(DAYS)
    for remote, local in landed.items():
        assert local.read_bytes() == originals[remote.rsplit("/", 1)[1]].read_bytes()


def test_control_and_data_channels_are_tls(
    server: FtpServer, drop: tuple[str, dict[str, Path]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, _ = drop
    data_channels: list[tuple[bool, bool | None]] = []  # (TLS?, resumed the control session?) per connection
    ntransfercmd = SessionReusingFTP_TLS.ntransfercmd

    def recording(self: SessionReusingFTP_TLS, cmd: str, rest: int | str | None = None) -> tuple[socket.socket, Any]:
        conn, size = ntransfercmd(self, cmd, rest)
        tls = isinstance(conn, ssl.SSLSocket)
        data_channels.append((tls, conn.session_reused if isinstance(conn, ssl.SSLSocket) else None))
        return conn, size

    monkeypatch.setattr(SessionReusingFTP_TLS, "ntransfercmd", recording)
    with _resource(server).connect() as files:
        control = files.ftp.sock
        version = control.version() if isinstance(control, ssl.SSLSocket) else None
        listed = list(files.list(folder))
        files.download(listed[0].path, tmp_path / "one.csv")
    assert isinstance(control, ssl.SSLSocket) and version in ("TLSv1.2", "TLSv1.3")
    assert data_channels == [(True, True), (True, True)]  # MLSD and RETR, both TLS resuming the control session

    # the server takes nothing in clear text: no login before AUTH TLS, no data channel without PROT P
    assert "550 SSL/TLS required on the control channel" in str(_refused(_resource(server, tls=False)))
    clear_data = ftplib.FTP_TLS(context=ssl.create_default_context(cafile=server.ca_bundle), timeout=20)
    try:
        clear_data.connect(server.host, server.port)
        clear_data.login(server.user, server.password)
        clear_data.voidcmd("PBSZ 0")
        clear_data.prot_c()
        with pytest.raises(ftplib.error_perm, match=r"550 SSL/TLS required on the data channel"):
            clear_data.nlst(folder)
    finally:
        clear_data.close()


def test_data_channels_resume_the_control_session_where_the_server_requires_it(tmp_path: Path) -> None:
    """vsftpd's default (require_ssl_reuse): stock ftplib.FTP_TLS gets 522; FtpResource works."""
    originals = _fill_drop(tmp_path / "drop")
    with ftps_server(tmp_path, require_session_reuse=True) as strict:
        stock = ftplib.FTP_TLS(context=ssl.create_default_context(cafile=strict.ca_bundle), timeout=20)
        try:
            stock.connect(strict.host, strict.port)
            stock.login(strict.user, strict.password)
            stock.prot_p()
            with pytest.raises(ftplib.error_perm, match=r"522 SSL connection failed: session reuse required"):
                stock.nlst("drop")
        finally:
            stock.close()
        (tmp_path / "landed").mkdir()
        with _resource(strict).connect() as files:
            listed = list(files.list("drop"))
            landed = dict(download_all(files, [f.path for f in listed], tmp_path / "landed"))
    assert len(landed) == len(originals)
    assert all(local.read_bytes() == originals[Path(remote).name].read_bytes() for remote, local in landed.items())


def test_plain_ftp_when_tls_is_off(tmp_path: Path) -> None:
    originals = _fill_drop(tmp_path / "drop")
    with ftps_server(tmp_path, tls=False) as plain, _resource(plain).connect() as files:
        assert not isinstance(files.ftp.sock, ssl.SSLSocket)
        listed = list(files.list("drop"))
        copied = files.download(listed[0].path, tmp_path / "copy.csv")
    assert copied == originals[listed[0].name].stat().st_size


def test_active_mode(server: FtpServer, drop: tuple[str, dict[str, Path]], tmp_path: Path) -> None:
    folder, originals = drop
    with _resource(server, passive=False).connect() as files:  # PORT: the server connects back to us
        listed = list(files.list(folder))
        files.download(listed[0].path, tmp_path / "one.csv")
    assert len(listed) == len(originals)
    assert (tmp_path / "one.csv").read_bytes() == originals[listed[0].name].read_bytes()


def test_certificate_is_verified(server: FtpServer) -> None:
    assert str(_refused(_resource(server, ca_bundle=None))) == (
        f"FTP 127.0.0.1:{server.port}: AUTH TLS: TLS verification failed (self-signed certificate); "
        "trust the server's CA with ca_bundle"
    )
    # the certificate names IP 127.0.0.1 only: a trusted certificate for another name is refused too
    mismatch = _refused(_resource(server, host="localhost"))
    assert "AUTH TLS: TLS verification failed (Hostname mismatch, certificate is not valid for 'localhost'" in str(
        mismatch
    )
    with _resource(server, ca_bundle=None, verify_tls=False).connect() as files:  # encrypted, unauthenticated
        assert isinstance(files.ftp.sock, ssl.SSLSocket)


def test_wrong_password_fails_without_showing_it(server: FtpServer, monkeypatch: pytest.MonkeyPatch) -> None:
    wrong = "Wr0ng-" + server.password[::-1]
    monkeypatch.setenv("IP_TEST_FTP_WRONG_PASSWORD", wrong)
    resource = _resource(server, password=dg.EnvVar("IP_TEST_FTP_WRONG_PASSWORD")).process_config_and_initialize()
    assert resource.password == wrong
    refused = _refused(resource)
    message = str(refused)
    assert message.startswith(f"FTP 127.0.0.1:{server.port}: login as 'partner': server replied 530")
    assert wrong not in message and server.password not in message
    assert refused.__suppress_context__  # ftplib's exception is not shown with it


def test_rename_into_a_new_archive_directory(server: FtpServer, drop: tuple[str, dict[str, Path]]) -> None:
    folder, originals = drop
    archive = f"archive-{folder}/2025/01"
    with _resource(server).connect() as files:
        first, second, *rest = list(files.list(folder))
        files.rename(first.path, f"{archive}/{first.name}")  # creates archive-*/2025/01
        files.rename(second.path, f"{archive}/{second.name}")  # into the now existing directory
        archived = list(files.list(archive))
        remaining = list(files.list(folder))
        with pytest.raises(RemoteFileError, match=rf"rename '{folder}/{first.name} -> .*': server replied 550"):
            files.rename(first.path, f"{archive}/again.csv")  # already moved
    assert sorted(f.name for f in archived) == sorted([first.name, second.name])
    assert {(f.name, f.size) for f in archived} == {(first.name, first.size), (second.name, second.size)}
    assert sorted(f.name for f in remaining) == sorted(f.name for f in rest)
    assert len(rest) == len(originals) - 2


def test_a_rename_onto_an_existing_file_a_server_refuses_is_told_apart(tmp_path: Path) -> None:
    """A server that refuses to overwrite (IIS; ProFTPD with AllowOverwrite off) answers RNTO 550: that was a
    plain failure, so the archive step failed the day on a file re-sent unchanged after it was archived (the
    SFTP rename is told apart the same way)."""
    folder = tmp_path / "drop"
    folder.mkdir()
    (folder / "a.csv").write_text("x\n1\n")
    (folder / "archive").mkdir()
    (folder / "archive" / "a.csv").write_text("x\n1\n")
    with ftps_server(tmp_path, tls=False, overwrite=False) as refusing, _resource(refusing).connect() as files:
        refused = r"rename 'drop/a.csv -> drop/archive/a.csv': it exists \(server replied 550"
        with pytest.raises(TargetExistsError, match=refused):
            files.rename("drop/a.csv", "drop/archive/a.csv")
    assert (folder / "a.csv").exists()


def test_missing_directory_or_file_names_the_path(server: FtpServer, tmp_path: Path) -> None:
    with _resource(server).connect() as files:
        with pytest.raises(MissingDirectoryError) as missing_dir:  # its parent lists without it
            files.list("no-such-drop")
        with pytest.raises(RemoteFileError) as missing_parent:  # not known missing: the server's reply
            files.list("no/such/drop")
        with pytest.raises(RemoteFileError) as missing_file:
            files.download("no/such/file.csv", tmp_path / "file.csv")
    assert str(missing_dir.value) == f"FTP 127.0.0.1:{server.port}: list 'no-such-drop': no such directory"
    assert not isinstance(missing_parent.value, MissingDirectoryError)
    assert str(missing_parent.value).startswith(f"FTP 127.0.0.1:{server.port}: list 'no/such/drop': server replied 5")
    assert str(missing_file.value).startswith(f"FTP 127.0.0.1:{server.port}: download 'no/such/file.csv': ")
    assert not (tmp_path / "file.csv").exists()


def test_a_file_that_changed_since_listing_fails_the_size_check(
    server: FtpServer, drop: tuple[str, dict[str, Path]], tmp_path: Path
) -> None:
    folder, _ = drop
    with _resource(server).connect() as files:
        file = next(iter(files.list(folder)))
        with (server.root / file.path).open("a") as growing:  # the partner appends after our listing
            growing.write("late,row\n")
        with pytest.raises(RemoteFileError, match=rf"copied {file.size + 9} bytes but the server listed {file.size}"):
            files.download(file.path, tmp_path / "partial.csv")
    assert not (tmp_path / "partial.csv").exists()


def test_unreachable_server() -> None:
    port = 1  # nothing listens on tcpmux
    resource = FtpResource(host="127.0.0.1", port=port, username="u", password="secret-pw", timeout=5)
    assert str(_refused(resource)).startswith("FTP 127.0.0.1:1: connect: ConnectionRefusedError")


def test_parse_time_val() -> None:
    assert parse_time_val("20200224170000") == _published("20200224")
    assert parse_time_val("20200224170000.25") == _published("20200224") + 0.25
    with pytest.raises(ValueError, match="not an RFC 3659 time-val"):
        parse_time_val("Feb 24 17:00")
