"""The YAML model of HTTP authentication, shared by every kind that calls an HTTP API (REST
sources, HTTP sync): secrets are named by environment variable only (``*_env``)."""

from typing import Literal

import dagster as dg
from pydantic import Field, model_validator

from integration_platform.assets.config_model import SafeModel, secret_from_env
from integration_platform.core.names import ENV_NAME
from integration_platform.resources.http_auth import REQUIRED, AuthType, HttpAuth

SECRET_FIELDS = {"token": "token_env", "api_key": "api_key_env", "password": "password_env"}
SECRET_FIELDS |= {"client_secret": "client_secret_env", "refresh_token": "refresh_token_env"}


class RestAuth(SafeModel, dg.Resolvable):
    """How the API authenticates; secrets are named by environment variable (``*_env``)."""

    type: AuthType = "none"
    token_env: str | None = Field(default=None, pattern=ENV_NAME)
    api_key_env: str | None = Field(default=None, pattern=ENV_NAME)
    api_key_name: str = "X-API-Key"
    api_key_in: Literal["header", "query"] = "header"
    username: str | None = None
    password_env: str | None = Field(default=None, pattern=ENV_NAME)
    token_url: str | None = None
    client_id: str | None = None
    client_secret_env: str | None = Field(default=None, pattern=ENV_NAME)
    refresh_token_env: str | None = Field(default=None, pattern=ENV_NAME)
    scopes: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _required(self) -> "RestAuth":
        needs = [SECRET_FIELDS.get(name, name) for name in REQUIRED[self.type]]
        missing = [name for name in needs if not getattr(self, name)]
        if missing:
            raise ValueError(f"auth type {self.type!r} needs {', '.join(missing)}")
        return self

    def resource_config(self) -> HttpAuth:
        """The resource's auth config, each ``*_env`` secret as a ``dg.EnvVar`` of that name."""
        env_names = {name: getattr(self, env_field) for name, env_field in SECRET_FIELDS.items()}
        secrets = {name: secret_from_env(env) for name, env in env_names.items() if env}
        return HttpAuth(
            type=self.type,
            api_key_name=self.api_key_name,
            api_key_in=self.api_key_in,
            username=self.username,
            token_url=self.token_url,
            client_id=self.client_id,
            scopes=self.scopes,
            **secrets,
        )
