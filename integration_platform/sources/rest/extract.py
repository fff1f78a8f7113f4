"""Extraction of one REST stream: pages (or a fan-out over a parent's records) -> Arrow.

A top-level stream walks its endpoint's pages; an incremental one sends the lower bound of
its window (the high-water mark minus the lag) in its query parameter. A child stream reads
its parent's landed records from the lake (the parent is an upstream asset), renders its
path once per distinct parent record and fetches those paths on ``concurrency`` threads.
Responses are converted in parent order, whatever order they arrive in: what lands (rows
and inferred schema) does not depend on timing. A record whose primary key was already
seen in the landing is dropped, so offset pages that shift while being read never land a
record twice.
"""

import datetime as dt
import json
import math
import string
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urljoin, urlsplit

import pyarrow as pa

from integration_platform.core.extract import ExtractionReport
from integration_platform.core.lake import LakeStore
from integration_platform.core.landing import active_manifests, list_manifests, read_landed_files
from integration_platform.core.names import UnsafeNameError, url_segment
from integration_platform.core.records import ARROW_TYPES, JsonRecords, TableSpill
from integration_platform.core.row_filter import RowFilter
from integration_platform.core.streams import OP_COLUMN, StreamSpec
from integration_platform.resources.http_api import HttpSourceError
from integration_platform.sources.rest.client import Page, endpoint_pages
from integration_platform.sources.rest.paginators import Paginator

if TYPE_CHECKING:
    from integration_platform.resources.http_client import RestClient

#: Declared column types: the Arrow ones above, or ``json`` (the value kept as JSON text).
COLUMN_TYPES = (*ARROW_TYPES, "json")
#: Fan-out pages are converted to Arrow this many records at a time (a detail page often holds one
#: record; converting each alone cost one Arrow array per column per request).
CONVERT_RECORDS = 500


@dataclass(frozen=True)
class RestStreamPlan:
    """One REST stream as the extractor runs it (resolved from the source's YAML)."""

    spec: StreamSpec
    path: str
    params: dict[str, str]
    records_path: str | None
    paginator: Paginator
    incremental_param: str | None = None
    initial_value: str | None = None
    cursor_format: str | None = None
    parent: StreamSpec | None = None
    parent_path: str | None = None
    include_from_parent: tuple[str, ...] = ()
    skip_statuses: frozenset[int] = frozenset()
    nested: Literal["struct", "json"] = "struct"
    columns: tuple[tuple[str, str], ...] = ()
    on_conflict: Literal["fail", "quarantine"] = "fail"

    @property
    def placeholders(self) -> tuple[str, ...]:
        """Parent fields the path refers to, ``{id}`` style."""
        return tuple(name for _, name, _, _ in string.Formatter().parse(self.path) if name)


def render_path(template: str, row: dict[str, Any], base: str) -> str:
    """``template`` with ``{field}`` replaced by the parent record's values, each URL-quoted into one
    path segment.

    A template that is exactly one placeholder (``{url}``) whose value holds a scheme or a ``/`` takes
    the value as a URI reference, resolved against ``base`` (the parent's request URL) per RFC 3986
    section 5.2 (``urllib.parse.urljoin``): ``https://h/api/v2/items/1/`` stays as it is,
    ``/api/v2/items/1/`` gets ``base``'s scheme and host. A URL on another origin is fetched without
    credentials unless that origin is in ``allowed_hosts`` (``OriginBoundAuth``).

    Raises :class:`~integration_platform.core.names.UnsafeNameError` (a ``ValueError``) naming the
    placeholder and the template, never the value, for a reference that is no URL or not an ``http(s)``
    one (``file:///etc/passwd``, ``http://[::1/x``), or for a value that cannot be one path segment.
    """
    names = [name for _, name, _, _ in string.Formatter().parse(template) if name]
    if len(names) == 1 and template == "{" + names[0] + "}":
        value, what = placeholder_text(row[names[0]]), f"value of {{{names[0]}}} in {template!r}"
        try:
            if urlsplit(value).scheme or "/" in value:
                url = urljoin(base, value)
                scheme = urlsplit(url).scheme.lower()
                if scheme not in ("http", "https"):
                    raise UnsafeNameError(f"{what} is not an http(s) URL (scheme {scheme!r}); only those are fetched")
                return url
        except UnsafeNameError:
            raise
        except ValueError as exc:  # urlsplit: an unclosed IPv6 bracket, a port out of range
            raise UnsafeNameError(f"{what} is not a URL ({exc})") from None
    values = {name: url_segment(placeholder_text(row[name]), f"value of {{{name}}} in {template!r}") for name in names}
    return template.format_map(values)


def placeholder_text(value: Any) -> str:
    """A parent's value as a path placeholder writes it: a whole float as the integer it is (a parent
    column widened to double by one record sent ``/customers/7.0`` for every parent), anything else as
    ``str``."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def has_value(value: Any) -> bool:
    """Whether a parent's placeholder value names something to fetch: not null, not empty text (which
    rendered ``/customers/``, the collection, landed as one customer) and not a NaN or infinite float
    (``/customers/nan``)."""
    if value is None or value == "":
        return False
    return not isinstance(value, float) or math.isfinite(value)


def param_value(value: Any, fmt: str | None) -> str:
    """A cursor bound as a query parameter: ``fmt`` (strftime) for dates and times, else ISO / str."""
    if isinstance(value, dt.datetime | dt.date):
        return value.strftime(fmt) if fmt else value.isoformat()
    return str(value)


def parent_rows(store: LakeStore, parent: StreamSpec, fields: Sequence[str], child: str) -> list[dict[str, Any]]:
    """The distinct values of ``fields`` over the parent's rows as its table holds them, as dicts: of a
    merge parent, each key's latest version (the latest landing's; within one, the highest
    cursor, then the last), without the keys a later landing of tombstones deleted; otherwise every
    row of its current landings. Before, an incremental parent's old and new versions of one row were
    both parents: its child was fetched once per version and landed twice, half of it with stale
    fields.

    Raises ``ValueError`` when the parent has not landed or lacks one of the fields.
    """
    manifests = active_manifests(list_manifests(store, parent))
    if not manifests:
        raise ValueError(f"stream {child}: its parent {parent.path} has not landed yet; materialise it first")
    known = {name for m in manifests for name, _ in m.schema}
    absent = [f for f in fields if f not in known]
    if absent:
        raise ValueError(f"stream {child}: parent {parent.path} has no field(s) {absent}; it has {sorted(known)}")
    rows: dict[str, dict[str, Any]] = {}
    if parent.write_disposition != "merge" or not parent.primary_key:
        for table in read_landed_files(store, [f for m in manifests for f in m.files], list(fields)):
            for row in table.to_pylist():
                rows.setdefault(json.dumps(row, sort_keys=True, default=str), row)
        return list(rows.values())
    latest: dict[str, dict[str, Any]] = {}
    for manifest in manifests:  # in landing order: a later landing's version replaces an earlier one's
        has = dict(manifest.schema)
        wanted = [*parent.primary_key, *(c for c in (parent.cursor, OP_COLUMN) if c and c in has)]
        columns = list(dict.fromkeys([*wanted, *(f for f in fields if f in has)]))
        for table in read_landed_files(store, manifest.files, columns):
            if parent.cursor in table.column_names:
                # stable, nulls first: the last of equal cursors wins, a null cursor loses (as the loader orders)
                table = table.sort_by([(parent.cursor, "ascending", "at_start")])
            for row in table.to_pylist():
                key = json.dumps([row[k] for k in parent.primary_key], default=str)
                if row.pop(OP_COLUMN, None) == "delete":
                    latest.pop(key, None)
                else:
                    latest[key] = row
    for row in latest.values():
        values = {f: row.get(f) for f in fields}
        rows.setdefault(json.dumps(values, sort_keys=True, default=str), values)
    return list(rows.values())


class _Fetch:
    """The pages of one request chain, run on a worker thread."""

    def __init__(self, client: "RestClient", plan: RestStreamPlan) -> None:
        self.client, self.plan = client, plan

    def __call__(self, path: str, params: dict[str, str]) -> list[Page] | None:
        try:
            return list(endpoint_pages(self.client, path, params, self.plan.paginator, self.plan.records_path))
        except HttpSourceError as exc:
            if exc.status in self.plan.skip_statuses:
                return None
            raise


#: The fan-out's reorder window: results that finished before an earlier parent's and wait for it,
#: bounded by count (per worker) and by the bytes of their bodies. A worker waiting out a 1 s
#: Retry-After at the head of the order leaves the others about 300 results to fetch at 16 workers
#: and 50 ms; with a window of 16 per worker (256) they stalled, and the benchmark's fault mix (5%
#: 429 with Retry-After 1 s, 3% 500) took 22.4 s against 18.6 s with a window that never fills. The
#: byte bound keeps memory in check when bodies are large (a parsed body takes several times its size).
REORDER_RESULTS_PER_WORKER = 128
REORDER_BODY_BYTES = 64 * 2**20


def _body_bytes(future: Future[list[Page] | None]) -> int:
    """The body bytes of a finished fetch (0 for a failure or a skipped parent)."""
    if future.exception() is not None:
        return 0
    return sum(page.size for page in future.result() or [])


def _fan_out(
    fetch: _Fetch, rows: list[dict[str, Any]], concurrency: int
) -> Iterator[tuple[dict[str, Any], list[Page] | None]]:
    """Fetch every parent row's path with ``concurrency`` workers, yielding results in parent
    order whatever order responses come in (so the schema a landing infers never depends on
    timing). The first failure in parent order is raised; what has not started is cancelled.

    New requests are queued whenever any request finishes, not only the oldest: a worker waiting
    out a ``Retry-After`` (or a slow response) at the head of the order leaves the others busy.
    Twice ``concurrency`` requests are kept queued or running while the reorder window has room:
    at most ``REORDER_RESULTS_PER_WORKER * concurrency`` requests ahead of the oldest one not yet
    yielded, and at most ``REORDER_BODY_BYTES`` of finished bodies waiting (memory bound).
    """
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="rest-fan-out")
    ordered: deque[tuple[dict[str, Any], Future[list[Page] | None]]] = deque()
    unfinished: set[Future[list[Page] | None]] = set()
    todo = iter(rows)
    limit = REORDER_RESULTS_PER_WORKER * concurrency
    held = 0  # body bytes of finished results not yet yielded

    plan = fetch.plan
    # References in parent records resolve against the parent's request URL (the API's base URL
    # when that URL has placeholders of its own).
    parent_path = plan.parent_path if plan.parent_path and "{" not in plan.parent_path else ""
    base = fetch.client.url(parent_path)

    def top_up() -> None:
        nonlocal held
        finished = [f for f in unfinished if f.done()]
        unfinished.difference_update(finished)
        held += sum(_body_bytes(f) for f in finished)
        while len(unfinished) < 2 * concurrency and len(ordered) < limit and held < REORDER_BODY_BYTES:
            row = next(todo, None)
            if row is None:
                return
            try:
                path = render_path(plan.path, row, base)
            except ValueError as exc:  # the parent's value as the URL it would be, masked as any URL shown
                shown = ", ".join(
                    fetch.client.redact_url(placeholder_text(row[name]), {}) for name in plan.placeholders
                )
                raise HttpSourceError(
                    f"stream {plan.spec.path}: GET {shown} (from its parent's record): {exc}"
                ) from None
            future = pool.submit(fetch, path, plan.params)
            ordered.append((row, future))
            unfinished.add(future)

    try:
        top_up()
        while ordered:
            row, future = ordered[0]
            if not future.done():
                wait(unfinished, return_when=FIRST_COMPLETED)
                top_up()
                continue
            ordered.popleft()
            if future in unfinished:
                unfinished.discard(future)  # finished since the last top-up: never counted in held
            else:
                held -= _body_bytes(future)
            result = future.result()
            top_up()
            yield row, result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def extract_rest(
    plan: RestStreamPlan,
    client: "RestClient",
    store: LakeStore,
    row_filter: RowFilter | None,
    report: ExtractionReport,
) -> pa.RecordBatchReader:
    """Fetch the stream (all of it, or from ``row_filter.lower`` on) and return its rows.

    Pages are converted as they arrive and held in a :class:`TableSpill`; the returned reader
    streams them in the final schema. Raises ``HttpSourceError``, ``HttpAuthError``,
    ``SchemaConflictError`` or ``ValueError`` (parent not landed); nothing is returned then,
    so nothing lands.

    Over 60 lines: the fan-out's bounded look-ahead, spill and schema tracking share their state
    across pages; the steps are named in comments where they change.
    """
    spec = plan.spec
    columns = dict(plan.columns)
    records = JsonRecords(
        spec.path,
        nested=plan.nested,
        columns={k: ARROW_TYPES[v] for k, v in columns.items() if v != "json"},
        json_columns=[k for k, v in columns.items() if v == "json"],
        on_conflict=plan.on_conflict,
        primary_key=spec.primary_key,
        version=spec.cursor,
    )
    spill = TableSpill()
    pages = skipped = parents = without_value = 0
    try:
        if plan.parent is None:
            params = dict(plan.params)
            lower = row_filter.lower if row_filter is not None else plan.initial_value
            if plan.incremental_param and lower is not None:
                params[plan.incremental_param] = param_value(lower, plan.cursor_format)
            for page in endpoint_pages(client, plan.path, params, plan.paginator, plan.records_path):
                pages += 1
                spill.add(records.convert(page.records, client.redact_url(page.request.url, page.request.params)))
        else:
            fields = tuple(dict.fromkeys([*plan.placeholders, *plan.include_from_parent]))
            rows = parent_rows(store, plan.parent, fields, spec.path)
            parents = len(rows)
            # a guest order's null customer_id has nothing to fetch (it was fetched as /customers/None)
            rows = [row for row in rows if all(has_value(row[name]) for name in plan.placeholders)]
            without_value = parents - len(rows)
            group: list[tuple[list[Any], str]] = []  # pages converted together (JsonRecords.convert_pages)
            held = 0
            for row, fetched in _fan_out(_Fetch(client, plan), rows, max(client.config.concurrency, 1)):
                if fetched is None:
                    skipped += 1
                    continue
                extra = {f"_{plan.parent.name}_{name}": row[name] for name in plan.include_from_parent}
                for page in fetched:
                    pages += 1
                    page_records = [{**r, **extra} if isinstance(r, dict) else r for r in page.records]
                    group.append((page_records, client.redact_url(page.request.url, page.request.params)))
                    held += len(page_records)
                if held >= CONVERT_RECORDS:
                    spill.add(records.convert_pages(group))
                    group, held = [], 0
            spill.add(records.convert_pages(group))
    except BaseException:
        spill.close()
        raise
    report.rejected.extend(records.rejected)
    report.schema_changes.extend(records.changes)
    report.metadata.update(
        {
            "requests": client.requests_sent,
            "pages": pages,
            "duplicate_records_dropped": records.duplicates,
            "rate_limit_per_second": client.config.rate_limit or 0,
        }
    )
    if plan.parent is not None:
        report.metadata.update(
            {"parent_records": parents, "requests_skipped": skipped, "parents_without_value": without_value}
        )
    if client.oauth2 is not None:
        report.metadata["oauth2_tokens_obtained"] = client.oauth2.renewals
    return spill.reader(records.schema)


def extractor_for(
    plan: RestStreamPlan, client_factory: Callable[[], "RestClient"], store: LakeStore, report: ExtractionReport
) -> Callable[[RowFilter | None], pa.RecordBatchReader]:
    """The :data:`~integration_platform.core.extract.Extractor` of ``plan``."""

    def extract(row_filter: RowFilter | None) -> pa.RecordBatchReader:
        client = client_factory()
        try:
            return extract_rest(plan, client, store, row_filter, report)
        finally:
            client.close()

    return extract
