"""The run-wide rate limiter holds its limit by construction: admissions from several threads and
processes, with wake-ups made late at random, are never closer than 1 / rate, so no one-second
window holds more than ``rate`` of them. No server: the property is checked on the admissions."""

import itertools
import json
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from integration_platform.resources.rate_limit import RateLimiter

pytestmark = pytest.mark.fast
RATE = 400.0
PER_WORKER = 150

WORKER = """
import json, random, sys, time
from pathlib import Path
from integration_platform.resources.rate_limit import RateLimiter
rng = random.Random(int(sys.argv[3]))
late = lambda d: time.sleep(d + rng.uniform(0, 0.004))
limiter = RateLimiter(float(sys.argv[1]), "test", Path(sys.argv[2]), sleep=late)
print(json.dumps([limiter.acquire() for _ in range(int(sys.argv[4]))]))
"""


def _late_sleep(rng: random.Random) -> Callable[[float], None]:
    return lambda seconds: time.sleep(seconds + rng.uniform(0, 0.004))  # a busy host wakes threads late


def test_admissions_are_never_closer_than_the_interval(tmp_path: Path) -> None:
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(RATE), str(tmp_path), str(seed), str(PER_WORKER)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for seed in (1, 2)
    ]
    admitted: list[float] = []
    lock = threading.Lock()

    def thread(seed: int) -> None:
        limiter = RateLimiter(RATE, "test", tmp_path, sleep=_late_sleep(random.Random(seed)))
        mine = [limiter.acquire() for _ in range(PER_WORKER)]
        with lock:
            admitted.extend(mine)

    threads = [threading.Thread(target=thread, args=(seed,)) for seed in range(10, 16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for process in processes:
        out, _ = process.communicate(timeout=120)
        assert process.returncode == 0
        admitted.extend(json.loads(out))
    admitted.sort()
    assert len(admitted) == 8 * PER_WORKER
    min_gap = RateLimiter(RATE, "other", tmp_path).interval  # never two closer: fewer than RATE in any second
    gaps = [b - a for a, b in itertools.pairwise(admitted)]
    # wall-clock seconds near 1.7e9 are doubles with a resolution of 2.4e-7 s: compare to 1 microsecond
    assert min(gaps) >= min_gap - 1e-6, f"two admissions {min(gaps) * 1000:.3f} ms apart"
    window = max(sum(1 for t in admitted if start <= t < start + 1.0) for start in admitted)
    assert window <= RATE
    achieved = (len(admitted) - 1) / (admitted[-1] - admitted[0])
    assert achieved > RATE * 0.5, f"{achieved:.0f}/s: the limiter should not throttle far below its rate"
