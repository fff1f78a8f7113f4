"""Landing a table in a lake on each object store, against the same bytes uploaded by the store's own SDK.

Usage::

    .venv/bin/python benchmarks/object_store_lake.py                 # 5M rows, 3 runs
    .venv/bin/python benchmarks/object_store_lake.py --rows 500000   # quicker

Servers (started untimed, on loopback, stopped by pid; ``sandbox.object_stores``): moto (S3 API),
fake-gcs-server (GCS JSON API, in memory) and Azurite (Azure Blob, in memory). They are
emulators: their own speed bounds every method alike, so the ratios between a store's methods are
what this measures, not the clouds' throughput.

Data: ``--rows`` rows of 8 typed columns (ids, integers, decimals, text, timestamps, dates, booleans,
nulls) made by DuckDB into a Parquet source file, untimed. Each method runs in a fresh process:

- ``platform_<store>`` (platform): the core landing (``integration_platform.core.landing.land``) of
  the source read batch by batch, through ``LakeResource(url=<store>://bucket/raw).store()``:
  Parquet encoding (zstd), upload of the staged file, manifest. Checked untimed: the manifest's rows.
- ``platform_local`` (platform): the same landing into a local folder (the encoding's share).
- ``sdk_<store>`` (limit): the file the platform landed locally (same bytes) uploaded by the store's
  SDK: boto3 ``upload_file``, google-cloud-storage ``Blob.upload_from_filename``, azure-storage-blob
  ``BlobClient.upload_blob``. Checked untimed: the object's size.

``time_x`` of a platform method against its store's SDK upload is printed per store at the end.

Manifest listings (after the table, in this process; ``--manifests 0`` skips them): ``--manifests``
(default 1,781, the daily drops of the file-drop benchmark) small JSON manifests of one stream written
to each store (untimed), then, median of 3 each: ``list_only`` (limit: the store's listing alone),
``one_by_one`` (peer: the listing and a read of each manifest after another, as a script does and as
the platform did before 6 December 2026), ``platform_cold`` (``read_listed``, what a run does: the
listing, then the manifests 10 at a time) and ``platform_again`` (``read_listed`` once more with
nothing changed, what the drop sensor's next tick does in the long-lived code server: the listing,
the manifests from memory). Ratios against ``one_by_one``; every read is checked against the first.
"""

import argparse
import json
import shutil
import sys
import tempfile
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from common import (
    MB,
    Method,
    Summary,
    child_report,
    parse_args,
    python_child,
    report,
    run_interleaved,
    select,
    warm_imports,
)

SCRIPT = Path(__file__).resolve()
STORES = ("s3", "gcs", "azure")
SCHEMES = {"s3": "s3", "gcs": "gs", "azure": "az"}
SOURCE_SQL = """
SELECT range AS id,
       (range * 7919) % 100000 AS quantity,
       CASE WHEN range % 29 = 0 THEN NULL ELSE ((range * 104729) % 10000000) / 100.0 END::DECIMAL(12, 2) AS amount,
       'customer ' || range || ' ' || md5(range::VARCHAR) AS label,
       TIMESTAMPTZ '2020-01-01 00:00:00+00' + to_seconds((range * 7907) % 157680000) AS created_at,
       DATE '2020-01-01' + (range % 1826)::INTEGER AS order_day,
       range % 3 = 0 AS active,
       CASE WHEN range % 7 = 0 THEN NULL ELSE range % 1000 END AS bucket
FROM range({rows})
"""


def make_source(work: Path, rows: int) -> Path:
    import duckdb

    path = work / "source.parquet"
    with duckdb.connect() as conn:
        conn.execute("SET TimeZone = 'UTC'")
        conn.execute(f"COPY ({SOURCE_SQL.format(rows=rows)}) TO '{path}' (FORMAT parquet, COMPRESSION zstd)")
    return path


def lake(store: str, args: argparse.Namespace, bucket: str) -> Any:
    """The platform's lake store for ``store`` (``local``: a folder under ``--out``)."""
    from integration_platform.resources.lake import LakeResource
    from integration_platform.resources.object_stores import AzureBlobSettings, GcsSettings, S3Settings

    if store == "local":
        return LakeResource(url=args.out).store()
    s3 = S3Settings(
        endpoint_url=args.s3, region_name="us-east-1", aws_access_key_id="bench", aws_secret_access_key="bench"
    )
    return LakeResource(
        url=f"{SCHEMES[store]}://{bucket}/raw",
        s3=s3,
        gcs=GcsSettings(endpoint_url=args.gcs, token="anon", project="bench"),
        azure=AzureBlobSettings(connection_string=args.azure),
    ).store()


def run_platform(args: argparse.Namespace, store: str) -> None:
    import pyarrow.parquet as pq

    from integration_platform.core.landing import land
    from integration_platform.core.streams import StreamSpec

    spec = StreamSpec(source="bench", name="orders", write_disposition="replace")
    target = lake(store, args, args.bucket)
    source = pq.ParquetFile(args.source)

    def work() -> dict[str, Any]:
        reader = source.iter_batches(batch_size=100_000)
        import pyarrow as pa

        manifest = land(
            target,
            spec,
            "snapshot",
            pa.RecordBatchReader.from_batches(source.schema_arrow, reader),
            source.schema_arrow,
            full=True,
        )
        return {"rows": manifest.rows, "out_bytes": manifest.bytes, "files": len(manifest.files)}

    child_report(work)


def run_sdk(args: argparse.Namespace, store: str) -> None:
    paths = [Path(p) for p in json.loads(args.file)]
    prefix = f"raw/sdk/{uuid.uuid4().hex}"
    if store == "s3":
        import boto3

        client = boto3.client(
            "s3", endpoint_url=args.s3, region_name="us-east-1", aws_access_key_id="b", aws_secret_access_key="b"
        )

        def upload(path: Path, key: str) -> int:
            client.upload_file(str(path), args.bucket, key)
            return int(client.head_object(Bucket=args.bucket, Key=key)["ContentLength"])

    elif store == "gcs":
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        gcs = storage.Client(
            project="bench", credentials=AnonymousCredentials(), client_options={"api_endpoint": args.gcs}
        )

        def upload(path: Path, key: str) -> int:
            blob = gcs.bucket(args.bucket).blob(key)
            blob.upload_from_filename(str(path))
            blob.reload()
            return int(blob.size or 0)

    else:
        from azure.storage.blob import BlobServiceClient

        azure = BlobServiceClient.from_connection_string(args.azure)

        def upload(path: Path, key: str) -> int:
            blob = azure.get_blob_client(args.bucket, key)
            with path.open("rb") as data:
                blob.upload_blob(data, overwrite=True)
            return int(blob.get_blob_properties().size)

    def work() -> dict[str, Any]:
        sizes = [upload(path, f"{prefix}/{path.name}") for path in paths]
        expected = [path.stat().st_size for path in paths]
        if sizes != expected:
            raise SystemExit(f"sdk_{store}: uploaded {sizes} bytes of {expected}")
        return {"out_bytes": sum(sizes), "files": len(paths)}

    child_report(work)


def child(args: argparse.Namespace) -> None:
    kind, _, store = args.child.partition("_")
    if kind == "platform":
        run_platform(args, store)
    else:
        run_sdk(args, store)


def make_buckets(servers: dict[str, str]) -> dict[str, str]:
    """One new bucket (container) per store; returns ``{store: name}``."""
    import boto3
    from azure.storage.blob import BlobServiceClient

    from integration_platform.resources.object_stores import GcsSettings, gcs_filesystem

    names = {store: f"bench-{store}-{uuid.uuid4().hex[:8]}" for store in STORES}
    boto3.client(
        "s3", endpoint_url=servers["s3"], region_name="us-east-1", aws_access_key_id="b", aws_secret_access_key="b"
    ).create_bucket(Bucket=names["s3"])
    gcs_filesystem(GcsSettings(endpoint_url=servers["gcs"], token="anon", project="bench")).mkdir(names["gcs"])
    BlobServiceClient.from_connection_string(servers["azure"]).create_container(names["azure"])
    return names


def main(argv: list[str] | None = None) -> None:
    """Parse arguments; as parent make the source, start the servers and run every method; as child run one."""
    parser = argparse.ArgumentParser(prog="object_store_lake.py", description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=5_000_000, help="rows of the table (default 5,000,000)")
    parser.add_argument("--tmp", default=None, help="folder for the source and the local lake")
    parser.add_argument("--manifests", type=int, default=1781, help="manifests of the listing section; 0: skip it")
    for hidden in ("--source", "--file", "--out", "--bucket", "--s3", "--gcs", "--azure"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    args = parse_args(parser, argv)
    if args.child:
        child(args)
        return
    from sandbox import ServerMissing
    from sandbox.object_stores import azurite, fake_gcs_server, moto_s3

    work = Path(tempfile.mkdtemp(prefix="ip-bench-object-lake-", dir=args.tmp))
    try:
        with ExitStack() as stack:
            servers = {"s3": moto_s3(stack), "gcs": fake_gcs_server(stack), "azure": azurite(stack).connection_string}
            buckets = make_buckets(servers)
            source = make_source(work, args.rows)
            landed = landed_files(work, source, args.rows)
            common = [
                "--source",
                str(source),
                "--file",
                json.dumps([str(p) for p in landed]),
                "--out",
                str(work / "lake"),
            ]
            common += ["--s3", servers["s3"], "--gcs", servers["gcs"], "--azure", servers["azure"]]
            size = sum(p.stat().st_size for p in landed)
            methods = [
                Method(
                    "platform_local",
                    "platform",
                    python_child(SCRIPT, "platform_local", *common, "--bucket", "-"),
                    args.rows,
                    size,
                )
            ]
            for store in STORES:
                argv_store = [*common, "--bucket", buckets[store]]
                methods.append(
                    Method(
                        f"platform_{store}",
                        "platform",
                        python_child(SCRIPT, f"platform_{store}", *argv_store),
                        args.rows,
                        size,
                    )
                )
                methods.append(
                    Method(
                        f"sdk_{store}",
                        "limit",
                        python_child(SCRIPT, f"sdk_{store}", *argv_store),
                        args.rows,
                        size,
                        note="the platform's Parquet file, uploaded by the SDK",
                    )
                )
            methods = select(methods, args.methods, always=("sdk_s3",))
            print(
                f"object_store_lake: {len(methods)} methods x {args.runs} runs, {args.rows:,} rows, "
                f"Parquet {size / MB:,.1f} MB, servers {servers['s3']} {servers['gcs']} (Azurite)",
                flush=True,
            )
            warmup = [warm_imports("gcsfs", "adlfs", "boto3", "integration_platform.core.landing")]
            summaries = run_interleaved(methods, args.runs, warmup=warmup)
            report("object_store_lake", summaries, reference="sdk_s3", bytes_label="Parquet bytes / seconds")
            print_store_ratios(summaries)
            if args.manifests > 0:
                manifest_listings(servers, make_buckets(servers), args.manifests)
    except ServerMissing as exc:
        raise SystemExit(f"object_store_lake: a server is missing: {exc}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)


def landed_files(work: Path, source: Path, rows: int) -> list[Path]:
    """Land the source once into a local lake (untimed) and return its Parquet files: the bytes
    the SDK methods upload."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from integration_platform.core.lake import LocalLake
    from integration_platform.core.landing import land
    from integration_platform.core.streams import StreamSpec

    parquet = pq.ParquetFile(source)
    store = LocalLake(work / "reference")
    spec = StreamSpec(source="bench", name="orders", write_disposition="replace")
    reader = pa.RecordBatchReader.from_batches(parquet.schema_arrow, parquet.iter_batches(batch_size=100_000))
    manifest = land(store, spec, "snapshot", reader, parquet.schema_arrow, full=True)
    if manifest.rows != rows:
        raise SystemExit(f"reference landing: {manifest.rows} rows of {rows}")
    return [store.root / f.key for f in manifest.files]


def print_store_ratios(summaries: list[Summary]) -> None:
    """Per store: the platform's landing time over the SDK's upload of the same bytes."""
    seconds = {s.method.name: s.seconds for s in summaries if s.seconds}
    print("\nplatform landing / SDK upload of the same bytes (time_x; 1.0 = no platform cost beyond the upload):")
    for store in STORES:
        platform, sdk = seconds.get(f"platform_{store}"), seconds.get(f"sdk_{store}")
        if platform and sdk:
            local = seconds.get("platform_local")
            encode = f"; of which encoding (platform_local) {local:.2f} s" if local else ""
            print(f"  {store:6s} {platform:7.2f} s / {sdk:6.2f} s = {platform / sdk:5.2f}x{encode}")
    print(json.dumps({k: round(v, 3) for k, v in seconds.items()}))


def manifest_listings(servers: dict[str, str], buckets: dict[str, str], count: int) -> None:
    """The manifest-listing section (module doc): per store, the seconds of each way and its ratio."""
    import statistics
    import time
    from concurrent.futures import ThreadPoolExecutor

    from integration_platform.core.manifest_reads import forget_read, read_listed

    prefix = "bench/drops/_manifests/"
    print(f"\nmanifest listings: {count:,} manifests of one stream per store, median of 3 (module doc)")
    print(f"  {'store':6s} {'list_only':>10s} {'one_by_one':>11s} {'platform_cold':>14s} {'platform_again':>15s}")
    for store in STORES:
        lake_store = lake(store, argparse.Namespace(out=None, **servers), buckets[store])
        keys = [f"{prefix}{day:05d}.json" for day in range(count)]
        with ThreadPoolExecutor(8) as pool:  # untimed: what 1,781 landings left behind
            bodies = [{"window": key, "landing_id": uuid.uuid4().hex} for key in keys]
            list(pool.map(lake_store.put_json, keys, bodies))
        timed: dict[str, list[float]] = {"list_only": [], "one_by_one": [], "platform_cold": [], "platform_again": []}
        for _ in range(3):
            started = time.perf_counter()
            listed = lake_store.list_keys(prefix)
            timed["list_only"].append(time.perf_counter() - started)
            started = time.perf_counter()
            expected = [lake_store.get_json(key) for key in lake_store.list_keys(prefix)]
            timed["one_by_one"].append(time.perf_counter() - started)
            forget_read()
            for name in ("platform_cold", "platform_again"):
                started = time.perf_counter()
                got = read_listed(lake_store, prefix)
                timed[name].append(time.perf_counter() - started)
                if got != expected or len(listed) != count:
                    raise SystemExit(f"manifest listings: {store} {name} read {len(got)} manifests, not the {count}")
        median = {name: statistics.median(values) for name, values in timed.items()}
        print(
            f"  {store:6s} {median['list_only']:9.2f}s {median['one_by_one']:10.2f}s {median['platform_cold']:13.2f}s "
            f"{median['platform_again']:14.2f}s   one_by_one / platform_cold "
            f"{median['one_by_one'] / median['platform_cold']:.1f}x, / platform_again "
            f"{median['one_by_one'] / median['platform_again']:.1f}x"
        )


if __name__ == "__main__":
    sys.exit(main())
