"""The YAML model of HTTP authentication, shared by every kind that calls an HTTP API (REST
sources, HTML sources, HTTP sync): one model per ``type``, each taking only its own fields (the way
dlt's typed REST config does), secrets named by environment variable only (``*_env``); and
:class:`HttpSiteConfig`, the connection fields of a source that reads over HTTP."""

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag

from integration_platform.assets.config_model import (
    SafeModel,
    cron_problem,
    from_env,
    require_exactly_one,
    secret_from_env,
    typed_union,
)
from integration_platform.core.names import ENV_NAME
from integration_platform.resources.http_api import RestApiResource
from integration_platform.resources.http_auth import (
    HttpAuth,
    check_headers,
    inline_url_secret,
    origin_of,
    secret_header_names,
)

SECRET_FIELDS = {"token": "token_env", "api_key": "api_key_env", "password": "password_env"}
SECRET_FIELDS |= {"client_secret": "client_secret_env", "refresh_token": "refresh_token_env"}


class AuthConfig(SafeModel):
    """The base of every auth type's model."""

    def resource_config(self) -> HttpAuth:
        """The resource's auth config (:class:`HttpAuth`), each ``*_env`` secret as a ``dg.EnvVar`` of that name."""
        fields: dict[str, Any] = self.model_dump()
        for name, env_field in SECRET_FIELDS.items():
            env = fields.pop(env_field, None)
            if env:
                fields[name] = secret_from_env(env)
        return HttpAuth(**fields)


class NoAuth(AuthConfig):
    """No credentials."""

    type: Literal["none"] = "none"


class BearerAuth(AuthConfig):
    """``Authorization: Bearer <token>`` (RFC 6750 section 2.1)."""

    type: Literal["bearer"]
    token_env: str = Field(pattern=ENV_NAME)


class ApiKeyAuth(AuthConfig):
    """An API key in a header or a query parameter named ``api_key_name``."""

    type: Literal["api_key"]
    api_key_env: str = Field(pattern=ENV_NAME)
    api_key_name: str = "X-API-Key"
    api_key_in: Literal["header", "query"] = "header"


class BasicAuth(AuthConfig):
    """HTTP basic (RFC 7617)."""

    type: Literal["basic"]
    username: str
    password_env: str = Field(pattern=ENV_NAME)


class OAuth2ClientCredentials(AuthConfig):
    """Access tokens from ``token_url`` by the client's id and secret (RFC 6749 section 4.4)."""

    type: Literal["oauth2_client_credentials"]
    token_url: str
    client_id: str
    client_secret_env: str = Field(pattern=ENV_NAME)
    scopes: list[str] = Field(default_factory=list)


class OAuth2RefreshToken(AuthConfig):
    """Access tokens from ``token_url`` by a refresh token (RFC 6749 section 6; get one with
    ``python -m integration_platform.oauth_login``); a public client has no secret."""

    type: Literal["oauth2_refresh_token"]
    token_url: str
    client_id: str
    refresh_token_env: str = Field(pattern=ENV_NAME)
    client_secret_env: str | None = Field(default=None, pattern=ENV_NAME)
    scopes: list[str] = Field(default_factory=list)


def _auth_type(value: Any) -> str:
    """The member an ``auth`` value belongs to: its ``type``, ``none`` when it has none (``auth: {}``)."""
    return str(value.get("type", "none") if isinstance(value, dict) else getattr(value, "type", "none"))


#: How an API authenticates, in YAML (``auth: {type: bearer, token_env: CRM_TOKEN}``).
RestAuth = Annotated[
    Annotated[NoAuth, Tag("none")]
    | Annotated[BearerAuth, Tag("bearer")]
    | Annotated[ApiKeyAuth, Tag("api_key")]
    | Annotated[BasicAuth, Tag("basic")]
    | Annotated[OAuth2ClientCredentials, Tag("oauth2_client_credentials")]
    | Annotated[OAuth2RefreshToken, Tag("oauth2_refresh_token")],
    Discriminator(_auth_type),
]
#: The annotation of an ``auth`` field of a component model (default: no credentials). The field's
#: own type is the members' base: Dagster inspects it, and the union's constrained fields would
#: fail its check for models that are not ``dg.Resolvable``.
AuthField = Annotated[AuthConfig, typed_union(RestAuth)]


def param_text(value: str | int | float | bool) -> str:
    """A query parameter value as sent: YAML ``true`` becomes ``true``, ``50`` becomes ``50``."""
    return str(value).lower() if isinstance(value, bool) else str(value)


class HttpSiteConfig(SafeModel):
    """The connection fields of a source read over HTTP (REST API, HTML site): where, how to
    authenticate, how fast. Secrets only by environment variable name."""

    base_url: str | None = Field(default=None, pattern=r"^https?://")
    base_url_env: str | None = Field(default=None, pattern=ENV_NAME)
    headers: dict[str, str] = Field(default_factory=dict, description="Headers without secrets, sent to every host.")
    headers_env: dict[str, str] = Field(
        default_factory=dict, description="Header -> name of the environment variable holding its (secret) value."
    )
    allowed_hosts: list[str] = Field(
        default_factory=list, description="Origins (https://host[:port]) besides base_url's that get credentials."
    )
    params: dict[str, str | int | float | bool] = Field(default_factory=dict)
    auth: AuthField = NoAuth()
    rate_limit: float | None = Field(default=None, gt=0, description="Requests per second for the whole run.")
    concurrency: int = Field(default=8, ge=1, le=256)
    connect_timeout: float = Field(default=10.0, gt=0)
    read_timeout: float = Field(default=60.0, gt=0)
    request_timeout: float = Field(default=600.0, gt=0, description="Seconds one attempt may take in all.")
    max_body_bytes: int = Field(default=256 << 20, gt=0, description="Bytes of one response body, decoded.")
    max_retries: int = Field(default=5, ge=0)
    backoff_factor: float = Field(default=0.5, ge=0)
    verify_tls: bool = True
    ca_bundle: str | None = None

    def validate_source(self, yaml_path: Path, schedule: str, streams: Sequence[Any]) -> None:
        """The checks every HTTP source makes when definitions load: the refresh ``schedule``'s cron, the
        connection fields (:meth:`validate_site`, the streams' ``params`` included) and each stream's
        ``name`` declared once. Raises ``ValueError("<file>: attributes.<field>: ...")``."""

        def fail(where: str, why: str) -> ValueError:
            return ValueError(f"{yaml_path}: attributes.{where}: {why}")

        if problem := cron_problem(schedule):
            raise fail("schedule", problem)
        self.validate_site(
            fail,
            {f"streams[{i}].params": s.params for i, s in enumerate(streams)},
            {f"streams[{i}].path": s.path for i, s in enumerate(streams)},
        )
        names = [s.name for s in streams]
        for i, stream in enumerate(streams):
            if names.count(stream.name) > 1:
                raise fail(f"streams[{i}].name", f"{stream.name!r} is declared more than once")

    def validate_site(
        self,
        fail: Callable[[str, str], ValueError],
        extra_params: dict[str, dict[str, Any]],
        extra_urls: dict[str, str] | None = None,
    ) -> None:
        """Checks across the connection fields; ``fail(field, why)`` makes the error raised.
        ``extra_params``: other ``params`` mappings by field name (a stream's), checked for secrets too;
        ``extra_urls``: other URLs or paths by field name (a stream's ``path``), checked with ``base_url``,
        ``allowed_hosts`` and the auth's ``token_url`` for a secret written inline (:func:`inline_url_secret`)."""
        try:
            require_exactly_one(self, "base_url", "base_url_env")
        except ValueError as exc:
            raise fail("base_url", str(exc)) from None
        check_headers(self.headers, self.headers_env, fail)
        urls = {"base_url": self.base_url, "auth.token_url": getattr(self.auth, "token_url", None)}
        urls |= {f"allowed_hosts[{i}]": entry for i, entry in enumerate(self.allowed_hosts)}
        for where, url in {**urls, **(extra_urls or {})}.items():
            if url and (problem := inline_url_secret(url)):
                raise fail(
                    where,
                    f"{problem}, which cannot be written inline (the UI would show it): give the URL by "
                    "base_url_env, a query secret by auth: {type: api_key, api_key_in: query, api_key_env: ...}",
                )
        for where, params in [("params", self.params), *extra_params.items()]:
            for name in secret_header_names(params):
                raise fail(
                    f"{where}.{name}",
                    f"the query parameter {name!r} carries a secret and cannot be "
                    "written inline (it would go to every host): use auth: {type: api_key, api_key_in: query, "
                    f"api_key_name: {name}, api_key_env: MY_VARIABLE}}",
                )
        for i, entry in enumerate(self.allowed_hosts):
            try:
                origin_of(entry)
            except ValueError as exc:
                raise fail(f"allowed_hosts[{i}]", f"{exc}; write an origin: https://host[:port]") from None

    def site_resource(self) -> RestApiResource:
        """The site's resource; secrets and an env base URL stay ``EnvVar`` (read at run time)."""
        return RestApiResource(
            base_url=from_env(self.base_url, self.base_url_env, "base_url"),
            headers=self.headers,
            secret_headers_env=self.headers_env,
            allowed_hosts=self.allowed_hosts,
            params={k: param_text(v) for k, v in self.params.items()},
            auth=self.auth.resource_config(),
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            request_timeout=self.request_timeout,
            max_body_bytes=self.max_body_bytes,
            verify_tls=self.verify_tls,
            ca_bundle=self.ca_bundle,
            max_retries=self.max_retries,
            backoff_factor=self.backoff_factor,
            rate_limit=self.rate_limit,
            concurrency=self.concurrency,
        )
