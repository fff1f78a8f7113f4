"""HtmlSource: one YAML file declares a web site's pages as streams (data published only as HTML).

``defs/<source>/defs.yaml``::

    type: integration_platform.components.HtmlSource
    attributes:
      source: catalogue                     # asset group, lake prefix, DuckDB schema
      base_url_env: CATALOGUE_URL           # or base_url:; auth, headers, rate_limit as RestSource
      robots_txt: obey                      # or ignore (only with the site owner's permission)
      user_agent: integration_platform      # sent as User-Agent and matched in robots.txt
      streams:
        - name: tracks
          path: /chinook/Track
          params: {_size: 100}
          rows: "table.rows-and-columns tbody tr"        # one record per row node
          columns:
            track_id: "td.col-TrackId"                    # the text of the first match in the row
            detail: {css: "td.col-TrackId a", attribute: href}
          types: {track_id: int64}                        # values are text unless declared
          next_page: 'a[href*="_next="]'                  # its href is the next page
          primary_key: [track_id]
        - name: genres
          path: /chinook/Genre
          table: "table.rows-and-columns"                 # a <table>: header cells name the columns
          header_attribute: data-column                   # optional: the name from this attribute

Pages go through the REST sources' HTTP client (same auth, origin-bound credentials, retries and
rate limit); robots.txt is honoured by default. Per stream: ``<source>/<stream>`` and
``warehouse/<source>.<stream>``, the checks of every stream plus ``quarantine_empty``, a
``<source>_refresh`` job and its daily schedule (stopped by default).
"""

from pathlib import Path
from typing import Annotated, Literal

import dagster as dg
from pydantic import Field, model_validator

from integration_platform.assets.config_model import SafeModel, SecretSafeComponent, typed_union
from integration_platform.assets.freshness import refreshed_source
from integration_platform.assets.http_config import HttpSiteConfig, param_text
from integration_platform.assets.stream_assets import (
    ExtractionReport,
    ExtractorFactory,
    stream_assets,
    warehouse_key,
)
from integration_platform.core.extract import Extractor
from integration_platform.core.records import ARROW_TYPES
from integration_platform.core.streams import IDENTIFIER, SOURCE_NAME, StreamSpec
from integration_platform.resources.http_api import RestApiResource
from integration_platform.sources.html.extract import HtmlColumn, HtmlStreamPlan, extractor_for


class HtmlColumnConfig(SafeModel):
    """A column: the CSS selector of its node within the row, and the attribute to take (else its text)."""

    css: str
    attribute: str | None = None


class HtmlStream(SafeModel, dg.Resolvable):
    """One family of pages as a stream: ``rows`` + ``columns``, or ``table``."""

    name: str = Field(pattern=IDENTIFIER.pattern)
    path: str = Field(min_length=1, description="Joined to base_url.")
    params: dict[str, str | int | float | bool] = Field(default_factory=dict)
    rows: str | None = Field(default=None, description="CSS selector of the row nodes.")
    #: Name -> CSS selector (its text), or ``{css: ..., attribute: href}``.
    columns: Annotated[dict[str, str | HtmlColumnConfig], typed_union(dict[str, str | HtmlColumnConfig])] = Field(
        default_factory=dict
    )
    table: str | None = Field(default=None, description="CSS selector of a <table> read whole.")
    header_attribute: str | None = Field(default=None, description="table: column names from this <th> attribute.")
    next_page: str | None = Field(default=None, description="CSS selector of the next page's link (its href).")
    max_pages: int = Field(default=1000, ge=1)
    types: dict[str, str] = Field(default_factory=dict, description=f"Declared types: {', '.join(ARROW_TYPES)}.")
    primary_key: list[str] = Field(default_factory=list)
    write_disposition: Literal["replace", "merge"] = "replace"

    @model_validator(mode="after")
    def _consistent(self) -> "HtmlStream":
        if bool(self.rows) == bool(self.table):
            raise ValueError(f"stream {self.name!r}: set 'rows' (with 'columns') or 'table', one of them")
        if self.rows and not self.columns:
            raise ValueError(f"stream {self.name!r}: 'rows' needs 'columns'")
        empty = [name for name, c in self.columns.items() if not (c if isinstance(c, str) else c.css).strip()]
        if empty:
            raise ValueError(f"stream {self.name!r}: columns {empty} have no CSS selector")
        if self.table and self.columns:
            raise ValueError(f"stream {self.name!r}: a 'table' names its columns from its header; drop 'columns'")
        bad = {k: v for k, v in self.types.items() if v not in ARROW_TYPES}
        if bad:
            raise ValueError(f"stream {self.name!r}: types {bad}: allowed types are {', '.join(ARROW_TYPES)}")
        if self.write_disposition == "merge" and not self.primary_key:
            raise ValueError(f"stream {self.name!r}: write_disposition 'merge' needs a primary_key")
        return self


class HtmlSource(SecretSafeComponent, dg.Component, HttpSiteConfig, dg.Resolvable):
    """A web site whose pages land in the lake and the warehouse (see module doc)."""

    source: str = Field(
        pattern=SOURCE_NAME.pattern, description="Asset group, lake prefix, DuckDB schema (words joined by single _)."
    )
    robots_txt: Literal["obey", "ignore"] = "obey"
    user_agent: str = Field(default="integration_platform", description="User-Agent sent and matched in robots.txt.")
    streams: list[HtmlStream] = Field(min_length=1)
    schedule: str = Field(default="0 3 * * *", description="Cron (UTC) of the daily refresh.")

    def _fail(self, yaml_path: Path, where: str, message: str) -> ValueError:
        return ValueError(f"{yaml_path}: attributes.{where}: {message}")

    def validate_declaration(self, yaml_path: Path) -> None:
        """Checks across fields, each failing with ``ValueError("<file>: <field>: ...")``."""
        self.validate_source(yaml_path, self.schedule, self.streams)
        if any(name.lower() == "user-agent" for name in [*self.headers, *self.headers_env]):
            raise self._fail(yaml_path, "headers", "set user_agent instead: robots.txt is matched against it")

    @property
    def resource_key(self) -> str:
        return f"{self.source}_site"

    def resource(self) -> RestApiResource:
        """The site's resource, with ``user_agent`` as the ``User-Agent`` header."""
        site = self.model_copy(update={"headers": {"User-Agent": self.user_agent, **self.headers}})
        return site.site_resource()

    def plans(self) -> list[HtmlStreamPlan]:
        """Every stream as its extractor runs it."""
        return [
            HtmlStreamPlan(
                spec=StreamSpec(
                    source=self.source,
                    name=s.name,
                    write_disposition=s.write_disposition,
                    primary_key=tuple(s.primary_key),
                    description=f"The pages of {s.path} on the {self.source} site.",
                    metadata={"page": s.path},
                ),
                path=s.path,
                params={k: param_text(v) for k, v in s.params.items()},
                rows=s.rows,
                columns=tuple(
                    HtmlColumn(name, c) if isinstance(c, str) else HtmlColumn(name, c.css, c.attribute)
                    for name, c in s.columns.items()
                ),
                table=s.table,
                header_attribute=s.header_attribute,
                next_page=s.next_page,
                max_pages=s.max_pages,
                types=tuple(s.types.items()),
                robots_txt=self.robots_txt,
                user_agent=self.user_agent,
            )
            for s in self.streams
        ]

    def _factory(self, plan: HtmlStreamPlan) -> ExtractorFactory:
        key = self.resource_key

        def factory(context: dg.AssetExecutionContext, report: ExtractionReport, _: str | None) -> Extractor:
            site: RestApiResource = getattr(context.resources, key)
            return extractor_for(plan, lambda: site.client(context.run.run_id), report)

        return factory

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        yaml_path = Path(context.path) / "defs.yaml"
        self.validate_declaration(yaml_path)
        plans = self.plans()
        assets = [
            a
            for plan in plans
            for a in stream_assets(plan.spec, "html", self.resource_key, self._factory(plan), quarantine=True)
        ]
        return refreshed_source(
            self.source,
            assets,
            [warehouse_key(plan.spec) for plan in plans],
            self.schedule,
            f"Refresh of every {self.source} page stream.",
            {self.resource_key: self.resource()},
        )
