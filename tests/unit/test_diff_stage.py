"""The journal's side of diff staging (journal/diffstage.py) on both journals: a LIST
page compared with the cached rows of its key range, the gaps no listing covered, the
adoption candidates an unchanged tree still stages, and the known files read in key
order. Every range is a byte range of UTF-8 (Python's order), also in a PostgreSQL
database whose own collation is a natural language's (tests/support/pg.py makes them
en-US): there "a-b", "a.b", "a/x" and "a0" sort otherwise, and "é" does not sort last."""

from __future__ import annotations

import pytest

from journalsync.journal import Journal

# Hostile neighbours: "-" < "." < "/" < "0" in bytes; non-ASCII (NFC) after all ASCII.
CACHED = ["a", "a-b", "a.b", "a/x", "a/y/z", "a0", "b", "caf\u00e9", "cafe", "z",
          "\u00e9t\u00e9", "\U0001f600"]


@pytest.fixture
def journal(journal_at):
    with Journal(journal_at) as journal:
        yield journal


def cache(journal, keys, size=1, etag="e") -> int:
    """`keys` as the cached manifest (a full LIST), for a run of its own."""
    run = journal.start_run("src", "s3://bkt/pre", None, False)
    journal.begin_listing()
    journal.stage_remote([(k, size, etag, 0.0) for k in keys])
    journal.commit_listing(run)
    return run


def staged(journal, table: str) -> list[str]:
    with journal._read() as conn:
        return [r[0] for r in conn.exec_driver_sql(f"SELECT key FROM {table} ORDER BY key")]


def remote_keys(journal) -> list[str]:
    return sorted(r.key for r in journal.iter_extras())  # no files: every object is extra


def test_a_page_is_compared_with_the_cached_rows_of_its_byte_range(journal):
    run = cache(journal, CACHED)
    journal.begin_listing(diff=True)
    # The page after "a-b" up to "a0" (included): "a.b", "a/x", "a/y/z", "a0" in bytes.
    # It shows "a.b" changed, "a0" unchanged, a new "a/w"; "a/x" and "a/y/z" are gone.
    journal.stage_remote_page([("a.b", 2, "f", 0.0), ("a/w", 1, "e", 0.0), ("a0", 1, "e", 0.0)],
                              "a-b", False, "a0", True, False)
    assert staged(journal, "remote_stage") == ["a.b", "a/w"]
    assert staged(journal, "remote_gone") == ["a/x", "a/y/z"]
    # A delimiter page from "b" on (open above): keys without "/" only; "été" is gone.
    journal.stage_remote_page([("b", 1, "e", 0.0), ("caf\u00e9", 1, "e", 0.0), ("cafe", 1, "e", 0.0),
                               ("z", 1, "e", 0.0), ("\U0001f600", 1, "e", 0.0)],
                              "b", True, None, False, True)
    assert staged(journal, "remote_stage") == ["a.b", "a/w"]
    assert staged(journal, "remote_gone") == ["a/x", "a/y/z", "\u00e9t\u00e9"]
    journal.commit_listing(run)
    assert remote_keys(journal) == sorted(set(CACHED) - {"a/x", "a/y/z", "\u00e9t\u00e9"} | {"a/w"})


def test_an_unchanged_page_stages_nothing(journal):
    cache(journal, CACHED)
    journal.begin_listing(diff=True)
    journal.stage_remote_page([(k, 1, "e", 0.0) for k in CACHED], None, True, None, False, False)
    assert (staged(journal, "remote_stage"), staged(journal, "remote_gone")) == ([], [])


def test_nested_keys_in_the_gaps_between_listed_directories_are_gone(journal):
    """After a delimiter LIST that named only "a/", a nested key outside [a/, a0) was in
    no listing: gone. "a-b/c" sorts below "a/" and "a0/q" above it, in bytes."""
    run = cache(journal, ["a-b", "a-b/c", "a/x", "a0", "a0/q", "\u00e9/1"])
    journal.begin_listing(diff=True)
    journal.stage_remote_page([("a-b", 1, "e", 0.0), ("a0", 1, "e", 0.0)],
                              None, True, None, False, True)
    journal.stage_remote_page([("a/x", 1, "e", 0.0)], "a/", True, "a0", False, False)
    journal.commit_listing(run, [(None, "a/"), ("a0", None)])
    assert remote_keys(journal) == ["a-b", "a/x", "a0"]


def test_candidates_are_staged_except_under_an_unlistable_directory(journal):
    """Unchanged files whose object's hash is unknown are staged for hashing, except
    those under a directory that could not be listed ([d/, d0) in bytes) and the gone."""
    keys = ["d", "d-x", "d.y", "d/in", "d/sub/in", "d0", "e", "\u00e9"]
    run = journal.start_run("src", "s3://bkt/pre", None, False)
    journal.begin_scan()
    journal.stage_files([{"key": k, "path": k, "size": 1, "mtime_ns": 1, "ctime_ns": 1,
                          "inode": 1, "sha256": "h", "error": None} for k in keys])
    journal.commit_scan(run)
    cache(journal, keys)  # no hash known of any object
    journal.begin_scan(diff=True)
    journal.stage_scan_gone(["e"])
    journal.stage_hash_candidates([("d", "cannot list directory")])
    assert staged(journal, "scan_stage") == ["d", "d-x", "d.y", "d0", "\u00e9"]


def test_known_files_come_in_byte_order(journal):
    keys = ["a/x", "a-b", "a0", "\u00e9", "A", "a.b", "\U0001f600", "z"]
    run = journal.start_run("src", "s3://bkt/pre", None, False)
    journal.begin_scan()
    journal.stage_files([{"key": k, "path": k, "size": 1, "mtime_ns": 1, "ctime_ns": 1,
                          "inode": 1, "sha256": None, "error": None} for k in keys])
    journal.commit_scan(run)
    known = journal.iter_known_files()
    assert next(known)[0] == "A"
    if journal._pg:  # streamed through a server-side cursor, not fetched whole
        raw = journal._reader.connection.driver_connection
        assert raw.execute("SELECT name FROM pg_cursors").fetchall() == [("known_files",)]
    assert ["A"] + [row[0] for row in known] == sorted(keys)
