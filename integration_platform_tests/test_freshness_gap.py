"""The freshness window of a refresh schedule is its cron's longest gap between two ticks."""

import datetime as dt

import pytest

from integration_platform.assets.freshness import longest_gap

pytestmark = pytest.mark.fast


@pytest.mark.parametrize(
    ("cron", "gap"),
    [
        ("0 3 * * *", dt.timedelta(hours=24)),
        ("*/15 * * * *", dt.timedelta(minutes=15)),
        ("0 3 * * 1-5", dt.timedelta(hours=72)),  # Friday to Monday
        ("0 */6 * * *", dt.timedelta(hours=6)),
        ("*/15 * * * 1-5", dt.timedelta(days=2, minutes=15)),  # frequent, yet Friday to Monday counts
        ("0 3 1 * *", dt.timedelta(days=31)),
    ],
)
def test_longest_gap(cron: str, gap: dt.timedelta) -> None:
    assert longest_gap(cron) == gap
