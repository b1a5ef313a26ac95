"""The fleet view's pure parts (a worker's speed, heartbeat age and staleness; the words
for them), and the read-only journal it opens, on both journals: it reads what a run
wrote, and the database refuses its writes."""

from __future__ import annotations

import pytest

from journalsync.report import ago, human_rate, worker_view
from journalsync.journal import Journal
from journalsync.models import RunCounts


def row(state="working", started=1000.0, beat=1010.0, done=5 << 20):
    return {"id": 1, "run_id": 1, "host": "h", "pid": 42, "started_at": started,
            "heartbeat_at": beat, "chunks_done": 2, "bytes_done": done, "state": state}


@pytest.mark.parametrize("worker, now, speed, age, stale", [
    (row(), 1012.0, 524288.0, 2.0, False),                # 5 MiB in 10 s, heard 2 s ago
    (row(), 1100.0, 524288.0, 90.0, False),               # exactly 3 leases: not yet
    (row(), 1100.5, 524288.0, 90.5, True),                # past 3 leases of 30 s
    (row(state="done"), 5000.0, 524288.0, 3990.0, False),  # a finished worker is never stale
    (row(beat=1000.0), 1001.0, None, 1.0, False),          # no interval yet: no speed
    (row(beat=None), 1001.0, None, None, True),            # working, never heard from
    (row(beat=1010.0), 1005.0, 524288.0, 0.0, False),     # another host's clock ahead
])
def test_worker_view(worker, now, speed, age, stale):
    view = worker_view(worker, lease=30.0, now=now)
    assert (view["bytes_per_s"], view["heartbeat_age"], view["stale"]) == (speed, age, stale)
    assert view["pid"] == 42 and view["host"] == "h"


@pytest.mark.parametrize("seconds, text", [
    (0.4, "0 s ago"), (12.9, "12 s ago"), (119, "119 s ago"), (120, "2 min ago"),
    (7199, "119 min ago"), (7200, "2 h ago"), (3 * 86400, "3 d ago")])
def test_ago(seconds, text):
    assert ago(seconds) == text


@pytest.mark.parametrize("rate, text", [
    (0, "0 B/s"), (1023, "1023 B/s"), (1536, "1.5 KiB/s"), (5 << 20, "5.0 MiB/s"),
    (3 << 30, "3.0 GiB/s")])
def test_human_rate(rate, text):
    assert human_rate(rate) == text


def test_a_read_only_journal_reads_and_cannot_write(journal_at):
    with Journal(journal_at) as journal:
        run_id = journal.start_run("/src", "s3://b/p", None, dry_run=False)
        journal.finish_run(run_id, "done", RunCounts(scanned=3))
    with Journal(journal_at, read_only=True) as journal:
        assert [r["scanned"] for r in journal.recent_runs(1)] == [3]
        assert journal.failure_count(run_id) == 0
        with pytest.raises(Exception, match="(?i)read.only|readonly"):
            journal.start_run("/src", "s3://b/p", None, dry_run=False)


def test_status_reads_a_current_postgresql_job_read_only_and_upgrades_an_older_one(pg_url):
    """Journal.for_view: read-only at the newest revision; an older job is upgraded as a
    run would (status --all shows it with a note instead, never upgraded)."""
    import uuid

    from journalsync.journal import migrate
    from journalsync.journal.location import PgLocation
    from journalsync.journal.pg import create_engine_for

    current = PgLocation(pg_url, f"v_{uuid.uuid4().hex[:10]}")
    Journal(current).close()
    with Journal.for_view(current) as journal:
        assert journal.read_only and journal.revision == migrate.HEAD_REVISION
    older = PgLocation(pg_url, f"v_{uuid.uuid4().hex[:10]}")
    engine = create_engine_for(older)
    migrate.upgrade_to_head(engine, "0009")
    with Journal.for_view(older) as journal:
        assert not journal.read_only
    assert migrate.current_revision(engine) == migrate.HEAD_REVISION
    engine.dispose()
