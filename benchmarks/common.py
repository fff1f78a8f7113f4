"""Helpers shared by the benchmark scripts: fresh-process runs, medians, tables, JSON results.

Protocol. A benchmark script defines :class:`Method`\\ s. Each run of a method is a fresh
process started by :func:`run_once`:

- a *Python method* is the benchmark script itself, re-invoked as
  ``python benchmarks/<script>.py --child NAME ...``; the child does its imports, calls
  :func:`child_report` around the timed work and prints one ``BENCH_RESULT {json}`` line.
  ``seconds`` is the child's own timing of the work (connect to file closed), so interpreter
  start and imports are excluded; they are shown separately as ``process_s``.
- a *command method* (for example ``psql ... COPY ... TO STDOUT``) is timed from spawn to
  exit; its ``seconds`` is the whole process.

Peak RSS is the child's maximum resident set size as GNU ``/usr/bin/time`` reports it (its
``wait4`` ``ru_maxrss``: the child and any descendants it waited for), so it includes the
interpreter and imports; Python children also report their RSS before the timed work.
Runs are interleaved across methods (round ``r`` starts at method ``r mod n``), the reported
``seconds`` is the median over the runs and ``peak_rss_mb`` the maximum.
"""

import argparse
import atexit
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Role = Literal["platform", "limit", "peer"]

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
REPO_ROOT = BENCH_DIR.parent
RESULT_MARK = "BENCH_RESULT "
MB = 1_000_000
# The shared local servers and harness (``sandbox``) are imported from the checkout, never the tests.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(1, str(REPO_ROOT))
TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None


@dataclass(frozen=True)
class Method:
    """One way of doing the benchmark's job.

    ``argv`` is the full command line of the child process. ``rows`` is the number of rows the
    method processes and ``data_bytes`` the byte count its MB/s is computed from (``None``: no
    MB/s). ``note`` is printed under the table (for example "measured on fewer rows").
    ``prepare`` runs in the parent before every run, untimed (for example copying a file).
    ``discard_stdout`` sends the child's stdout to ``/dev/null`` (a command whose output is the
    data, such as ``COPY ... TO STDOUT``).
    """

    name: str
    role: Role
    argv: list[str]
    rows: int | None
    data_bytes: int | None = None
    note: str = ""
    prepare: Callable[[], None] | None = None
    env: dict[str, str] = field(default_factory=dict)
    discard_stdout: bool = False


@dataclass
class Sample:
    """One run of one method: work seconds, whole-process seconds, peak RSS and what the child said."""

    seconds: float
    process_seconds: float
    peak_rss_mb: float
    report: dict[str, Any]
    cpu_seconds: float | None = None


@dataclass
class Summary:
    """The runs of one method reduced to medians (seconds) and maxima (RSS)."""

    method: Method
    samples: list[Sample]

    @property
    def seconds(self) -> float:
        return statistics.median(s.seconds for s in self.samples)

    @property
    def process_seconds(self) -> float:
        return statistics.median(s.process_seconds for s in self.samples)

    @property
    def cpu_seconds(self) -> float | None:
        values = [s.cpu_seconds for s in self.samples if s.cpu_seconds is not None]
        return statistics.median(values) if values else None

    @property
    def peak_rss_mb(self) -> float:
        return max(s.peak_rss_mb for s in self.samples)

    @property
    def rows(self) -> int | None:
        reported = self.samples[-1].report.get("rows")
        return int(reported) if reported is not None else self.method.rows

    @property
    def rows_per_s(self) -> float | None:
        return self.rows / self.seconds if self.rows and self.seconds > 0 else None

    @property
    def mb_per_s(self) -> float | None:
        size = self.method.data_bytes
        return size / MB / self.seconds if size and self.seconds > 0 else None

    def median_report(self, key: str) -> float | None:
        """Median of a numeric value the child reported under ``key`` (None when absent)."""
        values = [float(s.report[key]) for s in self.samples if s.report.get(key) is not None]
        return statistics.median(values) if values else None


class BenchmarkError(RuntimeError):
    """A child process failed; the message carries the tail of its stderr."""


#: Methods whose run failed in this process: name -> why. The others still run and are reported;
#: the script then exits with status 1 (see :func:`_exit_on_failures`), so ``make bench`` is red.
FAILURES: dict[str, str] = {}


@atexit.register
def _exit_on_failures() -> None:
    if FAILURES:
        print(f"\nFAILED methods: {', '.join(sorted(FAILURES))} (why: above)", flush=True)
        sys.stderr.flush()
        os._exit(1)


def warm_imports(*modules: str) -> Method:
    """An untimed warm-up run that imports ``modules`` once (fills the OS page cache)."""
    code = "; ".join(f"import {m}" for m in modules)
    return Method("warm-up imports", "peer", [sys.executable, "-c", code], None)


def python_child(script: Path, method: str, *args: str) -> list[str]:
    """The argv that re-invokes ``script`` as the child for ``method`` with the same interpreter."""
    return [sys.executable, str(script), "--child", method, *args]


def run_once(method: Method) -> Sample:
    """Run ``method`` once in a fresh process; return its timing, peak RSS and report.

    The child runs under GNU ``/usr/bin/time`` so its peak RSS is its own: a child forked
    straight from this (large) Python process would report this process's resident set as
    its ``ru_maxrss`` (Linux keeps the pre-``exec`` high-water mark). Without
    ``/usr/bin/time`` the ``os.wait4`` figure is used and may be inflated that way.
    The child's stdout and stderr go to temporary files (no pipe can fill up). Raises
    :class:`BenchmarkError` when the child exits non-zero or a Python child prints no result.
    """
    if method.prepare is not None:
        method.prepare()
    env = {**os.environ, **method.env}
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.NamedTemporaryFile("r", suffix=".time") as timing,
    ):
        argv = [TIME, "-f", "%M %U %S", "-o", timing.name, *method.argv] if TIME else method.argv
        started = time.perf_counter()
        stdout_to = subprocess.DEVNULL if method.discard_stdout else out
        child = subprocess.Popen(argv, stdout=stdout_to, stderr=err, stdin=subprocess.DEVNULL, env=env, cwd=REPO_ROOT)
        _, status, usage = os.wait4(child.pid, 0)
        elapsed = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
        timed = (timing.read().strip().splitlines() or [""])[-1].split()
    if child.returncode != 0:
        tail = "\n".join(stderr.splitlines()[-30:])
        raise BenchmarkError(f"{method.name} exited with {child.returncode}:\n{tail}")
    if TIME and len(timed) == 3 and timed[0].isdigit():
        max_rss_kib, cpu = int(timed[0]), float(timed[1]) + float(timed[2])
    else:
        max_rss_kib, cpu = usage.ru_maxrss, usage.ru_utime + usage.ru_stime
    report: dict[str, Any] = {}
    for line in stdout.splitlines():
        if line.startswith(RESULT_MARK):
            report = json.loads(line[len(RESULT_MARK) :])
    if "--child" in method.argv and "seconds" not in report:
        raise BenchmarkError(f"{method.name} printed no result line; stderr:\n{stderr[-3000:]}")
    seconds = float(report.get("seconds", elapsed))
    return Sample(
        seconds=seconds, process_seconds=elapsed, peak_rss_mb=max_rss_kib * 1024 / MB, report=report, cpu_seconds=cpu
    )


def run_interleaved(methods: Sequence[Method], runs: int, warmup: Sequence[Method] = ()) -> list[Summary]:
    """Run every method ``runs`` times, interleaved and rotated.

    ``warmup`` methods run once first, untimed (to warm the server's caches).
    """
    code = code_version()
    print(f"code measured: {code}", flush=True)
    for method in warmup:
        print(f"  warm-up: {method.name}", flush=True)
        run_once(method)
    samples: dict[str, list[Sample]] = {m.name: [] for m in methods}
    for round_no in range(runs):
        shift = round_no % len(methods)
        for method in [*methods[shift:], *methods[:shift]]:
            if method.name in FAILURES:
                continue
            try:
                sample = run_once(method)
            except BenchmarkError as exc:
                FAILURES[method.name] = str(exc)
                print(f"  FAILED {method.name} (left out of the remaining runs and the table): {exc}", flush=True)
                continue
            samples[method.name].append(sample)
            got = sample.report.get("rows")
            if got is not None and method.rows is not None and int(got) != method.rows:
                print(f"  WARNING: {method.name} produced {got} rows, expected {method.rows}", flush=True)
            print(
                f"  run {round_no + 1}/{runs} {method.name:<28} {sample.seconds:8.2f} s"
                f"  (process {sample.process_seconds:6.2f} s, CPU {_fmt(sample.cpu_seconds, '.1f')} s,"
                f" peak RSS {sample.peak_rss_mb:7.1f} MB)",
                flush=True,
            )
    if code_version().partition(", ")[2] != code.partition(", ")[2]:
        print(
            f"WARNING: integration_platform/ changed during the runs (started with {code}, now "
            f"{code_version()}): the runs mix two versions",
            flush=True,
        )
    return [Summary(m, samples[m.name]) for m in methods if m.name not in FAILURES]


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def report(
    benchmark: str,
    summaries: Sequence[Summary],
    reference: str,
    bytes_label: str,
    extra_columns: Sequence[tuple[str, str, str]] = (),
) -> Path:
    """Print the figures table and write ``benchmarks/results/<benchmark>.json``.

    ``reference`` names the method ratios are relative to (normally the ``limit``):
    ``cpu_s`` is the child's user + system CPU seconds (whole process, from ``/usr/bin/time``;
    a database server's own work is not in it). ``rate_x`` = method rows/s / reference rows/s
    (higher is better; equals reference_seconds / method_seconds when both processed the same
    rows) and ``time_x`` =
    method seconds / reference seconds (lower is better). ``extra_columns`` are
    ``(header, report key, format)`` triples printed from the children's reports (medians).
    Returns the path of the JSON file.
    """
    ref = next((s for s in summaries if s.method.name == reference), None)
    if ref is None:  # the reference failed (see FAILURES) or was not selected: the figures without ratios
        why = "failed" if reference in FAILURES else "was not run (--methods)"
        print(f"{benchmark}: reference method {reference!r} {why}; no ratios")
        ref = Summary(Method(reference, "limit", [], None), [Sample(0.0, 0.0, 0.0, {})])
    header = (
        f"{'method':<28} {'role':<8} {'rows':>10} {'seconds':>8} {'process_s':>9} {'cpu_s':>6} "
        f"{'rows/s':>11} "
        f"{'MB/s':>7} {'peak_RSS_MB':>11} {'rate_x':>7} {'time_x':>7}"
    )
    for title, _, _ in extra_columns:
        header += f" {title:>12}"
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    runs = max((len(s.samples) for s in summaries), default=0)  # the reference may not have run
    print(
        f"\n{benchmark}: median of {runs} runs; ratios relative to {reference!r}; "
        f"MB/s = {bytes_label}; load average now {load} on {os.cpu_count()} CPUs"
    )
    print(header)
    print("-" * len(header))
    notes: list[str] = []
    for s in summaries:
        rate_x = s.rows_per_s / ref.rows_per_s if s.rows_per_s and ref.rows_per_s else None
        time_x = s.seconds / ref.seconds if s.rows == ref.rows and ref.seconds else None
        line = (
            f"{s.method.name:<28} {s.method.role:<8} {_fmt(s.rows, ',d'):>10} {s.seconds:8.2f} "
            f"{s.process_seconds:9.2f} {_fmt(s.cpu_seconds, '.1f'):>6} {_fmt(s.rows_per_s, ',.0f'):>11} "
            f"{_fmt(s.mb_per_s, '.1f'):>7} {s.peak_rss_mb:11.1f} {_fmt(rate_x, '.3f'):>7} "
            f"{_fmt(time_x, '.2f'):>7}"
        )
        for _, key, spec in extra_columns:
            line += f" {_fmt(s.median_report(key), spec):>12}"
        print(line)
        if s.method.note:
            notes.append(f"  {s.method.name}: {s.method.note}")
    if notes:
        print("notes:")
        print("\n".join(notes))
    records = [
        {
            "benchmark": benchmark,
            "method": s.method.name,
            "role": s.method.role,
            "seconds": round(s.seconds, 4),
            "rows": s.rows,
            "rows_per_s": round(s.rows_per_s, 1) if s.rows_per_s else None,
            "mb_per_s": round(s.mb_per_s, 3) if s.mb_per_s else None,
            "peak_rss_mb": round(s.peak_rss_mb, 1),
        }
        for s in summaries
    ]
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{benchmark}.json"
    path.write_text(json.dumps(records, indent=1) + "\n")
    print(f"results: {path}")
    return path


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    return done.stdout.strip()


def code_version() -> str:
    """The commit, and the ``integration_platform/`` tree measured (with a mark for local edits).

    Two calls return the same text exactly when the platform's code is the same (a commit that
    touches only other files changes the commit but not the tree). Local edits are fingerprinted
    by ``git diff``'s hash, so an edit between two calls is noticed too.
    """
    head = _git("rev-parse", "--short", "HEAD") or "unknown"
    tree = _git("rev-parse", "--short", "HEAD:integration_platform") or "unknown"
    diff = _git("diff", "HEAD", "--", "integration_platform")
    edits = f" + uncommitted edits {hashlib.sha1(diff.encode()).hexdigest()[:8]}" if diff else ""
    return f"commit {head}, integration_platform/ tree {tree}{edits}"


def rss_high_water_mb() -> float:
    """This process's peak RSS so far (``VmHWM`` from ``/proc/self/status``), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / MB
    return 0.0


def child_report(
    work: Callable[[], dict[str, Any]], after: Callable[[dict[str, Any]], dict[str, Any]] | None = None
) -> None:
    """Time ``work()`` in this (child) process and print the ``BENCH_RESULT`` line.

    ``work`` returns what it measured (``rows``, ``out_bytes``, ...). ``after(result)``, untimed,
    adds what is read back once the work is done (a run's step times: reading every event of a
    1,781-partition run back from Dagster's storage took 0.7 s, which the timed part must not hold).
    The printed record adds ``seconds`` (wall time of ``work``) and ``baseline_rss_mb`` (peak RSS
    before the work, i.e. what interpreter and imports cost).
    """
    baseline = rss_high_water_mb()
    started = time.perf_counter()
    result = work()
    seconds = time.perf_counter() - started
    if after is not None:
        result.update(after(result))
    if result.get("out_bytes") is not None:
        result["out_mb"] = result["out_bytes"] / MB
    print(
        RESULT_MARK + json.dumps({**result, "seconds": seconds, "baseline_rss_mb": baseline}, default=str), flush=True
    )


def parse_args(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None = None, default_runs: int = 3
) -> argparse.Namespace:
    """Parse known arguments; unknown ones (meant for another benchmark via run_all.py) are reported.
    ``default_runs``: ``--runs`` when not given (a benchmark whose runs spread widely takes more)."""
    parser.add_argument(
        "--runs",
        type=int,
        default=default_runs,
        help=f"runs per method (median is reported; default {default_runs}); >= 3",
    )
    parser.add_argument("--methods", default="", help="comma-separated subset of methods to run")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args, unknown = parser.parse_known_args(argv)
    if unknown and args.child is None:
        print(f"{parser.prog}: ignoring arguments meant for other benchmarks: {' '.join(unknown)}", file=sys.stderr)
    if args.runs < 3 and args.child is None:
        print("note: fewer than 3 runs; the DESIGN asks for a median of at least 3", file=sys.stderr)
    return args


def select(methods: Sequence[Method], wanted: str, always: Sequence[str] = ()) -> list[Method]:
    """The methods named in comma-separated ``wanted`` (all when empty), plus ``always``.

    Names this benchmark does not have are reported on stderr and ignored.
    """
    names = {n.strip() for n in wanted.split(",") if n.strip()}
    if not names:
        return list(methods)
    unknown = names - {m.name for m in methods}
    if unknown:  # run_all.py passes one --methods list to every benchmark
        print(
            f"ignoring methods this benchmark does not have: {sorted(unknown)}; it has {[m.name for m in methods]}",
            file=sys.stderr,
        )
    return [m for m in methods if m.name in names or m.name in always]


def step_seconds(instance: Any, run_id: str, source: str, stream: str) -> dict[str, float | None]:
    """``fetch_s`` / ``load_s``: the seconds of stream ``source``/``stream``'s lake / warehouse step in run
    ``run_id`` (Dagster's step stats, from step start to step end; ``None`` when a step has none)."""
    steps = {s.step_key: s for s in instance.get_run_step_stats(run_id)}

    def seconds(step_key: str) -> float | None:
        stats = steps.get(step_key)
        if stats is None or stats.start_time is None or stats.end_time is None:
            return None
        return float(stats.end_time - stats.start_time)

    # the steps' op names (an op name has no dot, unlike the warehouse asset's key)
    return {"fetch_s": seconds(f"{source}__{stream}"), "load_s": seconds(f"warehouse__{source}__{stream}")}
