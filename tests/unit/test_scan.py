"""Scan against a real directory and a real journal: what gets hashed, and when."""

from __future__ import annotations

import os

from journalsync.config import Destination
from journalsync.journal import Journal
from journalsync.scan import scan

DEST = Destination.parse("s3://bkt/pre")


def test_unchanged_tree_reads_no_contents_and_restored_mtime_is_caught(tmp_path):
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    for i in range(20):
        (src / "d" / f"{i}.txt").write_bytes(b"x" * i)
    with Journal(tmp_path / "j.sqlite") as journal:
        first = scan(src, DEST, journal, 1)
        assert (first.scanned, first.hashed) == (20, 20)
        second = scan(src, DEST, journal, 2)
        assert (second.scanned, second.hashed, second.hashed_bytes) == (20, 0, 0)

        path = src / "d" / "5.txt"
        st = os.stat(path)
        path.write_bytes(b"y" * 5)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        third = scan(src, DEST, journal, 3)
        assert third.hashed == 1
        hashes = {lf.key: lf.sha256 for lf, _ in journal.iter_plan_inputs()}
        import hashlib

        assert hashes["d/5.txt"] == hashlib.sha256(b"yyyyy").hexdigest()
        assert len(hashes) == 20


def test_removed_files_leave_the_journal_and_new_ones_are_hashed(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(b"a")
    (src / "b").write_bytes(b"b")
    with Journal(tmp_path / "j.sqlite") as journal:
        scan(src, DEST, journal, 1)
        (src / "a").unlink()
        (src / "c").write_bytes(b"c")
        stats = scan(src, DEST, journal, 2)
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
