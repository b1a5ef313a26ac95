"""Keeping the journal small: a bounded history of runs, freed pages given back, a short WAL
(the pages and the WAL on SQLite only).
Mixed into Journal (store.py), whose connections, lock and helpers it relies on.

Without this every run adds its plan rows, every nightly permanent scan error adds a
file_errors row, and every multipart upload leaves its rows, for ever. At the end of a run
the journal keeps the last `keep` runs and drops the rest with their plan_items and
file_errors, the finished multipart uploads of runs older than those, and the parts of
every upload that is no longer active (only an active upload is ever resumed from its parts).
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass, replace

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

log = logging.getLogger(__name__)

# A journal made before auto_vacuum=INCREMENTAL is rewritten by one VACUUM (which also
# switches it over) once its free pages are this share of the file; an incremental journal
# gives back every free page after each run, which costs little (the pages are at hand).
VACUUM_FRACTION = 0.25

# Runs never pruned: the newest `keep`, the current one, the one --resume would continue,
# any still marked running, and any that owns an active multipart upload (its UploadId
# must stay known until the upload is completed or aborted).
_DOOMED_RUNS = """
    SELECT id FROM runs
    WHERE id NOT IN (SELECT id FROM runs ORDER BY id DESC LIMIT :keep)
      AND id NOT IN (:current, :resumable) AND state != 'running'
      AND id NOT IN (SELECT run_id FROM multipart_uploads
                     WHERE state IN ('active', 'creating'))"""


@dataclass(frozen=True, slots=True)
class PruneStats:
    """Rows removed by one prune, and pages given back to the file system."""

    runs: int = 0
    plan_items: int = 0
    file_errors: int = 0
    uploads: int = 0
    parts: int = 0
    pages_freed: int = 0


class Housekeeping:

    def housekeep(self, current_run: int, keep: int) -> PruneStats:
        """Prune the history to `keep` runs, reclaim free pages, truncate the WAL. Called
        once a run has finished, under its run lock."""
        try:
            stats = self.prune_history(current_run, keep)
            # PostgreSQL: autovacuum makes the dead rows' room reusable, and there is no
            # file of ours to shrink or WAL of ours to truncate.
            freed = 0 if self._pg else self.reclaim_free_pages()
            if not self._pg:
                self.checkpoint()
        except (sqlite3.Error, DBAPIError) as exc:
            # The run itself is done and recorded; a full disk (VACUUM needs room for a
            # copy) or a busy journal only postpones this to the next run.
            log.warning("journal housekeeping skipped (the next run tries again): %s", exc)
            return PruneStats()
        log.info("journal: pruned %d run(s), %d plan row(s), %d scan error(s), %d upload(s), "
                 "%d part(s); %d page(s) freed", stats.runs, stats.plan_items,
                 stats.file_errors, stats.uploads, stats.parts, freed)
        return replace(stats, pages_freed=freed)

    def prune_history(self, current_run: int, keep: int) -> PruneStats:
        """Delete every run outside the kept set (see _DOOMED_RUNS) with its rows, in one
        transaction."""
        last = self.last_real_run()  # the run --resume may continue: never pruned
        resumable = last if last and last["state"] == "interrupted" and last["planned_at"] else None
        params = {"keep": max(1, keep), "current": current_run,
                  "resumable": resumable["id"] if resumable else current_run}
        doomed = f"IN ({_DOOMED_RUNS})"
        with self._write() as conn:
            def delete(sql: str) -> int:
                return conn.execute(text(sql), params).rowcount

            items = delete(f"DELETE FROM plan_items WHERE run_id {doomed}")
            errors = delete(f"DELETE FROM file_errors WHERE run_id {doomed}")
            # Parts before their uploads: PostgreSQL checks the foreign key at each statement.
            parts = delete("DELETE FROM multipart_parts WHERE upload_id NOT IN ("
                           "SELECT upload_id FROM multipart_uploads WHERE state = 'active')")
            # A finished upload is history even in a run kept for another upload's sake.
            # An intent (creating) is kept until a reconcile lists its key (cleanup.py).
            uploads = delete("DELETE FROM multipart_uploads"
                             " WHERE state NOT IN ('active', 'creating') AND run_id"
                             " NOT IN (SELECT id FROM runs ORDER BY id DESC LIMIT :keep)"
                             " AND run_id NOT IN (:current, :resumable)")
            gone = delete(f"DELETE FROM runs WHERE id {doomed}")
        return PruneStats(gone, items, errors, uploads, parts)

    def reclaim_free_pages(self) -> int:
        """Give free pages back to the file system: all of them on a journal with
        auto_vacuum=INCREMENTAL, else (journals made before this release) one VACUUM that
        switches it to incremental, once they exceed VACUUM_FRACTION of the file."""
        pages, free, mode = self.page_stats()
        if free == 0 or (mode != 2 and free <= pages * VACUUM_FRACTION):
            return 0
        with self._lock:
            self._reader.rollback()  # no read transaction may pin pages while we move them
            raw = self._writer.connection.driver_connection
            # executescript steps a statement to its end: execute() would step
            # incremental_vacuum once, and free one page.
            if mode == 2:  # incremental
                raw.executescript("PRAGMA incremental_vacuum")
            else:
                raw.executescript("PRAGMA auto_vacuum=INCREMENTAL; VACUUM")
        return free - self.page_stats()[1]

    def page_stats(self) -> tuple[int, int, int]:
        """(page_count, freelist_count, auto_vacuum mode) of the journal file."""
        with self._lock:
            raw = self._writer.connection.driver_connection
            return tuple(raw.execute(f"PRAGMA {name}").fetchone()[0]
                         for name in ("page_count", "freelist_count", "auto_vacuum"))

    def checkpoint(self) -> None:
        """Copy the WAL into the journal and truncate it to zero bytes."""
        with self._lock:
            self._reader.rollback()
            raw = self._writer.connection.driver_connection
            busy, _, _ = raw.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:
            log.info("journal: WAL not truncated, another connection is reading")
