"""High-water marks in Dagster's materialisation metadata: the one place they are written and read.

Every incremental asset (a stream's lake asset, broker publishing, reverse-ETL syncs) keeps its mark
as ``cursor_after`` in its latest materialisation, and the run before it as ``cursor_before``; both
are JSON ``{"kind": ..., "text": ...}`` (:class:`~integration_platform.core.cursors.CursorValue`),
so the value's type survives (a text mark compared with an integer column once compared as text:
``'100' < '99'``). Reading also accepts the two older forms, so marks written before this module
are kept: text with its kind in ``cursor_kind`` (reverse ETL), and bare text (broker publishing,
read as kind ``string`` and compared after a cast to the column's type).
"""

from typing import Any

import dagster as dg

from integration_platform.core.cursors import CursorValue


def read_mark(instance: dg.DagsterInstance, key: dg.AssetKey) -> CursorValue | None:
    """The high-water mark of ``key``'s latest materialisation, or ``None`` (never materialised, or no
    rows yet)."""
    event = instance.get_latest_materialization_event(key)
    if event is None or event.asset_materialization is None:
        return None
    metadata = event.asset_materialization.metadata
    value = metadata.get("cursor_after")
    if value is None:
        return None
    raw: Any = value.value
    if isinstance(raw, dict):
        return CursorValue.from_json(raw) if raw else None
    if raw in ("", None):
        return None
    kind = metadata.get("cursor_kind")
    return CursorValue(str(kind.value) if kind is not None and kind.value else "string", str(raw))


def mark_metadata(before: CursorValue | None, after: CursorValue | None) -> dict[str, dg.MetadataValue]:
    """``cursor_before`` and ``cursor_after`` as the metadata entries :func:`read_mark` reads (``{}`` for none)."""
    return {
        "cursor_before": dg.MetadataValue.json(before.as_json() if before else {}),
        "cursor_after": dg.MetadataValue.json(after.as_json() if after else {}),
    }
