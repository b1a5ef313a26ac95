"""A multipart upload that fails part-way leaves nothing behind: no abort while parts are
still arriving, and no UploadId from a retried CreateMultipartUpload left accruing."""

from __future__ import annotations

import random

import pytest

from journalsync.config import MiB
from tests.faults.test_multipart_crash import ARGS, incomplete
from tests.support.proxy import Fault, RecordingProxy

pytestmark = pytest.mark.slow


def test_failed_part_waits_for_parts_in_flight_before_aborting(sync, s3, s3client):
    sync.write("big.bin", random.Random(31).randbytes(15 * MiB))  # three parts
    parts_at_abort: list[int] = []

    def hook(req):
        if req.operation == "UploadPart":
            if req.query["partNumber"] == ["1"]:
                return Fault(400, "InvalidArgument")  # refused at once, not retryable
            return Fault(status=0, delay=1.5)  # parts 2 and 3 are still arriving meanwhile
        if req.operation == "AbortMultipartUpload":
            parts_at_abort.append(proxy.in_flight("UploadPart"))
        return None

    with RecordingProxy(s3.port, hook=hook) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        result = sync.run(*ARGS, "--workers", "3")
    assert result.code == 1, result.err
    ops = [r.operation for r in proxy.requests]
    after_abort = ops[ops.index("AbortMultipartUpload"):]
    # Aborted once, after every part had its answer, and no part was sent after it.
    assert parts_at_abort == [0] and "UploadPart" not in after_abort, ops
    # Part 2 at least was in flight when part 1 was refused; part 3 too unless the refusal
    # came back before it started (then it is rightly never sent: CI saw both).
    assert ops.count("UploadPart") in (2, 3), ops
    assert incomplete(s3client, sync.bucket) == []


def test_create_retried_after_a_lost_answer_leaves_no_upload(sync, s3, s3client):
    sync.write("big.bin", random.Random(32).randbytes(12 * MiB))
    lost = []

    def hook(req):
        if req.operation == "CreateMultipartUpload" and not lost:
            lost.append(req)
            return Fault(reset=True, after_forward=True)  # created, but the answer is lost
        return None

    with RecordingProxy(s3.port, hook=hook) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        result = sync.run(*ARGS)
    assert result.code == 0, result.err
    assert proxy.operations()["CreateMultipartUpload"] == 2
    assert incomplete(s3client, sync.bucket) == []
