"""Which check each body carries (integrity.py), and that the store refuses a damaged one.

With --checksum crc64nvme (a store that checks CRCs, as SeaweedFS does here and AWS, MinIO
and R2 do), every PutObject and UploadPart carries x-amz-checksum-crc64nvme and no
Content-MD5, the upload is created with ChecksumAlgorithm CRC64NVME and the Complete names
each part's CRC. A byte flipped in transit must then be refused with BadDigest and the
same bytes sent again, on the awscrt path and on botocore's, for small files and for the
parts of a pre-hashed large file (where the pre-hash computed no MD5 at all).

Where the store is not known to check CRCs (the `other` preset: rclone serve s3 stores a
wrong CRC without a word, moto ignores it), every body keeps its Content-MD5."""

from __future__ import annotations

import hashlib
import random

import pytest

from journalsync.config import MiB
from tests.faults.test_damaged_body import damage_first_send, refusals, sent_through
from tests.faults.test_multipart_crash import ARGS, incomplete, object_sha
from tests.support.proxy import RecordingProxy

pytestmark = pytest.mark.slow

CHECKS_CRC = {"seaweed", "external"}  # rclone serve s3 and moto keep a body whose CRC is wrong
BODIES = ("PutObject", "UploadPart")


def tree(sync) -> dict[str, bytes]:
    """Three small files and one of three parts (5, 5 and 1 MiB), all new: the large one
    is pre-hashed (the scan does not read new files) and its parts streamed by the CRT."""
    rnd = random.Random(41)
    files = {f"small/{i}.bin": rnd.randbytes(rnd.randint(1, 40_000)) for i in range(3)}
    files["big.bin"] = rnd.randbytes(11 * MiB)
    for rel, data in files.items():
        sync.write(rel, data)
    return files


def checks_sent(proxy) -> set[tuple[str, bool, bool]]:
    """(operation, has Content-MD5, has x-amz-checksum-crc64nvme) of every body sent (a
    stamp's CopyObject, a PUT without a body, is not one: stamp.py)."""
    return {(r.operation, bool(r.header("Content-MD5")), bool(r.header("x-amz-checksum-crc64nvme")))
            for r in proxy.requests if r.operation in BODIES and not r.header("x-amz-copy-source")}


def assert_stored(s3client, sync, files):
    for rel, data in files.items():
        assert object_sha(s3client, sync.bucket, sync.object_key(rel)) == hashlib.sha256(data).hexdigest(), rel
    assert incomplete(s3client, sync.bucket) == []


@pytest.mark.parametrize("path", ["--crt", "--no-crt"])
@pytest.mark.pg_server("seaweed")
def test_crc_checked_bodies_are_refused_when_damaged_and_sent_again(sync, s3, s3client, path):
    if s3.name not in CHECKS_CRC:
        pytest.skip(f"{s3.name}'s server does not check x-amz-checksum-crc64nvme")
    files = tree(sync)
    hook, damaged = damage_first_send()
    result, proxy = sent_through(s3, hook, sync, path, "--checksum", "crc64nvme")
    assert result.summary["uploaded"] == str(len(files))
    assert checks_sent(proxy) == {("PutObject", False, True), ("UploadPart", False, True)}
    create = [r for r in proxy.requests if r.operation == "CreateMultipartUpload"]
    assert [r.header("x-amz-checksum-algorithm") for r in create] == ["CRC64NVME"]
    assert len(damaged) == len(files) - 1 + 3  # every small file's first send, every part's
    assert set(refusals(proxy, damaged)) == {("PutObject", 400, "BadDigest"),
                                             ("UploadPart", 400, "BadDigest")}
    assert proxy.operations()["UploadPart"] == 2 * 3  # each part sent again, once
    assert_stored(s3client, sync, files)


def test_a_store_not_known_to_check_crcs_gets_content_md5(sync, s3, s3client):
    """The `other` preset (every server here): Content-MD5 on every body, no CRC header,
    an upload created without a checksum algorithm."""
    files = tree(sync)
    with RecordingProxy(s3.port) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        result = sync.run(*ARGS)
    assert result.code == 0, result.err
    assert checks_sent(proxy) == {("PutObject", True, False), ("UploadPart", True, False)}
    create = [r for r in proxy.requests if r.operation == "CreateMultipartUpload"]
    assert [r.header("x-amz-checksum-algorithm") for r in create] == [""]
    assert_stored(s3client, sync, files)


def test_crc_on_a_store_that_does_not_check_it_keeps_a_damaged_body(sync, s3, s3client):
    """Why MD5 is the default for an unknown store: rclone serve s3 takes a CRC it does not
    check, so a body damaged in transit would be stored as if it were the file. (Our own
    CRC of what was read still matches: the damage is after it.)"""
    if s3.name != "rclone":
        pytest.skip("shows rclone serve s3's behaviour")
    sync.write("one.bin", b"x" * 1000)
    hook, damaged = damage_first_send()
    result, proxy = sent_through(s3, hook, sync, "--checksum", "crc64nvme")
    assert len(damaged) == 1 and refusals(proxy, damaged) == [("PutObject", 200, None)]
    stored = s3client.get_object(Bucket=sync.bucket, Key=sync.object_key("one.bin"))["Body"].read()
    assert stored != b"x" * 1000


@pytest.mark.parametrize("path", ["--crt", "--no-crt"])
def test_bodies_over_plain_http_are_not_hashed_for_the_signature(sync, s3, s3client, path):
    """Over plain HTTP botocore would sign every body's SHA-256 (one more pass over every
    byte sent, 0.6 CPU-s per GiB); the body's Content-MD5 or CRC, which the store checks,
    is what guards it, as on the awscrt path: every body is sent UNSIGNED-PAYLOAD, with
    its check, on both paths."""
    files = tree(sync)
    with RecordingProxy(s3.port) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        result = sync.run(*ARGS, path)
    assert result.code == 0, result.err
    bodies = [r for r in proxy.requests
              if r.operation in BODIES and not r.header("x-amz-copy-source")]
    assert {r.operation for r in bodies} == set(BODIES)
    assert {(r.operation, r.header("x-amz-content-sha256"), bool(r.header("Content-MD5")))
            for r in bodies} == {(op, "UNSIGNED-PAYLOAD", True) for op in BODIES}
    assert_stored(s3client, sync, files)
