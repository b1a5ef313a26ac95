"""A large file's upload completed on the store, but the run was killed before its journal
said so (SIGKILL while the HEAD after Complete was held). The journal still holds the upload
as active; the store no longer knows it (NoSuchUpload). The next run, with or without
--resume, must not send the file again when the object is this file: its size and its
sha256 metadata equal the hash of the file read now. A file changed after the kill is sent.
"""

from __future__ import annotations

import hashlib
import random

import pytest

from journalsync.objectmeta import metadata_sha256
from tests.faults.test_multipart_crash import ARGS, PART, incomplete, journal_rows, object_sha
from tests.support.hung import kill_when
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

    kill_when(sync, s3, PREHASH, hook, lambda proxy: seen["held"],
               "the HEAD after Complete never came")


def states(sync) -> list[str]:
    return [s for (s,) in journal_rows(sync, "SELECT state FROM multipart_uploads "
                                             "ORDER BY created_at")]


def run_sending_nothing(sync, s3, args: tuple, again: tuple):
    """The run after the kill (with `again`), then one more, through a recording proxy:
    the first must exit 0 having sent no byte of the file (no part, no PUT with a body; a
    stamp's copy sends none). Returns both results."""
    with RecordingProxy(s3.port) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        result = sync.run(*args, *again)
        last = sync.run(*args)
    assert result.code == 0, result.err
    ops = proxy.operations()
    bodies = [r for r in proxy.requests
              if r.operation == "PutObject" and not r.header("x-amz-copy-source")]
    assert ops["UploadPart"] == 0 and ops["CreateMultipartUpload"] == 0 and not bodies, ops
    assert " sent=0 " in result.out, result.out
    return result, last


@pytest.mark.parametrize("again", [(), ("--resume",)], ids=["run", "resume"])
def test_an_upload_completed_but_not_journaled_is_not_sent_again(sync, s3, s3client, again):
    big = random.Random(41).randbytes(3 * PART + 7)
    sync.write("big.bin", big)
    sha = hashlib.sha256(big).hexdigest()
    kill_after_complete(sync, s3)
    assert states(sync) == ["active"]
    key = sync.object_key("big.bin")
    assert object_sha(s3client, sync.bucket, key) == sha  # completed on the store

    result, last = run_sending_nothing(sync, s3, PREHASH, again)
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
    resume_sends_changed(sync, s3client, PREHASH, changed)


def resume_sends_changed(sync, s3client, args: tuple, changed: bytes) -> None:
    """The file, changed after the kill, is written and `run --resume` uploads it."""
    sync.write("big.bin", changed)
    result = sync.run(*args, "--resume")
    assert result.code == 0, result.err
    assert result.summary["uploaded"] == "1", result.out
    key = sync.object_key("big.bin")
    assert object_sha(s3client, sync.bucket, key) == hashlib.sha256(changed).hexdigest()
    assert incomplete(s3client, sync.bucket) == []


STREAM = (*ARGS, "--large-files", "stream")


def _exists(client, bucket: str, key: str) -> bool:
    try:
        client.head_object(Bucket=bucket, Key=key)
    except Exception:  # noqa: BLE001 - not there (yet)
        return False
    return True


def kill_with_complete_unanswered(sync, s3, s3client) -> None:
    """A streamed upload: the store takes the Complete, its answer never comes, and the run
    is SIGKILLed: the object exists, without its sha256 (stamped only after Complete); the
    journal's upload is still active."""
    seen = {"complete": False}

    def hook(req):
        if req.operation == "CompleteMultipartUpload":
            seen["complete"] = True
            return Fault(status=0, hold=60)
        return None

    kill_when(sync, s3, STREAM, hook, lambda proxy: seen["complete"] and _exists(
        s3client, sync.bucket, sync.object_key("big.bin")), "no Complete reached the store")


@pytest.mark.parametrize("again", [(), ("--resume",)], ids=["run", "resume"])
def test_a_streamed_upload_completed_but_not_journaled_is_stamped_not_sent(sync, s3, s3client,
                                                                          again):
    big = random.Random(43).randbytes(3 * PART + 7)
    sync.write("big.bin", big)
    sha = hashlib.sha256(big).hexdigest()
    kill_with_complete_unanswered(sync, s3, s3client)
    assert states(sync) == ["active"]
    key = sync.object_key("big.bin")
    head = s3client.head_object(Bucket=sync.bucket, Key=key)
    assert head["ContentLength"] == len(big)
    assert metadata_sha256(head.get("Metadata")) is None  # completed, never stamped

    result, last = run_sending_nothing(sync, s3, STREAM, again)
    assert object_sha(s3client, sync.bucket, key) == sha
    head = s3client.head_object(Bucket=sync.bucket, Key=key)
    # Both find the journaled upload gone, prove the object is the file (a read of it gives
    # the object's ETag) and stamp it (a copy onto itself): --resume as it continues its
    # plan, a plain run before its scan. Unstamped, `verify` would skip it for good.
    assert metadata_sha256(head.get("Metadata")) == sha
    assert states(sync) == ["completed"], result.err
    assert incomplete(s3client, sync.bucket) == []
    assert last.code == 0 and last.summary["uploaded"] == "0", last.out


def test_a_streamed_upload_completed_but_not_journaled_then_changed_is_sent(sync, s3, s3client):
    big = random.Random(44).randbytes(3 * PART + 7)
    sync.write("big.bin", big)
    kill_with_complete_unanswered(sync, s3, s3client)
    sync.endpoint_url = s3.endpoint_url
    changed = big[:PART] + bytes([big[PART] ^ 1]) + big[PART + 1:]  # same size, part 2
    resume_sends_changed(sync, s3client, STREAM, changed)


def test_a_store_refusing_list_parts_leaves_the_streamed_upload_to_the_plan(sync, s3, s3client):
    """Credentials without s3:ListMultipartUploadParts: the run cannot tell whether the
    journaled upload was completed, so it does not stamp; it says so with -v, the plan adopts
    the object by its ETag, and the run still ends 0 with nothing sent."""
    if s3.name != "rclone":
        pytest.skip("plumbing: one server is enough")
    big = random.Random(45).randbytes(3 * PART + 7)
    sync.write("big.bin", big)
    kill_with_complete_unanswered(sync, s3, s3client)

    def hook(req):
        return Fault(status=403, code="AccessDenied") if req.operation == "ListParts" else None

    with RecordingProxy(s3.port, hook=hook) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        result = sync.run(*STREAM, "-v")
    assert result.code == 0, result.err
    assert " sent=0 " in result.out, result.out
    assert "cannot tell whether the upload of big.bin was completed" in result.err, result.err
    head = s3client.head_object(Bucket=sync.bucket, Key=sync.object_key("big.bin"))
    assert metadata_sha256(head.get("Metadata")) is None
    assert proxy.operations()["ListParts"] >= 1


@pytest.mark.parametrize("status", [403, 400], ids=["denied", "sse-c"])
def test_a_leftover_whose_object_the_store_refuses_does_not_stop_every_run(sync, s3, s3client,
                                                                          status):
    """After the kill, the store refuses the object's HEAD (a bucket policy on its key: 403;
    another writer's SSE-C object read without its key: 400). That concerns one object: the
    stamp leaves it to the plan and the run goes on. Ending the run there ('cannot stamp
    in': exit 4) left the upload active, so every plain run after it ended the same way."""
    if s3.name != "rclone":
        pytest.skip("plumbing: one server is enough")
    big = random.Random(46).randbytes(3 * PART + 7)
    sync.write("big.bin", big)
    kill_with_complete_unanswered(sync, s3, s3client)
    key = sync.object_key("big.bin")

    def hook(req):
        if req.operation == "HeadObject" and req.path.endswith(key):
            return Fault(status=status, code=str(status))
        return None

    for _ in range(2):
        with RecordingProxy(s3.port, hook=hook) as proxy:
            sync.endpoint_url = proxy.endpoint_url
            result = sync.run(*STREAM)
        assert result.code == 0, result.err
        assert "cannot stamp" not in result.err, result.err
        assert proxy.operations()["UploadPart"] == 0
    assert states(sync) != ["active"]
    assert incomplete(s3client, sync.bucket) == []


@pytest.mark.parametrize("again", [(), ("--resume",)], ids=["run", "resume"])
def test_the_same_bytes_put_by_another_writer_after_the_kill_are_not_stamped(sync, s3, s3client,
                                                                             again):
    """After the kill, another writer PUTs the very same bytes with its own metadata. A read
    of the file proves that object's ETag too (its MD5), but the object is not the one our
    upload completed (it lacks our sha256-pending mark): it is never stamped, as a copy onto
    it would replace the other writer's Content-Type and metadata. A plain run's fresh look
    adopts it and sends nothing; --resume, whose plan says upload, sends the file anew (as
    it does when the pre-hashed upload's object is not ours) and stamps only its own."""
    big = random.Random(47).randbytes(3 * PART + 7)
    sync.write("big.bin", big)
    kill_with_complete_unanswered(sync, s3, s3client)
    key = sync.object_key("big.bin")
    s3client.put_object(Bucket=sync.bucket, Key=key, Body=big, Metadata={"owner": "them"},
                        ContentType="text/x-theirs")

    with RecordingProxy(s3.port) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        result = sync.run(*STREAM, *again)
    assert result.code == 0, result.err
    ops = [r.operation + (" copy" if r.header("x-amz-copy-source") else "")
           for r in proxy.requests]
    head = s3client.head_object(Bucket=sync.bucket, Key=key)
    meta = {k.lower(): v for k, v in head["Metadata"].items()}
    if not again:
        assert "PutObject copy" not in ops and "UploadPart" not in ops, ops
        assert meta == {"owner": "them"} and head["ContentType"] == "text/x-theirs"
    else:  # a copy only after a Complete of its own
        assert "PutObject copy" not in ops[:ops.index("CompleteMultipartUpload")
                                           if "CompleteMultipartUpload" in ops else None], ops
        assert "owner" not in meta or metadata_sha256(meta) is None, meta
    assert object_sha(s3client, sync.bucket, key) == hashlib.sha256(big).hexdigest()
    assert incomplete(s3client, sync.bucket) == []


def kill_mid_parts(sync, s3) -> None:
    """A streamed upload SIGKILLed after two of its parts were answered, the others held
    (never Complete): the store holds the upload."""
    seen = {"parts": 0}

    def hook(req):
        if req.operation == "UploadPart":
            seen["parts"] += 1
            return Fault(status=0, delay=60) if seen["parts"] > 2 else None
        return None

    kill_when(sync, s3, STREAM, hook, lambda proxy: sum(
        a.request.operation == "UploadPart" and a.status == 200
        for a in list(proxy.answers)) >= 2, "no part was sent")


@pytest.mark.parametrize("now", ["deleted", "symlink"])
def test_a_held_upload_a_listparts_calls_gone_is_still_aborted(sync, s3, s3client, now):
    """Killed mid-parts: the store holds the upload. Then the file is deleted (or replaced by
    a symlink) and the next run's ListParts hears NoSuchUpload from something on the way.
    The stamp gives up on it, but must leave it active: journaled `completed`, neither
    reconcile (active ones only) nor the stray sweep (uploads the journal never saw) would
    abort it, and it stayed on the store for good."""
    if now == "symlink" and s3.name != "rclone":
        pytest.skip("the file's side: one server is enough (deleted runs on each)")
    big = random.Random(48).randbytes(6 * PART + 7)
    path = sync.write("big.bin", big)
    kill_mid_parts(sync, s3)
    assert states(sync) == ["active"]
    assert len(incomplete(s3client, sync.bucket)) == 1
    path.unlink()
    if now == "symlink":
        path.symlink_to(sync.write("../elsewhere.bin", big))

    def hook(req):
        if req.operation == "ListParts":
            return Fault(status=404, code="NoSuchUpload")
        return None

    with RecordingProxy(s3.port, hook=hook) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        result = sync.run(*STREAM, "-v")
    assert result.code == 0, result.err
    sync.endpoint_url = s3.endpoint_url
    last = sync.run(*STREAM)
    assert last.code == 0, last.err
    assert incomplete(s3client, sync.bucket) == [], result.err


@pytest.mark.parametrize("after", ["other-bytes", "their-object", "symlink", "deleted"])
def test_a_plain_run_stamps_nothing_but_our_object_of_this_file(sync, s3, s3client, after):
    """The plain run's stamp before its scan, after the kill: the file changed (same size,
    other bytes), the object replaced by another writer (same size), the file now a
    symlink, or deleted. No copy is made before the scan's LIST, the run ends 0, and no
    upload is left on the store."""
    if after in ("symlink", "deleted") and s3.name != "rclone":
        pytest.skip("the file's side: one server is enough")
    big = random.Random(49).randbytes(3 * PART + 7)
    path = sync.write("big.bin", big)
    kill_with_complete_unanswered(sync, s3, s3client)
    key = sync.object_key("big.bin")
    if after == "other-bytes":
        sync.write("big.bin", big[:PART] + bytes([big[PART] ^ 1]) + big[PART + 1:])
    elif after == "their-object":
        s3client.put_object(Bucket=sync.bucket, Key=key, Body=bytes(len(big)))
    else:
        path.unlink()
        if after == "symlink":
            path.symlink_to(sync.write("../elsewhere.bin", big))

    with RecordingProxy(s3.port) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        result = sync.run(*STREAM)
    assert result.code == 0, result.err
    ops = [r.operation + (" copy" if r.header("x-amz-copy-source") else "")
           for r in proxy.requests]
    assert "PutObject copy" not in ops[:ops.index("ListObjects")], ops
    head = s3client.head_object(Bucket=sync.bucket, Key=key)
    if after == "other-bytes":  # sent again, and stamped as its own upload
        assert metadata_sha256(head.get("Metadata")) == hashlib.sha256(
            (sync.src / "big.bin").read_bytes()).hexdigest()
    elif after == "their-object":  # the file wins, as any changed object: sent again
        assert object_sha(s3client, sync.bucket, key) == hashlib.sha256(big).hexdigest()
    else:
        assert metadata_sha256(head.get("Metadata")) is None
    assert incomplete(s3client, sync.bucket) == []


@pytest.mark.one_server
def test_a_run_without_leftovers_asks_the_store_nothing_more(sync, s3):
    """The stamp before the scan costs a run with no leftover no request (a journal query)."""
    if s3.name != "rclone":
        pytest.skip("plumbing: one server is enough")
    sync.write("big.bin", random.Random(50).randbytes(3 * PART + 7))
    assert sync.run(*STREAM).code == 0
    sync.write("small.txt", b"changed")
    with RecordingProxy(s3.port) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        result = sync.run(*STREAM)
    assert result.code == 0, result.err
    ops = proxy.operations()
    assert ops["ListParts"] == 0 and ops["HeadObject"] == 0, ops
