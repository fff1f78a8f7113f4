"""JSON paths (JSONPath, by jsonpath-ng) over parsed JSON bodies: the records of a page or a file,
the values a paginator reads. Paths such as ``results``, ``data.items``, ``$.meta.next``."""

from functools import lru_cache
from typing import Any

from jsonpath_ng import JSONPath
from jsonpath_ng.ext import parse


@lru_cache(maxsize=256)
def compile_path(path: str) -> JSONPath:
    """Parse a JSONPath once. Raises ``ValueError`` (jsonpath-ng's parse error) when invalid."""
    try:
        return parse(path)
    except Exception as exc:  # jsonpath-ng raises bare Exception subclasses for syntax errors
        raise ValueError(f"invalid JSON path {path!r}: {exc}") from None


def find(body: Any, path: str) -> list[Any]:
    """Every value ``path`` matches in ``body``."""
    return [match.value for match in compile_path(path).find(body)]


def find_one(body: Any, path: str) -> Any:
    """The first value ``path`` matches in ``body``, or ``None``."""
    values = find(body, path)
    return values[0] if values else None


def select_records(body: Any, path: str | None) -> list[Any]:
    """The records of a page: what ``path`` selects (a list, or one object), or the body itself.

    ``None`` or ``$`` selects the body: a list is the records, an object is one record. Raises
    ``ValueError`` naming the path and the body's top-level keys when ``path`` matches nothing: an
    error body sent with status 200 (``{"error": ...}``) was taken for a page without records, and a
    full-refresh stream's table was replaced by nothing. A path holding ``[]`` or ``null`` is a page
    without records.
    """
    if path in (None, "", "$"):
        values = [body]
    else:
        assert path is not None
        values = find(body, path)
        if not values:
            shape = f"an object with keys {sorted(body)[:10]}" if isinstance(body, dict) else type(body).__name__
            raise ValueError(f"the records path {path!r} matches nothing in the body ({shape})")
    if len(values) == 1 and isinstance(values[0], list):
        return list(values[0])
    return [v for v in values if v is not None]
