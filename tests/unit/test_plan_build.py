"""build_plan over a real journal: which keys become which plan rows, in what order, with
what counts, and what an excluded or kept extra does."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from journalsync.config import Config, Destination
from journalsync.journal import BATCH, Journal
from journalsync.models import Action, Decision
from journalsync.plan import UNCHANGED_REASON, build_plan, decide
from journalsync.models import LocalFile, RemoteObject, TransferResult

A, B = "a" * 64, "b" * 64


def cfg(**kw) -> Config:
    return Config(Path("/src"), Destination.parse("s3://bkt/pre"), Path("/j"), **kw)


def seed(journal: Journal, local: dict, remote: dict) -> None:
    """local: key -> (size, sha256); remote: key -> (size, sha256 or None). Runs 1 to 7
    are made first: PostgreSQL holds plan rows to their run's foreign key."""
    for n in range(1, 8):
        assert journal.start_run("/src", "s3://b/p", None, False) == n
    journal.begin_scan()
    journal.stage_files([{"key": k, "path": k, "size": s, "mtime_ns": 1, "ctime_ns": 1,
                          "inode": i, "sha256": h, "error": None}
                         for i, (k, (s, h)) in enumerate(sorted(local.items()))])
    journal.commit_scan(1)
    journal.begin_listing()
    journal.stage_remote([(k, s, f"e-{k}", 0.0) for k, (s, _) in sorted(remote.items())])
    journal.commit_listing(1)
    journal.set_remote_hashes([{"key": k, "etag": f"e-{k}", "sha256": h}
                               for k, (_, h) in remote.items() if h])


LOCAL = {"same": (3, A), "new": (4, A), "bigger": (5, A), "nohash": (6, A), "changed": (7, A),
         "empty": (0, A)}
REMOTE = {"same": (3, A), "bigger": (1, A), "nohash": (6, None), "changed": (7, B),
          "gone1": (8, B), "gone2": (9, None), "skip.tmp": (10, A), "zz": (11, None)}


@pytest.fixture
def journal(journal_at):
    with Journal(journal_at) as journal:
        seed(journal, LOCAL, REMOTE)
        yield journal


def rows(journal, run_id):
    return [(str(item), item.size, item.sha256) for item in journal.iter_plan(run_id)]


def test_mirror_plan_rows_and_counts(journal, caplog):
    caplog.set_level(logging.DEBUG, logger="journalsync.plan")
    summary = build_plan(journal, 7, cfg(delete=True, excludes=("*.tmp",)))
    assert rows(journal, 7) == [
        ("upload bigger (size differs: local 5, remote 1)", 5, A),
        ("upload changed (content differs: sha256 mismatch)", 7, A),
        ("upload empty (new file)", 0, A),
        ("upload new (new file)", 4, A),
        ("upload nohash (remote hash unknown: no sha256 metadata)", 6, A),
        ("delete gone1 (extra: no local file, --delete given)", 8, B),
        ("delete gone2 (extra: no local file, --delete given)", 9, None),
        ("delete zz (extra: no local file, --delete given)", 11, None),
    ]  # uploads first, deletes after them; the excluded extra is not even an extra
    assert (summary.uploads, summary.upload_bytes, summary.skipped, summary.extra,
            summary.deletes, summary.remote_total) == (5, 22, 1, 3, 3, 8)
    assert [r.getMessage() for r in caplog.records][:2] == [
        "upload bigger (size differs: local 5, remote 1)",
        "upload changed (content differs: sha256 mismatch)"]
    assert dict(summary.skip_reasons) == {UNCHANGED_REASON: 1}
    assert rows(journal, 8) == []  # rows belong to the run they were planned for


def test_without_delete_extras_are_counted_and_kept(journal):
    summary = build_plan(journal, 7, cfg())
    assert [str(item) for item in journal.iter_plan(7) if item.action is not Action.UPLOAD] == []
    assert (summary.extra, summary.deletes, summary.uploads) == (4, 0, 5)


def test_no_config_means_no_delete_and_no_filter(journal):
    summary = build_plan(journal, 7)
    assert (summary.extra, summary.deletes, summary.skipped) == (4, 0, 1)


def test_more_rows_than_a_batch_are_all_stored(journal_at):
    keys = [f"f{i:04d}" for i in range(BATCH * 2 + 3)]
    with Journal(journal_at) as journal:
        seed(journal, {k: (1, A) for k in keys}, {"x": (1, A)})
        summary = build_plan(journal, 1, cfg(delete=True, max_delete_percent=100))
        planned = list(journal.iter_plan(1))
    assert [p.key for p in planned] == keys + ["x"]
    assert (summary.uploads, summary.deletes) == (len(keys), 1)


def test_unchanged_reason_is_decides():
    assert UNCHANGED_REASON == "unchanged: size and sha256 match"


@pytest.mark.parametrize("delete, decision", [
    (True, Decision(Action.DELETE, "extra: no local file, --delete given")),
    (False, Decision(Action.SKIP, "extra: no local file, kept")),
])
def test_decide_extra(delete, decision):
    assert decide(None, RemoteObject("k", 1, "e", None), cfg(delete=delete)) == decision


def test_decide_needs_one_side_and_says_so():
    with pytest.raises(ValueError, match=r"^decide\(\) needs a local file or a remote object$"):
        decide(None, None, cfg(delete=True))


def test_decide_local_only_is_new_whatever_the_config():
    local = LocalFile("k", "k", 1, 0, 0, 0, A)
    assert decide(local, None, cfg(delete=True)) == Decision(Action.UPLOAD, "new file")


def test_deletes_in_the_way_of_uploads(journal_at):
    """upload_conflicts and stored_conflict: by `/` boundaries only (`ab`, `a-b`, `a.txt`,
    `a0` are no directory of `a`; '-' and '.' sort before '/', '0' right after it), both
    ways, at any depth, and only against pending uploads."""
    local = {k: (1, A) for k in ("a", "d/e/f", "x-y", "done/z")}
    remote = {k: (2, B) for k in ("a/b", "a/c/d", "ab/c", "a-b", "a.txt", "a0", "d", "d/e",
                                   "x", "done")}
    with Journal(journal_at) as journal:
        seed(journal, local, remote)
        build_plan(journal, 7, cfg(delete=True))
        done = next(i for i in journal.iter_plan(7) if i.key == "done/z")
        journal.record_results([TransferResult(done.id, done.key, True, 1, size=1, etag="e",
                                               sha256=A)])
        deletes = sorted(i.key for i in journal.iter_plan(7) if i.action is Action.DELETE)
        assert journal.upload_conflicts(7, deletes) == {"a/b", "a/c/d", "d", "d/e"}
        assert journal.stored_conflict("a") == "a/b exists on the store under a/"
        assert journal.stored_conflict("d/e/f") == ("d exists on the store as an object, "
                                                    "where d/e/f needs it as a directory")
        assert journal.stored_conflict("x-y") is None and journal.stored_conflict("ab/new") is None
