"""REST fan-out: thousands of detail requests against a local PokeAPI with injected latency.

Usage::

    .venv/bin/python benchmarks/rest_fanout.py                        # 2,400 details, 50 ms, concurrency 16, 3 runs
    .venv/bin/python benchmarks/rest_fanout.py --details 1200 --peer-details 200
    .venv/bin/python benchmarks/rest_fanout.py --concurrency 32 --latency-ms 100
    .venv/bin/python benchmarks/rest_fanout.py --rate-limit 0         # skip the rate-limit check

Data (built untimed in a temporary folder, removed at the end): the payloads are real PokeAPI
ability records from the shared mirror (``/work/shared/data/pokeapi-subset/data``, 373 ability
files), replicated to reach ``--details`` (default 2,400): detail ``i`` is the mirror's ability
file number ``(i - 1) % 373`` (in id order) with its top-level ``id`` rewritten to ``i`` and its
``name`` to ``<name>-<i>`` so the primary key stays unique; serialised exactly as the mirror's
files are (``json.dumps(indent=4)``: the unchanged records come out byte for byte).
``ability/index.json`` lists all of them; the mirror's ``api/v2/index.json`` is copied.

Server: ``sandbox/pokeapi/server.py --latency-ms 50`` (each ``/api`` request sleeps 50 ms before
it is answered; lists paged like the live API, absolute URLs), started once by the parent and
stopped by pid. It keeps files in memory after their first read, so an untimed warm-up run of
``threadpool_requests`` reads every detail once before the measured runs.

Methods, each run in its own fresh process (see ``common.py``), runs interleaved, medians:

- ``platform`` (platform): the project's ``RestSource`` (list stream ``abilities``: offset
  paginator, limit 100, ``total_path: count``, records ``results``; child stream
  ``ability_details``: ``path: "{url}"``, ``records: $``, ``single_page``, ``primary_key: [id]``,
  ``nested: json``, ``concurrency: --concurrency``), built as the tests' harness builds it and
  materialised in process with ``dg.materialize`` on an ``instance_for_test``: the list asset
  first (untimed), then the timed part, the detail lake asset and its warehouse asset (DuckDB,
  with the asset checks) in one run.
- ``threadpool_requests`` (limit, practical): ``ThreadPoolExecutor(--concurrency)`` over one
  ``requests.Session`` (pool of the same size): GET + ``json()`` of every detail, nothing else.
- ``serial_requests`` (peer): one ``requests.Session``, GET + ``json()`` one detail after the
  other, nested values as JSON text (as ``nested: json``), one zstd Parquet file with pyarrow.
  Run on ``--peer-details`` (default 200) details, to keep the run short: compare requests/s, not seconds.
- ``dlt_rest_api`` (peer): ``dlt.sources.rest_api.rest_api_source`` with the same list resource
  (offset paginator, ``total_path: count``, ``data_selector: results``) and a child resource
  ``path: "{resources.abilities.url}"`` (absolute URLs are used as they are), ``single_page``,
  ``data_selector: $``, ``max_table_nesting: 0`` (nested values as JSON, like ``nested: json``),
  into a DuckDB destination; the timed part is ``pipeline.run`` (list + details, extract,
  normalize, load). dlt's defaults fetch a transformer's parent items one after the other, so
  it runs on ``--peer-details`` details (``maximum_offset`` on the list paginator).
- ``dlt_rest_api_parallel`` (peer): the same with ``parallelized: True`` on the child resource
  (dlt's default extract pool: 5 workers), on all details.

The computed ceiling (limit, not run) is ``concurrency / latency`` requests per second (16 / 0.05 s
= 320/s); a serial client's ceiling is ``1 / latency`` (20/s).

Requests are counted at the server: every child ``POST /_reset`` s the server's request log just
before its timed part and reads ``GET /_stats`` after it (untimed), counting ``/api`` requests
(``requests``; list pages included for dlt) and detail requests; requests/s = requests / seconds.
``eff_conc`` = requests/s x latency, the average number of requests in flight (Little's law with
the injected latency as the response time, so a lower bound). Every method must produce exactly
its number of unique ``id`` s and get only HTTP 200s, or the child exits non-zero.

Rate-limit check (after the table, one run): ``platform`` with ``rate_limit: --rate-limit``
(default 40/s) on ``--rate-details`` (default 800) details at ``--concurrency``; from the
server's timestamps of the detail requests (taken when each answer is sent, i.e. after the
50 ms sleep): achieved rate = (n - 1) / (t_last - t_first), which must be within 0.95..1.0 of the
limit, and the most requests in any window [t_i, t_i + 1 s), which must not exceed the limit.

Fault check (after it, one run each): ``platform`` on all details through ``sandbox/fault_proxy.py``
in front of the server, first with no faults, then with 5% of detail requests answered 429 with
``Retry-After: 1`` and 3% answered 500 (every 20th and every 33rd, counted at the proxy). A worker
waiting out a Retry-After must not stop the others, so the faulty run must take at most (the
fault-free run + the Retry-After seconds / concurrency) x 1.2.
"""

import argparse
import bisect
import json
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests
from common import (
    REPO_ROOT,
    RESULT_MARK,
    Method,
    Role,
    Summary,
    parse_args,
    python_child,
    report,
    rss_high_water_mb,
    run_interleaved,
    run_once,
    select,
    step_seconds,
    warm_imports,
)

from integration_platform.standins import stop

SCRIPT = Path(__file__).resolve()
MIRROR = REPO_ROOT.parent / "shared" / "data" / "pokeapi-subset" / "data"
SERVER_SCRIPT = REPO_ROOT / "sandbox" / "pokeapi" / "server.py"
PROXY_SCRIPT = REPO_ROOT / "sandbox" / "fault_proxy.py"
ENDPOINT = "ability"
#: The fault mix of the fault check: 5% of detail requests answered 429 with Retry-After 1 s, 3% 500.
FAULT_PLAN = [
    {"fault": "429", "path_regex": rf"/{ENDPOINT}/[0-9]+/", "every": 20, "retry_after": 1},
    {"fault": "500", "path_regex": rf"/{ENDPOINT}/[0-9]+/", "every": 33, "offset": 7},
]
SOURCE, LIST_STREAM, DETAIL_STREAM = "bench", "abilities", "ability_details"
PAGE = 100
DETAIL_PATH = re.compile(rf"^/api/v2/{ENDPOINT}/\d+/?$")
START_SECONDS = 30.0
ID_MARK, NAME_MARK = "__ip_bench_id__", "__ip_bench_name__"

PLATFORM_YAML = """
type: integration_platform.components.RestSource
attributes:
  source: {source}
  base_url: {url}
  concurrency: {concurrency}{rate_limit}
  defaults:
    paginator: {{type: offset, limit: {page}, total_path: count}}
    records: results
  streams:
    - name: {list_stream}
      path: /api/v2/{endpoint}/
      primary_key: [name]{first}
    - name: {detail_stream}
      path: "{{url}}"
      parent: {{stream: {list_stream}}}
      records: $
      paginator: {{type: single_page}}
      primary_key: [id]
      nested: json
"""


# ---------------------------------------------------------------- setup (parent process)


def build_data(mirror: Path, root: Path, details: int) -> list[int]:
    """Write the benchmark's mirror under ``root``; return the byte size of detail 1..``details``."""
    source = mirror / "api" / "v2"
    target = root / "api" / "v2"
    target.mkdir(parents=True)
    shutil.copyfile(source / "index.json", target / "index.json")
    ids = sorted(int(p.name) for p in (source / ENDPOINT).iterdir() if (p / "index.json").is_file())
    if not ids:
        raise SystemExit(f"no {ENDPOINT} detail files under {source / ENDPOINT}")
    templates: list[tuple[str, str]] = []  # (serialised record with marks, original name)
    for ident in ids:
        record = json.loads((source / ENDPOINT / str(ident) / "index.json").read_bytes())
        name = str(record["name"])
        record["id"], record["name"] = ID_MARK, NAME_MARK
        templates.append((json.dumps(record, indent=4), name))
    sizes, listing = [], []
    for i in range(1, details + 1):
        text, name = templates[(i - 1) % len(templates)]
        unique = f"{name}-{i}"
        body = text.replace(f'"{ID_MARK}"', str(i), 1).replace(f'"{NAME_MARK}"', json.dumps(unique), 1)
        folder = target / ENDPOINT / str(i)
        folder.mkdir(parents=True)
        data = body.encode()
        (folder / "index.json").write_bytes(data)
        sizes.append(len(data))
        listing.append({"name": unique, "url": f"/api/v2/{ENDPOINT}/{i}/"})
    index = {"count": details, "next": None, "previous": None, "results": listing}
    (target / ENDPOINT / "index.json").write_text(json.dumps(index, indent=4))
    return sizes


@contextmanager
def pokeapi_server(data: Path, latency_ms: int) -> Iterator[str]:
    """Run ``sandbox/pokeapi/server.py`` over ``data``; yield its base URL; stop it by pid."""
    argv = [sys.executable, str(SERVER_SCRIPT), "--data", str(data), "--port", "0", "--latency-ms", str(latency_ms)]
    with served(argv, "the PokeAPI server") as url:
        yield url


@contextmanager
def fault_proxy(upstream: str) -> Iterator[str]:
    """Run ``sandbox/fault_proxy.py`` in front of ``upstream`` (no faults until a plan is posted)."""
    argv = [sys.executable, str(PROXY_SCRIPT), "--upstream", upstream, "--port", "0"]
    with served(argv, "the fault proxy") as url:
        yield url


@contextmanager
def served(argv: list[str], what: str) -> Iterator[str]:
    """Run a server that prints ``listening on http://127.0.0.1:<port>``; yield that URL; stop it by pid."""
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL)
        try:
            lines: queue.Queue[str] = queue.Queue()

            def pump() -> None:  # keeps draining stdout so the server never blocks on a full pipe
                assert process.stdout is not None
                for raw in process.stdout:
                    lines.put(raw.decode("utf-8", "replace").strip())

            threading.Thread(target=pump, name="pokeapi-stdout", daemon=True).start()
            deadline = time.monotonic() + START_SECONDS
            url = None
            while url is None:
                if time.monotonic() > deadline or process.poll() is not None:
                    stderr.seek(0)
                    tail = stderr.read().decode(errors="replace")[-3000:]
                    raise SystemExit(f"{what} did not start (exit {process.poll()}):\n{tail}")
                try:
                    line = lines.get(timeout=0.1)
                except queue.Empty:
                    continue
                if line.startswith("listening on http://127.0.0.1:"):
                    url = line.removeprefix("listening on ")
            yield url
        finally:
            stop(process)


def server_reset(url: str) -> None:
    """``POST /_reset``: clear the server's request log."""
    requests.post(f"{url}/_reset", timeout=10).raise_for_status()


def server_log(url: str) -> list[dict[str, Any]]:
    """``GET /_stats``: the requests since the last reset (``t``, ``method``, ``path``, ``status``)."""
    response = requests.get(f"{url}/_stats", timeout=30)
    response.raise_for_status()
    log: list[dict[str, Any]] = response.json()["requests"]
    return log


# ---------------------------------------------------------------- methods (child processes)


def child_result(
    work: Callable[[], dict[str, Any]], after: Callable[[dict[str, Any]], dict[str, Any]], latency_s: float
) -> None:
    """:func:`common.child_report` with an untimed step: time ``work()``, then run ``after(result)``
    (read the server's log, verify the output) and print the ``BENCH_RESULT`` line of both, with
    ``requests_per_s`` and ``eff_concurrency`` (requests/s x ``latency_s``) when ``after`` counted requests."""
    baseline = rss_high_water_mb()
    started = time.perf_counter()
    result = work()
    seconds = time.perf_counter() - started
    result.update(after(result))
    if result.get("requests") is not None and seconds > 0:
        result["requests_per_s"] = result["requests"] / seconds
        result["eff_concurrency"] = result["requests_per_s"] * latency_s
    record = {**result, "seconds": seconds, "baseline_rss_mb": baseline}
    print(RESULT_MARK + json.dumps(record, default=str), flush=True)


def counted(url: str, ids: list[Any], expected: int, what: str) -> dict[str, Any]:
    """The server's request counts since the last reset; exits non-zero unless ``ids`` are
    ``expected`` unique values and every request was answered 200."""
    log = server_log(url)
    api = [r for r in log if str(r["path"]).startswith("/api/")]
    details = [r for r in api if DETAIL_PATH.match(str(r["path"]).split("?")[0])]
    failed = [r for r in api if r["status"] != 200]
    if failed:
        raise SystemExit(f"{what}: {len(failed)} requests were not answered 200, e.g. {failed[:3]}")
    if len(ids) != expected or len(set(ids)) != expected:
        raise SystemExit(f"{what}: {len(ids)} records with {len(set(ids))} unique ids, expected {expected} unique")
    return {"rows": len(ids), "requests": len(api), "detail_requests": len(details)}


def detail_urls(url: str, count: int) -> list[str]:
    """The first ``count`` detail URLs of the list endpoint (absolute, as the server gives them)."""
    response = requests.get(f"{url}/api/v2/{ENDPOINT}/", params={"offset": 0, "limit": count}, timeout=60)
    response.raise_for_status()
    return [str(item["url"]) for item in response.json()["results"]]


def flat(record: dict[str, Any]) -> dict[str, Any]:
    """Nested values as JSON text, the same text as the platform's ``nested: json`` (compact, non-ASCII
    kept), written as a script would write it: by the standard library."""
    return {
        k: json.dumps(v, ensure_ascii=False, separators=(",", ":")) if isinstance(v, dict | list) else v
        for k, v in record.items()
    }


def run_platform(args: argparse.Namespace, tmp: Path) -> None:
    """``RestSource`` list -> detail fan-out, lake + warehouse, materialised in process."""
    import dagster as dg
    import duckdb
    import yaml
    from dagster.components.core.component_tree import ComponentTree
    from dagster_duckdb import DuckDBResource

    from integration_platform.components import RestSource
    from integration_platform.resources.lake import LakeResource

    text = PLATFORM_YAML.format(
        source=SOURCE,
        url=args.url,
        concurrency=args.concurrency,
        rate_limit=f"\n  rate_limit: {args.rate_limit:g}" if args.rate_limit else "",
        page=PAGE,
        # the list's first ``count`` entries as the whole list (the server's ``first``): max_pages fails a
        # list with more pages than it
        first=f"\n      params: {{first: {args.count}}}" if args.count < args.total else "",
        list_stream=LIST_STREAM,
        detail_stream=DETAIL_STREAM,
        endpoint=ENDPOINT,
    )
    component = RestSource.from_attributes_dict(attributes=yaml.safe_load(text)["attributes"])
    built = component.build_defs(ComponentTree.for_test().load_context)
    warehouse = tmp / "warehouse.duckdb"
    resources = {
        "lake": LakeResource(url=str(tmp / "lake")),
        "warehouse": DuckDBResource(database=str(warehouse)),
    }
    defs = dg.Definitions.merge(built, dg.Definitions(resources=resources))
    assets = [a for a in defs.assets or [] if isinstance(a, dg.AssetsDefinition)]
    timed_keys = [dg.AssetKey([SOURCE, DETAIL_STREAM]), dg.AssetKey(["warehouse", f"{SOURCE}.{DETAIL_STREAM}"])]

    with dg.instance_for_test() as instance:

        def materialize(keys: list[dg.AssetKey]) -> dg.ExecuteInProcessResult:
            return dg.materialize(assets, resources=dict(defs.resources or {}), instance=instance, selection=keys)

        materialize([dg.AssetKey([SOURCE, LIST_STREAM])])  # the parent list, untimed
        server_reset(args.url)

        def work() -> dict[str, Any]:
            result = materialize(timed_keys)
            return {"success": result.success, "run_id": result.run_id}

        def after(result: dict[str, Any]) -> dict[str, Any]:
            if not result["success"]:  # before reading the table, which a failed run may not have made
                raise SystemExit("platform: the run failed")
            with duckdb.connect(str(warehouse), read_only=True) as conn:
                ids = [row[0] for row in conn.execute(f"SELECT id FROM {SOURCE}.{DETAIL_STREAM}").fetchall()]
            steps = step_seconds(instance, result.pop("run_id"), SOURCE, DETAIL_STREAM)
            return {**steps, **counted(args.url, ids, args.count, "platform")}

        child_result(work, after, args.latency_ms / 1000)


def run_serial(args: argparse.Namespace, tmp: Path) -> None:
    """A plain ``requests.Session`` loop, one detail after the other, then one Parquet file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    urls = detail_urls(args.url, args.count)
    out = tmp / "details.parquet"
    server_reset(args.url)

    def work() -> dict[str, Any]:
        records = []
        with requests.Session() as session:
            for detail in urls:
                response = session.get(detail, timeout=60)
                response.raise_for_status()
                records.append(flat(response.json()))
        pq.write_table(pa.Table.from_pylist(records), out, compression="zstd")
        return {"out_bytes": out.stat().st_size}

    def after(result: dict[str, Any]) -> dict[str, Any]:
        ids = pq.read_table(out, columns=["id"]).column("id").to_pylist()
        return counted(args.url, ids, args.count, "serial_requests")

    child_result(work, after, args.latency_ms / 1000)


def run_threadpool(args: argparse.Namespace) -> None:
    """GET + ``json()`` of every detail on ``--concurrency`` threads sharing one pooled session."""
    from concurrent.futures import ThreadPoolExecutor

    from requests.adapters import HTTPAdapter

    urls = detail_urls(args.url, args.count)
    session = requests.Session()
    session.mount("http://", HTTPAdapter(pool_connections=1, pool_maxsize=args.concurrency))
    server_reset(args.url)
    ids: list[Any] = []

    def get(detail: str) -> Any:
        response = session.get(detail, timeout=60)
        response.raise_for_status()
        return response.json()

    def work() -> dict[str, Any]:
        with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
            ids.extend(record["id"] for record in pool.map(get, urls))
        return {}

    child_result(work, lambda _: counted(args.url, ids, args.count, "threadpool_requests"), args.latency_ms / 1000)
    session.close()


def run_dlt(args: argparse.Namespace, tmp: Path, parallel: bool) -> None:
    """dlt's ``rest_api_source``: list resource + child resource per list item, into DuckDB."""
    import dlt
    import duckdb
    from dlt.sources.rest_api import rest_api_source

    paginator: dict[str, Any] = {"type": "offset", "limit": PAGE, "total_path": "count"}
    if args.count < args.total:
        paginator["maximum_offset"] = args.count
    child: dict[str, Any] = {
        "name": DETAIL_STREAM,
        "primary_key": "id",
        "max_table_nesting": 0,
        "endpoint": {"path": f"{{resources.{LIST_STREAM}.url}}", "paginator": "single_page", "data_selector": "$"},
    }
    if parallel:
        child["parallelized"] = True
    config: Any = {
        "client": {"base_url": f"{args.url}/api/v2/"},
        "resource_defaults": {"write_disposition": "replace"},
        "resources": [
            {
                "name": LIST_STREAM,
                "primary_key": "name",
                "endpoint": {"path": f"{ENDPOINT}/", "paginator": paginator, "data_selector": "results"},
            },
            child,
        ],
    }
    database = tmp / "dlt.duckdb"
    pipeline = dlt.pipeline(
        pipeline_name="bench_rest_fanout",
        pipelines_dir=str(tmp / "pipelines"),
        destination=dlt.destinations.duckdb(str(database)),
        dataset_name=SOURCE,
    )
    source = rest_api_source(config)
    server_reset(args.url)

    def work() -> dict[str, Any]:
        pipeline.run(source)
        return {}

    def after(_: dict[str, Any]) -> dict[str, Any]:
        with duckdb.connect(str(database), read_only=True) as conn:
            ids = [row[0] for row in conn.execute(f"SELECT id FROM {SOURCE}.{DETAIL_STREAM}").fetchall()]
        return counted(args.url, ids, args.count, args.child)

    child_result(work, after, args.latency_ms / 1000)


def child(args: argparse.Namespace) -> None:
    """Entry point of one child process: run ``args.child`` in a temporary folder."""
    tmp = Path(tempfile.mkdtemp(prefix="ip-bench-rest-", dir=args.tmp))
    try:
        if args.child == "platform":
            run_platform(args, tmp)
        elif args.child == "serial_requests":
            run_serial(args, tmp)
        elif args.child == "threadpool_requests":
            run_threadpool(args)
        elif args.child in ("dlt_rest_api", "dlt_rest_api_parallel"):
            run_dlt(args, tmp, parallel=args.child.endswith("_parallel"))
        else:
            raise SystemExit(f"unknown method {args.child!r}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- parent


def child_argv(args: argparse.Namespace, name: str, url: str, count: int, rate_limit: float = 0.0) -> list[str]:
    """The command line of the child running method ``name`` on the first ``count`` details."""
    settings = {"url": url, "count": count, "total": args.details, "concurrency": args.concurrency}
    settings |= {"latency-ms": args.latency_ms, "rate-limit": f"{rate_limit:g}", "tmp": args.tmp}
    return python_child(SCRIPT, name, *(f"--{key}={value}" for key, value in settings.items()))


def build_methods(args: argparse.Namespace, url: str, sizes: list[int]) -> list[Method]:
    """The measured methods; ``sizes`` are the detail files' bytes (MB/s = detail bytes fetched / s)."""
    dlt_env = {"RUNTIME__DLTHUB_TELEMETRY": "false"}

    def py(name: str, role: Role, count: int, note: str = "") -> Method:
        return Method(
            name,
            role,
            child_argv(args, name, url, count),
            count,
            sum(sizes[:count]),
            note=note,
            env=dlt_env if name.startswith("dlt_") else {},
        )

    fewer = f"{args.peer_details:,} of the {args.details:,} details: compare requests/s, not seconds"
    return [
        py("platform", "platform", args.details),
        py("threadpool_requests", "limit", args.details, note="GET + json() only, nothing landed"),
        py("serial_requests", "peer", args.peer_details, note=fewer),
        py("dlt_rest_api", "peer", args.peer_details, note=f"dlt defaults (serial child resource); {fewer}"),
        py(
            "dlt_rest_api_parallel",
            "peer",
            args.details,
            note="parallelized: True on the child resource (dlt's default pool: 5 workers)",
        ),
    ]


def throughput(summaries: list[Summary], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Print requests/s of every method against the platform and the computed ceiling; return them."""
    latency = args.latency_ms / 1000
    ceiling = args.concurrency / latency
    by_name = {s.method.name: s for s in summaries}
    platform_rate = by_name["platform"].median_report("requests_per_s") or 0.0
    print(
        f"\nrequests/s (server-counted requests / seconds), latency {args.latency_ms} ms, concurrency "
        f"{args.concurrency}:"
    )
    header = f"{'method':<28} {'role':<8} {'requests':>9} {'req/s':>8} {'vs_platform':>11} {'platform_x':>10}"
    print(header)
    print("-" * len(header))
    rows: list[dict[str, Any]] = []
    for s in summaries:
        rate = s.median_report("requests_per_s") or 0.0
        sent = s.median_report("requests")
        vs = rate / platform_rate if platform_rate else None
        times = platform_rate / rate if rate else None
        print(
            f"{s.method.name:<28} {s.method.role:<8} {_fmt(sent, ',.0f'):>9} {rate:8.1f} "
            f"{_fmt(vs, '.3f'):>11} {_fmt(times, '.2f'):>10}"
        )
        rows.append(
            {
                "method": s.method.name,
                "requests": sent,
                "requests_per_s": round(rate, 1),
                "requests_per_s_vs_platform": round(vs, 4) if vs is not None else None,
            }
        )
    for name, rate in [
        (f"ceiling C/L = {args.concurrency}/{latency:g}s", ceiling),
        (f"ceiling serial 1/L = 1/{latency:g}s", 1 / latency),
    ]:
        vs = rate / platform_rate if platform_rate else None
        times = platform_rate / rate if rate else None
        print(f"{name:<28} {'limit':<8} {'-':>9} {rate:8.1f} {_fmt(vs, '.3f'):>11} {_fmt(times, '.2f'):>10}")
    serial = by_name.get("serial_requests")
    serial_rate = serial.median_report("requests_per_s") if serial else None
    if serial_rate and platform_rate:
        print(f"platform / serial_requests = {platform_rate / serial_rate:.1f}x (the seed recipe reports about 10x)")
    print(f"platform / ceiling C/L = {platform_rate / ceiling:.3f}")
    pool = by_name.get("threadpool_requests")
    step = by_name["platform"].median_report("fetch_s")
    if pool is not None and step:
        # the run's figure above also holds the run's start, the warehouse step and its checks
        print(
            f"details step alone (fetch_s {step:.2f} s, landing included) / bare pool ({pool.seconds:.2f} s): "
            f"{pool.seconds / step:.3f}x"
        )
    return rows


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def rate_limit_check(args: argparse.Namespace, url: str) -> dict[str, Any]:
    """One ``platform`` run with ``rate_limit``; the server's detail timestamps against the limit."""
    count = args.rate_details
    checked = Method(
        "platform_rate_limit", "platform", child_argv(args, "platform", url, count, args.rate_limit), count
    )
    print(
        f"\nrate-limit check: platform, rate_limit {args.rate_limit:g}/s, {count:,} details, "
        f"concurrency {args.concurrency}, latency {args.latency_ms} ms",
        flush=True,
    )
    sample = run_once(checked)
    times = sorted(float(r["t"]) for r in server_log(url) if DETAIL_PATH.match(str(r["path"]).split("?")[0]))
    n = len(times)
    span = times[-1] - times[0] if n > 1 else 0.0
    achieved = (n - 1) / span if span > 0 else float("inf")
    window = max(bisect.bisect_left(times, t + 1.0) - i for i, t in enumerate(times)) if times else 0
    achieved_x, window_x = achieved / args.rate_limit, window / args.rate_limit
    achieved_pass, window_pass = 0.95 <= achieved_x <= 1.0, window_x <= 1.0
    print(
        f"  run: {sample.seconds:.2f} s (process {sample.process_seconds:.2f} s), {n:,} detail requests at the server "
        f"over {span:.2f} s"
    )
    print(
        f"  achieved rate (n-1)/(t_last-t_first) = {achieved:.2f}/s; achieved/limit = {achieved_x:.4f} "
        f"(0.95..1.0): {'PASS' if achieved_pass else 'FAIL'}"
    )
    print(
        f"  most requests in any 1 s window [t_i, t_i+1) = {window}; max_window/limit = {window_x:.4f} "
        f"(<= 1.0): {'PASS' if window_pass else 'FAIL'}"
    )
    return {
        "benchmark": "rest_fanout",
        "method": "platform_rate_limit",
        "role": "platform",
        "rate_limit_per_s": args.rate_limit,
        "details": count,
        "concurrency": args.concurrency,
        "latency_ms": args.latency_ms,
        "detail_requests": n,
        "seconds": round(sample.seconds, 4),
        "span_s": round(span, 4),
        "achieved_per_s": round(achieved, 3),
        "achieved_over_limit": round(achieved_x, 4),
        "achieved_pass": achieved_pass,
        "max_window_requests": window,
        "max_window_over_limit": round(window_x, 4),
        "max_window_pass": window_pass,
    }


def fault_check(args: argparse.Namespace, url: str) -> dict[str, Any]:
    """``platform`` through the fault proxy twice (one run each): without faults, then with
    ``FAULT_PLAN``; the second must take at most (the first + Retry-After seconds / concurrency) x 1.2."""
    print(
        f"\nfault check: platform through sandbox/fault_proxy.py, {args.details:,} details, concurrency "
        f"{args.concurrency}, latency {args.latency_ms} ms; faults: 5% 429 (Retry-After 1 s) + 3% 500",
        flush=True,
    )
    with fault_proxy(url) as proxy:
        runs: dict[str, tuple[float, dict[str, Any]]] = {}
        for label, plan in (("fault-free", []), ("faults", FAULT_PLAN)):
            requests.post(f"{proxy}/_proxy/plan", json=plan, timeout=10).raise_for_status()
            method = Method(f"platform_{label}", "platform", child_argv(args, "platform", proxy, args.details), None)
            seconds = run_once(method).seconds
            stats = requests.get(f"{proxy}/_proxy/stats", timeout=30).json()
            runs[label] = (seconds, stats)
            print(f"  {label}: {seconds:.2f} s, {stats['received']:,} requests at the proxy, faults {stats['faults']}")
    clean, (faulty, stats) = runs["fault-free"][0], runs["faults"]
    waited = stats["faults"].get("429", 0) * 1.0  # Retry-After seconds in all
    budget = (clean + waited / args.concurrency) * 1.2
    passed = faulty <= budget
    print(
        f"  with faults / budget = {faulty:.2f} / {budget:.2f} s = {faulty / budget:.3f} (budget = (fault-free "
        f"{clean:.2f} s + {waited:.0f} s of Retry-After / {args.concurrency}) x 1.2): {'PASS' if passed else 'FAIL'}"
    )
    return {
        "benchmark": "rest_fanout",
        "method": "platform_fault_check",
        "role": "platform",
        "details": args.details,
        "concurrency": args.concurrency,
        "fault_free_s": round(clean, 4),
        "seconds": round(faulty, 4),
        "faults": stats["faults"],
        "retry_after_s": waited,
        "budget_s": round(budget, 4),
        "pass": passed,
    }


def main(argv: list[str] | None = None) -> None:
    """Parse arguments; as parent build the data, start the server and run every method; as child run one."""
    parser = argparse.ArgumentParser(prog="rest_fanout.py", description=__doc__.split("\n")[0])
    parser.add_argument("--details", type=int, default=2400, help="detail records served (default 2,400)")
    parser.add_argument(
        "--peer-details",
        type=int,
        default=200,
        help="details the serial peers fetch (serial_requests, dlt_rest_api; default 200)",
    )
    parser.add_argument("--latency-ms", type=int, default=50, help="server latency per request (default 50)")
    parser.add_argument("--concurrency", type=int, default=16, help="parallel requests (default 16)")
    parser.add_argument("--rate-limit", type=float, default=40.0, help="requests/s of the rate-limit check; 0: skip")
    parser.add_argument("--rate-details", type=int, default=800, help="details of the rate-limit check")
    parser.add_argument("--no-fault-check", action="store_true", help="skip the fault check (two more runs)")
    parser.add_argument("--mirror", type=Path, default=MIRROR, help="the PokeAPI mirror (holds api/v2)")
    parser.add_argument("--tmp", default=tempfile.gettempdir(), help="folder for the data and outputs")
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--total", type=int, help=argparse.SUPPRESS)
    args = parse_args(parser, argv)
    if args.child:
        child(args)
        return
    for name in ("peer_details", "rate_details"):
        value = getattr(args, name)
        if value < PAGE or value % PAGE or value > args.details:
            parser.error(f"--{name.replace('_', '-')} must be a multiple of {PAGE} and at most --details")
    if args.details < PAGE or args.concurrency < 1 or args.latency_ms < 1:
        parser.error(f"--details must be >= {PAGE}; --concurrency and --latency-ms >= 1")
    if not (args.mirror / "api" / "v2" / ENDPOINT).is_dir():
        raise SystemExit(f"the PokeAPI mirror is missing: {args.mirror}/api/v2/{ENDPOINT}")
    root = Path(tempfile.mkdtemp(prefix="ip-bench-rest-data-", dir=args.tmp))
    try:
        started = time.perf_counter()
        sizes = build_data(args.mirror, root, args.details)
        print(
            f"rest_fanout: {args.details:,} {ENDPOINT} details ({sum(sizes) / 1e6:.1f} MB of JSON) built in "
            f"{time.perf_counter() - started:.1f} s; latency {args.latency_ms} ms, concurrency {args.concurrency}",
            flush=True,
        )
        with pokeapi_server(root, args.latency_ms) as url:
            methods = select(build_methods(args, url, sizes), args.methods, always=("platform",))
            print(f"rest_fanout: {len(methods)} methods x {args.runs} runs against {url}", flush=True)
            warm_server = Method(
                "warm-up server", "limit", child_argv(args, "threadpool_requests", url, args.details), None
            )
            warmup = [warm_server, warm_imports("dagster", "integration_platform.components", "dlt", "duckdb")]
            summaries = run_interleaved(methods, args.runs, warmup=warmup)
            path = report(
                "rest_fanout",
                summaries,
                reference="platform",
                bytes_label="bytes of the detail JSON bodies fetched / seconds",
                extra_columns=[
                    ("requests", "requests", ",.0f"),
                    ("req/s", "requests_per_s", ",.1f"),
                    ("eff_conc", "eff_concurrency", ".1f"),
                    ("fetch_s", "fetch_s", ".2f"),
                    ("load_s", "load_s", ".2f"),
                    ("import_RSS_MB", "baseline_rss_mb", ".0f"),
                ],
            )
            rates = {row["method"]: row for row in throughput(summaries, args)}
            records: list[dict[str, Any]] = json.loads(path.read_text())
            for record in records:
                record.update(rates.get(record["method"], {}))
                record.update(latency_ms=args.latency_ms, concurrency=args.concurrency)
            records.append(
                {
                    "benchmark": "rest_fanout",
                    "method": "ceiling_concurrency_over_latency",
                    "role": "limit",
                    "computed": True,
                    "requests_per_s": args.concurrency / (args.latency_ms / 1000),
                    "latency_ms": args.latency_ms,
                    "concurrency": args.concurrency,
                }
            )
            if args.rate_limit > 0:
                records.append(rate_limit_check(args, url))
            if not args.no_fault_check:
                records.append(fault_check(args, url))
            path.write_text(json.dumps(records, indent=1) + "\n")
            print(f"results (with requests/s and the rate-limit check): {path}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
