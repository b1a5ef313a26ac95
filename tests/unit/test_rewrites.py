"""The known key rewrites, as SeaweedFS 4.48 was seen to apply them (a table of cases)."""

from __future__ import annotations

import pytest

from journalsync.config import Destination
from journalsync.rewrites import stored_key

DEST = Destination("bkt", "p")
WHOLE = Destination("bkt", "")


@pytest.mark.parametrize("dest, key, stored", [
    (DEST, "a/b.txt", None),  # nothing to rewrite: stored as given
    (DEST, "plain name.txt", None),
    (DEST, "a\\b.txt", "a/b.txt"),
    (DEST, "\\x", "x"),  # p/\x -> p//x -> p/x
    (DEST, "c\\\\d", "c/d"),  # runs of "/" become one
    (DEST, "e\\/f", "e/f"),  # a directory named "e\"
    (DEST, "g/\\h", "g/h"),
    (DEST, "a\\", "a/"),  # a trailing "/" stays
    (WHOLE, "\\top", "top"),  # a leading "/" goes
    (WHOLE, "a\\b", "a/b"),
    (DEST, "\\", None),  # would be the prefix itself, which is never listed
])
def test_stored_key(dest, key, stored):
    found = stored_key(key, dest)
    assert (found[0] if found else None) == stored


def test_the_stored_form_of_an_unlisted_local_key_is_never_an_extra(tmp_path):
    """`a/b.txt` may be what the store made of local `a\\b.txt` (not listed): kept. `c/d.txt`
    is not `c\\d.txt`'s object (that one is listed under its own key): deleted."""
    from journalsync.config import Config
    from journalsync.journal import Journal
    from journalsync.models import Action
    from journalsync.plan import build_plan

    with Journal(tmp_path / "j.sqlite") as journal:
        run = journal.start_run("src", "s3://bkt/p", None, False)
        journal.begin_scan()
        journal.stage_files([{"key": k, "path": k, "size": 1, "mtime_ns": 1, "ctime_ns": 1,
                              "inode": 1, "sha256": "x", "error": None}
                             for k in ("a\\b.txt", "c\\d.txt")])
        journal.commit_scan(run)
        journal.begin_listing()
        journal.stage_remote([(k, 1, "e", 0.0) for k in ("a/b.txt", "c\\d.txt", "c/d.txt", "x")])
        journal.commit_listing(run)
        cfg = Config(tmp_path, DEST, tmp_path / "j.sqlite", delete=True)
        summary = build_plan(journal, run, cfg)
        deletes = {i.key for i in journal.iter_plan(run) if i.action is Action.DELETE}
    assert deletes == {"c/d.txt", "x"}
    assert summary.extra == 2
