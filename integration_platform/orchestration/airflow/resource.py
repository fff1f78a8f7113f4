"""AirflowResource: trigger a DAG run through Airflow's stable REST API, wait for it, report its state.

Protocol (Airflow's public REST API; the same paths under both versions):

- ``api_version="v2"`` (Airflow 3): ``/api/v2``
  (https://airflow.apache.org/docs/apache-airflow/stable/stable-rest-api-ref.html) with
  ``Authorization: Bearer <JWT>``. The JWT comes from ``POST /auth/token`` with the JSON body
  ``{"username": ..., "password": ...}``, answered ``201 {"access_token": ...}``; both the simple
  auth manager (Airflow 3's default, forced by ``airflow standalone``:
  https://airflow.apache.org/docs/apache-airflow/stable/core-concepts/auth-manager/simple/token.html)
  and the FAB auth manager (apache-airflow-providers-fab:
  https://airflow.apache.org/docs/apache-airflow-providers-fab/stable/auth-manager/token.html)
  serve it. A token lives ``[api_auth] jwt_expiration_time`` seconds (default 86400); the API
  answers 401 ("Token Expired") after that, which renews the token once.
- ``api_version="v1"`` (Airflow 2): ``/api/v1`` with HTTP basic auth, which needs
  ``airflow.api.auth.backend.basic_auth`` in ``[api] auth_backends``
  (https://airflow.apache.org/docs/apache-airflow/2.11.0/stable-rest-api-ref.html).

Endpoints: ``GET|PATCH /dags/{dag_id}`` (pause flag), ``POST /dags/{dag_id}/dagRuns`` (trigger),
``GET /dags/{dag_id}/dagRuns/{run_id}`` (state: ``queued``, ``running``, ``success``, ``failed``),
``GET /dags/{dag_id}/dagRuns/{run_id}/taskInstances`` (which tasks failed).

Errors raised (:class:`AirflowError` and its subclasses) name the DAG, the run id and the HTTP
status; they never contain the password or the token (masked in the body and the reason phrase an
answer may echo them in) and never chain the underlying exception.
The token request is never redirected (a 307/308 would carry its JSON body, the password, to the
``Location``): a redirect fails naming the configured URL and the redirect's origin. Other
requests follow redirects; requests drops their ``Authorization`` header on another host.
"""

import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from urllib.parse import quote, urljoin, urlsplit

import dagster as dg
import requests
from pydantic import Field, PrivateAttr
from requests.adapters import HTTPAdapter
from requests.auth import HTTPBasicAuth
from urllib3.util.retry import Retry

from integration_platform.resources.http_auth import basic_credentials, mask, userinfo_secrets
from integration_platform.resources.http_body import AttemptTooLong, BodyTooLarge, bound_redirect_bodies, read_body
from integration_platform.resources.http_retry import retry_policy

#: Airflow's default ``[scheduler] allowed_run_id_pattern``; run ids are at most 250 characters.
RUN_ID = re.compile(r"^[A-Za-z0-9_.~:+-]{1,250}$")


def _task_label(instance: dict[str, Any]) -> str:
    """``task_id``, or ``task_id[i]`` for the i-th instance of a mapped task."""
    index = instance.get("map_index")
    return f"{instance['task_id']}[{index}]" if isinstance(index, int) and index >= 0 else str(instance["task_id"])


def _origin(location: str, base: str) -> str:
    """The origin (``scheme://host[:port]``, no user info or path) a ``Location`` header points to,
    resolved against ``base``; ``an unparsable location`` when it is none."""
    try:
        parts = urlsplit(urljoin(base, location))
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "an unparsable location"
    return f"{parts.scheme}://{parts.hostname}{port}" if parts.hostname else "an unparsable location"


class AirflowError(Exception):
    """A request to Airflow failed for good; ``status`` is the final HTTP status when there was one."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class DagRun:
    """One DAG run as Airflow reports it. Dates are ISO 8601 strings (UTC) or ``None``; ``url`` is
    the run's page in the Airflow UI."""

    dag_id: str
    run_id: str
    state: str
    logical_date: str | None
    start_date: str | None
    end_date: str | None
    conf: dict[str, Any] = field(default_factory=dict)
    url: str = ""

    @property
    def duration_s(self) -> float | None:
        """Seconds from start to end; ``None`` until the run has both."""
        if not (self.start_date and self.end_date):
            return None
        return (datetime.fromisoformat(self.end_date) - datetime.fromisoformat(self.start_date)).total_seconds()


class AirflowRunFailed(AirflowError):
    """The DAG run ended ``failed``; ``failed_tasks`` are the task ids that failed (may be empty)."""

    def __init__(self, run: DagRun, failed_tasks: list[str]) -> None:
        tasks = f"; failed tasks: {', '.join(failed_tasks)}" if failed_tasks else ""
        super().__init__(f"Airflow DAG {run.dag_id!r} run {run.run_id!r} ended {run.state!r}{tasks} ({run.url})")
        self.run, self.failed_tasks = run, failed_tasks


class AirflowTimeout(AirflowError):
    """The DAG run did not finish in time; it goes on in Airflow (``run`` is its last known state)."""

    def __init__(self, run: DagRun, timeout_s: float) -> None:
        super().__init__(
            f"Airflow DAG {run.dag_id!r} run {run.run_id!r} still {run.state!r} after {timeout_s:g}s "
            f"(timeout); it was not stopped in Airflow ({run.url})"
        )
        self.run, self.timeout_s = run, timeout_s


def json_conf_problem(conf: Any) -> str | None:
    """Why ``conf`` cannot be a DAG run's conf, or ``None``: it must be a JSON object, whose numbers are finite
    (JSON has no NaN; RFC 8259 section 6). A YAML ``.nan`` failed the trigger as a bare ``InvalidJSONError``
    after retries, taken for a lost answer."""
    if not isinstance(conf, dict):
        return f"must be a JSON object, not {type(conf).__name__}"
    try:
        json.dumps(conf, allow_nan=False)
    except (ValueError, TypeError) as exc:
        return f"is not JSON: {exc}"
    return None


class AirflowResource(dg.ConfigurableResource):
    """One Airflow deployment. Set ``password`` (and usually ``base_url``) with ``dg.EnvVar``.

    Timeouts and intervals are seconds. ``max_retries`` counts retries after the first attempt
    of a request answered 429/500/502/503/504 or cut by a connection or read error (urllib3
    ``Retry``: exponential backoff from ``backoff_factor``, ``Retry-After`` honoured up to ``max_retry_after``). GET and
    PATCH (setting ``is_paused``) are idempotent. A POST that triggers a run is retried too,
    which is safe only because every trigger carries its ``dag_run_id``: if a lost answer hid a
    run that was created, the retry gets 409 Conflict and :meth:`trigger_dag_run` returns the
    existing run instead of starting a second one; when the answer is lost for good (body cut
    short), it looks the run up by its id before giving up.
    """

    base_url: str = Field(description="The API server's root URL, e.g. http://airflow:8080 (without /api/v2).")
    api_version: Literal["v2", "v1"] = Field(default="v2", description="v2: Airflow 3 (JWT); v1: Airflow 2 (basic).")
    username: str
    password: str = Field(description="Secret: set it with dg.EnvVar.")
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    poll_interval: float = Field(default=5.0, gt=0, description="Seconds between two state polls.")
    run_timeout: float = Field(default=3600.0, gt=0, description="Default seconds to wait for a run to finish.")
    verify_tls: bool = True
    ca_bundle: str | None = Field(default=None, description="PEM file of CAs to trust instead of certifi's.")
    unpause: bool = Field(default=True, description="Unpause a paused DAG before triggering it.")
    max_retries: int = 5
    backoff_factor: float = 0.5
    #: The longest ``Retry-After`` waited (seconds; a longer one is waited this long: urllib3's
    #: ``retry_after_max``), the most seconds one request may take in all, body included (``read_timeout``
    #: bounds only the gap between two reads), and the most bytes of one answer's body (decoded). An
    #: answer asking to wait 10^9 s, or a body that never ends or comes a byte a second, held a step
    #: for ever (urllib3's own cap is six hours a retry) or filled its memory.
    max_retry_after: int = Field(default=300, gt=0)
    request_timeout: float = Field(default=600.0, gt=0)
    max_body_bytes: int = Field(default=64 << 20, gt=0)

    _session: requests.Session | None = PrivateAttr(default=None)
    _token: str | None = PrivateAttr(default=None)

    # -- HTTP -------------------------------------------------------------------------------
    def _http(self) -> requests.Session:
        """The session, built on first use. Raises :class:`AirflowError` when ``base_url`` holds user info
        (``http://user:pw@host``): requests would send it as basic auth in place of the token (``v2``
        always 401) or drop it for the configured login (``v1``), and every error would print it."""
        if self._session is None:
            if "@" in urlsplit(self.base_url).netloc:
                shown = mask(self.base_url, userinfo_secrets(self.base_url))
                raise AirflowError(
                    f"base_url {shown} holds user info: Airflow's login is username and password; remove it"
                )
            methods = frozenset({"GET", "PATCH", "POST"})  # POST: idempotent by its dag_run_id (class docstring)
            retry = retry_policy(
                self.max_retries, self.backoff_factor, Retry.DEFAULT_BACKOFF_MAX, 0.0, methods, self.max_retry_after
            )
            session = requests.Session()
            session.mount("http://", HTTPAdapter(max_retries=retry))
            session.mount("https://", HTTPAdapter(max_retries=retry))
            session.headers["Accept"] = "application/json"
            bound_redirect_bodies(session, self.max_body_bytes, self.request_timeout)
            if self.api_version == "v1":
                session.auth = HTTPBasicAuth(self.username, self.password)
            self._session = session
        return self._session

    def _redact(self, text: str, limit: int | None = None) -> str:
        """``text`` with the password, the JWT and the basic ``Authorization`` value (``v1``: base64 of
        ``username:password``, which decodes to the password) masked, then cut to ``limit`` characters:
        an Airflow or a proxy in front of it may echo the request's headers in an error body."""
        return mask(text, (self.password, self._token, basic_credentials(self.username, self.password)), limit)

    def _request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        """One request (retried by urllib3), its body read within ``max_body_bytes`` and ``request_timeout``;
        transport failures, a body too large and an attempt too long become :class:`AirflowError` (without
        a status: the answer was lost)."""
        try:
            # verify per request: a session-level value loses to REQUESTS_CA_BUNDLE (psf/requests#3829)
            response = self._http().request(
                method,
                url,
                timeout=(self.connect_timeout, self.read_timeout),
                verify=self.ca_bundle or self.verify_tls,
                stream=True,
                **kwargs,
            )
            read_body(response, self.max_body_bytes, time.monotonic() + self.request_timeout)
            return response
        except BodyTooLarge as exc:
            raise AirflowError(f"{method} {url}: {exc}") from None
        except AttemptTooLong:
            raise AirflowError(
                f"{method} {url}: the answer passed request_timeout ({self.request_timeout:g}s) while its body was read"
            ) from None
        except requests.exceptions.SSLError:
            raise AirflowError(
                f"{method} {url}: TLS verification failed; trust the server's CA with ca_bundle"
            ) from None
        except requests.RequestException as exc:
            raise AirflowError(
                f"{method} {url}: {type(exc).__name__} (after up to {self.max_retries} retries)"
            ) from None

    def _bearer(self) -> str:
        """The JWT for ``v2``, obtained from ``POST /auth/token`` when there is none yet."""
        if self._token is None:
            url = f"{self.base_url.rstrip('/')}/auth/token"
            # Never redirected: a 307/308 keeps the body, so requests would send the password wherever the
            # Location points (it strips only the Authorization header).
            credentials = {"username": self.username, "password": self.password}
            response = self._request("POST", url, json=credentials, allow_redirects=False)
            if response.is_redirect:
                raise AirflowError(
                    f"POST {url}: Airflow answered HTTP {response.status_code} redirecting the token request "
                    f"to {_origin(response.headers.get('Location', ''), url)}; it carries the password, so it is "
                    "not followed: set base_url to the address Airflow serves its API at",
                    response.status_code,
                )
            if response.status_code not in (200, 201):
                raise AirflowError(
                    f"POST {url}: Airflow refused a token for user {self.username!r} "
                    f"(HTTP {response.status_code}: {self._redact(response.text, 200)})",
                    response.status_code,
                )
            self._token = str(self._object(response, "access_token", show_body=False)["access_token"])
        return self._token

    def _object(self, response: requests.Response, *keys: str, show_body: bool = True) -> dict[str, Any]:
        """The JSON object ``response`` holds, with each of ``keys``. Raises :class:`AirflowError` naming the
        request, its status and (``show_body``) the start of the body, secrets masked, when it holds
        something else: a login page or a proxy's answer in front of Airflow failed the step with a bare
        ``KeyError`` or ``JSONDecodeError`` naming no request. A token answer's body is never shown: it may
        hold a token under another name."""
        try:
            body = response.json()
        except (ValueError, RecursionError):  # not JSON, or nested past Python's recursion limit
            body = None
        if not isinstance(body, dict) or any(key not in body for key in keys):
            detail = self._redact(response.text, 200).replace("\n", " ") if show_body else "(body not shown)"
            raise AirflowError(
                f"{response.request.method} {response.url}: HTTP {response.status_code} is not the JSON object "
                f"Airflow answers (with {', '.join(keys)}): {detail}",
                response.status_code,
            )
        return body

    def _send(self, method: str, path: str, *, allow: tuple[int, ...] = (), **kwargs: Any) -> requests.Response:
        """``method`` on ``/api/<version><path>``; a status >= 400 not in ``allow`` raises :class:`AirflowError`."""
        url = f"{self.base_url.rstrip('/')}/api/{self.api_version}{path}"
        renewed = False
        while True:
            headers = {"Authorization": f"Bearer {self._bearer()}"} if self.api_version == "v2" else {}
            response = self._request(method, url, headers=headers, **kwargs)
            if response.status_code == 401 and self.api_version == "v2" and not renewed:
                self._token, renewed = None, True  # expired or revoked: log in again, once
                continue
            if response.status_code < 400 or response.status_code in allow:
                return response
            detail = self._redact(response.text, 300).replace("\n", " ")
            reason = self._redact(response.reason or "", 100)  # the server's text too: it may echo a credential
            raise AirflowError(f"{method} {url}: HTTP {response.status_code} {reason}: {detail}", response.status_code)

    # -- API --------------------------------------------------------------------------------
    def run_url(self, dag_id: str, run_id: str) -> str:
        """The run's page in the Airflow UI (Airflow 3: ``/dags/<dag>/runs/<run>``; 2: the grid)."""
        base, dag, run = self.base_url.rstrip("/"), quote(dag_id, safe=""), quote(run_id, safe="")
        return (
            f"{base}/dags/{dag}/runs/{run}" if self.api_version == "v2" else f"{base}/dags/{dag}/grid?dag_run_id={run}"
        )

    def _dag_run(self, body: dict[str, Any]) -> DagRun:
        return DagRun(
            dag_id=body["dag_id"],
            run_id=body["dag_run_id"],
            state=str(body.get("state")),
            logical_date=body.get("logical_date"),
            start_date=body.get("start_date"),
            end_date=body.get("end_date"),
            conf=body.get("conf") or {},
            url=self.run_url(body["dag_id"], body["dag_run_id"]),
        )

    def ensure_unpaused(self, dag_id: str) -> None:
        """Unpause ``dag_id`` if it is paused (a paused DAG's runs stay queued). Raises
        :class:`AirflowError` when the DAG is unknown, or paused and ``unpause`` is off."""
        path = f"/dags/{quote(dag_id, safe='')}"
        response = self._send("GET", path, allow=(404,))
        if response.status_code == 404:
            raise AirflowError(f"Airflow has no DAG {dag_id!r} (wrong id, or not parsed yet)", 404)
        if not self._object(response, "is_paused").get("is_paused"):
            return
        if not self.unpause:
            raise AirflowError(f"Airflow DAG {dag_id!r} is paused and unpause is off: its runs would never start")
        params = {"update_mask": "is_paused"} if self.api_version == "v1" else {}
        self._send("PATCH", path, json={"is_paused": False}, params=params)

    def trigger_dag_run(
        self,
        dag_id: str,
        conf: dict[str, Any] | None = None,
        logical_date: datetime | None = None,
        dag_run_id: str | None = None,
        note: str | None = None,
    ) -> DagRun:
        """Start a run of ``dag_id`` with ``conf`` (a JSON object) at ``logical_date`` (timezone-aware;
        ``None``: Airflow 3 runs without one, Airflow 2 uses now) and return it (usually ``queued``).

        Idempotent per ``dag_run_id``: when Airflow already has that run (409 Conflict), the
        existing run is returned and no second run starts (its conf is the first trigger's).
        Without ``dag_run_id`` a random ``dagster__<uuid>`` is used, so HTTP retries stay safe.
        Raises ``ValueError`` for a run id Airflow rejects, a naive ``logical_date`` or a ``conf`` that is no
        JSON object (:func:`json_conf_problem`), and :class:`AirflowError` when the DAG is unknown or another
        run holds ``logical_date`` (Airflow keeps one run per DAG and logical date).
        """
        run_id = dag_run_id or f"dagster__{uuid.uuid4().hex}"
        if not RUN_ID.match(run_id):
            raise ValueError(f"dag_run_id {run_id!r} must match {RUN_ID.pattern} (Airflow's allowed_run_id_pattern)")
        problem = json_conf_problem(conf or {})
        if problem:
            raise ValueError(f"the conf of a run of DAG {dag_id!r} {problem}")
        if logical_date is not None and logical_date.utcoffset() is None:
            raise ValueError(f"logical_date {logical_date.isoformat()} must be timezone-aware")
        self.ensure_unpaused(dag_id)
        body: dict[str, Any] = {"dag_run_id": run_id, "conf": conf or {}}
        if logical_date is not None or self.api_version == "v2":  # v2 requires the key (nullable)
            body["logical_date"] = logical_date.isoformat() if logical_date else None
        if note:
            body["note"] = note
        try:
            response = self._send("POST", f"/dags/{quote(dag_id, safe='')}/dagRuns", json=body, allow=(409,))
        except AirflowError as exc:
            # No status: the answer was lost (connection cut, body cut short). Did the run start?
            found = self._find_run(dag_id, run_id) if exc.status is None else None
            if found is None:
                raise
            return found
        if response.status_code != 409:
            return self._dag_run(self._object(response, "dag_id", "dag_run_id"))
        existing = self._find_run(dag_id, run_id)
        if existing is None:
            when = logical_date.isoformat() if logical_date else "now"
            raise AirflowError(
                f"Airflow refused run {run_id!r} of DAG {dag_id!r}: another run already has logical date {when} "
                "(one run per DAG and logical date); clear or delete that run in Airflow to run it again",
                409,
            )
        return existing

    def _find_run(self, dag_id: str, run_id: str) -> DagRun | None:
        response = self._send("GET", f"/dags/{quote(dag_id, safe='')}/dagRuns/{quote(run_id, safe='')}", allow=(404,))
        return None if response.status_code == 404 else self._dag_run(self._object(response, "dag_id", "dag_run_id"))

    def get_dag_run(self, dag_id: str, run_id: str) -> DagRun:
        """The run's current state. Raises :class:`AirflowError` (status 404) when there is no such run."""
        run = self._find_run(dag_id, run_id)
        if run is None:
            raise AirflowError(f"Airflow DAG {dag_id!r} has no run {run_id!r}", 404)
        return run

    def failed_task_ids(self, dag_id: str, run_id: str) -> list[str]:
        """Sorted ids of the run's tasks in state ``failed`` (``task[i]`` for mapped ones); best effort:
        ``[]`` when the task instances cannot be read."""
        path = f"/dags/{quote(dag_id, safe='')}/dagRuns/{quote(run_id, safe='')}/taskInstances"
        try:
            body = self._object(self._send("GET", path, params={"limit": 1000}), "task_instances")
        except AirflowError:
            return []
        instances = body["task_instances"] if isinstance(body["task_instances"], list) else []
        failed = [ti for ti in instances if isinstance(ti, dict) and "task_id" in ti and ti.get("state") == "failed"]
        labels = {_task_label(ti) for ti in failed}
        return sorted(labels)

    def wait_for_dag_run(
        self,
        dag_id: str,
        run_id: str,
        timeout_s: float | None = None,
        poll_s: float | None = None,
        on_poll: Callable[[DagRun], None] | None = None,
    ) -> DagRun:
        """Poll the run every ``poll_s`` seconds (default ``poll_interval``) until it ends, at most
        ``timeout_s`` seconds (default ``run_timeout``); ``on_poll`` sees every state read.

        Returns the run when it ended ``success``. Raises :class:`AirflowRunFailed` (naming the
        failed tasks) when it ended ``failed``, :class:`AirflowTimeout` when time ran out (the run
        is left alone in Airflow) and :class:`AirflowError` when it cannot be read.
        """
        timeout = self.run_timeout if timeout_s is None else timeout_s
        pause = self.poll_interval if poll_s is None else poll_s
        deadline = time.monotonic() + timeout
        while True:
            run = self.get_dag_run(dag_id, run_id)
            if on_poll is not None:
                on_poll(run)
            if run.state == "success":
                return run
            if run.state == "failed":
                raise AirflowRunFailed(run, self.failed_task_ids(dag_id, run_id))
            left = deadline - time.monotonic()
            if left <= 0:
                raise AirflowTimeout(run, timeout)
            time.sleep(min(pause, left))

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None
