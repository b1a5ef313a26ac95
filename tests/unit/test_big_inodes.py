"""Inode numbers of 2^63 and above (NFS, CephFS, Lustre, FUSE, overlayfs with xino) in the
journal, SQLite and PostgreSQL alike: both store signed 64-bit integers, so the journal keeps
an inode as its two's complement (objectmeta.inode_number), the same number for the same
file on every read of it, and any inode below 2^63 as itself (old rows need no migration).
Timestamps of 2^63 ns and above (a file dated after 2262-04-11) are kept the same way
(objectmeta.stored_ns), and read back as times only next to a stat (calendar_ns)."""

from __future__ import annotations

import os

import pytest

from journalsync.journal import Journal
from journalsync.journal.uploads import UploadRecord
from journalsync.objectmeta import (calendar_ns, file_identity, inode_number, mtime_of_text,
                                   mtime_text, stored_ns)
from journalsync.scandiff import ScanDiff, stage_row

INODES = [0, 2**63 - 1, 2**63, 2**64 - 1]
# mtimes: today, 1969, the last ns before 2262-04-11, the first after, 2446 (ext4's last),
# and one past 2^64 ns (2554: btrfs and tmpfs keep any time).
MTIMES = [1_700_000_000_123456789, -1, 2**63 - 1, 2**63, 15032385535 * 10**9, 2**64 + 10**9]


def _stat(ino: int, mtime_ns: int = 1_700_000_000_123456789) -> os.stat_result:
    """A regular file's stat as the kernel reports it (st_ino unsigned, up to 2^64 - 1)."""
    return os.stat_result((0o100644, ino, 1, 1, 0, 0, 5, 0, 0, 0),
                          {"st_mtime_ns": mtime_ns,
                           "st_ctime_ns": 1_700_000_000_987654321})


def test_inode_number_is_the_identity_below_2_63_and_a_signed_64_bit_int_above():
    assert [inode_number(n) for n in INODES] == [0, 2**63 - 1, -(2**63), -1]
    assert len({inode_number(n) for n in INODES}) == len(INODES)  # still one number per inode


def test_stored_ns_is_the_identity_below_2_63_and_a_signed_64_bit_int_above():
    assert [stored_ns(n) for n in MTIMES] == [
        MTIMES[0], -1, 2**63 - 1, -(2**63), 15032385535 * 10**9 - 2**64, 10**9]
    assert all(-(2**63) <= stored_ns(n) < 2**63 for n in MTIMES)


@pytest.mark.parametrize("mtime_ns", MTIMES)
def test_calendar_ns_gives_back_the_stats_time(mtime_ns):
    """Next to a stat of the file, unchanged or changed by a while, the journal's number
    reads back as the time the create's metadata was written with."""
    for near in (mtime_ns, mtime_ns + 10**9, mtime_ns - 86400 * 10**9):
        assert calendar_ns(stored_ns(mtime_ns), near) == mtime_ns
    assert mtime_of_text(mtime_text(mtime_ns)) == mtime_ns
    assert mtime_of_text("12") is None and mtime_of_text(None) is None


@pytest.mark.parametrize("ino, mtime_ns", [*((ino, MTIMES[0]) for ino in INODES),
                                           *((2**63, m) for m in MTIMES[1:])])
def test_a_scanned_file_reads_back_as_the_same_file(journal_at, ino, mtime_ns):
    st = _stat(ino, mtime_ns)
    with Journal(journal_at) as journal:
        journal.begin_scan()
        journal.stage_files([{**stage_row("a.txt", "a.txt", st, None), "sha256": "ab" * 32}])
        journal.commit_scan(1)
        [(local, _)] = list(journal.iter_plan_inputs())
        assert (local.size, local.mtime_ns, local.ctime_ns, local.inode) == file_identity(st)

        # The next scan of the same file finds it unchanged (the diff scan compares in
        # Python, the full one in SQL): nothing staged, nothing hashed again.
        journal.begin_scan(diff=True)
        diff = ScanDiff(journal, batch=10)
        diff.add("a.txt", "a.txt", st)
        assert diff.staged == []
        diff.finish()
        journal.begin_scan()
        journal.stage_files([stage_row("a.txt", "a.txt", st, None)])
        assert list(journal.iter_files_to_hash(all_changed=True)) == []


@pytest.mark.parametrize("ino, mtime", [(ino, MTIMES[0]) for ino in INODES] + [(0, 2**63)])
def test_a_multipart_upload_reads_back_with_the_file_identity(journal_at, ino, mtime):
    size, mtime_ns, ctime_ns, inode = file_identity(_stat(ino, mtime))
    with Journal(journal_at) as journal:
        run = journal.start_run("/src", "s3://b/p", None, False)
        rec = UploadRecord("u1", "big.bin", run, 8 << 20, size, mtime_ns, ctime_ns, inode,
                           "cd" * 32, 1.0, "active")
        journal.record_upload(rec, None)
        [back] = journal.active_uploads()
    assert (back.size, back.mtime_ns, back.ctime_ns, back.inode) == file_identity(_stat(ino, mtime))


@pytest.mark.parametrize("mtime_ns", MTIMES)
def test_a_streamed_uploads_object_is_known_by_the_mtime_its_create_wrote(mtime_ns):
    """stamp._ours: the create wrote the stat's time (mtime_text), the journal keeps
    stored_ns of it; the two still match, and another time does not."""
    from journalsync.journal.uploads import STREAM_MARK
    from journalsync.stamp import _ours

    rec = UploadRecord("u1", "big.bin", 1, 8 << 20, 5, stored_ns(mtime_ns), 0, 0, STREAM_MARK,
                       1.0, "active")
    meta = {"sha256-pending": "1", "mtime": mtime_text(mtime_ns)}
    assert _ours({"Metadata": meta}, rec)
    assert not _ours({"Metadata": {**meta, "mtime": mtime_text(mtime_ns + 1)}}, rec)
    assert not _ours({"Metadata": {**meta, "mtime": "garbage"}}, rec)
