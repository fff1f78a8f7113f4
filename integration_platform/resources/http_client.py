"""RestClient: the runtime side of :class:`~integration_platform.resources.http_api.RestApiResource`, one
pooled ``requests`` session with the resource's auth, rate limit and retries (the retry design and the
errors raised are described in :mod:`integration_platform.resources.http_api`). Kept apart from the
resource so that building the definitions does not import ``requests``: ``RestApiResource.client()``
imports this module.
"""

import json
import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import MaxRetryError
from urllib3.util.retry import Retry

from integration_platform.resources.http_api import HttpSourceError, RestApiResource
from integration_platform.resources.http_auth import (
    SECRET_NAME,
    allowed_origins,
    env_headers,
    mask,
    secret_values,
    userinfo_secrets,
)
from integration_platform.resources.http_body import BodyTooLarge, bound_redirect_bodies, read_body
from integration_platform.resources.http_credentials import (
    CredentialSession,
    OAuth2TokenAuth,
    OriginBoundAuth,
    build_auth,
)
from integration_platform.resources.http_retry import retry_after, retry_after_cap, retry_after_refusal, retry_policy
from integration_platform.resources.rate_limit import RateLimiter

#: Errors while reading a response that a new attempt may cure.
TRANSIENT = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
    requests.exceptions.JSONDecodeError,
    json.JSONDecodeError,  # _json: the standard library's, a body cut short or not JSON
)


class RestClient:
    """The runtime side of :class:`RestApiResource`: a pooled session, auth, limiter, retries."""

    def __init__(self, config: RestApiResource, scope: str) -> None:
        self.config = config
        self.verify: bool | str = config.ca_bundle or config.verify_tls
        secret_headers = env_headers(config.secret_headers_env)
        key_header = [config.auth.api_key_name] if config.auth.type == "api_key" else []
        origins = allowed_origins(config.base_url, config.allowed_hosts)
        self.session = CredentialSession([*secret_headers, *key_header], origins)
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=max(config.concurrency, 1), max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers.update({"Accept": "application/json", **config.headers})
        self.session.verify = self.verify
        bound_redirect_bodies(self.session, config.max_body_bytes, config.request_timeout)
        self.auth = OriginBoundAuth(
            build_auth(config.auth, config.read_timeout, self.verify, config.request_timeout),
            secret_headers,
            origins,
        )
        if self.auth.inner is not None or secret_headers:
            self.session.auth = self.auth  # else requests' own: credentials in the URL, ~/.netrc per host
        # (cookies stay with the allowed origins either way: CredentialSession.prepare_request)
        self.limiter = RateLimiter(config.rate_limit, f"{scope}|{config.base_url}") if config.rate_limit else None
        self._secrets = [*secret_values(config.auth), *secret_headers.values(), *userinfo_secrets(config.base_url)]
        self.requests_sent = 0

    @property
    def oauth2(self) -> OAuth2TokenAuth | None:
        """The OAuth2 token source, when the API uses one."""
        return self.auth.inner if isinstance(self.auth.inner, OAuth2TokenAuth) else None

    def close(self) -> None:
        self.session.close()

    def url(self, path: str) -> str:
        """A configured ``path`` joined to the base URL (``/v1/orders`` under ``https://h/api`` is
        ``https://h/api/v1/orders``); an absolute URL is used as it is."""
        if urlsplit(path).scheme:
            return path
        return urljoin(self.config.base_url.rstrip("/") + "/", path.lstrip("/"))

    def redact(self, text: str, limit: int | None = None) -> str:
        """``text`` with secret values masked, then cut to ``limit`` characters: masking first, so a cut
        never leaves part of a secret visible. The secrets are the configured ones, the OAuth2 tokens
        obtained so far, each in every form it is sent in (``http_auth.mask``: as it is and percent-encoded;
        ``secret_values``: the basic ``Authorization`` value)."""
        oauth2 = self.oauth2
        return mask(text, [*self._secrets, *oauth2.secrets()] if oauth2 is not None else self._secrets, limit)

    def redact_url(self, url: str, params: dict[str, str]) -> str:
        """``url`` with ``params`` appended, secrets masked: what errors and quarantine show. Masked are
        the password of the URL's user info (``https://etl:***@host``), the values of secret-named query
        parameters and every secret value; a URL that does not parse (``http://[::1/x``) keeps its text
        with the secret values and secret-named query values masked."""
        try:
            parts = urlsplit(url)
        except ValueError:
            head, _, query = url.partition("?")
            return self.redact(f"{head}?{_masked_query(query, params)}" if query or params else head)
        netloc = parts.netloc
        if parts.password is not None:
            userinfo, _, host = netloc.rpartition("@")
            netloc = f"{userinfo.partition(':')[0]}:***@{host}"
        return self.redact(urlunsplit(parts._replace(netloc=netloc, query=_masked_query(parts.query, params))))

    def _retry(self) -> Retry:
        c = self.config
        return retry_policy(
            c.max_retries,
            c.backoff_factor,
            c.backoff_max,
            c.backoff_jitter,
            retry_after_max=retry_after_cap(c.max_retry_after),
        )

    def _give_up(self, where: str, reason: str, attempts: int, status: int | None = None) -> HttpSourceError:
        return HttpSourceError(f"GET {where}: {self.redact(reason)} (after {attempts} attempt(s))", status)

    def get_json(self, url: str, params: dict[str, str] | None = None) -> tuple[Any, requests.Response]:
        """GET ``url`` and decode its JSON body (:meth:`get`); an invalid body is retried as a cut one, one
        nested too deeply to decode fails at once (:class:`HttpSourceError`)."""
        return self.get(url, params, _json)

    def get(
        self,
        url: str,
        params: dict[str, str] | None = None,
        decode: Callable[[requests.Response], Any] = lambda response: response.text,
        accept: str | None = None,
        follow_redirects: bool = True,
    ) -> tuple[Any, requests.Response]:
        """GET ``url`` and ``decode`` its body (default: the text), retrying transient failures
        (``decode`` raising ``json.JSONDecodeError`` counts as one). ``accept`` replaces the session's
        ``Accept`` header (``application/json``) for this request. ``follow_redirects=False`` returns a
        redirect (3xx) as it is, for the caller to decide whether to follow it.

        A ``Retry-After`` that is neither whole seconds nor an HTTP date counts as absent (the backoff).
        Returns ``(decoded body, response)``. Raises :class:`HttpSourceError` on a non-retryable
        status (4xx other than 429), when the retry budget is spent, or when ``Retry-After``
        asks for longer than ``max_retry_after``, on a redirect loop (past requests' 30 redirects) and for a
        URL that is not a valid ``http(s)`` one; raises ``HttpAuthError`` when a token
        cannot be obtained.
        """
        params = params or {}
        where = self.redact_url(url, params)
        retry, attempts, renewed = self._retry(), 0, False
        timeout = (self.config.connect_timeout, self.config.read_timeout)
        headers = {"Accept": accept} if accept else None
        while True:
            if self.limiter is not None:
                self.limiter.acquire()
            attempts += 1
            self.requests_sent += 1
            try:
                # verify per request: a session-level value loses to REQUESTS_CA_BUNDLE (psf/requests#3829)
                response = self.session.get(
                    url,
                    params=params,
                    timeout=timeout,
                    verify=self.verify,
                    headers=headers,
                    stream=True,
                    allow_redirects=follow_redirects,
                )
                read_body(response, self.config.max_body_bytes, time.monotonic() + self.config.request_timeout)
                status = response.status_code
                oauth2 = self.oauth2
                if status == 401 and oauth2 is not None and not renewed and self.auth.allows(url):
                    sent = response.request.headers.get("Authorization", "").removeprefix("Bearer ")
                    oauth2.invalidate(sent)
                    renewed = True
                    continue
                if retry.is_retry("GET", status, has_retry_after="Retry-After" in response.headers):
                    try:
                        retry = retry.increment("GET", where, response=response.raw)
                    except MaxRetryError:
                        raise self._give_up(where, f"HTTP {status} {response.reason}", attempts, status) from None
                    wait = retry_after(retry, response.raw)
                    asked = response.headers.get("Retry-After", "")[:100]  # _give_up masks the reason
                    refusal = retry_after_refusal(wait, asked, self.config.max_retry_after)
                    if refusal is not None:
                        raise self._give_up(where, refusal, attempts)
                    if wait is None:
                        retry.sleep()  # the backoff
                    else:
                        time.sleep(wait)
                    continue
                if status >= 400:
                    snippet = self.redact(response.text, 300).replace("\n", " ")
                    raise self._give_up(where, f"HTTP {status} {response.reason}: {snippet}", attempts, status)
                return decode(response), response
            except (BodyTooLarge, NestedTooDeep) as exc:  # another attempt gets as much
                raise self._give_up(where, str(exc), attempts) from None
            except requests.exceptions.TooManyRedirects as exc:  # a loop: another attempt loops again
                last = exc.response.url if exc.response is not None else url
                reason = f"more than {self.session.max_redirects} redirects, the last to {self.redact_url(last, {})}"
                raise self._give_up(where, reason, attempts) from None
            except (
                requests.exceptions.InvalidSchema,
                requests.exceptions.InvalidURL,
                requests.exceptions.MissingSchema,
            ):
                reason = "not a valid http(s) URL; only http and https URLs are fetched"
                raise self._give_up(where, reason, attempts) from None
            except requests.exceptions.SSLError as exc:  # a certificate problem does not heal by retrying
                why = re.search(r"certificate verify failed: ([^(')]+)", str(exc))
                detail = why.group(1).strip() if why else type(exc).__name__
                reason = f"TLS verification failed ({detail}); trust the server's CA with ca_bundle"
                raise self._give_up(where, reason, attempts) from None
            except TRANSIENT as exc:
                reason = f"{type(exc).__name__}: {exc}" if isinstance(exc, json.JSONDecodeError) else type(exc).__name__
                try:
                    retry = retry.increment("GET", where, error=exc)
                except MaxRetryError:
                    raise self._give_up(where, reason, attempts) from None
                retry.sleep()


def _masked_query(query: str, params: dict[str, str]) -> str:
    """``query`` with ``params`` appended, the values of secret-named parameters as ``***``."""
    pairs = [*parse_qsl(query, keep_blank_values=True), *params.items()]
    return urlencode([(k, "***" if SECRET_NAME.search(k) else v) for k, v in pairs])


class NestedTooDeep(Exception):
    """A JSON body nested deeper than Python's decoder can follow."""


def _json(response: requests.Response) -> Any:
    """The body decoded as JSON by the standard library, from its bytes: UTF-8 (or UTF-16/32, told by its
    first bytes) whatever the ``Content-Type`` says, as RFC 8259 (8.1, 11) has it; a body that is not
    UTF-8 is read in the charset its ``Content-Type`` names (requests' guess without one), bytes that do
    not decode in it as U+FFFD (``errors="replace"``, as requests decodes). ``NaN`` and
    ``Infinity`` are read as floats. ``Response.json`` decoded a body served as ``text/plain`` (or labelled
    ISO-8859-1) as Latin-1, landing ``cafÃ©`` for ``café``, and parsed with simplejson when installed (dlt
    installs it), which refuses ``NaN`` and whose errors were reported as a bare "JSONDecodeError".

    Raises :class:`NestedTooDeep` for a body nested past the interpreter's recursion limit
    (``[[[[...]]]]`` 200,000 deep is 400 KB: the decoder's bare ``RecursionError`` failed the run without
    naming the request), and ``json.JSONDecodeError`` for a body that is not JSON."""
    try:
        try:
            return json.loads(response.content)
        except UnicodeDecodeError:
            return json.loads(response.text)
    except RecursionError:
        raise NestedTooDeep("the JSON body is nested too deeply to decode") from None
