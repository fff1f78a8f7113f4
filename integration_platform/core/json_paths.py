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


#: Top-level keys of an error body (JSON:API and GraphQL ``errors``, Google's ``error``, ...).
ERROR_KEYS = frozenset({"error", "errors", "fault"})


def _holds_an_error(body: Any) -> bool:
    """Whether ``body`` is an object with a top-level key of :data:`ERROR_KEYS` holding something true: an
    envelope's empty ``"errors": []``, ``"error": null`` or ``"error": false`` (Cloudflare's ``{"success": true,
    "errors": [], "result": null}``) is no error."""
    return isinstance(body, dict) and any(str(key).lower() in ERROR_KEYS and bool(value) for key, value in body.items())


def select_records(body: Any, path: str | None) -> list[Any]:
    """The records of a page: what ``path`` selects (a list, or one object), or the body itself.

    ``None`` or ``$`` selects the body: a list is the records, an object is one record. A path matching
    nothing is a page without records (protobuf-style APIs leave an empty list out: ``{}``), unless the
    body is an error object (a top-level key of :data:`ERROR_KEYS` holding something): then
    ``ValueError`` naming the path and the body's keys. An error body sent with status 200
    (``{"error": ...}``) was taken for a page without records, and a full-refresh stream's table was
    replaced by nothing. A path matching only nulls matches nothing here: ``{"data": null, "errors":
    [...]}`` (GraphQL's error answer) was such a page.
    """
    if path in (None, "", "$"):
        values = [body]
    else:
        assert path is not None
        values = find(body, path)
        if all(v is None for v in values) and _holds_an_error(body):
            keys = sorted(body)[:10]
            raise ValueError(f"the records path {path!r} matches nothing in an error body (an object with keys {keys})")
    if len(values) == 1 and isinstance(values[0], list):
        return list(values[0])
    return [v for v in values if v is not None]
