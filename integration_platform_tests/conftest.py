"""Fixtures: real databases loaded with real data (pagila, chinook), a Dagster instance per test."""

import tempfile
import uuid
from collections.abc import Generator, Iterator
from contextlib import contextmanager

import dagster as dg
import pytest

from integration_platform_tests.oidc_provider import oidc_provider
from integration_platform_tests.services import (
    MARIADB_HOST,
    MARIADB_PORT,
    PG_HOST,
    PG_PORT,
    mariadb,
    missing,
    psql,
    require_port,
    shared_file,
)
from sandbox import ServerMissing
from sandbox.harness import platform_instance


@contextmanager
def _server_missing_is_missing() -> Iterator[None]:
    """A sandbox server whose program is not installed fails the test in CI and skips it elsewhere."""
    try:
        yield
    except ServerMissing as exc:
        missing(str(exc))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    """Servers started by fixtures: see :func:`_server_missing_is_missing`."""
    with _server_missing_is_missing():
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """Servers a test starts itself: see :func:`_server_missing_is_missing`."""
    with _server_missing_is_missing():
        return (yield)


@pytest.fixture(scope="session")
def pagila_template(worker_id: str) -> str:
    """pagila (schema + data) loaded once per session (per pytest-xdist worker) into a template database."""
    require_port(PG_HOST, PG_PORT, "PostgreSQL")
    template = f"ip_test_pagila_template_{worker_id}"
    schema, data = shared_file("pagila", "pagila-schema.sql"), shared_file("pagila", "pagila-data.sql")
    psql("postgres", "-c", f"DROP DATABASE IF EXISTS {template}")
    psql("postgres", "-c", f"CREATE DATABASE {template}")
    psql(template, "-f", str(schema))
    psql(template, "-f", str(data))
    return template


@pytest.fixture
def pagila_db(pagila_template: str) -> Iterator[str]:
    """A fresh copy of pagila for one test; yields the database name."""
    name = f"ip_test_pagila_{uuid.uuid4().hex[:8]}"
    psql("postgres", "-c", f"CREATE DATABASE {name} TEMPLATE {pagila_template}")
    try:
        yield name
    finally:
        psql("postgres", "-c", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def pagila_url(pagila_db: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """SQLAlchemy URL of the test's pagila copy, also exported as PAGILA_URL."""
    url = f"postgresql+psycopg://postgres@{PG_HOST}:{PG_PORT}/{pagila_db}"
    monkeypatch.setenv("PAGILA_URL", url)
    return url


@pytest.fixture
def chinook_mariadb(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """chinook loaded into MariaDB as a fresh database; yields its name (URL in CHINOOK_MARIADB_URL)."""
    require_port(MARIADB_HOST, MARIADB_PORT, "MariaDB")
    name = f"ip_test_chinook_{uuid.uuid4().hex[:8]}"
    script = shared_file("chinook", "Chinook_MySql.sql").read_text(encoding="utf-8")
    mariadb(script.replace("`Chinook`", f"`{name}`"))
    monkeypatch.setenv("CHINOOK_MARIADB_URL", f"mysql+pymysql://root@{MARIADB_HOST}:{MARIADB_PORT}/{name}")
    try:
        yield name
    finally:
        mariadb(f"DROP DATABASE IF EXISTS `{name}`")


@pytest.fixture(scope="session")
def provider() -> Iterator[str]:
    """A real OpenID Connect provider on loopback (see :mod:`integration_platform_tests.oidc_provider`)."""
    with oidc_provider() as issuer:
        yield issuer


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    """A persistent (temporary-folder) Dagster instance with the platform's storage, so cursors survive
    between runs; the folder is removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="ip-dagster-home-") as home, platform_instance(home) as test_instance:
        yield test_instance
