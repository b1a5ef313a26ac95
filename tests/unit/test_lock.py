"""The run lock, between real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from journalsync.errors import UsageError
from journalsync.lock import RunLock

HOLD = """
import sys, time
from journalsync.lock import RunLock
RunLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(60)
"""


def test_second_holder_is_refused_with_the_pid_and_a_killed_holder_frees_it(tmp_path):
    journal = tmp_path / "j.sqlite"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(journal)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UsageError, match=f"another run \\(pid {holder.pid}\\) holds {journal}"):
            RunLock(journal).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with RunLock(journal) as lock:  # the kernel dropped the dead holder's lock
        assert (tmp_path / "j.sqlite.lock").read_text().strip() == str(os.getpid())
        assert lock._fd is not None
