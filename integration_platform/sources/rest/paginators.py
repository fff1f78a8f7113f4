"""Paginators: from one page's response, the request for the next page (or the end).

Kinds (the ``type`` of :class:`Paginator`):

- ``offset``: ``offset``/``limit`` query parameters; stops on an empty page or when the
  offset reaches the total at ``total_path``.
- ``page_number``: a page counter from ``start_page``; stops on an empty page or after
  the page count at ``total_path``.
- ``cursor``: the token at ``cursor_path`` in the body goes back as ``cursor_param``;
  stops when the token is missing or empty.
- ``next_url``: the URL at ``next_url_path`` in the body (absolute, or relative to the
  page's URL); stops when it is missing.
- ``link_header``: the ``rel="next"`` target of the RFC 8288 ``Link`` header (parsed by
  ``requests``); stops when there is none.
- ``single_page``: one request.

JSON paths use JSONPath (jsonpath-ng): ``results``, ``data.items``, ``$.meta.next``.
"""

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urljoin

import dagster as dg

from integration_platform.core.json_paths import find_one

if TYPE_CHECKING:
    import requests

PaginatorType = Literal["offset", "page_number", "cursor", "next_url", "link_header", "single_page"]


class Paginator(dg.Config):
    """How a stream's pages follow each other (see the module docstring for each type)."""

    type: PaginatorType = "single_page"
    limit: int | None = None
    limit_param: str = "limit"
    offset_param: str = "offset"
    page_param: str = "page"
    start_page: int = 1
    total_path: str | None = None
    cursor_path: str | None = None
    cursor_param: str | None = None
    next_url_path: str | None = None
    max_pages: int | None = None


@dataclass(frozen=True)
class PageRequest:
    """One GET: the URL and its query parameters (merged with the API's defaults)."""

    url: str
    params: dict[str, str] = field(default_factory=dict)


def first_request(paginator: Paginator, url: str, params: dict[str, str]) -> PageRequest:
    """The request for the first page."""
    params = dict(params)
    if paginator.type == "offset":
        params[paginator.offset_param] = "0"
    elif paginator.type == "page_number":
        params[paginator.page_param] = str(paginator.start_page)
    if paginator.limit is not None and paginator.type in ("offset", "page_number", "cursor"):
        params[paginator.limit_param] = str(paginator.limit)
    return PageRequest(url, params)


def _int_at(body: Any, path: str | None) -> int | None:
    value = find_one(body, path) if path else None
    return int(value) if isinstance(value, int | float | str) and str(value).strip().isdigit() else None


def _from_body(value: Any, what: str) -> str:
    """``value`` (a cursor or a URL the body holds) as text for the next request; raises ``ValueError``
    when it holds a lone surrogate (JSON's ``"\\ud800"``), which cannot be sent as UTF-8."""
    text = str(value)
    try:
        text.encode()
    except UnicodeEncodeError:
        raise ValueError(f"the {what} in the body holds a lone surrogate, which cannot be sent as UTF-8") from None
    return text


#: A ``cursor``, ``next_url`` or ``link_header`` paginator stops after this many empty pages in a row,
#: though the body still has a next cursor or link: an API filtering after it pages may return an empty
#: page before more records, and one handing out a fresh cursor with every empty page paged for ever.
EMPTY_PAGES_BEFORE_STOP = 10


def next_request(
    paginator: Paginator,
    current: PageRequest,
    body: Any,
    response: "requests.Response",
    records: int,
    empty_pages: int = 0,
) -> PageRequest | None:
    """The request for the page after ``current``, or ``None`` when this was the last page.

    ``records`` is how many records the current page held; ``empty_pages``, how many pages in a row
    (this one included) held none. ``offset`` and ``page_number`` stop at the first empty page, the
    others after :data:`EMPTY_PAGES_BEFORE_STOP`. Raises ``ValueError`` when the body's cursor or next
    URL cannot go into a URL.
    """
    kind = paginator.type
    if kind == "single_page":
        return None
    if records == 0 and (kind in ("offset", "page_number") or empty_pages >= EMPTY_PAGES_BEFORE_STOP):
        return None
    if kind == "offset":
        offset = int(current.params.get(paginator.offset_param, "0")) + records
        total = _int_at(body, paginator.total_path)
        if total is not None and offset >= total:
            return None
        return PageRequest(current.url, {**current.params, paginator.offset_param: str(offset)})
    if kind == "page_number":
        page = int(current.params.get(paginator.page_param, str(paginator.start_page)))
        total = _int_at(body, paginator.total_path)
        if total is not None and page - paginator.start_page + 1 >= total:
            return None
        return PageRequest(current.url, {**current.params, paginator.page_param: str(page + 1)})
    if kind == "cursor":
        assert paginator.cursor_path and paginator.cursor_param
        token = find_one(body, paginator.cursor_path)
        if token in (None, ""):
            return None
        return PageRequest(current.url, {**current.params, paginator.cursor_param: _from_body(token, "cursor")})
    if kind == "next_url":
        assert paginator.next_url_path
        target = find_one(body, paginator.next_url_path)
        return PageRequest(urljoin(response.url, _from_body(target, "next URL"))) if target else None
    target = next_link(response.headers.get("Link", ""))
    return PageRequest(urljoin(response.url, target)) if target else None


def next_link(header: str) -> str | None:
    """The target of the link whose relation types include ``next`` in a ``Link`` header (RFC 8288,
    section 3.3: parameter names and relation types are compared case-insensitively, and ``rel`` may
    list several separated by spaces, as in ``rel="next last"``), or ``None``. requests'
    ``Response.links`` keys each link by its whole ``rel`` text, so ``rel="Next"`` or ``rel="prev next"``
    read as the last page."""
    from requests.utils import parse_header_links

    for link in parse_header_links(header) if header else []:
        rel = next((value for name, value in link.items() if name.lower() == "rel"), "")  # REL="next" too
        if "next" in rel.lower().split():
            return link.get("url") or None
    return None
