"""SFTP download of one large file over loopback: the platform's SftpResource against OpenSSH sftp and paramiko.

Usage::

    .venv/bin/python benchmarks/sftp_download.py                  # 500 MB, 7 runs (about 3.5 minutes)
    .venv/bin/python benchmarks/sftp_download.py --size-mb 200 --runs 5
    .venv/bin/python benchmarks/sftp_download.py --variants       # + tuning variants of the platform (~3 more min)
    .venv/bin/python benchmarks/sftp_download.py --files 1781     # 1,781 files of 5 KB instead (about 1 minute)

Data (untimed, once): ``--size-mb`` MB (default 500, decimal) of ``os.urandom`` bytes, incompressible,
in a temporary folder under ``--tmp`` (default ``/dev/shm`` when it has room, else the system temp
folder: downloads are written there too, and on this shared VM disk write-back made runs on a disk
folder vary by 2x). The folder is served by a real OpenSSH ``sshd`` on 127.0.0.1 with its own
configuration (``sandbox.sshd.sshd``: ed25519 host key, one ed25519
client key, ``Subsystem sftp internal-sftp``), started once and stopped by pid.

Methods, each run in its own fresh process (see ``common.py``), runs interleaved, medians of 7 by
default: on this 2-core VM one method's runs spread over 1.5x (the platform 184-292 MB/s in 9 runs,
December 2026), so a median of 3 moved by 15% between two idle runs of the same code.

- ``openssh_sftp`` (limit, the reference): OpenSSH's client, ``sftp -b <batch>`` with one
  ``get``, the same client key, ``StrictHostKeyChecking=yes`` against a known_hosts file, ``-F
  /dev/null``; OpenSSH's default cipher (chacha20-poly1305@openssh.com). Timed spawn to exit.
- ``openssh_sftp_aes128gcm`` (limit): the same with ``-c aes128-gcm@openssh.com``, the cipher
  the platform prefers.
- ``platform`` (platform): ``SftpResource(...).connect()`` then ``download()`` (defaults:
  aes128-gcm, 8 MiB window, 256 KiB packets, 32 reads of 255 KiB in flight); timed from connect
  to the session closed.
- ``paramiko_default_get`` (peer): ``SSHClient.connect`` + ``open_sftp().get()``, paramiko's
  defaults (aes128-ctr, 2 MiB window, 32 KiB packets and reads, prefetch on).
- with ``--variants``: ``platform_<v>`` (one setting changed from the defaults, see VARIANTS)
  and ``paramiko_tuned_get`` (``get()`` on an SFTP channel with the platform's window, packet
  size and cipher).

With ``--files N`` the source is N files of ``--file-kb`` KB (random bytes, default 5, the size of a
daily drop) instead of one large file: OpenSSH ``get <folder>/*`` (one file after the other, each
with its reads pipelined), the platform's ``download_many`` (``platform``: several files in flight
at once) and its ``download()`` per file (``platform_one_by_one``: open, fstat, read, close, one
round trip each), and paramiko's ``listdir`` + ``get()`` per file (``paramiko_default_get``).

Every Python child checks its file (size and SHA-256 against the source) after the timed part;
the OpenSSH outputs are checked by the parent before the next run. MB/s is the file's size
divided by seconds; ``speed_x`` (printed under the table) is a method's MB/s over each limit's.
CPU is the client process only (``sshd`` spends about the same in every method).
"""

import argparse
import hashlib
import os
import queue
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from common import (
    MB,
    Method,
    Role,
    Summary,
    child_report,
    parse_args,
    python_child,
    report,
    run_interleaved,
    select,
    warm_imports,
)

SCRIPT = Path(__file__).resolve()
FILE_NAME = "big.bin"
MIB = 1 << 20
#: --variants: one SftpResource setting changed from its default, to show what each one is worth.
VARIANTS: dict[str, dict[str, Any]] = {
    "aes256gcm": {"ciphers": ["aes256-gcm@openssh.com"]},
    "aes128ctr": {"ciphers": ["aes128-ctr"]},
    "window2m": {"window_size": 2 * MIB},
    "window32m": {"window_size": 32 * MIB},
    "packet32k": {"max_packet_size": 32 * 1024},
    "request32k": {"request_size": 32 * 1024, "max_concurrent_requests": 256},
    "request64k": {"request_size": 64 * 1024, "max_concurrent_requests": 128},
    "inflight8": {"max_concurrent_requests": 8},
    "inflight64": {"max_concurrent_requests": 64},
}


# ---------------------------------------------------------------- children


def sha256_of(path: Path) -> str:
    """SHA-256 of a file, or of a folder's files concatenated in name order."""
    digest = hashlib.sha256()
    for file in sorted(path.iterdir()) if path.is_dir() else [path]:
        with open(file, "rb") as handle:
            while chunk := handle.read(8 * MIB):
                digest.update(chunk)
    return digest.hexdigest()


def size_of(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir()) if path.is_dir() else path.stat().st_size


def verify(local: Path, size: int, sha256: str) -> None:
    """Exit non-zero unless ``local`` (a file, or a folder of small files) has ``size`` bytes and the
    source's SHA-256; then remove it."""
    got = size_of(local)
    if got != size or sha256_of(local) != sha256:
        raise SystemExit(f"{local}: {got:,} bytes, expected {size:,} (or a different SHA-256)")
    shutil.rmtree(local) if local.is_dir() else local.unlink()


def run_platform(args: argparse.Namespace, variant: str, local: Path) -> None:
    from integration_platform.sources.files.remote_files import Download
    from integration_platform.sources.files.sftp import SftpResource

    settings = VARIANTS[variant] if variant and variant != "one_by_one" else {}
    config = SftpResource(
        host="127.0.0.1",
        port=args.port,
        username=args.user,
        private_key=Path(args.key).read_text(),
        known_hosts=args.known_hosts,
        **settings,
    )

    def work() -> dict[str, Any]:
        with config.connect() as files:
            if args.files and variant == "one_by_one":  # download() per file: four round trips each
                listed = sorted(files.list(args.remote), key=lambda f: f.name)
                copied = sum(files.download(f.path, local / f.name, f.size) for f in listed)
            elif args.files:  # many small files: listed, then pipelined (download_many)
                todo: queue.SimpleQueue[Any] = queue.SimpleQueue()
                for file in sorted(files.list(args.remote), key=lambda f: f.name):
                    todo.put(Download(file.path, local / file.name, file.size))
                todo.put(None)
                copied = sum(size for _, size in files.download_many(todo))
            else:
                copied = files.download(args.remote, local)
            transport = files.client.get_transport()
            cipher = transport.remote_cipher if transport else None
        return {"out_bytes": copied, "cipher": cipher}

    child_report(work)


def run_paramiko(args: argparse.Namespace, tuned: bool, local: Path) -> None:
    import paramiko

    def work() -> dict[str, Any]:
        client = paramiko.SSHClient()
        client.load_host_keys(args.known_hosts)
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        disabled = None
        if tuned:  # the platform's cipher, window and packet size; paramiko's own get() and prefetch
            disabled = {"ciphers": [c for c in paramiko.Transport._preferred_ciphers if c != "aes128-gcm@openssh.com"]}
        client.connect(
            "127.0.0.1",
            args.port,
            args.user,
            key_filename=args.key,
            allow_agent=False,
            look_for_keys=False,
            disabled_algorithms=disabled,
        )
        transport = client.get_transport()
        assert transport is not None
        if tuned:
            sftp = paramiko.SFTPClient.from_transport(transport, window_size=8 * MIB, max_packet_size=256 * 1024)
        else:
            sftp = client.open_sftp()
        assert sftp is not None
        if args.files:  # many small files: listdir, then get() each, as a script would
            for name in sorted(sftp.listdir(args.remote)):
                sftp.get(f"{args.remote}/{name}", str(local / name))
        else:
            sftp.get(args.remote, str(local))
        cipher = transport.remote_cipher
        sftp.close()
        client.close()
        return {"out_bytes": size_of(local), "cipher": cipher}

    child_report(work)


def child(args: argparse.Namespace) -> None:
    """One child process: download ``args.remote`` to ``args.out``, report, then verify the copy (untimed)."""
    local = Path(args.out)
    local.unlink(missing_ok=True)
    if args.files:
        local.mkdir()
    name = args.child
    if name == "platform" or name.startswith("platform_"):
        run_platform(args, name.removeprefix("platform").lstrip("_"), local)
    elif name in ("paramiko_default_get", "paramiko_tuned_get"):
        run_paramiko(args, name == "paramiko_tuned_get", local)
    else:
        raise SystemExit(f"unknown method {name!r}")
    verify(local, args.size, args.sha256)


# ---------------------------------------------------------------- parent


class OpensshOutput:
    """``prepare`` of an OpenSSH method: checks the previous run's copy (untimed) and removes it."""

    def __init__(self, local: Path, size: int, sha256: str) -> None:
        self.local, self.size, self.sha256 = local, size, sha256
        self.checked = 0

    def __call__(self) -> None:
        if self.local.exists() and (self.local.is_file() or any(self.local.iterdir())):
            verify(self.local, self.size, self.sha256)
            self.checked += 1


def make_small_files(folder: Path, count: int, size: int) -> tuple[Path, str]:
    """``folder/small/NNNNNN.csv``: ``count`` files of ``size`` random bytes; returns the folder and the SHA-256
    of the files concatenated in name order."""
    path = folder / "small"
    path.mkdir()
    for number in range(count):
        (path / f"{number:06d}.csv").write_bytes(os.urandom(size))
    return path, sha256_of(path)


def make_source(folder: Path, size: int) -> tuple[Path, str]:
    """``folder/big.bin``: ``size`` random bytes; returns its path and SHA-256."""
    path = folder / FILE_NAME
    digest = hashlib.sha256()
    with open(path, "wb") as handle:
        left = size
        while left:
            chunk = os.urandom(min(left, 8 * MIB))
            handle.write(chunk)
            digest.update(chunk)
            left -= len(chunk)
    return path, digest.hexdigest()


def default_tmp(size: int) -> str:
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > 4 * size:
        return str(shm)
    return tempfile.gettempdir()


def build_methods(
    args: argparse.Namespace, server: Any, work: Path, source: Path, size: int, sha256: str, known_hosts: Path
) -> tuple[list[Method], list[OpensshOutput]]:
    outputs: list[OpensshOutput] = []

    def openssh(name: str, extra: list[str], note: str) -> Method:
        local = work / f"{name}.out"
        batch = work / f"{name}.batch"
        if args.files:  # a glob: OpenSSH's client gets the files one after the other into the folder
            batch.write_text(f"lmkdir {local}\nget {source}/* {local}/\n")  # unquoted, or sftp does not glob
        else:
            batch.write_text(f'get "{source}" "{local}"\n')
        output = OpensshOutput(local, size, sha256)
        outputs.append(output)
        argv = [
            "sftp",
            "-q",
            "-F",
            "/dev/null",
            "-b",
            str(batch),
            "-i",
            str(server.private_key_path),
            "-o",
            f"UserKnownHostsFile={known_hosts}",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            *extra,
            "-P",
            str(server.port),
            f"{server.username}@{server.host}",
        ]
        return Method(name, "limit", argv, None, size, note=note, prepare=output)

    def py(name: str, role: Role, note: str = "") -> Method:
        argv = python_child(
            SCRIPT,
            name,
            "--port",
            str(server.port),
            "--user",
            server.username,
            "--key",
            str(server.private_key_path),
            "--known-hosts",
            str(known_hosts),
            "--remote",
            str(source),
            "--out",
            str(work / f"{name}.out"),
            "--size",
            str(size),
            "--sha256",
            sha256,
            "--files",
            str(args.files),
        )
        return Method(name, role, argv, None, size, note=note)

    methods = [
        openssh("openssh_sftp", [], "OpenSSH defaults (chacha20-poly1305@openssh.com)"),
        openssh("openssh_sftp_aes128gcm", ["-c", "aes128-gcm@openssh.com"], "sftp -c aes128-gcm@openssh.com"),
        py("platform", "platform"),
        py("paramiko_default_get", "peer", "paramiko defaults: aes128-ctr, 2 MiB window, 32 KiB packets and reads"),
    ]
    if args.files:
        methods.append(py("platform_one_by_one", "platform", "download() per file, one after the other"))
    if args.variants:
        methods += [
            py(f"platform_{name}", "platform", f"SftpResource({', '.join(f'{k}={v!r}' for k, v in s.items())})")
            for name, s in VARIANTS.items()
        ]
        methods.append(py("paramiko_tuned_get", "peer", "get() with aes128-gcm, 8 MiB window, 256 KiB packets"))
    return methods, outputs


def print_speed_ratios(summaries: list[Summary]) -> None:
    limits = [s for s in summaries if s.method.role == "limit" and s.mb_per_s]
    print("speed_x = MB/s of the method / MB/s of " + " | ".join(s.method.name for s in limits))
    for s in summaries:
        if s.method.role == "limit" or not s.mb_per_s:
            continue
        ratios = " | ".join(f"{s.mb_per_s / limit.mb_per_s:5.2f}" for limit in limits if limit.mb_per_s)
        cipher = s.samples[-1].report.get("cipher") or "-"
        print(f"  {s.method.name:<28} {s.mb_per_s:7.1f} MB/s  speed_x {ratios}   ({cipher})")


def main(argv: list[str] | None = None) -> None:
    """Parse arguments; as parent make the file, start sshd and run every method; as child run one."""
    parser = argparse.ArgumentParser(prog="sftp_download.py", description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=500, help="file size in MB (10^6 bytes; default 500)")
    parser.add_argument("--variants", action="store_true", help="also run the platform's tuning variants")
    parser.add_argument("--tmp", default=None, help="folder for the file and the copies (default /dev/shm)")
    for hidden in ("--port", "--user", "--key", "--known-hosts", "--remote", "--out", "--sha256"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    parser.add_argument(
        "--files", type=int, default=0, help="instead of one large file, this many small files (e.g. 1781)"
    )
    parser.add_argument("--file-kb", type=int, default=5, help="with --files: each file's size in KB (default 5)")
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = parse_args(parser, argv, default_runs=7)
    if args.child:
        child(args)
        return
    if shutil.which("sftp") is None:
        raise SystemExit("OpenSSH's sftp client is required for the limit (Debian: openssh-client)")
    from sandbox import ServerMissing
    from sandbox.sshd import sshd

    size = args.files * args.file_kb * 1000 if args.files else args.size_mb * MB
    work = Path(tempfile.mkdtemp(prefix="ip-bench-sftp-", dir=args.tmp or default_tmp(size)))
    try:
        if args.files:
            source, sha256 = make_small_files(work, args.files, args.file_kb * 1000)
        else:
            source, sha256 = make_source(work, size)
        with sshd(work) as server:
            known_hosts = server.write_known_hosts(work / "known_hosts")
            methods, outputs = build_methods(args, server, work, source, size, sha256, known_hosts)
            methods = select(methods, args.methods, always=("openssh_sftp",))
            subprocess.run(["ssh", "-V"], check=False)
            what = f"{args.files:,} files of {args.file_kb} KB" if args.files else f"{size / MB:,.0f} MB file"
            print(
                f"sftp_download: {len(methods)} methods x {args.runs} runs, {what} in {work}, "
                f"sshd on {server.host}:{server.port}",
                flush=True,
            )
            warmup = [methods[0], warm_imports("paramiko", "integration_platform.sources.files.sftp")]
            summaries = run_interleaved(methods, args.runs, warmup=warmup)
            for output in outputs:
                output()
            report(
                "sftp_download",
                summaries,
                reference="openssh_sftp",
                bytes_label="file size / seconds (seconds: connect to session closed; OpenSSH: spawn to exit)",
                extra_columns=[("import_RSS_MB", "baseline_rss_mb", ".0f")],
            )
            print_speed_ratios(summaries)
            print(f"copies checked (size + SHA-256): OpenSSH {sum(o.checked for o in outputs)}, Python children all")
    except ServerMissing as exc:
        raise SystemExit(f"sshd is required for this benchmark: {exc}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
