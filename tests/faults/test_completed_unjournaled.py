"""A large file's upload completed on the store, but the run was killed before its journal
said so (SIGKILL while the HEAD after Complete was held). The journal still holds the upload
as active; the store no longer knows it (NoSuchUpload). The next run, with or without
--resume, must not send the file again when the object is this file: its size and its
sha256 metadata equal the hash of the file read now. A file changed after the kill is sent.
"""

from __future__ import annotations

import hashlib
import random
import signal
import time

import pytest

from tests.faults.test_multipart_crash import ARGS, PART, incomplete, journal_rows, object_sha
from tests.support.proxy import Fault, RecordingProxy

pytestmark = pytest.mark.slow

PREHASH = (*ARGS, "--large-files", "prehash")


def kill_after_complete(sync, s3) -> None:
    """Run until the store has answered the Complete, hold the HEAD that follows it, and
    SIGKILL the run there: the object exists, the journal's upload is still active."""
    seen = {"complete": False, "held": False}

    def hook(req):
        if req.operation == "CompleteMultipartUpload":
            seen["complete"] = True
        elif req.operation == "HeadObject" and seen["complete"]:
            seen["held"] = True
            return Fault(status=0, delay=60, reset=True)
        return None

    with RecordingProxy(s3.port, hook=hook) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        proc = sync.start(*sync.run_args(*PREHASH))
        deadline = time.monotonic() + 60
        while not seen["held"]:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the HEAD after Complete never came"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def states(sync) -> list[str]:
    return [s for (s,) in journal_rows(sync, "SELECT state FROM multipart_uploads "
                                             "ORDER BY created_at")]


@pytest.mark.parametrize("again", [(), ("--resume",)], ids=["run", "resume"])
def test_an_upload_completed_but_not_journaled_is_not_sent_again(sync, s3, s3client, again):
    big = random.Random(41).randbytes(3 * PART + 7)
    sync.write("big.bin", big)
    sha = hashlib.sha256(big).hexdigest()
    kill_after_complete(sync, s3)
    assert states(sync) == ["active"]
    key = sync.object_key("big.bin")
    assert object_sha(s3client, sync.bucket, key) == sha  # completed on the store

    with RecordingProxy(s3.port) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        result = sync.run(*PREHASH, *again)
        last = sync.run(*PREHASH)
    assert result.code == 0, result.err
    ops = proxy.operations()
    assert ops["UploadPart"] == 0 and ops["CreateMultipartUpload"] == 0 \
        and ops["PutObject"] == 0, ops
    assert " sent=0 " in result.out, result.out
    assert object_sha(s3client, sync.bucket, key) == sha
    # --resume proves the upload completed; a plain run's fresh look adopts the object and
    # its reconcile closes the journal's upload (aborted: the store no longer knows it)
    assert states(sync) == (["completed"] if again else ["aborted"]), result.err
    assert incomplete(s3client, sync.bucket) == []
    assert last.code == 0 and last.summary["uploaded"] == "0", last.out


def test_an_upload_completed_but_not_journaled_then_changed_is_sent(sync, s3, s3client):
    big = random.Random(42).randbytes(3 * PART + 7)
    sync.write("big.bin", big)
    kill_after_complete(sync, s3)
    sync.endpoint_url = s3.endpoint_url
    changed = bytes([big[0] ^ 1]) + big[1:]  # same size
    sync.write("big.bin", changed)

    result = sync.run(*PREHASH, "--resume")
    assert result.code == 0, result.err
    assert result.summary["uploaded"] == "1", result.out
    key = sync.object_key("big.bin")
    assert object_sha(s3client, sync.bucket, key) == hashlib.sha256(changed).hexdigest()
    assert incomplete(s3client, sync.bucket) == []
