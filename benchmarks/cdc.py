"""Change data capture of 1M mixed changes on a 5M-row PostgreSQL table: CDC, full refresh, pg_recvlogical.

Usage::

    .venv/bin/python benchmarks/cdc.py                    # 5,000,000 rows, 1,000,000 changes, 3 runs
    .venv/bin/python benchmarks/cdc.py --rows 500000      # changes default to a fifth of the rows

Setup (untimed, once per invocation): our own PostgreSQL cluster with ``wal_level=logical``
(``sandbox.postgres_cluster``), the table of ``sql_extract.py`` (``bench_rows``: bigint key,
integer, numeric(12,2), text, timestamptz, date, boolean, NULLs everywhere) with N rows, then the
platform's own :func:`~integration_platform.core.changes.capture` takes the snapshot (a replication
slot, a full landing in a template lake) and :func:`~integration_platform.core.loading.load` loads
it into a template warehouse. The slot is copied to a keeper (``pg_copy_logical_replication_slot``),
then the changes are made: transactions of 500 updates, 250 inserts and 250 deletes spread over
the table (N/5 changes in all by default). Before every run the stream's slot is copied back from
the keeper, and the lake and warehouse from their templates, so every run starts equal.

Methods, each a fresh process, timed until its result is committed:

- ``pg_recvlogical`` (``limit``): PostgreSQL's own client streams the same changes through a copy of
  the slot with the same pgoutput options to ``/dev/null`` (decoding on the server, nothing landed).
- ``platform_cdc`` (``platform``): ``capture`` (stream, decode, type, land, confirm to the slot) and
  ``load`` (merge in log order, deletes applied) into the warehouse copy.
- ``full_refresh`` (``peer``: what a user does without a change log to see deletes): the
  platform's full extract of the whole table and a ``replace`` load.
- ``read_stream`` / ``read_peek``: reading and decoding the changes only, nothing landed, to choose
  the client: psycopg 2's streaming ``LogicalReplicationConnection`` (what the platform does) or
  psycopg 3 polling ``pg_logical_slot_peek_binary_changes`` in batches, each then confirmed with
  ``pg_replication_slot_advance``.

Every run's table is verified untimed (rows and the sum of ``quantity`` equal the source's). Rates
are changes per second for all three (the full refresh reads every row to apply them).
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import Method, child_report, parse_args, python_child, report, rss_high_water_mb, run_interleaved, select
from sql_extract import TABLE_DDL, TABLE_FILL

SCRIPT = Path(__file__).resolve()
DATABASE, TABLE = "ip_bench", "bench_rows"
SOURCE, STREAM = "bench", "bench_rows"
KEEPER, RECEIVER = "bench_keeper", "bench_receiver"
CHANGES_PER_TRANSACTION = 1000

CHANGES_SQL = """
DO $$
DECLARE
    stride bigint := {stride};
BEGIN
    FOR i IN 0..{transactions} - 1 LOOP
        UPDATE bench_rows SET quantity = coalesce(quantity, 0) + 1, label = 'changed ' || id
            WHERE id > i * stride AND id <= i * stride + 500;
        INSERT INTO bench_rows (id, quantity, amount, label, created_at, order_day, active)
            SELECT {rows} + i * 250 + g, g, g / 100.0, 'new ' || g, now(), current_date, g % 2 = 0
            FROM generate_series(1, 250) AS g;
        DELETE FROM bench_rows WHERE id > i * stride + 500 AND id <= i * stride + 750;
        COMMIT;
    END LOOP;
END $$;
"""


def _spec() -> Any:
    from integration_platform.core.streams import ChangeCapture, StreamSpec

    return StreamSpec(SOURCE, STREAM, "merge", primary_key=("id",), changes=ChangeCapture())


def _log(uri: str) -> Any:
    from integration_platform.sources.sql.postgres_cdc import PostgresChangeLog
    from integration_platform.sources.sql.slot_names import cursor_prefix

    return PostgresChangeLog(uri, TABLE, "public", cursor_prefix(SOURCE, STREAM))


def _source_figures(uri: str) -> tuple[int, int]:
    import psycopg

    with psycopg.connect(uri) as conn:
        row = conn.execute(f"SELECT count(*), coalesce(sum(quantity), 0) FROM {TABLE}").fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


# ---------------------------------------------------------------- setup (parent process)


def setup(server: str, workdir: Path, rows: int, changes: int) -> dict[str, Any]:
    """Build the table, the template lake and warehouse, the keeper slot and the changes (module doc)."""
    import duckdb
    import psycopg
    from psycopg import sql

    from integration_platform.core.changes import ChangeLimits, capture
    from integration_platform.core.lake import LocalLake
    from integration_platform.core.landing import list_manifests
    from integration_platform.core.loading import load, pending

    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {DATABASE}")
    uri = f"{server.rsplit('/', 1)[0]}/{DATABASE}"
    started = time.perf_counter()
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute(sql.SQL(TABLE_DDL).format(table=sql.Identifier(TABLE)))
        conn.execute(sql.SQL(TABLE_FILL).format(table=sql.Identifier(TABLE), rows=sql.Literal(rows)))
        conn.execute(f"VACUUM (ANALYZE, FREEZE) {TABLE}")
    print(f"built {TABLE}: {rows:,} rows in {time.perf_counter() - started:.1f} s", flush=True)

    started = time.perf_counter()
    store, spec, log = LocalLake(workdir / "lake_template"), _spec(), _log(uri)
    stats = capture(store, spec, log, log.new_cursor, ChangeLimits(), "setup000")
    with duckdb.connect(str(workdir / "template.duckdb")) as conn:
        load(conn, store, spec, pending(conn, store, spec))
    (snapshot,) = list_manifests(store, spec)
    print(
        f"snapshot: {stats.snapshot_rows:,} rows landed and loaded in {time.perf_counter() - started:.1f} s "
        f"(slot {stats.cursor})",
        flush=True,
    )

    transactions = max(changes // CHANGES_PER_TRANSACTION, 1)
    stride = rows // transactions
    if stride < 750:
        raise SystemExit(f"--changes {changes:,} is too many for --rows {rows:,} (at most {rows * 4 // 3:,})")
    started = time.perf_counter()
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute("SELECT pg_copy_logical_replication_slot(%s, %s)", [stats.cursor, KEEPER])
        conn.execute(CHANGES_SQL.format(stride=stride, transactions=transactions, rows=rows))  # type: ignore[arg-type]
        conn.execute("CHECKPOINT")
        end = conn.execute("SELECT pg_current_wal_flush_lsn()::text").fetchone()
        wal = conn.execute(
            "SELECT pg_wal_lsn_diff(pg_current_wal_flush_lsn(), confirmed_flush_lsn)::bigint "
            "FROM pg_replication_slots WHERE slot_name = %s",
            [KEEPER],
        ).fetchone()
    assert end is not None and wal is not None
    made = transactions * CHANGES_PER_TRANSACTION
    print(
        f"changes: {made:,} in {transactions:,} transactions, {int(wal[0]) / 1e6:.0f} MB of WAL, "
        f"in {time.perf_counter() - started:.1f} s",
        flush=True,
    )
    count, total = _source_figures(uri)
    marker = {
        "uri": uri,
        "slot": stats.cursor,
        "publication": log.publication,
        "end_lsn": str(end[0]),
        "changes": made,
        "transactions": transactions,
        "rows_after": count,
        "quantity_after": total,
        "snapshot_key": snapshot.key,
    }
    (workdir / "setup.json").write_text(json.dumps(marker, indent=1))
    return marker


def copy_slot(uri: str, name: str) -> None:
    """Slot ``name`` as the keeper is: at the position before the changes."""
    import psycopg

    with psycopg.connect(uri, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", [name]).fetchone():
            conn.execute("SELECT pg_drop_replication_slot(%s)", [name])
        conn.execute("SELECT pg_copy_logical_replication_slot(%s, %s)", [KEEPER, name])


# ---------------------------------------------------------------- methods (child processes)


def run_child(name: str, workdir: Path) -> None:
    """Run method ``name`` against the prepared copies in ``workdir``; verify untimed."""
    import duckdb

    marker = json.loads((workdir / "setup.json").read_text())
    uri, db_path = marker["uri"], str(workdir / "run.duckdb")
    from integration_platform.core.changes import ChangeLimits, capture
    from integration_platform.core.extract import extract_and_land
    from integration_platform.core.lake import LocalLake
    from integration_platform.core.loading import load, pending
    from integration_platform.core.streams import StreamSpec
    from integration_platform.sources.sql.postgres_arrow import read_postgres

    def platform_cdc() -> dict[str, Any]:
        store, spec, log = LocalLake(workdir / "lake"), _spec(), _log(uri)
        stats = capture(store, spec, log, log.new_cursor, ChangeLimits(), "bench000")
        if stats.cursor != marker["slot"] or stats.snapshot_rows is not None:
            raise SystemExit(f"platform_cdc took a new snapshot (slot {stats.cursor}): the setup is broken")
        captured_rss = rss_high_water_mb()
        with duckdb.connect(db_path) as conn:
            loaded = load(conn, store, spec, pending(conn, store, spec))
        return {
            "rows": stats.landing.rows_landed,
            "batches": stats.landing.batches,
            "load_s": loaded.seconds,
            "capture_rss_mb": captured_rss,
        }

    def full_refresh() -> dict[str, Any]:
        store = LocalLake(workdir / "lake_full")
        spec = StreamSpec(SOURCE, STREAM, "replace", primary_key=("id",))
        landed = extract_and_land(store, spec, lambda row_filter: read_postgres(uri, TABLE, "public", row_filter))
        with duckdb.connect(db_path) as conn:
            loaded = load(conn, store, spec, [landed.manifest])
        return {"rows": marker["changes"], "rows_read": landed.manifest.rows, "load_s": loaded.seconds}

    def read_peek() -> dict[str, Any]:
        """The other way to read the slot: psycopg 3 peeks batches of whole transactions (50,000 changes),
        each decoded, then confirmed by advancing the slot; nothing landed."""
        import psycopg

        from integration_platform.sources.sql.pgoutput import lsn_text, transactions

        changes = 0
        with psycopg.connect(uri, autocommit=True) as conn:
            while True:
                rows = conn.execute(
                    "SELECT (lsn - '0/0')::bigint, data FROM pg_logical_slot_peek_binary_changes(%s, %s::pg_lsn, "
                    "50000, 'proto_version', '1', 'publication_names', %s)",
                    [marker["slot"], marker["end_lsn"], marker["publication"]],
                    binary=True,
                ).fetchall()
                batch = list(transactions((int(lsn), bytes(data)) for lsn, data in rows))
                changes += sum(len(t.changes) for t in batch)
                if not batch:
                    return {"rows": changes}
                conn.execute(
                    "SELECT pg_replication_slot_advance(%s, %s::pg_lsn)", [marker["slot"], lsn_text(batch[-1].end_lsn)]
                )

    def read_stream() -> dict[str, Any]:
        """How the platform reads the slot: psycopg 2's streaming LogicalReplicationConnection, decoded."""
        import select

        import psycopg2
        import psycopg2.extras

        from integration_platform.sources.sql.pgoutput import transactions

        conn = psycopg2.connect(uri, connection_factory=psycopg2.extras.LogicalReplicationConnection)
        cur = conn.cursor()
        cur.start_replication(
            slot_name=marker["slot"],
            decode=False,
            options={"proto_version": "1", "publication_names": marker["publication"]},
        )

        def messages() -> Any:
            while True:
                message = cur.read_message()
                if message is None:
                    select.select([cur], [], [], 1.0)
                    continue
                yield message.data_start, message.payload

        changes, seen = 0, 0
        for transaction in transactions(messages()):
            changes += len(transaction.changes)
            seen += 1
            if seen == marker["transactions"]:
                break
        conn.close()
        return {"rows": changes}

    work = {
        "platform_cdc": platform_cdc,
        "full_refresh": full_refresh,
        "read_peek": read_peek,
        "read_stream": read_stream,
    }[name]
    child_report(work)
    if name.startswith("read_"):
        return
    with duckdb.connect(db_path, read_only=True) as conn:
        row = conn.execute(f'SELECT count(*), coalesce(sum(quantity), 0) FROM "{SOURCE}"."{STREAM}"').fetchone()
    expected = (marker["rows_after"], marker["quantity_after"])
    if row != expected:
        raise SystemExit(f"{name}: the table has (rows, sum of quantity) {row}, the source {expected}")


# ---------------------------------------------------------------- parent


def main(argv: list[str] | None = None) -> None:
    """Parse arguments; as parent start the cluster, set up and run every method; as child run one."""
    parser = argparse.ArgumentParser(prog="cdc.py", description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=5_000_000, help="rows of the table (default 5M)")
    parser.add_argument("--changes", type=int, default=None, help="changes to capture (default: rows / 5)")
    parser.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    args = parse_args(parser, argv)
    if args.child:
        run_child(args.child, Path(args.workdir))
        return
    from sandbox.postgres_cluster import binaries, logical_postgres

    changes = args.changes or args.rows // 5
    workdir = Path(tempfile.mkdtemp(prefix="ip-bench-cdc-"))
    try:
        with logical_postgres() as server:
            marker = setup(server, workdir, args.rows, changes)
            uri = marker["uri"]

            def fresh_platform() -> None:
                copy_slot(uri, marker["slot"])
                shutil.rmtree(workdir / "lake", ignore_errors=True)
                shutil.copytree(workdir / "lake_template", workdir / "lake")
                shutil.copyfile(workdir / "template.duckdb", workdir / "run.duckdb")

            def fresh_full() -> None:
                shutil.rmtree(workdir / "lake_full", ignore_errors=True)
                (workdir / "run.duckdb").unlink(missing_ok=True)

            recv = [
                str(binaries() / "pg_recvlogical"), "-d", uri, "-S", RECEIVER, "--start", "-E", marker["end_lsn"],
                "-f", "/dev/null", "-o", "proto_version=1", "-o", f"publication_names={marker['publication']}",
                "--no-loop",
            ]  # fmt: skip
            count = marker["changes"]
            child = ("--workdir", str(workdir))
            methods = select(
                [
                    Method("pg_recvlogical", "limit", recv, count, prepare=lambda: copy_slot(uri, RECEIVER)),
                    Method(
                        "platform_cdc",
                        "platform",
                        python_child(SCRIPT, "platform_cdc", *child),
                        count,
                        prepare=fresh_platform,
                    ),
                    Method(
                        "full_refresh",
                        "peer",
                        python_child(SCRIPT, "full_refresh", *child),
                        count,
                        prepare=fresh_full,
                        note=f"reads all {marker['rows_after']:,} rows to apply the changes",
                    ),
                    Method(
                        "read_peek",
                        "peer",
                        python_child(SCRIPT, "read_peek", *child),
                        count,
                        prepare=lambda: copy_slot(uri, marker["slot"]),
                        note="reading and decoding only: psycopg 3 peeks batches and advances (the road not taken)",
                    ),
                    Method(
                        "read_stream",
                        "platform",
                        python_child(SCRIPT, "read_stream", *child),
                        count,
                        prepare=lambda: copy_slot(uri, marker["slot"]),
                        note="reading and decoding only: psycopg 2 streaming, as the platform reads",
                    ),
                ],
                args.methods,
                always=("pg_recvlogical",),
            )
            print(
                f"cdc: {count:,} changes on {args.rows:,} rows; {len(methods)} methods x {args.runs} runs", flush=True
            )
            summaries = run_interleaved(methods, args.runs)
            report(
                "cdc",
                summaries,
                reference="pg_recvlogical",
                bytes_label="n/a (changes per second)",
                extra_columns=[
                    ("batches", "batches", ".0f"),
                    ("load_s", "load_s", ".2f"),
                    ("capture_RSS_MB", "capture_rss_mb", ".0f"),
                ],
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    os.sync()


if __name__ == "__main__":
    sys.exit(main())
