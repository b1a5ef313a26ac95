"""Flaky links and throttling, through the fault-injecting proxy, against both servers:
SlowDown storms with mid-body resets, a blackhole longer than the retry timeout, errors in
a 200 response, and every fatal misconfiguration failing fast with one line."""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time

import pytest

from journalsync.config import MiB
from tests.faults.test_multipart_crash import incomplete, object_sha
from tests.support.proxy import Fault, RecordingProxy

pytestmark = pytest.mark.slow

ARGS = ("--multipart-threshold", "5MiB", "--part-size", "5MiB")


def mixed(sync, seed: int) -> dict[str, bytes]:
    rnd = random.Random(seed)
    files = {f"small/{i:02d}.bin": rnd.randbytes(rnd.randint(0, 30_000)) for i in range(30)}
    files["big/a.img"] = rnd.randbytes(12 * MiB + 17)
    files["big/b.img"] = rnd.randbytes(11 * MiB)
    for rel, data in files.items():
        sync.write(rel, data)
    return files


def assert_all_match(sync, client, files):
    for rel, data in files.items():
        assert object_sha(client, sync.bucket, sync.object_key(rel)) == hashlib.sha256(data).hexdigest(), rel
    assert incomplete(client, sync.bucket) == []


@pytest.mark.parametrize("seed", [21, 22])
def test_slowdown_storm_with_resets_syncs_everything(sync, s3, s3client, seed):
    print(f"seed={seed}")
    files = mixed(sync, seed)
    rnd = random.Random(seed)
    lock = threading.Lock()

    def hook(req):
        with lock:
            roll = rnd.random()
        if roll < 0.30:
            return Fault(503, "SlowDown")
        if roll < 0.40 and req.operation in ("PutObject", "UploadPart") and req.size > 1000:
            return Fault(reset=True)  # the link drops in the middle of the body
        return None

    with RecordingProxy(s3.port, hook=hook) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        result = sync.run(*ARGS, "-v")
    assert result.code == 0, result.err[-3000:]
    assert result.summary["uploaded"] == str(len(files))
    assert "throttled by the store (SlowDown): requests in flight" in result.err
    ops = proxy.operations()
    print(dict(ops))
    assert_all_match(sync, s3client, files)


def test_blackhole_longer_than_retry_timeout_then_resume(sync, s3, s3client):
    files = mixed(sync, 23)
    window = {"until": None}

    def hook(req):
        if window["until"] is None and req.operation == "UploadPart":
            window["until"] = time.monotonic() + 6
        if window["until"] and time.monotonic() < window["until"]:
            return Fault(reset=True)
        return None

    with RecordingProxy(s3.port, hook=hook) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        result = sync.run(*ARGS, "--retry-timeout", "2s", "--workers", "2")
        assert result.code == 1, result.err
        assert int(result.summary["failed"]) >= 1
        status = json.loads(sync.cli("status", "--journal", str(sync.journal), "--json").out)
        assert status["failed"], status
        while time.monotonic() < window["until"]:
            time.sleep(0.1)
        again = sync.run(*ARGS, "--resume")
    assert again.code == 0, again.err
    assert_all_match(sync, s3client, files)


def test_error_inside_a_200_complete_is_retried(sync, s3, s3client):
    big = random.Random(24).randbytes(11 * MiB)
    sync.write("big.bin", big)
    seen = []

    def hook(req):
        if req.operation == "CompleteMultipartUpload" and not seen:
            seen.append(req)
            return Fault(200, "InternalError", after_forward=True)
        return None

    with RecordingProxy(s3.port, hook=hook) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        result = sync.run(*ARGS)
    assert result.code == 0, result.err
    assert proxy.operations()["CreateMultipartUpload"] == 1
    assert object_sha(s3client, sync.bucket, sync.object_key("big.bin")) == hashlib.sha256(big).hexdigest()


FATAL = [
    (403, "AccessDenied", (), "access denied"),
    (403, "InvalidAccessKeyId", (), "access key id is not known"),
    (403, "SignatureDoesNotMatch", (), "secret key does not match"),
    (404, "NoSuchBucket", (), "bucket does not exist"),
    (403, "RequestTimeTooSkewed", (("ServerTime", "2031-01-01T00:00:00Z"),),
     "server time 2031-01-01T00:00:00Z, ours 20"),
    (400, "ExpiredToken", (), "session token has expired"),
]


@pytest.mark.parametrize("status, code, fields, words", FATAL, ids=[f[1] for f in FATAL])
def test_fatal_errors_fail_fast_with_one_line(sync, s3, status, code, fields, words):
    sync.write("a.txt", b"a")
    with RecordingProxy(s3.port, hook=lambda req: Fault(status, code, fields=fields)) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        started = time.monotonic()
        result = sync.run()
        elapsed = time.monotonic() - started
    assert result.code == 4, result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and code in lines[0], lines
    assert elapsed < 5, f"took {elapsed:.1f}s"  # the contract: fatal means no retry storm
    assert len(proxy.requests) == 1


def test_expired_token_mid_run_stops_cleanly_and_resumes(sync, s3, s3client):
    files = mixed(sync, 25)
    with RecordingProxy(s3.port, hook=lambda req: Fault(400, "ExpiredToken")
                        if req.operation in ("PutObject", "CreateMultipartUpload") else None) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        result = sync.run(*ARGS)
        assert result.code == 4 and "--resume" in result.err
        status = json.loads(sync.cli("status", "--journal", str(sync.journal), "--json").out)
        assert status["runs"][0]["state"] == "interrupted"  # an expired token passes: resumable
        proxy.hook = None
        again = sync.run(*ARGS, "--resume", "--json")
    assert again.code == 0, again.err
    assert json.loads(again.out)["resumed"] is True
    assert_all_match(sync, s3client, files)


def test_bwlimit_paces_uploads_and_keeps_bytes_intact(sync, s3client):
    files = {f"f{i}.bin": random.Random(i).randbytes(200_000) for i in range(5)}
    files["big.bin"] = random.Random(9).randbytes(6 * MiB)
    for rel, data in files.items():
        sync.write(rel, data)
    result = sync.run(*ARGS, "--bwlimit", "64MiB", "--provider", "other")
    assert result.code == 0, result.err
    assert_all_match(sync, s3client, files)
