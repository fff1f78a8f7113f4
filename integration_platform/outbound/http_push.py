"""A bounded async HTTP poster: many JSON requests, concurrently, each retried until acknowledged or failed.

HTTP is ``httpx2`` (the httpx API; already pinned through datasette) with one ``AsyncClient`` per sync and at most
``concurrency`` requests in flight (an ``asyncio.Semaphore``). The retry policy is urllib3's ``Retry`` as in
``resources/http_client.py``: statuses 429/500/502/503/504 and transport errors are retried with exponential backoff
and jitter; ``Retry-After`` (RFC 9110 section 10.2.3) is honoured on 429/503. Every request, POST included, is
retried: each carries an idempotency key header (draft-ietf-httpapi-idempotency-key-header), so a retry of a request
that did reach the target creates nothing new there. Every attempt passes the run-wide :class:`RateLimiter`
(blocking, so it runs on a worker thread via ``asyncio.to_thread``).

Auth reuses ``resources/http_credentials.build_auth``: the ``requests`` auth object is applied to a throw-away prepared
request and its headers / URL are copied (OAuth2 tokens renewed once after a 401). Errors and response texts are
scrubbed of secret values.
"""

import asyncio
import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import httpx2 as httpx
import requests
from urllib3.exceptions import MaxRetryError
from urllib3.response import HTTPResponse
from urllib3.util.retry import Retry

from integration_platform.resources.http_auth import HttpAuth, mask, secret_values
from integration_platform.resources.http_credentials import OAuth2TokenAuth, build_auth
from integration_platform.resources.http_retry import retry_policy
from integration_platform.resources.rate_limit import RateLimiter

#: Characters of a response body kept in the results table.
RESPONSE_CHARS = 2000


@dataclass(frozen=True)
class PushRequest:
    """One request: ``rows`` are the positions (in the chunk) of the records it carries."""

    method: str
    url: str
    body: bytes
    idempotency_key: str
    rows: tuple[int, ...]


@dataclass
class PushResult:
    """The outcome of one request. ``status`` is the final HTTP status (``None``: no response, or not sent);
    ``ok`` is true when the target acknowledged it (2xx or an accepted status)."""

    request: PushRequest
    ok: bool = False
    status: int | None = None
    response: str = ""
    attempts: int = 0
    error: str | None = None
    sent_at: dt.datetime | None = None


@dataclass
class PushPolicy:
    """Concurrency, timeouts (seconds), retry budget and backoff (urllib3 ``Retry`` parameters), the longest
    ``Retry-After`` honoured before giving up, statuses besides 2xx that acknowledge, rate (requests/s or None)."""

    concurrency: int = 16
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    max_retries: int = 5
    backoff_factor: float = 0.5
    backoff_max: float = 30.0
    backoff_jitter: float = 0.5
    max_retry_after: float = 300.0
    accept_statuses: frozenset[int] = field(default_factory=frozenset)
    rate_limit: float | None = None
    verify_tls: bool | str = True


class HttpPusher:
    """Sends :class:`PushRequest` lists; use as ``async with HttpPusher(...) as pusher`` inside one event loop.

    ``scope`` names the rate-limit budget (run id + target). ``headers`` are sent with every request;
    ``idempotency_header`` carries each request's key; ``extra_secrets`` (secret header values) are masked
    like the auth's in every text kept. ``requests_sent`` counts attempts.
    """

    def __init__(
        self,
        policy: PushPolicy,
        auth: HttpAuth,
        headers: dict[str, str],
        idempotency_header: str,
        scope: str,
        extra_secrets: list[str] | None = None,
    ) -> None:
        self.policy, self.headers, self.idempotency_header = policy, headers, idempotency_header
        self.auth = build_auth(auth, policy.read_timeout, policy.verify_tls)
        self.secrets = [*secret_values(auth), *(extra_secrets or [])]
        self.limiter = RateLimiter(policy.rate_limit, scope) if policy.rate_limit else None
        self.requests_sent = 0
        self._client: httpx.AsyncClient | None = None
        self._semaphore: asyncio.Semaphore | None = None

    async def __aenter__(self) -> "HttpPusher":
        p = self.policy
        limits = httpx.Limits(max_connections=p.concurrency, max_keepalive_connections=p.concurrency)
        timeout = httpx.Timeout(p.read_timeout, connect=p.connect_timeout)
        self._client = httpx.AsyncClient(limits=limits, timeout=timeout, verify=p.verify_tls)
        self._semaphore = asyncio.Semaphore(p.concurrency)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._client is not None:
            await self._client.aclose()

    def redact(self, text: str, limit: int | None = None) -> str:
        """``text`` with every secret value masked as ``***``, then cut to ``limit`` characters."""
        return mask(text, self.secrets, limit)

    def _retry(self) -> Retry:
        p = self.policy
        # Every method is retried: each request carries an idempotency key.
        return retry_policy(p.max_retries, p.backoff_factor, p.backoff_max, p.backoff_jitter, allowed_methods=None)

    def _authorise(self, request: PushRequest) -> tuple[str, dict[str, str]]:
        """URL and headers with auth applied (blocking when an OAuth2 token must be fetched)."""
        headers = {"Content-Type": "application/json", **self.headers, self.idempotency_header: request.idempotency_key}
        if self.auth is None:
            return request.url, headers
        prepared = requests.Request(request.method, request.url, headers=headers).prepare()
        prepared = self.auth(prepared)
        added = {k: str(v) for k, v in prepared.headers.items() if k.lower() != "content-length"}
        return str(prepared.url), {**headers, **added}

    async def _send(self, request: PushRequest, stop: Callable[[], bool]) -> PushResult:
        assert self._client is not None and self._semaphore is not None
        result = PushResult(request)
        retry, renewed = self._retry(), False
        async with self._semaphore:
            while True:
                if stop():
                    result.error = result.error or "not sent: the sync stopped after a failure"
                    return result
                if self.limiter is not None:
                    await asyncio.to_thread(self.limiter.acquire)
                oauth = isinstance(self.auth, OAuth2TokenAuth)
                url, headers = await asyncio.to_thread(self._authorise, request) if oauth else self._authorise(request)
                result.attempts += 1
                self.requests_sent += 1
                result.sent_at = dt.datetime.now(dt.UTC)
                try:
                    response = await self._client.request(request.method, url, content=request.body, headers=headers)
                except httpx.TransportError as exc:
                    result.status, result.error = None, self.redact(f"{type(exc).__name__}: {exc}")
                    try:
                        retry = retry.increment(request.method, url, error=exc)
                    except MaxRetryError:
                        return result
                    await asyncio.sleep(retry.get_backoff_time())
                    continue
                status = response.status_code
                result.status, result.response = status, self.redact(response.text, RESPONSE_CHARS)
                if 200 <= status < 300 or status in self.policy.accept_statuses:
                    result.ok, result.error = True, None
                    return result
                if status == 401 and isinstance(self.auth, OAuth2TokenAuth) and not renewed:
                    self.auth.invalidate(headers.get("Authorization", "").removeprefix("Bearer "))
                    renewed = True
                    continue
                result.error = f"HTTP {status} {response.reason_phrase}"
                if not retry.is_retry(request.method, status, has_retry_after="Retry-After" in response.headers):
                    return result
                raw = HTTPResponse(body=b"", headers=dict(response.headers), status=status, preload_content=False)
                try:
                    retry = retry.increment(request.method, url, response=raw)
                except MaxRetryError:
                    result.error += f" (after {result.attempts} attempt(s))"
                    return result
                wait = retry.get_retry_after(raw)
                if wait is not None and wait > self.policy.max_retry_after:
                    result.error += f": Retry-After {wait:.0f}s exceeds max_retry_after"
                    return result
                await asyncio.sleep(wait if wait is not None else retry.get_backoff_time())

    async def send_all(
        self, batch: Sequence[PushRequest], stop: Callable[[], bool] = lambda: False
    ) -> list[PushResult]:
        """Send every request of ``batch`` (at most ``concurrency`` at once); results in the same order.

        ``stop()`` is checked before each attempt: once it is true, requests not yet sent come back unsent
        (``attempts == 0``) while those in flight finish. Never raises for HTTP or transport failures: they are
        in the results.
        """
        return list(await asyncio.gather(*(self._send(r, stop) for r in batch)))


def requests_per_second(results: Sequence[PushResult], seconds: float) -> float:
    """Attempts per second over ``seconds`` of wall time."""
    return sum(r.attempts for r in results) / max(seconds, 1e-6)


__all__ = ["HttpPusher", "PushPolicy", "PushRequest", "PushResult", "requests_per_second"]
