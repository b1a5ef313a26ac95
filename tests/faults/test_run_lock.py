"""A second concurrent run on one journal is refused; a killed run's lock is taken over."""

from __future__ import annotations

import random
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
        while journal_parts(sync.journal) < 1:
            assert first.poll() is None, first.communicate()
            time.sleep(0.01)
        second = sync.run(*ARGS)
        assert second.code == 2
        assert second.err.strip() == (f"journalsync: error: another run (pid {first.pid}) "
                                      f"holds {sync.journal}")
        first.send_signal(signal.SIGKILL)
        first.wait()
        third = sync.run(*ARGS, "--resume")
    assert third.code == 0, third.err
