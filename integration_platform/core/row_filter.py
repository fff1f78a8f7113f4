"""The one row filter sources push down: a range on one column."""

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RowFilter:
    """``lower <= column < upper``; either bound may be ``None`` (open).

    Bounds are Python values (datetime, date, int, Decimal, str) that drivers bind or
    quote themselves; they are never formatted into SQL text by hand.
    """

    column: str
    lower: Any = None
    upper: Any = None
