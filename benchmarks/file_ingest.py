"""File-drop ingest over SFTP: the 1,781 daily CSVs landed end to end, and the drop sensor's tick time.

Usage::

    .venv/bin/python benchmarks/file_ingest.py                    # all 1,781 days, 3 runs
    .venv/bin/python benchmarks/file_ingest.py --days 200         # the first 200 days only (quick check)
    .venv/bin/python benchmarks/file_ingest.py --sensor-only      # only the sensor's tick times (~30 s)

Cost: one ``platform`` run of all 1,781 days takes 70-90 s (most of it Dagster storing events per
partition and asset on SQLite), ``platform_postgres`` 30-35 s, so the default invocation takes about
8 minutes; ``--days 200`` about 1.5 minutes.

Data: the Italian Civil Protection's regional daily drops (``/work/shared/data/dpc-covid19-ita-regioni-daily/
dati-regioni``: 1,781 CSVs, 9.3 MB, one per day 2020-02-24..2025-01-08, 21 rows each, 24 columns until
2021-01-14 and 30 from 2021-01-15), copied untimed into a temporary folder under ``--tmp`` (default
``/dev/shm`` when it has room, as ``sftp_download.py``) and served there by a real OpenSSH ``sshd`` on
127.0.0.1 (``sandbox.sshd.sshd``: ed25519 host key pinned in a known_hosts
file, one ed25519 client key), started once and stopped by pid. ``--days N`` measures the first N days
(files); the server always holds all 1,781.

Methods, each run in its own fresh process (see ``common.py``), runs interleaved, medians; every
child checks its DuckDB table after the timed part (rows = the data rows of the CSV files as
Python's ``csv`` module counts them; data columns = the distinct header names, 30 over all days):

- ``platform`` (platform): the project's ``FileSource`` (``protocol: sftp``, daily partitions from
  2020-02-24, glob ``dpc-covid19-ita-regioni-*.csv``, ``primary_key: [data, codice_regione]``),
  built as the tests' harness builds it (``sandbox.harness.platform``) on a fresh
  lake, DuckDB file and instance (``sandbox.harness.platform_instance``: SQLite with the platform's
  event log, as ``make run`` writes it; its folder under ``--tmp`` too), with
  ``DAGSTER_EVENT_BATCH_SIZE=1000`` as ``make run`` and ``make dev`` set it; timed: one
  single-run backfill of the whole range (run tags ``dagster/asset_partition_range_start`` /
  ``_end``) materialising the lake asset and the warehouse asset (with its checks). Also checks
  the 2 platform columns (``_ip_file``, ``_ip_window``) and one ``_ip_file`` per day.
- ``platform_postgres`` (platform): the same, with Dagster's storage in PostgreSQL (dagster-postgres, a
  fresh database per run on ``IP_BENCH_DAGSTER_PG``, default the machine's server on 127.0.0.1:5432,
  dropped afterwards) and the README's large-backfill settings (``DAGSTER_EVENT_BATCH_SIZE``,
  ``DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS``): what a deployment loading history would run.
- ``platform_daemon`` (platform): the same backfill as a user launches it from the UI: the stream in
  a code location of its own (``sandbox.harness.definitions`` with the platform's executor), served
  by ``dagster-webserver`` and ``dagster-daemon run`` (started untimed, stopped by pid) on
  dagster-postgres storage with the same settings; timed from the ``launchPartitionBackfill``
  GraphQL request (what the UI's "Launch backfill" sends) until the backfill reads
  ``COMPLETED_SUCCESS`` (polled every 0.25 s). ``to_run_start_s``: from the request until its one
  run started (the daemon's share before any work); ``to_run_end_s``: until that run ended (its
  partitions show as materialised from then on). The rest is the backfill daemon noticing the run
  ended: it looks every 30 s (Dagster's ``DEFAULT_DAEMON_INTERVAL_SECONDS``, not configurable).
- ``openssh_sftp_duckdb`` (limit, the reference): OpenSSH ``sftp -b <batch>`` with one ``get`` per
  file (same client key, ``StrictHostKeyChecking=yes`` against the known_hosts file, ``-F
  /dev/null``) into a temporary folder, then DuckDB ``CREATE TABLE t AS SELECT * FROM
  read_csv('<folder>/*.csv', union_by_name = true)`` into a DuckDB file: the practical floor of
  "download + load".
- ``paramiko_pandas`` (peer): the naive script: paramiko ``SSHClient`` + ``open_sftp()``,
  ``listdir`` and ``get()`` per file, ``pandas.read_csv`` each, ``pd.concat``, ``to_parquet``, then
  DuckDB ``CREATE TABLE t AS SELECT * FROM read_parquet(...)``.

``fetch_s`` / ``load_s`` split each method's seconds: platform = the lake step / the warehouse step
(Dagster's step stats); ``openssh_sftp_duckdb`` = ``sftp`` / DuckDB; ``paramiko_pandas`` = download,
parse, concat and Parquet / DuckDB. MB/s = bytes of the CSV files / seconds.

Sensor ticks (after the table, in this process, ``time.perf_counter``, median of ``--sensor-runs``):
the stream's drop sensor (``covid_regions_drops``, ``max_partitions_per_tick: 10000``) evaluated with
``dg.build_sensor_context(cursor=..., definitions=defs, resources=..., instance=...)`` and
``sensor.evaluate_tick(context)``, twice from an empty cursor: tick 1 lists the directory and finds
every file new (waiting to be seen unchanged), tick 2 finds them stable and returns one run request per
file. On the 1,781-file directory and on a synthetic one of 10,000 files (hard links to the copied
files, named ``dpc-covid19-ita-regioni-YYYYMMDD.csv`` with consecutive dates from 1990-01-01, so its
daily partitions start 1990-01-01). Printed: seconds per tick, files listed, run requests, cursor
size and the share of Dagster's 60 s sensor evaluation budget.
"""

import argparse
import csv
import datetime as dt
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import (
    MB,
    REPO_ROOT,
    RESULTS_DIR,
    Method,
    Role,
    child_report,
    parse_args,
    python_child,
    report,
    run_interleaved,
    select,
    step_seconds,
    warm_imports,
)

SCRIPT = Path(__file__).resolve()
DATA = REPO_ROOT.parent / "shared" / "data" / "dpc-covid19-ita-regioni-daily" / "dati-regioni"
PREFIX, SUFFIX = "dpc-covid19-ita-regioni-", ".csv"
GLOB = f"{PREFIX}*{SUFFIX}"
FIRST_DAY = dt.date(2020, 2, 24)
ALL_DAYS = 1781
SYNTHETIC_FILES = 10_000
SYNTHETIC_START = dt.date(1990, 1, 1)
DATA_COLUMNS = 30
PLATFORM_COLUMNS = ("_ip_file", "_ip_window")
SOURCE, STREAM = "covid", "regions"
SENSOR = f"{SOURCE}_{STREAM}_drops"
KEY_ENV = "IP_BENCH_SFTP_KEY"
#: The server of ``platform_postgres``'s Dagster storage (the machine's PostgreSQL; a database per run).
PG_URL = os.environ.get("IP_BENCH_DAGSTER_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432")
#: What ``make run`` and ``make dev`` set (the Makefile's ``DAGSTER_EVENT_BATCH_SIZE``), set for ``platform``.
MAKE_ENV = {"DAGSTER_EVENT_BATCH_SIZE": "1000"}
#: The README's settings for large backfills (section "Large backfills"), set for ``platform_postgres``.
BULK_ENV = {**MAKE_ENV, "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS": "true"}
#: Dagster's default timeout of a sensor evaluation (the daemon gives up on the tick after it).
TICK_BUDGET_S = 60.0

PLATFORM_YAML = """
type: integration_platform.components.FileSource
attributes:
  source: {source}
  connection:
    protocol: sftp
    host: {host}
    port: {port}
    username: {user}
    private_key_env: {key_env}
    known_hosts: {known_hosts}
  streams:
    - name: {stream}
      directory: {directory}
      glob: "{glob}"
      partition: {{type: daily, start: "{start}"}}
      primary_key: [data, codice_regione]
      max_partitions_per_tick: {max_partitions}
"""


def platform_yaml(args: argparse.Namespace, directory: Path, start: dt.date, max_partitions: int = 500) -> str:
    """The source YAML of the stream served from ``directory`` (connection details from ``args``)."""
    return PLATFORM_YAML.format(
        source=SOURCE,
        host="127.0.0.1",
        port=args.port,
        user=args.user,
        key_env=KEY_ENV,
        known_hosts=args.known_hosts,
        stream=STREAM,
        directory=directory,
        glob=GLOB,
        start=start.isoformat(),
        max_partitions=max_partitions,
    )


def file_name(day: dt.date) -> str:
    return f"{PREFIX}{day:%Y%m%d}{SUFFIX}"


def day_names(days: int) -> list[str]:
    """The names of the first ``days`` daily files."""
    return [file_name(FIRST_DAY + dt.timedelta(days=i)) for i in range(days)]


# ---------------------------------------------------------------- checks (children, untimed)


def check_table(database: Path, table: str, args: argparse.Namespace, platform_columns: bool = False) -> dict[str, Any]:
    """Exit non-zero unless ``table`` holds the expected rows and columns; return what it holds."""
    import duckdb

    schema, _, name = table.rpartition(".")
    with duckdb.connect(str(database), read_only=True) as conn:
        rows = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        columns = [
            str(c[0])
            for c in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = ? AND table_schema = ?",
                [name, schema or "main"],
            ).fetchall()
        ]
        files = conn.execute(f"SELECT count(DISTINCT _ip_file) FROM {table}").fetchone() if platform_columns else None
    got = int(rows[0]) if rows else -1
    data = [c for c in columns if c not in PLATFORM_COLUMNS]
    problems = []
    if got != args.expect_rows:
        problems.append(f"{got:,} rows, expected {args.expect_rows:,}")
    if len(data) != args.expect_columns:
        problems.append(f"{len(data)} data columns, expected {args.expect_columns}: {data}")
    if platform_columns:
        if sorted(set(columns) - set(data)) != sorted(PLATFORM_COLUMNS):
            problems.append(f"platform columns {sorted(set(columns) - set(data))}, expected {list(PLATFORM_COLUMNS)}")
        if files is None or int(files[0]) != args.days:
            problems.append(f"{files[0] if files else None} distinct _ip_file values, expected {args.days}")
    if problems:
        raise SystemExit(f"{args.child}: {table} in {database}: " + "; ".join(problems))
    return {"rows": got, "columns": len(columns)}


# ---------------------------------------------------------------- methods (child processes)


@contextmanager
def postgres_database() -> Iterator[str]:
    """The URL of a new database on ``PG_URL`` for one run's Dagster storage, dropped afterwards."""
    import sqlalchemy

    database = f"ip_bench_{os.getpid()}"
    admin = sqlalchemy.create_engine(f"{PG_URL}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {database}")
    try:
        yield f"{PG_URL}/{database}"
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        admin.dispose()


@contextmanager
def bench_instance(args: argparse.Namespace, home: Path) -> Iterator[Any]:
    """A fresh Dagster instance for one platform run, with the platform's storage as ``make run`` writes
    it: SQLite under ``home`` (``platform``), or dagster-postgres in a new database on ``PG_URL``
    dropped afterwards (``platform_postgres``)."""
    from sandbox.harness import platform_instance

    if args.child != "platform_postgres":
        with platform_instance(home) as instance:
            yield instance
        return
    with postgres_database() as url, platform_instance(home, url) as instance:
        yield instance


def run_platform(args: argparse.Namespace, tmp: Path) -> None:
    """One single-run backfill of the range: lake + warehouse assets, on a fresh lake, DuckDB and instance."""
    import dagster as dg

    from sandbox.harness import platform

    lake_key, warehouse_key = dg.AssetKey([SOURCE, STREAM]), dg.AssetKey(["warehouse", f"{SOURCE}.{STREAM}"])
    last = FIRST_DAY + dt.timedelta(days=args.days - 1)
    tags = {
        "dagster/asset_partition_range_start": FIRST_DAY.isoformat(),
        "dagster/asset_partition_range_end": last.isoformat(),
    }
    home = tmp / "dagster_home"
    home.mkdir()
    with bench_instance(args, home) as instance:
        p = platform(platform_yaml(args, Path(args.drops), FIRST_DAY), tmp, instance)
        outcome: dict[str, Any] = {}

        def work() -> dict[str, Any]:
            result = p.materialize([lake_key, warehouse_key], tags=tags, raise_on_error=False)
            outcome["result"] = result
            if not result.success:
                raise SystemExit("platform: the backfill run failed")
            return {}

        def checked() -> None:
            result = outcome["result"]
            landed = {e.partition for e in result.get_asset_materialization_events() if e.asset_key == lake_key}
            if len(landed) != args.days:
                raise SystemExit(f"platform: {len(landed)} lake partitions materialised, expected {args.days}")
            check_table(p.warehouse_path, f"{SOURCE}.{STREAM}", args, platform_columns=True)

        child_report(work, lambda _: step_seconds(instance, outcome["result"].run_id, SOURCE, STREAM))
        checked()


#: The code location of ``platform_daemon``: the benchmark's source, the platform's executor.
DAEMON_LOCATION = """
import os
from pathlib import Path

import dagster as dg

from integration_platform.definitions import EXECUTOR
from sandbox.harness import definitions

defs = dg.Definitions.merge(
    definitions(Path(os.environ["IP_BENCH_SOURCE_YAML"]).read_text(), Path(os.environ["IP_BENCH_TMP"]))[0],
    dg.Definitions(executor=EXECUTOR),
)
"""
DAEMON_WORKSPACE = """
load_from:
  - python_file:
      relative_path: location.py
      location_name: file_ingest_bench
      working_directory: {repo}
"""
#: How long ``platform_daemon`` waits for the backfill to end.
BACKFILL_LIMIT_S = 1800.0


def run_platform_daemon(args: argparse.Namespace, tmp: Path) -> None:
    """The same backfill as a user launches it: ``launchPartitionBackfill`` (what the UI's Launch backfill
    sends) to a webserver, run by ``dagster-daemon``, timed until the backfill is ``COMPLETED_SUCCESS``."""
    import dagster as dg

    from integration_platform.instance import write_instance
    from sandbox.dagster_ui import BACKFILL_RUNNING, BACKFILL_STATUS, LAUNCH_BACKFILL, graphql, webserver_and_daemon

    lake_key, warehouse_key = dg.AssetKey([SOURCE, STREAM]), dg.AssetKey(["warehouse", f"{SOURCE}.{STREAM}"])
    (tmp / "source.yaml").write_text(platform_yaml(args, Path(args.drops), FIRST_DAY))
    (tmp / "location.py").write_text(DAEMON_LOCATION)
    (tmp / "workspace.yaml").write_text(DAEMON_WORKSPACE.format(repo=REPO_ROOT))
    home = tmp / "dagster_home"
    with postgres_database() as url:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_")}
        env.update(BULK_ENV, DAGSTER_HOME=str(home), DAGSTER_PG_URL=url, PYTHONPATH=str(REPO_ROOT))
        env.update(IP_BENCH_SOURCE_YAML=str(tmp / "source.yaml"), IP_BENCH_TMP=str(tmp))
        write_instance(home, env)
        os.environ.update(env)  # this process reads the instance too (DAGSTER_PG_URL)
        with (
            dg.DagsterInstance.from_config(str(home)) as instance,  # creates the storage before both start
            webserver_and_daemon(tmp / "workspace.yaml", tmp, env, tmp) as services,
        ):
            web = services.url
            days = [(FIRST_DAY + dt.timedelta(days=n)).isoformat() for n in range(args.days)]
            selection = [{"path": lake_key.path}, {"path": warehouse_key.path}]
            params = {"partitionNames": days, "assetSelection": selection, "fromFailure": False}

            def work() -> dict[str, Any]:
                launched_at = time.time()
                launched = graphql(web, LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
                if launched["__typename"] != "LaunchBackfillSuccess":
                    raise SystemExit(f"platform_daemon: launching the backfill failed: {launched}")
                backfill_id = launched["backfillId"]
                deadline = time.monotonic() + BACKFILL_LIMIT_S
                while True:
                    status = graphql(web, BACKFILL_STATUS, {"id": backfill_id})["partitionBackfillOrError"]
                    if status["status"] not in BACKFILL_RUNNING:
                        break
                    if time.monotonic() > deadline:
                        raise SystemExit(f"platform_daemon: backfill {backfill_id} not done in {BACKFILL_LIMIT_S} s")
                    time.sleep(0.25)
                runs = status["runs"]
                if status["status"] != "COMPLETED_SUCCESS" or [r["status"] for r in runs] != ["SUCCESS"]:
                    raise SystemExit(f"platform_daemon: backfill {backfill_id} ended {status}")
                return {"run_id": runs[0]["runId"], "launched_at": launched_at}

            def after(timed: dict[str, Any]) -> dict[str, Any]:
                run_id, launched_at = timed.pop("run_id"), timed.pop("launched_at")
                run = instance.get_run_record_by_id(run_id)
                started = run.start_time - launched_at if run and run.start_time else None
                ended = run.end_time - launched_at if run and run.end_time else None
                steps = step_seconds(instance, run_id, SOURCE, STREAM)
                return {**steps, "to_run_start_s": started, "to_run_end_s": ended}

            child_report(work, after)
            landed = instance.get_materialized_partitions(lake_key)
            if len(landed) != args.days:
                raise SystemExit(f"platform_daemon: {len(landed)} lake partitions materialised, expected {args.days}")
        check_table(tmp / "warehouse.duckdb", f"{SOURCE}.{STREAM}", args, platform_columns=True)


def run_openssh_duckdb(args: argparse.Namespace, tmp: Path) -> None:
    """``sftp -b`` (one ``get`` per file) into a folder, then one DuckDB ``CREATE TABLE AS read_csv``."""
    import duckdb

    folder = tmp / "files"
    folder.mkdir()
    batch = tmp / "get.batch"
    batch.write_text("".join(f'get "{args.drops}/{name}" "{folder}/"\n' for name in day_names(args.days)))
    argv = [
        "sftp",
        "-q",
        "-F",
        "/dev/null",
        "-b",
        str(batch),
        "-i",
        args.key,
        "-o",
        f"UserKnownHostsFile={args.known_hosts}",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "BatchMode=yes",
        "-P",
        str(args.port),
        f"{args.user}@127.0.0.1",
    ]
    database = tmp / "openssh.duckdb"

    def work() -> dict[str, Any]:
        started = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        fetched = time.perf_counter()
        with duckdb.connect(str(database)) as conn:
            conn.execute(f"CREATE TABLE t AS SELECT * FROM read_csv('{folder}/*.csv', union_by_name = true)")
        return {"fetch_s": fetched - started, "load_s": time.perf_counter() - fetched}

    child_report(work)
    got = len(list(folder.glob("*.csv")))
    if got != args.days:
        raise SystemExit(f"{args.child}: {got} files downloaded, expected {args.days}")
    check_table(database, "t", args)


def run_paramiko_pandas(args: argparse.Namespace, tmp: Path) -> None:
    """The naive script: paramiko get() per file, pandas.read_csv each, concat, to_parquet, DuckDB."""
    import fnmatch

    import duckdb
    import pandas as pd
    import paramiko

    folder = tmp / "files"
    folder.mkdir()
    parquet = tmp / "regions.parquet"
    database = tmp / "pandas.duckdb"
    wanted = set(day_names(args.days))

    def work() -> dict[str, Any]:
        started = time.perf_counter()
        client = paramiko.SSHClient()
        client.load_host_keys(args.known_hosts)
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        client.connect("127.0.0.1", args.port, args.user, key_filename=args.key, allow_agent=False, look_for_keys=False)
        sftp = client.open_sftp()
        names = sorted(n for n in sftp.listdir(args.drops) if fnmatch.fnmatch(n, GLOB) and n in wanted)
        frames = []
        for name in names:
            local = folder / name
            sftp.get(f"{args.drops}/{name}", str(local))
            frames.append(pd.read_csv(local))
        sftp.close()
        client.close()
        pd.concat(frames, ignore_index=True).to_parquet(parquet, index=False)
        fetched = time.perf_counter()
        with duckdb.connect(str(database)) as conn:
            conn.execute(f"CREATE TABLE t AS SELECT * FROM read_parquet('{parquet}')")
        return {"fetch_s": fetched - started, "load_s": time.perf_counter() - fetched, "files": len(names)}

    child_report(work)
    check_table(database, "t", args)


CHILDREN: dict[str, Callable[[argparse.Namespace, Path], None]] = {
    "platform": run_platform,
    "platform_postgres": run_platform,
    "platform_daemon": run_platform_daemon,
    "openssh_sftp_duckdb": run_openssh_duckdb,
    "paramiko_pandas": run_paramiko_pandas,
}


def child(args: argparse.Namespace) -> None:
    """Entry point of one child process: run ``args.child`` in a fresh temporary folder, removed after."""
    run = CHILDREN.get(args.child)
    if run is None:
        raise SystemExit(f"unknown method {args.child!r}")
    tmp = Path(tempfile.mkdtemp(prefix="ip-bench-files-", dir=args.tmp))
    try:
        run(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- parent: data, methods


def default_tmp(size: int) -> str:
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > 20 * size:
        return str(shm)
    return tempfile.gettempdir()


def copy_drops(source: Path, target: Path) -> list[str]:
    """Copy the daily files into ``target``; return their names (sorted). Exits if any day is missing."""
    names = sorted(p.name for p in source.glob(GLOB))
    missing = sorted(set(day_names(ALL_DAYS)) - set(names))
    if missing:
        raise SystemExit(f"{source}: {len(missing)} daily file(s) missing, e.g. {missing[:3]}")
    target.mkdir()
    for name in names:
        shutil.copyfile(source / name, target / name)
    return names


def data_shape(folder: Path, names: list[str]) -> tuple[int, int]:
    """Data rows of the CSV files (header excluded; quoted line breaks kept inside their row) and
    the number of distinct column names of their headers."""
    total, columns = 0, set()
    for name in names:
        with (folder / name).open(encoding="utf-8", newline="") as handle:
            reader = csv.reader(handle)
            columns.update(next(reader))
            total += sum(1 for _ in reader)
    return total, len(columns)


def synthetic_drops(source: Path, target: Path, count: int) -> None:
    """``count`` hard links to the files of ``source`` (in turn), one per day from SYNTHETIC_START."""
    files = sorted(source.glob(GLOB))
    target.mkdir()
    for i in range(count):
        os.link(files[i % len(files)], target / file_name(SYNTHETIC_START + dt.timedelta(days=i)))


def build_methods(args: argparse.Namespace, server: Any, rows: int, columns: int, size: int) -> list[Method]:
    common = ["--port", str(server.port), "--user", server.username, "--key", str(server.private_key_path)]
    common += ["--known-hosts", str(args.known_hosts), "--drops", str(args.drops), "--days", str(args.days)]
    common += ["--expect-rows", str(rows), "--expect-columns", str(columns), "--tmp", args.tmp]

    def py(name: str, role: Role, note: str = "", env: dict[str, str] | None = None) -> Method:
        env = {KEY_ENV: server.private_key_pem, **(env or {})} if name.startswith("platform") else {}
        return Method(name, role, python_child(SCRIPT, name, *common), rows, size, note=note, env=env)

    return [
        py(
            "platform",
            "platform",
            "SQLite with DAGSTER_EVENT_BATCH_SIZE=1000 as make dev sets it; fetch_s = lake step (list, download, "
            "parse, land), load_s = warehouse step",
            env=MAKE_ENV,
        ),
        py(
            "platform_postgres",
            "platform",
            "Dagster storage in PostgreSQL with the README's bulk-backfill settings (" + ", ".join(BULK_ENV) + ")",
            env=BULK_ENV,
        ),
        py(
            "platform_daemon",
            "platform",
            "as platform_postgres, launched as the UI launches a backfill (webserver + dagster-daemon), "
            "timed from the request to the backfill done; to_run_start_s / to_run_end_s: until its run "
            "started / ended",
            env=BULK_ENV,
        ),
        py("openssh_sftp_duckdb", "limit", "fetch_s = sftp -b (one get per file), load_s = DuckDB read_csv"),
        py("paramiko_pandas", "peer", "fetch_s = get + read_csv + concat + to_parquet, load_s = DuckDB"),
    ]


# ---------------------------------------------------------------- parent: sensor ticks


@dataclass
class Tick:
    """One evaluation of the drop sensor."""

    seconds: float
    listed: int
    requests: int
    cursor_bytes: int


def sensor_ticks(args: argparse.Namespace, directory: Path, start: dt.date, runs: int) -> list[list[Tick]]:
    """``runs`` times: the stream's definitions on a fresh instance, two ticks from an empty cursor."""
    import dagster as dg

    from sandbox.harness import platform

    warnings.filterwarnings("ignore", category=dg.BetaWarning)  # backfill_policy on the assets
    text = platform_yaml(args, directory, start, max_partitions=SYNTHETIC_FILES)
    rounds: list[list[Tick]] = []
    for _ in range(runs):
        tmp = Path(tempfile.mkdtemp(prefix="ip-bench-sensor-", dir=args.tmp))
        try:
            with dg.instance_for_test(temp_dir=str(tmp)) as instance:
                p = platform(text, tmp, instance)
                sensor = next(s for s in p.defs.sensors or [] if s.name == SENSOR)
                resources = dict(p.defs.resources or {})
                cursor: str | None = None
                ticks = []
                logging.disable(logging.INFO)  # the sensor's own "N files listed" line (the table says it)
                for _tick in range(2):
                    with dg.build_sensor_context(
                        cursor=cursor, definitions=p.defs, resources=resources, instance=instance
                    ) as context:
                        started = time.perf_counter()
                        result = sensor.evaluate_tick(context)
                        seconds = time.perf_counter() - started
                    cursor = result.cursor
                    listed = len(json.loads(cursor or "{}").get("looked", {}))
                    requests = len(result.run_requests or [])
                    ticks.append(Tick(seconds, listed, requests, len((cursor or "").encode())))
                rounds.append(ticks)
        finally:
            logging.disable(logging.NOTSET)
            shutil.rmtree(tmp, ignore_errors=True)
    return rounds


def sensor_section(args: argparse.Namespace, server: Any, drops: Path, synthetic: Path) -> list[dict[str, Any]]:
    """Time the sensor's two ticks on both directories; print and return the figures."""
    os.environ[KEY_ENV] = server.private_key_pem
    runs = args.sensor_runs
    if runs < 1:
        print("\nsensor ticks: not timed (--sensor-runs 0)", flush=True)
        return []
    print(
        f"\nsensor ticks: {SENSOR}, max_partitions_per_tick {SYNTHETIC_FILES}, evaluate_tick timed in this "
        f"process, median of {runs}; budget = Dagster's {TICK_BUDGET_S:.0f} s sensor evaluation timeout",
        flush=True,
    )
    header = (
        f"{'directory':<22} {'tick':>4} {'listed':>7} {'requests':>8} {'seconds':>8} {'min_s':>7} {'max_s':>7} "
        f"{'cursor_KB':>9} {'of_60s':>7} {'files/s':>9}"
    )
    print(header)
    print("-" * len(header))
    records: list[dict[str, Any]] = []
    for label, directory, start, files in (
        (f"{ALL_DAYS:,} daily files", drops, FIRST_DAY, ALL_DAYS),
        (f"{SYNTHETIC_FILES:,} synthetic", synthetic, SYNTHETIC_START, SYNTHETIC_FILES),
    ):
        rounds = sensor_ticks(args, directory, start, runs)
        for index in range(2):
            ticks = [r[index] for r in rounds]
            seconds = statistics.median(t.seconds for t in ticks)
            last = ticks[-1]
            expected = 0 if index == 0 else files
            if last.listed != files or any(t.requests != expected for t in ticks):
                print(
                    f"  WARNING: tick {index + 1} listed {last.listed} (expected {files}) and requested "
                    f"{[t.requests for t in ticks]} (expected {expected})",
                    flush=True,
                )
            share = seconds / TICK_BUDGET_S
            rate = last.listed / seconds if seconds > 0 else None
            print(
                f"{label:<22} {index + 1:>4} {last.listed:>7,} {last.requests:>8,} {seconds:8.3f} "
                f"{min(t.seconds for t in ticks):7.3f} {max(t.seconds for t in ticks):7.3f} "
                f"{last.cursor_bytes / 1000:9.1f} {share:7.4f} {rate or 0:9,.0f}",
                flush=True,
            )
            records.append(
                {
                    "benchmark": "file_ingest",
                    "method": f"sensor_tick_{files}_files_tick{index + 1}",
                    "role": "platform",
                    "seconds": round(seconds, 4),
                    "seconds_each": [round(t.seconds, 4) for t in ticks],
                    "files_in_directory": files,
                    "files_listed": last.listed,
                    "run_requests": last.requests,
                    "cursor_bytes": last.cursor_bytes,
                    "tick_budget_s": TICK_BUDGET_S,
                    "share_of_budget": round(share, 5),
                    "max_partitions_per_tick": SYNTHETIC_FILES,
                }
            )
    print("tick 1: every file seen for the first time (waiting to be stable); tick 2: every file requested once")
    return records


# ---------------------------------------------------------------- parent


@contextmanager
def work_folder(tmp: str) -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="ip-bench-file-ingest-", dir=tmp))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    """Parse arguments; as parent copy the drops, start sshd, run the methods and the sensor ticks; as child run one."""
    parser = argparse.ArgumentParser(prog="file_ingest.py", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--days", type=int, default=ALL_DAYS, help=f"days (files) landed, from 2020-02-24 (default all {ALL_DAYS})"
    )
    parser.add_argument(
        "--sensor-runs", type=int, default=3, help="repetitions of the sensor's two ticks (median); 0 skips them"
    )
    parser.add_argument("--sensor-only", action="store_true", help="only the sensor ticks, no methods")
    parser.add_argument("--data", type=Path, default=DATA, help="the folder of the daily CSV files")
    parser.add_argument("--tmp", default=None, help="folder for the copy, the lakes and the databases")
    for hidden in ("--port", "--user", "--key", "--known-hosts", "--drops"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    parser.add_argument("--expect-rows", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--expect-columns", type=int, help=argparse.SUPPRESS)
    args = parse_args(parser, argv)
    if args.child:
        child(args)
        return
    if not 1 <= args.days <= ALL_DAYS:
        parser.error(f"--days must be 1..{ALL_DAYS}")
    if args.sensor_runs < 3:
        print("note: fewer than 3 sensor runs; the DESIGN asks for a median of at least 3", file=sys.stderr)
    if shutil.which("sftp") is None:
        raise SystemExit("OpenSSH's sftp client is required for the limit (Debian: openssh-client)")
    from sandbox import ServerMissing
    from sandbox.sshd import sshd

    size_all = sum(p.stat().st_size for p in args.data.glob(GLOB))
    args.tmp = args.tmp or default_tmp(size_all)
    started = time.perf_counter()
    with work_folder(args.tmp) as work:
        drops, synthetic = work / "drops", work / "synthetic"
        copy_drops(args.data, drops)
        synthetic_drops(drops, synthetic, SYNTHETIC_FILES)
        names = day_names(args.days)
        rows, columns = data_shape(drops, names)
        if args.days == ALL_DAYS and columns != DATA_COLUMNS:
            raise SystemExit(f"{args.data}: {columns} distinct header columns, expected {DATA_COLUMNS}")
        size = sum((drops / n).stat().st_size for n in names)
        print(
            f"file_ingest: {args.days:,} of {ALL_DAYS:,} daily files ({names[0]} .. {names[-1]}), {rows:,} data rows, "
            f"{columns} columns, {size / MB:.2f} MB; copy + {SYNTHETIC_FILES:,} hard links in {work} "
            f"({time.perf_counter() - started:.1f} s)",
            flush=True,
        )
        try:
            with sshd(work) as server:
                args.known_hosts = server.write_known_hosts(work / "known_hosts")
                args.drops, args.port, args.user = drops, server.port, server.username
                subprocess.run(["ssh", "-V"], check=False)
                records: list[dict[str, Any]] = []
                if not args.sensor_only:
                    methods = select(
                        build_methods(args, server, rows, columns, size),
                        args.methods,
                        always=("platform", "openssh_sftp_duckdb"),
                    )
                    limit = next((m for m in methods if m.role == "limit"), methods[0])
                    print(
                        f"file_ingest: {len(methods)} methods x {args.runs} runs, sshd on {server.host}:{server.port}",
                        flush=True,
                    )
                    warmup = [
                        limit,
                        warm_imports("dagster", "sandbox.harness", "pandas", "paramiko"),
                    ]
                    summaries = run_interleaved(methods, args.runs, warmup=warmup)
                    path = report(
                        "file_ingest",
                        summaries,
                        reference=limit.name,
                        bytes_label="bytes of the CSV files / seconds",
                        extra_columns=[
                            ("fetch_s", "fetch_s", ".2f"),
                            ("load_s", "load_s", ".2f"),
                            ("to_run_start_s", "to_run_start_s", ".1f"),
                            ("to_run_end_s", "to_run_end_s", ".1f"),
                            ("import_RSS_MB", "baseline_rss_mb", ".0f"),
                        ],
                    )
                    records = json.loads(path.read_text())
                    by_name = {s.method.name: s for s in summaries}
                    for record in records:
                        summary = by_name[record["method"]]
                        record.update(
                            days=args.days,
                            files=args.days,
                            data_bytes=size,
                            cpu_s=summary.cpu_seconds,
                            process_s=round(summary.process_seconds, 4),
                            seconds_each=[round(s.seconds, 4) for s in summary.samples],
                            fetch_s=summary.median_report("fetch_s"),
                            load_s=summary.median_report("load_s"),
                            to_run_start_s=summary.median_report("to_run_start_s"),
                            to_run_end_s=summary.median_report("to_run_end_s"),
                        )
                records.extend(sensor_section(args, server, drops, synthetic))
        except ServerMissing as exc:
            raise SystemExit(f"sshd is required for this benchmark: {exc}") from None
    path = RESULTS_DIR / ("file_ingest_sensor.json" if args.sensor_only else "file_ingest.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records, indent=1) + "\n")
    print(f"results (with the sensor ticks): {path}; total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
