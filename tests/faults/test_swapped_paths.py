"""A planned path swapped between the plan and the upload: a symlink to a file outside the
tree, a FIFO, a directory replaced by a symlink. The upload must refuse that one file with a
clear reason, never read outside the tree, never hang, and finish (and journal) the rest.

The swap lands after the plan, as it would between a killed night and `--resume`: the
first run plans through a proxy that holds its first upload (never forwarding it), it is
SIGKILLed there with its plan stored, the tree is changed, and `--resume` executes the
stored plan against the real server without scanning again.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from tests.support.proxy import Fault, RecordingProxy

pytestmark = pytest.mark.slow

SECRET = b"outside the tree: must never be uploaded"


def hold_uploads(req):
    """Hold an upload, then drop it unsent: the store never sees it."""
    if req.operation in ("PutObject", "CreateMultipartUpload"):
        return Fault(status=0, delay=60, reset=True)
    return None


def plan_without_uploading(sync, s3) -> None:
    with RecordingProxy(s3.port, hook=hold_uploads) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        proc = sync.start(*sync.run_args("--workers", "1"))
        deadline = time.monotonic() + 60
        while proxy.counts()["PUT"] + proxy.operations()["CreateMultipartUpload"] == 0:
            assert time.monotonic() < deadline and proc.poll() is None, "no upload began"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    sync.endpoint_url = None


def bucket_bodies(sync, s3client) -> dict[str, bytes]:
    listing = s3client.list_objects_v2(Bucket=sync.bucket).get("Contents", [])
    return {o["Key"]: s3client.get_object(Bucket=sync.bucket, Key=o["Key"])["Body"].read()
            for o in listing}


def journaled(sync) -> dict[str, str]:
    return dict(sync.journal_rows("SELECT key, status FROM plan_items WHERE action = 'upload'"))


def resume_and_check(sync, s3client, swapped: str, reason: str) -> None:
    """--resume: exit 1, the swapped key failed with `reason`, every other file uploaded
    and journaled, and no object holds the outside file's bytes."""
    result = sync.cli(*sync.run_args("--resume"), timeout=60)  # a hang fails here
    assert result.code == 1, (result.out, result.err)
    assert result.summary["failed"] == "1" and result.summary["uploaded"] == "2", result.out
    status = json.loads(sync.cli("status", *sync.journal_args(), "--json").out)
    assert [(f["key"], f["error"]) for f in status["failed"]] == [(swapped, reason)]
    assert journaled(sync) == {"a.txt": "done", "z.txt": "done", swapped: "failed"}
    bodies = bucket_bodies(sync, s3client)
    assert SECRET not in bodies.values()
    assert sorted(bodies) == [sync.object_key("a.txt"), sync.object_key("z.txt")]


def tree(sync, swapped: str) -> None:
    sync.write("a.txt", b"first")
    sync.write(swapped, b"planned content")
    sync.write("z.txt", b"last")
    (sync.tmp / "outside").mkdir()
    (sync.tmp / "outside" / "f").write_bytes(SECRET)


def test_file_swapped_for_a_symlink_after_the_plan_is_not_followed(sync, s3, s3client):
    tree(sync, "m.txt")
    plan_without_uploading(sync, s3)
    (sync.src / "m.txt").unlink()
    (sync.src / "m.txt").symlink_to(sync.tmp / "outside" / "f")
    resume_and_check(sync, s3client, "m.txt",
                     "replaced by a symlink since the scan; not followed")


def test_file_swapped_for_a_fifo_after_the_plan_does_not_hang(sync, s3, s3client):
    tree(sync, "m.txt")
    plan_without_uploading(sync, s3)
    (sync.src / "m.txt").unlink()
    os.mkfifo(sync.src / "m.txt")
    resume_and_check(sync, s3client, "m.txt", "is a FIFO now; not read")


def test_directory_swapped_for_a_symlink_after_the_plan_is_not_followed(sync, s3, s3client):
    tree(sync, "m/f")
    plan_without_uploading(sync, s3)
    (sync.src / "m").rename(sync.tmp / "m.moved")
    (sync.src / "m").symlink_to(sync.tmp / "outside")  # outside/f holds SECRET
    resume_and_check(sync, s3client, "m/f",
                     "directory m/ was replaced by a symlink since the scan; not followed")
