"""A second concurrent run on one journal is refused; a killed run's lock is taken over."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import time

import pytest

from journalsync.config import MiB
from tests.faults.test_multipart_crash import ARGS, journal_parts, slow_parts
from tests.support.proxy import RecordingProxy

pytestmark = pytest.mark.slow


def test_concurrent_run_refused_then_lock_recovered_after_kill(sync, s3):
    sync.write("big.bin", random.Random(1).randbytes(20 * MiB))
    with RecordingProxy(s3.port, hook=slow_parts(1.0)) as proxy:  # a run that lasts
        sync.endpoint_url = proxy.endpoint_url
        first = sync.start(*sync.run_args(*ARGS, "--workers", "1"))
        while journal_parts(sync) < 1:
            assert first.poll() is None, first.communicate()
            time.sleep(0.01)
        second = sync.run(*ARGS)
        assert second.code == 2
        if sync.on_pg:  # the holder as the server knows it: our pid, the client's address
            holder = rf"journalsync pid {first.pid}( from \S+)?"
        else:
            holder = rf"pid {first.pid}"
        assert re.fullmatch(rf"journalsync: error: another run \({holder}\) holds "
                            rf"{re.escape(str(sync.location))}", second.err.strip()), second.err
        first.send_signal(signal.SIGKILL)
        first.wait()
        third = sync.run(*ARGS, "--resume")
    assert third.code == 0, third.err


def test_running_row_with_a_live_pid_is_interrupted_by_the_next_run(sync):
    """Under the lock no other run can be alive, whatever pid its row names: pid 1 in a
    container, or a pid since given to another process (here: this test's own)."""
    sync.write("a.txt", b"a")
    assert sync.run().code == 0
    # as a run killed with its row left running
    sync.journal_rows("UPDATE runs SET state = 'running', finished_at = NULL, pid = ?", os.getpid())
    assert sync.run().code == 0
    status = json.loads(sync.cli("status", *sync.journal_args(), "--json").out)
    assert [r["state"] for r in status["runs"]] == ["done", "interrupted"]
