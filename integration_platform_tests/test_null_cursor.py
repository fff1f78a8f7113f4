"""A row whose cursor is NULL, in an incremental SQL stream, on a real PostgreSQL (the ADBC reader) and
SQLite (the SQLAlchemy reader).

A run reads ``cursor >= mark``, which no NULL matches: such a row landed with the first run and one added
after it was passed over for good, in silence (a hostile probe: row 3 never landed). Now every run asks
for those rows too and fails naming the column while one is there, landing nothing; once the row has a
value, the next run lands it and the rest.
"""

import sqlite3
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from integration_platform.sources.sql.sa_arrow import dispose_engine
from integration_platform_tests.services import PG_HOST, PG_PORT, psql, require_port
from sandbox.harness import failure_messages, platform

YAML = """
type: integration_platform.components.SqlSource
attributes:
  source: probe
  url: "URL"
  tables:
    - table: items
      primary_key: [id]
      cursor: changed
"""
ITEMS = dg.AssetKey(["probe", "items"])
TABLE = "CREATE TABLE items (id integer PRIMARY KEY, changed integer, label text)"


@pytest.fixture(params=["postgresql", "sqlite"])
def source(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Callable[[str], None]]]:
    """The SQLAlchemy URL of a scratch database holding an empty ``items`` table, and a function running
    one statement on it."""
    if request.param == "sqlite":
        path = tmp_path / "items.sqlite"

        def run_sqlite(statement: str) -> None:
            with sqlite3.connect(path) as conn:
                conn.execute(statement)

        run_sqlite(TABLE)
        yield f"sqlite:///{path}", run_sqlite
        dispose_engine(f"sqlite:///{path}")
        return
    require_port(PG_HOST, PG_PORT, "PostgreSQL")
    name = f"ip_test_null_cursor_{uuid.uuid4().hex[:8]}"
    psql("postgres", "-c", f"CREATE DATABASE {name}")
    url = f"postgresql+psycopg://postgres@{PG_HOST}:{PG_PORT}/{name}"

    def run_postgres(statement: str) -> None:
        with psycopg.connect(f"postgresql://postgres@{PG_HOST}:{PG_PORT}/{name}", autocommit=True) as conn:
            conn.execute(statement)

    run_postgres(TABLE)
    try:
        yield url, run_postgres
    finally:
        dispose_engine(url)
        psql("postgres", "-c", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_a_null_cursor_fails_every_run_until_it_has_a_value_and_nothing_is_passed_over(
    source: tuple[str, Callable[[str], None]], tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    url, run = source
    run("INSERT INTO items VALUES (1, 10, 'a'), (2, 20, 'b')")
    target = platform(YAML.replace("URL", url), tmp_path, instance)
    assert target.materialize().success
    assert target.query("SELECT id FROM probe.items ORDER BY id") == [(1,), (2,)]

    run("INSERT INTO items VALUES (3, NULL, 'c'), (4, 30, 'd')")
    for _ in range(2):  # every run, not only the first after the row came
        failed = target.materialize(raise_on_error=False)
        assert not failed.success
        message = " ".join(failure_messages(failed))
        assert "1 row(s)" in message and "cursor column 'changed'" in message, message
        assert target.query("SELECT id FROM probe.items ORDER BY id") == [(1,), (2,)]  # row 4 did not land alone

    run("UPDATE items SET changed = 25 WHERE id = 3")
    assert target.materialize().success
    assert target.query("SELECT id, changed FROM probe.items ORDER BY id") == [(1, 10), (2, 20), (3, 25), (4, 30)]


def test_a_null_cursor_fails_the_first_run_too(
    source: tuple[str, Callable[[str], None]], tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """The first run reads the whole table: a NULL there would land once and its row's later changes never."""
    url, run = source
    run("INSERT INTO items VALUES (1, NULL, 'a'), (2, 20, 'b')")
    target = platform(YAML.replace("URL", url), tmp_path, instance)
    failed = target.materialize([ITEMS], raise_on_error=False)
    assert not failed.success
    assert any("cursor column 'changed'" in m for m in failure_messages(failed)), failure_messages(failed)
    assert not failed.get_asset_materialization_events()


def test_a_table_set_to_replace_opts_out_of_the_default_cursor(
    source: tuple[str, Callable[[str], None]], tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """The way out the error names: ``write_disposition: replace`` under ``tables:``. With ``defaults.cursor``
    it was refused at load (a cursor needs append or merge), so a table with a NULL cursor had none."""
    url, run = source
    run("INSERT INTO items VALUES (1, NULL, 'a'), (2, 20, 'b')")
    yaml = f"""
type: integration_platform.components.SqlSource
attributes:
  source: probe
  url: "{url}"
  include: ["items"]
  defaults: {{cursor: changed}}
  tables:
    - table: items
      write_disposition: replace
"""
    target = platform(yaml, tmp_path, instance)
    for _ in range(2):
        assert target.materialize().success
    assert target.query("SELECT id, changed FROM probe.items ORDER BY id") == [(1, None), (2, 20)]
    discovered = yaml.replace("  tables:\n    - table: items\n      write_disposition: replace\n", "")
    defaulted = platform(discovered, tmp_path / "defaulted", instance)
    failed = defaulted.materialize([ITEMS], raise_on_error=False)
    assert not failed.success and any("cursor column 'changed'" in m for m in failure_messages(failed))
