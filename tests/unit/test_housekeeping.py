"""The journal's bounded history on real SQLite files (and in PostgreSQL: journal_at): the last N runs stay, older runs go
with their plan rows and scan errors, and nothing a later run still needs is pruned (the
running run, the run --resume would continue, an active multipart upload and its parts)."""

from __future__ import annotations

import sqlite3
import time

from journalsync.journal import Journal
from journalsync.journal.uploads import UploadRecord
from journalsync.models import RunCounts


def nightly(journal: Journal, n_items: int = 3, dry_run: bool = False, state: str = "done",
            keep: int | None = None) -> int:
    """One run as the engine leaves it: plan rows, a permanent scan error, finished; then
    housekept when `keep` is given."""
    run = journal.start_run("/src", "s3://b/p", None, dry_run)
    journal.add_plan_items(run, [{"key": f"k{run}-{i}", "action": "upload", "reason": "new",
                                  "size": 1, "sha256": "ab"} for i in range(n_items)])
    journal.record_file_errors(run, [("x" * 1100, "key longer than 1024 bytes")])
    journal.save_plan_counts(run, RunCounts(), 0)
    journal.finish_run(run, state, RunCounts())
    if keep is not None:
        journal.housekeep(run, keep)
    return run


def rows(path, sql: str) -> list[tuple]:
    """What the journal at `path` holds, read on a connection of the test's own."""
    from journalsync.journal.location import PgLocation

    if isinstance(path, PgLocation):
        import psycopg

        with psycopg.connect(path.libpq_url, options=f"-c search_path={path.job}") as db:
            return [tuple(r) for r in db.execute(sql).fetchall()]
    with sqlite3.connect(path) as db:
        return db.execute(sql).fetchall()


def on_disk(path) -> int:
    """The journal's bytes, WAL included."""
    wal = path.with_name(path.name + "-wal")
    return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


def upload(journal: Journal, run: int, uid: str, state: str = "active", parts: int = 2) -> None:
    journal.record_upload(UploadRecord(uid, f"big-{uid}", run, 5, 10, 1, 1, 1, "ab",
                                       time.time(), state), None)
    for n in range(1, parts + 1):
        journal.record_part(uid, n, f"etag{n}", 5)


def test_history_is_bounded_to_keep_runs(journal_at):
    path = journal_at
    with Journal(path) as journal:
        runs = [nightly(journal, dry_run=i % 4 == 3, keep=5) for i in range(12)]
    kept = runs[-5:]
    assert [r for (r,) in rows(path, "SELECT id FROM runs ORDER BY id")] == kept
    assert sorted({r for (r,) in rows(path, "SELECT run_id FROM plan_items")}) == kept
    assert len(rows(path, "SELECT 1 FROM plan_items")) == 5 * 3
    assert [r for (r,) in rows(path, "SELECT run_id FROM file_errors ORDER BY run_id")] == kept


def test_active_upload_survives_pruning_until_it_ends(journal_at):
    path = journal_at
    with Journal(path) as journal:
        first = nightly(journal)
        upload(journal, first, "active-1")
        upload(journal, first, "done-1", state="completed")
        upload(journal, first, "gone-1", state="aborted")
        for _ in range(6):
            nightly(journal, keep=2)
        # The run that owns the active upload stays; its finished uploads and their parts go.
        assert (first,) in rows(path, "SELECT id FROM runs")
        assert rows(path, "SELECT upload_id, state FROM multipart_uploads") == [("active-1", "active")]
        assert rows(path, "SELECT upload_id, part_number FROM multipart_parts ORDER BY 2") == [
            ("active-1", 1), ("active-1", 2)]
        assert journal.known_upload_ids(["active-1", "done-1", "stranger"]) == {"active-1"}
        assert [u.parts_done for u in journal.active_uploads()] == [2]

        journal.set_upload_state("active-1", "completed")
        nightly(journal, keep=2)
        assert (first,) not in rows(path, "SELECT id FROM runs")
    assert rows(path, "SELECT * FROM multipart_uploads") == []
    assert rows(path, "SELECT * FROM multipart_parts") == []


def test_resumable_run_is_kept_behind_dry_runs(journal_at):
    path = journal_at
    with Journal(path) as journal:
        nightly(journal)
        stopped = nightly(journal, state="interrupted")
        for _ in range(5):
            nightly(journal, dry_run=True, keep=1)
        assert journal.last_real_run()["id"] == stopped
        assert len(rows(path, f"SELECT 1 FROM plan_items WHERE run_id = {stopped}")) == 3
        nightly(journal, keep=1)  # a real run that finished: nothing is resumable any more
    assert len(rows(path, "SELECT id FROM runs")) == 1


def test_old_journal_is_vacuumed_to_incremental_and_wal_truncated(tmp_path):
    path = tmp_path / "j.sqlite"
    with sqlite3.connect(path) as db:  # a journal made before auto_vacuum was set
        db.execute("PRAGMA auto_vacuum=NONE")
        db.execute("CREATE TABLE t (x)")
        db.execute("DROP TABLE t")
    with Journal(path) as journal:
        assert journal.page_stats()[2] == 0
        for _ in range(3):
            nightly(journal, n_items=3000)
        big = on_disk(path)
        nightly(journal, keep=1)
        assert journal.page_stats()[2] == 2  # now incremental
        assert on_disk(path) < big / 2
        assert (tmp_path / "j.sqlite-wal").stat().st_size == 0
        for _ in range(3):
            nightly(journal, n_items=3000)
        nightly(journal, keep=1)
        assert journal.page_stats()[1] == 0  # incremental: every free page given back
    with Journal(tmp_path / "new.sqlite") as journal:
        assert journal.page_stats()[2] == 2  # a new journal starts incremental
