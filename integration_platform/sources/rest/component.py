"""RestSource: one YAML file declares an HTTP API's streams; this component turns it into assets.

``defs/<source>/defs.yaml``::

    type: integration_platform.components.RestSource
    attributes:
      source: pokeapi                       # asset group, lake prefix, DuckDB schema
      base_url_env: POKEAPI_URL             # or base_url: https://pokeapi.co
      auth: {type: bearer, token_env: POKEAPI_TOKEN}
      rate_limit: 20                        # requests per second, whole run
      concurrency: 8                        # parallel requests of a fan-out
      defaults:
        paginator: {type: offset, limit: 100, total_path: count}
        records: results
      streams:
        - name: berries
          path: /api/v2/berry/
          primary_key: [name]
        - name: berry_details               # one request per parent record
          path: "{url}"
          parent: {stream: berries, include: [name]}
          records: $
          paginator: {type: single_page}
          primary_key: [id]

Per stream: ``<source>/<stream>`` (Parquet) and ``warehouse/<source>.<stream>`` (DuckDB), the
same checks as every stream, ``quarantine_empty`` when records may be quarantined, a
``<source>_refresh`` job and its daily schedule (stopped by default). Every value is checked
when definitions load; errors name the file, the field and what is allowed.
"""

from pathlib import Path
from typing import Annotated, Literal

import dagster as dg
from pydantic import Field, model_validator

from integration_platform.assets.config_model import (
    SafeModel,
    SecretSafeComponent,
    typed_union,
)
from integration_platform.assets.freshness import refreshed_source
from integration_platform.assets.http_config import HttpSiteConfig, param_text
from integration_platform.assets.stream_assets import (
    ExtractionReport,
    ExtractorFactory,
    lake_key,
    stream_assets,
    warehouse_key,
)
from integration_platform.core.extract import Extractor
from integration_platform.core.json_paths import compile_path
from integration_platform.core.streams import IDENTIFIER, SOURCE_NAME, StreamSpec
from integration_platform.resources.http_api import RestApiResource
from integration_platform.resources.lake import LakeResource
from integration_platform.sources.rest.extract import COLUMN_TYPES, RestStreamPlan, extractor_for
from integration_platform.sources.rest.paginators import Paginator


class PaginatorConfig(SafeModel):
    """The base of every paginator type's model (see :data:`RestPaginator`)."""


class _Paging(PaginatorConfig):
    """What every paginator that follows pages takes; JSON paths are checked when the YAML loads."""

    max_pages: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _paths_compile(self) -> "_Paging":
        for name in ("total_path", "cursor_path", "next_url_path"):
            value = getattr(self, name, None)
            if value and "{{" not in value:  # a template is checked once rendered (typed_union)
                compile_path(value)
        return self


class OffsetPaginator(_Paging):
    """``offset``/``limit`` query parameters; ends on an empty page or at the total at ``total_path``."""

    type: Literal["offset"]
    limit: int = Field(ge=1)
    limit_param: str = "limit"
    offset_param: str = "offset"
    total_path: str | None = None


class PageNumberPaginator(_Paging):
    """A page counter from ``start_page``; ends on an empty page or after the page count at ``total_path``."""

    type: Literal["page_number"]
    page_param: str = "page"
    start_page: int = Field(default=1, ge=0)
    limit: int | None = Field(default=None, ge=1)
    limit_param: str = "limit"
    total_path: str | None = None


class CursorPaginator(_Paging):
    """The token at ``cursor_path`` goes back as ``cursor_param``; ends when it is missing or empty."""

    type: Literal["cursor"]
    cursor_path: str
    cursor_param: str
    limit: int | None = Field(default=None, ge=1)
    limit_param: str = "limit"


class NextUrlPaginator(_Paging):
    """The URL at ``next_url_path`` (absolute or relative); ends when it is missing."""

    type: Literal["next_url"]
    next_url_path: str


class LinkHeaderPaginator(_Paging):
    """The ``rel="next"`` target of the RFC 8288 ``Link`` header; ends when there is none."""

    type: Literal["link_header"]


class SinglePage(PaginatorConfig):
    """One request."""

    type: Literal["single_page"]


#: A stream's paginator in YAML: one model per ``type``, each taking only the fields it uses, the
#: way dlt's typed REST config does (see :mod:`integration_platform.sources.rest.paginators`).
RestPaginator = Annotated[
    OffsetPaginator | PageNumberPaginator | CursorPaginator | NextUrlPaginator | LinkHeaderPaginator | SinglePage,
    Field(discriminator="type"),
]
#: The annotation of a ``paginator`` field (streams, defaults): unset means the defaults' or one page.
PaginatorField = Annotated[PaginatorConfig | None, typed_union(RestPaginator | None)]


class RestIncremental(SafeModel, dg.Resolvable):
    """The stream's high-water mark: the record field ``cursor``, sent back in ``param``."""

    cursor: str
    param: str
    initial_value: str | None = Field(default=None, description="Lower bound of the first run.")
    format: str | None = Field(default=None, description="strftime format of the bound for time cursors.")
    lag: float = Field(default=0.0, ge=0, description="Look-back: seconds for time cursors, units for numbers.")


class RestParent(SafeModel, dg.Resolvable):
    """Fan out from another stream of the source: one request per distinct parent record."""

    stream: str
    include: list[str] = Field(default_factory=list, description="Parent fields copied as _<parent>_<field>.")


class RestStream(SafeModel, dg.Resolvable):
    """One endpoint as a stream. Unset fields come from ``defaults``."""

    name: str = Field(pattern=IDENTIFIER.pattern)
    path: str = Field(min_length=1, description="Joined to base_url; {field} placeholders need a parent.")
    params: dict[str, str | int | float | bool] = Field(default_factory=dict)
    records: str | None = Field(default=None, description="JSON path of the records; $ for the whole body.")
    primary_key: list[str] = Field(default_factory=list)
    paginator: PaginatorField = None
    incremental: RestIncremental | None = None
    parent: RestParent | None = None
    write_disposition: Literal["replace", "append", "merge"] | None = None
    nested: Literal["struct", "json"] | None = None
    columns: dict[str, str] = Field(default_factory=dict, description=f"Declared types: {', '.join(COLUMN_TYPES)}.")
    on_schema_conflict: Literal["fail", "quarantine"] | None = None
    skip_statuses: list[int] = Field(default_factory=list, description="HTTP statuses that skip a parent record.")

    @model_validator(mode="after")
    def _consistent(self) -> "RestStream":
        if self.records:
            compile_path(self.records)
        bad = {k: v for k, v in self.columns.items() if v not in COLUMN_TYPES}
        if bad:
            raise ValueError(f"stream {self.name!r}: columns {bad}: allowed types are {', '.join(COLUMN_TYPES)}")
        if self.incremental and self.parent:
            raise ValueError(f"stream {self.name!r}: a child stream (parent) cannot also be incremental")
        if self.incremental and self.write_disposition == "replace":
            raise ValueError(f"stream {self.name!r}: 'incremental' needs write_disposition 'append' or 'merge'")
        if self.write_disposition == "merge" and not self.primary_key:
            raise ValueError(f"stream {self.name!r}: write_disposition 'merge' needs a primary_key")
        if "{" in self.path and not self.parent:
            raise ValueError(f"stream {self.name!r}: path {self.path!r} has placeholders but no 'parent'")
        return self


class RestDefaults(SafeModel, dg.Resolvable):
    """Applied to every stream that does not set the field itself."""

    paginator: PaginatorField = None
    records: str | None = None
    nested: Literal["struct", "json"] = "struct"
    on_schema_conflict: Literal["fail", "quarantine"] = "fail"


class RestSource(SecretSafeComponent, dg.Component, HttpSiteConfig, dg.Resolvable):
    """An HTTP JSON API whose endpoints land in the lake and the warehouse (see module doc)."""

    source: str = Field(
        pattern=SOURCE_NAME.pattern, description="Asset group, lake prefix, DuckDB schema (words joined by single _)."
    )
    defaults: RestDefaults = Field(default_factory=RestDefaults)
    streams: list[RestStream] = Field(min_length=1)
    schedule: str = Field(default="0 3 * * *", description="Cron (UTC) of the daily refresh.")

    def _fail(self, yaml_path: Path, where: str, message: str) -> ValueError:
        return ValueError(f"{yaml_path}: attributes.{where}: {message}")

    def validate_declaration(self, yaml_path: Path) -> None:
        """Checks across fields, each failing with ``ValueError("<file>: <field>: ...")``."""
        self.validate_source(yaml_path, self.schedule, self.streams)
        names = [s.name for s in self.streams]
        for i, stream in enumerate(self.streams):
            if stream.parent and stream.parent.stream not in names:
                known = f"{stream.parent.stream!r} is not a stream; one of {names}"
                raise self._fail(yaml_path, f"streams[{i}].parent.stream", known)
        parents = {s.name: s.parent.stream for s in self.streams if s.parent}
        for i, stream in enumerate(self.streams):
            chain, name = [stream.name], stream.name
            while name in parents:
                name = parents[name]
                if name in chain:
                    cycle = " -> ".join([*chain, name])
                    raise self._fail(yaml_path, f"streams[{i}].parent.stream", f"parents form a cycle: {cycle}")
                chain.append(name)

    @property
    def resource_key(self) -> str:
        return f"{self.source}_api"

    def resource(self) -> RestApiResource:
        """The API's resource (:meth:`HttpSiteConfig.site_resource`)."""
        return self.site_resource()

    def _spec(self, stream: RestStream) -> StreamSpec:
        cursor = stream.incremental.cursor if stream.incremental else None
        primary_key = tuple(stream.primary_key)
        disposition = stream.write_disposition or (("merge" if primary_key else "append") if cursor else "replace")
        return StreamSpec(
            source=self.source,
            name=stream.name,
            write_disposition=disposition,
            primary_key=primary_key,
            cursor=cursor,
            lag=stream.incremental.lag if stream.incremental else 0.0,
            description=f"GET {stream.path} of the {self.source} API.",
            metadata={"endpoint": stream.path},
        )

    def plans(self) -> list[RestStreamPlan]:
        """Every stream resolved with the defaults, parents first."""
        specs = {s.name: self._spec(s) for s in self.streams}
        paths = {s.name: s.path for s in self.streams}
        plans = []
        for stream in self.streams:
            paginator = stream.paginator or self.defaults.paginator
            plans.append(
                RestStreamPlan(
                    spec=specs[stream.name],
                    path=stream.path,
                    params={k: param_text(v) for k, v in stream.params.items()},
                    records_path=stream.records if stream.records is not None else self.defaults.records,
                    paginator=Paginator(**paginator.model_dump()) if paginator else Paginator(),
                    incremental_param=stream.incremental.param if stream.incremental else None,
                    initial_value=stream.incremental.initial_value if stream.incremental else None,
                    cursor_format=stream.incremental.format if stream.incremental else None,
                    parent=specs[stream.parent.stream] if stream.parent else None,
                    parent_path=paths[stream.parent.stream] if stream.parent else None,
                    include_from_parent=tuple(stream.parent.include) if stream.parent else (),
                    skip_statuses=frozenset(stream.skip_statuses),
                    nested=stream.nested or self.defaults.nested,
                    columns=tuple(stream.columns.items()),
                    on_conflict=stream.on_schema_conflict or self.defaults.on_schema_conflict,
                )
            )
        return plans

    def _factory(self, plan: RestStreamPlan) -> ExtractorFactory:
        key = self.resource_key

        def factory(context: dg.AssetExecutionContext, report: ExtractionReport, _: str | None) -> Extractor:
            api: RestApiResource = getattr(context.resources, key)
            lake: LakeResource = context.resources.lake
            return extractor_for(plan, lambda: api.client(context.run.run_id), lake.store(), report)

        return factory

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        yaml_path = Path(context.path) / "defs.yaml"
        self.validate_declaration(yaml_path)
        try:
            plans = self.plans()
        except ValueError as exc:
            raise ValueError(f"{yaml_path}: attributes.streams: {exc}") from exc
        assets = [
            a
            for plan in plans
            for a in stream_assets(
                plan.spec,
                "api",
                self.resource_key,
                self._factory(plan),
                deps=[lake_key(plan.parent)] if plan.parent else (),
                quarantine=plan.on_conflict == "quarantine",
            )
        ]
        return refreshed_source(
            self.source,
            assets,
            [warehouse_key(plan.spec) for plan in plans],
            self.schedule,
            f"Refresh of every {self.source} stream (incremental where declared).",
            {self.resource_key: self.resource()},
        )
