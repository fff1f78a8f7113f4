"""Which dropped files make which partition, and which files a sensor tick should request.

Pure decisions (no I/O), so the sensor's behaviour is easy to reason about and test:

- :class:`DropRules` matches names (glob or regex) and derives a file's partition key: the
  date in its name (``date_regex`` + ``date_format``) or its mtime (UTC day) for daily
  partitions, the file name itself for per-file (dynamic) partitions.
- :func:`plan_tick` compares a listing with what the lake holds (:class:`Landed`, read from the
  stream's manifests, which record each landed file's version: size and mtime) and with the
  sensor's cursor (:class:`DropState`). A file is requested when the lake does not hold its
  current version and it is stable: seen unchanged at the previous tick (and so is every other file
  of its partition not landed yet, since the run takes them all), or accompanied by its
  marker file (no older than the file: :meth:`DropRules.marked`). The lake is the memory, so files
  landed by a backfill, by ``make run`` or by another deployment are never requested again, and a
  re-published file (a new version) is. The
  cursor holds only files not landed yet: what was seen (for stability) and what was requested
  (so a run in flight is not requested twice); it is empty once everything has landed.
"""

import datetime as dt
import fnmatch
import hashlib
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from integration_platform.sources.files.remote_files import RemoteFile

#: A date of 8 digits or ISO form at the start of its run of digits, which may go on with a compact
#: time (``HH``, ``HHMM`` or ``HHMMSS``: ``orders_20210101093000.csv``) and no more: so
#: ``orders_120210101.csv`` holds no date rather than 1202-10-10. The first such run that is a real
#: date is the file's (:meth:`DropRules.partition_key`): ``export_1609459200_20210101.csv`` is 2021-01-01.
DEFAULT_DATE_REGEX = r"(?<!\d)(\d{8}|\d{4}-\d{2}-\d{2})(?:(?:[01]\d|2[0-3])(?:[0-5]\d){0,2})?(?!\d)"


@dataclass(frozen=True)
class DropRules:
    """How a stream recognises its files and partitions them."""

    glob: str | None = None
    regex: str | None = None
    partition: Literal["daily", "per_file"] = "daily"
    date_from: Literal["name", "mtime"] = "name"
    date_regex: str = DEFAULT_DATE_REGEX
    date_format: str | None = None
    marker_suffix: str | None = None
    #: Whether a marker must be no older than its file (file servers, where a file is listed while it is
    #: written): an object store lists an object only once uploaded, and parallel uploaders finish the
    #: small marker first, so there a file newer than its marker is no upload in progress.
    marker_after_file: bool = True

    def matches(self, name: str) -> bool:
        """Whether the file ``name`` belongs to the stream (marker files never do)."""
        if self.marker_suffix and name.endswith(self.marker_suffix):
            return False
        if self.regex is not None:
            return re.fullmatch(self.regex, name) is not None
        return fnmatch.fnmatchcase(name, self.glob or "*")

    def listed(self, name: str) -> bool:
        """Whether a listing should hand over the file ``name``: one of the stream's files or its marker.
        Any other name is passed over unchecked (``RemoteFiles.list``'s ``accept``)."""
        suffix = self.marker_suffix
        return self.matches(name) or bool(suffix and name.endswith(suffix) and self.matches(name[: -len(suffix)]))

    def marked(self, listing: Iterable[RemoteFile]) -> set[str]:
        """The names of the files in ``listing`` whose own marker (``<name><marker_suffix>``) is listed too and,
        with :attr:`marker_after_file`, is no older than the file (whole seconds): on a file server a marker
        older than its file marks an earlier version, and the file, re-sent under its name, may still be
        being uploaded (empty without ``marker_suffix``)."""
        suffix = self.marker_suffix
        if not suffix:
            return set()
        files = list(listing)
        markers = {f.name[: -len(suffix)]: f for f in files if f.name.endswith(suffix)}
        return {
            f.name
            for f in files
            if (marker := markers.get(f.name)) is not None
            and (not self.marker_after_file or int(marker.mtime) >= int(f.mtime))
        }

    def partition_key(self, file: RemoteFile) -> str | None:
        """The file's partition key, or ``None`` when its name holds no date the rules can read: the first
        match of ``date_regex`` that is a real date (a number before it, a Unix time or an id, is passed over)."""
        if self.partition == "per_file":
            return file.name
        if self.date_from == "mtime":
            return dt.datetime.fromtimestamp(file.mtime, dt.UTC).date().isoformat()
        for found in re.finditer(self.date_regex, file.name):  # the first match that is a real date
            text = found.group(1) if found.groups() else found.group(0)
            try:
                if self.date_format:
                    return dt.datetime.strptime(text, self.date_format).date().isoformat()
                iso = text if "-" in text else f"{text[:4]}-{text[4:6]}-{text[6:8]}"
                return dt.date.fromisoformat(iso).isoformat()
            except ValueError:
                continue
        return None


#: The manifest ``extra`` entry of a file stream's landing: ``{file name: version}``.
LANDED_FILES = "landed_files"


def version(file: RemoteFile) -> str:
    """A file version's signature: size and mtime (whole seconds), and the store's version tag where
    it has one (a GCS generation, an Azure ETag: a re-published object within the same second)."""
    plain = f"{file.size}:{int(file.mtime)}"
    return f"{plain}:{file.tag}" if file.tag else plain


#: The landing id a run key holds for a partition the lake has no landing of.
NO_LANDING = "none"


@dataclass
class Landed:
    """What the stream's lake holds, from its manifests: ``versions`` of the files its landings
    recorded, and for landings that recorded none (made before they did) the partition's landing
    time (``landed_at``, UNIX seconds): a file of that partition no newer than it was landed.
    ``landings``: each partition's current landing id (``""`` for an unpartitioned landing)."""

    versions: dict[str, str] = field(default_factory=dict)
    landed_at: dict[str, float] = field(default_factory=dict)
    landings: dict[str, str] = field(default_factory=dict)

    def holds(self, file: RemoteFile, partition: str | None) -> bool:
        """Whether the lake holds this version of ``file`` (of ``partition``)."""
        if file.name in self.versions:
            return self.versions[file.name] == version(file)
        at = self.landed_at.get(partition or "")
        return at is not None and file.mtime <= at


def landed(manifests: Iterable[tuple[str | None, dict[str, object], float, str]]) -> Landed:
    """:class:`Landed` from ``(partition, extra, landed_at, landing_id)`` of the stream's active manifests,
    oldest landing first (a later landing of a partition is its current one)."""
    result = Landed()
    for partition, extra, at, landing_id in manifests:
        result.landings[partition or ""] = landing_id
        files = extra.get(LANDED_FILES)
        if isinstance(files, dict):
            result.versions.update({str(k): str(v) for k, v in files.items()})
        elif partition is not None:
            result.landed_at[partition] = max(at, result.landed_at.get(partition, 0.0))
    return result


@dataclass
class DropState:
    """The sensor cursor: the version of each file not landed yet at the last look, and the version
    last requested of each file not landed yet."""

    looked: dict[str, str] = field(default_factory=dict)
    requested: dict[str, str] = field(default_factory=dict)

    def to_cursor(self) -> str:
        """The state as the sensor's cursor string (compact JSON)."""
        return json.dumps({"looked": self.looked, "requested": self.requested}, separators=(",", ":"))

    @classmethod
    def from_cursor(cls, cursor: str | None) -> "DropState":
        """The state kept in a sensor cursor (empty for ``None``, the first tick)."""
        data = json.loads(cursor) if cursor else {}
        return cls(dict(data.get("looked", {})), dict(data.get("requested", {})))


@dataclass
class TickPlan:
    """What one sensor tick decided."""

    partitions: dict[str, list[RemoteFile]] = field(default_factory=dict)
    waiting: list[str] = field(default_factory=list)
    in_flight: list[str] = field(default_factory=list)
    unparsable: list[str] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)
    #: Stable files not requested because another file of their partition is not stable yet.
    held: list[str] = field(default_factory=list)
    landed: int = 0
    state: DropState = field(default_factory=DropState)
    #: Each requested partition's current landing id in the lake (:data:`NO_LANDING` for none).
    landings: dict[str, str] = field(default_factory=dict)

    def run_key(self, partition: str) -> str:
        """Unique per partition, set of file versions and the partition's current landing in the lake:
        Dagster runs each key once, so a key without the landing would never run again once the lake
        stopped holding a file version it once landed (the day re-landed from other files, a restored
        lake) and the same file came again. ``KeyError`` for a partition the plan did not request."""
        files = sorted((f.name, version(f)) for f in self.partitions[partition])
        signed = json.dumps([self.landings[partition], files])
        return f"{partition}:{hashlib.sha256(signed.encode()).hexdigest()[:16]}"

    def skip_reason(self, listed: int) -> str:
        """Why nothing was requested, as the sensor page shows it; ``listed``: the stream's files listed (markers
        not counted)."""
        parts = [f"{listed} file(s) listed", f"{self.landed} already in the lake"]
        if self.waiting:
            parts.append(f"{len(self.waiting)} waiting to be stable ({', '.join(self.waiting[:3])})")
        if self.held:
            parts.append(
                f"{len(self.held)} stable, waiting for another file of their partition ({', '.join(self.held[:3])})"
            )
        if self.in_flight:
            parts.append(f"{len(self.in_flight)} requested, not landed yet")
        if self.unparsable:
            parts.append(f"{len(self.unparsable)} without a valid date in the name ({', '.join(self.unparsable[:3])})")
        if self.outside:
            parts.append(f"{len(self.outside)} dated outside the stream's partitions ({', '.join(self.outside[:3])})")
        return "; ".join(parts)


def plan_tick(
    listing: Iterable[RemoteFile],
    state: DropState,
    rules: DropRules,
    max_partitions: int,
    lake: Landed,
    accepts: Callable[[str], bool] | None = None,
) -> TickPlan:
    """Decide which partitions to request from a directory listing and what the lake holds.

    A file qualifies when it matches, the lake does not hold its version, it was not requested in
    that version already and it is stable; without markers, also only once every other file of its
    partition the lake does not hold is stable (``held`` otherwise): the run lands every file of the
    partition it lists, and a second file of the day still being written landed half. At most
    ``max_partitions`` partitions are requested per tick (the rest wait for the next tick, their files
    staying in the cursor). ``accepts``: whether the stream has a partition of that key (a file dated
    before ``start`` or from ``end`` on is listed in ``outside``, not requested: a request for a key
    the stream lacks fails the tick).
    """
    everything = list(listing)
    files = sorted((f for f in everything if rules.matches(f.name)), key=lambda f: f.name)
    markers = rules.marked(everything)
    plan = TickPlan()
    ready: list[tuple[RemoteFile, str, str]] = []  # (file, partition, version) of the stable files
    growing: set[str | None] = set()  # partitions with a file not stable yet
    for file in files:
        current, key = version(file), rules.partition_key(file)
        if lake.holds(file, key):
            plan.landed += 1
            continue
        plan.state.looked[file.name] = current
        if state.requested.get(file.name) == current:
            plan.state.requested[file.name] = current
            plan.in_flight.append(file.name)
            continue
        stable = file.name in markers if rules.marker_suffix else state.looked.get(file.name) == current
        if not stable:
            plan.waiting.append(file.name)
            growing.add(key)
            continue
        if key is None:
            plan.unparsable.append(file.name)
            continue
        if accepts is not None and not accepts(key):
            plan.outside.append(file.name)
            continue
        ready.append((file, key, current))
    for file, key, current in ready:
        if key in growing and not rules.marker_suffix:
            # a run lands every file of its partition listed when it starts, the growing one half
            # written; with markers it leaves out the files without their own, so those need not wait
            plan.held.append(file.name)
            continue
        if key not in plan.partitions and len(plan.partitions) >= max_partitions:
            continue
        plan.partitions.setdefault(key, []).append(file)
        plan.landings[key] = lake.landings.get(key, NO_LANDING)
        plan.state.requested[file.name] = current
    return plan
