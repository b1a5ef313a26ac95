"""Inode numbers of 2^63 and above (NFS, CephFS, Lustre, FUSE, overlayfs with xino) in the
journal, SQLite and PostgreSQL alike: both store signed 64-bit integers, so the journal keeps
an inode as its two's complement (objectmeta.inode_number), the same number for the same
file on every read of it, and any inode below 2^63 as itself (old rows need no migration)."""

from __future__ import annotations

import os

import pytest

from journalsync.journal import Journal
from journalsync.journal.uploads import UploadRecord
from journalsync.objectmeta import file_identity, inode_number
from journalsync.scandiff import ScanDiff, stage_row

INODES = [0, 2**63 - 1, 2**63, 2**64 - 1]


def _stat(ino: int) -> os.stat_result:
    """A regular file's stat as the kernel reports it (st_ino unsigned, up to 2^64 - 1)."""
    return os.stat_result((0o100644, ino, 1, 1, 0, 0, 5, 0, 0, 0),
                          {"st_mtime_ns": 1_700_000_000_123456789,
                           "st_ctime_ns": 1_700_000_000_987654321})


def test_inode_number_is_the_identity_below_2_63_and_a_signed_64_bit_int_above():
    assert [inode_number(n) for n in INODES] == [0, 2**63 - 1, -(2**63), -1]
    assert len({inode_number(n) for n in INODES}) == len(INODES)  # still one number per inode


@pytest.mark.parametrize("ino", INODES)
def test_a_scanned_file_reads_back_as_the_same_file(journal_at, ino):
    st = _stat(ino)
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


@pytest.mark.parametrize("ino", INODES)
def test_a_multipart_upload_reads_back_with_the_file_identity(journal_at, ino):
    size, mtime_ns, ctime_ns, inode = file_identity(_stat(ino))
    with Journal(journal_at) as journal:
        run = journal.start_run("/src", "s3://b/p", None, False)
        rec = UploadRecord("u1", "big.bin", run, 8 << 20, size, mtime_ns, ctime_ns, inode,
                           "cd" * 32, 1.0, "active")
        journal.record_upload(rec, None)
        [back] = journal.active_uploads()
    assert (back.size, back.mtime_ns, back.ctime_ns, back.inode) == file_identity(_stat(ino))
