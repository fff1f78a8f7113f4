"""Per-partition metadata of a single-run backfill, added in one step instead of one call per partition.

Each partition of a range keeps its own materialisation with its own figures (row counts, landing id),
which Dagster takes from ``context.add_asset_metadata(metadata, partition_key=key)``. Each such call
rebuilds Dagster's metadata accumulator, a typed record whose constructor checks the types of every
entry added so far (``dagster_shared.check.mapping_param``): n partitions cost n²/2 entry checks, 1.1-1.3 s
of a step's thread at 1,781 daily partitions (cProfile, Dagster 1.13.27: 1.09 of 1.29 s in that check).
:func:`add_partition_metadata` validates the partition keys once and builds the accumulator once, from
Dagster's own record types, so the check runs over each entry once. It reaches into the step context
(``_step_execution_context._metadata_accumulator``, Dagster 1.13.27, pinned in ``pyproject.toml``): where
that is not there it falls back to the public call per partition; a test compares what both paths store
and fails when the fallback is taken, so an upgrade that moves those internals is seen.
"""

from collections.abc import Mapping
from typing import Any

import dagster as dg

try:
    from dagster._core.execution.context.metadata_logging import AssetMetadataHandle, OutputMetadataAccumulator
except ImportError:  # pragma: no cover - another Dagster than the pinned one: the public call per partition
    AssetMetadataHandle = OutputMetadataAccumulator = None  # type: ignore[assignment,misc]


def add_partition_metadata(
    context: dg.AssetExecutionContext, asset_key: dg.AssetKey, by_partition: Mapping[str, Mapping[str, Any]]
) -> None:
    """Add ``by_partition`` (partition key -> metadata) to the materialisations of ``asset_key``, exactly as
    ``context.add_asset_metadata(metadata, asset_key=asset_key, partition_key=key)`` for each key in turn.

    Raises ``dagster.DagsterInvariantViolationError`` (as that call does) when ``asset_key`` is not being
    materialised or a key is not one of the run's partitions.
    """
    step: Any = getattr(context.op_execution_context, "_step_execution_context", None)
    accumulator = getattr(step, "_metadata_accumulator", None)
    if (
        OutputMetadataAccumulator is None
        or not isinstance(accumulator, OutputMetadataAccumulator)
        or context.assets_def.partitions_def is None  # Dagster's own call says why that is refused
        or len(by_partition) < 2
    ):
        for key, metadata in by_partition.items():
            context.add_asset_metadata(metadata, asset_key=asset_key, partition_key=key)
        return
    if asset_key not in context.assets_def.keys:
        raise dg.DagsterInvariantViolationError(
            f"Attempted to add metadata for asset key '{asset_key}' that is not being materialized."
        )
    targeted = set(context.partition_keys)
    for key in by_partition:
        if key not in targeted:
            raise dg.DagsterInvariantViolationError(
                f"Attempted to add metadata for partition key '{key}' that is not being targeted."
            )
    entries = dict(accumulator.per_output_metadata)
    for key, metadata in by_partition.items():
        handle = AssetMetadataHandle(asset_key=asset_key, partition_key=key)
        entries[handle] = {**entries.get(handle, {}), **metadata}
    step._metadata_accumulator = OutputMetadataAccumulator(per_output_metadata=entries)
