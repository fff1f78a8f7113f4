"""Merge a 1% delta into a 5M-row DuckDB table: the platform's ``load`` against plain SQL.

Usage::

    .venv/bin/python benchmarks/merge.py                  # 5,000,000 rows, 3 runs
    .venv/bin/python benchmarks/merge.py --rows 200000

Setup (once per ``--rows`` and platform version, kept in ``--workdir``, reused while its marker
matches):

1. N rows are generated in DuckDB with ``range()`` (same column mix as ``sql_extract.py``:
   bigint id, integer, decimal(12,2), 20..60-character text, timestamptz, date, boolean,
   NULLs in every non-key column), landed with the platform's ``extract_and_land`` (a
   ``merge`` stream, key ``id``: the first landing is the full ``snapshot``) and loaded with
   ``load()`` into ``base.duckdb``.
2. The delta, 1% of N (50,000 at 5M): half updates of existing ids (every 200th id, spread
   over the whole table), half new ids, landed with ``land(..., full=False)``.

Methods, each in its own fresh process on its own copy of ``base.duckdb`` (copied untimed
before every run, so all start equal); each run ends with the connection closed (DuckDB
checkpoints on close) and the result is verified (row count, updated rows) untimed:

- ``delete_insert`` (``limit``: the least work the result needs): stage the delta's Parquet
  in a temp table, ``DELETE FROM t WHERE id IN (SELECT id FROM delta); INSERT INTO t SELECT *
  FROM delta`` in one transaction.
- ``platform``: ``integration_platform.core.loading.load(conn, store, spec, [manifest])``.
- ``merge_into`` (``peer``, when the installed DuckDB has it): ``MERGE INTO t USING delta ON
  t.id = delta.id WHEN MATCHED THEN UPDATE WHEN NOT MATCHED THEN INSERT``.

Rates are delta rows per second; there is no MB/s.
"""

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import (
    Method,
    Role,
    child_report,
    code_version,
    parse_args,
    python_child,
    report,
    run_interleaved,
    select,
    warm_imports,
)

SCRIPT = Path(__file__).resolve()
SOURCE, STREAM = "bench", "bench_rows"
TARGET = f'"{SOURCE}"."{STREAM}"'
DELTA_WINDOW = "delta-0001"
UPDATE_LABEL = "updated "

# Same columns and NULL pattern as sql_extract.py's PostgreSQL table, from an id column.
ROWS_SQL = """
SELECT id,
       CASE WHEN id % 23 = 0 THEN NULL ELSE ((id * 7919) % 100000)::INTEGER END AS quantity,
       CASE WHEN id % 29 = 0 THEN NULL
            ELSE (((id * 104729) % 10000000) / 100.0)::DECIMAL(12, 2) END AS amount,
       CASE WHEN id % 31 = 0 THEN NULL
            ELSE left({label_prefix} || id || ' ' || md5(id::VARCHAR) || md5((id * 3)::VARCHAR),
                      20 + (id * 37 % 41)::INTEGER)
       END AS label,
       CASE WHEN id % 37 = 0 THEN NULL
            ELSE TIMESTAMPTZ '2020-01-01 00:00:00+00' + to_seconds((id * 7907) % 157680000)
       END AS created_at,
       CASE WHEN id % 41 = 0 THEN NULL ELSE DATE '2020-01-01' + (id % 1826)::INTEGER END AS order_day,
       CASE WHEN id % 43 = 0 THEN NULL ELSE id % 3 = 0 END AS active
FROM ({ids}) AS ids(id)
"""


def _spec() -> Any:
    from integration_platform.core.streams import StreamSpec

    return StreamSpec(source=SOURCE, name=STREAM, write_disposition="merge", primary_key=("id",))


def delta_sizes(rows: int) -> tuple[int, int, int]:
    """(updates, inserts, id step of the updates) for a 1% delta of ``rows``."""
    half = max(rows // 200, 1)
    return half, half, max(rows // half, 1)


# ---------------------------------------------------------------- setup (parent process)


def platform_code() -> str:
    """The ``integration_platform/`` part of :func:`common.code_version`; setup is redone when it changes."""
    return code_version().partition(", ")[2]


def ensure_setup(workdir: Path, rows: int) -> dict[str, Any]:
    """Build ``base.duckdb`` and land the delta in ``workdir`` unless its marker says it is done
    (same ``rows``, same platform code).

    Returns the marker: rows, updates, inserts, the delta manifest key and file paths.
    """
    marker_path = workdir / "setup.json"
    if marker_path.exists():
        marker = json.loads(marker_path.read_text())
        same = marker.get("rows") == rows and marker.get("code") == platform_code()
        if same and (workdir / "base.duckdb").exists():
            return dict(marker)
    import duckdb

    from integration_platform.core.extract import extract_and_land
    from integration_platform.core.landing import land
    from integration_platform.core.loading import load
    from integration_platform.resources.lake import LocalLake

    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    store, spec = LocalLake(workdir / "lake"), _spec()
    updates, inserts, step = delta_sizes(rows)
    gen = duckdb.connect()
    gen.execute("SET TimeZone = 'UTC'")

    started = time.perf_counter()
    base_sql = ROWS_SQL.format(label_prefix="'customer '", ids=f"SELECT range + 1 FROM range({rows})")
    base = extract_and_land(store, spec, lambda _: gen.sql(base_sql).to_arrow_reader(100_000))
    print(
        f"landed base: {base.manifest.rows:,} rows, {base.manifest.bytes / 1e6:.1f} MB "
        f"in {time.perf_counter() - started:.1f} s",
        flush=True,
    )

    started = time.perf_counter()
    with duckdb.connect(str(workdir / "base.duckdb")) as conn:
        result = load(conn, store, spec, [base.manifest])
    print(
        f"loaded base.duckdb: {result.table_rows:,} rows in {time.perf_counter() - started:.1f} s "
        f"({(workdir / 'base.duckdb').stat().st_size / 1e6:.0f} MB)",
        flush=True,
    )

    delta_ids = (
        f"SELECT range * {step} + 7 FROM range({updates}) UNION ALL SELECT range + {rows + 1} FROM range({inserts})"
    )
    delta_sql = ROWS_SQL.format(label_prefix=f"'{UPDATE_LABEL}'", ids=delta_ids).replace(
        "WHEN id % 31 = 0 THEN NULL", "WHEN false THEN NULL"
    )  # every delta row carries its label
    reader = gen.sql(delta_sql).to_arrow_reader(100_000)
    delta = land(store, spec, DELTA_WINDOW, reader, reader.schema, full=False)
    print(
        f"landed delta: {delta.rows:,} rows ({updates:,} updates, {inserts:,} new), {delta.bytes / 1e3:.0f} kB",
        flush=True,
    )
    marker = {
        "rows": rows,
        "code": platform_code(),
        "updates": updates,
        "inserts": inserts,
        "manifest_key": delta.key,
        "files": [str(store.root / f.key) for f in delta.files],
        "delta_bytes": delta.bytes,
    }
    marker_path.write_text(json.dumps(marker, indent=1))
    return marker


# ---------------------------------------------------------------- methods (child processes)


def run_child(name: str, workdir: Path) -> None:
    """Apply the delta to ``workdir/run.duckdb`` with method ``name``; verify untimed."""
    import duckdb

    marker = json.loads((workdir / "setup.json").read_text())
    files = ", ".join("'" + f.replace("'", "''") + "'" for f in marker["files"])
    stage = f"CREATE TEMP TABLE delta AS SELECT *, '{DELTA_WINDOW}' AS _ip_window FROM read_parquet([{files}])"
    db_path = str(workdir / "run.duckdb")

    def platform(conn: duckdb.DuckDBPyConnection) -> None:
        from integration_platform.core.lake import LocalLake
        from integration_platform.core.landing import Manifest
        from integration_platform.core.loading import load

        store = LocalLake(workdir / "lake")
        manifest = Manifest.from_json(store.get_json(marker["manifest_key"]))
        load(conn, store, _spec(), [manifest])

    def delete_insert(conn: duckdb.DuckDBPyConnection) -> None:
        conn.execute("BEGIN TRANSACTION")
        conn.execute(stage)
        conn.execute(f"DELETE FROM {TARGET} WHERE id IN (SELECT id FROM delta)")
        conn.execute(f"INSERT INTO {TARGET} SELECT * FROM delta")
        conn.execute("COMMIT")

    def merge_into(conn: duckdb.DuckDBPyConnection) -> None:
        conn.execute("BEGIN TRANSACTION")
        conn.execute(stage)
        conn.execute(
            f"MERGE INTO {TARGET} AS t USING delta ON t.id = delta.id "
            "WHEN MATCHED THEN UPDATE WHEN NOT MATCHED THEN INSERT"
        )
        conn.execute("COMMIT")

    methods: dict[str, Callable[[duckdb.DuckDBPyConnection], None]] = {
        "platform": platform,
        "delete_insert": delete_insert,
        "merge_into": merge_into,
    }
    apply = methods[name]
    # DuckDB's Python client imports pandas and numpy on a process's first query with parameters
    # (0.33 s here), which only the platform's load has; a long-lived step process paid it before.
    duckdb.connect().execute("SELECT ?", [1]).close()
    if name == "platform":  # import outside the timed part, as the others' imports are (the core's
        # LocalLake: resources.lake would import Dagster, 1-2 s that used to be timed as the merge)
        import integration_platform.core.lake
        import integration_platform.core.landing
        import integration_platform.core.loading  # noqa: F401

    def work() -> dict[str, Any]:
        started = time.perf_counter()
        conn = duckdb.connect(db_path)
        apply(conn)
        committed = time.perf_counter() - started
        conn.close()
        return {"commit_s": committed, "close_s": time.perf_counter() - started - committed}

    child_report(work)
    with duckdb.connect(db_path, read_only=True) as conn:
        row = conn.execute(
            f"SELECT count(*), count(*) FILTER (WHERE label LIKE '{UPDATE_LABEL}%') FROM {TARGET}"
        ).fetchone()
    expected = (marker["rows"] + marker["inserts"], marker["updates"] + marker["inserts"])
    if row != expected:
        raise SystemExit(f"{name}: table has (rows, delta rows) {row}, expected {expected}")


# ---------------------------------------------------------------- parent


def has_merge_into() -> bool:
    """Whether the installed DuckDB understands ``MERGE INTO`` (DuckDB 1.4+)."""
    import duckdb

    with duckdb.connect() as conn:
        conn.execute("CREATE TABLE t AS SELECT 1 AS id")
        try:
            conn.execute("MERGE INTO t USING (SELECT 1 AS id) AS s ON t.id = s.id WHEN MATCHED THEN UPDATE")
        except duckdb.Error:
            return False
    return True


def main(argv: list[str] | None = None) -> None:
    """Parse arguments; as parent set up and run every method; as child run one."""
    parser = argparse.ArgumentParser(prog="merge.py", description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=5_000_000, help="rows of the base table (default 5M)")
    parser.add_argument(
        "--workdir", default=None, help="folder for the lake and DuckDB files (default: <tmp>/ip-bench-merge-<rows>)"
    )
    args = parse_args(parser, argv)
    workdir = Path(args.workdir or Path(tempfile.gettempdir()) / f"ip-bench-merge-{args.rows}")
    if args.child:
        run_child(args.child, workdir)
        return
    if args.runs < 3:
        print("note: fewer than 3 runs; the DESIGN asks for a median of at least 3", file=sys.stderr)
    marker = ensure_setup(workdir, args.rows)
    base, run = workdir / "base.duckdb", workdir / "run.duckdb"

    def fresh_copy() -> None:
        for leftover in (run, run.with_name(run.name + ".wal")):
            leftover.unlink(missing_ok=True)
        shutil.copyfile(base, run)

    delta_rows = marker["updates"] + marker["inserts"]
    names: list[tuple[str, Role]] = [("delete_insert", "limit"), ("platform", "platform")]
    if has_merge_into():
        names.append(("merge_into", "peer"))
    else:
        print("merge_into: the installed DuckDB has no MERGE INTO; skipped")
    methods = select(
        [
            Method(name, role, python_child(SCRIPT, name, "--workdir", str(workdir)), delta_rows, prepare=fresh_copy)
            for name, role in names
        ],
        args.methods,
        always=("delete_insert",),
    )
    print(
        f"merge: {delta_rows:,}-row delta ({marker['updates']:,} updates, {marker['inserts']:,} new) "
        f"into {args.rows:,} rows; {len(methods)} methods x {args.runs} runs",
        flush=True,
    )
    summaries = run_interleaved(
        methods, args.runs, warmup=[warm_imports("duckdb", "integration_platform.core.loading")]
    )
    report(
        "merge",
        summaries,
        reference="delete_insert",
        bytes_label="n/a (no MB/s for a merge)",
        extra_columns=[
            ("commit_s", "commit_s", ".2f"),
            ("close_s", "close_s", ".2f"),
            ("import_RSS_MB", "baseline_rss_mb", ".0f"),
        ],
    )
    for leftover in (run, run.with_name(run.name + ".wal")):
        leftover.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
