"""Which dropped files make which partition, and which files a sensor tick should request.

Pure decisions (no I/O), so the sensor's behaviour is easy to reason about and test:

- :class:`DropRules` matches names (glob or regex) and derives a file's partition key: the
  date in its name (``date_regex`` + ``date_format``) or its mtime (UTC day) for daily
  partitions, the file name itself for per-file (dynamic) partitions.
- :func:`plan_tick` compares a listing with the sensor's cursor (:class:`DropState`): a file
  is requested once per version (size and mtime), only when stable: seen unchanged at the
  previous tick, or accompanied by its marker file. A re-published file is a new version
  and is requested again; its partition is landed again and replaces the old rows.
"""

import datetime as dt
import fnmatch
import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from integration_platform.sources.files.remote_files import RemoteFile


@dataclass(frozen=True)
class DropRules:
    """How a stream recognises its files and partitions them."""

    glob: str | None = None
    regex: str | None = None
    partition: Literal["daily", "per_file"] = "daily"
    date_from: Literal["name", "mtime"] = "name"
    date_regex: str = r"(\d{8}|\d{4}-\d{2}-\d{2})"
    date_format: str | None = None
    marker_suffix: str | None = None

    def matches(self, name: str) -> bool:
        """Whether the file ``name`` belongs to the stream (marker files never do)."""
        if self.marker_suffix and name.endswith(self.marker_suffix):
            return False
        if self.regex is not None:
            return re.fullmatch(self.regex, name) is not None
        return fnmatch.fnmatchcase(name, self.glob or "*")

    def partition_key(self, file: RemoteFile) -> str | None:
        """The file's partition key, or ``None`` when its name holds no date the rules can read."""
        if self.partition == "per_file":
            return file.name
        if self.date_from == "mtime":
            return dt.datetime.fromtimestamp(file.mtime, dt.UTC).date().isoformat()
        found = re.search(self.date_regex, file.name)
        if found is None:
            return None
        text = found.group(1) if found.groups() else found.group(0)
        try:
            if self.date_format:
                return dt.datetime.strptime(text, self.date_format).date().isoformat()
            return dt.date.fromisoformat(text if "-" in text else f"{text[:4]}-{text[4:6]}-{text[6:8]}").isoformat()
        except ValueError:
            return None


def version(file: RemoteFile) -> str:
    """A file version's signature: size and mtime (whole seconds)."""
    return f"{file.size}:{int(file.mtime)}"


@dataclass
class DropState:
    """The sensor cursor: each file's version at the last look, and the version last requested."""

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
    unparsable: list[str] = field(default_factory=list)
    state: DropState = field(default_factory=DropState)

    def run_key(self, partition: str) -> str:
        """Unique per partition and set of file versions: Dagster runs each key once."""
        files = sorted((f.name, version(f)) for f in self.partitions[partition])
        return f"{partition}:{hashlib.sha256(json.dumps(files).encode()).hexdigest()[:16]}"


def plan_tick(listing: Iterable[RemoteFile], state: DropState, rules: DropRules, max_partitions: int) -> TickPlan:
    """Decide which partitions to request from a directory listing.

    A file qualifies when it matches, its version differs from the one last requested and it
    is stable; at most ``max_partitions`` partitions are requested per tick (the rest wait for
    the next tick, their files staying unrequested in the cursor).
    """
    everything = list(listing)
    files = sorted((f for f in everything if rules.matches(f.name)), key=lambda f: f.name)
    names = {f.name for f in files}
    suffix = rules.marker_suffix
    markers = {f.name[: -len(suffix)] for f in everything if f.name.endswith(suffix)} if suffix else set()
    plan = TickPlan(state=DropState(looked={f.name: version(f) for f in files}, requested=dict(state.requested)))
    for name in list(plan.state.requested):
        if name not in names:  # deleted upstream: forget it, so a re-drop is new
            del plan.state.requested[name]
    for file in files:
        current = version(file)
        if state.requested.get(file.name) == current:
            continue
        stable = file.name in markers if rules.marker_suffix else state.looked.get(file.name) == current
        if not stable:
            plan.waiting.append(file.name)
            continue
        key = rules.partition_key(file)
        if key is None:
            plan.unparsable.append(file.name)
            continue
        if key not in plan.partitions and len(plan.partitions) >= max_partitions:
            continue
        plan.partitions.setdefault(key, []).append(file)
        plan.state.requested[file.name] = current
    return plan
