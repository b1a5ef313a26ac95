"""Hostile review of `status`'s part units (partunits.shared_upload_progress) on PostgreSQL:
its two reads (the units, then their holders) are two statements, each with a snapshot of
its own under READ COMMITTED, and a run goes on meanwhile."""

from __future__ import annotations

import threading
import time
import uuid

from sqlalchemy import event

from journalsync.journal import Journal, UploadRecord


def test_an_upload_shared_between_status_s_two_reads_does_not_break_it(pg_url):
    """A shared upload whose units are made and claimed after status read the units and
    before it read their holders: the holders' read names an upload the first did not
    (KeyError: `status` failed while a run was sharing files, when it is looked at)."""
    from journalsync.journal.location import PgLocation

    where = PgLocation(pg_url, f"t_{uuid.uuid4().hex[:12]}")
    with Journal(where) as status, Journal(where) as run:
        run_id = run.start_run("/src", "s3://b/p", None, False)
        me = run.register_worker(run_id)
        between = threading.Event()

        def share_between(conn, cursor, statement, *args):
            if "JOIN workers w" in statement and not between.is_set():
                between.set()
                run.record_upload(UploadRecord("up-2", "big.bin", run_id, 5, 10, 1, 1, 1,
                                               "ab" * 32, time.time(), "active"), None)
                assert run.make_part_units(run_id, "up-2", [(1, 2, [1, 2])]) == 1
                assert run.claim_part_unit(run_id, me, 30) is not None

        event.listen(status._engine, "before_cursor_execute", share_between)
        try:
            progress = status.shared_upload_progress()
        finally:
            event.remove(status._engine, "before_cursor_execute", share_between)
        assert between.is_set()
        # The units' read saw no shared upload: status shows none (the next look shows it).
        assert progress == {}, progress
