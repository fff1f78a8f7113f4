"""Paginators and auth are typed per ``type`` (tagged unions, as dlt's typed REST config), also when
the value comes from a ``{{ template }}``: the right model, every field checked, secrets by env name."""

import traceback

import dagster as dg
import pytest
import yaml
from pydantic import ValidationError

from integration_platform.assets.http_config import BearerAuth, NoAuth, OAuth2RefreshToken
from integration_platform.sources.rest.component import CursorPaginator, OffsetPaginator, RestSource, RestStream

pytestmark = pytest.mark.fast


def _stream(text: str, **scope: object) -> RestStream:
    model = RestStream.model()(**yaml.safe_load(text))
    return RestStream.resolve_from_model(dg.ResolutionContext.default().with_scope(**scope), model)


def test_each_paginator_type_is_its_own_model() -> None:
    stream = _stream("{name: a, path: /x, paginator: {type: cursor, cursor_path: meta.next, cursor_param: c}}")
    assert isinstance(stream.paginator, CursorPaginator) and stream.paginator.cursor_param == "c"
    assert _stream("{name: a, path: /x}").paginator is None


def test_a_templated_paginator_is_validated_as_its_type() -> None:
    stream = _stream('{name: a, path: /x, paginator: "{{ paging }}"}', paging={"type": "offset", "limit": 5})
    assert isinstance(stream.paginator, OffsetPaginator) and stream.paginator.limit == 5
    with pytest.raises(Exception, match=r"offset\.limit\s+Field required"):  # offset needs a limit
        _stream('{name: a, path: /x, paginator: "{{ paging }}"}', paging={"type": "offset"})
    with pytest.raises(Exception, match=r"single_page\.limit\s+Extra inputs"):  # single_page takes no limit
        _stream('{name: a, path: /x, paginator: "{{ paging }}"}', paging={"type": "single_page", "limit": 5})


def test_auth_types_and_the_resource_config_they_give() -> None:
    source = RestSource.resolve_from_yaml(
        "source: api\nbase_url: https://api.example.com\nstreams: [{name: a, path: /x}]\n"
        "auth: {type: oauth2_refresh_token, token_url: https://auth.example.com/token, client_id: etl, "
        "refresh_token_env: API_REFRESH}"
    )
    assert isinstance(source.auth, OAuth2RefreshToken)
    config = source.auth.resource_config()
    assert (config.type, config.client_id, config.client_secret) == ("oauth2_refresh_token", "etl", None)
    assert config.refresh_token == dg.EnvVar("API_REFRESH")  # read by the resource at run time
    plain = RestSource.resolve_from_yaml(
        "source: api\nbase_url: https://api.example.com\nstreams: [{name: a, path: /x}]"
    )
    assert isinstance(plain.auth, NoAuth) and plain.auth.resource_config().type == "none"
    with pytest.raises(ValidationError):
        BearerAuth.model_validate({"type": "bearer", "token_env": "not a variable name"})


def test_templates_inside_a_typed_value_are_rendered_and_a_rendered_secret_is_never_echoed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("IP_TEST_TOKEN_URL", "https://auth.example.com/token")
    monkeypatch.setenv("IP_TEST_TOKEN", "SUPERSECRET9")
    base = "source: api\nbase_url: https://api.example.com\nstreams: [{name: a, path: /x}]\n"
    source = RestSource.resolve_from_yaml(
        base + "auth: {type: oauth2_client_credentials, token_url: '{{ env.IP_TEST_TOKEN_URL }}', "
        "client_id: etl, client_secret_env: IP_TEST_SECRET}"
    )
    assert source.auth.resource_config().token_url == "https://auth.example.com/token"
    with pytest.raises(Exception) as failure:  # a secret rendered where an object belongs
        RestSource.resolve_from_yaml(base + "auth: '{{ env.IP_TEST_TOKEN }}'")
    assert "SUPERSECRET9" not in "".join(traceback.format_exception(failure.value))
    assert isinstance(RestSource.resolve_from_yaml(base + "auth: {}").auth, NoAuth)  # no type: no credentials


def test_kafka_client_config_takes_yaml_scalars_as_librdkafka_text() -> None:
    """``client_config: {enable.idempotence: false, message.max.bytes: 2000}`` reaches librdkafka
    as the text it parses, not Python's ``False`` / ``2000``."""
    from integration_platform.resources.kafka import KafkaResource
    from integration_platform.sources.queues.config import QueueConnection

    connection = QueueConnection(
        broker="kafka",
        bootstrap_servers="127.0.0.1:9092",
        client_config={"enable.idempotence": False, "message.max.bytes": 2000, "linger.ms": 5.5, "acks": "all"},
    )
    resource = connection.resource()
    assert isinstance(resource, KafkaResource)
    assert resource.client_config == {
        "enable.idempotence": "false",
        "message.max.bytes": "2000",
        "linger.ms": "5.5",
        "acks": "all",
    }
