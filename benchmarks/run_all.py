"""Run every benchmark in turn, each as its own process, passing the command-line arguments through.

Usage::

    .venv/bin/python benchmarks/run_all.py                 # what `make bench` runs
    .venv/bin/python benchmarks/run_all.py --rows 20000 --days 300 --messages 100000 --details 1200
                                                           # a quicker pass, each at a reduced size

Sizes: ``--rows`` is the table of ``sql_extract``, ``merge``, ``cdc`` and ``object_store_lake``
(5M by default) but the rows ``reverse_etl`` posts (20,000 by default: a larger value makes it
longer, not shorter); ``--days`` the drops of ``file_ingest``; ``--messages`` the queue and topic of
``queue_ingest`` and ``kafka_ingest``; ``--details`` the requests of ``rest_fanout``.

Each benchmark ignores (and names) the arguments meant only for another one. Exits with the
first non-zero status after running all of them.
"""

import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
BENCHMARKS: tuple[str, ...] = (
    "small_run.py",
    "sql_extract.py",
    "merge.py",
    "cdc.py",
    "rest_fanout.py",
    "sftp_download.py",
    "sftp_download.py --files 1781",
    "file_ingest.py",
    "queue_ingest.py",
    "kafka_ingest.py",
    "reverse_etl.py",
    "object_store_lake.py",
    "html_extract.py",
    "cluster_scale.py",
)


def main(argv: list[str]) -> int:
    """Run each entry of :data:`BENCHMARKS` (a script and its own arguments) with ``argv`` after them; print
    a summary (each entry's exit status and seconds); return the first failing exit status (or 0)."""
    done: list[tuple[str, int, float]] = []
    for entry in BENCHMARKS:
        script, *own = entry.split()
        print(f"=== {entry} {' '.join(argv)}", flush=True)
        started = time.perf_counter()
        code = subprocess.run([sys.executable, str(BENCH_DIR / script), *own, *argv], check=False).returncode
        seconds = time.perf_counter() - started
        print(f"=== {entry}: exit {code} after {seconds:.0f} s\n", flush=True)
        done.append((entry, code, seconds))
    print(f"{'benchmark':<32} {'exit':>4} {'seconds':>8}")
    for entry, code, seconds in done:
        print(f"{entry:<32} {code:>4} {seconds:>8.0f}")
    failed = sum(1 for _, code, _ in done if code)
    total = sum(seconds for _, _, seconds in done)
    print(f"{len(done) - failed} of {len(done)} exited 0 in {total / 60:.1f} min", flush=True)
    return next((code for _, code, _ in done if code), 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
