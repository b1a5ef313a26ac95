"""The scan's change detection on real files and a real journal: which staged files are
hashed again (the identity compared in iter_files_to_hash), what a hash records, and what
a file that cannot be read, or keeps changing, leaves behind."""

from __future__ import annotations

import hashlib
import os
import threading

import pytest

from journalsync import scan as scan_mod
from journalsync.config import Destination
from journalsync.errors import Interrupted
from journalsync.journal import BATCH, Journal
from journalsync.scan import INLINE_HASH_MAX, ScanStats, _hash_changed, _stage_row, hash_file, scan

DEST = Destination.parse("s3://bkt/pre")


def staged(key, size=1, mtime=1, ctime=1, inode=1, error=None):
    return {"key": key, "path": key, "size": size, "mtime_ns": mtime, "ctime_ns": ctime,
            "inode": inode, "sha256": None, "error": error}


@pytest.fixture
def journal(tmp_path):
    with Journal(tmp_path / "j.sqlite") as journal:
        yield journal


def test_each_part_of_the_identity_alone_makes_a_file_hashed_again(journal):
    """One row per way a file can differ from the last scan; only the untouched one and
    the one that failed to stat now are left alone."""
    keys = ["same", "size", "mtime", "ctime", "inode", "nohash", "failed", "new", "errnow"]
    journal.begin_scan()
    journal.stage_files([staged(k) for k in keys[:-2]])
    journal.set_staged_hashes([{"key": k, "sha256": "h" + k, "error": None, "size": 1,
                                "mtime_ns": 1, "ctime_ns": 1, "inode": 1}
                               for k in keys[:-2] if k != "nohash"])
    journal.commit_scan(1)
    journal.begin_scan()  # "failed": its last scan could not read it, so its row is flagged
    journal.stage_files([staged(k) for k in keys if k not in ("failed", "errnow")]
                        + [staged("failed", error="cannot read"), staged("errnow", error="x")])
    journal.commit_scan(2)
    journal.begin_scan()
    journal.stage_files([staged("same"), staged("size", size=2), staged("mtime", mtime=2),
                         staged("ctime", ctime=2), staged("inode", inode=2), staged("nohash"),
                         staged("failed"), staged("new"), staged("errnow", error="x")])
    assert [row["key"] for row in journal.iter_files_to_hash(all_changed=True)] == [
        "ctime", "failed", "inode", "mtime", "new", "nohash", "size"]
    assert next(journal.iter_files_to_hash(all_changed=True)) == {"key": "ctime", "path": "ctime", "size": 1,
                                                  "mtime_ns": 1, "ctime_ns": 2, "inode": 1,
                                                  "etag": None}


def test_only_files_with_an_object_of_their_size_are_hashed(journal):
    """Lazy hashing: a changed file is read by the scan only when an object of its size is
    under its key (its hash decides the plan); every other one is an upload anyway, hashed
    by the worker that sends it. A changed file left unhashed loses its old hash."""
    keys = ["samesize", "othersize", "noobject", "changed", "unchanged"]
    journal.begin_scan()
    journal.stage_files([staged(k) for k in keys])
    journal.set_staged_hashes([{"key": k, "sha256": "h" + k, "error": None, "size": 1,
                                "mtime_ns": 1, "ctime_ns": 1, "inode": 1}
                               for k in ("changed", "unchanged")])
    journal.commit_scan(1)
    _listed(journal, [("samesize", 1, "e1"), ("othersize", 2, "e2"), ("unchanged", 1, "e3")])
    journal.set_remote_hashes([{"key": k, "etag": e, "sha256": "x"}
                               for k, e in (("samesize", "e1"), ("unchanged", "e3"))])
    journal.begin_scan()
    journal.stage_files([staged(k) for k in keys if k != "changed"] + [staged("changed", mtime=2)])
    assert [row["key"] for row in journal.iter_files_to_hash()] == ["samesize"]
    journal.commit_scan(2)
    hashes = {lf.key: lf.sha256 for lf, _ in journal.iter_plan_inputs()}
    assert hashes == {"samesize": None, "othersize": None, "noobject": None, "changed": None,
                      "unchanged": "hunchanged"}


def test_hash_file_records_the_stat_it_hashed(tmp_path):
    (tmp_path / "f").write_bytes(b"abc")
    st = os.stat(tmp_path / "f")
    assert hash_file(str(tmp_path), {"key": "k", "path": "f"}, racy_window_ns=0) == {
        "key": "k", "sha256": hashlib.sha256(b"abc").hexdigest(), "error": None, "size": 3,
        "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns, "inode": st.st_ino}


def test_an_unreadable_file_keeps_the_staged_stat_and_says_why(tmp_path):
    row = staged("k") | {"path": "missing", "size": 5, "mtime_ns": 6, "ctime_ns": 7, "inode": 8}
    assert hash_file(str(tmp_path), row, racy_window_ns=0) == {
        "key": "k", "sha256": None, "size": 5, "mtime_ns": 6, "ctime_ns": 7, "inode": 8,
        "error": "cannot read: No such file or directory"}


def test_a_file_that_changes_under_every_read_fails_after_three(tmp_path, monkeypatch):
    """A writer appends to the file while each read is in progress (a real write, at the
    one moment that matters), so no read sees one version of it."""
    path = tmp_path / "f"
    path.write_bytes(b"v1")
    reads = []
    real_digest = scan_mod._sha256

    def digest_then_append(fh, stop):
        reads.append(stop)
        result = real_digest(fh, stop)
        with open(path, "ab") as out:
            out.write(b"+")
        return result

    monkeypatch.setattr(scan_mod, "_sha256", digest_then_append)
    row = staged("k") | {"path": "f", "size": 2, "mtime_ns": 3, "ctime_ns": 4, "inode": 5}
    assert hash_file(str(tmp_path), row, racy_window_ns=0) == {
        "key": "k", "sha256": None, "size": 2, "mtime_ns": 3, "ctime_ns": 4, "inode": 5,
        "error": "file kept changing while it was read"}
    assert len(reads) == 3


def test_stage_row_of_a_file_that_could_not_be_stated():
    assert _stage_row("k", "p", None, "cannot stat") == {
        "key": "k", "path": "p", "size": None, "mtime_ns": None, "ctime_ns": None,
        "inode": None, "sha256": None, "error": "cannot stat"}


def test_small_and_large_files_are_hashed_and_counted(tmp_path, journal):
    src = tmp_path / "src"
    src.mkdir()
    sizes = {"empty": 0, "small": 10, "edge": INLINE_HASH_MAX, "large": INLINE_HASH_MAX + 1,
             "larger": 2 * INLINE_HASH_MAX}
    for name, size in sizes.items():
        (src / name).write_bytes(bytes([len(name)]) * size)
    stats = scan(src, DEST, journal, 1, hash_threads=2, hash_all=True)
    assert (stats.scanned, stats.hashed, stats.hashed_bytes) == (5, 5, sum(sizes.values()))
    hashes = {lf.key: lf.sha256 for lf, _ in journal.iter_plan_inputs()}
    assert hashes == {name: hashlib.sha256(bytes([len(name)]) * size).hexdigest()
                      for name, size in sizes.items()}


def test_more_changed_files_than_a_batch_all_get_their_hash(tmp_path, journal):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(BATCH + 5):
        (src / f"{i:04d}").write_bytes(b"%d" % i)
    stats = scan(src, DEST, journal, 1, hash_all=True)
    hashes = {lf.key: lf.sha256 for lf, _ in journal.iter_plan_inputs()}
    assert stats.hashed == len(hashes) == BATCH + 5
    assert all(h == hashlib.sha256(b"%d" % int(k)).hexdigest() for k, h in hashes.items())


def test_files_gone_before_hashing_are_errors_small_or_large(tmp_path, journal):
    journal.begin_scan()
    journal.stage_files([staged("big", size=INLINE_HASH_MAX * 2), staged("tiny", size=3)])
    stats, errors = ScanStats(), []
    _hash_changed(str(tmp_path), journal, stats, errors, 2, None, 0, hash_all=True)
    assert sorted(errors) == [("big", "cannot read: No such file or directory"),
                              ("tiny", "cannot read: No such file or directory")]
    assert (stats.hashed, stats.hashed_bytes) == (0, 0)


def test_a_stop_before_hashing_raises_and_leaves_the_files_as_they_were(tmp_path, journal):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(b"a")
    (src / "b").write_bytes(b"b" * (INLINE_HASH_MAX + 1))
    stop = threading.Event()
    stop.set()
    with pytest.raises(Interrupted, match="^stopped while hashing$"):
        scan(src, DEST, journal, 1, stop=stop)
    assert list(journal.iter_plan_inputs()) == []


def _listed(journal, rows):
    """A LIST of (key, size, etag) committed into the manifest."""
    journal.begin_listing()
    journal.stage_remote([(k, size, etag, 0.0) for k, size, etag in rows])
    journal.commit_listing(1)


def test_adoption_candidates_are_hashed_even_when_unchanged(journal):
    """An unchanged file is read again only when an object of its size waits for a proof
    (adopt.py): its hash is unknown. Its ETag comes with it."""
    keys = ["cand", "othersize", "known", "noobject", "broken"]
    journal.begin_scan()
    journal.stage_files([staged(k) for k in keys])
    journal.set_staged_hashes([{"key": k, "sha256": "h" + k, "error": None, "size": 1,
                                "mtime_ns": 1, "ctime_ns": 1, "inode": 1} for k in keys])
    journal.commit_scan(1)
    _listed(journal, [("cand", 1, "e-cand"), ("othersize", 2, "e-o"), ("known", 1, "e-k"),
                      ("broken", 1, "e-b")])
    journal.set_remote_hashes([{"key": "known", "etag": "e-k", "sha256": "hknown"}])
    journal.begin_scan()
    journal.stage_files([staged(k) for k in keys[:-1]] + [staged("broken", error="x")])
    assert list(journal.iter_files_to_hash()) == [
        {"key": "cand", "path": "cand", "size": 1, "mtime_ns": 1, "ctime_ns": 1, "inode": 1,
         "etag": "e-cand"}]
    journal.set_remote_hashes([{"key": "cand", "etag": "e-cand", "sha256": "hcand"}])
    assert list(journal.iter_files_to_hash()) == []  # every remote hash known: reads nothing


def test_a_scan_proves_a_foreign_object_by_its_etag_and_keeps_the_md5(tmp_path, journal):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_bytes(b"peer bytes")
    (src / "b.txt").write_bytes(b"other byte")
    scan(src, DEST, journal, 1, racy_window_ns=0)  # hashed before the LIST: no md5 kept
    _listed(journal, [("a.txt", 10, hashlib.md5(b"peer bytes").hexdigest()),
                      ("b.txt", 10, hashlib.md5(b"OTHER BYTE").hexdigest())])
    stats = scan(src, DEST, journal, 2, racy_window_ns=0)
    assert (stats.hashed, dict(stats.adopted)) == (2, {"etag-md5": 1})
    heads = {key: (sha, md5) for key, _, sha, md5 in journal.keys_needing_head()}
    assert heads == {"b.txt": (hashlib.sha256(b"other byte").hexdigest(),
                               hashlib.md5(b"other byte").hexdigest())}
    assert journal.adopted_by_proof() == {"etag-md5": 1}
    assert scan(src, DEST, journal, 3, racy_window_ns=0).hashed == 1  # b.txt: still unknown
    # The MD5 goes with the SHA-256 it was read with: dropped together.
    journal.forget_hash("b.txt")
    assert [(sha, md5) for _, _, sha, md5 in journal.keys_needing_head()] == [(None, None)]


@pytest.mark.parametrize("etag", [None, "0" * 32 + "-2"], ids=["changed", "adoption"])
def test_a_stop_ends_a_files_hash_at_its_next_block(tmp_path, monkeypatch, etag):
    """The scan's hashing of a large file heeds the run's stop between blocks, as the
    pre-hash does: a stopping run does not read a terabyte to its end first."""
    import threading

    from journalsync.errors import Interrupted

    (tmp_path / "f").write_bytes(bytes(8 * scan_mod.READ_CHUNK))
    stop = threading.Event()
    reads = []
    real_blocks = scan_mod._blocks

    def blocks(fh, stop_):
        for block in real_blocks(fh, stop_):
            reads.append(len(block))
            stop.set()  # the signal comes while the first block is hashed
            yield block

    monkeypatch.setattr(scan_mod, "_blocks", blocks)
    row = staged("k") | {"path": "f", "etag": etag}
    with pytest.raises(Interrupted, match="^stopped while hashing$"):
        hash_file(str(tmp_path), row, racy_window_ns=0, stop=stop)
    assert reads == [scan_mod.READ_CHUNK]
