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


@pytest.mark.one_server
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
    slowdowns = sum(a.code == "SlowDown" for a in proxy.answers)
    sends = sum(a.request.operation in ("PutObject", "UploadPart") for a in proxy.answers)
    print(f"{slowdowns} SlowDown answers, {sends} bodies sent, {dict(proxy.operations())}")
    assert slowdowns > 0 and sends > 30 + 3 + 3  # bodies sent again: retries happened
    assert_all_match(sync, s3client, files)


@pytest.mark.one_server
@pytest.mark.parametrize("path", ["--crt", "--no-crt"])
def test_slowdown_holds_requests_back_then_lets_them_grow(sync, s3, s3client, path):
    """16 workers keep 16 PUTs in flight (the proxy holds each 0.3 s, so the count shows).
    From the 40th PUT on, for 7 s, each file's first PUT is answered SlowDown and its
    retry goes through: a worker's own retry waits only ~0.1 s, so without the shared
    backoff about 16 stay in flight. With it, the limit halves once a second (32 -> 16 ->
    8 ...) faster than the successes let it grow (about 1/(2 x 0.3 s) per second), so in
    the window's last 3 s at most 8 are in flight; after the window it grows back. On
    both paths: the CRT reports a 503 by name only, which once made it a dropped
    connection the shared backoff never heard of."""
    files = {f"f{i:03d}.txt": f"file {i}".encode() * 50 for i in range(200)}
    for rel, data in files.items():
        sync.write(rel, data)
    lock, puts, refused, window = threading.Lock(), [0], set(), {}

    def hook(req):
        if req.operation != "PutObject":
            return None
        with lock:
            puts[0] += 1
            if puts[0] == 40:
                window["start"] = time.monotonic()
            start = window.get("start")
            first_send = req.path not in refused
            if start is not None and time.monotonic() < start + 7 and first_send:
                refused.add(req.path)
                return Fault(503, "SlowDown", delay=0.3)
        return Fault(status=0, delay=0.3)

    with RecordingProxy(s3.port, hook=hook) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        result = sync.run("--workers", "16", path)
    assert result.code == 0, result.err[-3000:]
    first = min(a.at for a in proxy.answers if a.code == "SlowDown")
    end = window["start"] + 7
    before = proxy.peak_in_flight(until=first)
    held = proxy.peak_in_flight(since=end - 3, until=end)
    after = proxy.peak_in_flight(since=end)
    print(f"requests in flight: {before} before the first SlowDown, {held} in the window's "
          f"last 3 s, {after} after it")
    assert before >= 12, before
    assert held <= 8, held
    assert after >= held + 4, (held, after)
    assert_all_match(sync, s3client, files)


@pytest.mark.one_server
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
        status = json.loads(sync.cli("status", *sync.journal_args(), "--json").out)
        assert status["failed"], status
        while time.monotonic() < window["until"]:
            time.sleep(0.1)
        again = sync.run(*ARGS, "--resume")
    assert again.code == 0, again.err
    assert_all_match(sync, s3client, files)


@pytest.mark.one_server
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


@pytest.mark.one_server
@pytest.mark.parametrize("status, code, fields, words", FATAL, ids=[f[1] for f in FATAL])
def test_fatal_errors_fail_fast_with_one_line(sync, s3, status, code, fields, words):
    sync.write("a.txt", b"a")
    with RecordingProxy(s3.port, hook=lambda req: Fault(status, code, fields=fields)) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        result = sync.run()
    assert result.code == 4, result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and code in lines[0], lines
    assert len(proxy.requests) == 1  # the contract: fatal means no retry, not one


@pytest.mark.one_server
def test_expired_token_mid_run_stops_cleanly_and_resumes(sync, s3, s3client):
    files = mixed(sync, 25)
    with RecordingProxy(s3.port, hook=lambda req: Fault(400, "ExpiredToken")
                        if req.operation in ("PutObject", "CreateMultipartUpload") else None) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        result = sync.run(*ARGS)
        assert result.code == 4 and "--resume" in result.err
        status = json.loads(sync.cli("status", *sync.journal_args(), "--json").out)
        assert status["runs"][0]["state"] == "interrupted"  # an expired token passes: resumable
        proxy.hook = None
        again = sync.run(*ARGS, "--resume", "--json")
    assert again.code == 0, again.err
    assert json.loads(again.out)["resumed"] == 1
    assert_all_match(sync, s3client, files)


@pytest.mark.one_server
@pytest.mark.parametrize("path", ["--crt", "--no-crt"])
def test_bwlimit_paces_uploads_and_keeps_bytes_intact(sync, s3, s3client, path):
    """8 MiB (16 small files and a 6 MiB multipart file) at --bwlimit 2MiB: every body is
    read as it is sent, after its request's headers reached the proxy, so from the first
    body's headers to the last body's answer cannot take less than 4 s (the test asks for
    3 s: the bucket's burst is 1/8 s). With the CRT on, the PUTs and parts go through
    botocore, whose bodies draw from the limiter; the CRT would read them unpaced."""
    files = {f"f{i:02d}.bin": random.Random(i).randbytes(128 * 1024) for i in range(16)}
    files["big.bin"] = random.Random(99).randbytes(6 * MiB)
    for rel, data in files.items():
        sync.write(rel, data)
    with RecordingProxy(s3.port) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        result = sync.run(*ARGS, "--bwlimit", "2MiB", path)
    assert result.code == 0, result.err
    bodies = [a for a in proxy.answers if a.request.operation in ("PutObject", "UploadPart")]
    assert sum(a.request.size for a in bodies) == 8 * MiB  # each body sent once
    took = max(a.at for a in bodies) - min(a.request.at for a in bodies)
    print(f"8 MiB at 2 MiB/s: {took:.2f}s from the first body's headers to the last answer")
    assert took >= 3.0, f"{took:.2f}s"
    assert_all_match(sync, s3client, files)
