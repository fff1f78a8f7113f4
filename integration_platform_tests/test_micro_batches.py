"""The core's micro-batch landing (queues, and every log-like source after them), without Dagster or a
broker: each batch is acknowledged only after its landing committed, a redelivered batch lands only the
rows the lake lacks, and a failed landing leaves its batch unacknowledged."""

from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pytest

from integration_platform.core.lake import LocalLake
from integration_platform.core.landing import Manifest, active_manifests, list_manifests
from integration_platform.core.micro_batches import MicroBatch, land_micro_batches
from integration_platform.core.streams import StreamSpec

pytestmark = pytest.mark.fast

SPEC = StreamSpec(source="shop", name="orders", write_disposition="merge", primary_key=("id",))


def rows(*ids: int) -> pa.Table:
    return pa.table({"id": pa.array(ids, pa.int64()), "amount": pa.array([i * 1.5 for i in ids])})


def landed_ids(lake: LocalLake) -> list[int]:
    ids: list[int] = []
    for manifest in active_manifests(list_manifests(lake, SPEC)):
        for file in manifest.files:
            with lake.local_copy(file.key) as path:
                ids += pa.parquet.read_table(path).column("id").to_pylist()
    return sorted(ids)


def test_each_batch_is_acknowledged_after_its_own_commit(tmp_path: Path) -> None:
    lake = LocalLake(tmp_path / "lake")
    acknowledged: list[tuple[int, int]] = []

    def batch(table: pa.Table | None, n: int) -> MicroBatch:
        def acknowledge(manifest: Manifest | None) -> None:
            # What a broker needs: the rows are in a committed manifest when it is told.
            landed = len(active_manifests(list_manifests(lake, SPEC)))
            acknowledged.append((n, landed))
            assert (manifest is None) == (table is None)

        return MicroBatch(table, False, acknowledge, extra={"batch": n})

    stats = land_micro_batches(lake, SPEC, [batch(rows(1, 2), 1), batch(None, 2), batch(rows(3), 3)], "run12345xyz")
    assert acknowledged == [(1, 1), (2, 1), (3, 2)]
    assert (stats.rows_landed, stats.batches, stats.already_landed) == (3, 2, 0)
    assert stats.windows is not None and all(w.startswith("batch-") and w.endswith("-run12345") for w in stats.windows)
    manifests = active_manifests(list_manifests(lake, SPEC))
    assert [m.extra["batch"] for m in manifests] == [1, 3]
    assert landed_ids(lake) == [1, 2, 3]


def test_a_redelivered_batch_lands_only_what_the_lake_lacks(tmp_path: Path) -> None:
    lake = LocalLake(tmp_path / "lake")
    land_micro_batches(lake, SPEC, [MicroBatch(rows(1, 2, 3), False, lambda m: None)], "first")
    # The run died before acknowledging: the broker delivers 1-3 again with 4, then 4 again.
    again = [MicroBatch(rows(1, 2, 3, 4), True, lambda m: None), MicroBatch(rows(4, 5), True, lambda m: None)]
    stats = land_micro_batches(lake, SPEC, again, "second")
    assert (stats.rows_landed, stats.already_landed) == (2, 4)
    assert landed_ids(lake) == [1, 2, 3, 4, 5]


def test_a_batch_not_marked_redelivered_is_not_filtered(tmp_path: Path) -> None:
    """Only the source knows a redelivery; unmarked batches are not read against the lake (cost)."""
    lake = LocalLake(tmp_path / "lake")
    land_micro_batches(lake, SPEC, [MicroBatch(rows(1), False, lambda m: None)], "first")
    stats = land_micro_batches(lake, SPEC, [MicroBatch(rows(1), False, lambda m: None)], "second")
    assert stats.already_landed == 0 and landed_ids(lake) == [1, 1]


class ManifestFails(LocalLake):
    """A real local lake whose manifest writes fail after ``ok`` of them (a full disk, a lost mount)."""

    def __init__(self, root: Path, ok: int) -> None:
        super().__init__(root)
        self.ok = ok

    def put_json(self, key: str, obj: object) -> None:
        if self.ok == 0:
            raise OSError(f"no space left writing {key}")
        self.ok -= 1
        super().put_json(key, obj)


def test_a_failed_landing_leaves_its_batch_unacknowledged(tmp_path: Path) -> None:
    lake = ManifestFails(tmp_path / "lake", ok=1)
    acknowledged: list[int] = []

    def acknowledger(n: int) -> Callable[[Manifest | None], None]:
        return lambda manifest: acknowledged.append(n)

    batches = [MicroBatch(rows(n), False, acknowledger(n)) for n in (1, 2, 3)]
    with pytest.raises(OSError, match="no space left"):
        land_micro_batches(lake, SPEC, batches, "run")
    assert acknowledged == [1]
    assert landed_ids(lake) == [1]


def test_micro_batches_need_a_primary_key(tmp_path: Path) -> None:
    keyless = StreamSpec(source="shop", name="orders", write_disposition="append")
    with pytest.raises(ValueError, match="shop/orders: micro-batches need a primary key"):
        land_micro_batches(LocalLake(tmp_path), keyless, [], "run")
