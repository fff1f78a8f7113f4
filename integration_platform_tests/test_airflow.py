"""AirflowResource and the Airflow DAG asset against a real Airflow (``airflow standalone``, started once
per module per version: Airflow 3 over REST API v2 and Airflow 2 over v1) running the project's
example DAG ``sandbox/airflow/dags/integration_platform_example.py``."""

import base64
import hashlib
import hmac
import json
import math
import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import dagster as dg
import pytest
import requests
from dagster._serdes import serialize_value

from integration_platform.orchestration.airflow.component import AirflowDag, airflow_dag_asset, dag_run_id_for
from integration_platform.orchestration.airflow.resource import (
    RUN_ID,
    AirflowError,
    AirflowResource,
    AirflowRunFailed,
    AirflowTimeout,
)
from integration_platform_tests.airflow_server import EXAMPLE_DAG, AirflowServer, airflow_server
from integration_platform_tests.rest_servers import (
    dripping_server,
    failures_within,
    fault_proxy,
    reason_echoing_server,
    scripted_server,
)
from sandbox.harness import failure_messages, latest_metadata

JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")
PASSWORD_ENV = "IP_TEST_AIRFLOW_PASSWORD"


@pytest.fixture(scope="module")
def airflow(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowServer]:
    """Airflow 3 (``v2``: REST API v2, JWT auth) or Airflow 2 (``v1``: REST API v1, basic auth), as the
    test's parameter says. One at a time: pytest groups the tests by version and stops one
    Airflow before it starts the other (two at once slow each other down on a small machine)."""
    version: Literal["v2", "v1"] = "v1" if getattr(request, "param", "v2") == "v1" else "v2"
    with airflow_server(version, tmp_path_factory.mktemp(f"airflow-{version}")) as server:
        yield server


V2 = pytest.mark.parametrize("airflow", ["v2"], indirect=True)
V1 = pytest.mark.parametrize("airflow", ["v1"], indirect=True)


def output_of(path: Path) -> dict[str, Any]:
    """What the example DAG's ``write_output`` task wrote."""
    document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return document


def event_log_text(instance: dg.DagsterInstance, run_id: str) -> str:
    """Every event of the run, serialised: what the UI and the event log store hold."""
    return "\n".join(serialize_value(entry) for entry in instance.all_logs(run_id))


def discard(server: AirflowServer, run_id: str) -> None:
    """Mark a run the test does not wait for as failed, so Airflow spends no time running it."""
    server.resource()._send("PATCH", f"/dags/{EXAMPLE_DAG}/dagRuns/{run_id}", json={"state": "failed"})


def runs_with_id(server: AirflowServer, run_id: str) -> int:
    """How many runs of the example DAG Airflow holds with ``run_id`` (straight from the API)."""
    resource = server.resource()
    body = resource._send("GET", f"/dags/{EXAMPLE_DAG}/dagRuns", params={"limit": 100}).json()
    return sum(1 for run in body["dag_runs"] if run["dag_run_id"] == run_id)


# -- the resource against Airflow 3 (v2) ---------------------------------------------------------


@V2
def test_trigger_with_conf_and_logical_date_succeeds(airflow: AirflowServer, tmp_path: Path) -> None:
    resource = airflow.resource()
    output = tmp_path / "out.json"
    logical_date = datetime(2024, 3, 1, 6, 30, tzinfo=UTC)
    run = resource.trigger_dag_run(EXAMPLE_DAG, {"output_path": str(output), "city": "Lisbon"}, logical_date, "t_conf")
    assert (run.run_id, run.state) == ("t_conf", "queued")
    done = resource.wait_for_dag_run(EXAMPLE_DAG, run.run_id)
    assert done.state == "success"
    assert done.duration_s is not None and done.duration_s > 0
    assert done.url == f"{airflow.base_url}/dags/{EXAMPLE_DAG}/runs/t_conf"
    written = output_of(output)
    assert written["conf"]["city"] == "Lisbon"
    assert written["logical_date"] == "2024-03-01T06:30:00+00:00"
    assert written["run_id"] == "t_conf"


@V2
def test_failed_run_names_the_failed_task(airflow: AirflowServer) -> None:
    resource = airflow.resource()
    run = resource.trigger_dag_run(EXAMPLE_DAG, {"fail": True}, None, "t_fail")
    with pytest.raises(AirflowRunFailed) as failed:
        resource.wait_for_dag_run(EXAMPLE_DAG, run.run_id)
    assert failed.value.failed_tasks == ["check_conf"]
    message = str(failed.value)
    assert EXAMPLE_DAG in message and "'t_fail'" in message and "'failed'" in message and "check_conf" in message


@V2
def test_timeout_names_the_run_and_its_state(airflow: AirflowServer) -> None:
    resource = airflow.resource()
    run = resource.trigger_dag_run(EXAMPLE_DAG, {"sleep_seconds": 15}, None, "t_slow")
    with pytest.raises(AirflowTimeout) as timed_out:
        resource.wait_for_dag_run(EXAMPLE_DAG, run.run_id, timeout_s=1.5, poll_s=0.5)
    assert timed_out.value.run.state in ("queued", "running")
    assert "'t_slow'" in str(timed_out.value) and "after 1.5s (timeout)" in str(timed_out.value)
    discard(airflow, "t_slow")


@V2
def test_trigger_twice_with_one_run_id_makes_one_run(airflow: AirflowServer) -> None:
    resource = airflow.resource()
    first = resource.trigger_dag_run(EXAMPLE_DAG, {"attempt": 1}, datetime(2024, 4, 1, tzinfo=UTC), "t_twice")
    # A retried step: same run id, a later "now" and other conf -> the run that exists.
    second = resource.trigger_dag_run(EXAMPLE_DAG, {"attempt": 2}, datetime(2024, 4, 2, tzinfo=UTC), "t_twice")
    assert (second.run_id, second.conf, second.logical_date) == (first.run_id, {"attempt": 1}, first.logical_date)
    assert runs_with_id(airflow, "t_twice") == 1
    discard(airflow, "t_twice")


@V2
def test_a_logical_date_held_by_another_run_is_a_clear_error(airflow: AirflowServer) -> None:
    resource = airflow.resource()
    when = datetime(2024, 4, 10, tzinfo=UTC)
    resource.trigger_dag_run(EXAMPLE_DAG, {}, when, "t_date_a")
    discard(airflow, "t_date_a")
    with pytest.raises(AirflowError, match="another run already has logical date 2024-04-10") as conflict:
        resource.trigger_dag_run(EXAMPLE_DAG, {}, when, "t_date_b")
    assert conflict.value.status == 409


def expired_copy(token: str, secret: str) -> str:
    """``token`` with its times moved an hour back, signed again with the server's HS512 key."""

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    header, payload, _ = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims.update(iat=claims["iat"] - 7200, nbf=claims.get("nbf", claims["iat"]) - 7200, exp=int(time.time()) - 3600)
    signed = f"{header}.{b64(json.dumps(claims).encode())}"
    return f"{signed}.{b64(hmac.new(secret.encode(), signed.encode(), hashlib.sha512).digest())}"


@V2
def test_transient_faults_are_retried_and_a_lost_trigger_answer_makes_one_run(airflow: AirflowServer) -> None:
    plan = [
        {"fault": "503", "path_regex": "/auth/token$", "times": 1, "retry_after": 1},
        {"fault": "truncate", "path_regex": "/dagRuns$", "times": 1},  # the run is created, its answer is cut
        {"fault": "502", "path_regex": "/dagRuns/t_proxy$", "times": 2},
    ]
    with fault_proxy(airflow.base_url, plan) as proxy:
        resource = airflow.resource(base_url=proxy.url, backoff_factor=0.05)
        run = resource.trigger_dag_run(EXAMPLE_DAG, {"via": "proxy"}, None, "t_proxy")
        faults = proxy.stats()["faults"]
    assert (run.run_id, run.conf) == ("t_proxy", {"via": "proxy"})
    assert {kind: count for kind, count in faults.items() if count} == {"503": 1, "truncate": 1, "502": 2}
    assert runs_with_id(airflow, "t_proxy") == 1
    discard(airflow, "t_proxy")


@V2
def test_an_expired_token_is_renewed(airflow: AirflowServer) -> None:
    resource = airflow.resource()
    run = resource.trigger_dag_run(EXAMPLE_DAG, {}, None, "t_token")
    discard(airflow, "t_token")
    assert resource._token is not None
    expired = expired_copy(resource._token, airflow.jwt_secret)
    probe = requests.get(
        f"{airflow.base_url}/api/v2/dags/{EXAMPLE_DAG}", headers={"Authorization": f"Bearer {expired}"}, timeout=10
    )
    assert (probe.status_code, probe.json()["detail"]) == (401, "Token Expired")
    resource._token = expired
    assert resource.get_dag_run(EXAMPLE_DAG, run.run_id).run_id == "t_token"
    assert resource._token not in (None, expired)


@V2
def test_refused_credentials_and_unknown_dags_fail_without_secrets(airflow: AirflowServer) -> None:
    wrong = "wrong-" + airflow.password
    with pytest.raises(AirflowError) as refused:
        airflow.resource(password=wrong).get_dag_run(EXAMPLE_DAG, "t_conf")
    assert refused.value.status == 401 and "refused a token for user 'dagster'" in str(refused.value)
    assert wrong not in str(refused.value) and airflow.password not in str(refused.value)
    with pytest.raises(AirflowError, match="Airflow has no DAG 'no_such_dag'"):
        airflow.resource().trigger_dag_run("no_such_dag", {}, None, "t_unknown")
    with pytest.raises(ValueError, match="allowed_run_id_pattern"):
        airflow.resource().trigger_dag_run(EXAMPLE_DAG, {}, None, "has a space")
    with pytest.raises(ValueError, match="timezone-aware"):
        airflow.resource().trigger_dag_run(EXAMPLE_DAG, {}, datetime(2024, 1, 1), "t_naive")


@V2
def test_a_paused_dag_is_unpaused_unless_told_not_to(airflow: AirflowServer) -> None:
    resource = airflow.resource()
    resource._send("PATCH", f"/dags/{EXAMPLE_DAG}", json={"is_paused": True})
    with pytest.raises(AirflowError, match="is paused and unpause is off"):
        airflow.resource(unpause=False).trigger_dag_run(EXAMPLE_DAG, {}, None, "t_paused")
    resource.trigger_dag_run(EXAMPLE_DAG, {}, None, "t_unpaused")
    discard(airflow, "t_unpaused")
    assert resource._send("GET", f"/dags/{EXAMPLE_DAG}").json()["is_paused"] is False


# -- the asset ----------------------------------------------------------------------------------


def test_the_token_request_is_not_redirected_so_the_password_stays_with_the_configured_airflow() -> None:
    """A 307 keeps method and body: requests re-sent the JSON body with the password to the Location's host
    (it strips only the Authorization header)."""
    password = "S3cret-Airflow-Pw"
    with scripted_server(lambda request: (500, {}, "thanks")) as other:
        redirect = {"Location": f"{other.url}/collect"}
        with scripted_server(lambda request: (307, redirect, "")) as configured:
            resource = AirflowResource(base_url=configured.url, username="admin", password=password, max_retries=0)
            with pytest.raises(AirflowError) as refused:
                resource.get_dag_run(EXAMPLE_DAG, "t_redirect")
            assert len(configured.requests) == 1
        assert other.requests == []
    message = str(refused.value)
    assert f"POST {configured.url}/auth/token" in message and f"to {other.url};" in message
    assert password not in message and refused.value.status == 307


def test_an_error_body_echoing_the_basic_credentials_never_shows_them() -> None:
    """Airflow 2 (``v1``) authenticates with HTTP basic: the ``Authorization`` header is base64 of
    ``username:password``. A server (or a proxy in front of it) echoing the request's headers in its error
    body had that value copied into the error, and so into the run's logs: it decodes to the password."""
    password = "S3cret-Airflow-Pw"
    credentials = base64.b64encode(f"admin:{password}".encode()).decode()
    with scripted_server(lambda request: (403, {}, json.dumps(request["headers"]))) as echo:
        resource = AirflowResource(base_url=echo.url, api_version="v1", username="admin", password=password)
        with pytest.raises(AirflowError) as refused:
            resource.get_dag_run(EXAMPLE_DAG, "t_echo")
    assert echo.requests[0]["headers"]["Authorization"] == f"Basic {credentials}"
    message = str(refused.value)
    assert "HTTP 403" in message and '"Authorization": "Basic ***"' in message
    assert credentials not in message and password not in message


@pytest.mark.parametrize("api_version", ["v2", "v1"])
def test_a_reason_phrase_echoing_the_credentials_never_shows_them(api_version: Literal["v2", "v1"]) -> None:
    """The error body was masked, the reason phrase was not: an Airflow (or a proxy in front of it) repeating
    the request's ``Authorization`` header there put the JWT (``v2``) or the basic credentials (``v1``, which
    decode to the password) into the error, and so into the run's logs."""
    password, token = "S3cret-Airflow-Pw", "jwt-S3cret-Token-0123456789"

    with reason_echoing_server(403, token) as url:
        resource = AirflowResource(base_url=url, api_version=api_version, username="admin", password=password)
        with pytest.raises(AirflowError) as refused:
            resource.get_dag_run(EXAMPLE_DAG, "t_reason")
    message = str(refused.value)
    credentials = base64.b64encode(f"admin:{password}".encode()).decode()
    shown = "Bearer ***" if api_version == "v2" else "Basic ***"
    assert f"HTTP 403 Refused for {shown}: no" in message
    assert token not in message and credentials not in message and password not in message


def test_a_conf_that_is_no_json_object_is_refused_naming_the_dag_before_anything_is_sent(
    instance: dg.DagsterInstance,
) -> None:
    """JSON has no NaN: a YAML ``.nan`` in a conf failed the trigger with a bare ``InvalidJSONError`` after
    retries, taken for a lost answer (a run lookup followed). It is refused when the component loads, and a
    launchpad conf holding one fails the step without a retry and without a request."""
    with pytest.raises(ValueError, match="conf is not JSON: Out of range float values"):
        AirflowDag.from_attributes_dict(
            attributes={"asset_key": "airflow/nan", "dag_id": EXAMPLE_DAG, "conf": {"x": math.nan}}
        )
    with scripted_server(lambda request: (500, {}, "")) as never:
        resource = AirflowResource(base_url=never.url, api_version="v1", username="admin", password="pw")
        with pytest.raises(ValueError, match=f"the conf of a run of DAG '{EXAMPLE_DAG}' is not JSON"):
            resource.trigger_dag_run(EXAMPLE_DAG, {"limit": math.inf})
        asset = airflow_dag_asset("airflow/nan", EXAMPLE_DAG, retry_policy=dg.RetryPolicy(max_retries=2))
        result = dg.materialize(
            [asset],
            resources={"airflow": resource},
            instance=instance,
            run_config={"ops": {"airflow__nan": {"config": {"conf": {"x": math.nan}}}}},
            raise_on_error=False,
        )
    assert not result.success
    assert never.requests == []
    failures = [e for e in result.all_events if e.is_step_failure]
    assert len(failures) == 1 and "is not JSON" in " ".join(failure_messages(result))
    assert not [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_RESTARTED]


def test_an_enormous_retry_after_is_waited_at_most_max_retry_after() -> None:
    """An Airflow (or a proxy) answering 503 with ``Retry-After: 1000000000``: urllib3 slept as asked, up to
    its own cap of six hours a retry, and the step with it. The wait is now at most ``max_retry_after``."""
    answers = iter([(503, {"Retry-After": "1000000000"}, "busy"), (200, {}, {"dag_id": "d", "dag_run_id": "r"})])
    with scripted_server(lambda request: next(answers)) as api:
        resource = AirflowResource(
            base_url=api.url, api_version="v1", username="admin", password="pw", max_retries=1, max_retry_after=1
        )
        found: list[Any] = []
        started = time.monotonic()
        worker = threading.Thread(target=lambda: found.append(resource.get_dag_run("d", "r")), daemon=True)
        worker.start()
        worker.join(30)
        assert not worker.is_alive(), "still waiting out the Retry-After"
    assert len(api.requests) == 2 and 1 <= time.monotonic() - started < 10
    assert [run.state for run in found] == ["None"]


@pytest.mark.parametrize("status", [200, 302], ids=["answer", "redirect"])
@pytest.mark.parametrize("every", [0, 0.2])
def test_an_answer_that_never_ends_fails_within_its_bounds(every: float, status: int) -> None:
    """An answer (or a redirect) whose body never ends, as fast as it is read (``every`` 0) or two bytes every
    0.2 s: requests read it all into memory (1.9 GB in 10 s; a redirect's body 4.0 GB in 8 s, requests reads
    it itself before following) or waited for ever (``read_timeout`` bounds only the gap between two reads).
    It fails at ``max_body_bytes`` or ``request_timeout``, naming the request."""
    with dripping_server({"/auth/token": {"access_token": "a.b.c"}}, every, status) as api:
        resource = AirflowResource(
            base_url=api.url, username="admin", password="pw", max_body_bytes=1 << 20, request_timeout=1
        )
        failed = failures_within(lambda: resource.get_dag_run("d", "r"), AirflowError, doing="reading the answer")
    url = f"GET {api.url}/api/v2/dags/d/dagRuns/r"
    reason = (
        "the response body passed max_body_bytes (1,048,576 bytes, decoded)"
        if every == 0
        else "the answer passed request_timeout (1s) while its body was read"
    )
    assert [str(exc) for exc in failed] == [f"{url}: {reason}"] and failed[0].status is None


def test_an_answer_that_is_not_airflows_json_fails_naming_the_request() -> None:
    """A login page (or a proxy's answer) in front of Airflow, or JSON of another shape: the step failed with
    a bare ``JSONDecodeError``, ``KeyError`` or ``TypeError`` naming no request. Each is an ``AirflowError``
    naming the request and its status; a token answer's body is never shown (it may hold a token)."""

    def answer(request: dict[str, Any]) -> tuple[int, dict[str, str | list[str]], Any]:
        if request["path"] == "/auth/token" and request["body"].count("first"):
            return 201, {"Content-Type": "text/html"}, "<html>Sign in</html>"
        if request["path"] == "/auth/token":
            return 201, {}, {"access_token": "a.b.c"}
        if "deep" in request["path"]:  # nested past Python's recursion limit: a bare RecursionError before
            return 200, {}, "[" * 100_000 + "]" * 100_000
        return 200, {}, ["not", "a", "run"]

    with scripted_server(answer) as api:
        login = AirflowResource(base_url=api.url, username="first", password="pw", max_retries=0)
        with pytest.raises(AirflowError) as refused:
            login.get_dag_run("d", "r")
        other = AirflowResource(base_url=api.url, username="admin", password="pw", max_retries=0)
        with pytest.raises(AirflowError) as shapeless:
            other.get_dag_run("d", "r")
        with pytest.raises(AirflowError, match=r"dags/deep/dagRuns/r: HTTP 200 is not the JSON object"):
            other.get_dag_run("deep", "r")
    assert str(refused.value) == (
        f"POST {api.url}/auth/token: HTTP 201 is not the JSON object Airflow answers (with access_token): "
        "(body not shown)"
    )
    assert str(shapeless.value) == (
        f"GET {api.url}/api/v2/dags/d/dagRuns/r: HTTP 200 is not the JSON object Airflow answers "
        '(with dag_id, dag_run_id): ["not", "a", "run"]'
    )


@pytest.mark.parametrize("api_version", ["v2", "v1"])
def test_a_base_url_with_user_info_is_refused_without_showing_its_password(api_version: Literal["v2", "v1"]) -> None:
    """A ``base_url`` with user info (``http://etl:pw@host``): requests sent it as basic auth in place of the
    token (``v2``: every request 401), or dropped it for the configured login (``v1``), and every error
    printed the password with the URL. It is refused before any request, the password masked."""
    password = "Pr0xy-S3cret"
    with scripted_server(lambda request: (500, {}, "broken")) as api:
        host = api.url.removeprefix("http://")
        resource = AirflowResource(
            base_url=f"http://etl:{password}@{host}", api_version=api_version, username="admin", password="pw"
        )
        with pytest.raises(AirflowError) as refused:
            resource.get_dag_run("d", "r")
        assert api.requests == []
    assert str(refused.value) == (
        f"base_url http://etl:***@{host} holds user info: Airflow's login is username and password; remove it"
    )


def test_dag_run_ids_are_deterministic_and_allowed() -> None:
    key = dg.AssetKey(["airflow", "example output"])
    run_id = dag_run_id_for("0f0e-11", key, "2024-01-01|eu/west")
    assert run_id == dag_run_id_for("0f0e-11", key, "2024-01-01|eu/west") and RUN_ID.match(run_id)
    assert run_id != dag_run_id_for("0f0e-11", dg.AssetKey(["airflow", "example_output"]), "2024-01-01|eu/west")
    assert dag_run_id_for("abc", dg.AssetKey(["a", "b"])) == "dagster__a.b__abc"
    assert dag_run_id_for("abc", dg.AssetKey(["a", "b"]), "2024-01-01") == "dagster__a.b__2024-01-01__abc"
    assert dag_run_id_for("abc", dg.AssetKey(["a.b"])) != dag_run_id_for("abc", dg.AssetKey(["a", "b"]))
    assert RUN_ID.match(dag_run_id_for("abc", dg.AssetKey(["x" * 300])))


@V2
def test_the_asset_materialises_when_the_run_succeeds(
    airflow: AirflowServer, instance: dg.DagsterInstance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASSWORD_ENV, airflow.password)
    output = tmp_path / "asset.json"
    asset = airflow_dag_asset("airflow/example_output", EXAMPLE_DAG, conf={"output_path": str(output), "x": 1})
    resource = airflow.resource(password=dg.EnvVar(PASSWORD_ENV))
    run_config = {"ops": {"airflow__example_output": {"config": {"conf": {"extra": "from the launchpad"}}}}}
    result = dg.materialize([asset], resources={"airflow": resource}, instance=instance, run_config=run_config)
    assert result.success
    metadata = latest_metadata(instance, asset.key)
    assert metadata["state"] == "success" and metadata["dag_id"] == EXAMPLE_DAG
    assert metadata["dag_run_id"] == f"dagster__airflow.example_output__{result.run_id}"
    assert metadata["airflow_url"] == f"{airflow.base_url}/dags/{EXAMPLE_DAG}/runs/{metadata['dag_run_id']}"
    assert metadata["duration_s"] > 0
    written = output_of(output)
    assert written["conf"] == {"output_path": str(output), "x": 1, "extra": "from the launchpad"}
    assert written["run_id"] == metadata["dag_run_id"]
    log = event_log_text(instance, result.run_id)
    assert airflow.password not in log and not JWT.search(log)


@V2
def test_the_asset_fails_clearly_when_the_run_fails(
    airflow: AirflowServer, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASSWORD_ENV, airflow.password)
    asset = airflow_dag_asset("airflow/failing", EXAMPLE_DAG, conf={"fail": True})
    resource = airflow.resource(password=dg.EnvVar(PASSWORD_ENV))
    result = dg.materialize([asset], resources={"airflow": resource}, instance=instance, raise_on_error=False)
    assert not result.success
    (message,) = failure_messages(result)
    assert f"run 'dagster__airflow.failing__{result.run_id}' ended 'failed'; failed tasks: check_conf" in message
    assert instance.get_latest_materialization_event(asset.key) is None
    log = event_log_text(instance, result.run_id)
    assert airflow.password not in log and not JWT.search(log)


@V2
def test_a_retried_step_waits_for_the_run_it_started(airflow: AirflowServer, instance: dg.DagsterInstance) -> None:
    # Enough attempts for a loaded machine: the run itself (queued, scheduled, 5 s of sleep) took
    # longer than 4 x 2 s once in CI; 10 x 3 s leaves a wide margin and still times out first.
    retry = dg.RetryPolicy(max_retries=10)
    asset = airflow_dag_asset(
        "airflow/retried", EXAMPLE_DAG, conf={"sleep_seconds": 5}, timeout_s=3, retry_policy=retry
    )
    result = dg.materialize([asset], resources={"airflow": airflow.resource()}, instance=instance)
    assert result.success
    retries = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]
    assert retries and re.search(r"still '(queued|running)' after 3s \(timeout\)", str(retries[0].event_specific_data))
    run_id = latest_metadata(instance, asset.key)["dag_run_id"]
    assert run_id == f"dagster__airflow.retried__{result.run_id}" and runs_with_id(airflow, run_id) == 1


@V2
def test_a_daily_partition_runs_at_its_start(
    airflow: AirflowServer, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    output = tmp_path / "partition.json"
    daily = dg.DailyPartitionsDefinition(start_date="2024-06-01")
    asset = airflow_dag_asset(
        ["airflow", "daily"], EXAMPLE_DAG, conf={"output_path": str(output)}, partitions_def=daily
    )
    result = dg.materialize(
        [asset], resources={"airflow": airflow.resource()}, instance=instance, partition_key="2024-06-03"
    )
    assert result.success
    assert output_of(output)["logical_date"] == "2024-06-03T00:00:00+00:00"
    metadata = latest_metadata(instance, asset.key)
    assert metadata["dag_run_id"] == f"dagster__airflow.daily__2024-06-03__{result.run_id}"


def test_components_sharing_a_connection_share_its_resource() -> None:
    from dagster.components.core.component_tree import ComponentTree

    context = ComponentTree.for_test().load_context
    built = [
        AirflowDag.from_attributes_dict(attributes={"asset_key": f"airflow/{name}", "dag_id": name, "connection": {}})
        for name in ("one", "two")
    ]
    merged = dg.Definitions.merge(*(component.build_defs(context) for component in built))
    assert sorted(merged.resources or {}) == ["airflow"]
    with pytest.raises(ValueError, match="password_env"):
        AirflowDag.from_attributes_dict(
            attributes={"asset_key": "a", "dag_id": "d", "connection": {"password_env": "not-a-name"}}
        )


@V2
def test_the_component_declares_the_asset_and_its_connection(
    airflow: AirflowServer, instance: dg.DagsterInstance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IP_TEST_AIRFLOW_URL", airflow.base_url)
    monkeypatch.setenv("IP_TEST_AIRFLOW_USER", airflow.username)
    monkeypatch.setenv(PASSWORD_ENV, airflow.password)
    output = tmp_path / "component.json"
    component = AirflowDag.from_attributes_dict(
        attributes={
            "asset_key": "airflow/from_yaml",
            "dag_id": EXAMPLE_DAG,
            "conf": {"output_path": str(output), "source": "yaml"},
            "deps": ["pokeapi/berries"],
            "timeout_s": 120,
            "poll_s": 0.5,
            "connection": {
                "base_url_env": "IP_TEST_AIRFLOW_URL",
                "username_env": "IP_TEST_AIRFLOW_USER",
                "password_env": PASSWORD_ENV,
            },
        }
    )
    from dagster.components.core.component_tree import ComponentTree

    defs = component.build_defs(ComponentTree.for_test().load_context)
    (asset,) = [a for a in defs.assets or [] if isinstance(a, dg.AssetsDefinition)]
    assert asset.key == dg.AssetKey(["airflow", "from_yaml"])
    assert dg.AssetKey(["pokeapi", "berries"]) in asset.asset_deps[asset.key]
    result = dg.materialize([asset], resources=dict(defs.resources or {}), instance=instance)
    assert result.success
    assert output_of(output)["conf"]["source"] == "yaml"


# -- Airflow 2 (v1, basic auth) -----------------------------------------------------------------


@V1
def test_v1_asset_resource_failure_and_idempotency(
    airflow: AirflowServer, instance: dg.DagsterInstance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASSWORD_ENV, airflow.password)
    output = tmp_path / "v1_asset.json"
    resource = airflow.resource(password=dg.EnvVar(PASSWORD_ENV))
    daily = dg.DailyPartitionsDefinition(start_date="2024-03-01")
    asset = airflow_dag_asset(
        "airflow/v1_output", EXAMPLE_DAG, conf={"output_path": str(output), "city": "Porto"}, partitions_def=daily
    )
    result = dg.materialize([asset], resources={"airflow": resource}, instance=instance, partition_key="2024-03-02")
    assert result.success
    metadata = latest_metadata(instance, asset.key)
    run_id = f"dagster__airflow.v1_output__2024-03-02__{result.run_id}"
    assert metadata["state"] == "success" and metadata["dag_run_id"] == run_id
    assert metadata["airflow_url"] == f"{airflow.base_url}/dags/{EXAMPLE_DAG}/grid?dag_run_id={run_id}"
    written = output_of(output)
    assert (written["conf"]["city"], written["run_id"]) == ("Porto", run_id)
    assert written["logical_date"] == "2024-03-02T00:00:00+00:00"
    log = event_log_text(instance, result.run_id)
    assert airflow.password not in log
    # Basic auth: the header value is base64 of user:password; it must not leak either.
    assert requests.auth._basic_auth_str(airflow.username, airflow.password).split()[1] not in log

    plain = airflow.resource()
    again = plain.trigger_dag_run(EXAMPLE_DAG, {"city": "other"}, None, run_id)  # a retried step
    assert (again.conf["city"], again.state) == ("Porto", "success")
    assert runs_with_id(airflow, run_id) == 1
    failing = plain.trigger_dag_run(EXAMPLE_DAG, {"fail": True}, None, "v1_fail")
    with pytest.raises(AirflowRunFailed, match="'v1_fail' ended 'failed'; failed tasks: check_conf"):
        plain.wait_for_dag_run(EXAMPLE_DAG, failing.run_id)
    with pytest.raises(AirflowError) as refused:
        airflow.resource(password="wrong-" + airflow.password).get_dag_run(EXAMPLE_DAG, run_id)
    assert refused.value.status in (401, 403) and airflow.password not in str(refused.value)
