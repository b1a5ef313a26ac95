"""Signals on a real subprocess: a second SIGTERM stops at once, yet what finished is
recorded, the summary line is printed and the exit code says SIGTERM."""

from __future__ import annotations

import hashlib
import json
import random
import signal
import time

import pytest

from journalsync.config import MiB
from tests.faults.test_multipart_crash import ARGS, incomplete, object_sha, slow_parts
from tests.support.hung import finish
from tests.support.proxy import RecordingProxy

pytestmark = pytest.mark.slow


def wait_for_line(stream, words: str) -> None:
    """Read stderr up to the line holding `words` (the run has handled the first signal)."""
    for line in stream:
        if words in line:
            return
    raise AssertionError(f"no line with {words!r}")


@pytest.mark.one_server
def test_second_sigterm_stops_now_with_the_summary_line(sync, s3, s3client):
    big = random.Random(41).randbytes(40 * MiB)
    sync.write("big.bin", big)
    sync.write("small.txt", b"small")
    with RecordingProxy(s3.port, hook=slow_parts(30.0)) as proxy:  # parts that take a while
        sync.endpoint_url = proxy.endpoint_url
        proc = sync.start(*sync.run_args(*ARGS, "--workers", "2"))
        while not proxy.in_flight("UploadPart"):
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        wait_for_line(proc.stderr, "SIGTERM: finishing the work in flight")
        proc.send_signal(signal.SIGTERM)  # parts are held 30 s: only a stop at once ends now
        out, err = finish(proc, 20)  # a hang fails with its threads' stacks
        assert proc.returncode == 143, err
        assert out.startswith("journalsync: scanned=2 "), (out, err)
        status = json.loads(sync.cli("status", *sync.journal_args(), "--json").out)
        assert status["runs"][0]["state"] == "interrupted"
        proxy.hook = None
        proxy.clear()
        result = sync.run(*ARGS, "--resume")
    assert result.code == 0, result.err
    assert proxy.operations()["CreateMultipartUpload"] == 0  # the upload was kept and continued
    assert object_sha(s3client, sync.bucket, sync.object_key("big.bin")) == hashlib.sha256(big).hexdigest()
    assert incomplete(s3client, sync.bucket) == []
