"""HttpSync: reverse ETL. One YAML file declares rows of a query posted to an HTTP API, incrementally.

``defs/<sync>/defs.yaml``::

    type: integration_platform.components.HttpSync
    attributes:
      sync: crm_contacts                    # asset reverse_etl/crm_contacts, lake reverse_etl/crm_contacts_results
      source: {warehouse: true}             # the DuckDB warehouse, or {url_env: CRM_DB_URL} (SQLAlchemy URL)
      query: "SELECT id, email, updated_at FROM crm.contacts"   # or table: crm.contacts
      key_columns: [id]
      cursor: updated_at                    # rows with cursor >= last mark, in cursor order; first run: all rows
      target:
        base_url_env: CRM_API_URL           # or base_url: https://...
        path: /api/contacts/{id}            # {column} placeholders (record mode)
        method: PUT                         # POST | PUT | PATCH
        auth: {type: bearer, token_env: CRM_TOKEN}
        idempotency_header: Idempotency-Key
        wrap: null                          # e.g. "rows" -> {"rows": [...], **wrap_extra} (datasette's insert API)
      mode: record                          # or batch (a JSON array of up to batch_size records per request)
      mapping: {contact_id: id, mail: email, origin: "literal:warehouse", key: "@idempotency_key"}
      # or hook: "package.module:function"  (row dict -> JSON body)
      concurrency: 16
      rate_limit: 50                        # requests/s, whole run
      on_failure: dead_letter               # or fail
      chunk_rows: 5000                      # rows read and posted per chunk (bounded memory)

Idempotency key of a record: SHA-256 of (sync, key values, cursor value), or of (sync, whole row) without a cursor
(a changed row is a new version, under a new key), so a retried or re-sent row version always carries the same key;
a batch request's header key is the SHA-256 of its records' keys. Per-record results land as Parquet in
``reverse_etl/<sync>_results`` (one window per run), failures under ``dead_letter`` in
``reverse_etl/<sync>_dead_letter``. The high-water mark (``cursor_after``) advances only over acknowledged rows: to
the cursor value of the first row not acknowledged (the next run starts there, ``>=``), else to the last row's value.
The ids of the acknowledged rows the next run reads again (those at the mark, and after it when a failure stopped
it) are kept beside the mark (``acknowledged_at_mark``) and those rows are not sent again (``rows_skipped``): a
batch's key is that of its rows, so a row re-sent in a batch of other rows would reach the target as a new request.

A row is refused, not sent, and fails as ``on_failure`` says, naming the column, when its cursor is NULL (such rows
are read on every run, refused each time until the cursor is set: the mark cannot wait for them) or a path
placeholder's value is NULL, empty or not one path segment. NaN and infinite numbers are sent as ``null`` (JSON has
no spelling for them). A mapping or path placeholder naming a column the query lacks, or a base URL that is no
``http(s)`` URL, fails the run before anything is sent; a header that cannot be sent (a name that is no token, a
line break in a value), ``wrap_extra`` without ``wrap`` and a path placeholder naming no column fail at load.
One attempt may take ``request_timeout`` seconds in all and read a response body of up to ``max_body_bytes``
(decoded); a ``Retry-After`` that is neither seconds nor a date counts as absent.
"""

import asyncio
import dataclasses
import importlib
import json
import os
import re
import string
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import dagster as dg
import pyarrow as pa
import sqlalchemy as sa
from pydantic import Field, model_validator

from integration_platform.assets.cluster import warehouse_step
from integration_platform.assets.config_model import (
    SafeModel,
    SecretSafeComponent,
    current_asset_keys,
    from_env,
    require_exactly_one,
)
from integration_platform.assets.http_config import AuthField, NoAuth
from integration_platform.assets.marks import mark_metadata, read_acknowledged, read_mark, refuse_ephemeral_marks
from integration_platform.assets.run_recovery import tag_run_host
from integration_platform.assets.stream_assets import warehouse_connection, warehouse_table_key
from integration_platform.core.cursors import CursorValue
from integration_platform.core.landing import LandingError, land
from integration_platform.core.loading import current_catalog
from integration_platform.core.names import ENV_NAME, UnsafeNameError, url_segment
from integration_platform.core.outbound import (
    MissingColumnError,
    Watermark,
    batch_id,
    json_body,
    json_default,
    relation_sql,
    row_id,
    select_since,
    select_since_sqlalchemy,
)
from integration_platform.core.streams import IDENTIFIER, StreamSpec
from integration_platform.outbound.http_push import HttpPusher, PushPolicy, PushRequest, PushResult
from integration_platform.outbound.publish import TABLE
from integration_platform.resources.http_auth import (
    UNSAFE_HEADER_VALUE,
    HttpAuth,
    check_headers,
    env_headers,
    header_safe,
    inline_url_secret,
    userinfo_secrets,
)
from integration_platform.resources.lake import LakeResource
from integration_platform.resources.sql_sessions import utc_sessions

GROUP = "reverse_etl"
RESULT_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("idempotency_key", pa.string()),
        ("status", pa.int32()),
        ("response", pa.string()),
        ("attempts", pa.int32()),
        ("error", pa.string()),
        ("sent_at", pa.timestamp("us", tz="UTC")),
    ]
)
DEAD_LETTER_SCHEMA = pa.schema([*RESULT_SCHEMA, ("cursor", pa.string()), ("body", pa.string())])
#: An HTTP header name: an RFC 9110 token (section 5.1).
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


class SyncSource(SafeModel, dg.Resolvable):
    """Where rows come from: the DuckDB warehouse, or a database named by a SQLAlchemy URL in ``url_env``."""

    warehouse: bool = False
    url_env: str | None = Field(default=None, pattern=ENV_NAME)

    @model_validator(mode="after")
    def _one(self) -> "SyncSource":
        if self.warehouse == (self.url_env is not None):
            raise ValueError("source: set exactly one of 'warehouse: true' and 'url_env'")
        return self


class SyncTarget(SafeModel, dg.Resolvable):
    """The endpoint: base URL (literal or env), path, method, auth, headers, idempotency header, envelope."""

    base_url: str | None = Field(default=None, pattern=r"^https?://")
    base_url_env: str | None = Field(default=None, pattern=ENV_NAME)
    path: str = Field(min_length=1)
    method: Literal["POST", "PUT", "PATCH"] = "POST"
    auth: AuthField = NoAuth()
    headers: dict[str, str] = Field(default_factory=dict, description="Headers without secrets.")
    headers_env: dict[str, str] = Field(
        default_factory=dict, description="Header -> name of the environment variable holding its (secret) value."
    )
    idempotency_header: str = "Idempotency-Key"
    wrap: str | None = Field(default=None, description="Send {wrap: payload, **wrap_extra} instead of the payload.")
    wrap_extra: dict[str, Any] = Field(default_factory=dict)
    accept_statuses: list[int] = Field(default_factory=list, description="Non-2xx statuses that acknowledge.")

    @model_validator(mode="after")
    def _url(self) -> "SyncTarget":
        require_exactly_one(self, "base_url", "base_url_env", "target: ")
        check_headers(self.headers, self.headers_env, lambda where, why: ValueError(f"target.{where}: {why}"))
        urls = {"base_url": self.base_url, "path": self.path, "auth.token_url": getattr(self.auth, "token_url", None)}
        for where, url in urls.items():
            if url and (problem := inline_url_secret(url)):
                raise ValueError(
                    f"target.{where}: {problem}, which cannot be written inline (the UI would show it): give the "
                    "URL by base_url_env, a query secret by auth: {type: api_key, api_key_in: query, api_key_env: ...}"
                )
        return self

    @model_validator(mode="after")
    def _sendable(self) -> "SyncTarget":
        """Refuse what no request can carry or what would be ignored: a header name that is no HTTP token
        or an inline value with a line break (httpx refused every request, each retried row after row),
        ``wrap_extra`` without ``wrap`` (never sent) or holding the ``wrap`` key (it replaced the rows), a
        path placeholder naming no column or left unclosed (a bare ``ValueError`` at run time)."""
        named = [("idempotency_header", self.idempotency_header), *(("headers", h) for h in self.headers)]
        for where, name in [*named, *(("headers_env", h) for h in self.headers_env)]:
            if not HEADER_NAME.fullmatch(name):
                raise ValueError(f"target.{where}: {name!r} is not an HTTP header name (RFC 9110 token)")
        for name, value in self.headers.items():
            if value and not header_safe(value):
                raise ValueError(f"target.headers.{name}: the value {UNSAFE_HEADER_VALUE}")
        if self.wrap_extra and self.wrap is None:
            raise ValueError("target.wrap_extra needs target.wrap (the key the payload goes under): it is never sent")
        if self.wrap is not None and self.wrap in self.wrap_extra:
            raise ValueError(f"target.wrap_extra: {self.wrap!r} is the key target.wrap puts the payload under")
        try:
            fields = [(field, spec, conversion) for _, field, spec, conversion in string.Formatter().parse(self.path)]
        except ValueError as exc:
            raise ValueError(f"target.path: {self.path!r}: {exc}") from None
        for field, spec, conversion in fields:
            if field is not None and (not field or field.isdigit() or set(field) & set(".[]") or spec or conversion):
                raise ValueError(
                    f"target.path: {self.path!r}: a placeholder must name a column, as {{column}} (without "
                    "format spec or conversion); write a literal brace as {{ or }}"
                )
        return self


class HttpTargetResource(dg.ConfigurableResource):
    """A sync's target API: base URL and auth, secrets as ``dg.EnvVar`` (read at run time, never shown)."""

    base_url: str
    auth: HttpAuth = Field(default_factory=HttpAuth)


class HttpSync(SecretSafeComponent, dg.Component, SafeModel, dg.Resolvable):
    """Rows of a query posted to an HTTP API (module doc)."""

    sync: str = Field(pattern=IDENTIFIER.pattern)
    source: SyncSource = Field(default_factory=lambda: SyncSource(warehouse=True))
    query: str | None = None
    table: str | None = Field(default=None, pattern=TABLE)
    deps: list[str] = Field(default_factory=list, description="Asset keys (a/b/c) the query reads.")
    key_columns: list[str] = Field(min_length=1)
    cursor: str | None = None
    target: SyncTarget
    mode: Literal["record", "batch"] = "record"
    batch_size: int = Field(default=100, ge=1)
    mapping: dict[str, str] = Field(default_factory=dict)
    hook: str | None = Field(default=None, pattern=r"^[\w.]+:\w+$")

    concurrency: int = Field(default=16, ge=1, le=256)
    rate_limit: float | None = Field(default=None, gt=0)
    max_retries: int = Field(default=5, ge=0)
    backoff_factor: float = Field(default=0.5, ge=0)
    max_retry_after: float = Field(default=300.0, gt=0, allow_inf_nan=False)
    connect_timeout: float = Field(default=10.0, gt=0)
    read_timeout: float = Field(default=60.0, gt=0)
    request_timeout: float = Field(default=600.0, gt=0, description="Seconds one attempt may take in all.")
    max_body_bytes: int = Field(default=16 << 20, gt=0, description="Bytes of one response body, decoded.")
    on_failure: Literal["fail", "dead_letter"] = "fail"
    chunk_rows: int = Field(default=5000, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> "HttpSync":
        require_exactly_one(self, "query", "table")
        if self.mapping and self.hook:
            raise ValueError("set at most one of 'mapping' and 'hook'")
        if self.mode == "batch" and "{" in self.target.path:
            raise ValueError("target.path placeholders need mode 'record' (one record per request)")
        return self

    @property
    def asset_key(self) -> dg.AssetKey:
        return dg.AssetKey([GROUP, self.sync])

    @property
    def resource_key(self) -> str:
        return f"{self.sync}_target"

    def resource(self) -> HttpTargetResource:
        base = from_env(self.target.base_url, self.target.base_url_env, "target.base_url")
        return HttpTargetResource(base_url=base, auth=self.target.auth.resource_config())

    def idempotency_key(self, row: dict[str, Any]) -> str:
        """64 hex digits: SHA-256 of (sync, key values, cursor value), or without a cursor of (sync, what is
        sent of the row): with a ``mapping`` its columns (:attr:`required_columns`), else the whole row
        (:func:`.outbound.row_id`). Hashing columns never sent gave every row a new key when the table
        gained one, and a target storing by key stored every row again."""
        sent = {c: row[c] for c in self.required_columns} if self.mapping and not (self.hook or self.cursor) else row
        return row_id([self.sync], sent, self.key_columns, self.cursor)

    def body_builder(self) -> Callable[[dict[str, Any], str], Any]:
        """``(row, idempotency key) -> JSON-able record``: the hook, the mapping, or the whole row."""
        if self.hook:
            module, name = self.hook.split(":")
            function = getattr(importlib.import_module(module), name)
            return lambda row, _: function(row)
        if not self.mapping:
            return lambda row, _: row
        mapping = self.mapping

        def mapped(row: dict[str, Any], key: str) -> dict[str, Any]:
            body: dict[str, Any] = {}
            for field_name, spec in mapping.items():
                if spec.startswith("literal:"):
                    body[field_name] = spec.removeprefix("literal:")
                elif spec == "@idempotency_key":
                    body[field_name] = key
                else:
                    body[field_name] = row[spec]
            return body

        return mapped

    def envelope(self, payload: Any) -> bytes:
        """The request body: ``payload`` as JSON, or ``{wrap: payload, **wrap_extra}``; NaN and infinities
        as ``null`` (:func:`.outbound.json_body`)."""
        body = {self.target.wrap: payload, **self.target.wrap_extra} if self.target.wrap else payload
        return json_body(body).encode()

    @property
    def path_columns(self) -> list[str]:
        """The columns the target path's ``{column}`` placeholders name, in order."""
        return [name for _, name, _, _ in string.Formatter().parse(self.target.path) if name]

    @property
    def required_columns(self) -> list[str]:
        """Columns the rows must have: key columns, path placeholders and the mapping's columns."""
        mapped = [c for c in self.mapping.values() if not c.startswith("literal:") and c != "@idempotency_key"]
        return list(dict.fromkeys([*self.key_columns, *self.path_columns, *mapped]))

    def refusal(self, row: dict[str, Any]) -> str | None:
        """Why ``row`` cannot be sent (``None``: it can): a NULL cursor (``cursor >= mark`` would never read it
        again, so the mark could not wait for it), or a path placeholder whose value is NULL, empty or not
        one path segment (it would address another resource)."""
        if self.cursor and row[self.cursor] is None:
            return f"not sent: cursor column {self.cursor!r} is NULL"
        for column in self.path_columns:
            value = row[column]
            if value is None or str(value) == "":
                return f"not sent: path column {column!r} is {'NULL' if value is None else 'empty'}"
            try:
                url_segment(str(value), f"value of {{{column}}}")
            except UnsafeNameError as exc:
                return f"not sent: path column {column!r}: {exc}"
        return None

    def requests_for(
        self, base: str, rows: list[dict[str, Any]], keys: list[str], bodies: list[Any]
    ) -> list[PushRequest]:
        """One request per row (record mode: each ``{column}`` of the path filled with one quoted path
        segment, so a value such as ``../admin`` can neither leave the path nor change the host the
        credentials go to), or per ``batch_size`` rows (batch mode, keyed by their ids' :func:`batch_id`).
        Raises :class:`~integration_platform.core.names.UnsafeNameError` for a value that cannot be a segment."""
        method, path = self.target.method, self.target.path
        if self.mode == "record":
            return [
                PushRequest(method, base + _fill(path, row), self.envelope(body), key, (i,))
                for i, (row, key, body) in enumerate(zip(rows, keys, bodies, strict=True))
            ]
        spans = [
            range(start, min(start + self.batch_size, len(rows))) for start in range(0, len(rows), self.batch_size)
        ]
        return [
            PushRequest(
                method,
                base + path,
                self.envelope([bodies[i] for i in span]),
                batch_id([keys[i] for i in span]),
                tuple(span),
            )
            for span in spans
        ]

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        """The sync's asset and its target resource; raises ``ValueError("<file>: attributes.deps: ...")``
        for a dependency named by a warehouse asset's old key."""
        try:
            current_asset_keys(self.deps)
        except ValueError as exc:
            raise ValueError(f"{Path(context.path) / 'defs.yaml'}: attributes.{exc}") from None
        return dg.Definitions(assets=[sync_asset(self)], resources={self.resource_key: self.resource()})


def _fill(path: str, row: dict[str, Any]) -> str:
    """``path`` with each ``{column}`` placeholder filled with the row's value as one quoted segment; only
    the placeholders' columns are looked at."""
    names = [name for _, name, _, _ in string.Formatter().parse(path) if name]
    return path.format_map({k: url_segment(str(row[k]), f"value of {{{k}}}") for k in names})


def _read_rows(
    sync: HttpSync, context: dg.AssetExecutionContext, mark: CursorValue | None
) -> Iterator[list[dict[str, Any]]]:
    """Chunks of at most ``chunk_rows`` rows in cursor order from the mark on (``>=``), and those whose
    cursor is NULL (refused on every run, so they are never passed over in silence), from the warehouse
    or the database at ``source.url_env``; raises ``dg.Failure`` for a missing column."""
    try:
        if sync.source.warehouse:
            with warehouse_connection(context) as conn:
                relation = relation_sql(sync.table, sync.query, current_catalog(conn))
                yield from select_since(
                    conn, relation, sync.cursor, mark, sync.chunk_rows, sync.required_columns, null_cursor_rows=True
                )
            return
        url = os.environ.get(str(sync.source.url_env))
        if not url:  # os.environ[...] failed with a bare KeyError naming neither sync nor field
            raise dg.Failure(
                f"sync {sync.sync}: source.url_env: the environment variable {sync.source.url_env} is not set or empty"
            )
        engine = utc_sessions(sa.create_engine(url))  # TIMESTAMP in UTC, as the platform reads it everywhere
        relation = relation_sql(sync.table, sync.query)
        try:
            yield from select_since_sqlalchemy(
                engine, relation, sync.cursor, mark, sync.chunk_rows, sync.required_columns, null_cursor_rows=True
            )
        finally:
            engine.dispose()
    except MissingColumnError as exc:
        raise dg.Failure(f"sync {sync.sync}: {exc}") from exc


@dataclasses.dataclass
class _Progress:
    """A run's counts, its high-water mark, its first failure and its dead letters, chunk by chunk."""

    sync: HttpSync
    watermark: Watermark
    read: int = 0
    sent: int = 0
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    first_failure: str | None = None
    dead: list[pa.RecordBatch] = dataclasses.field(default_factory=list)

    @property
    def stopped(self) -> bool:
        """True once a record failed under ``on_failure: fail``: nothing more is sent."""
        return self.first_failure is not None and self.sync.on_failure == "fail"

    def account(
        self, rows: list[dict[str, Any]], keys: list[str], bodies: list[Any], outcome: list[PushResult | None]
    ) -> pa.RecordBatch:
        """Fold one chunk's outcomes in (counts, mark, dead letters); returns its results batch. An outcome
        of ``None`` is a row acknowledged by an earlier run and left out (no results row)."""
        sync = self.sync
        columns: dict[str, list[Any]] = {name: [] for name in RESULT_SCHEMA.names}
        dead: dict[str, list[Any]] = {name: [] for name in DEAD_LETTER_SCHEMA.names}
        for row, key, body, result in zip(rows, keys, bodies, outcome, strict=True):
            if result is None:
                self.skipped += 1
                if sync.cursor:
                    self.watermark.observe(row[sync.cursor], True, key)
                continue
            ident = json.dumps([row[c] for c in sync.key_columns], default=json_default)
            values = [ident, key, result.status, result.response, result.attempts, result.error, result.sent_at]
            for name, value in zip(RESULT_SCHEMA.names, values, strict=True):
                columns[name].append(value)
            sent = result.attempts > 0
            failed = result.failed
            self.sent += sent
            self.succeeded += result.ok
            self.failed += failed
            if failed and self.first_failure is None:
                self.first_failure = f"record {ident} (idempotency key {key}): {result.error or result.status}"
            if failed and sync.on_failure == "dead_letter":
                at = row[sync.cursor] if sync.cursor else None
                cursor_text = CursorValue.from_python(at).text if at is not None else None
                extra = [cursor_text, json_body(body)]
                for name, value in zip(dead, [*values, *extra], strict=True):
                    dead[name].append(value)
            if sync.cursor:
                done = result.ok or (failed and sync.on_failure == "dead_letter")
                self.watermark.observe(row[sync.cursor], done, key)
        if dead["key"]:
            self.dead.append(pa.RecordBatch.from_pydict(dead, schema=DEAD_LETTER_SCHEMA))
        return pa.RecordBatch.from_pydict(columns, schema=RESULT_SCHEMA)


def _base_url(sync: HttpSync, url: str) -> str:
    """The target's base URL without its final ``/``. Raises ``dg.Failure`` naming the sync and the field (never
    the value, which may hold a password) when it is no ``http(s)`` URL with a host, or holds a space at either
    end or a control character (a line break from a file read into the variable): a variable without
    ``https://`` failed every row after retrying it as a transient failure (under ``dead_letter`` every row
    then went to the dead letters)."""
    try:
        parts = urlsplit(url)
        usable = parts.scheme.lower() in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # a port that is no number, a broken IPv6 address
        usable = False
    env = sync.target.base_url_env
    where = f"target.base_url_env: the value of {env}" if env else "target.base_url"
    # urlsplit drops tabs and line breaks and reads past leading spaces; httpx refuses them on every row
    if url != url.strip() or any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in url):
        raise dg.Failure(
            f"sync {sync.sync}: {where} has a space at either end or a control character (a line break read from "
            "a file?)"
        )
    if not usable:
        raise dg.Failure(f"sync {sync.sync}: {where} is not an http(s) URL with a host (http://host or https://host)")
    return url.rstrip("/")


def _pusher(sync: HttpSync, target: HttpTargetResource, run_id: str) -> HttpPusher:
    policy = PushPolicy(
        concurrency=sync.concurrency,
        connect_timeout=sync.connect_timeout,
        read_timeout=sync.read_timeout,
        request_timeout=sync.request_timeout,
        max_body_bytes=sync.max_body_bytes,
        max_retries=sync.max_retries,
        backoff_factor=sync.backoff_factor,
        max_retry_after=sync.max_retry_after,
        accept_statuses=frozenset(sync.target.accept_statuses),
        rate_limit=sync.rate_limit,
    )
    secret_headers = env_headers(sync.target.headers_env)
    headers = {**sync.target.headers, **secret_headers}
    base = target.base_url.rstrip("/")
    # a password in the base URL's user info goes out as a basic Authorization header a target may echo
    secrets = [*secret_headers.values(), *userinfo_secrets(base)]
    return HttpPusher(policy, target.auth, headers, sync.target.idempotency_header, f"{run_id}|{base}", secrets)


def _push(
    sync: HttpSync, context: dg.AssetExecutionContext, base: str, pusher: HttpPusher, progress: _Progress
) -> Iterator[pa.RecordBatch]:
    """Send every chunk of rows (each chunk's requests concurrently) and yield its results batch."""
    build = sync.body_builder()
    with asyncio.Runner() as runner:
        runner.run(pusher.__aenter__())
        try:
            for rows in _read_rows(sync, context, progress.watermark.value):
                progress.read += len(rows)
                keys = [sync.idempotency_key(r) for r in rows]
                outcome: list[PushResult | None] = [None] * len(rows)  # None: acknowledged by an earlier run
                todo: list[int] = []  # positions to send
                refused = False
                for i, (row, key) in enumerate(zip(rows, keys, strict=True)):
                    if progress.watermark.done(key):
                        continue
                    if refused and sync.on_failure == "fail":  # nothing is sent after a failure
                        outcome[i] = PushResult(PushRequest("", "", b"", key, (i,)), stopped=True)
                    elif (why := sync.refusal(row)) is not None:
                        outcome[i] = PushResult(PushRequest("", "", b"", key, (i,)), error=why)
                        refused = True
                    else:
                        todo.append(i)
                bodies: list[Any] = [None] * len(rows)
                for i in todo:
                    try:
                        bodies[i] = build(rows[i], keys[i])
                    except Exception as exc:  # the hook's own error names neither sync nor record
                        ident = json.dumps([rows[i][c] for c in sync.key_columns], default=json_default)
                        raise dg.Failure(
                            pusher.redact(
                                f"sync {sync.sync}: record {ident} (idempotency key {keys[i]}): hook {sync.hook} "
                                f"failed: {type(exc).__name__}: {exc}"
                            )
                        ) from exc
                requests = sync.requests_for(
                    base, [rows[i] for i in todo], [keys[i] for i in todo], [bodies[i] for i in todo]
                )
                stop_on_failure = sync.on_failure == "fail"
                for result in runner.run(pusher.send_all(requests, lambda: progress.stopped, stop_on_failure)):
                    for i in result.request.rows:
                        outcome[todo[i]] = result
                yield progress.account(rows, keys, bodies, outcome)
                if progress.stopped:
                    return
        finally:
            runner.run(pusher.__aexit__())


def _run_sync(context: dg.AssetExecutionContext, sync: HttpSync) -> dg.MaterializeResult:
    """The sync asset's body (see :func:`sync_asset`): push the rows since the mark, land the results
    and dead letters, and return the materialisation's metadata."""
    target: HttpTargetResource = getattr(context.resources, sync.resource_key)
    base = _base_url(sync, target.base_url)
    lake: LakeResource = context.resources.lake
    refuse_ephemeral_marks(context, sync.cursor is not None, f"sync {sync.sync}")
    tag_run_host(context)  # it holds the duckdb slot: a kill from now on is reclaimable
    mark = read_mark(context.instance, context.asset_key) if sync.cursor else None
    acknowledged = read_acknowledged(context.instance, context.asset_key) if sync.cursor else []
    progress = _Progress(sync, Watermark(mark, acknowledged))
    pusher = _pusher(sync, target, context.run.run_id)
    started = time.monotonic()
    window = f"run-{context.run.run_id}"
    results = _push(sync, context, base, pusher, progress)
    results_spec = StreamSpec(source=GROUP, name=f"{sync.sync}_results", write_disposition="append")
    dead_spec = StreamSpec(source=GROUP, name=f"{sync.sync}_dead_letter", write_disposition="append")
    store = lake.store()
    for spec in (results_spec, dead_spec):  # a landing sweeps only its window; each run has its own
        store.remove_stale_staging(f"{spec.path}/")
    try:
        manifest = land(store, results_spec, window, results, RESULT_SCHEMA, full=False)
    except LandingError as exc:  # a failure reading the rows (a missing column) is the sync's, not the landing's
        if isinstance(exc.__cause__, dg.Failure):
            raise exc.__cause__ from None
        raise
    if progress.dead:
        land(store, dead_spec, window, progress.dead, DEAD_LETTER_SCHEMA, full=False)
    seconds = time.monotonic() - started
    after = progress.watermark.value
    metadata: dict[str, Any] = {
        "rows_read": progress.read,
        "rows_sent": progress.sent,
        "rows_succeeded": progress.succeeded,
        "rows_failed": progress.failed,
        "rows_skipped": progress.skipped,
        "requests": pusher.requests_sent,
        "requests_per_second": round(pusher.requests_sent / max(seconds, 1e-6), 1),
        "seconds": round(seconds, 3),
        "results_uri": dg.MetadataValue.path(f"{lake.url.rstrip('/')}/{manifest.key}"),
        **mark_metadata(mark, after),
        **({"acknowledged_at_mark": dg.MetadataValue.json(progress.watermark.acknowledged)} if sync.cursor else {}),
    }
    context.log.info(
        f"sync {sync.sync}: {progress.succeeded}/{progress.read} row(s) acknowledged, {progress.failed} failed, "
        f"{pusher.requests_sent} request(s) in {seconds:.2f}s"
    )
    if progress.stopped:
        context.log_event(dg.AssetMaterialization(asset_key=sync.asset_key, metadata=metadata))
        raise dg.Failure(
            f"sync {sync.sync}: {progress.first_failure}; the mark stays at {after.text if after else None!r}"
        )
    return dg.MaterializeResult(metadata=metadata)


def sync_asset(sync: HttpSync) -> dg.AssetsDefinition:
    """The asset that posts the sync's rows. Raises ``dg.Failure`` under ``on_failure: fail`` naming the first
    failed record's key, status and error (after landing the results and recording the safe mark)."""
    deps = [dg.AssetKey.from_user_string(d) for d in sync.deps]
    if sync.table:
        deps.append(warehouse_table_key(sync.table))
    resources = {"lake", sync.resource_key} | ({"warehouse"} if sync.source.warehouse else set())

    @dg.asset(
        key=sync.asset_key,
        group_name=GROUP,
        kinds={"http", "duckdb" if sync.source.warehouse else "sql"},
        deps=deps,
        **(warehouse_step() if sync.source.warehouse else {}),
        required_resource_keys=resources,
        description=f"Rows posted to {sync.target.method} {sync.target.path} ({sync.mode} mode).",
    )
    def _sync(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        return _run_sync(context, sync)

    return _sync
