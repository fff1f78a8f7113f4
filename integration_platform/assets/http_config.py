"""The YAML model of HTTP authentication, shared by every kind that calls an HTTP API (REST
sources, HTTP sync): one model per ``type``, each taking only its own fields (the way dlt's typed
REST config does), secrets named by environment variable only (``*_env``)."""

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag

from integration_platform.assets.config_model import SafeModel, secret_from_env, typed_union
from integration_platform.core.names import ENV_NAME
from integration_platform.resources.http_auth import HttpAuth

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
