"""Pruning never loses an upload in flight: a run killed mid-multipart, then runs that prune
the history down to one (a failed run, a dry run), and the next plain run still continues
the same UploadId rather than starting over."""

from __future__ import annotations

import hashlib
import random

import pytest

from journalsync.config import MiB
from tests.faults.test_multipart_crash import (
    ARGS, incomplete, journal_rows, kill_mid_upload, object_sha, part_numbers, slow_parts)
from tests.support.proxy import Fault, RecordingProxy

pytestmark = pytest.mark.slow


def test_active_upload_outlives_pruned_runs(sync, s3, s3client):
    big = random.Random(7).randbytes(30 * MiB)
    sync.write("big.bin", big)
    with RecordingProxy(s3.port, hook=slow_parts(0.05)) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        kill_mid_upload(sync, proxy, 2, 0.0, *ARGS, "--workers", "1")
        (upload_id,) = journal_rows(sync, "SELECT upload_id FROM multipart_uploads")[0]
        # A real run that fails before planning (the store says no such bucket): nothing is
        # resumable now.
        proxy.hook = lambda req: Fault(404, "NoSuchBucket")
        failed = sync.run()
        proxy.hook = None
        assert failed.code == 4, failed.err
        dry = sync.run("--dry-run", "--keep-runs", "1")
        assert dry.code == 0, dry.err
        assert len(journal_rows(sync, "SELECT id FROM runs")) == 2  # dry + the upload's
        assert journal_rows(sync, "SELECT upload_id, state FROM multipart_uploads") == [
            (upload_id, "active")]
        assert len(journal_rows(sync, "SELECT 1 FROM multipart_parts")) >= 2
        proxy.clear()
        result = sync.run(*ARGS, "--keep-runs", "1")
        assert result.code == 0, result.err
    ops = proxy.operations()
    assert ops["CreateMultipartUpload"] == 0 and ops["CompleteMultipartUpload"] == 1, ops
    assert len(part_numbers(proxy)) < 6
    assert object_sha(s3client, sync.bucket, sync.object_key("big.bin")) == hashlib.sha256(big).hexdigest()
    assert incomplete(s3client, sync.bucket) == []
    # Completed: its rows go with the history, and only the last run is left.
    assert journal_rows(sync, "SELECT count(*) FROM runs") == [(1,)]
    assert journal_rows(sync, "SELECT count(*) FROM multipart_parts") == [(0,)]
