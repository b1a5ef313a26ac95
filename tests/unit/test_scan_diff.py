"""The diff scan on real files and a real journal (a SQLite file, and a job in PostgreSQL:
`journal_at`): the walk comes in key order, and a scan stages only the files that differ
from `files` and records the gone ones (scandiff.py), so a rescan of an unchanged tree
stages nothing and writes next to nothing."""

from __future__ import annotations

import sqlite3

import pytest

from journalsync.config import Destination
from journalsync.journal import Journal
from journalsync.scan import scan
from journalsync.scandiff import sorted_walk

DEST = Destination.parse("s3://bkt/pre")
NAMES = ["a-b", "a/x", "a/y/z", "a0", "b", "caf\u00e9/k", "d/e/f/g", "d.e", "d/e0", "\u00e9t\u00e9"]


@pytest.fixture
def journal(journal_at):
    with Journal(journal_at) as journal:
        yield journal


def new_run(journal) -> int:
    """A run's row (PostgreSQL holds file_errors to their run)."""
    return journal.start_run("src", str(DEST), None, False)


def tree(root, names):
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(name.encode())


def stage_of(journal) -> tuple[list[str], list[str]]:
    with journal._read() as conn:
        staged = [r[0] for r in conn.exec_driver_sql("SELECT key FROM scan_stage ORDER BY key")]
        gone = [r[0] for r in conn.exec_driver_sql("SELECT key FROM scan_gone ORDER BY key")]
    return staged, gone


def files_of(journal) -> list[tuple]:
    with journal._read() as conn:
        return list(conn.exec_driver_sql("SELECT * FROM files ORDER BY key"))


def test_the_walk_comes_in_key_order(tmp_path):
    """A directory's keys sort as its name and "/": "a-b" < "a/x" < "a0"."""
    tree(tmp_path, NAMES)
    keys = [rel for kind, rel, _ in sorted_walk(str(tmp_path)) if kind == "file"]
    assert keys == sorted(NAMES)


def test_a_rescan_stages_nothing_and_then_only_what_changed(tmp_path, journal):
    src = tmp_path / "src"
    tree(src, NAMES)
    assert journal.diff_staging
    scan(src, DEST, journal, new_run(journal), racy_window_ns=0, hash_all=True)
    before = files_of(journal)
    stats = scan(src, DEST, journal, new_run(journal), racy_window_ns=0, hash_all=True)
    assert stats.scanned == len(NAMES)
    assert stage_of(journal) == ([], [])
    assert files_of(journal) == before

    (src / "a/x").write_bytes(b"edited, longer")
    (src / "b").unlink()
    for name in ("d/e/f/g", "d/e0"):
        (src / name).unlink()
    tree(src, ["a/new", "zz"])
    stats = scan(src, DEST, journal, new_run(journal), racy_window_ns=0, hash_all=True)
    assert (stats.scanned, stats.hashed) == (len(NAMES) - 1, 3)
    assert stage_of(journal) == (["a/new", "a/x", "zz"], ["b", "d/e/f/g", "d/e0"])
    assert [row[0] for row in files_of(journal)] == sorted(
        set(NAMES) - {"b", "d/e/f/g", "d/e0"} | {"a/new", "zz"})


def test_two_directories_with_one_key_fall_back_to_the_full_stage(tmp_path, journal):
    """NFC and NFD spellings of one directory: their keys interleave, so the walk cannot
    come in key order. Whichever comes first, the scan ends as the full stage would:
    the key both give fails, the other is kept."""
    src = tmp_path / "src"
    tree(src, ["caf\u00e9/b", "cafe\u0301/a", "cafe\u0301/b", "z"])
    for run in (1, 2):
        stats = scan(src, DEST, journal, new_run(journal), racy_window_ns=0, hash_all=True)
        assert (stats.scanned, stats.failed) == (4, 1)
        assert [(row[0], row[7] is not None) for row in files_of(journal)] == [
            ("caf\u00e9/a", False), ("caf\u00e9/b", True), ("z", False)]


def test_a_no_op_scan_of_many_files_writes_almost_nothing(tmp_path):
    """Staging every file of a 40,000-file tree spilled SQLite's TEMP schema to its file:
    megabytes written by every no-op. Now only the differences are staged."""
    src = tmp_path / "src"
    for d in range(40):
        (src / f"d{d:02}").mkdir(parents=True)
        for i in range(1000):
            (src / f"d{d:02}" / f"file-with-a-longish-name-{i:05}.dat").write_bytes(b"x")
    with Journal(tmp_path / "j.sqlite") as journal:
        scan(src, DEST, journal, new_run(journal), racy_window_ns=0, hash_all=True)
    with Journal(tmp_path / "j.sqlite") as journal:  # a new run: a new process, its own TEMP
        written = _written()
        assert scan(src, DEST, journal, new_run(journal), racy_window_ns=0).scanned == 40_000
        written = _written() - written
    size = (tmp_path / "j.sqlite").stat().st_size
    assert written <= 0.02 * size, (written, size)
    with sqlite3.connect(tmp_path / "j.sqlite") as db:
        assert db.execute("SELECT count(*) FROM files").fetchone() == (40_000,)


def _written() -> int:
    """Bytes this thread caused to be written to storage (the scan runs on it)."""
    with open("/proc/thread-self/io") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("write_bytes"))
