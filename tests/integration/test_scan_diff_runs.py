"""The diff scan (scandiff.py) in real runs: every kind of change to the tree between two
runs (same-size edits, mtime put back, a new inode, names that sort tricky, a file that
became a directory and back, filters that change, a kill before the scan is committed),
and each run uploads exactly what changed, counts it right, and --delete deletes only
the objects whose file is gone."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import unicodedata

import pytest

from tests.conftest import Result
from tests.support.proxy import Fault, RecordingProxy

TRICKY = ["a-b", "a.b", "a0", "A", "a/bc", "a/b-c", "a/b/c", "a/b.c", "a\\b", "b",
          "caf\u00e9", "\u00e9t\u00e9/1", "\U0001f600", "\uffee", "k", "k-/1", "k0/1",
          "x" * 200, "gone/1", "gone/2/3", "z"]


def objects(sync, client) -> dict[str, bytes]:
    out, base = {}, sync.prefix + "/"
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=sync.bucket, Prefix=base):
        for o in page.get("Contents", ()):
            body = client.get_object(Bucket=sync.bucket, Key=o["Key"])["Body"].read()
            out[o["Key"][len(base):]] = body
    return out


def local(sync) -> dict[str, bytes]:
    out = {}
    for dirpath, _, names in os.walk(sync.src):
        for name in names:
            path = os.path.join(dirpath, name)
            if os.path.isfile(path) and not os.path.islink(path):
                rel = unicodedata.normalize("NFC", os.path.relpath(path, sync.src))
                with open(path, "rb") as fh:
                    out[rel] = fh.read()
    return out


def files_rows(sync) -> set[str]:
    return {k for (k,) in sync.journal_rows("SELECT key FROM files")}


def manifest(sync) -> dict[str, tuple[int, str]]:
    return {k: (s, e) for k, s, e in sync.journal_rows("SELECT key, size, etag FROM remote_objects")}


def counts(result) -> tuple:
    s = result.summary
    return int(s["uploaded"]), int(s["skipped"]), int(s["deleted"]), int(s["extra"]), int(s["failed"])


@pytest.mark.pg_server("moto")  # the one server that holds every TRICKY name
def test_every_local_change_uploads_exactly_what_changed(sync, s3, s3client):
    if s3.name != "moto":  # rclone's files cannot hold "A" and "A/inner" at once, and
        pytest.skip(f"{s3.name} stores keys as files")  # SeaweedFS rewrites "\\"
    for rel in TRICKY:
        sync.write(rel, b"v1:" + rel.encode())
    first = sync.run("--delete")
    assert first.code == 0, first.err
    assert counts(first)[0] == len(TRICKY)
    assert objects(sync, s3client) == local(sync)

    same = sync.src / "b"
    st = same.stat()
    same.write_bytes(b"v2:b")  # same size, mtime moves
    restored = sync.src / "a.b"
    st = restored.stat()
    restored.write_bytes(b"v2:a.b")
    os.utime(restored, ns=(st.st_atime_ns, st.st_mtime_ns))  # mtime put back, ctime moved
    renamed = sync.src / "z"
    st = renamed.stat()
    tmp = sync.src / "z.tmp"
    tmp.write_bytes(b"v2:z")
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.rename(tmp, renamed)  # a new inode, same size and mtime
    sync.write("a-a", b"new between a-b... and a.b")  # sorts between journaled keys
    sync.write("a/b/b", b"new inside")
    (sync.src / "A").unlink()
    sync.write("A/inner", b"a file became a directory")
    shutil.rmtree(sync.src / "k0")
    sync.write("k0", b"a directory became a file")
    shutil.rmtree(sync.src / "gone")
    sync.write("new/deep/1", b"a new directory")
    (sync.src / "caf\u00e9").unlink()
    sync.write(unicodedata.normalize("NFD", "caf\u00e9"), "v1:caf\u00e9".encode())  # NFD, same key
    (sync.src / "k").unlink()
    os.symlink("b", sync.src / "k")  # a file became a symlink (not followed: gone)
    os.mkfifo(sync.src / "a0.fifo")

    second = sync.run("--delete", "--max-delete-percent", "100")
    assert second.code == 0, second.err + second.out
    # b, a.b, z changed; a-a, a/b/b, A/inner, k0, new/deep/1 new; café's path changed
    # (same key, same bytes: skipped after a hash); deletes: A, k0/1, gone/1, gone/2/3, k.
    uploaded, skipped, deleted, extra, failed = counts(second)
    assert (uploaded, deleted, failed) == (8, 5, 0), second.out + second.err
    assert objects(sync, s3client) == local(sync)
    assert files_rows(sync) == set(local(sync))

    noop = sync.run("--delete")
    assert noop.code == 0, noop.err
    assert counts(noop) == (0, len(local(sync)), 0, 0, 0), noop.out
    assert objects(sync, s3client) == local(sync)


def test_filters_and_files_that_come_back(sync, s3client):
    for rel in ["a.log", "a.txt", "d/x.log", "d/y.txt", "e/z.txt"]:
        sync.write(rel, rel.encode())
    first = sync.run("--delete")
    assert first.code == 0 and counts(first)[0] == 5, first.err
    # Excluded from now on: never uploaded, never deleted, and no longer in `files`.
    second = sync.run("--delete", "--exclude", "*.log", "--exclude", "e/*")
    assert second.code == 0, second.err
    assert counts(second)[:3] == (0, 2, 0), second.out
    assert set(objects(sync, s3client)) == {"a.log", "a.txt", "d/x.log", "d/y.txt", "e/z.txt"}
    # The filter goes: the excluded files are files again, unchanged.
    third = sync.run("--delete")
    assert third.code == 0, third.err
    assert counts(third)[:3] == (0, 5, 0), third.out
    # A file gone, then back with the same bytes before the next run.
    path = sync.src / "d" / "y.txt"
    data = path.read_bytes()
    path.unlink()
    gone = sync.run()
    assert gone.code == 0 and counts(gone)[3] == 1, gone.out
    path.write_bytes(data)
    back = sync.run("--delete")
    assert back.code == 0, back.err
    assert counts(back)[2] == 0, back.out
    assert objects(sync, s3client) == local(sync)


def test_a_prefix_change_is_refused_and_changes_nothing(sync, s3client):
    for rel in ["a", "d/b", "d/c"]:
        sync.write(rel, rel.encode())
    assert counts(sync.run())[0] == 3
    before = manifest(sync)
    sync.prefix = "backup/host2"
    other = sync.run("--delete")
    assert other.code == 2 and "give this job its own --journal" in other.err, other.err
    assert len(other.err.strip().splitlines()) == 1, other.err
    assert manifest(sync) == before
    assert not s3client.list_objects_v2(Bucket=sync.bucket, Prefix="backup/host2/").get("Contents")


def test_a_kill_after_the_walk_then_resume(sync, s3, s3client):
    for rel in ["a", "b", "c", "d/e"]:
        sync.write(rel, rel.encode())
    assert sync.run().code == 0
    sync.write("b", b"B")  # same size, other bytes
    (sync.src / "c").unlink()
    sync.write("d/f", b"new")
    # The LIST of the manifest is held (not check_bucket's, which has no delimiter): the
    # walk, beside it, is done and waits for it before hashing and committing.
    hold = lambda req: (Fault(status=0, delay=60)  # noqa: E731
                        if req.operation == "ListObjects" and "delimiter" in req.query else None)
    with RecordingProxy(s3.port, hook=hold) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        proc = sync.start(*sync.run_args("--delete", "--max-delete-percent", "100"))
        deadline = time.monotonic() + 30
        while proxy.in_flight("ListObjects") == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # the walk of four files is long done: the scan waits for the LIST
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    sync.endpoint_url = None
    resumed = sync.run("--resume", "--delete", "--max-delete-percent", "100")
    assert resumed.code == 0, resumed.err
    assert counts(resumed)[:3] == (2, 2, 1), resumed.out
    assert objects(sync, s3client) == local(sync)
    assert files_rows(sync) == set(local(sync))

def test_two_directories_with_one_key_fall_back_and_delete_nothing(sync, s3client):
    """Two directories whose names normalise to one key: the walk leaves key order, the
    scan stages every file instead, and a file in either is neither lost nor re-sent."""
    nfc, nfd = "\u00e9", unicodedata.normalize("NFD", "\u00e9")
    for rel in (f"{nfc}/x", f"{nfc}/z", "b"):
        sync.write(rel, rel.encode())
    assert counts(sync.run())[0] == 3
    sync.write(f"{nfd}/y", b"y")
    second = sync.run("--delete", "--max-delete-percent", "100")
    assert second.code == 0, second.err
    assert counts(second) == (1, 3, 0, 0, 0), second.out
    again = sync.run("--delete", "--max-delete-percent", "100")
    assert counts(again) == (0, 4, 0, 0, 0), again.out
    assert objects(sync, s3client) == local(sync)
    assert files_rows(sync) == set(local(sync))
    (sync.src / nfc / "z").unlink()  # a file gone from the first directory
    third = sync.run("--delete", "--max-delete-percent", "100")
    assert counts(third) == (0, 3, 1, 0, 0), third.out
    assert objects(sync, s3client) == local(sync)


def run_unprivileged(sync, *extra: str) -> Result:
    """A run without root's right to read any directory (CAP_DAC_OVERRIDE and
    CAP_DAC_READ_SEARCH, dropped from the bounding set), so a directory of mode 000 cannot
    be listed, as for any other user."""
    drop = (["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]
            if os.geteuid() == 0 else [])
    proc = subprocess.run([*drop, sys.executable, "-m", "journalsync", *sync.run_args(*extra)],
                          env=sync.env(), capture_output=True, text=True, timeout=180)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def test_an_unlistable_directory_loses_nothing_and_deletes_nothing(sync, s3client):
    """Files under a directory the scan cannot list are not gone: the merge passes their
    keys without seeing them, and must keep their rows (as must the neighbours that sort
    around "locked/" in bytes: "locked-x" below, "locked0" above), so --delete (even
    --force) deletes nothing, and once the directory is readable again nothing is re-sent
    and only the file truly gone is deleted."""
    names = ["keep", "locked-x", "locked/a", "locked/sub/b", "locked0", "gone",
             "été/1"]
    for rel in names:
        sync.write(rel, rel.encode())
    first = sync.run("--delete")
    assert first.code == 0 and counts(first)[0] == len(names), first.err
    (sync.src / "gone").unlink()
    locked = sync.src / "locked"
    locked.chmod(0)
    try:
        for extra in ((), ("--force",)):
            blocked = run_unprivileged(sync, "--delete", "--max-delete-percent", "100", *extra)
            assert blocked.code == 1, blocked.err + blocked.out
            assert "so nothing is deleted" in blocked.err, blocked.err
            assert counts(blocked) == (0, 4, 0, 1, 1), blocked.out  # failed: the directory
            assert set(objects(sync, s3client)) == set(names)
            assert files_rows(sync) == set(names) - {"gone"}
    finally:
        locked.chmod(0o755)
    back = sync.run("--delete", "--max-delete-percent", "100")
    assert back.code == 0, back.err
    assert counts(back) == (0, len(names) - 1, 1, 0, 0), back.out
    assert objects(sync, s3client) == local(sync)
    assert files_rows(sync) == set(local(sync))
