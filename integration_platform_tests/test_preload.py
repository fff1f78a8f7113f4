"""``integration_platform.preload``: what a step process forked from a preloaded server finds
imported. Measured on the demo's 11 chinook streams as one multiprocess run (34 steps): each step
process took 0.5 s from ``STEP_WORKER_STARTING`` to ``STEP_START``, 62% of it importing the
instance's storage modules (alembic among them); with them preloaded, 0.2 s."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from integration_platform.instance import import_instance_storage, write_instance
from integration_platform_tests.services import REPO

pytestmark = pytest.mark.fast


def test_the_storage_modules_of_the_instance_are_named_and_imported(tmp_path: Path) -> None:
    write_instance(tmp_path / "sqlite", {})
    sqlite = import_instance_storage(str(tmp_path / "sqlite"))
    assert {"dagster._core.storage.runs", "integration_platform.event_log.sqlite"} <= set(sqlite)
    write_instance(tmp_path / "pg", {"DAGSTER_PG_URL": "postgresql+psycopg2://nobody@127.0.0.1:1/none"})
    pg = import_instance_storage(str(tmp_path / "pg"))  # nothing connects
    assert {"dagster_postgres", "integration_platform.event_log.postgres"} <= set(pg)
    assert "integration_platform.event_log.sqlite" not in pg
    assert import_instance_storage(None) == import_instance_storage(str(tmp_path / "missing")) == []


def test_importing_it_builds_the_definitions_and_imports_the_storage(tmp_path: Path) -> None:
    """In a fresh interpreter, as the step server imports it: afterwards the definitions are built
    once and found in the cache by the next call, and alembic (which the SQL storage imports) and the
    clients a step imports when it connects (left out of the definitions' own load) are loaded."""
    write_instance(tmp_path, {})
    # As in a fresh clone: importing defs/ writes its __pycache__, which must not change the cache's key.
    shutil.rmtree(REPO / "integration_platform" / "defs" / "__pycache__", ignore_errors=True)
    probe = (
        "import sys\n"
        "import integration_platform.preload\n"
        "from integration_platform.definitions import _built, defs\n"
        "defs()\n"
        "print(_built.cache_info().misses, _built.cache_info().hits, 'alembic' in sys.modules)\n"
        "clients = {'psycopg', 'paramiko', 'requests', 'oauthlib', 'sqlalchemy'}\n"
        "print(*sorted({m.split('.')[0] for m in sys.modules} & clients))\n"
        "print('integration_platform.sources.sql.sa_arrow' in sys.modules)\n"
    )
    env = {"DAGSTER_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    clients = ["oauthlib", "paramiko", "psycopg", "requests", "sqlalchemy"]
    assert done.stdout.split() == ["1", "1", "True", *clients, "True"], done.stdout
