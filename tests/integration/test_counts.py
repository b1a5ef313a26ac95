"""The summary line adds up, and every failure is a line on stderr (capped).

    scanned = uploaded + skipped + failed + vanished + pending

`failed` counts what `status --failed` lists for the source (files and directories the scan
could not read, uploads that failed) and what the delete guard counts as errors."""

from __future__ import annotations

import json
import os
import signal
import socket
import time

import pytest

from tests.integration.test_delete import beyond_path_max
from tests.support.proxy import Fault, RecordingProxy

# The subject is the client (its journal bookkeeping, its summary line and what it prints):
# one server shows it (tests/conftest.py ONE_SERVER); the stores' differences are tested
# where they matter (test_sync, test_trust, test_delete, test_adopt...). With these on three
# servers, a fresh clone's `make test` took 14:33 in pytest (15:20 with its install) on 2
# cores, at the edge of its 15 minutes.
pytestmark = pytest.mark.one_server

IDENTITY = ("uploaded", "skipped", "failed", "vanished", "pending")


def adds_up(result) -> dict[str, int]:
    """The summary's counts (of a Result or of stdout), after checking their identity."""
    out = result if isinstance(result, str) else result.out
    last = out.strip().splitlines()[-1]
    assert last.startswith("journalsync: "), out
    counts = {k: int(v) for k, v in (p.split("=", 1) for p in last[13:].split()) if k != "elapsed"}
    assert counts["scanned"] == sum(counts[k] for k in IDENTITY), out
    return counts


def failure_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if " WARNING failed: " in line]


def status_failed(sync) -> dict:
    return json.loads(sync.cli("status", *sync.journal_args(), "--failed", "--json").out)


def bad_names(sync, n: int) -> None:
    for i in range(n):
        with open(os.fsencode(sync.src) + b"/bad-\xff%02d" % i, "wb") as fh:
            fh.write(b"x")


def test_scan_failures_are_lines_on_stderr_capped_and_counted(sync):
    sync.write("ok.txt", b"ok")
    bad_names(sync, 24)
    sync.write("/".join(["k" * 250] * 5), b"long key")  # a key over 1,024 bytes
    beyond_path_max(sync.src)
    result = sync.run()
    assert result.code == 1, result.err
    counts = adds_up(result)
    assert counts["scanned"] == 27 and counts["uploaded"] == 1 and counts["failed"] == 26
    lines = failure_lines(result.err)
    assert len(lines) == 20, result.err
    assert any("file name is not valid UTF-8" in line for line in lines), result.err
    tail = [line for line in result.err.splitlines() if "more: journalsync status --failed" in line]
    assert len(tail) == 1 and tail[0].endswith("\u2026 and 6 more: journalsync status --failed")
    listed = status_failed(sync)
    assert len(listed["file_errors"]) + len(listed["failed"]) == counts["failed"]


def test_upload_failures_are_capped_the_same_way(sync, s3):
    for i in range(23):
        sync.write(f"f{i:02d}.txt", b"data")
    with RecordingProxy(s3.port, hook=lambda r: Fault(400, "InvalidArgument")
                        if r.operation == "PutObject" else None) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        result = sync.run()
    assert result.code == 1, result.err
    assert adds_up(result)["failed"] == 23
    assert len(failure_lines(result.err)) == 20, result.err
    assert result.err.rstrip().endswith("\u2026 and 3 more: journalsync status --failed")
    assert len(status_failed(sync)["failed"]) == 23


def test_counts_add_up_on_second_run_and_dry_run(sync):
    for i in range(5):
        sync.write(f"a{i}.txt", b"a" * i)
    first, second = adds_up(sync.run()), adds_up(sync.run())
    assert (first["scanned"], first["uploaded"], first["skipped"], first["bytes"]) == (5, 5, 0, 10)
    assert (second["scanned"], second["uploaded"], second["skipped"], second["bytes"]) == (5, 0, 5, 0)
    sync.write("new.txt", b"new")
    bad_names(sync, 1)
    dry = sync.run("--dry-run")
    assert dry.code == 1, dry.err
    counts = adds_up(dry)
    assert [counts[k] for k in ("scanned", "uploaded", "skipped", "pending", "failed")] == \
        [7, 0, 5, 1, 1], dry.out
    again = adds_up(sync.run())
    assert (again["scanned"], again["uploaded"], again["skipped"], again["failed"]) == (7, 1, 5, 1)


def test_an_unreadable_directory_is_scanned_and_failed_as_the_guard_counts_it(sync):
    sync.write("a.txt", b"a")
    sync.write("gone.txt", b"g")
    assert sync.run().code == 0
    (sync.src / "gone.txt").unlink()
    bad_names(sync, 1)
    beyond_path_max(sync.src)
    result = sync.run("--delete", "--force")
    counts = adds_up(result)
    assert counts["failed"] == 2, result.out
    assert "2 error(s) in this run, so nothing is deleted" in result.err
    listed = status_failed(sync)
    assert len(listed["file_errors"]) + len(listed["failed"]) == 2


def test_counts_add_up_when_stopped_and_resumed(sync, s3):
    for i in range(12):
        sync.write(f"s{i:02d}.txt", b"slow")
    with RecordingProxy(s3.port, hook=lambda r: Fault(status=0, delay=0.5)
                        if r.operation == "PutObject" else None) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        proc = sync.start(*sync.run_args("--workers", "1"))
        while not proxy.operations()["PutObject"]:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 143, err
        stopped = adds_up(out)
        assert stopped["pending"] > 0 and stopped["uploaded"] < 12, out
        proxy.hook = None
        resumed = adds_up(sync.run("--resume"))
    assert (resumed["scanned"], resumed["uploaded"], resumed["pending"]) == (12, 12, 0)


def test_special_files_are_counted_and_noted(sync, tmp_path):
    sync.write("a.txt", b"a")
    os.mkfifo(sync.src / "fifo")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(sync.src / "sock"))
    try:
        result = sync.run()
    finally:
        sock.close()
    assert result.code == 0, result.err
    assert adds_up(result)["scanned"] == 1
    assert "note: 2 special file(s) (FIFO, socket, device) not backed up" in result.err


def test_bytes_are_file_bytes_and_sent_counts_the_retries(sync, s3):
    sync.write("a.bin", b"z" * 1000)
    first = []

    def hook(req):
        if req.operation == "PutObject" and not first:
            first.append(req)
            return Fault(500, "InternalError")
        return None

    with RecordingProxy(s3.port, hook=hook) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        result = sync.run()
    assert result.code == 0, result.err
    counts = adds_up(result)
    assert (counts["bytes"], counts["sent"]) == (1000, 2000), result.out


def test_a_killed_run_shows_as_interrupted_in_status(sync, s3):
    """While the run lives, `status` says running; once it is SIGKILLed (no chance to
    record its end) the run lock is free, and `status` says interrupted."""
    for i in range(6):
        sync.write(f"s{i}.txt", b"slow")

    def state() -> str:
        status = json.loads(sync.cli("status", *sync.journal_args(), "--json").out)
        return status["runs"][0]["state"]

    with RecordingProxy(s3.port, hook=lambda r: Fault(status=0, delay=2.0)
                        if r.operation == "PutObject" else None) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        proc = sync.start(*sync.run_args("--workers", "1"))
        while not proxy.operations()["PutObject"]:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.01)
        assert state() == "running"
        proc.kill()
        proc.communicate(timeout=30)
    assert state() == "interrupted"
