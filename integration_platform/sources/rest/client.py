"""Pages of a REST endpoint: the paginators (``paginators.py``) driven over the shared HTTP client
(:class:`~integration_platform.resources.http_client.RestClient`), records selected from each body."""

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from integration_platform.core.json_paths import select_records
from integration_platform.resources.http_api import HttpSourceError
from integration_platform.sources.rest.paginators import PageRequest, Paginator, first_request, next_request

if TYPE_CHECKING:
    from integration_platform.resources.http_client import RestClient


@dataclass
class Page:
    """One page: its records, the request that fetched it, the decoded body and its size in bytes
    (as received, after any content decoding)."""

    records: list[Any]
    request: PageRequest
    body: Any
    size: int = 0


def endpoint_pages(
    client: "RestClient", path: str, params: dict[str, str], paginator: Paginator, records_path: str | None
) -> Iterator[Page]:
    """Every page of ``path``, in order. Raises :class:`HttpSourceError` when the paginator
    asks for a page it already fetched (a loop), when a page with records repeats the page before it
    byte for byte (the API ignores the paginator's parameter, or clamps to its last page: paging went on
    for ever, landing the same records again and again) or, for the ``offset`` and ``page_number``
    paginators, whose requests never repeat, holds the records of the page before (the same API with a
    request id or a time stamp in each body: the byte-for-byte check missed it, and paging went on for
    ever; a cursor or a next link the API ignores repeats a request instead), when the records path matches nothing in a
    body, when a page's cursor or next URL cannot go into a URL (a lone surrogate), or when more than
    ``max_pages`` pages hold records (a limit that stopped quietly landed a part as the whole)."""
    request: PageRequest | None = first_request(paginator, client.url(path), {**client.config.params, **params})
    seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    previous: bytes | None = None  # the last page's body, when it held records
    previous_records: list[Any] = []  # and its records
    empty = 0  # pages in a row without records
    filled = 0  # pages with records
    while request is not None:
        ident = (request.url, tuple(sorted(request.params.items())))
        if ident in seen and empty:  # an empty page handing back its own cursor or link: the end
            return
        if ident in seen:
            raise HttpSourceError(
                f"GET {client.redact_url(request.url, request.params)}: the {paginator.type} paginator "
                "asked for a page it already fetched; check its settings"
            )
        seen.add(ident)
        body, response = client.get_json(request.url, request.params)
        try:
            records = select_records(body, records_path)
        except (ValueError, TypeError) as exc:
            raise HttpSourceError(f"GET {client.redact_url(request.url, request.params)}: {exc}") from None
        filled += bool(records)
        if paginator.max_pages is not None and filled > paginator.max_pages:
            # Landing the pages read so far would replace a snapshot's table with a part of it, or move a
            # high-water mark past records never read: fail, as the HTML source does. Empty pages do not
            # count (the one confirming the end; the ten-in-a-row rule bounds them).
            raise HttpSourceError(
                f"GET {client.redact_url(request.url, request.params)}: more than max_pages "
                f"({paginator.max_pages}) pages with records; nothing lands: raise max_pages"
            )
        counted = paginator.type in ("offset", "page_number")  # their parameter, ignored, repeats no request
        if records and (response.content == previous or (counted and records == previous_records)):
            raise HttpSourceError(
                f"GET {client.redact_url(request.url, request.params)}: the page repeats the page before it; the "
                f"API ignores the {paginator.type} paginator's parameter or stays on its last page: check its settings"
            )
        previous, previous_records = (response.content, records) if records else (None, [])
        yield Page(records, request, body, len(response.content))
        fetched = request
        try:
            empty = 0 if records else empty + 1
            request = next_request(paginator, fetched, body, response, len(records), empty)
        except ValueError as exc:
            raise HttpSourceError(f"GET {client.redact_url(fetched.url, fetched.params)}: {exc}") from None
