"""Full extract of a PostgreSQL table to Parquet: the platform against COPY and its peers.

Usage::

    .venv/bin/python benchmarks/sql_extract.py                       # 5M rows, 3 runs
    .venv/bin/python benchmarks/sql_extract.py --rows 200000 --runs 3
    .venv/bin/python benchmarks/sql_extract.py --double              # + the 2N-row table
    .venv/bin/python benchmarks/sql_extract.py --peer-rows 500000    # slow peers on fewer rows
    .venv/bin/python benchmarks/sql_extract.py --variants            # + platform diagnostics

The database ``ip_bench`` on 127.0.0.1:5432 (user ``postgres``, trust auth; override with
``--pg``) and its tables are created if missing or of the wrong size, server-side with
``generate_series`` (deterministic values, so runs are comparable): ``bench_rows`` (N rows),
``bench_rows_2x`` (2N, with ``--double``) and ``bench_rows_small`` (with ``--peer-rows``).

Methods, each in its own fresh process (see ``common.py``):

- ``limit``: ``psql -c "COPY bench_rows TO STDOUT (FORMAT binary)" > /dev/null``, one stream.
- ``platform``: ``SqlDatabaseResource.read`` (ADBC binary COPY, two page-range streams in one
  snapshot from 256 MB of heap) -> ``extract_and_land`` into
  a ``LocalLake`` (zstd Parquet, writer on its own thread).
- ``pandas_read_sql``: ``pandas.read_sql`` on a SQLAlchemy engine + ``DataFrame.to_parquet``.
- ``dlt_sqlalchemy`` / ``dlt_pyarrow`` / ``dlt_connectorx``: dlt's ``sql_table`` with that
  backend (other arguments default) into the ``filesystem`` destination as Parquet;
  pipelines dir and data dir in a temporary folder.

MB/s is the source table's ``pg_total_relation_size`` (heap + TOAST + indexes) divided by
seconds, the same basis for every method; rows/s is the comparable figure across tables.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from common import (
    Method,
    Role,
    child_report,
    parse_args,
    python_child,
    report,
    run_interleaved,
    select,
    warm_imports,
)

SCRIPT = Path(__file__).resolve()
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432"
DATABASE = "ip_bench"
TABLE = "bench_rows"
TABLE_2X = "bench_rows_2x"
TABLE_SMALL = "bench_rows_small"
SLOW_PEERS = ("dlt_sqlalchemy",)

TABLE_DDL = """
CREATE TABLE {table} (
    id          bigint PRIMARY KEY,
    quantity    integer,
    amount      numeric(12, 2),
    label       text,
    created_at  timestamptz,
    order_day   date,
    active      boolean
)
"""

# Deterministic pseudo-random values from the row number; every non-key column has NULLs
# (1/23 .. 1/43 of the rows); labels are 20..60 characters.
TABLE_FILL = """
INSERT INTO {table}
SELECT g,
       CASE WHEN g % 23 = 0 THEN NULL ELSE ((g * 7919) % 100000)::integer END,
       CASE WHEN g % 29 = 0 THEN NULL ELSE (((g * 104729) % 10000000) / 100.0)::numeric(12, 2) END,
       CASE WHEN g % 31 = 0 THEN NULL
            ELSE left('customer ' || g || ' ' || md5(g::text) || md5((g * 3)::text), 20 + (g * 37 % 41)::int)
       END,
       CASE WHEN g % 37 = 0 THEN NULL
            ELSE timestamptz '2020-01-01 00:00:00+00' + ((g * 7907) % 157680000) * interval '1 second'
       END,
       CASE WHEN g % 41 = 0 THEN NULL ELSE date '2020-01-01' + (g % 1826)::int END,
       CASE WHEN g % 43 = 0 THEN NULL ELSE g % 3 = 0 END
FROM generate_series(1, {rows}::bigint) AS g
"""


# ---------------------------------------------------------------- setup (parent process)


def ensure_database(pg: str) -> None:
    """Create database ``ip_bench`` when it does not exist."""
    import psycopg

    with psycopg.connect(f"{pg}/postgres", autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE]).fetchone() is None:
            conn.execute(f'CREATE DATABASE "{DATABASE}"')


def ensure_table(pg: str, table: str, rows: int) -> int:
    """Create ``table`` with exactly ``rows`` rows unless it already has them; return its total bytes.

    Built in one transaction, then ``VACUUM (ANALYZE, FREEZE)`` so reads never set hint bits,
    then ``CHECKPOINT`` and ``sync`` so no write-back of the new table overlaps the timed runs.
    """
    import psycopg
    from psycopg import sql

    with psycopg.connect(f"{pg}/{DATABASE}", autocommit=True) as conn:
        exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", [table]).fetchone()
        count = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
        count_row = conn.execute(count).fetchone() if exists and exists[0] else None
        if count_row is None or count_row[0] != rows:
            print(f"building {table} with {rows:,} rows ...", flush=True)
            with conn.transaction():
                conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))
                conn.execute(sql.SQL(TABLE_DDL).format(table=sql.Identifier(table)))
                conn.execute(sql.SQL(TABLE_FILL).format(table=sql.Identifier(table), rows=sql.Literal(rows)))
            conn.execute(sql.SQL("VACUUM (ANALYZE, FREEZE) {}").format(sql.Identifier(table)))
            conn.execute("CHECKPOINT")  # write the new pages out now, not during the first runs
            os.sync()
        size = conn.execute("SELECT pg_total_relation_size(%s)", [table]).fetchone()
    assert size is not None
    return int(size[0])


# ---------------------------------------------------------------- methods (child processes)


def _parquet_totals(folder: Path) -> dict[str, int]:
    """Rows (from Parquet footers) and bytes of every ``*.parquet`` file under ``folder``."""
    import pyarrow.parquet as pq

    files = sorted(folder.rglob("*.parquet"))
    return {
        "rows": sum(pq.ParquetFile(f).metadata.num_rows for f in files),
        "out_bytes": sum(f.stat().st_size for f in files),
        "files": len(files),
    }


def run_platform(pg: str, table: str, tmp: Path, variant: str) -> None:
    """The platform's path: ``SqlDatabaseResource.read`` -> ``extract_and_land`` into a LocalLake.

    ``variant`` (diagnostics, ``--variants``): ``""`` the real path; ``read_only`` drains the
    reader without writing; ``rows<N>`` lands with row groups of ``N`` rows (``row_group_rows=N``
    and, where ``land()`` has it, no byte bound); ``rgmb<M>`` lands with ``row_group_bytes=M``
    MiB; ``batch<M>mb`` reads with ``read_postgres(batch_bytes=M MiB)``; ``parallel<N>`` reads with
    ``parallel_readers=N`` (the real path has 2: two page-range streams in one snapshot).
    """
    from integration_platform.core.extract import extract_and_land
    from integration_platform.core.landing import land
    from integration_platform.core.streams import StreamSpec
    from integration_platform.resources.lake import LocalLake
    from integration_platform.sources.sql.database import SqlDatabaseResource
    from integration_platform.sources.sql.postgres_arrow import read_postgres

    url = pg.replace("postgresql://", "postgresql+psycopg://", 1) + f"/{DATABASE}"

    def work() -> dict[str, Any]:
        readers = int(variant.removeprefix("parallel")) if variant.startswith("parallel") else 2
        db = SqlDatabaseResource(url=url, parallel_readers=readers)
        store = LocalLake(tmp)
        spec = StreamSpec(source="bench", name=table, write_disposition="replace", primary_key=("id",))
        if variant == "" or variant.startswith("parallel"):
            extraction = extract_and_land(store, spec, lambda rf: db.read(table, None, rf))
            return {
                "rows": extraction.manifest.rows,
                "out_bytes": extraction.manifest.bytes,
                "files": len(extraction.manifest.files),
            }
        if variant == "read_only":
            rows = sum(batch.num_rows for batch in db.read(table))
            return {"rows": rows, "out_bytes": None}
        if variant.startswith(("rows", "rgmb")):
            reader = db.read(table)
            if variant.startswith("rows"):  # a row bound only: the byte bound set out of reach
                rows_bound, bytes_bound = int(variant[4:]), 1 << 40
            else:
                rows_bound, bytes_bound = 1 << 40, int(variant[4:]) << 20
            manifest = land(
                store,
                spec,
                "snapshot",
                reader,
                reader.schema,
                full=True,
                row_group_rows=rows_bound,
                row_group_bytes=bytes_bound,
            )
            return {"rows": manifest.rows, "out_bytes": manifest.bytes}
        if variant.startswith("batch") and variant.endswith("mb"):
            reader = read_postgres(f"{pg}/{DATABASE}", table, None, None, batch_bytes=int(variant[5:-2]) << 20)
            manifest = land(store, spec, "snapshot", reader, reader.schema, full=True)
            return {"rows": manifest.rows, "out_bytes": manifest.bytes}
        raise SystemExit(f"unknown platform variant {variant!r}")

    child_report(work)


def run_pandas(pg: str, table: str, tmp: Path) -> None:
    """``pandas.read_sql`` (SQLAlchemy engine, psycopg 3) then ``DataFrame.to_parquet`` (defaults)."""
    import pandas as pd
    import sqlalchemy as sa

    url = pg.replace("postgresql://", "postgresql+psycopg://", 1) + f"/{DATABASE}"

    def work() -> dict[str, Any]:
        engine = sa.create_engine(url)
        frame = pd.read_sql(f'SELECT * FROM "{table}"', engine)
        frame.to_parquet(tmp / f"{table}.parquet")
        engine.dispose()
        return _parquet_totals(tmp)

    child_report(work)


def run_dlt(pg: str, table: str, tmp: Path, backend: str) -> None:
    """dlt ``sql_table(backend=...)`` -> ``filesystem`` destination, ``loader_file_format="parquet"``."""
    import dlt
    from dlt.sources.sql_database import sql_table

    url = pg.replace("postgresql://", "postgresql+psycopg://", 1) + f"/{DATABASE}"
    lake = tmp / "lake"

    def work() -> dict[str, Any]:
        pipeline = dlt.pipeline(
            pipeline_name=f"bench_{backend}",
            pipelines_dir=str(tmp / "pipelines"),
            destination=dlt.destinations.filesystem(bucket_url=str(lake)),
            dataset_name="bench",
        )
        pipeline.run(
            sql_table(credentials=url, table=table, backend=backend),  # type: ignore[arg-type]
            loader_file_format="parquet",
        )
        return _parquet_totals(lake / "bench" / table)

    child_report(work)


def child(args: argparse.Namespace) -> None:
    """Entry point of one child process: run ``args.child`` on ``args.table`` in a temp folder."""
    tmp = Path(tempfile.mkdtemp(prefix="ip-bench-", dir=args.tmp))
    try:
        name = args.child.removesuffix("_2x").removesuffix("_small")
        if name == "platform" or name.startswith("platform_"):
            run_platform(args.pg, args.table, tmp, name.removeprefix("platform").lstrip("_"))
        elif name == "pandas_read_sql":
            run_pandas(args.pg, args.table, tmp)
        elif name.startswith("dlt_"):
            run_dlt(args.pg, args.table, tmp, name.removeprefix("dlt_"))
        else:
            raise SystemExit(f"unknown method {args.child!r}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- parent


def build_methods(args: argparse.Namespace, sizes: dict[str, tuple[int, int]]) -> list[Method]:
    """Every method of this run; ``sizes`` maps table -> (rows, pg_total_relation_size)."""
    dlt_env = {"RUNTIME__DLTHUB_TELEMETRY": "false"}
    common = ["--pg", args.pg, "--tmp", args.tmp]

    def limit(name: str, table: str) -> Method:
        rows, size = sizes[table]
        user_host = args.pg.removeprefix("postgresql://")
        user, _, hostport = user_host.rpartition("@")
        host, _, port = hostport.partition(":")
        argv = [
            "psql",
            "-X",
            "-q",
            "-h",
            host,
            "-p",
            port or "5432",
            "-U",
            user or "postgres",
            "-d",
            DATABASE,
            "-c",
            f'COPY "{table}" TO STDOUT (FORMAT binary)',
        ]
        return Method(name, "limit", argv, rows, size, discard_stdout=True)

    def py(name: str, role: Role, table: str, note: str = "", env: dict[str, str] | None = None) -> Method:
        rows, size = sizes[table]
        return Method(
            name, role, python_child(SCRIPT, name, "--table", table, *common), rows, size, note=note, env=env or {}
        )

    methods = [limit("limit", TABLE), py("platform", "platform", TABLE), py("pandas_read_sql", "peer", TABLE)]
    for backend in ("sqlalchemy", "pyarrow", "connectorx"):
        name = f"dlt_{backend}"
        if args.peer_rows and name in args.slow_peers.split(","):
            methods.append(
                py(
                    f"{name}_small",
                    "peer",
                    TABLE_SMALL,
                    env=dlt_env,
                    note=f"measured on {TABLE_SMALL} ({sizes[TABLE_SMALL][0]:,} rows, not "
                    f"{args.rows:,}): compare rows/s and rate_x, not seconds",
                )
            )
        else:
            methods.append(py(name, "peer", TABLE, env=dlt_env))
    if args.double:
        methods += [
            limit("limit_2x", TABLE_2X),
            py("platform_2x", "platform", TABLE_2X, note=f"{TABLE_2X}: twice the rows; peak RSS should stay flat"),
            py("platform_parallel1_2x", "platform", TABLE_2X, note=f"{TABLE_2X}: parallel_readers=1 (one stream)"),
        ]
    if args.variants:
        methods += [
            py("platform_read_only", "platform", TABLE, note="reader drained, nothing written"),
            py("platform_parallel1", "platform", TABLE, note="parallel_readers=1: one COPY stream"),
            py("platform_parallel3", "platform", TABLE, note="parallel_readers=3: three page-range streams"),
            py("platform_rows250000", "platform", TABLE, note="row groups of 250,000 rows, no byte bound"),
            py("platform_rows1000000", "platform", TABLE, note="row groups of 1,000,000 rows, no byte bound"),
            py("platform_rgmb16", "platform", TABLE, note="land(row_group_bytes=16 MiB)"),
            py("platform_rgmb128", "platform", TABLE, note="land(row_group_bytes=128 MiB)"),
            py("platform_batch64mb", "platform", TABLE, note="read_postgres(batch_bytes=64 MiB)"),
        ]
    return methods


def main(argv: list[str] | None = None) -> None:
    """Parse arguments; as parent build the tables and run every method; as child run one."""
    parser = argparse.ArgumentParser(prog="sql_extract.py", description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=5_000_000, help="rows of bench_rows (default 5,000,000)")
    parser.add_argument("--double", action="store_true", help="also extract bench_rows_2x (2N rows)")
    parser.add_argument(
        "--peer-rows",
        type=int,
        default=0,
        help="run the slow peers (--slow-peers) on bench_rows_small of this many rows",
    )
    parser.add_argument("--slow-peers", default=",".join(SLOW_PEERS), help="methods --peer-rows applies to")
    parser.add_argument("--variants", action="store_true", help="also run platform diagnostic variants")
    parser.add_argument("--pg", default=DEFAULT_PG, help="server URL without database (trust auth)")
    parser.add_argument("--tmp", default=tempfile.gettempdir(), help="folder for the output files")
    parser.add_argument("--table", default=TABLE, help=argparse.SUPPRESS)
    args = parse_args(parser, argv)
    if args.child:
        child(args)
        return
    if args.runs < 3:
        print("note: fewer than 3 runs; the DESIGN asks for a median of at least 3", file=sys.stderr)
    if shutil.which("psql") is None:
        raise SystemExit("psql is required for the COPY limit")
    ensure_database(args.pg)
    sizes = {TABLE: (args.rows, ensure_table(args.pg, TABLE, args.rows))}
    if args.double:
        sizes[TABLE_2X] = (2 * args.rows, ensure_table(args.pg, TABLE_2X, 2 * args.rows))
    if args.peer_rows:
        sizes[TABLE_SMALL] = (args.peer_rows, ensure_table(args.pg, TABLE_SMALL, args.peer_rows))
    methods = select(build_methods(args, sizes), args.methods, always=("limit",))
    subprocess.run(["psql", "--version"], check=False)
    print(
        f"sql_extract: {len(methods)} methods x {args.runs} runs, bench_rows = {args.rows:,} rows, "
        f"{sizes[TABLE][1] / 1e6:.0f} MB total relation size",
        flush=True,
    )
    warmup = [
        *(m for m in methods if m.role == "limit"),
        warm_imports("integration_platform.core.extract", "pandas", "dlt", "connectorx"),
    ]
    summaries = run_interleaved(methods, args.runs, warmup=warmup)
    report(
        "sql_extract",
        summaries,
        reference="limit",
        bytes_label="pg_total_relation_size of the source table / seconds",
        extra_columns=[("out_MB", "out_mb", ".1f"), ("import_RSS_MB", "baseline_rss_mb", ".0f")],
    )


if __name__ == "__main__":
    main()
