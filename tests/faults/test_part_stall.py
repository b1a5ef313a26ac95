"""A part whose connection goes silent (a dead or black-holed connection): on the CRT path
it waited for the CRT's own throughput check (AWS_ERROR_HTTP_CHANNEL_THROUGHPUT_FAILURE,
about 30 s) under a deadline of 90 s + the body at 64 KiB/s. With the part deadline
(crt.PartDeadline: a multiple of the time the parts before it took per MiB, at least 5 s)
it is cancelled by us and sent again on a new connection: the log says which of the two
ended it (with the deadline switched off, the CRT's check does, and the test fails).

Two silences: in the middle of the body, and after the whole body, with no answer. The
silent part is the fourth, so parts before it have set the deadline; the parts of a second
file, slowed by the proxy, are answered meanwhile: the link works, only that connection is
dead (with nothing else answered, an outage is assumed and the clock stops)."""

from __future__ import annotations

import hashlib
import random
import threading

import pytest

from journalsync.config import MiB
from tests.faults.test_multipart_crash import incomplete, object_sha
from tests.support.proxy import Fault, RecordingProxy

pytestmark = pytest.mark.slow

SILENCE = 600.0  # the proxy holds the stalled connection this long, or until it closes
RUN_TIMEOUT = 120  # the test's own bound on the run


@pytest.mark.one_server
@pytest.mark.parametrize("stall_at", [0.5, 1.0], ids=["mid-body", "no-answer"])
def test_a_silent_part_is_cancelled_and_sent_again(sync, s3, s3client, stall_at):
    rnd = random.Random(51)
    data = rnd.randbytes(32 * MiB)  # four parts of 8 MiB
    # Sixteen parts, each answered after 2 s until the silent part is sent again, then at
    # once: the link must be seen answering for as long as the deadline takes, however late
    # a loaded machine reaches the fourth part. With ten parts answered every 2 s whatever
    # happened, one CI run re-sent the part without the deadline's message; the likely
    # cause: the other file was done before the stall had been seen for 5 s.
    other = rnd.randbytes(128 * MiB)
    sync.write("big.bin", data)
    sync.write("other.bin", other)
    stalled, resent, lock = [], threading.Event(), threading.Lock()

    def hook(req):
        if req.operation == "UploadPart" and req.path.endswith("/other.bin"):
            return None if resent.is_set() else Fault(status=0, delay=2.0)
        if req.operation != "UploadPart" or req.query["partNumber"] != ["4"] \
                or not req.path.endswith("/big.bin"):
            return None
        with lock:
            if stalled:
                resent.set()
                return None
            stalled.append(req)
        return Fault(status=0, stall=SILENCE, stall_at=stall_at)

    with RecordingProxy(s3.port, hook=hook) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        result = sync.cli(*sync.run_args("--multipart-threshold", "8MiB", "--part-size", "8MiB",
                                         "--workers", "2", "-v"), timeout=RUN_TIMEOUT)
    assert result.code == 0, result.err[-3000:]
    assert len(stalled) == 1
    fourth = [r for r in proxy.requests if r.operation == "UploadPart"
              and r.path.endswith("/big.bin") and r.query["partNumber"] == ["4"]]
    assert len(fourth) == 2  # the silent one, then one on a new connection
    assert "while the link answered other requests: cancelled" in result.err, result.err[-4000:]
    for rel, body in (("big.bin", data), ("other.bin", other)):
        assert object_sha(s3client, sync.bucket, sync.object_key(rel)) == hashlib.sha256(body).hexdigest()
    assert incomplete(s3client, sync.bucket) == []
