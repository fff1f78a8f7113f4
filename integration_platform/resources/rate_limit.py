"""A proactive request-rate limit shared by every thread and process of one Dagster run.

Why our own code: the limit must hold for the whole run, whose steps Dagster's default
executor runs in separate processes, each with its own fan-out threads. The state is two
floats in a small file updated under ``fcntl.flock`` (in-process threads also serialise on a
lock): the next free slot and the time of the last admission.

A request passes in two phases. It first reserves a slot (GCRA, the Generic Cell Rate
Algorithm of ATM Forum TM 4.0 in its "virtual scheduling" form: slots ``SAFETY / rate``
seconds apart, never in bursts) and sleeps until it; then it is admitted only if the last
admission, by any thread or process, is at least as far back, else it sleeps again. The second
phase is what makes the limit hold by construction: a thread that wakes late (a busy host) is
admitted late, and the next one waits for it, so admissions are never closer than
``SAFETY / rate`` seconds and any one-second window holds fewer than ``rate`` of them, whatever
the scheduling. The margin (:data:`SAFETY`) is left for the time between admission and the
bytes reaching the server. The price of a late wake-up is paid by the requests behind it
(they are shifted by it), never by the server.
"""

import fcntl
import hashlib
import os
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

#: Admissions are spaced this much wider than ``1 / rate``, so that the time between admission
#: and the request reaching the server (up to 40 ms on a busy host) cannot push a server-side
#: one-second window over the limit; the achieved rate is 96% of the limit, 94% on a host busy
#: enough to wake threads late (each late admission shifts the later ones). That slack is margin
#: too: 75 ms from admission to server was seen on such a host, and a variant that made up for late
#: admissions then let 11 requests into one second of a 10/s limit (README, "Performance").
SAFETY = 1.04
_STATE = struct.Struct("<dd")  # next free slot, last admission (wall-clock seconds)

_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def _thread_lock(path: str) -> threading.Lock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(path, threading.Lock())


def _forget_old_runs(folder: Path, max_age: float = 86400.0) -> None:
    """Remove state files untouched for ``max_age`` seconds (their runs are long over)."""
    cutoff = time.time() - max_age
    for path in folder.glob("*.gcra"):
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
        except OSError:  # another process removed it first
            pass


class RateLimiter:
    """At most ``rate`` requests per second for everything sharing ``scope``.

    ``scope`` names what shares the budget (the API and the run id); ``state_dir`` holds the
    state files (default: the system temp dir). ``acquire()`` blocks until the caller may
    send one request and returns the time it was admitted. Raises ``ValueError`` for a
    non-positive rate.
    """

    def __init__(
        self,
        rate: float,
        scope: str,
        state_dir: Path | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate limit must be > 0 requests per second, got {rate}")
        self.interval = SAFETY / rate  # between slots, and between admissions
        self.clock, self.sleep = clock, sleep  # injectable for a test with a controlled clock
        digest = hashlib.sha256(scope.encode()).hexdigest()[:24]
        folder = state_dir or Path(tempfile.gettempdir()) / "integration_platform-rate"
        folder.mkdir(parents=True, exist_ok=True)
        self.path = str(folder / f"{digest}.gcra")
        _forget_old_runs(folder)

    @contextmanager
    def _state(self) -> Iterator[list[float]]:
        """The ``[next slot, last admission]`` pair, locked against every thread and process; what
        the caller leaves in the list is written back."""
        with _thread_lock(self.path):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                raw = os.pread(fd, _STATE.size, 0)
                # wall-clock times: they must mean the same in every process
                state = list(_STATE.unpack(raw)) if len(raw) == _STATE.size else [0.0, 0.0]
                yield state
                os.pwrite(fd, _STATE.pack(*state), 0)
            finally:
                os.close(fd)  # closing releases the flock

    def acquire(self) -> float:
        """Wait until the caller may send one request (module doc); returns the time of its
        admission (``clock()`` seconds), at least ``SAFETY / rate`` after every other."""
        with self._state() as state:
            now = self.clock()
            slot = max(now, state[0])
            state[0] = slot + self.interval
        if slot > now:
            self.sleep(slot - now)
        while True:
            with self._state() as state:
                now = self.clock()
                due = state[1] + self.interval
                if now >= due:
                    state[1] = now
                    return now
            self.sleep(due - now)
