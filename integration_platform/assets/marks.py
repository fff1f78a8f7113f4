"""High-water marks in Dagster's materialisation metadata: the one place they are written and read.

Every incremental asset (a stream's lake asset, broker publishing, reverse-ETL syncs) keeps its mark
as ``cursor_after`` in its latest materialisation, and the run before it as ``cursor_before``; both
are JSON ``{"kind": ..., "text": ...}`` (:class:`~integration_platform.core.cursors.CursorValue`),
so the value's type survives (a text mark compared with an integer column once compared as text:
``'100' < '99'``). Reading also accepts the two older forms, so marks written before this module
are kept: text with its kind in ``cursor_kind`` (reverse ETL), and bare text (broker publishing,
read as kind ``string`` and compared after a cast to the column's type).
"""

import os
from typing import Any

import dagster as dg

from integration_platform.core.cursors import CursorValue

#: Set to ``1`` to let assets that keep a mark run on an ephemeral instance (see ``refuse_ephemeral_marks``).
ALLOW_EPHEMERAL_ENV = "INTEGRATION_PLATFORM_ALLOW_EPHEMERAL"


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


def read_acknowledged(instance: dg.DagsterInstance, key: dg.AssetKey) -> list[str]:
    """The ids listed as ``acknowledged_at_mark`` in ``key``'s latest materialisation (a reverse-ETL sync's
    rows acknowledged at or after its mark), or ``[]``."""
    event = instance.get_latest_materialization_event(key)
    if event is None or event.asset_materialization is None:
        return []
    value = event.asset_materialization.metadata.get("acknowledged_at_mark")
    raw: Any = value.value if value is not None else None
    return [str(v) for v in raw] if isinstance(raw, list) else []


def mark_metadata(before: CursorValue | None, after: CursorValue | None) -> dict[str, dg.MetadataValue]:
    """``cursor_before`` and ``cursor_after`` as the metadata entries :func:`read_mark` reads (``{}`` for none),
    and beside them ``high_water_mark``: the mark after the run as a person reads it (its text, e.g.
    ``2024-05-01 12:00:00``), absent when there is none."""
    readable = {"high_water_mark": dg.MetadataValue.text(after.text)} if after else {}
    return {
        "cursor_before": dg.MetadataValue.json(before.as_json() if before else {}),
        "cursor_after": dg.MetadataValue.json(after.as_json() if after else {}),
        **readable,
    }


def refuse_ephemeral_marks(context: dg.AssetExecutionContext, incremental: bool, what: str) -> None:
    """Raise ``dg.Failure`` when an asset that keeps a high-water mark (an incremental stream, a sync or a
    publication with a cursor; ``incremental``) runs on an ephemeral instance (no ``DAGSTER_HOME``): the
    mark would be kept nowhere, so every run would silently start from scratch (reload or re-send
    everything). The environment variable :data:`ALLOW_EPHEMERAL_ENV` set to ``1`` allows it."""
    if not incremental or not context.instance.is_ephemeral or os.environ.get(ALLOW_EPHEMERAL_ENV) == "1":
        return
    raise dg.Failure(
        description=(
            f"{what} is incremental, but this run uses a throw-away Dagster instance (DAGSTER_HOME is not "
            "set), so its high-water mark would be lost and every run would start from scratch. Set "
            "DAGSTER_HOME to a folder that persists (make run and make dev use .dagster_home), or set "
            f"{ALLOW_EPHEMERAL_ENV}=1 to accept starting from scratch each time."
        )
    )
