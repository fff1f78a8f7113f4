"""The schedule of a partitioned job lands each partition once it has ended: at midnight UTC the day
before (the README's "lands yesterday's drop each night"), and nothing after the series' ``end``."""

import datetime as dt
from pathlib import Path

import dagster as dg
import pytest

from sandbox.harness import definitions

pytestmark = pytest.mark.fast

YAML = """
type: integration_platform.components.FileSource
attributes:
  source: partner
  connection: {protocol: s3, bucket: drops}
  streams:
    - name: open
      directory: open
      partition: {type: daily, start: "2024-01-01"}
    - name: closed
      directory: closed
      partition: {type: daily, start: "2024-01-01", end: "2024-02-01"}
"""


def _requested(defs: dg.Definitions, name: str, at: str) -> list[str | None]:
    schedule = defs.get_schedule_def(name)
    when = dt.datetime.fromisoformat(at).replace(tzinfo=dt.UTC)
    with dg.build_schedule_context(scheduled_execution_time=when, repository_def=defs.get_repository_def()) as context:
        result = schedule.evaluate_tick(context)
    return [r.partition_key for r in result.run_requests or []]


def test_the_nightly_schedule_lands_the_day_that_ended_and_nothing_after_the_end(tmp_path: Path) -> None:
    defs, _, _ = definitions(YAML, tmp_path)
    assert defs.get_schedule_def("partner_open_schedule").cron_schedule == "0 0 * * *"
    # the day just begun has no drop yet: Dagster's partitioned schedule asked for it, never for yesterday
    assert _requested(defs, "partner_open_schedule", "2024-03-05T00:00:00") == ["2024-03-04"]
    assert _requested(defs, "partner_closed_schedule", "2024-01-15T00:00:00") == ["2024-01-14"]
    assert _requested(defs, "partner_closed_schedule", "2024-02-01T00:00:00") == ["2024-01-31"]
    # the series is finished: its last day was landed again every night
    assert _requested(defs, "partner_closed_schedule", "2024-02-02T00:00:00") == []
    assert _requested(defs, "partner_closed_schedule", "2024-01-01T00:00:00") == []  # before the first day
