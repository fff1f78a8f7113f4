"""The lake: where landed Parquet files and their manifests live (a local folder, S3, GCS or Azure Blob).

Every back end offers the same small object-store interface, keyed by ``/``-separated keys
relative to the lake root. Writes are two-phase: a file is written to a *staging path* (a
hidden temporary name in the target folder for a local lake, a local temporary file for an
object store) and only :meth:`LakeStore.commit` makes it visible under its key (``os.replace``
locally; in an object store, an upload that completed: S3's single or multipart ``PutObject``,
a GCS upload (single or resumable), an Azure block blob's ``Put Blob`` or ``Put Block List``),
so readers never see half a file.
"""

import functools
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Protocol

from integration_platform.core.names import MAX_KEY_SEGMENT_BYTES, check_segment, refuse_misread

TMP_MARK = ".tmp-"
#: A staging file's name: ``.tmp-<pid>@<host id>~<32 hex><suffix of the final name>``; the writer's pid
#: and host let the next landing tell a dead writer's leftovers (removed at once) from a live
#: writer's file. The final name itself is left out, so a long window name still fits in 255 bytes.
_STAGING = re.compile(r"^\.tmp-(\d+)@([^~/]*)~[0-9a-f]{32}")
#: Staging files whose writer cannot be judged (another host, an older name) are removed after this.
STALE_STAGING_SECONDS = 3600
#: Objects an object-store lake reads at once in :meth:`LakeStore.get_bytes_many`: botocore's default
#: connection pool (``max_pool_connections``) holds 10, so more threads would only queue for it.
READ_CONCURRENCY = 10


@functools.cache
def host_id() -> str:
    """This machine and PID namespace, as 12 hex digits: the host name, the kernel's boot id and the PID
    namespace's inode. Two containers with one host name, or one host after a reboot, differ, so a pid
    is only ever judged where it means something."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = "?"
    try:
        namespace = str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        namespace = "?"
    return hashlib.sha256(f"{socket.gethostname()}|{boot}|{namespace}".encode()).hexdigest()[:12]


def process_alive(pid: int, started_by: float | None = None) -> bool:
    """Whether process ``pid`` of this host exists and, with ``started_by`` (Unix seconds), had started by
    then: a process started later holds a reused pid, so the one asked about is gone. A process of
    another user counts as alive, and so does one whose start time cannot be read.

    The start time is the kernel's (:func:`process_started`), not the change time of ``/proc/<pid>``:
    procfs makes that entry when it is first looked up (and again after the kernel drops it), so its
    time can be minutes after the process started, and a live writer would read as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if started_by is None:
        return True
    started = process_started(pid)
    return started is None or started <= started_by + 1


def process_started(pid: int) -> float | None:
    """When process ``pid`` of this host started, in Unix seconds (to the kernel clock's tick, 10 ms);
    None when it cannot be read (no such process, no procfs). From ``/proc/<pid>/stat`` field 22
    (``starttime``, clock ticks after boot) and ``/proc/stat``'s ``btime`` (boot, Unix seconds):
    proc(5)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        with open("/proc/stat", encoding="ascii") as system:
            boot = next(int(line.split()[1]) for line in system if line.startswith("btime "))
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22 is the 20th after field 2
    except (OSError, IndexError, ValueError, StopIteration):
        return None


def staging_name(final_name: str) -> str:
    """A unique staging file name for ``final_name`` that records this process's pid and :func:`host_id`."""
    return f"{TMP_MARK}{os.getpid()}@{host_id()}~{uuid.uuid4().hex}{Path(final_name).suffix}"


def writer_gone(path: Path) -> bool:
    """Whether the staging file ``path`` was left by a writer that can no longer finish it: its process is
    gone from this host (or its pid was reused since the file was written), or (written on another
    host, or named the old way) it is older than :data:`STALE_STAGING_SECONDS`. A file that vanished
    meanwhile counts as gone."""
    try:
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        return True
    found = _STAGING.match(path.name)
    if found and found.group(2) == host_id():
        return not process_alive(int(found.group(1)), started_by=mtime)
    return time.time() - mtime > STALE_STAGING_SECONDS


class LakeStore(Protocol):
    """Object-store operations the pipeline needs. Keys are relative, ``/``-separated."""

    def uri(self, key: str) -> str: ...

    def staging_path(self, key: str) -> Path: ...

    def commit(self, staging: Path, key: str) -> None: ...

    def discard(self, staging: Path) -> None: ...

    def put_json(self, key: str, obj: Any) -> None: ...

    def get_json(self, key: str) -> Any: ...

    def get_bytes_many(self, keys: list[str]) -> list[bytes]:
        """The content of the objects at ``keys``, in their order (an object store reads several at once:
        each read is one round trip, and a partitioned stream has a manifest per partition). Raises what
        :meth:`get_json` raises for a missing or unreadable key."""
        ...

    def list_keys(self, prefix: str) -> list[str]: ...

    def list_versions(self, prefix: str) -> dict[str, str | None]:
        """``{key: version}`` of the keys :meth:`list_keys` lists: a version is a token that changes
        whenever the object is written again (an object store's ETag), ``None`` where the store has
        none a reader may rely on (a local lake: a file's modification time is as coarse as the
        kernel's clock tick, and its inode may be reused)."""
        ...

    def delete(self, keys: list[str]) -> None:
        """Remove ``keys``; a key that does not exist is not an error."""
        ...

    def remove_stale_staging(self, prefix: str) -> int:
        """Remove staging files under ``prefix`` left by writers that are gone; returns how many."""
        ...

    @contextmanager
    def local_copy(self, key: str) -> Iterator[Path]: ...


def check_key(key: str) -> str:
    """``key`` when each of its ``/``-separated segments is a plain name (``check_segment``; a prefix may
    end in ``/``), else ``UnsafeNameError``: on S3 a ``..`` segment is a literal name, on disk it
    leaves the folder, so neither store accepts one."""
    if not key:  # the lake root
        return key
    segments = key.split("/")
    if key.endswith("/"):
        segments.pop()
    for segment in segments:
        check_segment(segment, f"segment of lake key {key!r}", MAX_KEY_SEGMENT_BYTES)
    return key


def _is_file(entry: os.DirEntry[str]) -> bool:
    """Whether ``entry`` is a file or a symbolic link to one, as ``Path.is_file`` says (an error
    following the link, such as a loop, means no file; ``DirEntry.is_file`` would raise it)."""
    try:
        return entry.is_file()
    except OSError:
        return False


class LocalLake:
    """A lake in a local folder. ``root`` is created on first write."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._root_parts = self.root.parts

    def _path(self, key: str) -> Path:
        """The file of ``key`` under the root, worked out lexically: :func:`check_key` refuses every
        segment that could leave the root (``..``, separators, control characters), so no
        ``resolve()`` (a ``realpath`` of every folder, 2.7 ms of each 15 ms small-file landing).
        A symbolic link inside the lake could only be put there by someone who can write the lake.
        The root must be a strict prefix of the result's parts (``root in path.parents`` said the
        same at 22 us a call, four calls per manifest)."""
        path = self.root.joinpath(check_key(key))
        depth = len(self._root_parts)
        parts = path.parts
        if len(parts) <= depth or parts[:depth] != self._root_parts:
            raise ValueError(f"lake key {key!r} escapes the lake root {self.root}")
        return path

    def uri(self, key: str) -> str:
        return self._path(key).as_uri()

    def staging_path(self, key: str) -> Path:
        final = self._path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        return final.with_name(staging_name(final.name))

    def commit(self, staging: Path, key: str) -> None:
        final = self._path(key)
        with open(staging, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(staging, final)

    def discard(self, staging: Path) -> None:
        staging.unlink(missing_ok=True)

    def put_json(self, key: str, obj: Any) -> None:
        staging = self.staging_path(key)
        staging.write_bytes(_json_body(obj))
        self.commit(staging, key)

    def get_json(self, key: str) -> Any:
        return json.loads(self._path(key).read_text())

    def get_bytes_many(self, keys: list[str]) -> list[bytes]:
        return [self._path(key).read_bytes() for key in keys]

    def list_keys(self, prefix: str) -> list[str]:
        return sorted(self.list_versions(prefix))

    def list_versions(self, prefix: str) -> dict[str, str | None]:
        """No versions (``None``): reading a local file again costs less than the risk of a stale one.

        Walked with ``os.scandir``, keys built as text: ``Path.rglob`` with ``is_file`` and
        ``relative_to`` per file took 20.5 ms for a partitioned stream's 1,781 manifests against 1.3 ms,
        and a step lists them several times. As ``rglob`` did, folders are entered but not through a
        symbolic link, a symbolic link to a file counts as a file and one that leads nowhere (a loop,
        a missing target) is no file. Unlike ``rglob``, a folder that cannot be read raises
        ``PermissionError`` naming it rather than being left out: a manifest nobody can see is
        better reported than taken for one never written."""
        base = self._path(prefix) if prefix else self.root
        found: dict[str, str | None] = {}
        relative = os.path.relpath(base, self.root)
        self._walk(base, "" if relative == "." else relative + "/", found)
        return found

    def _walk(self, folder: Path | str, relative: str, found: dict[str, str | None]) -> None:
        """Add to ``found`` every file under ``folder`` (whose key prefix is ``relative``), staging files left out."""
        try:
            entries = os.scandir(folder)
        except (FileNotFoundError, NotADirectoryError):
            return
        with entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    self._walk(entry.path, f"{relative}{entry.name}/", found)
                elif not entry.name.startswith(TMP_MARK) and _is_file(entry):
                    found[relative + entry.name] = None

    def remove_stale_staging(self, prefix: str) -> int:
        """Remove the staging files under ``prefix`` whose writer is gone (:func:`writer_gone`; never part
        of a manifest); returns how many."""
        base = self._path(prefix)
        stale = [p for p in base.rglob(f"{TMP_MARK}*") if writer_gone(p)] if base.exists() else []
        for path in stale:
            path.unlink(missing_ok=True)
        return len(stale)

    def delete(self, keys: list[str]) -> None:
        for key in keys:
            self._path(key).unlink(missing_ok=True)

    @contextmanager
    def local_copy(self, key: str) -> Iterator[Path]:
        yield self._path(key)


class _ObjectStoreLake:
    """What every lake in an object store shares: keys under ``<scheme>://<bucket>/<prefix>``, and
    staging in a local temporary file, because an object exists only once its upload completed
    (there is nothing to rename)."""

    scheme = ""

    def __init__(self, bucket: str, prefix: str) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def uri(self, key: str) -> str:
        return f"{self.scheme}://{self.bucket}/{self._key(key)}"

    def staging_path(self, key: str) -> Path:
        path = Path(tempfile.gettempdir()) / staging_name(key.rsplit("/", 1)[-1])
        path.touch(mode=0o600, exist_ok=False)
        return path

    def commit(self, staging: Path, key: str) -> None:
        try:
            self._upload(staging, key)
        finally:
            staging.unlink(missing_ok=True)

    def discard(self, staging: Path) -> None:
        staging.unlink(missing_ok=True)

    def remove_stale_staging(self, prefix: str) -> int:
        """Remove this host's local staging files (uploads in the temporary folder) whose writer is gone;
        ``prefix`` is not used: a local temporary file does not record its stream. Returns how many."""
        stale = [p for p in Path(tempfile.gettempdir()).glob(f"{TMP_MARK}*") if _STAGING.match(p.name)]
        stale = [p for p in stale if writer_gone(p)]
        for path in stale:
            path.unlink(missing_ok=True)
        return len(stale)

    @contextmanager
    def local_copy(self, key: str) -> Iterator[Path]:
        folder = Path(tempfile.mkdtemp(prefix="ip-lake-"))
        try:
            target = folder / key.rsplit("/", 1)[-1]
            self._download(key, target)
            yield target
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def get_json(self, key: str) -> Any:
        return json.loads(self._get_bytes(key))

    def get_bytes_many(self, keys: list[str]) -> list[bytes]:
        """The content of each key, :data:`READ_CONCURRENCY` at a time (boto3's clients and fsspec's
        filesystems may be shared by threads). Not fsspec's ``cat`` of a list: it expands ``*``, ``?``
        and ``[`` as a glob, and a key may hold them."""
        if len(keys) < 2:
            return [self._get_bytes(key) for key in keys]
        with ThreadPoolExecutor(min(READ_CONCURRENCY, len(keys)), thread_name_prefix="lake-read") as pool:
            return list(pool.map(self._get_bytes, keys))

    def _get_bytes(self, key: str) -> bytes:
        raise NotImplementedError

    def _upload(self, staging: Path, key: str) -> None:
        raise NotImplementedError

    def _download(self, key: str, target: Path) -> None:
        raise NotImplementedError


class S3Lake(_ObjectStoreLake):
    """A lake under ``s3://bucket/prefix`` through a boto3 client from dagster-aws's S3Resource.

    Uploads use boto3's transfer manager (multipart above 8 MiB).
    """

    scheme = "s3"

    def __init__(self, client: Any, bucket: str, prefix: str) -> None:
        super().__init__(bucket, prefix)
        self.client = client

    def _upload(self, staging: Path, key: str) -> None:
        self.client.upload_file(str(staging), self.bucket, self._key(key))

    def _download(self, key: str, target: Path) -> None:
        self.client.download_file(self.bucket, self._key(key), str(target))

    def put_json(self, key: str, obj: Any) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=_json_body(obj))

    def _get_bytes(self, key: str) -> bytes:
        """The object's content; ``FileNotFoundError`` naming its URI when there is none (as the other stores
        raise), what boto3 raises for any other failure."""
        try:
            return bytes(self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read())
        except self.client.exceptions.NoSuchKey as exc:
            raise FileNotFoundError(f"no object {self.uri(key)}") from exc

    def list_keys(self, prefix: str) -> list[str]:
        return sorted(self.list_versions(prefix))

    def list_versions(self, prefix: str) -> dict[str, str | None]:
        """Versions are S3's ETags (``ListObjectsV2``), which change with the object's content; ``None``
        for an object listed without one or with an empty one (an S3-compatible server may leave it out):
        read every time."""
        paginator = self.client.get_paginator("list_objects_v2")
        strip = len(self._key("")) if self.prefix else 0
        versions: dict[str, str | None] = {}
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
            versions.update((obj["Key"][strip:], obj.get("ETag") or None) for obj in page.get("Contents", []))
        return versions

    def delete(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1,000 keys
            chunk = [{"Key": self._key(k)} for k in keys[start : start + 1000]]
            if chunk:
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": chunk, "Quiet": True})


class FsspecLake(_ObjectStoreLake):
    """A lake under ``<scheme>://bucket/prefix`` through an fsspec filesystem: ``gs://`` with gcsfs,
    ``az://`` / ``abfs://`` with adlfs (Azure Blob Storage), or any fsspec filesystem whose
    ``put_file`` makes an object visible only once it is complete.

    ``fs`` must not cache listings (``use_listings_cache=False``): the landing lists manifests
    written by other processes. Only single-object operations: fsspec's ``rm`` and ``mv`` expand
    ``*``, ``?`` and ``[`` as a glob, and a key may hold them (a dropped file's name is a partition
    key). ``unsafe``: substrings a key may not hold for this filesystem (an Azure key's
    ``?versionid=``), refused with ``UnsafeNameError``. Raises what the filesystem raises
    (``OSError`` subclasses, ``FileNotFoundError`` for a missing key in :meth:`get_json`).
    """

    def __init__(self, fs: Any, scheme: str, bucket: str, prefix: str, unsafe: tuple[str, ...] = ()) -> None:
        super().__init__(bucket, prefix)
        self.fs = fs
        self.scheme = scheme
        self.unsafe = unsafe

    def _path(self, key: str) -> str:
        refuse_misread(key, self.unsafe, "lake key", f"the {self.scheme}:// client misreads")
        return f"{self.bucket}/{self._key(key)}"

    @property
    def protocols(self) -> tuple[str, ...]:
        """The URL schemes ``fs`` answers to (``("gs", "gcs")``, ``("abfs", "az", "abfss")``)."""
        protocol = self.fs.protocol
        return (protocol,) if isinstance(protocol, str) else tuple(protocol)

    def reader_uri(self, key: str) -> str:
        """``<protocol>://<bucket>/<prefix>/<key>`` for a reader holding ``fs`` (DuckDB with it
        registered); the key is checked as for every other operation. The protocol is the
        filesystem's first (``abfs`` for an ``az://`` lake): DuckDB names the files it read
        (``filename``) with it, and the loader matches those names to the manifests'."""
        return f"{self.protocols[0]}://{self._path(key)}"

    def _upload(self, staging: Path, key: str) -> None:
        self.fs.put_file(str(staging), self._path(key))

    def _download(self, key: str, target: Path) -> None:
        self.fs.get_file(self._path(key), str(target))

    def put_json(self, key: str, obj: Any) -> None:
        self.fs.pipe_file(self._path(key), _json_body(obj))

    def _get_bytes(self, key: str) -> bytes:
        return bytes(self.fs.cat_file(self._path(key)))

    def list_keys(self, prefix: str) -> list[str]:
        return sorted(self.list_versions(prefix))

    def list_versions(self, prefix: str) -> dict[str, str | None]:
        """Versions are the ETags gcsfs and adlfs report for each object (they change with every write,
        or with the content); ``None`` from a filesystem that reports none."""
        base, root = self._path(prefix), self._path("")  # root ends with "/"
        try:
            found = self.fs.find(base.rstrip("/"), detail=True)
        except FileNotFoundError:
            return {}
        if isinstance(found, list):  # adlfs, for a blob named like the folder: its path only, no details
            found = {path: {} for path in found}
        # find() of a folder also returns a file of the same name: keep what is under the prefix.
        return {
            path[len(root) :]: str(info["etag"]) if info.get("etag") else None
            for path, info in found.items()
            if path.startswith(base)
        }

    def delete(self, keys: list[str]) -> None:
        for path in [self._path(key) for key in keys]:  # all checked before the first delete
            with suppress(FileNotFoundError):
                self.fs.rm_file(path)


def _json_body(obj: Any) -> bytes:
    """A manifest or other lake JSON as stored: keys sorted (stable), one line. Not indented: with an
    ``indent`` the standard library encodes in pure Python, 0.35 ms against 0.05 ms for a file-drop
    partition's manifest, and a backfill of 1,781 partitions writes 1,781 manifests on the step's thread
    (``python -m json.tool`` shows one indented)."""
    return json.dumps(obj, sort_keys=True, default=str).encode()
