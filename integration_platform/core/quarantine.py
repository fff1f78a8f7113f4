"""Quarantine: records a stream rejected, kept in the lake as Parquet beside the stream.

Layout: ``<source>/<stream>/_quarantine/<window>.parquet`` with columns ``origin`` (URL,
file and line, queue and delivery tag), ``reason``, ``record`` (the record as JSON text; a lone
surrogate, which UTF-8 cannot hold, as its JSON escape ``\\ud800``),
``run_id`` and ``quarantined_at`` (UTC). A window's file is rewritten each time the window
lands (a retry replaces it; no rejections removes it); a full landing removes the
files of the windows it replaced (see ``landing._collect_garbage``).
"""

import datetime as dt
import json
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from integration_platform.core.lake import LakeStore
from integration_platform.core.landing import QUARANTINE, quarantine_key
from integration_platform.core.records import Rejected, utf8_safe
from integration_platform.core.streams import StreamSpec

SCHEMA = pa.schema(
    [
        ("origin", pa.string()),
        ("reason", pa.string()),
        ("record", pa.string()),
        ("run_id", pa.string()),
        ("quarantined_at", pa.timestamp("us", tz="UTC")),
    ]
)


def write_quarantine(store: LakeStore, spec: StreamSpec, window: str, rejected: Sequence[Rejected], run_id: str) -> int:
    """Replace the window's quarantine file with ``rejected``; returns how many were written."""
    key = quarantine_key(spec, window)
    if not rejected:
        store.delete([key])  # both stores ignore a key that is not there
        return 0
    now = dt.datetime.now(dt.UTC)
    table = pa.table(
        [
            [utf8_safe(r.origin) for r in rejected],
            [utf8_safe(r.reason) for r in rejected],
            [utf8_safe(json.dumps(r.record, ensure_ascii=False, default=str)) for r in rejected],
            [run_id] * len(rejected),
            [now] * len(rejected),
        ],
        schema=SCHEMA,
    )
    staging = store.staging_path(key)
    try:
        pq.write_table(table, staging, compression="zstd")
        store.commit(staging, key)
    except BaseException:
        store.discard(staging)
        raise
    return len(rejected)


def quarantined_rows(store: LakeStore, spec: StreamSpec) -> int:
    """Records currently in the stream's quarantine (all windows), each set-aside record counted once
    however many windows hold it: an incremental stream re-reads the records at its high-water mark
    (``>=``) until the mark moves, and each run set the same rejected record aside again, so a sum
    over the windows' files counted one bad record once per run. A record held twice in one window
    (the source sent it twice) counts twice: the count of a record is the most any one window holds.
    Records are compared by their JSON text; reads the ``record`` column of every window's file."""
    most: dict[str, int] = {}
    for key in store.list_keys(f"{spec.path}/{QUARANTINE}/"):
        if key.endswith(".parquet"):
            with store.local_copy(key) as path:
                counts = pc.value_counts(pq.read_table(path, columns=["record"]).column("record"))
            for entry in counts.to_pylist():
                most[entry["values"]] = max(most.get(entry["values"], 0), entry["counts"])
    return sum(most.values())
