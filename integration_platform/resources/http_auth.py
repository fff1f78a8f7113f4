"""Authentication settings of REST API requests (none, bearer, API key, HTTP basic, OAuth2 per RFC 6749)
and the rules for where credentials may go: which header and parameter names are secrets, the origins
(RFC 6454) allowed to receive them, and masking them out of any text shown.

Secrets reach the configuration only through ``dg.EnvVar``, so Dagster shows the variable's name, never
its value; no error raised here ever contains a secret. The ``requests`` objects that apply these
settings to a request are in :mod:`~integration_platform.resources.http_credentials`, imported when a
step builds a client: building the definitions needs only this module, which does not import
``requests`` or ``oauthlib``.
"""

import base64
import functools
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Literal
from urllib.parse import parse_qsl, quote, quote_plus, unquote, urlsplit

import dagster as dg
from pydantic import Field

from integration_platform.core.names import ENV_NAME

AuthType = Literal["none", "bearer", "api_key", "basic", "oauth2_client_credentials", "oauth2_refresh_token"]

#: What each auth type needs, for validation messages (field -> meaning).
REQUIRED: dict[str, tuple[str, ...]] = {
    "none": (),
    "bearer": ("token",),
    "api_key": ("api_key",),
    "basic": ("username", "password"),
    "oauth2_client_credentials": ("token_url", "client_id", "client_secret"),
    "oauth2_refresh_token": ("token_url", "client_id", "refresh_token"),
}


class HttpAuthError(Exception):
    """Authentication failed (token endpoint refused or unreachable); the message holds no secret."""


class HttpAuth(dg.Config):
    """How requests authenticate. Secret fields (token, api_key, password, client_secret,
    refresh_token) are set from environment variables with ``dg.EnvVar``."""

    type: AuthType = "none"
    token: str | None = None
    api_key: str | None = None
    api_key_name: str = "X-API-Key"
    api_key_in: Literal["header", "query"] = "header"
    username: str | None = None
    password: str | None = None
    token_url: str | None = None
    client_id: str | None = None
    client_secret: str | None = None
    refresh_token: str | None = None
    scopes: list[str] = Field(default_factory=list)


@functools.lru_cache(maxsize=256)  # mask() runs per request and per page: the forms are computed once
def sent_forms(secret: str) -> frozenset[str]:
    """The forms in which ``secret`` goes out and may be echoed back: as it is, percent-encoded as in a
    query string or a form body (``quote_plus``: ``/`` as ``%2F``, a space as ``+``) or a path segment
    (``quote``: a space as ``%20``), and inside a JSON string as encoders write it (``json.dumps`` with and
    without ``ensure_ascii``; PHP's ``\\/`` for ``/``; ``\\u002B`` for ``+`` as .NET writes it)."""
    escaped = {json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]}
    escaped |= {e.replace("/", "\\/") for e in escaped} | {e.replace("+", "\\u002B") for e in escaped}
    return frozenset({secret, quote_plus(secret), quote(secret, safe=""), *escaped})


def basic_credentials(username: str, password: str) -> str:
    """What follows ``Basic`` in the ``Authorization`` header requests sends for ``username`` and
    ``password`` (RFC 7617): base64 of ``username:password`` encoded as latin-1 (UTF-8 when it is not
    latin-1): a secret in itself, since it decodes to the password."""
    joined = f"{username}:{password}"
    try:
        raw = joined.encode("latin-1")
    except UnicodeEncodeError:
        raw = joined.encode()
    return base64.b64encode(raw).decode()


def mask(text: str, secrets: Iterable[str | None], limit: int | None = None) -> str:
    """``text`` with every non-empty value of ``secrets``, in each of its :func:`sent_forms`, replaced by
    ``***``, then cut to ``limit`` characters. Masking comes first: cutting first could split a secret so
    that its visible part no longer matches, and leave most of it in the text."""
    forms = {form for secret in secrets if secret for form in sent_forms(secret)}
    for secret in sorted(forms, key=len, reverse=True):  # a secret inside another one
        text = text.replace(secret, "***")
    return text if limit is None else text[:limit]


def secret_values(config: HttpAuth) -> list[str]:
    """The secret strings of ``config``, for scrubbing them out of any text we show: each secret field,
    and the HTTP basic credentials built of them (``basic``'s user and password; an OAuth2 client's id
    and secret, which requests-oauthlib sends to the token endpoint that way)."""
    values = [config.token, config.api_key, config.password, config.client_secret, config.refresh_token]
    if config.type == "basic" and config.username is not None and config.password:
        values.append(basic_credentials(config.username, config.password))
    if config.client_id is not None and config.client_secret:
        values.append(basic_credentials(config.client_id, config.client_secret))
    return [v for v in values if v]


def userinfo_secrets(url: str) -> list[str]:
    """The password of ``url``'s user info (``https://etl:pw@host``), as written and decoded, and the basic
    ``Authorization`` value requests builds of it: secrets to mask wherever they show. ``[]`` when
    ``url`` has no password or does not parse."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return []
    if not password:
        return []
    decoded = unquote(password)
    return [password, decoded, basic_credentials(unquote(parts.username or ""), decoded)]


#: Names (of headers and query parameters) whose values are secrets: they may only be given by
#: environment variable name (``headers_env``, the auth's ``*_env``), are sent only to allowed origins
#: and are masked in every URL we show. Broad on purpose: a name caught wrongly (``X-Partition-Key``)
#: costs a line of ``headers_env``; one missed leaks a secret.
SECRET_NAME = re.compile(
    r"auth(?!ors?(?:\b|_))|cookie|token|secret|passw|session|signature|credential|apikey|(?:^|[-_.])key(?:$|[-_.])",
    re.IGNORECASE,
)
DEFAULT_PORTS = {"http": 80, "https": 443}
_ENV_NAME = re.compile(ENV_NAME)
#: A value that can be a header's as it is: no leading or trailing whitespace, no line break or NUL.
_HEADER_VALUE = re.compile(r"[^\s\x00]([^\r\n\x00]*[^\s\x00])?")
#: Why a value is not :func:`header_safe`, for messages that never repeat it.
UNSAFE_HEADER_VALUE = (
    "holds a line break or leading or trailing whitespace, which cannot go into a header (an environment "
    "variable read from a file with its final newline?); strip it"
)


def header_safe(value: str) -> bool:
    """Whether ``value`` can be sent as a header value as it is. http.client refuses one with a line break
    (``Bearer <token>\\n``) with a ``ValueError`` whose message repeats the whole value, secret included,
    into the run's logs; the secret's masking missed it, written there as a bytes repr."""
    return bool(_HEADER_VALUE.fullmatch(value))


Origin = tuple[str, str, int]


def secret_header_names(headers: Iterable[str]) -> list[str]:
    """The names among ``headers`` (or query parameters) that :data:`SECRET_NAME` calls secret
    (Authorization, Cookie, ``*token*``, ``*key*``, ``*secret*``, ...), in the order given."""
    return [name for name in headers if SECRET_NAME.search(name)]


def inline_url_secret(url: str) -> str | None:
    """Why ``url`` (a base URL, a path, a token URL written in YAML) carries a secret, or ``None``: a
    password in its user info (``https://etl:pw@host``) or a query parameter whose name :data:`SECRET_NAME`
    calls secret (``?api_key=...``). The reason names the parameter, never a value. Such a URL went past
    the checks of ``params`` and ``headers`` into the resource's config and the asset's description and
    metadata, where the UI shows it, and its query went to every host."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # a malformed port or bracket: the URL fails where it is used, never quoted here
        return None
    if password:
        return "holds a password (user:password@)"
    for name, _ in parse_qsl(parts.query, keep_blank_values=True):
        if SECRET_NAME.search(name):
            return f"its query parameter {name!r} carries a secret"
    return None


def check_headers(
    headers: Mapping[str, str], headers_env: Mapping[str, str], fail: Callable[[str, str], Exception]
) -> None:
    """Refuse a secret given inline: a header of ``headers`` whose name :data:`SECRET_NAME` calls
    secret must come from ``headers_env`` (header -> environment variable name), and each of those
    names must be a variable name. Raises ``fail(field, why)``; the message names the header and never
    repeats its value (it would otherwise land in Dagster's error records)."""
    for name in secret_header_names(headers):
        raise fail(
            f"headers.{name}",
            f"the header {name!r} carries a secret and cannot be written inline; put the value in an "
            f"environment variable and name it: headers_env: {{{name}: MY_VARIABLE}}",
        )
    for name, variable in headers_env.items():
        if not _ENV_NAME.match(variable):
            raise fail(f"headers_env.{name}", f"{variable!r} is not an environment variable name ({ENV_NAME})")


def origin_of(url: str) -> Origin:
    """The RFC 6454 origin of an absolute ``http(s)`` URL: ``(scheme, host, port)``, lower-cased, with the
    scheme's default port filled in. Raises ``ValueError`` for a URL without scheme or host."""
    parts = urlsplit(url.strip())
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if not scheme or not host:
        raise ValueError(f"{url!r} is not an absolute URL with a scheme and a host")
    port = parts.port or DEFAULT_PORTS.get(scheme)
    if port is None:
        raise ValueError(f"{url!r}: no port given and no default port for scheme {scheme!r}")
    return scheme, host, port


def allowed_origins(base_url: str, allowed_hosts: Iterable[str] = ()) -> frozenset[Origin]:
    """The origins credentials may go to: the base URL's, plus each ``allowed_hosts`` entry
    (``https://cdn.example.com`` or ``https://host:8443``: an origin, never a bare host, so the scheme
    is a decision). Raises ``ValueError`` naming a malformed entry."""
    return frozenset([origin_of(base_url), *(origin_of(entry) for entry in allowed_hosts)])


def env_headers(names: Mapping[str, str]) -> dict[str, str]:
    """``{header: value}`` for ``{header: environment variable name}``, read now. Raises ``ValueError``
    naming the header and the variable (never a value) when the variable is unset or empty, or its value
    cannot be a header's (:func:`header_safe`)."""
    values = {}
    for header, variable in names.items():
        value = os.environ.get(variable)
        if not value:
            raise ValueError(f"header {header!r}: environment variable {variable} is not set")
        if not header_safe(value):
            raise ValueError(f"header {header!r}: environment variable {variable} {UNSAFE_HEADER_VALUE}")
        values[header] = value
    return values
