"""Change data capture from a real MariaDB binlog (our own server, row-based, full row metadata) on chinook.

The oracle is the platform's own full extract of the same table at the end: after a snapshot and a
drain of mixed changes, the warehouse table equals it value for value and type for type (unsigned,
SET, ENUM, TIME, DECIMAL and DATETIME columns included).
"""

import random
import subprocess
import threading
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pymysql
import pytest

from integration_platform.core.changes import landed_position
from integration_platform.core.landing import list_manifests
from integration_platform.core.streams import StreamSpec
from integration_platform.sources.sql.database import SqlDatabaseResource
from integration_platform.sources.sql.mariadb_cdc import MariaDbChangeLog, statement_tables
from integration_platform_tests.run_stream import killed_materialization
from integration_platform_tests.services import MARIADB_HOST, MARIADB_PORT, missing, require_port, shared_file
from sandbox.harness import Platform, failure_messages, latest_metadata, meanwhile, platform
from sandbox.mariadb_server import binlog_mariadb

YAML = """
type: integration_platform.components.SqlSource
attributes:
  source: chinook
  url_env: CHINOOK_CDC_URL
  include: [InvoiceLine, Track, gadget]
  tables:
    - table: InvoiceLine
      cdc: {history: true, batch_changes: BATCH}
    - table: Track
      cdc: {batch_changes: BATCH}
    - table: gadget
      cdc: {deletes: soft, batch_changes: BATCH}
"""
LINES = dg.AssetKey(["chinook", "invoice_line"])
GADGETS = """
CREATE TABLE gadget (
    id INT UNSIGNED PRIMARY KEY,
    big BIGINT UNSIGNED,
    small SMALLINT UNSIGNED,
    flags SET('red', 'green', 'blue'),
    kind ENUM('tool', 'toy'),
    span TIME,
    made DATETIME(6),
    price DECIMAL(12, 3),
    note TEXT,
    data BLOB
);
INSERT INTO gadget VALUES
    (1, 18446744073709551615, 65535, 'blue,red', 'toy', '-838:59:59', '2024-02-29 23:59:59.123456', 1.5, 'a', x'00ff'),
    (2, 0, 0, '', 'tool', '25:00:00', '1999-12-31 00:00:00', -0.001, NULL, NULL);
"""


def yaml(batch: int = 20_000) -> str:
    return YAML.replace("BATCH", str(batch))


def one_table(table: str) -> str:
    """The YAML capturing ``table`` of chinook alone (``cdc: {}``)."""
    text = YAML.replace("[InvoiceLine, Track, gadget]", f"[{table}]").split("    - table: InvoiceLine")[0]
    return text + f"    - table: {table}\n      cdc: {{}}\n"


def run_sql(port: int, statement: str, database: str | None = None) -> list[tuple[Any, ...]]:
    with pymysql.connect(host="127.0.0.1", port=port, user="root", database=database, autocommit=True) as conn:
        with conn.cursor() as cur:
            cur.execute(statement)
            return list(cur.fetchall())


@pytest.fixture(scope="session")
def binlog_server() -> Iterator[int]:
    """Our own MariaDB with a row-based binlog; yields its port."""
    with binlog_mariadb() as port:
        yield port


@pytest.fixture
def chinook(binlog_server: int, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """chinook (and the gadget table of unusual types) as a fresh database; URL in CHINOOK_CDC_URL."""
    name = f"chinook_{uuid.uuid4().hex[:8]}"
    script = shared_file("chinook", "Chinook_MySql.sql").read_text(encoding="utf-8").replace("`Chinook`", f"`{name}`")
    client = "mariadb"
    loaded = subprocess.run(
        [client, "-h", "127.0.0.1", "-P", str(binlog_server), "-u", "root", "--batch"],
        input=script + f"\nUSE `{name}`;\n" + GADGETS,
        capture_output=True,
        text=True,
        check=False,
    )
    if loaded.returncode != 0:
        missing(f"chinook loaded into our MariaDB: {loaded.stderr[-500:]}")
    url = f"mysql+pymysql://root@127.0.0.1:{binlog_server}/{name}"
    monkeypatch.setenv("CHINOOK_CDC_URL", url)
    try:
        yield name
    finally:
        run_sql(binlog_server, f"DROP DATABASE IF EXISTS `{name}`")


def same_as_a_full_extract(target: Platform, url: str, table: str, stream: str, key: str) -> None:
    """The warehouse table (its existing rows) equals the platform's own full extract, value for value, and
    every change landing has exactly the snapshot's column types."""
    fresh = SqlDatabaseResource(url=url).read(table).read_all().sort_by(key)
    where = " WHERE _ip_deleted_at IS NULL" if stream == "gadget" else ""
    with duckdb.connect(str(target.warehouse_path), read_only=True) as conn:
        landed = conn.execute(f'SELECT * FROM chinook."{stream}"{where} ORDER BY "{key}"').to_arrow_table()
    assert landed.select(fresh.column_names).cast(fresh.schema).to_pylist() == fresh.to_pylist()
    spec = StreamSpec("chinook", stream, "merge", primary_key=(key,))
    manifests = list_manifests(target.store, spec)
    snapshot = dict(next(m for m in manifests if m.full).schema)
    for manifest in manifests:
        types = dict(manifest.schema)
        assert {c: types[c] for c in fresh.column_names if c in types} == {
            c: snapshot[c] for c in fresh.column_names if c in types
        }, manifest.window


def mixed_changes(port: int, database: str, count: int, seed: int) -> int:
    """``count`` random inserts, updates and deletes of InvoiceLine, Track and gadget, each in its own
    transaction; returns the number of InvoiceLine row changes."""
    rng = random.Random(seed)
    changed = 0
    next_line, next_gadget = 100_000, 1000
    with pymysql.connect(host="127.0.0.1", port=port, user="root", database=database, autocommit=True) as conn:
        with conn.cursor() as cur:
            for _ in range(count):
                op = rng.choice(["insert", "update", "update", "delete", "track", "gadget"])
                if op == "insert":
                    next_line += 1
                    changed += cur.execute(
                        "INSERT INTO InvoiceLine VALUES (%s, %s, %s, %s, %s)",
                        (next_line, rng.randint(1, 412), rng.randint(1, 3503), "0.99", rng.randint(1, 5)),
                    )
                elif op == "update":
                    changed += cur.execute(
                        "UPDATE InvoiceLine SET Quantity = Quantity + 1, UnitPrice = UnitPrice + 0.01 "
                        "WHERE InvoiceLineId = %s",
                        (rng.randint(1, 2240),),
                    )
                elif op == "delete":
                    changed += cur.execute("DELETE FROM InvoiceLine WHERE InvoiceLineId = %s", (rng.randint(1, 2240),))
                elif op == "track":
                    cur.execute(
                        "UPDATE Track SET Name = CONCAT(Name, ' *'), Composer = NULL WHERE TrackId = %s",
                        (rng.randint(1, 3503),),
                    )
                else:
                    next_gadget += 1
                    cur.execute(
                        "INSERT INTO gadget VALUES (%s, 18446744073709551000, 40000, 'green,red', 'tool', "
                        "'100:00:01.5', NOW(6), 12345.678, 'it''s', x'01')",
                        (next_gadget,),
                    )
                    cur.execute(
                        "UPDATE gadget SET flags = 'blue', span = '-00:00:01' WHERE id = %s",
                        (rng.choice([1, 2, next_gadget]),),
                    )
                    cur.execute("DELETE FROM gadget WHERE id = %s", (next_gadget - 1,))
    return changed


def test_snapshot_and_1000_mixed_changes_equal_a_full_extract(
    chinook: str, binlog_server: int, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    target = platform(yaml(), tmp_path, instance)
    url = f"mysql+pymysql://root@127.0.0.1:{binlog_server}/{chinook}"
    assert target.materialize().success
    first = latest_metadata(instance, LINES)
    assert first["snapshot_taken"] is True and first["snapshot_rows"] == 2240
    mixed_changes(binlog_server, chinook, 1000, seed=3)
    assert target.materialize().success
    meta = latest_metadata(instance, LINES)
    assert meta["snapshot_taken"] is False and min(meta["inserts"], meta["updates"], meta["deletes"]) > 50
    assert meta["binlog_position"] == meta["binlog_server_position"] or meta["log_retained_bytes"] < 10_000
    same_as_a_full_extract(target, url, "InvoiceLine", "invoice_line", "InvoiceLineId")
    same_as_a_full_extract(target, url, "Track", "track", "TrackId")
    same_as_a_full_extract(target, url, "gadget", "gadget", "id")
    assert target.query("SELECT count(*) FROM chinook.gadget WHERE _ip_deleted_at IS NOT NULL")[0][0] > 0


@pytest.mark.parametrize("killed_at", ["_batch", "confirm"])
def test_a_run_killed_mid_batch_loses_and_repeats_nothing(
    chinook: str, binlog_server: int, tmp_path: Path, instance: dg.DagsterInstance, killed_at: str
) -> None:
    text = yaml(batch=100)
    target = platform(text, tmp_path, instance)
    assert target.materialize([LINES]).success
    changed = mixed_changes(binlog_server, chinook, 500, seed=4)
    killed_materialization(
        tmp_path,
        text,
        "integration_platform.sources.sql.mariadb_cdc",
        "MariaDbChangeLog",
        killed_at,
        "chinook/invoice_line",
    )
    assert target.materialize([LINES, dg.AssetKey(["warehouse", "chinook.invoice_line"])]).success
    url = f"mysql+pymysql://root@127.0.0.1:{binlog_server}/{chinook}"
    same_as_a_full_extract(target, url, "InvoiceLine", "invoice_line", "InvoiceLineId")
    history = target.query("SELECT count(*) FROM chinook.invoice_line__history WHERE _ip_op <> 'snapshot'")[0][0]
    assert history == changed, "a change was lost or landed twice"


def test_five_updates_between_runs_keep_five_versions_and_a_column_added_at_the_source_appears(
    chinook: str, binlog_server: int, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    target = platform(yaml(), tmp_path, instance)
    assert target.materialize([LINES]).success
    for n in range(5):
        run_sql(binlog_server, f"UPDATE InvoiceLine SET Quantity = {10 + n} WHERE InvoiceLineId = 7", chinook)
    run_sql(binlog_server, "ALTER TABLE InvoiceLine ADD COLUMN Discount DECIMAL(5, 2) NULL", chinook)
    run_sql(binlog_server, "UPDATE InvoiceLine SET Discount = 0.25 WHERE InvoiceLineId IN (3, 4)", chinook)
    assert target.materialize([LINES, dg.AssetKey(["warehouse", "chinook.invoice_line"])]).success
    rows = target.query('SELECT "InvoiceLineId", "Discount" FROM chinook.invoice_line WHERE "Discount" IS NOT NULL')
    assert sorted(rows) == [(3, Decimal("0.25")), (4, Decimal("0.25"))]
    versions = target.query(
        'SELECT _ip_op, "Quantity" FROM chinook.invoice_line__history WHERE "InvoiceLineId" = 7 '
        "ORDER BY _ip_log_position, _ip_change_seq"
    )
    assert versions == [("snapshot", 1), *[("update", 10 + n) for n in range(5)]]


def test_a_server_without_a_row_binlog_is_refused_naming_what_it_needs(
    tmp_path: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_port(MARIADB_HOST, MARIADB_PORT, "MariaDB")
    name = f"chinook_{uuid.uuid4().hex[:8]}"
    run_sql(MARIADB_PORT, f"CREATE DATABASE `{name}`")
    try:
        run_sql(MARIADB_PORT, "CREATE TABLE InvoiceLine (InvoiceLineId INT PRIMARY KEY)", name)
        monkeypatch.setenv("CHINOOK_CDC_URL", f"mysql+pymysql://root@{MARIADB_HOST}:{MARIADB_PORT}/{name}")
        only_lines = YAML.split("    - table: Track")[0].replace("[InvoiceLine, Track, gadget]", "[InvoiceLine]")
        target = platform(only_lines.replace("BATCH", "100"), tmp_path, instance)
        result = target.materialize([LINES], raise_on_error=False)
        assert not result.success
        errors = failure_messages(result)
        assert any("binlog_format=ROW" in e and "log_bin" in e for e in errors), errors
    finally:
        run_sql(MARIADB_PORT, f"DROP DATABASE IF EXISTS `{name}`")


def test_the_drain_sensor_reads_the_binlog_from_the_landed_position(
    chinook: str, binlog_server: int, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    target = platform(yaml(), tmp_path, instance)
    requests, skipped = target.tick("chinook_invoice_line_changes")
    assert requests == [] and skipped and "no change log position" in skipped
    assert target.materialize([LINES]).success
    run_sql(binlog_server, "UPDATE Track SET Name = 'x' WHERE TrackId = 1", chinook)  # another table's change
    assert target.tick("chinook_invoice_line_changes")[0] == []
    run_sql(binlog_server, "DELETE FROM InvoiceLine WHERE InvoiceLineId = 5", chinook)
    requests, _ = target.tick("chinook_invoice_line_changes")
    assert len(requests) == 1 and (requests[0].run_key or "").startswith("chinook/invoice_line@binlog.")
    assert target.materialize([LINES]).success and latest_metadata(instance, LINES)["deletes"] == 1
    assert target.tick("chinook_invoice_line_changes")[0] == []


def test_writes_during_the_snapshot_are_neither_missed_nor_doubled(
    chinook: str, binlog_server: int, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """The snapshot lines up with the binlog position it starts from: rows inserted and updated while it is
    read land exactly once, through the snapshot or through the changes after it."""

    def writer(stop: threading.Event) -> int:
        written = 0
        with pymysql.connect(host="127.0.0.1", port=binlog_server, user="root", database=chinook) as conn:
            conn.autocommit(True)
            with conn.cursor() as cur:
                while not stop.is_set():
                    line = 200_000 + written
                    cur.execute("INSERT INTO InvoiceLine VALUES (%s, 1, 1, 0.99, 1)", (line,))
                    cur.execute(
                        "UPDATE InvoiceLine SET Quantity = Quantity + 1 WHERE InvoiceLineId = %s", (line % 2240 + 1,)
                    )
                    written += 1
        return written

    with meanwhile(writer) as written:
        target = platform(yaml(batch=50), tmp_path, instance)
        assert target.materialize([LINES]).success
    assert written() > 20, "the writer did not overlap the snapshot"
    assert target.materialize([LINES, dg.AssetKey(["warehouse", "chinook.invoice_line"])]).success
    url = f"mysql+pymysql://root@127.0.0.1:{binlog_server}/{chinook}"
    same_as_a_full_extract(target, url, "InvoiceLine", "invoice_line", "InvoiceLineId")
    history = target.query(
        'SELECT "InvoiceLineId", _ip_log_position, _ip_change_seq, count(*) FROM chinook.invoice_line__history '
        "GROUP BY ALL HAVING count(*) > 1"
    )
    assert history == [], "a change landed twice"


def test_an_update_of_a_primary_key_moves_the_row(
    chinook: str, binlog_server: int, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """An update changing the key lands as a delete of the old key and the new row: the old key does not
    stay in the warehouse."""
    target = platform(yaml(), tmp_path, instance)
    assert target.materialize([LINES]).success
    run_sql(binlog_server, "UPDATE InvoiceLine SET InvoiceLineId = 900000 WHERE InvoiceLineId = 9", chinook)
    assert target.materialize([LINES, dg.AssetKey(["warehouse", "chinook.invoice_line"])]).success
    assert target.query('SELECT count(*) FROM chinook.invoice_line WHERE "InvoiceLineId" = 9') == [(0,)]
    url = f"mysql+pymysql://root@127.0.0.1:{binlog_server}/{chinook}"
    same_as_a_full_extract(target, url, "InvoiceLine", "invoice_line", "InvoiceLineId")
    moved = target.query(
        "SELECT \"InvoiceLineId\", _ip_op FROM chinook.invoice_line__history WHERE _ip_op <> 'snapshot' ORDER BY 1"
    )
    assert moved == [(9, "delete"), (900000, "update")]


def test_timestamps_from_the_snapshot_and_the_binlog_agree_whatever_the_server_time_zone(
    chinook: str, binlog_server: int, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """The binlog holds TIMESTAMP values in UTC; the snapshot reads them in UTC too, not in the server's
    time zone, so a row's value does not shift between its snapshot and its changes."""
    run_sql(binlog_server, "CREATE TABLE stamp (id INT PRIMARY KEY, at TIMESTAMP(6) NULL)", chinook)
    run_sql(binlog_server, "INSERT INTO stamp VALUES (1, '2024-06-01 12:00:00'), (2, '2024-06-01 12:00:00')", chinook)
    run_sql(binlog_server, "SET GLOBAL time_zone = '+05:00'")  # new sessions read TIMESTAMPs 5 h ahead
    try:
        target = platform(one_table("stamp"), tmp_path, instance)
        key = dg.AssetKey(["chinook", "stamp"])
        assert target.materialize([key]).success
        run_sql(binlog_server, "UPDATE stamp SET at = at WHERE id = 2", chinook)  # logged, value unchanged
        run_sql(binlog_server, "UPDATE stamp SET id = 3 WHERE id = 2", chinook)
        assert target.materialize([key, dg.AssetKey(["warehouse", "chinook.stamp"])]).success
    finally:
        run_sql(binlog_server, "SET GLOBAL time_zone = SYSTEM")
    rows = target.query('SELECT id, "at"::text FROM chinook.stamp ORDER BY id')
    utc = run_sql(binlog_server, "SELECT CONVERT_TZ(at, @@session.time_zone, '+00:00') FROM stamp", chinook)[0][0]
    assert rows == [(1, str(utc)), (3, str(utc))] and str(utc) == "2024-06-01 12:00:00"


def test_a_second_drain_while_one_runs_fails_at_once_and_lands_nothing(
    chinook: str, binlog_server: int, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """The binlog position lives only in the lake: two drains at once would land the same changes twice.
    The second one finds the capture's lock (GET_LOCK on the server) held and fails before reading."""
    target = platform(yaml(), tmp_path, instance)
    assert target.materialize([LINES]).success
    run_sql(binlog_server, "DELETE FROM InvoiceLine WHERE InvoiceLineId = 11", chinook)
    url = f"mysql+pymysql://root@127.0.0.1:{binlog_server}/{chinook}"
    name = MariaDbChangeLog(SqlDatabaseResource(url=url), "InvoiceLine", chinook).lock_name()
    with pymysql.connect(host="127.0.0.1", port=binlog_server, user="root") as holder:
        with holder.cursor() as cur:
            cur.execute("SELECT GET_LOCK(%s, 0)", (name,))
            assert cur.fetchone() == (1,)
        failed = target.materialize([LINES], raise_on_error=False)
    assert not failed.success
    assert any("another run is capturing" in m for m in failure_messages(failed)), failure_messages(failed)
    assert target.materialize([LINES]).success and latest_metadata(instance, LINES)["deletes"] == 1


def test_binary_keys_ending_in_zero_bytes_and_empty_varbinary_values_land_as_the_table_holds_them(
    chinook: str, binlog_server: int, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """The binlog leaves a BINARY(n) value's trailing 0x00 bytes out, and hands an empty VARBINARY over as
    text: the key of a delete or update ending in 0x00 must still match its row, an empty value land."""
    run_sql(binlog_server, "CREATE TABLE bin (id BINARY(4) PRIMARY KEY, vb VARBINARY(10))", chinook)
    run_sql(
        binlog_server, "INSERT INTO bin VALUES (x'01020300', x'ff00'), (x'11000000', x'01'), (x'21', x'02')", chinook
    )
    target = platform(one_table("bin"), tmp_path, instance)
    key = dg.AssetKey(["chinook", "bin"])
    assert target.materialize([key]).success
    run_sql(binlog_server, "DELETE FROM bin WHERE id = x'01020300'", chinook)
    run_sql(binlog_server, "UPDATE bin SET vb = x'03' WHERE id = x'11000000'", chinook)
    run_sql(binlog_server, "UPDATE bin SET vb = '' WHERE id = x'21000000'", chinook)
    run_sql(binlog_server, "INSERT INTO bin VALUES (x'3100', '')", chinook)
    assert target.materialize([key, dg.AssetKey(["warehouse", "chinook.bin"])]).success
    url = f"mysql+pymysql://root@127.0.0.1:{binlog_server}/{chinook}"
    same_as_a_full_extract(target, url, "bin", "bin", "id")
    assert target.query("SELECT hex(id), hex(vb) FROM chinook.bin ORDER BY id") == [
        ("11000000", "03"),
        ("21000000", ""),
        ("31000000", ""),
    ]


def test_bit_values_and_keys_from_the_binlog_land_as_the_snapshot_lands_them(
    chinook: str, binlog_server: int, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """The snapshot lands a BIT as its integer's text (``5``); the binlog reader hands it over as a string of
    bits (``00000101``): an updated value landed as another number's digits, and a delete by a BIT key
    matched no landed row, which stayed in the warehouse."""
    run_sql(binlog_server, "CREATE TABLE bits (id BIT(8) PRIMARY KEY, b BIT(12), flag BIT(1))", chinook)
    run_sql(binlog_server, "INSERT INTO bits VALUES (b'101', b'1', b'0'), (b'11', b'100000000001', b'1')", chinook)
    target = platform(one_table("bits"), tmp_path, instance)
    key = dg.AssetKey(["chinook", "bits"])
    assert target.materialize([key]).success
    run_sql(binlog_server, "DELETE FROM bits WHERE id = b'101'", chinook)
    run_sql(binlog_server, "UPDATE bits SET b = b'111111111111', flag = b'0' WHERE id = b'11'", chinook)
    run_sql(binlog_server, "INSERT INTO bits VALUES (b'10000000', b'0', NULL)", chinook)
    assert target.materialize([key, dg.AssetKey(["warehouse", "chinook.bits"])]).success
    url = f"mysql+pymysql://root@127.0.0.1:{binlog_server}/{chinook}"
    same_as_a_full_extract(target, url, "bits", "bits", "id")
    assert target.query("SELECT id, b, flag FROM chinook.bits ORDER BY id") == [("128", "0", None), ("3", "4095", "0")]


def test_a_table_with_uuid_or_inet_columns_is_refused_at_the_snapshot_and_at_a_drain(
    chinook: str, binlog_server: int, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """The binlog reader hands UUID, INET6 and INET4 values over as raw bytes without their trailing zero bytes,
    which landed as garbled text beside the snapshot's ``123e4567-...``; a UUID key's updates and deletes
    matched no landed row. Such a table is refused naming the columns, before anything lands, also when the
    column is added after the snapshot."""
    run_sql(binlog_server, "CREATE TABLE hosts (id INT PRIMARY KEY, u UUID, i6 INET6)", chinook)
    run_sql(
        binlog_server, "INSERT INTO hosts VALUES (1, '123e4567-e89b-12d3-a456-426614174000', '::ffff:1.2.3.4')", chinook
    )
    target = platform(one_table("hosts"), tmp_path, instance)
    key = dg.AssetKey(["chinook", "hosts"])
    failed = target.materialize([key], raise_on_error=False)
    assert not failed.success
    message = " ".join(failure_messages(failed))
    assert "u (UUID), i6 (INET6)" in message and "without cdc:" in message, message
    assert not failed.get_asset_materialization_events()

    run_sql(binlog_server, "CREATE TABLE later (id INT PRIMARY KEY, v INT)", chinook)
    run_sql(binlog_server, "INSERT INTO later VALUES (1, 1)", chinook)
    later = platform(one_table("later"), tmp_path / "later", instance)
    later_key = dg.AssetKey(["chinook", "later"])
    assert later.materialize([later_key]).success
    run_sql(binlog_server, "ALTER TABLE later ADD COLUMN addr INET4", chinook)
    run_sql(binlog_server, "INSERT INTO later VALUES (2, 2, '10.0.0.1')", chinook)
    failed = later.materialize([later_key], raise_on_error=False)
    assert not failed.success
    assert "addr (INET4)" in " ".join(failure_messages(failed))
    assert not failed.get_asset_materialization_events()


@pytest.mark.parametrize(
    "replaced",
    [
        "TRUNCATE widget",
        "DROP TABLE widget; CREATE TABLE widget (id INT PRIMARY KEY, v INT)",
        "RENAME TABLE widget TO widget_old; CREATE TABLE widget (id INT PRIMARY KEY, v INT)",
    ],
)
def test_a_truncated_or_replaced_table_fails_naming_the_statement_and_a_full_refresh_recovers(
    chinook: str, binlog_server: int, tmp_path: Path, instance: dg.DagsterInstance, replaced: str
) -> None:
    """TRUNCATE, DROP and RENAME change a table's rows without row events: the run fails naming the table,
    the statement and the fix (after landing what committed before it) instead of keeping gone rows."""
    run_sql(binlog_server, "CREATE TABLE widget (id INT PRIMARY KEY, v INT)", chinook)
    run_sql(binlog_server, "INSERT INTO widget VALUES (1, 1), (2, 2)", chinook)
    target = platform(one_table("widget"), tmp_path, instance)
    key, warehouse = dg.AssetKey(["chinook", "widget"]), dg.AssetKey(["warehouse", "chinook.widget"])
    assert target.materialize([key, warehouse]).success
    run_sql(binlog_server, "UPDATE widget SET v = 3 WHERE id = 2", chinook)
    for statement in replaced.split("; "):
        run_sql(binlog_server, statement, chinook)
    run_sql(binlog_server, "INSERT INTO widget VALUES (5, 5)", chinook)
    failed = target.materialize([key, warehouse], raise_on_error=False)
    assert not failed.success
    errors = failure_messages(failed)
    verb = replaced.split()[0]
    assert any(f"{chinook}.widget: {verb}" in e and "full_refresh" in e for e in errors), errors
    config = {"ops": {"chinook__widget": {"config": {"full_refresh": True}}}}
    assert target.materialize([key, warehouse], run_config=config).success
    run_sql(binlog_server, "INSERT INTO widget VALUES (6, 6)", chinook)
    assert target.materialize([key, warehouse]).success
    assert target.query("SELECT id, v FROM chinook.widget ORDER BY id") == [(5, 5), (6, 6)]


@pytest.mark.parametrize(
    ("statement", "touched"),
    [
        ("ALTER TABLE widget COMMENT 'rename me later'", None),
        ("ALTER TABLE widget ALTER v SET DEFAULT 'rename pending'", None),
        ("ALTER TABLE widget ADD COLUMN w INT /* rename it later */", None),
        ("ALTER TABLE widget RENAME COLUMN v TO w", None),
        ("ALTER TABLE widget DROP COLUMN partition_note", None),
        ("DROP TEMPORARY TABLE IF EXISTS widget", None),
        ("INSERT INTO widget VALUES ('TRUNCATE widget')", None),
        ("ALTER TABLE widget RENAME TO widget_old", ("ALTER TABLE", [("db", "widget"), ("db", "widget_old")])),
        ("ALTER TABLE widget TRUNCATE PARTITION p1", ("ALTER TABLE", [("db", "widget")])),
        ("ALTER TABLE widget DROP PARTITION p1, p2", ("ALTER TABLE", [("db", "widget")])),
        (
            "ALTER TABLE gadget EXCHANGE PARTITION p1 WITH TABLE other.widget",
            ("ALTER TABLE", [("db", "gadget"), ("other", "widget")]),
        ),
        ("DROP TABLE `Widget` /* generated by server */", ("DROP TABLE", [("db", "Widget")])),
        ("TRUNCATE TABLE widget", ("TRUNCATE TABLE", [("db", "widget")])),
    ],
)
def test_statements_replacing_rows_without_row_events_are_told_from_others(
    statement: str, touched: tuple[str, list[tuple[str, str]]] | None
) -> None:
    """Words in string literals and comments are not the statement's; a partition truncated, dropped or
    exchanged loses rows without row events like a TRUNCATE; a temporary table hides no captured one."""
    assert statement_tables(statement, "db") == touched


def test_a_statement_naming_the_table_in_another_case_is_refused() -> None:
    """MariaDB with lower_case_table_names takes ``WIDGET`` for ``widget``: the statement is refused."""
    changes = MariaDbChangeLog(SqlDatabaseResource(url="mysql+pymysql://u@localhost/db"), "widget", "db")
    event = type("QueryEvent", (), {"schema": b"DB", "query": "TRUNCATE TABLE WIDGET"})()
    refused = changes._replacing_statement(event, "binlog.000001:4")
    assert refused is not None and "db.widget: TRUNCATE" in str(refused)
    event.query = "TRUNCATE TABLE gadget"
    assert changes._replacing_statement(event, "binlog.000001:4") is None


def test_the_child_of_a_cascading_foreign_key_is_refused_naming_the_constraint(
    chinook: str, binlog_server: int, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """InnoDB does not write a cascaded delete or update to the binlog: capturing the child table would
    lose them, so its first run fails naming the constraint."""
    run_sql(binlog_server, "CREATE TABLE holder (id INT PRIMARY KEY)", chinook)
    run_sql(
        binlog_server,
        "CREATE TABLE part (id INT PRIMARY KEY, holder_id INT, CONSTRAINT part_holder FOREIGN KEY (holder_id) "
        "REFERENCES holder (id) ON DELETE CASCADE)",
        chinook,
    )
    target = platform(one_table("part"), tmp_path, instance)
    failed = target.materialize([dg.AssetKey(["chinook", "part"])], raise_on_error=False)
    assert not failed.success
    errors = failure_messages(failed)
    assert any("child of cascading foreign key(s) part_holder (references holder" in e for e in errors), errors


def test_a_column_renamed_while_changes_wait_fails_naming_both_names(
    chinook: str, binlog_server: int, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """The binlog's rows are matched to today's columns by name: a change logged before a column was
    renamed would land it NULL. The run fails naming the old and the new name and the fix."""
    run_sql(binlog_server, "CREATE TABLE widget (id INT PRIMARY KEY, v INT)", chinook)
    run_sql(binlog_server, "INSERT INTO widget VALUES (1, 1)", chinook)
    target = platform(one_table("widget"), tmp_path, instance)
    key, warehouse = dg.AssetKey(["chinook", "widget"]), dg.AssetKey(["warehouse", "chinook.widget"])
    assert target.materialize([key, warehouse]).success
    run_sql(binlog_server, "UPDATE widget SET v = 2 WHERE id = 1", chinook)
    run_sql(binlog_server, "ALTER TABLE widget RENAME COLUMN v TO w", chinook)
    failed = target.materialize([key, warehouse], raise_on_error=False)
    assert not failed.success
    errors = failure_messages(failed)
    assert any(
        "['v'] the table no longer has, and lacks its column(s) ['w']" in e and "full_refresh" in e for e in errors
    ), errors
    assert target.query("SELECT id, v FROM chinook.widget") == [(1, 1)]


def test_a_run_that_lands_nothing_shows_the_saved_binlog_position(
    chinook: str, binlog_server: int, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """The binlog position lives only in the landings' manifests: a run that read other tables' binlog but
    landed nothing saved no new position, and its metadata says the saved one (where the next run starts)."""
    target = platform(yaml(), tmp_path, instance)
    assert target.materialize([LINES]).success
    run_sql(binlog_server, "UPDATE Track SET Name = 'X' WHERE TrackId = 1", chinook)  # another table's change
    assert target.materialize([LINES]).success
    meta = latest_metadata(instance, LINES)
    saved = landed_position(
        target.store, StreamSpec("chinook", "invoice_line", "merge", primary_key=("InvoiceLineId",))
    )
    assert meta["snapshot_taken"] is False and meta["changes_landed"] == 0
    assert meta["binlog_position"] == meta["log_position"] == saved[1], (meta, saved)


def test_changes_of_a_non_transactional_table_land_without_an_innodb_commit_after_them(
    chinook: str, binlog_server: int, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """An Aria table's changes end in a COMMIT statement, not an Xid event: they land in the run after them."""
    run_sql(binlog_server, "CREATE TABLE plain (id INT PRIMARY KEY, v TEXT) ENGINE=Aria TRANSACTIONAL=0", chinook)
    run_sql(binlog_server, "INSERT INTO plain VALUES (1, 'a')", chinook)
    target = platform(one_table("plain"), tmp_path, instance)
    key = dg.AssetKey(["chinook", "plain"])
    assert target.materialize([key]).success
    run_sql(binlog_server, "INSERT INTO plain VALUES (2, 'b')", chinook)
    run_sql(binlog_server, "DELETE FROM plain WHERE id = 1", chinook)
    assert target.materialize([key, dg.AssetKey(["warehouse", "chinook.plain"])]).success
    assert target.query("SELECT id, v FROM chinook.plain ORDER BY id") == [(2, "b")]
