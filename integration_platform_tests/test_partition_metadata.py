"""``add_partition_metadata`` records exactly what Dagster's public call per partition records.

It builds Dagster's metadata accumulator itself (one type check instead of one per partition and call),
so this compares the stored materialisations of both paths in single-run backfills, and checks that the
bulk path was taken (it falls back to the call per partition when Dagster's internals are not there): a
Dagster upgrade that moves them fails here instead of silently bringing the quadratic cost back.
"""

from typing import Any

import dagster as dg
import pytest

from integration_platform.assets.partition_metadata import add_partition_metadata

pytestmark = pytest.mark.fast

DAYS = dg.DailyPartitionsDefinition(start_date="2024-01-01")
KEYS = list(DAYS.get_partition_keys()[:40])


def _figures(key: str) -> dict[str, Any]:
    return {"rows_landed": int(key[-2:]), "landing_id": f"landing-{key}", "dagster/row_count": 3 * int(key[-2:])}


def _backfill(asset: dg.AssetsDefinition, keys: list[str]) -> dict[str, dict[str, Any]]:
    """Materialise ``keys`` in one run; each partition's stored materialisation metadata (raw values)."""
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [asset],
            instance=instance,
            tags={"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]},
            raise_on_error=False,
        )
        assert result.success, [e.message for e in result.all_events if e.is_failure]
        events = instance.fetch_materializations(asset.key, limit=1000).records
        stored = {e.partition_key or "": e.asset_materialization for e in events}
    return {k: {name: v.value for name, v in m.metadata.items()} for k, m in stored.items() if m is not None}


def _asset(name: str, bulk: bool, keys: list[str]) -> dg.AssetsDefinition:
    @dg.asset(name=name, partitions_def=DAYS, backfill_policy=dg.BackfillPolicy.single_run())
    def _it(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        context.add_asset_metadata({"before": 1}, partition_key=keys[0])  # merged with, not replaced
        figures = {key: _figures(key) for key in keys}
        if bulk:
            add_partition_metadata(context, context.asset_key, figures)
        else:
            for key, metadata in figures.items():
                context.add_asset_metadata(metadata, asset_key=context.asset_key, partition_key=key)
        return dg.MaterializeResult(metadata={"run_wide": "yes"})

    return _it


def test_one_bulk_addition_stores_what_the_call_per_partition_stores(monkeypatch: pytest.MonkeyPatch) -> None:
    public = _backfill(_asset("public", False, KEYS), KEYS)
    calls: list[str | None] = []
    original = dg.AssetExecutionContext.add_asset_metadata

    def counted(
        self: dg.AssetExecutionContext, metadata: Any, asset_key: Any = None, partition_key: Any = None
    ) -> None:
        calls.append(partition_key)
        original(self, metadata, asset_key=asset_key, partition_key=partition_key)

    monkeypatch.setattr(dg.AssetExecutionContext, "add_asset_metadata", counted)
    bulk = _backfill(_asset("bulk", True, KEYS), KEYS)
    assert calls == [KEYS[0]], "the bulk path fell back to the call per partition (Dagster's internals moved?)"
    assert len(public) == len(KEYS)
    assert bulk == public
    assert bulk[KEYS[0]]["before"] == 1 and bulk[KEYS[0]]["rows_landed"] == 1
    assert bulk[KEYS[-1]]["landing_id"] == f"landing-{KEYS[-1]}"
    assert all(m["run_wide"] == "yes" for m in bulk.values())


def test_a_partition_outside_the_run_is_refused_as_dagster_refuses_it() -> None:
    @dg.asset(partitions_def=DAYS, backfill_policy=dg.BackfillPolicy.single_run())
    def outside(context: dg.AssetExecutionContext) -> None:
        add_partition_metadata(context, context.asset_key, {KEYS[0]: {"a": 1}, KEYS[-1]: {"a": 2}})

    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [outside],
            instance=instance,
            tags={"dagster/asset_partition_range_start": KEYS[0], "dagster/asset_partition_range_end": KEYS[5]},
            raise_on_error=False,
        )
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert f"partition key '{KEYS[-1]}' that is not being targeted" in str(failure.step_failure_data.error)
