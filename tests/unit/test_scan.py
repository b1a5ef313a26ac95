"""Scan against a real directory and a real journal: what gets hashed, and when."""

from __future__ import annotations

import hashlib
import os

import pytest

from journalsync.config import Destination
from journalsync.journal import Journal
from journalsync.scan import hash_file, is_racy, scan

DEST = Destination.parse("s3://bkt/pre")


def test_unchanged_tree_reads_no_contents_and_restored_mtime_is_caught(tmp_path):
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    for i in range(20):
        (src / "d" / f"{i}.txt").write_bytes(b"x" * i)
    with Journal(tmp_path / "j.sqlite") as journal:
        # Files written a moment ago are racily clean (test_racy_hash_is_taken_again_*);
        # this test is about the identity cache, so the window is closed. hash_all: with
        # no objects in the store the scan would hash nothing (lazy hashing).
        first = scan(src, DEST, journal, 1, racy_window_ns=0, hash_all=True)
        assert (first.scanned, first.hashed) == (20, 20)
        second = scan(src, DEST, journal, 2, racy_window_ns=0, hash_all=True)
        assert (second.scanned, second.hashed, second.hashed_bytes) == (20, 0, 0)

        path = src / "d" / "5.txt"
        st = os.stat(path)
        path.write_bytes(b"y" * 5)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        third = scan(src, DEST, journal, 3, racy_window_ns=0, hash_all=True)
        assert third.hashed == 1
        hashes = {lf.key: lf.sha256 for lf, _ in journal.iter_plan_inputs()}
        assert hashes["d/5.txt"] == hashlib.sha256(b"yyyyy").hexdigest()
        assert len(hashes) == 20


def test_removed_files_leave_the_journal_and_new_ones_are_hashed(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(b"a")
    (src / "b").write_bytes(b"b")
    with Journal(tmp_path / "j.sqlite") as journal:
        scan(src, DEST, journal, 1, racy_window_ns=0, hash_all=True)
        (src / "a").unlink()
        (src / "c").write_bytes(b"c")
        stats = scan(src, DEST, journal, 2, racy_window_ns=0, hash_all=True)
        assert stats.hashed == 1
        assert sorted(lf.key for lf, _ in journal.iter_plan_inputs()) == ["b", "c"]


def test_nfc_collision_fails_both_names(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "caf\u00e9").write_bytes(b"nfc")
    (src / "cafe\u0301").write_bytes(b"nfd")
    with Journal(tmp_path / "j.sqlite") as journal:
        stats = scan(src, DEST, journal, 1)
        assert stats.failed == 1
        assert journal.file_errors(1)[0]["reason"].startswith("two local names")
        assert list(journal.iter_plan_inputs()) == []
        assert journal.scan_error_count() == 1  # one key, flagged, never uploaded


def _stat(mtime_ns: int, ctime_ns: int) -> os.stat_result:
    return os.stat_result((0o100644, 1, 1, 1, 0, 0, 10, 0, mtime_ns // 10**9, ctime_ns // 10**9,
                           0.0, float(mtime_ns) / 1e9, float(ctime_ns) / 1e9,
                           0, mtime_ns, ctime_ns))


S = 10**9


@pytest.mark.parametrize("mtime, ctime, racy", [
    (100 * S, 100 * S, False),          # both well before the hash
    (198 * S, 100 * S, False),          # exactly one window before: a later write moves it
    (198 * S + 1, 100 * S, True),       # mtime inside the window
    (100 * S, 199 * S, True),           # ctime inside the window (mtime put back by touch -r)
    (200 * S, 200 * S, True),           # the same tick as the hash
    (260 * S, 100 * S, True),           # in the future (a server clock ahead of ours)
])
def test_is_racy_within_one_window_of_the_hash(mtime, ctime, racy):
    assert is_racy(_stat(mtime, ctime), hashed_at_ns=200 * S, window_ns=2 * S) is racy


def test_racy_hash_is_taken_again_by_the_next_scan(tmp_path):
    """A file hashed within the window of its timestamps is used, but recorded with an
    identity no stat matches; once it is older than the window it is trusted again."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "fresh").write_bytes(b"just written")
    (src / "old").write_bytes(b"written long ago")
    with Journal(tmp_path / "j.sqlite") as journal:
        scan(src, DEST, journal, 1, racy_window_ns=0, hash_all=True)  # "old": hashed long after its write
        (src / "fresh").write_bytes(b"just WRITTEN")
        stats = scan(src, DEST, journal, 2, hash_all=True)  # "fresh": hashed in the tick it was written
        assert stats.hashed == 1
        rows = {lf.key: lf for lf, _ in journal.iter_plan_inputs()}
        assert rows["fresh"].sha256 == hashlib.sha256(b"just WRITTEN").hexdigest()
        assert rows["fresh"].ctime_ns is None and rows["old"].ctime_ns is not None
        assert scan(src, DEST, journal, 3, hash_all=True).hashed == 1  # racy: hashed again, racy again
        # Once the file is older than the window, one more hash is kept and then trusted.
        assert scan(src, DEST, journal, 4, racy_window_ns=0, hash_all=True).hashed == 1
        assert scan(src, DEST, journal, 5, racy_window_ns=0, hash_all=True).hashed == 0


def test_hash_refuses_a_path_swapped_since_the_walk(tmp_path):
    """The walk saw sub/ and sub/f; before the hash, sub became a symlink to a directory
    outside the tree holding an f of its own. The hash reads nothing through it."""
    src, outside = tmp_path / "src", tmp_path / "outside"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "f").write_bytes(b"inside")
    outside.mkdir()
    (outside / "f").write_bytes(b"outside")
    row = {"key": "sub/f", "path": "sub/f", "size": 6, "mtime_ns": 1, "ctime_ns": 1, "inode": 1}
    assert hash_file(str(src), row)["sha256"] == hashlib.sha256(b"inside").hexdigest()
    (src / "sub").rename(tmp_path / "moved")
    (src / "sub").symlink_to(outside)
    result = hash_file(str(src), row)
    assert result["sha256"] is None
    assert result["error"] == "directory sub/ was replaced by a symlink since the scan; not followed"
