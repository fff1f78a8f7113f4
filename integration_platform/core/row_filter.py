"""The one row filter sources push down: a range on one column."""

import datetime as dt
from dataclasses import dataclass
from typing import Any, Literal

#: What a bound is compared with: a date, a timestamp without time zone, or one with (an instant).
TimeKind = Literal["date", "timestamp", "timestamptz"]


@dataclass(frozen=True)
class RowFilter:
    """``lower <= column < upper``; either bound may be ``None`` (open). ``nulls``: rows whose ``column``
    is NULL pass too (``(lower <= column < upper) OR column IS NULL``), so that a source reading by a
    high-water mark sees rows no comparison ever matches
    (:func:`~integration_platform.core.extract.refuse_null_cursor`).

    Bounds are Python values (datetime, date, int, Decimal, str) that drivers bind or
    quote themselves; they are never formatted into SQL text by hand. A time partition's
    bounds are time-zone-aware datetimes (UTC midnights); a source converts them to its
    column's kind with :func:`bound_for`.
    """

    column: str
    lower: Any = None
    upper: Any = None
    nulls: bool = False


def bound_for(value: Any, kind: TimeKind | None) -> Any:
    """``value`` (a bound of :class:`RowFilter`) as the kind of value of the column it is compared with.

    - ``timestamptz``: an aware datetime unchanged; a naive one is taken as UTC (the platform's zone).
    - ``timestamp`` (without time zone): an aware datetime becomes its wall-clock time in its own zone,
      naive (a UTC partition's ``2024-01-02 00:00+00:00`` is ``2024-01-02 00:00``).
    - ``date``: a datetime becomes the first date at or after its wall-clock time (midnight: its own
      date), so ``date >= bound`` and ``date < bound`` keep exactly the dates whose midnight is in range.
    - anything else (``kind`` ``None``, a bound that is no datetime): unchanged.

    Why: a database compares a date or a timestamp without time zone with an instant at *its session
    time zone's* midnight; ``'2024-01-02 00:00+00:00'::timestamptz`` against a ``date`` column of a
    server in Europe/Berlin put 2024-01-02 in the partition of 2024-01-01.
    """
    if not isinstance(value, dt.datetime) or kind is None:
        return value
    if kind == "timestamptz":
        return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
    wall = value.replace(tzinfo=None)
    if kind == "timestamp":
        return wall
    return wall.date() if wall.time() == dt.time() else wall.date() + dt.timedelta(days=1)
