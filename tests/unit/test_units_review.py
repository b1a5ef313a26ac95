"""Hostile review of "a file shared in about one unit per process" (sharedparts.unit_for,
sharedrules.unit_bytes_among) on real journals: who counts as another process working the
run, whether an idle worker stays for a file it was counted for, and two owners of one
upload that chose different unit sizes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sqlalchemy import insert

from journalsync.config import Config, Destination, MiB
from journalsync.journal import Journal
from journalsync.journal.schema import workers
from journalsync.models import Action, PlanItem
from journalsync.multipart import MultipartDriver
from journalsync.sharedparts import SharedParts
from tests.support.unitrace import make_units_interleaved


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _worker_row(journal: Journal, run_id: int, host: str, pid: int, heard: float) -> None:
    with journal._engine.begin() as conn:
        conn.execute(insert(workers).values(
            run_id=run_id, host=host, pid=pid, started_at=heard, heartbeat_at=heard,
            chunks_done=0, bytes_done=0, state="working"))


def test_a_killed_or_silent_worker_is_no_process_working_the_run(journal_at):
    """A worker killed (SIGKILL, a host gone) stays marked working for ever: counted, it
    made a `run --resume` working alone share its large files in halves (a pre-hash read
    more of each file the scan had hashed, and units no one else claims)."""
    with Journal(journal_at) as journal:
        run_id = journal.start_run("/src", "s3://b/p", None, False)
        journal.register_worker(run_id)  # this process
        now = journal.clock()
        _worker_row(journal, run_id, "elsewhere", 4242, now)  # alive, heard just now
        assert journal.other_workers(run_id, 30.0) == 1
        _worker_row(journal, run_id, "gone-host", 4243, now - 300)  # unheard for 10 leases
        _worker_row(journal, run_id, socket.gethostname(), _dead_pid(), now)  # killed here
        assert journal.other_workers(run_id, 30.0) == 1


def _sharing(tmp_path: Path, journal: Journal, size: int):
    """A run whose one chunk (a file of `size`) is claimed by this process, another process
    working it; the SharedParts of this process."""
    cfg = Config(source=tmp_path, dest=Destination("b", "p"), journal_path=tmp_path / "j.sqlite")
    run_id = journal.start_run(str(tmp_path), "s3://b/p", None, False)
    journal.add_plan_items(run_id, [{"key": "big.bin", "action": "upload", "reason": "new",
                                     "size": size, "sha256": "ab" * 32, "etag": None}])
    journal.make_chunks(run_id, 100, 1 << 40)
    me = journal.register_worker(run_id)
    assert journal.claim_chunk(run_id, me, 30.0) is not None
    _worker_row(journal, run_id, "elsewhere", 4242, journal.clock())
    pool = ThreadPoolExecutor(1)
    driver = MultipartDriver(cfg, journal, run_id, None, pool, threading.Event())
    shared = SharedParts(driver, cfg.part_unit)
    shared.bind(me, 30.0)
    return run_id, shared, pool


def test_an_idle_worker_stays_for_a_file_it_was_counted_for(tmp_path, pg_url):
    """The owner of a 25 MiB file (under --part-unit's 128 MiB) shares it in two units as
    another process works the run; that process, with nothing else to do, must not leave
    while the owner pre-hashes it (work_may_come asked for files over --part-unit only)."""
    from journalsync.journal.location import PgLocation

    with Journal(PgLocation(pg_url, f"t_{uuid.uuid4().hex[:12]}")) as journal:
        run_id, shared, pool = _sharing(tmp_path, journal, 25 * MiB)
        with pool:
            big = tmp_path / "big.bin"
            with open(big, "wb") as fh:
                fh.truncate(25 * MiB)
            st = os.stat(big)  # hashed by the scan, as it is now: no pre-hash needed alone
            item = PlanItem(1, "big.bin", Action.UPLOAD, "new", st.st_size, "ab" * 32,
                            "big.bin", st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
            assert shared.unit_for(item, st) == 16 * MiB  # shared: the other one counted
            assert shared.work_may_come(run_id)


def test_a_file_of_two_parts_keeps_no_idle_worker(tmp_path, pg_url):
    """A file unit_for never shares (two parts or fewer) is no reason to stay."""
    from journalsync.journal.location import PgLocation

    with Journal(PgLocation(pg_url, f"t_{uuid.uuid4().hex[:12]}")) as journal:
        run_id, shared, pool = _sharing(tmp_path, journal, 16 * MiB)
        with pool:
            assert not shared.work_may_come(run_id)


def test_two_owners_with_different_unit_sizes_leave_one_set_of_units(pg_url):
    """Two owners of one upload (a chunk taken over while its first owner was still making
    units) counted different numbers of processes, so chose different unit sizes: B commits
    units of three parts while A, which looked first, inserts units of two. The unique
    (upload_id, first_part) kept only A's units that start where B's do: parts 3 and 5
    were in two units each, sent twice (and with ETags that differ per upload, SSE-KMS,
    the journal could keep the ETag of the copy the store does not hold)."""
    a_groups = [(1, 2, [101, 102]), (3, 4, [103, 104]), (5, 5, [105])]
    b_groups = [(1, 3, [101, 102, 103]), (4, 5, [104, 105])]
    a_made, b_made, rows = make_units_interleaved(pg_url, a_groups, b_groups)
    assert b_made == [2]
    parts = [n for lo, hi in rows for n in range(lo, hi + 1)]
    assert sorted(parts) == [1, 2, 3, 4, 5], rows  # each part in one unit
    assert rows == [(1, 3), (4, 5)] and a_made == 2
