"""Reverse ETL throughput: warehouse rows posted one per request to a local target with a fixed latency.

    python benchmarks/reverse_etl.py [--rows 20000] [--latency-ms 20] [--concurrency 16] [--runs 3]

The target is ``sandbox/push_target/server.py`` (stores every body in SQLite, honours Idempotency-Key) with
``--latency-ms`` of simulated work per request; it is reset before every run, so no run is helped by replays.
Methods, each in its own process:

- ``platform``: the ``HttpSync`` asset (record mode, ``concurrency`` requests in flight) run through the test
  harness on a DuckDB warehouse of ``--rows`` rows: read, map, post, per-record results landed as Parquet, mark;
- ``serial_requests`` (peer): a ``requests.Session`` loop posting the same bodies one after the other (the seed
  recipe); on ``--serial-rows`` rows (20 ms x 20,000 would be 7 minutes per run), compare its rows/s;
- ``async_loader`` (limit): a bare httpx2 ``AsyncClient`` loop with the same concurrency and pre-built bodies, no
  bookkeeping: what this target and client can take at that concurrency.

Reported: rows/s and ratios (``rate_x`` relative to the limit); the platform/serial speed-up is printed below.
"""

import argparse
import asyncio
import hashlib
import json
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import requests
from common import Method, child_report, parse_args, python_child, report, run_interleaved, select

SCRIPT = Path(__file__).resolve()


def bodies(rows: int) -> list[tuple[str, bytes]]:
    """(idempotency key, JSON body) of each row, as the platform would send them."""
    out = []
    for i in range(1, rows + 1):
        key = hashlib.sha256(json.dumps(["bench", [i]]).encode()).hexdigest()
        out.append((key, json.dumps({"contact_id": i, "mail": f"user{i}@example.com", "origin": "warehouse"}).encode()))
    return out


def run_platform(args: argparse.Namespace) -> None:
    import dagster as dg
    import duckdb

    from sandbox.harness import latest_metadata, platform

    work = Path(tempfile.mkdtemp(dir=args.tmp))
    with duckdb.connect(str(work / "warehouse.duckdb")) as conn:
        conn.execute("CREATE SCHEMA crm")
        conn.execute(
            "CREATE TABLE crm.contacts AS SELECT i AS id, 'user' || i || '@example.com' AS email "
            "FROM range(1, ? + 1) t(i)",
            [args.count],
        )
    attributes = {
        "sync": "bench",
        "source": {"warehouse": True},
        "table": "crm.contacts",
        "key_columns": ["id"],
        "target": {"base_url": args.url, "path": "/api/contacts"},
        "mapping": {"contact_id": "id", "mail": "email", "origin": "literal:warehouse"},
        "concurrency": args.concurrency,
        "chunk_rows": 5000,
    }
    text = json.dumps({"type": "integration_platform.components.HttpSync", "attributes": attributes})
    key = dg.AssetKey(["reverse_etl", "bench"])
    with dg.instance_for_test() as instance:
        plat = platform(text, work, instance)

        def work_fn() -> dict[str, Any]:
            assert plat.materialize([key]).success
            meta = latest_metadata(instance, key)
            return {"rows": meta["rows_succeeded"], "requests": meta["requests"]}

        child_report(work_fn)


def run_serial(args: argparse.Namespace) -> None:
    payload = bodies(args.count)

    def work() -> dict[str, Any]:
        ok = 0
        with requests.Session() as session:
            for key, body in payload:
                response = session.post(
                    f"{args.url}/api/contacts",
                    data=body,
                    headers={"Content-Type": "application/json", "Idempotency-Key": key},
                    timeout=60,
                )
                ok += response.ok
        return {"rows": ok, "requests": len(payload)}

    child_report(work)


def run_loader(args: argparse.Namespace) -> None:
    import httpx2 as httpx

    payload = bodies(args.count)

    async def load() -> int:
        limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
        queue = iter(payload)
        ok = 0
        async with httpx.AsyncClient(limits=limits, timeout=60) as client:

            async def worker() -> None:
                nonlocal ok
                for key, body in queue:
                    response = await client.post(
                        f"{args.url}/api/contacts",
                        content=body,
                        headers={"Content-Type": "application/json", "Idempotency-Key": key},
                    )
                    ok += response.is_success

            await asyncio.gather(*(worker() for _ in range(args.concurrency)))
        return ok

    child_report(lambda: {"rows": asyncio.run(load()), "requests": len(payload)})


def child(args: argparse.Namespace) -> None:
    {"platform": run_platform, "serial_requests": run_serial, "async_loader": run_loader}[args.child](args)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000, help="rows posted by platform and limit (default 20,000)")
    parser.add_argument("--serial-rows", type=int, default=2_000, help="rows posted by the serial peer (default 2,000)")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="target latency per request (default 20)")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight (default 16)")
    parser.add_argument("--tmp", default=tempfile.gettempdir(), help="folder for the data")
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    args = parse_args(parser, argv)
    if args.child:
        child(args)
        return
    from sandbox.push_target import push_target

    with ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=args.tmp)))
        target = stack.enter_context(push_target(folder / "target.sqlite", latency_ms=args.latency_ms))

        def argv_for(name: str, count: int) -> list[str]:
            extra = ["--url", target.url, "--count", str(count), "--concurrency", str(args.concurrency)]
            return [*python_child(SCRIPT, name), *extra, "--tmp", str(folder)]

        methods = [
            Method("async_loader", "limit", argv_for("async_loader", args.rows), args.rows, prepare=target.reset),
            Method("platform", "platform", argv_for("platform", args.rows), args.rows, prepare=target.reset),
            Method(
                "serial_requests",
                "peer",
                argv_for("serial_requests", args.serial_rows),
                args.serial_rows,
                note=f"measured on {args.serial_rows:,} rows; compare rows/s",
                prepare=target.reset,
            ),
        ]
        methods = select(methods, args.methods, always=["async_loader"])
        summaries = run_interleaved(methods, args.runs)
        report("reverse_etl", summaries, "async_loader", "-", extra_columns=[("requests", "requests", ",.0f")])
        by_name = {s.method.name: s for s in summaries}
        if "platform" in by_name and "serial_requests" in by_name:
            speedup = (by_name["platform"].rows_per_s or 0) / (by_name["serial_requests"].rows_per_s or 1)
            print(f"platform vs serial requests loop: {speedup:.1f}x rows/s (latency {args.latency_ms:g} ms/request)")
        print(f"target: {args.latency_ms:g} ms per request, {args.concurrency} in flight; {time.strftime('%H:%M:%S')}")


if __name__ == "__main__":
    main()
