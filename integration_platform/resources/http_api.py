"""RestApiResource: one HTTP API or web site, with its auth, retries, rate limit, timeouts and TLS settings.

Shared by the kinds that read over HTTP: the REST sources (JSON, their paginators in
``sources/rest/client.py``) and the HTML sources (pages). The resource holds the settings; its
:meth:`RestApiResource.client` builds a :class:`~integration_platform.resources.http_client.RestClient`,
whose module imports ``requests``, so building the definitions does not.

HTTP is ``requests``; the retry policy is urllib3's ``Retry`` (exponential backoff with
jitter, ``Retry-After`` honoured on 429/503, status list 429/500/502/503/504, connection and
read errors). urllib3 applies a ``Retry`` only around the status line and headers, so the
attempts run in :meth:`~integration_platform.resources.http_client.RestClient.get`, which asks the
same ``Retry`` object whether to go on and how long to sleep; that way a body cut short or invalid
JSON is retried too, and every attempt passes the run's
:class:`~integration_platform.resources.rate_limit.RateLimiter` (so retries never exceed the limit).

Errors raised (:class:`HttpSourceError`) name the method, the URL with secret query values
redacted and the reason; they never chain the underlying exception (its text may hold the
URL with a secret).
"""

from typing import TYPE_CHECKING

import dagster as dg
from pydantic import Field

from integration_platform.resources.http_auth import HttpAuth

if TYPE_CHECKING:
    from integration_platform.resources.http_client import RestClient


class HttpSourceError(Exception):
    """A request failed for good (HTTP error, retries exhausted, a paginator that does not advance).

    ``status`` is the final HTTP status when there was one.
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RestApiResource(dg.ConfigurableResource):
    """An HTTP JSON API. Build clients with :meth:`client`; one client per run and API.

    Credentials (``auth`` and the ``secret_headers_env`` headers) go only to the base URL's origin and the
    ``allowed_hosts`` origins; a request or redirect to any other origin is sent without them (see
    :class:`~integration_platform.resources.http_credentials.OriginBoundAuth`).

    Timeouts are seconds; ``rate_limit`` is requests per second for the whole run (every
    thread and process of it), ``None`` for no limit; ``concurrency`` bounds parallel
    requests of a fan-out; ``max_retries`` counts retries after the first attempt;
    ``backoff_*`` are urllib3 ``Retry`` parameters (seconds); ``max_retry_after`` is the
    longest ``Retry-After`` we wait before failing instead.
    """

    base_url: str = Field(description="Base URL; stream paths are joined to it.")
    headers: dict[str, str] = Field(default_factory=dict, description="Headers sent to every host (no secrets).")
    secret_headers_env: dict[str, str] = Field(
        default_factory=dict,
        description="Header name -> environment variable holding its value; sent to allowed origins only.",
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Origins (https://host[:port]) besides the base URL's that may receive credentials.",
    )
    params: dict[str, str] = Field(default_factory=dict)
    auth: HttpAuth = Field(default_factory=HttpAuth)
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    verify_tls: bool = True
    ca_bundle: str | None = Field(default=None, description="PEM file of CAs to trust instead of certifi's.")
    max_retries: int = 5
    backoff_factor: float = 0.5
    backoff_max: float = 30.0
    backoff_jitter: float = 0.5
    max_retry_after: float = Field(default=300.0, gt=0, allow_inf_nan=False)
    #: The most bytes of one response body read (after content decoding: a gzip body of 0.3 MB inflated to
    #: 300 MB in memory), and the most seconds one attempt may take in all (``read_timeout`` bounds only
    #: the gap between two reads: a server sending a byte a second held a request for ever).
    max_body_bytes: int = 256 << 20
    request_timeout: float = 600.0
    rate_limit: float | None = None
    concurrency: int = 8

    def client(self, scope: str) -> "RestClient":
        """A client whose rate limit is shared by everything using the same ``scope`` (the run id)."""
        from integration_platform.resources.http_client import RestClient  # requests: when a step builds one

        return RestClient(self, scope)
