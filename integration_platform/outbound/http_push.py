"""A bounded async HTTP poster: many JSON requests, concurrently, each retried until acknowledged or failed.

HTTP is ``httpx2`` (the httpx API; already pinned through datasette) with one ``AsyncClient`` per sync and at most
``concurrency`` requests in flight (an ``asyncio.Semaphore``). The retry policy is urllib3's ``Retry`` as in
``resources/http_client.py``: statuses 429/500/502/503/504 and transport errors are retried with exponential backoff
and jitter (not those of a request that cannot be formed: ``UnsupportedProtocol``, ``LocalProtocolError``);
``Retry-After`` (RFC 9110 section 10.2.3) is honoured on 429/503. Every request, POST included, is
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

from integration_platform.resources.http_auth import HttpAuth, HttpAuthError, mask, secret_values
from integration_platform.resources.http_credentials import OAuth2TokenAuth, build_auth
from integration_platform.resources.http_retry import retry_after, retry_after_cap, retry_after_refusal, retry_policy
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
    ``ok`` is true when the target acknowledged it (2xx or an accepted status); ``stopped`` when it was
    never sent because the batch stopped after a failure."""

    request: PushRequest
    ok: bool = False
    status: int | None = None
    response: str = ""
    attempts: int = 0
    error: str | None = None
    sent_at: dt.datetime | None = None
    stopped: bool = False

    @property
    def failed(self) -> bool:
        """True when the request failed: sent and not acknowledged, or refused before sending (no token);
        false for one never sent because the batch stopped (``stopped``)."""
        return not self.ok and not self.stopped


@dataclass
class PushPolicy:
    """Concurrency, timeouts (seconds), retry budget and backoff (urllib3 ``Retry`` parameters), the longest
    ``Retry-After`` honoured before giving up, statuses besides 2xx that acknowledge, rate (requests/s or None),
    the longest one attempt may take in all (seconds, body included) and the largest response body (bytes,
    decoded)."""

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
    request_timeout: float = 600.0
    max_body_bytes: int = 16 << 20


class AttemptTooLong(httpx.TimeoutException):
    """One attempt passed ``request_timeout`` in all (a transient failure: retried)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)


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
        self.auth = build_auth(auth, policy.read_timeout, policy.verify_tls, policy.request_timeout)
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
        """``text`` with every secret value masked as ``***``, then cut to ``limit`` characters. The secrets
        are the configured ones and the OAuth2 tokens obtained so far (a target may echo its
        ``Authorization`` header in an answer the results keep)."""
        obtained = self.auth.secrets() if isinstance(self.auth, OAuth2TokenAuth) else []
        return mask(text, [*self.secrets, *obtained], limit)

    def _retry(self) -> Retry:
        p = self.policy
        # Every method is retried: each request carries an idempotency key.
        return retry_policy(
            p.max_retries,
            p.backoff_factor,
            p.backoff_max,
            p.backoff_jitter,
            allowed_methods=None,
            retry_after_max=retry_after_cap(p.max_retry_after),
        )

    def _authorise(self, request: PushRequest) -> tuple[str, dict[str, str]]:
        """URL and headers with auth applied (blocking when an OAuth2 token must be fetched)."""
        headers = {"Content-Type": "application/json", **self.headers, self.idempotency_header: request.idempotency_key}
        if self.auth is None:
            return request.url, headers
        prepared = requests.Request(request.method, request.url, headers=headers).prepare()
        prepared = self.auth(prepared)
        added = {k: str(v) for k, v in prepared.headers.items() if k.lower() != "content-length"}
        return str(prepared.url), {**headers, **added}

    async def _attempt(self, request: PushRequest, url: str, headers: dict[str, str]) -> tuple[httpx.Response, bytes]:
        """One attempt: the response and the first ``max_body_bytes`` of its body (decoded), read as it
        comes: the status decides, and only :data:`RESPONSE_CHARS` of the body are kept (a target accepting
        a row with a large answer had it counted as failed). Raises :class:`AttemptTooLong` (an
        ``httpx.TimeoutException``: transient) when the attempt passes ``request_timeout`` in all: httpx's
        read timeout bounds only the gap between two reads, so a target sending a byte at a time held a
        sync for ever."""
        assert self._client is not None
        p = self.policy
        try:
            async with asyncio.timeout(p.request_timeout):
                stream = self._client.stream(request.method, url, content=request.body, headers=headers)
                async with stream as response:
                    chunks, size = [], 0
                    async for chunk in response.aiter_bytes():
                        chunks.append(chunk[: p.max_body_bytes - size])
                        size += len(chunk)
                        if size >= p.max_body_bytes:
                            break  # the rest is not read: the connection is closed, not reused
                    return response, b"".join(chunks)
        except TimeoutError:
            raise AttemptTooLong(f"the attempt passed request_timeout ({p.request_timeout:g}s)") from None

    async def _send(self, request: PushRequest, stop: Callable[[], bool]) -> PushResult:
        assert self._client is not None and self._semaphore is not None
        result = PushResult(request)
        retry, renewed = self._retry(), False
        async with self._semaphore:
            while True:
                if stop():
                    result.error = result.error or "not sent: the sync stopped after a failure"
                    result.stopped = result.attempts == 0
                    return result
                if self.limiter is not None:
                    await asyncio.to_thread(self.limiter.acquire)
                oauth = isinstance(self.auth, OAuth2TokenAuth)
                try:
                    authorise = asyncio.to_thread(self._authorise, request) if oauth else None
                    url, headers = await authorise if authorise else self._authorise(request)
                except (HttpAuthError, requests.RequestException) as exc:  # no token: nothing can be sent
                    result.error = self.redact(f"not sent: no OAuth2 access token: {exc}")
                    return result
                result.attempts += 1
                self.requests_sent += 1
                result.sent_at = dt.datetime.now(dt.UTC)
                try:
                    response, content = await self._attempt(request, url, headers)
                except (httpx.TransportError, httpx.DecodingError, AttemptTooLong) as exc:
                    # DecodingError: a body its Content-Encoding does not describe (a broken proxy, a cut answer)
                    result.status, result.error = None, self.redact(f"{type(exc).__name__}: {exc}")
                    if isinstance(exc, httpx.UnsupportedProtocol | httpx.LocalProtocolError):
                        return result  # the request cannot be formed (a URL or header): no retry would
                    try:
                        retry = retry.increment(request.method, url, error=exc)
                    except MaxRetryError:
                        return result
                    await asyncio.sleep(retry.get_backoff_time())
                    continue
                status = response.status_code
                text = content.decode(response.encoding or "utf-8", errors="replace")
                result.status, result.response = status, self.redact(text, RESPONSE_CHARS)
                if 200 <= status < 300 or status in self.policy.accept_statuses:
                    result.ok, result.error = True, None
                    return result
                if status == 401 and isinstance(self.auth, OAuth2TokenAuth) and not renewed:
                    self.auth.invalidate(headers.get("Authorization", "").removeprefix("Bearer "))
                    renewed = True
                    continue
                # the reason phrase is the target's text too: it may echo a credential sent
                result.error = self.redact(f"HTTP {status} {response.reason_phrase}")
                if not retry.is_retry(request.method, status, has_retry_after="Retry-After" in response.headers):
                    return result
                raw = HTTPResponse(body=b"", headers=dict(response.headers), status=status, preload_content=False)
                try:
                    retry = retry.increment(request.method, url, response=raw)
                except MaxRetryError:
                    result.error += f" (after {result.attempts} attempt(s))"
                    return result
                wait = retry_after(retry, raw)
                asked = self.redact(response.headers.get("Retry-After", ""), 100)
                refusal = retry_after_refusal(wait, asked, self.policy.max_retry_after)
                if refusal is not None:
                    result.error += f": {refusal}"
                    return result
                await asyncio.sleep(wait if wait is not None else retry.get_backoff_time())

    async def send_all(
        self,
        batch: Sequence[PushRequest],
        stop: Callable[[], bool] = lambda: False,
        stop_on_failure: bool = False,
    ) -> list[PushResult]:
        """Send every request of ``batch`` (at most ``concurrency`` at once); results in the same order.

        ``stop()`` is checked before each attempt: once it is true, requests not yet sent come back unsent
        (``attempts == 0``) while those in flight finish. With ``stop_on_failure`` the first request that
        fails stops the batch the same way (no new request starts after it). Never raises for HTTP or
        transport failures: they are in the results.
        """
        failed = False

        def stopped() -> bool:
            return failed or stop()

        async def one(request: PushRequest) -> PushResult:
            nonlocal failed
            result = await self._send(request, stopped)
            if stop_on_failure and result.failed:
                failed = True
            return result

        return list(await asyncio.gather(*(one(r) for r in batch)))


def requests_per_second(results: Sequence[PushResult], seconds: float) -> float:
    """Attempts per second over ``seconds`` of wall time."""
    return sum(r.attempts for r in results) / max(seconds, 1e-6)


__all__ = ["HttpPusher", "PushPolicy", "PushRequest", "PushResult", "requests_per_second"]
