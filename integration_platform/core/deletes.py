"""Delete detection without a change log: primary keys the lake holds that the source no longer has.

For databases without a log to read (SQLite, a read replica, any SQLAlchemy dialect), a cursor
stream cannot see a deleted row. With ``delete_missing``, every run after the incremental landing
compares the source's primary keys with the keys the stream's landings hold now and lands the
difference as *tombstones*: a landing of key columns and ``_ip_op = 'delete'`` (manifest extra
``tombstones: true``), which the loader applies as deletes (:mod:`~integration_platform.core.loading`)
and every count of the stream honours (:func:`~integration_platform.core.loading.live_keys`).

Written here because it is part of the landing path (the tombstones are a landing like any other,
so the lake stays the truth the warehouse is rebuilt from). Memory stays bounded for any table
size: the source's keys arrive in batches, and both key sets live in an in-memory DuckDB with a
memory limit that spills to a temporary folder.
"""

import dataclasses
import tempfile
from collections.abc import Iterable
from contextlib import ExitStack

import duckdb
import pyarrow as pa

from integration_platform.core.lake import LakeStore
from integration_platform.core.landing import Manifest, active_manifests, land, list_manifests, stamped_window
from integration_platform.core.loading import live_keys_over, quote
from integration_platform.core.streams import OP_COLUMN, StreamSpec

#: Manifest ``extra`` key of a landing of tombstones.
TOMBSTONES_KEY = "tombstones"
MEMORY_LIMIT = "256MB"


def land_deletes(
    store: LakeStore, spec: StreamSpec, source_keys: Iterable[pa.RecordBatch], run_id: str
) -> Manifest | None:
    """Land tombstones for the keys the stream holds that ``source_keys`` (every primary key at the
    source now, in batches of the key columns) lacks; returns their landing, or ``None`` when nothing
    was deleted. Raises ``ValueError`` for a stream without a primary key; whatever the source or the
    landing raises (nothing is landed then)."""
    if not spec.primary_key:
        raise ValueError(f"stream {spec.path}: delete detection compares primary keys; the stream has none")
    keys = ", ".join(quote(k) for k in spec.primary_key)
    manifests = active_manifests(list_manifests(store, spec))
    with ExitStack() as stack, duckdb.connect() as conn:
        spill = stack.enter_context(tempfile.TemporaryDirectory(prefix="ip-deletes-"))
        conn.execute(f"SET memory_limit = '{MEMORY_LIMIT}'")
        conn.execute("SET temp_directory = ?", [spill])
        query = live_keys_over(stack, store, spec, manifests)
        if query is None:
            return None
        conn.execute(f"CREATE TEMP TABLE held AS {query[0]}", query[1])
        conn.execute(f"CREATE TEMP TABLE present AS SELECT {keys} FROM held LIMIT 0")
        for batch in source_keys:
            conn.register("_ip_batch", pa.Table.from_batches([batch]))
            conn.execute(f"INSERT INTO present SELECT {keys} FROM _ip_batch")
            conn.unregister("_ip_batch")
        gone = conn.execute(
            f"SELECT {keys}, 'delete' AS {quote(OP_COLUMN)} FROM (SELECT * FROM held EXCEPT SELECT * FROM present) "
            f"ORDER BY {keys}"
        ).to_arrow_table()
    if not gone.num_rows:
        return None
    window = stamped_window("deletes", run_id)
    keys_only = dataclasses.replace(spec, cursor=None)  # a tombstone has no cursor value: it moves no mark
    return land(store, keys_only, window, gone.to_batches(), gone.schema, full=False, extra={TOMBSTONES_KEY: True})
