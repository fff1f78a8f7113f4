"""``core.lake.process_alive``: whether the writer a staging or landed file names is still running.
A live writer read as gone has its files deleted by another landing's sweep."""

import subprocess
import time

import pytest

from integration_platform.core.lake import process_alive, process_started

pytestmark = pytest.mark.fast


def test_a_live_process_looked_up_late_is_alive_and_a_reused_pid_is_not() -> None:
    before = time.time()
    child = subprocess.Popen(["sleep", "30"])
    after = time.time()
    try:
        assert process_alive(child.pid, started_by=after)
        time.sleep(2.5)
        # The kernel drops /proc/<pid>'s inode under memory pressure and makes it anew when next looked
        # up, with that time as its change time (forced here: dentries and inodes only, as root).
        with open("/proc/sys/vm/drop_caches", "w") as caches:
            caches.write("2\n")
        assert process_alive(child.pid, started_by=after), "a live writer read as gone"
        started = process_started(child.pid)
        # btime is whole seconds and the wall clock may have been stepped since boot: within 1.5 s
        assert started is not None and before - 1.5 <= started <= after + 1.5
        # a file written 10 s before this process started was not written by it: the pid was reused
        assert not process_alive(child.pid, started_by=before - 10)
    finally:
        child.kill()
        child.wait()
    assert not process_alive(child.pid, started_by=after)
    assert process_started(child.pid) is None
