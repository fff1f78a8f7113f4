"""A real Apache Airflow for the Airflow tests: ``airflow standalone`` on 127.0.0.1, started by the tests.

Airflow lives in virtualenvs of its own (``.ci/install_airflow.sh``): ``.data/airflow-venv``
(Airflow 3, REST API v2 with JWTs from the simple auth manager) and ``.data/airflow2-venv``
(Airflow 2, REST API v1 with basic auth). :func:`airflow_standalone` starts one with
``AIRFLOW_HOME`` in a temporary folder: a SQLite metadata database, the DAGs of
``sandbox/airflow/dags``, no example DAGs, free ports for the API server and the log servers,
a user ``dagster`` with a password made up per start, parallelism 4. It is ready when the API
answers an authenticated request for the example DAG (so the DAG has been parsed), and is stopped
by its process group (``airflow standalone`` runs the scheduler, DAG processor, API server and
triggerer as children). Airflow 3 users and passwords: ``[core] simple_auth_manager_users``
(``user:role``) and the JSON passwords file ``[core] simple_auth_manager_passwords_file``, which
Airflow fills only for users it does not hold (``SimpleAuthManager.init``). Airflow 2: the FAB
user made with ``airflow users create`` before the start.

:func:`airflow_server` is the pytest side: a missing virtualenv fails in CI and skips elsewhere.
"""

import json
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import requests

from integration_platform.orchestration.airflow.resource import AirflowResource
from sandbox.processes import free_port

REPO = Path(__file__).resolve().parent.parent
VENVS = {"v2": REPO / ".data" / "airflow-venv", "v1": REPO / ".data" / "airflow2-venv"}
DAGS = REPO / "sandbox" / "airflow" / "dags"
EXAMPLE_DAG = "integration_platform_example"
READY_SECONDS = 240.0
USERNAME = "dagster"


class AirflowMissing(RuntimeError):
    """The Airflow virtualenv is not installed (run ``.ci/install_airflow.sh``)."""


@dataclass
class AirflowServer:
    """A running Airflow: its API root, API version, credentials, home folder and log file."""

    base_url: str
    api_version: Literal["v2", "v1"]
    username: str
    password: str
    home: Path
    log: Path
    jwt_secret: str = ""  # Airflow 3: the key its JWTs are signed with (HS512)
    started_s: float = 0.0

    def resource(self, **overrides: Any) -> AirflowResource:
        settings: dict[str, Any] = {
            "base_url": self.base_url,
            "api_version": self.api_version,
            "username": self.username,
            "password": self.password,
            "poll_interval": 0.5,
            "run_timeout": 120.0,
        }
        return AirflowResource(**{**settings, **overrides})

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-chars:] if self.log.exists() else ""


def _environment(venv: Path, version: str, home: Path, port: int, password: str, jwt_secret: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW") and k not in ("PYTHONPATH", "VIRTUAL_ENV")
    }
    base = f"http://127.0.0.1:{port}"
    env.update(
        PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",  # standalone starts its parts as `airflow ...`
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(DAGS),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__PARALLELISM="4",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow.db'}",
        AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(free_port()),
        AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT=str(free_port()),
    )
    if version == "v2":
        passwords = home / "passwords.json"
        passwords.write_text(json.dumps({USERNAME: password}), encoding="utf-8")
        passwords.chmod(0o600)
        env.update(
            AIRFLOW__API__HOST="127.0.0.1",
            AIRFLOW__API__PORT=str(port),
            AIRFLOW__API__BASE_URL=base,
            AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"{base}/execution/",
            AIRFLOW__API_AUTH__JWT_SECRET=jwt_secret,
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=f"{USERNAME}:admin",
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=str(passwords),
            AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5",
        )
    else:
        env.update(
            AIRFLOW__WEBSERVER__WEB_SERVER_HOST="127.0.0.1",
            AIRFLOW__WEBSERVER__WEB_SERVER_PORT=str(port),
            AIRFLOW__WEBSERVER__BASE_URL=base,
            AIRFLOW__WEBSERVER__WORKERS="1",
            AIRFLOW__WEBSERVER__SECRET_KEY=secrets.token_urlsafe(32),
            AIRFLOW__API__AUTH_BACKENDS="airflow.api.auth.backend.basic_auth",
            AIRFLOW__SCHEDULER__DAG_DIR_LIST_INTERVAL="5",
        )
    return env


def _prepare_airflow2(venv: Path, env: dict[str, str], password: str, log: Path) -> None:
    """Airflow 2: create the database and the FAB user (standalone would make a random one)."""
    airflow = str(venv / "bin" / "airflow")
    # --password=<value>: a value starting with "-" would otherwise be read as an option
    create_user = [airflow, "users", "create", "--username", USERNAME, f"--password={password}", "--role", "Admin"]
    create_user += ["--firstname", "Dagster", "--lastname", "Tests", "--email", "dagster@example.invalid"]
    with log.open("ab") as out:
        for argv in ([airflow, "db", "migrate"], create_user):
            result = subprocess.run(argv, env=env, stdout=out, stderr=subprocess.STDOUT, check=False, timeout=180)
            if result.returncode != 0:
                tail = log.read_text(encoding="utf-8", errors="replace")[-3000:].replace(password, "***")
                raise RuntimeError(f"`airflow {argv[1]} {argv[2]}` failed with {result.returncode}:\n{tail}")


def stop_group(process: "subprocess.Popen[bytes]", seconds: float = 20.0) -> None:
    """Stop the process group we started (leader ``process``): SIGTERM, then SIGKILL after ``seconds``."""
    pgid = process.pid
    for sig, wait in ((signal.SIGTERM, seconds), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            process.poll()
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)
    process.poll()


def _ready(server: AirflowServer, session: requests.Session) -> bool:
    base = server.base_url
    if server.api_version == "v2":
        login = {"username": server.username, "password": server.password}
        token = session.post(f"{base}/auth/token", json=login, timeout=5)
        if token.status_code != 201:
            return False
        session.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
    else:
        session.auth = (server.username, server.password)
    dag = session.get(f"{base}/api/{server.api_version}/dags/{EXAMPLE_DAG}", timeout=5)
    health = session.get(
        f"{base}/api/{server.api_version}/{'monitor/' if server.api_version == 'v2' else ''}health", timeout=5
    )
    scheduler = health.json().get("scheduler", {}).get("status") if health.ok else None
    return dag.status_code == 200 and scheduler == "healthy"


@contextmanager
def airflow_standalone(version: Literal["v2", "v1"], workdir: Path) -> Iterator[AirflowServer]:
    """Start ``airflow standalone`` of the ``version`` virtualenv (see the module doc) and yield it.

    Raises :class:`AirflowMissing` when that virtualenv is absent, ``RuntimeError`` (with the log's
    tail) when Airflow exits and ``TimeoutError`` when it is not ready within READY_SECONDS.
    """
    venv = VENVS[version]
    if not (venv / "bin" / "airflow").exists():
        raise AirflowMissing(f"{venv}/bin/airflow (run .ci/install_airflow.sh)")
    home = workdir / f"airflow-{version}"
    home.mkdir(parents=True, exist_ok=True)
    port, password, jwt_secret = free_port(), secrets.token_urlsafe(18), secrets.token_urlsafe(32)
    env = _environment(venv, version, home, port, password, jwt_secret)
    log = home / "standalone.log"
    server = AirflowServer(f"http://127.0.0.1:{port}", version, USERNAME, password, home, log, jwt_secret)
    started = time.monotonic()
    if version == "v1":
        _prepare_airflow2(venv, env, password, log)
    with log.open("ab") as out:
        process = subprocess.Popen(
            [str(venv / "bin" / "airflow"), "standalone"],
            env=env,
            cwd=home,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group, stopped as a whole
        )
    try:
        with requests.Session() as session:
            deadline = time.monotonic() + READY_SECONDS
            while not _safe_ready(server, session):
                if process.poll() is not None:
                    raise RuntimeError(f"airflow standalone exited with {process.returncode}:\n{server.log_tail()}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"Airflow not ready after {READY_SECONDS:.0f}s:\n{server.log_tail()}")
                time.sleep(0.5)
        server.started_s = time.monotonic() - started
        yield server
    finally:
        stop_group(process)


def _safe_ready(server: AirflowServer, session: requests.Session) -> bool:
    try:
        return _ready(server, session)
    except (requests.RequestException, ValueError):
        return False


@contextmanager
def airflow_server(version: Literal["v2", "v1"], workdir: Path) -> Iterator[AirflowServer]:
    """:func:`airflow_standalone` for pytest: a missing Airflow fails in CI and skips elsewhere."""
    from integration_platform_tests.services import missing  # imports pytest

    venv = VENVS[version]
    if not (venv / "bin" / "airflow").exists():
        missing(f"Apache Airflow {venv}/bin/airflow (run .ci/install_airflow.sh)")
    with airflow_standalone(version, workdir) as server:
        yield server
