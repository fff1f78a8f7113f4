"""The ``requests`` side of :mod:`~integration_platform.resources.http_auth`: each auth type as a
``requests.auth.AuthBase`` attached to the session, credentials kept to the allowed origins, and a session
whose redirects never carry them elsewhere.

OAuth2 tokens come from requests-oauthlib (``OAuth2Session.fetch_token`` for the client
credentials grant, RFC 6749 section 4.4; ``OAuth2Session.refresh_token`` for the refresh token
grant, section 6), through a :class:`TokenSession` that never follows a redirect of the token
endpoint. :class:`OAuth2TokenAuth` only decides *when* to renew: shortly before
``expires_in`` runs out, or at once after the API answered 401 to the current token. No error raised
here ever contains a secret. Kept apart from the settings so that building the definitions does not
import ``requests`` or ``oauthlib``: :mod:`~integration_platform.resources.http_client` imports this module.
"""

import threading
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urljoin, urlsplit

import requests
from oauthlib.oauth2 import BackendApplicationClient, OAuth2Error
from requests.auth import AuthBase, HTTPBasicAuth
from requests_oauthlib import OAuth2Session

from integration_platform.resources.http_auth import (
    REQUIRED,
    UNSAFE_HEADER_VALUE,
    HttpAuth,
    HttpAuthError,
    Origin,
    header_safe,
    mask,
    origin_of,
    secret_values,
)
from integration_platform.resources.http_body import AttemptTooLong, BodyTooLarge, read_body

if TYPE_CHECKING:
    from requests.sessions import _Settings  # a TypedDict of types-requests only

#: The most bytes of a token endpoint's answer read (decoded): an RFC 6749 token response is a small JSON
#: object, and requests-oauthlib read any answer whole into memory (3 GB in 10 s from an endless one).
TOKEN_BODY_BYTES = 1 << 20


class BearerAuth(AuthBase):
    """``Authorization: Bearer <token>`` (RFC 6750 section 2.1)."""

    def __init__(self, token: str) -> None:
        self.token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.token}"
        return request


class ApiKeyAuth(AuthBase):
    """An API key sent as a header or a query parameter."""

    def __init__(self, name: str, key: str, location: Literal["header", "query"]) -> None:
        self.name, self.key, self.location = name, key, location

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        if self.location == "header":
            request.headers[self.name] = self.key
        else:
            request.prepare_url(request.url, {self.name: self.key})
        return request


class TokenSession(OAuth2Session):
    """An ``OAuth2Session`` whose token requests are never redirected: a token endpoint answering 3xx
    fails with :class:`HttpAuthError` naming ``token_url`` and the origin the answer points to. Each answer
    is read within bounds (``read_body``): at most :data:`TOKEN_BODY_BYTES` and ``request_timeout``
    seconds in all, else :class:`HttpAuthError` (requests' read timeout bounds only the gap between two
    reads: an endpoint sending a byte a second held the run for ever).

    requests follows a 307 or 308 with the method and body unchanged, so a POST carrying the refresh
    token (or the client secret) would reach whatever host the ``Location`` names, and the access
    token that host hands out would then be used against the API. RFC 6749 section 3.2 lets a token
    request go only to the token endpoint.
    """

    def __init__(self, token_url: str, grant: str, request_timeout: float = 600.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.token_url, self.grant, self.request_timeout = token_url, grant, request_timeout
        self.register_compliance_hook("access_token_response", self._refuse_redirect)
        self.register_compliance_hook("refresh_token_response", self._refuse_redirect)

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:
        """requests-oauthlib's request, never following a redirect (it passes no ``allow_redirects``), its
        body read within :data:`TOKEN_BODY_BYTES` and ``request_timeout``. Raises :class:`HttpAuthError`
        naming ``token_url`` and the bound passed."""
        kwargs["allow_redirects"] = False
        kwargs["stream"] = True
        response = super().request(*args, **kwargs)
        at = f"OAuth2 {self.grant} grant at {self.token_url}"
        try:
            read_body(response, TOKEN_BODY_BYTES, time.monotonic() + self.request_timeout)
        except BodyTooLarge:
            raise HttpAuthError(f"{at}: the token endpoint's answer passed {TOKEN_BODY_BYTES:,} bytes") from None
        except AttemptTooLong:
            raise HttpAuthError(
                f"{at}: the token endpoint's answer passed request_timeout ({self.request_timeout:g}s)"
            ) from None
        return response

    def _refuse_redirect(self, response: requests.Response) -> requests.Response:
        """The token response, or :class:`HttpAuthError` for a redirect (raised before its body, read within
        1 MiB, is parsed as a token). Names the target's origin only: its path or query might hold anything."""
        if not 300 <= response.status_code < 400:
            return response
        response.close()
        location = response.headers.get("Location")
        try:
            target = urlsplit(urljoin(self.token_url, location or ""))
            where = f"{target.scheme}://{target.hostname}" + (f":{target.port}" if target.port else "")
        except ValueError:
            where = "an invalid URL"
        to = f"to {where}" if location else "without a Location"
        raise HttpAuthError(
            f"OAuth2 {self.grant} grant at {self.token_url}: the token endpoint answered HTTP "
            f"{response.status_code} redirecting {to}; token requests are never redirected "
            "(set token_url to the endpoint that issues the tokens)"
        )


class OAuth2TokenAuth(AuthBase):
    """Bearer tokens from an OAuth2 token endpoint, renewed when they expire.

    ``grant`` is ``client_credentials`` (a new token is fetched with the client's id and
    secret) or ``refresh_token`` (the refresh token, rotated when the server issues a new
    one, buys the next access token). Thread-safe: concurrent requests share one token and
    at most one renewal runs at a time. ``renewals`` counts tokens obtained; :meth:`secrets` lists the
    tokens obtained, to be masked like the configured secrets.
    """

    def __init__(
        self,
        grant: Literal["client_credentials", "refresh_token"],
        config: HttpAuth,
        timeout: float,
        request_timeout: float = 600.0,
    ) -> None:
        assert config.token_url and config.client_id
        self.grant, self.config, self.timeout, self.request_timeout = grant, config, timeout, request_timeout
        self.refresh = config.refresh_token
        self.verify: bool | str = True
        self.renewals = 0
        self._obtained: list[str] = []  # access tokens and rotated refresh tokens, for masking
        self._token: dict[str, Any] | None = None
        self._lock = threading.Lock()

    def secrets(self) -> list[str]:
        """The access tokens obtained so far and the refresh tokens the server rotated in: secrets the
        configuration does not hold."""
        return list(self._obtained)

    def _fetch(self) -> dict[str, Any]:
        try:
            token = self._grant()
        except HttpAuthError as exc:  # a token endpoint's error description may echo what it was sent
            raise HttpAuthError(mask(str(exc), [*secret_values(self.config), *self._obtained])) from None
        self._obtained += [str(token[name]) for name in ("access_token", "refresh_token") if token.get(name)]
        try:  # oauthlib takes a 400-digit expires_in; the next request's expiry check failed on it
            float(token.get("expires_in") or 0) + float(token.get("expires_at") or 0)
        except (OverflowError, ValueError, TypeError):
            raise HttpAuthError(
                f"OAuth2 {self.grant} grant at {self.config.token_url}: the answer's expires_in is not a number "
                "of seconds a clock can hold"
            ) from None
        if not header_safe(str(token.get("access_token", ""))):
            raise HttpAuthError(
                f"OAuth2 {self.grant} grant at {self.config.token_url}: the access token issued {UNSAFE_HEADER_VALUE}"
            )
        return token

    def _grant(self) -> dict[str, Any]:
        config = self.config
        assert config.token_url and config.client_id
        try:
            if self.grant == "client_credentials":
                client = BackendApplicationClient(client_id=config.client_id, scope=list[object](config.scopes))
                session = TokenSession(config.token_url, self.grant, self.request_timeout, client=client)
                token = session.fetch_token(
                    config.token_url,
                    client_id=config.client_id,
                    client_secret=config.client_secret,
                    timeout=self.timeout,
                    verify=self.verify,  # type: ignore[arg-type]  # requests takes a CA bundle path too
                )
            else:
                session = TokenSession(
                    config.token_url,
                    self.grant,
                    self.request_timeout,
                    client_id=config.client_id,
                    scope=config.scopes or None,
                )
                basic = HTTPBasicAuth(config.client_id, config.client_secret) if config.client_secret else None
                token = session.refresh_token(
                    config.token_url,
                    refresh_token=self.refresh,
                    auth=basic,
                    timeout=self.timeout,
                    verify=self.verify,  # type: ignore[arg-type]  # requests takes a CA bundle path too
                    **({} if basic else {"client_id": config.client_id}),
                )
                self.refresh = token.get("refresh_token") or self.refresh
        except Warning as exc:
            # oauthlib raises a Warning carrying the token when the server granted another
            # scope than asked (allowed by RFC 6749 section 5.1); the token is still good.
            granted = getattr(exc, "token", None)
            if not granted:
                raise HttpAuthError(f"OAuth2 {self.grant} grant at {config.token_url}: {exc}") from None
            token = granted
            if self.grant == "refresh_token":
                self.refresh = token.get("refresh_token") or self.refresh
        except OAuth2Error as exc:
            raise HttpAuthError(
                f"OAuth2 {self.grant} grant at {config.token_url} refused: {exc.error} "
                f"(HTTP {exc.status_code}) {exc.description or ''}".strip()
            ) from None
        except requests.RequestException as exc:
            raise HttpAuthError(f"OAuth2 token endpoint {config.token_url} unreachable: {type(exc).__name__}") from None
        except (ValueError, TypeError, OverflowError) as exc:
            # oauthlib parsing an answer of another shape: ``expires_in`` "soon" (ValueError), 1e400
            # (OverflowError), a JSON list (ValueError) or scalar (TypeError). Its messages name no value.
            raise HttpAuthError(
                f"OAuth2 {self.grant} grant at {config.token_url}: the answer is not an access token response "
                f"(RFC 6749 section 5.1): {type(exc).__name__}: {exc}"
            ) from None
        self.renewals += 1
        return dict(token)

    def _fresh(self, token: dict[str, Any] | None) -> bool:
        if token is None:
            return False
        expires_at = token.get("expires_at")
        if expires_at is None:
            return True
        lifetime = float(token.get("expires_in") or 60)
        # Renew a little before expiry: 10% of the lifetime, at most 30 s.
        return time.time() < float(expires_at) - min(30.0, lifetime / 10)

    def access_token(self) -> str:
        """The current access token, fetching a new one when it is missing or about to expire.

        Raises :class:`HttpAuthError` when the token endpoint refuses, cannot be reached, answers
        with a redirect, or issues a token that cannot go into a header (never repeating it)."""
        with self._lock:
            if not self._fresh(self._token):
                self._token = self._fetch()
            assert self._token is not None
            return str(self._token["access_token"])

    def invalidate(self, token: str) -> None:
        """The API refused ``token`` (HTTP 401): the next request gets a new one."""
        with self._lock:
            if self._token is not None and self._token.get("access_token") == token:
                self._token = None

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.access_token()}"
        return request


def build_auth(config: HttpAuth, timeout: float, verify: bool | str, request_timeout: float = 600.0) -> AuthBase | None:
    """The ``requests`` auth object for ``config``; ``None`` for ``type: none``. ``timeout`` is the read
    timeout of a token request, ``request_timeout`` the most seconds it may take in all.

    Raises ``ValueError`` naming the missing field when the type's required fields are unset, or naming
    the field (never its value) when a token or API key sent in a header cannot be a header's value
    (:func:`~integration_platform.resources.http_auth.header_safe`).
    """
    missing = [name for name in REQUIRED[config.type] if not getattr(config, name)]
    if missing:
        raise ValueError(f"auth type {config.type!r} needs {', '.join(missing)}")
    in_header = {"bearer": "token", "api_key": "api_key" if config.api_key_in == "header" else None}
    field = in_header.get(config.type)
    if field is not None and not header_safe(str(getattr(config, field))):
        raise ValueError(f"auth.{field} {UNSAFE_HEADER_VALUE}")
    if config.type == "bearer":
        return BearerAuth(str(config.token))
    if config.type == "api_key":
        return ApiKeyAuth(config.api_key_name, str(config.api_key), config.api_key_in)
    if config.type == "basic":
        return HTTPBasicAuth(str(config.username), str(config.password))
    if config.type in ("oauth2_client_credentials", "oauth2_refresh_token"):
        grant: Literal["client_credentials", "refresh_token"] = (
            "client_credentials" if config.type == "oauth2_client_credentials" else "refresh_token"
        )
        auth = OAuth2TokenAuth(grant, config, timeout, request_timeout)
        auth.verify = verify
        return auth
    return None


class OriginBoundAuth(AuthBase):
    """Credentials for the allowed origins only: ``inner`` (bearer, API key, basic, OAuth2) and the secret
    ``headers`` are applied to a request whose URL's origin is in ``origins`` and to no other.

    A child stream's ``{url}`` or a ``next`` link may name any host; this keeps the token at home, as
    browsers do (RFC 6454 origins: scheme, host, port). ``inner`` is the wrapped auth (``None``: headers only).
    """

    def __init__(self, inner: AuthBase | None, headers: Mapping[str, str], origins: frozenset[Origin]) -> None:
        self.inner, self.headers, self.origins = inner, dict(headers), origins

    def allows(self, url: str) -> bool:
        """Whether credentials may be sent to ``url``."""
        try:
            return origin_of(url) in self.origins
        except ValueError:
            return False

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        if not self.allows(str(request.url)):
            # the cookie jar matches cookies by domain only (not scheme or port): drop them here too
            for name in [h for h in request.headers if h.lower() == "cookie" or h in self.headers]:
                del request.headers[name]
            return request
        request.headers.update(self.headers)
        return self.inner(request) if self.inner is not None else request


def _hashable(value: Any) -> Any:
    """A settings value as a dictionary key: a mapping as its sorted items, a list as a tuple."""
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _hashable(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    return value


class CredentialSession(requests.Session):
    """A ``requests.Session`` whose redirects never carry credentials to another origin.

    requests itself drops only ``Authorization`` on a redirect to another host (``Session.rebuild_auth``)
    and keeps an API-key header or a cookie header; here every credential header (``Authorization``,
    ``Cookie``, the API key's header and each secret header) is removed
    when the redirect leaves the allowed origins (the session's :class:`OriginBoundAuth` decides), and
    applied again when it goes to another allowed origin.

    Cookies go only to ``origins`` (the allowed ones), with an auth or without (``auth: none``, where the
    session has no :class:`OriginBoundAuth`): the cookie jar matches by domain only, so the cookie home
    set for ``127.0.0.1`` would go to every port, and a session cookie is a credential.
    """

    def __init__(self, credential_headers: Iterable[str], origins: frozenset[Origin]) -> None:
        super().__init__()
        self.origins = origins
        self.credential_headers = {"authorization", "cookie"}  # a proxy's own credentials stay
        self.credential_headers |= {h.lower() for h in credential_headers}
        self._environment: dict[tuple[Any, ...], _Settings] = {}
        self._environment_lock = threading.Lock()

    def merge_environment_settings(
        self, url: str | bytes | None, proxies: Any, stream: Any, verify: Any, cert: Any
    ) -> "_Settings":
        """requests' merge of the environment (the proxy variables with ``no_proxy``, then
        ``REQUESTS_CA_BUNDLE`` or ``CURL_CA_BUNDLE``) into a request's settings, asked once per origin
        and settings for the session's life.

        requests asks it on every request, and reading the proxy variables walks ``os.environ``:
        0.39 s of Python's lock for the fan-out benchmark's 2,400 requests (0.03 s remembered), 3%
        of its run (py-spy ``--gil``). A session lives for one step, so an environment changed later
        takes effect at the next step. The key holds what the result depends on: the origin (scheme,
        host and port, never the URL's user and password), the request's settings and the session's
        own (``trust_env``, ``proxies``, ``stream``, ``verify``, ``cert``). Each caller gets its own
        copy of the proxies; unlike requests, a remembered answer does not fill the ``proxies`` passed
        in (``Session.request`` passes a new one and uses only the answer). A redirect still reads the
        environment itself (``Session.rebuild_proxies``), as in requests.
        """
        parts = urlsplit(url.decode() if isinstance(url, bytes) else str(url))
        try:
            key = (
                parts.scheme,
                parts.hostname,
                parts.port,
                _hashable(proxies),
                stream,
                _hashable(verify),
                _hashable(cert),
                self.trust_env,
                _hashable(self.proxies),
                self.stream,
                _hashable(self.verify),
                _hashable(self.cert),
            )
            hash(key)
        except (TypeError, ValueError):  # a value that cannot be a key, or a port out of range: ask requests
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        with self._environment_lock:
            found = self._environment.get(key)
        if found is None:
            found = super().merge_environment_settings(url, proxies, stream, verify, cert)
            with self._environment_lock:
                self._environment[key] = found
        return {**found, "proxies": dict(found["proxies"])}

    def prepare_request(self, request: requests.Request) -> requests.PreparedRequest:
        """requests' preparation, without the ``Cookie`` header for an origin outside ``origins``."""
        prepared = super().prepare_request(request)
        try:
            allowed = origin_of(str(prepared.url)) in self.origins
        except ValueError:
            allowed = False
        if not allowed:
            for name in [h for h in prepared.headers if h.lower() == "cookie"]:
                del prepared.headers[name]
        return prepared

    def rebuild_auth(self, prepared_request: requests.PreparedRequest, response: requests.Response) -> None:
        super().rebuild_auth(prepared_request, response)
        auth = self.auth
        if isinstance(auth, OriginBoundAuth) and auth.allows(str(prepared_request.url)):
            auth(prepared_request)  # requests dropped Authorization on a change of host: an allowed one
            return
        for name in [h for h in prepared_request.headers if h.lower() in self.credential_headers]:
            del prepared_request.headers[name]
