"""What the quarantine counts: a record set aside again by every run that re-reads it (an incremental
stream's records at its mark) counts once. A real local lake."""

from pathlib import Path

import pytest

from integration_platform.core.lake import LocalLake
from integration_platform.core.quarantine import quarantined_rows, write_quarantine
from integration_platform.core.records import Rejected
from integration_platform.core.streams import StreamSpec

pytestmark = pytest.mark.fast


def test_a_record_set_aside_by_several_runs_counts_once_and_a_repeated_one_twice(tmp_path: Path) -> None:
    """Three incremental runs re-read the record at the mark (``>=``) and set it aside each time: the total
    counted it three times. It counts once; a record the source sent twice in one run counts twice, and a
    window's file replaced by a retry counts as it is now."""
    store, spec = LocalLake(tmp_path / "lake"), StreamSpec("s", "orders", "append", cursor="ts")
    bad = {"id": 7, "ts": "2026-12-01", "amount": "lots"}
    twin = {"id": None, "ts": "2026-12-01"}
    for run, window in enumerate(["l-1", "l-2", "l-3"]):
        again = [Rejected(f"GET /orders?ts__gte=2026-12-0{run + 1} record 3", "field 'amount': not a number", bad)]
        write_quarantine(
            store, spec, window, again + ([Rejected("x", "no key", twin)] * 2 if run == 1 else []), f"r{run}"
        )
    assert quarantined_rows(store, spec) == 1 + 2
    write_quarantine(store, spec, "l-2", [], "r-retry")  # a retry of that window without rejections
    assert quarantined_rows(store, spec) == 1
    write_quarantine(store, spec, "l-4", [Rejected("y", "other", {**bad, "amount": "more"})], "r4")
    assert quarantined_rows(store, spec) == 2
