"""Chunks, claims, leases and epoch fencing on real journals (journal/chunks.py), SQLite
and PostgreSQL (`journal_at`: where the claims are FOR UPDATE SKIP LOCKED).

Two Journal objects on one journal are two connections, as two processes would hold."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import text

from journalsync.chunkwork import Held, Heartbeat, Tally
from journalsync.journal import Journal
from journalsync.models import TransferResult


def _planned(journal: Journal, sizes: list[int], deletes: int = 0) -> int:
    run_id = journal.start_run("/src", "s3://b/p", None, False)
    rows = [{"key": f"f{i:04d}", "action": "upload", "reason": "new", "size": size,
             "sha256": None} for i, size in enumerate(sizes)]
    rows += [{"key": f"x{i:04d}", "action": "delete", "reason": "extra", "size": 1,
              "sha256": None} for i in range(deletes)]
    journal.add_plan_items(run_id, rows)
    return run_id


def _sql(journal: Journal, sql: str, **params) -> list[tuple]:
    """Rows of `sql` read (or written) on a connection of the journal's own, as a test's
    look from outside the code under test."""
    with journal._engine.begin() as db:
        result = db.execute(text(sql), params)
        return [tuple(r) for r in result] if result.returns_rows else []


def _chunk_rows(journal: Journal) -> dict[int, list[tuple[int, int]]]:
    """{chunk id: [(plan item id, size)]} of the upload rows."""
    found: dict[int, list[tuple[int, int]]] = {}
    for chunk_id, item_id, size in _sql(
            journal, "SELECT chunk_id, id, size FROM plan_items WHERE action = 'upload' ORDER BY id"):
        found.setdefault(chunk_id, []).append((item_id, size))
    return found


def _ok(item_id: int, key: str) -> TransferResult:
    return TransferResult(item_id, key, True, size=1, etag="e", sha256="s" * 64)


def test_chunking_respects_both_limits_in_plan_order(journal_at):
    path = journal_at
    sizes = [10, 10, 10, 10, 60, 50, 500, 1, 1, 1, 1, 1]
    with Journal(path) as journal:
        run_id = _planned(journal, sizes, deletes=3)
        assert journal.make_chunks(run_id, max_files=3, max_bytes=100) == 6
        groups = _chunk_rows(journal)
        assert None not in groups  # every upload row has its chunk
        assert _sql(journal, "SELECT count(*) FROM plan_items WHERE action = 'delete' "
                             "AND chunk_id IS NOT NULL") == [(0,)]
        stored = {c: (f, b) for c, f, b in _sql(journal, "SELECT id, files, bytes FROM chunks")}
        assert [[s for _, s in rows] for _, rows in sorted(groups.items())] == [
            [10, 10, 10], [10, 60], [50], [500], [1, 1, 1], [1, 1]]
        for chunk_id, rows in groups.items():
            assert stored[chunk_id] == (len(rows), sum(s for _, s in rows))
        # plan order: chunk ids follow item ids
        firsts = [rows[0][0] for _, rows in sorted(groups.items())]
        assert firsts == sorted(firsts)
        assert journal.make_chunks(run_id, 3, 100) == 0  # chunked once
        assert journal.chunk_counts(run_id) == {"pending": 6, "claimed": 0, "done": 0}


def test_two_claimers_get_distinct_chunks(journal_at):
    path = journal_at
    with Journal(path) as journal:
        run_id = _planned(journal, [1] * 40)
        journal.make_chunks(run_id, 2, 1 << 30)  # 20 chunks
    got: dict[str, list[tuple[int, int]]] = {"a": [], "b": []}

    def claimer(name: str) -> None:
        with Journal(path) as mine:
            while claim := mine.claim_chunk(run_id, owner=1 if name == "a" else 2, lease=30):
                got[name].append(claim)

    threads = [threading.Thread(target=claimer, args=(n,)) for n in got]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [c for c, _ in got["a"] + got["b"]]
    assert sorted(ids) == sorted(set(ids)) and len(ids) == 20
    assert all(epoch == 1 for _, epoch in got["a"] + got["b"])
    with Journal(path) as journal:
        owners = dict(_sql(journal, "SELECT id, owner FROM chunks"))
    assert {owners[c] for c, _ in got["a"]} <= {1} and {owners[c] for c, _ in got["b"]} <= {2}


def test_workers_claim_the_largest_chunks_first_the_run_in_plan_order(journal_at):
    with Journal(journal_at) as journal:
        for largest_first, expected in ((True, [500, 60, 60, 10, 1]),
                                        (False, [10, 500, 60, 1, 60])):
            run_id = _planned(journal, [10, 500, 60, 1, 60])
            journal.make_chunks(run_id, 1, 1000)  # one file a chunk, ids in plan order
            sizes = dict(_sql(journal, "SELECT id, bytes FROM chunks WHERE run_id = :r",
                              r=run_id))
            claimed = []
            while claim := journal.claim_chunk(run_id, owner=1, lease=30,
                                               largest_first=largest_first):
                claimed.append(claim[0])
            assert [sizes[c] for c in claimed] == expected
            assert claimed == sorted(claimed, key=lambda c: (-sizes[c], c) if largest_first
                                     else c)  # ties in plan order


def test_expired_lease_is_reclaimed_with_the_next_epoch(journal_at):
    path = journal_at
    with Journal(path) as a, Journal(path) as b:
        run_id = _planned(a, [1])
        a.make_chunks(run_id, 10, 100)
        chunk, epoch = a.claim_chunk(run_id, owner=1, lease=0.3)
        assert epoch == 1
        assert b.claim_chunk(run_id, owner=2, lease=30) is None  # held under a live lease
        assert a.renew_lease(chunk, epoch, 0.3)
        time.sleep(0.4)
        assert b.claim_chunk(run_id, owner=2, lease=30) == (chunk, 2)
        assert not a.renew_lease(chunk, epoch, 30)  # the old holder learns it lost it
        assert b.renew_lease(chunk, 2, 30)


def test_on_postgresql_leases_follow_the_databases_clock_not_a_hosts(journal_at, monkeypatch):
    """Two hosts whose clocks disagree by an hour share a PostgreSQL journal: the one ahead
    must not take a chunk whose lease is live, and a worker's heartbeat age (status) is not
    an hour off. SQLite's writers share one host and its clock, so there the skewed clock is
    obeyed: the same claim succeeds (the test shows which clock each kind keeps)."""
    import journalsync.journal.chunks as chunks_module

    path = journal_at
    with Journal(path) as a, Journal(path) as b:
        run_id = _planned(a, [1])
        a.make_chunks(run_id, 10, 100)
        chunk, epoch = a.claim_chunk(run_id, owner=1, lease=30)
        worker = a.register_worker(run_id)
        real = time.time
        monkeypatch.setattr(chunks_module.time, "time", lambda: real() + 3600)
        taken = b.claim_chunk(run_id, owner=2, lease=30)
        if a.shared:
            assert taken is None
            assert a.renew_lease(chunk, epoch, 30)
            (beat,), = _sql(a, "SELECT heartbeat_at FROM workers WHERE id = :w", w=worker)
            assert abs(b.clock() - beat) < 60
        else:
            assert taken == (chunk, epoch + 1)


def test_stale_completion_is_rejected_and_nothing_of_it_recorded(journal_at):
    path = journal_at
    with Journal(path) as a, Journal(path) as b:
        run_id = _planned(a, [1, 1])
        a.make_chunks(run_id, 10, 100)
        chunk, old = a.claim_chunk(run_id, owner=1, lease=0.2)
        items = a.chunk_items(chunk)
        time.sleep(0.3)
        _, new = b.claim_chunk(run_id, owner=2, lease=30)
        # The old holder comes back late with a finished batch: refused whole.
        assert a.record_chunk_results(chunk, old, [_ok(i.id, i.key) for i in items], 30) == "lost"
        assert _sql(a, "SELECT count(*) FROM plan_items WHERE status = 'done'") == [(0,)]
        assert _sql(a, "SELECT count(*) FROM remote_objects") == [(0,)]
        assert _sql(a, "SELECT state, owner, epoch FROM chunks") == [("claimed", 2, 2)]
        # The new owner's results count, and the last of them closes the chunk.
        first, second = b.chunk_items(chunk)
        assert b.record_chunk_results(chunk, new, [_ok(first.id, first.key)], 30) == "open"
        assert [i.id for i in b.chunk_items(chunk)] == [second.id]  # done rows not resent
        assert b.record_chunk_results(chunk, new, [_ok(second.id, second.key)], 30) == "done"
        assert b.chunk_counts(run_id) == {"pending": 0, "claimed": 0, "done": 1}
        assert _sql(b, "SELECT count(*) FROM remote_objects") == [(2,)]


def test_heartbeat_of_a_lost_chunk_reports_the_loss(journal_at):
    path = journal_at
    with Journal(path) as a, Journal(path) as b:
        run_id = _planned(a, [1, 1])
        a.make_chunks(run_id, 1, 100)  # two chunks
        worker = a.register_worker(run_id)
        kept = Held(*a.claim_chunk(run_id, worker, lease=30))
        lost = Held(*a.claim_chunk(run_id, worker, lease=0.2))
        held = {kept.id: kept, lost.id: lost}
        beat = Heartbeat(a, worker, 0.2, held, threading.Lock(), Tally(chunks=1, bytes=5))
        time.sleep(0.3)
        assert b.claim_chunk(run_id, owner=99, lease=30) == (lost.id, 2)
        beat.lease = 30
        beat.beat()
        assert lost.lost.is_set() and not kept.lost.is_set()
        assert _sql(a, "SELECT chunks_done, bytes_done, state FROM workers WHERE id = :w",
                    w=worker) == [(1, 5, "working")]  # the tally, as the heartbeat wrote it
        # What status shows counts the chunks the worker closed: none here.
        row = a.run_workers_rows(run_id)[0]
        assert (row["chunks_done"], row["bytes_done"]) == (0, 5)


def test_resumed_run_keeps_its_chunks(journal_at):
    path = journal_at
    with Journal(path) as journal:
        run_id = _planned(journal, [1, 1, 1, 1])
        journal.make_chunks(run_id, 2, 100)
        chunk, epoch = journal.claim_chunk(run_id, 1, 30)
        items = journal.chunk_items(chunk)
        journal.record_chunk_results(chunk, epoch, [_ok(items[0].id, items[0].key)], 30)
        before = _chunk_rows(journal)
        # As a killed run leaves it: the other chunk's rows are done, its state is not.
        other = next(c for c in before if c != chunk)
        _sql(journal, "UPDATE plan_items SET status = 'done' WHERE chunk_id = :c", c=other)
        journal.add_plan_items(run_id, [{"key": "new", "action": "upload", "reason": "new",
                                         "size": 1, "sha256": None}])
        assert journal.make_chunks(run_id, 2, 100) == 1  # only the new row
        after = _chunk_rows(journal)
        assert {c: r for c, r in after.items() if c in before} == before
        assert journal.chunk_counts(run_id) == {"pending": 1, "claimed": 1, "done": 1}


@pytest.mark.parametrize("files,limit", [(0, 1)])
def test_empty_plan_makes_no_chunk(journal_at, files, limit):
    with Journal(journal_at) as journal:
        run_id = _planned(journal, [1] * files, deletes=2)
        assert journal.make_chunks(run_id, limit, 100) == 0
        assert journal.claim_chunk(run_id, 1, 30) is None


def test_worker_without_an_active_run_says_so_and_exits_0(offline_sync):
    journal = offline_sync.tmp / "j.sqlite"
    Journal(journal).close()
    result = offline_sync.cli("worker", "--journal", str(journal))
    assert (result.code, result.out, result.err) == (
        0, f"journalsync: no active run in {journal}; nothing to do\n", "")
    missing = offline_sync.cli("worker", "--journal", str(offline_sync.tmp / "nope.sqlite"))
    assert missing.code == 2 and missing.err.startswith("journalsync: error: no journal at ")
    assert not (offline_sync.tmp / "nope.sqlite").exists()


def test_chunks_of_dead_processes_on_this_host_are_free_at_once(journal_at):
    """A killed run or worker of this host leaves chunks under live leases: the next claimer
    here frees them at once (a lease cannot tell dead from slow; this host can). A live
    holder, and a holder on another host, keep theirs until their leases run out."""
    import subprocess
    import sys

    with Journal(journal_at) as journal:
        run_id = _planned(journal, [1, 1, 1])
        journal.make_chunks(run_id, 1, 100)  # three chunks
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)
        live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        try:
            holders = {}
            for name, pid, host in (("dead", int(dead.stdout), None), ("live", live.pid, None),
                                    ("elsewhere", int(dead.stdout), "another-host")):
                worker = journal.register_worker(run_id)
                _sql(journal, "UPDATE workers SET pid = :pid, host = coalesce(:host, host) "
                              "WHERE id = :w", pid=pid, host=host, w=worker)
                holders[name] = journal.claim_chunk(run_id, worker, lease=600)
            assert journal.release_dead_holders(run_id) == 1
            assert journal.claim_chunk(run_id, owner=99, lease=30) == (holders["dead"][0], 2)
            assert journal.claim_chunk(run_id, owner=99, lease=30) is None
        finally:
            live.kill()
            live.wait()


def test_a_busy_process_claims_no_more_than_it_is_sending(journal_at):
    """With 8 transfer slots and chunks of one large file each, a process works AHEAD (2)
    chunks at once and leaves the rest to other hosts' claims, instead of filling its
    window of 2 x 8 items with 6 chunks it cannot send any sooner."""
    from journalsync.chunkwork import AHEAD, work_chunks

    with Journal(journal_at) as a, Journal(journal_at) as b:
        run_id = _planned(a, [1] * 6)
        a.make_chunks(run_id, 1, 100)  # six chunks
        release = threading.Event()
        started: list[int] = []

        def transfer(item):
            started.append(item.id)
            release.wait(30)
            return _ok(item.id, item.key)

        busy = threading.Thread(target=work_chunks, args=(a, run_id, transfer, 8,
                                                          a.register_worker(run_id)))
        busy.start()
        try:
            deadline = time.monotonic() + 10
            while len(started) < AHEAD and time.monotonic() < deadline:
                time.sleep(0.01)
            others = []
            while claim := b.claim_chunk(run_id, owner=99, lease=30):
                others.append(claim)
        finally:
            release.set()
            busy.join(30)
        assert len(others) == 6 - AHEAD, others
        assert len(started) == AHEAD
        assert a.chunk_counts(run_id) == {"pending": 0, "claimed": 6 - AHEAD, "done": AHEAD}


def test_only_live_peers_count_as_working(journal_at):
    """The run claims largest first only while other processes work beside it: a killed
    worker's row (marked working for ever) on this host, or one silent for a lease on
    another, is not one."""
    import subprocess
    import sys

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    with Journal(journal_at) as journal:
        run_id = _planned(journal, [1])
        me = journal.register_worker(run_id)
        peer = journal.register_worker(run_id)
        assert journal.working_peers(run_id, me, 30) == 1  # alive (this very process)
        _sql(journal, "UPDATE workers SET pid = :p WHERE id = :w", p=gone.pid, w=peer)
        assert journal.working_peers(run_id, me, 30) == 0  # killed: its row says working
        _sql(journal, "UPDATE workers SET host = 'elsewhere' WHERE id = :w", w=peer)
        assert journal.working_peers(run_id, me, 30) == 1  # another host: its beats decide
        _sql(journal, "UPDATE workers SET heartbeat_at = heartbeat_at - 31 WHERE id = :w",
             w=peer)
        assert journal.working_peers(run_id, me, 30) == 0  # silent for a lease


def test_a_workers_row_ends_with_its_final_tally_not_an_older_heartbeat(journal_at):
    """The heartbeat reads the tally, then waits for the journal; the final beat (after the
    last results are recorded) must not be overwritten by that older tally. Seen in CI: a
    paused-past-its-lease test found one 120-byte file missing from the workers' bytes."""
    from journalsync.chunkwork import work_chunks

    final, read = threading.Event(), threading.Event()
    slowed: list[int] = []
    with Journal(journal_at) as journal:
        run_id = _planned(journal, [1] * 4)
        journal.make_chunks(run_id, 2, 100)
        worker_id = journal.register_worker(run_id)
        beat = journal.worker_beat

        def worker_beat(worker, chunks_done, bytes_done, state=None):
            if threading.current_thread().name == "heartbeat" and not slowed:
                slowed.append(bytes_done)
                read.set()
                final.wait(3)  # it read the tally already: slow on its way to the journal
            beat(worker, chunks_done, bytes_done, state)
            if state is not None:
                final.set()

        def transfer(item):
            if item.key == "f0003":
                read.wait(30)  # the last file ends after the first beat read the tally
            return TransferResult(item.id, item.key, True, size=10, etag="e",
                                  sha256="s" * 64)

        journal.worker_beat = worker_beat
        work_chunks(journal, run_id, transfer, 1, worker_id, lease=3.0)
        rows = journal.run_workers_rows(run_id)
    assert slowed and slowed[0] < 40, slowed  # the race this test is about did happen
    assert [(r["chunks_done"], r["bytes_done"], r["state"]) for r in rows] == [(2, 40, "done")]


def test_a_holder_gone_silent_mid_transaction_keeps_its_chunk_no_longer_than_its_lease(pg_url):
    """PostgreSQL: a holder whose host vanishes between a chunk's UPDATE and its COMMIT
    (a partition, a power cut) leaves its session idle in a transaction that holds the
    chunk's row lock; claims skip locked rows, so without a limit the chunk would wait for
    the server to notice the dead connection (TCP keepalive: two hours by default). Its
    COMMIT is swallowed here by a relay that goes silent at that message."""
    import uuid
    from urllib.parse import urlsplit

    from journalsync.journal.location import PgLocation
    from tests.support.hostnet import Relay

    job = f"t_{uuid.uuid4().hex[:12]}"
    parts = urlsplit(pg_url)
    relay = Relay("127.0.0.1", parts.port or 5432)
    relayed = pg_url.replace(parts.netloc, f"{parts.username}@127.0.0.1:{relay.port}")
    renewal = None
    with Journal(PgLocation(pg_url, job)) as b:
        a = Journal(PgLocation(relayed, job))
        try:
            run_id = _planned(b, [1])
            b.make_chunks(run_id, 10, 100)
            chunk, epoch = a.claim_chunk(run_id, owner=1, lease=1.0)
            relay.silence_at(b"COMMIT")
            renewal = threading.Thread(target=_quietly, args=(a.renew_lease, chunk, epoch, 1.0),
                                       daemon=True)
            renewal.start()
            claim = _taken_over(b, run_id)
            assert claim == (chunk, 2), "the silent holder's lock kept the chunk"
            assert b.renew_lease(chunk, 2, 30)
            # The server ended the silent session; back on a link, the holder's next beat
            # (on a new connection) learns the chunk is no longer its own.
            renewal.join(10)
            relay.silence_at(None)
            assert a.renew_lease(chunk, epoch, 30) is False
        finally:
            relay.close()
            if renewal is not None:
                renewal.join(10)
            _quietly(a.close)


def test_a_holder_back_after_its_session_was_ended_learns_it_lost_the_chunk_and_goes_on(pg_url):
    """PostgreSQL: a holder paused inside a fenced write past its lease (SIGSTOP, a
    partition that comes back) finds its session ended by the server. The write runs
    again on a new connection, is fenced out (the chunk has a new owner) and says "lost";
    the holder goes on with a working journal. It used to exit 5 ("is PostgreSQL running
    there?") in the middle of a run other workers were finishing."""
    import uuid
    from urllib.parse import urlsplit

    from journalsync.journal.location import PgLocation
    from tests.support.hostnet import Relay

    job = f"t_{uuid.uuid4().hex[:12]}"
    parts = urlsplit(pg_url)
    relay = Relay("127.0.0.1", parts.port or 5432)
    relayed = pg_url.replace(parts.netloc, f"{parts.username}@127.0.0.1:{relay.port}")
    outcome: list = []
    with Journal(PgLocation(pg_url, job)) as b:
        a = Journal(PgLocation(relayed, job))
        try:
            run_id = _planned(b, [1, 1])
            b.make_chunks(run_id, 10, 100)
            chunk, epoch = a.claim_chunk(run_id, owner=1, lease=1.0)
            first, second = (i for i, _ in _chunk_rows(b)[chunk])
            relay.silence_at(b"COMMIT", once=True, both=True)

            def record() -> None:
                try:
                    outcome.append(a.record_chunk_results(chunk, epoch, [_ok(first, "f0000")], 1.0))
                except Exception as exc:  # noqa: BLE001 - the defect this test is about
                    outcome.append(exc)

            paused = threading.Thread(target=record, daemon=True)
            paused.start()
            assert _taken_over(b, run_id) == (chunk, epoch + 1)
            relay.heal()  # back on the link: its session is gone
            paused.join(15)
            assert outcome == ["lost"], outcome
            assert a.renew_lease(chunk, epoch, 30) is False  # the same journal, working
            assert _sql(b, "SELECT status FROM plan_items WHERE id IN (:a, :b)",
                        a=first, b=second) == [("pending",), ("pending",)]
            assert b.record_chunk_results(chunk, epoch + 1, [_ok(first, "f0000"),
                                                             _ok(second, "f0001")], 30) == "done"
        finally:
            relay.close()
            _quietly(a.close)


def _relayed(pg_url: str):
    """A PostgreSQL job's location straight, and through a Relay (tests/support/hostnet.py)."""
    import uuid
    from urllib.parse import urlsplit

    from journalsync.journal.location import PgLocation
    from tests.support.hostnet import Relay

    job = f"t_{uuid.uuid4().hex[:12]}"
    parts = urlsplit(pg_url)
    relay = Relay("127.0.0.1", parts.port or 5432)
    relayed = pg_url.replace(parts.netloc, f"{parts.username}@127.0.0.1:{relay.port}")
    return PgLocation(pg_url, job), PgLocation(relayed, job), relay


def test_a_chunk_write_whose_commit_landed_but_whose_answer_was_lost_says_done(pg_url):
    """PostgreSQL: the COMMIT of a chunk's last results reaches the server and commits,
    and the link goes before its answer comes back. The write runs once more on a new
    connection (rerun_if_session_lost): the chunk is done, at this holder's epoch (no one
    else can close it at that epoch), so what it says is done, not lost. Said lost, the
    worker dropped the bytes it had sent from its tally and logged its results as dropped
    though they were recorded."""
    straight, relayed, relay = _relayed(pg_url)
    with Journal(straight) as b:
        a = Journal(relayed)
        try:
            run_id = _planned(b, [1, 1])
            b.make_chunks(run_id, 10, 100)
            chunk, epoch = a.claim_chunk(run_id, owner=1, lease=30)
            first, second = (i for i, _ in _chunk_rows(b)[chunk])
            outcome = _answer_lost_after_commit(
                relay, b, "chunks", chunk, epoch, lambda: a.record_chunk_results(
                    chunk, epoch, [_ok(first, "f0000"), _ok(second, "f0001")], 30))
            assert outcome == ["done"], outcome
        finally:
            relay.close()
            _quietly(a.close)


def _answer_lost_after_commit(relay, journal: Journal, table: str, row_id: int, epoch: int,
                              write) -> list:
    """Run `write` with its COMMIT delivered and everything after it cut both ways, wait
    until the server has the row done at `epoch`, heal the link, and return what `write`
    gave (or raised)."""
    outcome: list = []

    def cut_off() -> None:
        try:
            outcome.append(write())
        except Exception as exc:  # noqa: BLE001 - shown by the caller's assert
            outcome.append(exc)

    relay.silence_at(b"COMMIT", once=True, both=True, deliver=True)
    cut = threading.Thread(target=cut_off, daemon=True)
    cut.start()
    deadline = time.monotonic() + 15
    query = f"SELECT state, epoch FROM {table} WHERE id = :r"
    while time.monotonic() < deadline and _sql(journal, query, r=row_id) != [("done", epoch)]:
        time.sleep(0.1)
    assert _sql(journal, query, r=row_id) == [("done", epoch)]  # committed; its answer lost
    relay.heal()
    cut.join(15)
    return outcome


def test_a_unit_close_whose_commit_landed_but_whose_answer_was_lost_says_closed(pg_url):
    """As the chunk's: close_unit runs again after its COMMIT landed and its answer was
    lost; the unit is done at this holder's epoch, so it is closed (True). Said not
    closed, the sender raised UnitLost and its unit's bytes left its tally."""
    from journalsync.journal import UploadRecord

    straight, relayed, relay = _relayed(pg_url)
    with Journal(straight) as b:
        a = Journal(relayed)
        try:
            run_id = b.start_run("/src", "s3://b/p", None, False)
            b.record_upload(UploadRecord("up-1", "big.bin", run_id, 5, 10, 1, 1, 1, "ab" * 32,
                                         time.time(), "active"), None)
            assert b.make_part_units(run_id, "up-1", [(1, 2, [101, 102])]) == 1
            unit = a.claim_part_unit(run_id, 1, 30)
            for number in (1, 2):
                assert a.record_unit_part(unit, number, f'"e{number}"', 5, worker_id=1, lease=30)
            outcome = _answer_lost_after_commit(relay, b, "part_units", unit.id, unit.epoch,
                                                lambda: a.close_unit(unit, 30))
            assert outcome == [True], outcome
        finally:
            relay.close()
            _quietly(a.close)


def test_a_chunk_write_whose_session_ends_between_its_statements_runs_again(pg_url):
    """PostgreSQL: the session of a fenced write is ended after the chunk's fence and
    before the results' statements (the holder paused there past its lease: the server's
    idle-in-transaction limit; here its backend is terminated at that point). Those
    statements go to psycopg's own cursor (Journal._pg_run), not through SQLAlchemy's
    execute: the write must still run again on a new connection and record them."""
    from sqlalchemy import event

    straight, _, relay = _relayed(pg_url)
    relay.close()
    with Journal(straight) as b, Journal(straight) as a:
        run_id = _planned(b, [1, 1])
        b.make_chunks(run_id, 10, 100)
        chunk, epoch = a.claim_chunk(run_id, owner=1, lease=30)
        first, second = (i for i, _ in _chunk_rows(b)[chunk])
        cut: list[int] = []

        @event.listens_for(a._engine, "after_cursor_execute")
        def _end_session(conn, cursor, statement, *_):
            if not cut and statement.lstrip().startswith("UPDATE chunks SET lease_until"):
                cut.append(conn.connection.driver_connection.info.backend_pid)
                _sql(b, "SELECT pg_terminate_backend(:p)", p=cut[0])
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline and _sql(
                        b, "SELECT 1 FROM pg_stat_activity WHERE pid = :p", p=cut[0]):
                    time.sleep(0.05)

        got = a.record_chunk_results(chunk, epoch, [_ok(first, "f0000"),
                                                    _ok(second, "f0001")], 30)
        assert cut and got == "done"
        assert _sql(b, "SELECT status FROM plan_items WHERE id IN (:a, :b)",
                    a=first, b=second) == [("done",), ("done",)]


def _taken_over(journal: Journal, run_id: int) -> tuple[int, int] | None:
    """Another holder's claim, asked every 0.2 s for up to 15 s: the chunk once the silent
    holder's lease is over and its lock gone."""
    deadline = time.monotonic() + 15
    claim = None
    while claim is None and time.monotonic() < deadline:
        time.sleep(0.2)
        claim = journal.claim_chunk(run_id, owner=2, lease=30)
    return claim


def _quietly(fn, *args) -> None:
    try:
        fn(*args)
    except Exception:  # noqa: BLE001 - its connection is gone: what the test makes happen
        pass
