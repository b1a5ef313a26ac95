"""Racily-clean hashes, for real: content that changes while (size, mtime_ns, ctime_ns,
inode) stay exactly as they were.

Such a write needs no special filesystem: stores through a shared writable mapping whose
page is already faulted in move no timestamp (the kernel stamps mtime/ctime at the first
write fault, not at every store), and the same happens to a same-size write() in the hash's
clock tick on a coarse clock (FAT's 2 s, SMB, NFS, Linux before 6.13). Each test asserts
the identity really is unchanged before it relies on it.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import random
import time

import pytest

from journalsync.config import MiB
from journalsync.scan import RACY_WINDOW_NS
from tests.support.proxy import RecordingProxy

pytestmark = pytest.mark.slow

ARGS = ("--multipart-threshold", "5MiB", "--part-size", "5MiB")


def identity(path) -> tuple[int, int, int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino


def body(sync, s3client, rel: str) -> bytes:
    return s3client.get_object(Bucket=sync.bucket, Key=sync.object_key(rel))["Body"].read()


def test_edit_in_the_hash_tick_is_uploaded_by_the_next_run(sync, s3client):
    path = sync.write("notes.txt", b"version one")
    sync.write("other.txt", b"unchanged")
    with open(path, "r+b") as fh, mmap.mmap(fh.fileno(), 0) as mapped:
        mapped[:1] = b"V"  # the write fault: timestamps move now, never again for this page
        # The file's timestamp lands in the tick the next run hashes it in (a coarse or a
        # server clock); set ahead with utime, since this run's start-up time is not ours.
        ahead = time.time_ns() + 60 * 10**9
        os.utime(path, ns=(ahead, ahead))
        first = sync.run()
        assert (first.code, first.summary["uploaded"]) == (0, "2"), first.err
        assert body(sync, s3client, "notes.txt") == b"Version one"
        before = identity(path)
        mapped[:7] = b"VERSION"  # same size, new content
        assert identity(path) == before, "this filesystem moved a timestamp; no race to show"
        second = sync.run()
    assert (second.code, second.summary["uploaded"]) == (0, "1"), second.err
    assert body(sync, s3client, "notes.txt") == b"VERSION one"


def test_multipart_that_found_its_file_changed_uploads_next_night(sync, s3, s3client):
    """A multipart upload reads bytes whose SHA-256 is not the cached one while the identity
    says nothing changed: it is aborted, and the cached hash is forgotten, so the next night
    hashes the file again and uploads it instead of failing the same way every night."""
    path = sync.write("big.bin", random.Random(11).randbytes(20 * MiB))
    with open(path, "r+b") as fh, mmap.mmap(fh.fileno(), 0) as mapped:
        mapped[-1:] = b"\0"  # fault the last page in writable; its timestamps move now
        time.sleep(RACY_WINDOW_NS / 1e9 + 0.1)  # so the first night's hash is not racy
        before = identity(path)

        def hook(req):
            if req.operation == "UploadPart" and mapped[-4:] != b"EDIT":
                mapped[-4:] = b"EDIT"  # part 4 is not read yet: one worker, two part slots
            return None

        with RecordingProxy(s3.port, hook=hook) as proxy:
            sync.endpoint_url = proxy.endpoint_url
            # Pre-hashed: a streamed upload (stamp.py) hashes the bytes it sends, so its
            # metadata is right whatever the edit; the pre-hash's can disagree with them.
            night1 = sync.run(*ARGS, "--workers", "1", "--large-files", "prehash")
        assert night1.code == 1 and "changed during upload" in night1.err, night1.err
        assert identity(path) == before, "this filesystem moved a timestamp; no race to show"
        sync.endpoint_url = None
        night2 = sync.run(*ARGS)
        current = hashlib.sha256(mapped).hexdigest()
    assert (night2.code, night2.summary["uploaded"]) == (0, "1"), night2.err
    assert hashlib.sha256(body(sync, s3client, "big.bin")).hexdigest() == current
    assert sync.journal_rows("SELECT sha256 FROM files WHERE key = 'big.bin'") == [(current,)]


# --- files dated after 2262-04-11: st_mtime_ns of 2^63 and above --------------------------

FUTURE_NS = 2**63 + 10**9  # 2262-04-11 and a second: kept wrapped (objectmeta.stored_ns)


def meta_of(sync, s3client, rel: str) -> dict[str, str]:
    head = s3client.head_object(Bucket=sync.bucket, Key=sync.object_key(rel))
    return {k.lower(): v for k, v in head["Metadata"].items()}


@pytest.mark.one_server
def test_a_file_dated_after_2262_is_synced_with_the_rest(sync, s3client):
    """An mtime after 2262-04-11 is st_mtime_ns >= 2^63 (a bad clock, an archive from a
    broken camera, `touch -d 2300-01-01`). Staged as it is, it overflowed the journal's
    signed 64-bit column (OverflowError from stage_files): exit 70 on SQLite, 5 on
    PostgreSQL, on every run, nothing uploaded. It is kept as inode numbers are, two's
    complement, and synced with its true time in the object's `mtime`; `verify` and
    `status` read the journal as usual, and the next run finds nothing to send."""
    from journalsync.objectmeta import mtime_text

    sync.write("a.txt", b"an ordinary file")
    future = sync.write("future.txt", b"dated in the 24th century")
    os.utime(future, ns=(FUTURE_NS, FUTURE_NS))
    first = sync.run()
    assert (first.code, first.summary["uploaded"]) == (0, "2"), first.err
    assert body(sync, s3client, "future.txt") == b"dated in the 24th century"
    assert meta_of(sync, s3client, "future.txt")["mtime"] == mtime_text(FUTURE_NS) == \
        "9223372037.854775808"
    verified = sync.cli("verify", sync.dest, *sync.journal_args())
    assert verified.code == 0, (verified.out, verified.err)
    status = sync.cli("status", *sync.journal_args())
    assert status.code == 0, status.err
    second = sync.run()
    assert (second.code, second.summary["uploaded"]) == (0, "0"), second.err


@pytest.mark.one_server
def test_a_file_dated_after_2262_changed_in_the_same_size_is_sent_again(sync, s3client):
    """Its stored mtime is negative (wrapped), so nothing may order it against a clock: a
    far-future file is always racy by its stat's own time (is_racy), hashed again by every
    scan, and an edit that moves no timestamp at all (a store through a faulted-in shared
    mapping) is uploaded by the next run, as is a same-size rewrite dated back to the same
    far-future time (its ctime moved)."""
    path = sync.write("future.txt", b"version one")
    with open(path, "r+b") as fh, mmap.mmap(fh.fileno(), 0) as mapped:
        mapped[:1] = b"V"  # the write fault: timestamps move now, never again for this page
        os.utime(path, ns=(FUTURE_NS, FUTURE_NS))
        first = sync.run()
        assert (first.code, first.summary["uploaded"]) == (0, "1"), first.err
        before = identity(path)
        mapped[:7] = b"VERSION"  # same size, new content
        assert identity(path) == before, "this filesystem moved a timestamp; no race to show"
        second = sync.run()
    assert (second.code, second.summary["uploaded"]) == (0, "1"), second.err
    assert body(sync, s3client, "future.txt") == b"VERSION one"
    path.write_bytes(b"version two")
    os.utime(path, ns=(FUTURE_NS, FUTURE_NS))
    third = sync.run()
    assert (third.code, third.summary["uploaded"]) == (0, "1"), third.err
    assert body(sync, s3client, "future.txt") == b"version two"


@pytest.mark.one_server
@pytest.mark.parametrize("large", ["stream", "prehash"])
def test_a_large_file_dated_after_2262_carries_its_time_and_hash(sync, s3client, large):
    """The multipart paths: a pre-hashed upload's create and a streamed upload's stamp
    (which reads the mtime back from the journal: calendar_ns) write the true time."""
    from journalsync.objectmeta import mtime_text

    data = random.Random(2262).randbytes(7 * MiB)
    path = sync.write("big.bin", data)
    os.utime(path, ns=(FUTURE_NS, FUTURE_NS))
    first = sync.run(*ARGS, "--large-files", large)
    assert (first.code, first.summary["uploaded"]) == (0, "1"), first.err
    meta = meta_of(sync, s3client, "big.bin")
    assert meta["mtime"] == mtime_text(FUTURE_NS)
    assert meta["sha256"] == hashlib.sha256(data).hexdigest()
    assert sync.cli("verify", sync.dest, *sync.journal_args()).code == 0
    second = sync.run(*ARGS, "--large-files", large)
    assert (second.code, second.summary["uploaded"]) == (0, "0"), second.err
