"""Publishing warehouse rows to a queue or topic: each row one JSON message, confirmed.

An entry of a ``QueueSource``'s ``publish`` list::

    - name: invoices_out                # asset <source>/publish_<name>
      table: chinook.invoices           # a warehouse table (its asset becomes a dependency)
      # or: query: "SELECT ... FROM chinook.invoices JOIN ..." with deps: ["warehouse/chinook.invoices"]
      key_columns: [invoice_id]         # what identifies a row (default: the whole row)
      cursor: invoice_date              # optional: only rows changed since the last run
      queue: invoices_out               # RabbitMQ: default exchange, routing key = queue
      # or exchange: events + routing_key: invoices;  Kafka: topic: invoices_out
      transactional: false              # Kafka 0.11+: all of a run's messages visible, or none

Idempotent message ids: a message's id is the SHA-256 of (source, name, key values, cursor
value), or of the whole row without a cursor, so publishing the same row version again sends
the same id, and a consumer that de-duplicates on it (as ``QueueSource`` does) keeps one row.
RabbitMQ carries it as the ``message_id`` property, Kafka as the message key (consume with
``message_id: key``). Every message is confirmed by the broker (RabbitMQ publisher confirms,
Kafka delivery reports with ``acks=all``, from an idempotent producer on Kafka 0.11+) before
the run ends; with ``transactional: true`` a Kafka publication is one transaction, committed
once every message is delivered and aborted when the run fails (``read_committed`` consumers,
the default, see all of it or none);
the high-water mark (``cursor_after`` in the materialisation metadata) advances only then.
The next run starts *at* the mark (``>=``), re-sending the rows that share it under the same
ids, so a row committed late with the boundary value is not missed. NaN and infinite numbers
are sent as ``null`` (JSON has no spelling for them).
"""

import json
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Protocol

import dagster as dg
from pydantic import Field, model_validator

from integration_platform.assets.cluster import warehouse_step
from integration_platform.assets.config_model import SafeModel, current_asset_keys, require_exactly_one
from integration_platform.assets.marks import mark_metadata, read_mark, refuse_ephemeral_marks
from integration_platform.assets.run_recovery import tag_run_host
from integration_platform.assets.stream_assets import warehouse_connection, warehouse_table_key
from integration_platform.core.loading import current_catalog
from integration_platform.core.outbound import (
    MissingColumnError,
    Watermark,
    json_body,
    json_default,
    relation_sql,
    row_id,
    select_since,
)
from integration_platform.core.streams import IDENTIFIER

TABLE = r"^[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*$"


class PublishSpec(SafeModel, dg.Resolvable):
    """One publication: which rows (``table`` or ``query``), where to (``queue`` or
    ``exchange`` + ``routing_key``), keyed how (module doc)."""

    name: str = Field(pattern=IDENTIFIER.pattern)
    table: str | None = Field(default=None, pattern=TABLE, description="Warehouse table, schema.table.")
    query: str | None = None
    deps: list[str] = Field(default_factory=list, description="Asset keys (a/b/c) the query reads.")
    key_columns: list[str] = Field(default_factory=list)
    cursor: str | None = None
    queue: str | None = None
    topic: str | None = None
    exchange: str | None = None
    routing_key: str | None = None
    fetch_rows: int = Field(default=10_000, ge=1)
    transactional: bool = Field(
        default=False, description="Kafka 0.11+: the run's messages in one transaction (all or none visible)."
    )

    @model_validator(mode="after")
    def _current_deps(self) -> "PublishSpec":
        current_asset_keys(self.deps)
        return self

    @model_validator(mode="after")
    def _consistent(self) -> "PublishSpec":
        require_exactly_one(self, "table", "query", f"publish {self.name!r}: ")
        if [self.queue, self.exchange, self.topic].count(None) != 2:
            raise ValueError(f"publish {self.name!r}: set one of 'queue', 'exchange' (with 'routing_key') and 'topic'")
        if self.exchange is not None and self.routing_key is None:
            raise ValueError(f"publish {self.name!r}: 'exchange' needs 'routing_key'")
        if self.transactional and self.topic is None:
            raise ValueError(f"publish {self.name!r}: 'transactional' is for Kafka topics")
        return self

    @property
    def destination(self) -> str:
        """The queue, exchange or topic, for messages."""
        return self.queue or self.topic or f"exchange {self.exchange}"

    @property
    def upstream(self) -> list[dg.AssetKey]:
        keys = [dg.AssetKey.from_user_string(d) for d in self.deps]
        if self.table:
            keys.append(warehouse_table_key(self.table))
        return keys


class Publisher(Protocol):
    """A broker's sending side as the publish asset sees it; leaving its context waits for the
    confirms / delivery reports of everything sent and raises if any message was refused."""

    def send(self, message_id: str, body: bytes) -> None: ...


#: Opens a publisher on the broker resource for one publication.
PublisherFactory = Callable[[Any, "PublishSpec"], AbstractContextManager[Publisher]]


def message_id(source: str, spec: PublishSpec, row: dict[str, Any]) -> str:
    """The row's idempotent message id: 64 hex digits (:func:`~integration_platform.core.outbound.row_id`)."""
    return row_id([source, spec.name], row, spec.key_columns, spec.cursor)


def _which(spec: PublishSpec, row: dict[str, Any], ident: str) -> str:
    """The row a message carries, for errors: its key values and message id (never the whole row)."""
    keys = json.dumps([row[c] for c in spec.key_columns], default=json_default) if spec.key_columns else None
    return f"row {keys} (message id {ident})" if keys else f"message id {ident}"


def publish_asset(
    source: str, spec: PublishSpec, resource_key: str, broker: str, open_publisher: PublisherFactory
) -> dg.AssetsDefinition:
    """The asset that publishes ``spec``'s rows through the broker resource ``resource_key``.

    Raises ``dg.Failure`` naming the publication when a column is missing or the broker does
    not confirm a message (naming the row's key values and message id when the broker refused it
    as it was sent), or a row's cursor is NULL (read on every run, last, and refused: ``cursor >=
    mark`` would never read it again, and such rows added after the first run were passed over in
    silence); nothing is marked published then (the next run sends again). NaN and
    infinities are sent as JSON ``null``.
    """

    @dg.asset(
        key=dg.AssetKey([source, f"publish_{spec.name}"]),
        group_name=source,
        kinds={broker, "duckdb"},
        deps=spec.upstream,
        **warehouse_step(),
        required_resource_keys={"warehouse", resource_key},
        description=f"Rows of {spec.table or 'a query'} published to {spec.destination}, confirmed.",
    )
    def _publish(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        refuse_ephemeral_marks(context, spec.cursor is not None, f"publication {spec.name}")
        tag_run_host(context)  # it holds the duckdb slot: a kill from now on is reclaimable
        mark = read_mark(context.instance, context.asset_key) if spec.cursor else None
        started = time.monotonic()
        published, watermark = 0, Watermark(mark)
        with (
            warehouse_connection(context) as conn,
            open_publisher(getattr(context.resources, resource_key), spec) as publisher,
        ):
            relation = relation_sql(spec.table, spec.query, current_catalog(conn))
            try:
                chunks = select_since(
                    conn, relation, spec.cursor, mark, spec.fetch_rows, spec.key_columns, null_cursor_rows=True
                )
                for rows in chunks:
                    for row in rows:
                        ident = message_id(source, spec, row)
                        if spec.cursor and row[spec.cursor] is None:  # read last: every other row went out
                            raise dg.Failure(
                                f"publish {spec.name}: {_which(spec, row, ident)}: cursor column {spec.cursor!r} "
                                "is NULL (cursor >= mark would never read it again): set it, or publish "
                                "without a cursor"
                            )
                        body = json_body(row).encode()
                        try:
                            publisher.send(ident, body)
                        except Exception as exc:  # the broker's error names neither publication nor row
                            raise dg.Failure(f"publish {spec.name}: {_which(spec, row, ident)}: {exc}") from None
                        published += 1
                        if spec.cursor:  # confirmed on leaving the publisher's context, or nothing is recorded
                            watermark.observe(row[spec.cursor], acknowledged=True)
            except MissingColumnError as exc:
                raise dg.Failure(f"publish {spec.name}: {exc}") from exc
        high = watermark.value
        seconds = time.monotonic() - started
        context.log.info(f"published {published} message(s) to {spec.destination} in {seconds:.2f}s")
        return dg.MaterializeResult(
            metadata={
                "messages_published": published,
                "seconds": round(seconds, 3),
                "messages_per_second": round(published / max(seconds, 1e-6)),
                **({"transactional": True} if spec.transactional else {}),
                **mark_metadata(mark, high),
            }
        )

    return _publish
