"""A body damaged in transit: the proxy flips one byte of the first PUT of each small file
and of the first send of each multipart part, and forwards it. The store must refuse it
with BadDigest (our Content-MD5 no longer matches), we must send the same bytes again,
and the stored object must be the file, on the awscrt path and on botocore's.

rclone serve s3 and SeaweedFS check Content-MD5; moto's server stores whatever arrives,
so there the tests are skipped (an external server, such as real S3 or MinIO, checks)."""

from __future__ import annotations

import hashlib
import random
import threading

import pytest

from journalsync.config import MiB
from tests.faults.test_multipart_crash import ARGS, incomplete, object_sha
from tests.support.proxy import Fault, RecordingProxy

pytestmark = pytest.mark.slow

CHECKS_CONTENT_MD5 = {"rclone", "seaweed", "external"}


def damage_first_send():
    """A hook that flips a byte in the first send of every PutObject and UploadPart body,
    and the list of the requests it damaged."""
    damaged, lock = [], threading.Lock()
    sent: set[tuple[str, str]] = set()

    def hook(req):
        if req.operation not in ("PutObject", "UploadPart") or not req.size:
            return None
        ident = (req.path, req.query.get("partNumber", [""])[0])
        with lock:
            if ident in sent:
                return None
            sent.add(ident)
            damaged.append(req)
        return Fault(status=0, flip=True)

    return hook, damaged


def skip_unless_store_checks_md5(s3):
    if s3.name not in CHECKS_CONTENT_MD5:
        pytest.skip(f"{s3.name}'s server does not check Content-MD5: a damaged body is stored")


def sent_through(s3, hook, sync, *args: str):
    with RecordingProxy(s3.port, hook=hook) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        result = sync.run(*ARGS, *args)
    assert result.code == 0, result.err
    return result, proxy


def refusals(proxy, damaged) -> list[tuple[str, int, str | None]]:
    ids = {id(req) for req in damaged}  # the very requests: a resend is an equal Request
    return sorted((a.request.operation, a.status, a.code) for a in proxy.answers
                  if id(a.request) in ids)


@pytest.mark.parametrize("path", ["--crt", "--no-crt"])
def test_damaged_put_is_refused_and_sent_again(sync, s3, s3client, path):
    skip_unless_store_checks_md5(s3)
    rnd = random.Random(31)
    files = {f"small/{i}.bin": rnd.randbytes(rnd.randint(1, 40_000)) for i in range(6)}
    for rel, data in files.items():
        sync.write(rel, data)
    hook, damaged = damage_first_send()
    result, proxy = sent_through(s3, hook, sync, path)
    assert result.summary["uploaded"] == str(len(files))
    assert len(damaged) == len(files)
    assert refusals(proxy, damaged) == [("PutObject", 400, "BadDigest")] * len(files)
    assert proxy.operations()["PutObject"] == 2 * len(files)  # each sent again, once
    for rel, data in files.items():
        assert object_sha(s3client, sync.bucket, sync.object_key(rel)) == hashlib.sha256(data).hexdigest(), rel


@pytest.mark.parametrize("path", ["--crt", "--no-crt"])
def test_damaged_parts_are_refused_and_sent_again(sync, s3, s3client, path):
    """rclone fails the whole upload when a part is refused (it streams parts into one
    file), so there the next send hears NoSuchUpload and the driver starts the upload once
    more; a store that keeps the upload (SeaweedFS, S3, MinIO) takes the part sent again."""
    skip_unless_store_checks_md5(s3)
    big = random.Random(32).randbytes(11 * MiB)  # parts of 5, 5 and 1 MiB
    sync.write("big.bin", big)
    hook, damaged = damage_first_send()
    result, proxy = sent_through(s3, hook, sync, path)
    assert result.summary["uploaded"] == "1"
    assert len(damaged) == 3
    answers = refusals(proxy, damaged)
    assert answers.count(("UploadPart", 400, "BadDigest")) >= 1, answers
    assert {code for _, _, code in answers} <= {"BadDigest", "NoSuchUpload"}, answers
    assert proxy.operations()["CreateMultipartUpload"] == (2 if s3.name == "rclone" else 1)
    assert object_sha(s3client, sync.bucket, sync.object_key("big.bin")) == hashlib.sha256(big).hexdigest()
    assert incomplete(s3client, sync.bucket) == []


@pytest.mark.parametrize("path", ["--crt", "--no-crt"])
def test_an_upload_the_store_drops_after_each_damaged_part_is_started_again(sync, s3, s3client,
                                                                              path):
    """A link that damages a part of every upload for a while. rclone serve s3 drops the
    whole upload when one of its parts fails Content-MD5, so each new upload is dropped in
    turn: the file must still be stored whole once the link is clean, not failed after the
    second upload (an upload that vanished for no reason of ours is started once more
    only: see test_multipart.py)."""
    skip_unless_store_checks_md5(s3)
    big = random.Random(33).randbytes(11 * MiB)  # parts of 5, 5 and 1 MiB
    sync.write("big.bin", big)
    damaged_uploads: set[str] = set()
    lock = threading.Lock()

    def hook(req):
        # part 1 of each of the first three uploads arrives damaged, its first send only
        if req.operation != "UploadPart" or req.query["partNumber"] != ["1"]:
            return None
        upload = req.query["uploadId"][0]
        with lock:
            if upload in damaged_uploads or len(damaged_uploads) >= 3:
                return None
            damaged_uploads.add(upload)
        return Fault(status=0, flip=True)

    result, proxy = sent_through(s3, hook, sync, path)
    assert result.summary["uploaded"] == "1", result.out
    assert len(damaged_uploads) == (3 if s3.name == "rclone" else 1), (damaged_uploads, result.err)
    creates = proxy.operations()["CreateMultipartUpload"]
    assert creates == (4 if s3.name == "rclone" else 1), creates
    assert object_sha(s3client, sync.bucket, sync.object_key("big.bin")) == hashlib.sha256(big).hexdigest()
    assert incomplete(s3client, sync.bucket) == []



# Two of the four combinations, each path and each mode once (10 uploads each: 9 s a run).
@pytest.mark.parametrize(("path", "mode"), [("--crt", "stream"), ("--no-crt", "prehash")])
def test_a_file_whose_every_upload_is_dropped_for_damage_fails_in_bounds_and_says_why(
        sync, s3, s3client, path, mode):
    """A link that damages every part body for ever (or a reason of ours the store keeps
    refusing): rclone serve s3 drops each upload, and the file must fail after a bounded
    number of uploads (the attempts a request gets: 10), exit 1, every dropped upload
    journaled "aborted", none left on the store, and the reason must say what happened,
    not only that some UploadId "is gone"."""
    if s3.name != "rclone":
        pytest.skip("only rclone serve s3 drops an upload whose part fails Content-MD5")
    sync.write("big.bin", random.Random(34).randbytes(11 * MiB))  # parts of 5, 5 and 1 MiB
    hook = lambda req: (Fault(status=0, flip=True)  # noqa: E731
                        if req.operation == "UploadPart" and req.size else None)
    with RecordingProxy(s3.port, hook=hook) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        result = sync.run(*ARGS, path, "--large-files", mode)
    assert result.code == 1, result.err
    assert result.summary["failed"] == "1" and result.summary["uploaded"] == "0", result.out
    assert proxy.operations()["CreateMultipartUpload"] == 10
    failed = [line for line in result.err.splitlines() if "failed: big.bin" in line]
    assert len(failed) == 1 and "damaged" in failed[0] and "BadDigest" in failed[0], result.err
    assert sync.journal_rows("SELECT state, count(*) FROM multipart_uploads GROUP BY state") \
        == [("aborted", 10)]
    assert incomplete(s3client, sync.bucket) == []


def test_an_upload_said_gone_after_a_damaged_part_is_aborted_not_left_on_the_store(
        sync, s3, s3client):
    """A part refused as damaged, and another of the same upload answered NoSuchUpload by
    something on the way while the store still holds the upload (SeaweedFS, S3 and MinIO
    keep an upload whose part failed its check): each upload given up must be aborted,
    not only journaled "aborted", or up to 10 of them are left on the store accruing."""
    skip_unless_store_checks_md5(s3)
    sync.write("big.bin", random.Random(35).randbytes(11 * MiB))  # parts of 5, 5 and 1 MiB
    seen: dict[str, set[str]] = {}
    lock = threading.Lock()

    def hook(req):
        if req.operation != "UploadPart":
            return None
        upload, number = req.query["uploadId"][0], req.query["partNumber"][0]
        with lock:
            if len(seen) > 3 or (upload not in seen and len(seen) == 3):
                return None  # the fourth upload goes through untouched
            parts = seen.setdefault(upload, set())
            first = number not in parts
            parts.add(number)
        if number == "1" and first:
            return Fault(status=0, flip=True)
        if number == "2":
            return Fault(status=404, code="NoSuchUpload")
        return None

    result, proxy = sent_through(s3, hook, sync, "--no-crt")
    assert result.summary["uploaded"] == "1", result.out
    assert proxy.operations()["CreateMultipartUpload"] == 4
    assert incomplete(s3client, sync.bucket) == []
    states = sorted(s for (s,) in sync.journal_rows("SELECT state FROM multipart_uploads"))
    assert states == ["aborted"] * 3 + ["completed"], states
