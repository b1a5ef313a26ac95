"""What a batch of results and a batch of plan rows write, on both journals: SQLite's are
executemany, PostgreSQL's one statement over arrays each (journal/pgbatch.py), and they
must leave the same rows."""

from __future__ import annotations

from sqlalchemy import text

from journalsync.journal import Journal
from journalsync.models import Action, TransferResult

SHA_A, SHA_B, SHA_OLD = "a" * 64, "b" * 64, "0" * 64


def _sql(journal: Journal, sql: str, **params) -> list[tuple]:
    """Rows read or written on a connection of the journal's own (a look from outside)."""
    with journal._engine.begin() as db:
        result = db.execute(text(sql), params)
        return [tuple(r) for r in result] if result.returns_rows else []


def test_plan_rows_keep_the_batchs_order_and_their_columns(journal_at):
    keys = [f"k{i:04d}" for i in range(600)][::-1]  # ids must follow the rows, not the keys
    with Journal(journal_at) as journal:
        run_id = journal.start_run("/src", "s3://b/p", None, False)
        journal.add_plan_items(run_id, [
            {"key": k, "action": "upload", "reason": "new file", "size": i, "sha256": None}
            for i, k in enumerate(keys)])
        journal.add_plan_items(run_id, [{"key": "gone", "action": "delete", "reason": "extra",
                                         "size": 7, "sha256": None, "etag": "e1"}])
        rows = _sql(journal, "SELECT key, action, reason, size, sha256, etag, status, attempts,"
                             " bytes_sent, run_id FROM plan_items ORDER BY id")
    assert [r[0] for r in rows] == keys + ["gone"]
    assert rows[5] == (keys[5], "upload", "new file", 5, None, None, "pending", 0, 0, run_id)
    assert rows[-1] == ("gone", "delete", "extra", 7, None, "e1", "pending", 0, 0, run_id)


def test_a_batch_of_results_writes_items_objects_and_hashes(journal_at):
    with Journal(journal_at) as journal:
        run_id = journal.start_run("/src", "s3://b/p", None, False)
        journal.add_plan_items(run_id, [
            {"key": k, "action": "upload", "reason": "new file", "size": 3, "sha256": None}
            for k in ("a", "b", "c", "bad")])
        ids = dict(_sql(journal, "SELECT key, id FROM plan_items"))
        # a: its MD5 goes with the hash the upload found, and stays; b: its old MD5 was of
        # other bytes, and goes; bad: unreadable at the scan, left alone.
        _sql(journal, "INSERT INTO files (key, path, size, mtime_ns, ctime_ns, inode, sha256,"
                      " md5, scan_error) VALUES ('a', 'a', 3, 1, 1, 1, :a, 'md5a', NULL),"
                      " ('b', 'b', 3, 1, 1, 1, :old, 'md5old', NULL),"
                      " ('bad', 'bad', 3, 1, 1, 1, NULL, NULL, 'unreadable')",
             a=SHA_A, old=SHA_OLD)
        _sql(journal, "INSERT INTO remote_objects (key, size, etag, sha256, sha_source)"
                      " VALUES ('a', 9, 'old', :old, 'list')", old=SHA_OLD)
        journal.record_results([
            TransferResult(ids["a"], "a", True, 1, bytes_sent=3, size=3, etag="ea",
                           sha256=SHA_A, file_identity=(3, 10, 11, 12)),
            TransferResult(ids["b"], "b", True, 1, bytes_sent=3, size=3, etag="eb1",
                           sha256=SHA_OLD, file_identity=(3, 20, 21, 22)),
            TransferResult(ids["c"], "c", False, 3, bytes_sent=9, error="refused"),
            TransferResult(ids["bad"], "bad", True, 1, bytes_sent=3, size=3, etag="ebad",
                           sha256=SHA_A, file_identity=(3, 40, 41, 42)),
            # b again in the same batch: the last of a row's writes is the one that stays
            TransferResult(ids["b"], "b", True, 2, bytes_sent=6, size=3, etag="eb2",
                           sha256=SHA_B, file_identity=(3, 30, 31, 32)),
        ])
        items = {r[0]: r[1:] for r in _sql(
            journal, "SELECT key, status, attempts, bytes_sent, error FROM plan_items")}
        objects = {r[0]: r[1:] for r in _sql(
            journal, "SELECT key, size, etag, sha256, sha_source FROM remote_objects")}
        files = {r[0]: r[1:] for r in _sql(
            journal, "SELECT key, sha256, md5, size, mtime_ns, ctime_ns, inode FROM files")}
        stamped = _sql(journal, "SELECT count(*) FROM plan_items WHERE updated_at IS NULL")
    assert items == {"a": ("done", 1, 3, None), "b": ("done", 2, 6, None),
                     "c": ("failed", 3, 9, "refused"), "bad": ("done", 1, 3, None)}
    assert stamped == [(0,)]
    assert objects == {"a": (3, "ea", SHA_A, "upload"), "b": (3, "eb2", SHA_B, "upload"),
                       "bad": (3, "ebad", SHA_A, "upload")}
    assert files == {"a": (SHA_A, "md5a", 3, 10, 11, 12),
                     "b": (SHA_B, None, 3, 30, 31, 32),
                     "bad": (None, None, 3, 1, 1, 1)}


def test_deletes_and_interrupted_items_in_a_batch(journal_at):
    with Journal(journal_at) as journal:
        run_id = journal.start_run("/src", "s3://b/p", None, False)
        journal.add_plan_items(run_id, [
            {"key": "x", "action": "delete", "reason": "extra", "size": 1, "sha256": None},
            {"key": "y", "action": "upload", "reason": "new file", "size": 1, "sha256": None},
            {"key": "z", "action": "upload", "reason": "new file", "size": 1, "sha256": None}])
        ids = dict(_sql(journal, "SELECT key, id FROM plan_items"))
        _sql(journal, "INSERT INTO remote_objects (key, size, etag) VALUES ('x', 1, 'ex')")
        journal.record_results([
            TransferResult(ids["x"], "x", True, 1, action=Action.DELETE),
            TransferResult(ids["y"], "y", False, 0, error="stopped", interrupted=True),
            TransferResult(ids["z"], "z", False, 0, error="gone", vanished=True)])
        items = dict(_sql(journal, "SELECT key, status FROM plan_items"))
        objects = _sql(journal, "SELECT key FROM remote_objects")
    assert items == {"x": "done", "y": "pending", "z": "cancelled"}
    assert objects == []
