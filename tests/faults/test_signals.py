"""Signals on a real subprocess: a second SIGTERM stops at once, yet what finished is
recorded, the summary line is printed and the exit code says SIGTERM."""

from __future__ import annotations

import hashlib
import json
import random
import signal
import time

import pytest

from journalsync.config import MiB
from tests.faults.test_multipart_crash import ARGS, incomplete, object_sha, slow_parts
from tests.support.hung import finish
from tests.support.proxy import RecordingProxy

pytestmark = pytest.mark.slow


def wait_for_line(stream, words: str) -> None:
    """Read stderr up to the line holding `words` (the run has handled the first signal)."""
    for line in stream:
        if words in line:
            return
    raise AssertionError(f"no line with {words!r}")


@pytest.mark.one_server
def test_second_sigterm_stops_now_with_the_summary_line(sync, s3, s3client):
    big = random.Random(41).randbytes(40 * MiB)
    sync.write("big.bin", big)
    sync.write("small.txt", b"small")
    with RecordingProxy(s3.port, hook=slow_parts(30.0)) as proxy:  # parts that take a while
        sync.endpoint_url = proxy.endpoint_url
        proc = sync.start(*sync.run_args(*ARGS, "--workers", "2"))
        while not proxy.in_flight("UploadPart"):
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        wait_for_line(proc.stderr, "SIGTERM: finishing the work in flight")
        proc.send_signal(signal.SIGTERM)  # parts are held 30 s: only a stop at once ends now
        out, err = finish(proc, 20)  # a hang fails with its threads' stacks
        assert proc.returncode == 143, err
        assert out.startswith("journalsync: scanned=2 "), (out, err)
        status = json.loads(sync.cli("status", *sync.journal_args(), "--json").out)
        assert status["runs"][0]["state"] == "interrupted"
        proxy.hook = None
        proxy.clear()
        result = sync.run(*ARGS, "--resume")
    assert result.code == 0, result.err
    assert proxy.operations()["CreateMultipartUpload"] == 0  # the upload was kept and continued
    assert object_sha(s3client, sync.bucket, sync.object_key("big.bin")) == hashlib.sha256(big).hexdigest()
    assert incomplete(s3client, sync.bucket) == []


def _read_offset(pid: int, path) -> int:
    """How far process `pid` has read the file at `path` (the offset of its descriptor for
    it, from /proc), 0 while it has none open."""
    import os

    fds = f"/proc/{pid}/fd"
    for fd in os.listdir(fds):
        try:
            if os.readlink(f"{fds}/{fd}") == str(path):
                with open(f"/proc/{pid}/fdinfo/{fd}") as info:
                    return int(info.readline().split()[1])  # "pos:\t<offset>"
        except OSError:
            continue  # closed meanwhile
    return 0


@pytest.mark.one_server
def test_sigterm_during_the_prehash_of_a_large_file_stops_promptly(sync, s3, s3client):
    """A file over 5 GiB is pre-hashed whole before its first part (prehash.py; on a
    PostgreSQL journal by sharedparts.py's owner, such a file being shared even alone).
    The first SIGTERM finishes the work in flight, and a pre-hash is preparation, not a
    byte on the wire: it is abandoned at its next block, and no upload is created after
    the signal. Read to its end, a 1 TiB file kept a stopping run going for many minutes
    (systemd SIGKILLs after 90 s), and then the run still created the upload. 16 GiB
    sparse: no disk, yet a read long enough to be signalled in."""
    sparse = sync.src / "sparse.bin"
    sync.write("a.txt", b"a")
    with open(sparse, "wb") as fh:
        fh.truncate(16 * 1024**3)
    with RecordingProxy(s3.port) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        proc = sync.start(*sync.run_args("--workers", "1"))
        try:
            deadline = time.monotonic() + 60
            while _read_offset(proc.pid, sparse) < 64 * MiB:  # the pre-hash is reading
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "the pre-hash never began"
                time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            wait_for_line(proc.stderr, "SIGTERM: finishing the work in flight")
            signalled = time.monotonic()
            out, err = finish(proc, 30)  # a hang fails with its threads' stacks
            took = time.monotonic() - signalled
        finally:
            if proc.poll() is None:
                proc.kill()
        created = proxy.operations()["CreateMultipartUpload"]
    assert proc.returncode == 143, err
    assert took < 8, f"SIGTERM took {took:.1f} s to stop a run pre-hashing 16 GiB"
    assert created == 0, "a stopping run created a new multipart upload"
    assert incomplete(s3client, sync.bucket) == []
    status = json.loads(sync.cli("status", *sync.journal_args(), "--json").out)
    assert status["runs"][0]["state"] == "interrupted"  # the file is --resume's, or the next run's
