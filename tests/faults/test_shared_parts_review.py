"""Hostile review of shared part units (issue 15): a shared upload's units outliving the
process and the run that made them, with real processes, PostgreSQL, moto and SIGKILL."""

from __future__ import annotations

import random
import signal

import pytest

from journalsync.config import MiB
from tests.faults.test_shared_parts import ARGS, _finish, _kill_all, _object_is, _rows, _wait
from tests.support.proxy import Fault, RecordingProxy

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("s3", ["moto"], indirect=True)]

BIG = "big.bin"


def _slow_parts(req):
    return Fault(status=0, delay=0.5) if req.operation == "UploadPart" else None


def _run(sync, url: str, job: str, *extra: str):
    return sync.start("run", str(sync.src), sync.dest, "--journal", url, "--job", job,
                      "--workers", "2", "--large-files", "prehash", *ARGS, *extra)


def test_a_new_run_continues_the_units_a_killed_run_left(sync, s3, pg_url):
    """The run sharing a file is SIGKILLed with units pending; the next run (not --resume:
    a new run id) continues the journaled upload. Its units belong to the dead run: the new
    run must still claim them, not wait for them for ever."""
    job = "shared_new_run"
    data = random.Random(31).randbytes(6 * 5 * MiB - 77)
    sync.write(BIG, data)
    procs: list = []
    with RecordingProxy(s3.port, hook=_slow_parts) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        try:
            first = _run(sync, pg_url, job)
            procs.append(first)
            _wait("a part sent as a unit", lambda: _rows(
                pg_url, job, "SELECT 1 FROM multipart_parts p JOIN part_units u"
                " ON u.upload_id = p.upload_id LIMIT 1"), procs)
            first.send_signal(signal.SIGKILL)
            first.wait()
            left = _rows(pg_url, job, "SELECT count(*) FROM part_units WHERE state != 'done'")
            assert left[0][0] > 0, "every unit was done before the kill"
            second = _run(sync, pg_url, job)
            procs.append(second)
            code, out, err = _finish(second, timeout=60)
        finally:
            _kill_all(procs)
    assert code == 0, (code, out, err[-3000:])
    _object_is(sync, BIG, data)
    assert proxy.operations()["CreateMultipartUpload"] == 1
