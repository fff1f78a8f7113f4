"""Table discovery for SqlSource ``include`` is cached state: definitions load without the database,
a refresh picks up new tables, a failed refresh keeps the previous state, and a database that is
down at the first load leaves the declared tables loadable (a real SQLite database, no mocks)."""

import logging
import shutil
import sqlite3
import sys
import uuid
from pathlib import Path

import dagster as dg
import pytest

from integration_platform.refresh_state import refresh

pytestmark = pytest.mark.fast


def _project(root: Path, url_env: str) -> str:
    module = f"ip_state_{uuid.uuid4().hex[:8]}"
    defs = root / module / "defs" / "shop"
    defs.mkdir(parents=True)
    (root / module / "__init__.py").write_text("")
    (root / module / "defs" / "__init__.py").write_text("")
    (root / module / "defs" / "platform.py").write_text(
        "import dagster as dg\nfrom integration_platform.definitions import platform_resources\n\n"
        "defs = dg.Definitions(resources=platform_resources())\n"
    )
    (defs / "defs.yaml").write_text(
        "type: integration_platform.components.SqlSource\n"
        f"attributes:\n  source: shop\n  url_env: {url_env}\n  include: ['*']\n"
        "  tables:\n    - table: orders\n      cursor: updated_at\n      primary_key: [id]\n"
        "    - table: refunds\n      cursor: updated_at\n      write_disposition: merge\n"
    )
    (root / "pyproject.toml").write_text(
        f'[tool.dg]\ndirectory_type = "project"\n[tool.dg.project]\nroot_module = "{module}"\n'
    )
    return module


def _keys(root: Path) -> set[str]:
    defs = dg.load_from_defs_folder(path_within_project=root)
    return {k.to_user_string() for k in defs.resolve_all_asset_keys() if k.path[0] != "warehouse"}


def _database(path: Path, tables: list[str]) -> None:
    with sqlite3.connect(path) as conn:
        for table in tables:
            conn.execute(f"CREATE TABLE IF NOT EXISTS {table} (id INTEGER PRIMARY KEY, updated_at TEXT)")


def test_discovery_is_cached_refreshed_on_demand_and_never_blocks_loading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "shop.sqlite"
    _database(db, ["orders", "customers", "refunds"])
    monkeypatch.setenv("SHOP_DB_URL", f"sqlite:///{db}")
    project = tmp_path / "project"
    project.mkdir()
    _project(project, "SHOP_DB_URL")
    monkeypatch.syspath_prepend(str(project))

    assert _keys(project) == {"shop/orders", "shop/customers", "shop/refunds"}  # first load: discovered once, cached
    _database(db, ["invoices"])
    hidden = tmp_path / "away.sqlite"
    shutil.move(db, hidden)  # the database is gone: loading still works, from the cache
    assert _keys(project) == {"shop/orders", "shop/customers", "shop/refunds"}

    shutil.move(hidden, db)
    assert set(refresh(project).values()) == {None}
    assert _keys(project) == {"shop/orders", "shop/customers", "shop/refunds", "shop/invoices"}

    shutil.move(db, hidden)
    db.mkdir()  # not a database file: the refresh fails and keeps the previous state
    failures = [e for e in refresh(project).values() if e]
    assert failures and "OperationalError" in failures[0]
    assert _keys(project) == {"shop/orders", "shop/customers", "shop/refunds", "shop/invoices"}


def test_a_database_down_at_the_first_load_leaves_the_declared_tables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("DOWN_DB_URL", "postgresql+psycopg://postgres:s3cret@127.0.0.1:1/nowhere")
    project = tmp_path / "project"
    project.mkdir()
    _project(project, "DOWN_DB_URL")
    monkeypatch.syspath_prepend(str(project))
    with caplog.at_level(logging.WARNING):
        assert _keys(project) == {"shop/orders"}
    assert "could not be discovered" in caplog.text and "s3cret" not in caplog.text
    # A table whose key (so its write disposition) only the database can tell is left out, and said so;
    # the fully declared one loads.
    assert "table refunds is left out until its database can be read" in caplog.text
    assert sys.modules  # the load above ran in this process, without a server


def test_a_declared_column_the_cached_table_lacks_fails_the_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "shop.sqlite"
    _database(db, ["orders"])
    monkeypatch.setenv("TYPO_DB_URL", f"sqlite:///{db}")
    project = tmp_path / "project"
    project.mkdir()
    module = _project(project, "TYPO_DB_URL")
    yaml_path = project / module / "defs" / "shop" / "defs.yaml"
    yaml_path.write_text(yaml_path.read_text().replace("cursor: updated_at", "cursor: updatedat"))
    monkeypatch.syspath_prepend(str(project))
    with pytest.raises(Exception) as failure:
        _keys(project)
    text = str(failure.value) + "".join(str(c) for c in [failure.value.__cause__, failure.value.__context__])
    assert "table 'orders': cursor 'updatedat' is not a column of the table (id, updated_at)" in text


def test_changing_include_or_exclude_discovers_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "shop.sqlite"
    _database(db, ["orders", "customers", "refunds"])
    monkeypatch.setenv("SEL_DB_URL", f"sqlite:///{db}")
    project = tmp_path / "project"
    project.mkdir()
    module = _project(project, "SEL_DB_URL")
    monkeypatch.syspath_prepend(str(project))
    assert _keys(project) == {"shop/orders", "shop/customers", "shop/refunds"}
    yaml_path = project / module / "defs" / "shop" / "defs.yaml"
    yaml_path.write_text(yaml_path.read_text().replace("include: ['*']", "include: ['*']\n  exclude: [customers]"))
    assert _keys(project) == {"shop/orders", "shop/refunds"}  # not the table list cached for the old selection


def test_a_stream_named_as_another_streams_change_history_is_refused() -> None:
    """``cdc: {history: true}`` keeps every change of ``orders`` in the DuckDB table ``orders__history``;
    a table of that name (here discovered by ``include``) was a stream loading into the same table, each
    stream's loads mixing rows into, or replacing, the other's."""
    from integration_platform.sources.sql.component import SqlSource
    from integration_platform.sources.sql.database import TableInfo
    from sandbox.harness import load_source

    source = load_source(
        "type: integration_platform.components.SqlSource\nattributes:\n  source: shop\n  url_env: SHOP_URL\n"
        "  include: ['*']\n  tables:\n    - table: orders\n      primary_key: [id]\n      cdc: {history: true}\n"
    )
    assert isinstance(source, SqlSource)
    found = {name: TableInfo(name=name, columns=("id",), primary_key=("id",)) for name in ("orders", "orders__history")}
    with pytest.raises(ValueError, match=r"stream name\(s\) \['orders__history'\] are the DuckDB tables of other"):
        source.streams(found)
