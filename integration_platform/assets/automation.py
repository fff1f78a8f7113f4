"""Declarative automation: a warehouse table follows its lake asset without waiting for a schedule.

Materialising or backfilling a lake asset from the UI (or a drop sensor's run of the lake asset
alone) used to leave the warehouse stale until the next refresh schedule. Each warehouse asset
carries :data:`FOLLOWS_LAKE`, Dagster's ``eager`` condition over every partition (``eager`` alone
considers only the latest time partition, so a backfilled day would never be loaded): requested
when its lake asset (or partition) was updated by a run that did not already load it, and not while
either is in progress or the lake partition is missing. :data:`warehouse_follows_lake` is the
automation sensor that evaluates it, running by default (Dagster's own default automation sensor
starts stopped); it needs the daemon (``make dev``), and ``make run`` loads in the same run anyway.
"""

import dagster as dg

#: ``eager`` without its "latest time window only" clause (see the module doc).
FOLLOWS_LAKE = (
    dg.AutomationCondition.eager()
    .without(dg.AutomationCondition.in_latest_time_window())
    .with_label("follows its lake asset")
)

#: Evaluates every warehouse asset's condition every 30 s while the daemon runs.
warehouse_follows_lake = dg.AutomationConditionSensorDefinition(
    "warehouse_follows_lake",
    target=dg.AssetSelection.key_prefixes("warehouse"),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Loads a warehouse table (or partition) when its lake asset was updated without it.",
)
