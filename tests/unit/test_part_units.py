"""A shared upload's part units on real journals (journal/partunits.py), SQLite and
PostgreSQL: distinct claims, leases and epoch fencing of each part's record, the close that
needs every part journaled, and units of an upload no longer active that nobody claims.

Two Journal objects on one journal are two connections, as two processes would hold."""

from __future__ import annotations

import time

import pytest

from journalsync.config import GiB, MiB
from journalsync.journal import Journal, UploadRecord
from journalsync.sharedrules import unit_bytes_among
from tests.support.unitrace import make_units_interleaved


def _shared(journal: Journal, upload_id: str = "up-1", parts: int = 6, per: int = 2) -> int:
    run_id = journal.start_run("/src", "s3://b/p", None, False)
    journal.record_upload(UploadRecord(upload_id, "big.bin", run_id, 5, parts * 5, 1, 1, 1,
                                       "ab" * 32, time.time(), "active"), None)
    groups = [(lo, min(parts, lo + per - 1), [100 + n for n in range(lo, min(parts, lo + per - 1) + 1)])
              for lo in range(1, parts + 1, per)]
    assert journal.make_part_units(run_id, upload_id, groups) == len(groups)
    return run_id


def test_units_are_claimed_once_each_with_their_parts_crcs(journal_at):
    with Journal(journal_at) as a, Journal(journal_at) as b:
        run_id = _shared(a)
        # A resumed owner makes them again: the units it has stay.
        assert a.make_part_units(run_id, "up-1", [(1, 6, [0] * 6)]) == 3
        got = [a.claim_part_unit(run_id, 1, 30), b.claim_part_unit(run_id, 2, 30),
               a.claim_part_unit(run_id, 1, 30)]
        assert [(u.first, u.last, u.epoch) for u in got] == [(1, 2, 1), (3, 4, 1), (5, 6, 1)]
        assert got[1].crc(4) == 104 and a.unit_crcs("up-1") == {n: 100 + n for n in range(1, 7)}
        assert b.claim_part_unit(run_id, 2, 30) is None
        assert a.units_left("up-1") == 3


def test_a_stale_holders_part_is_not_recorded_and_the_unit_closes_only_when_whole(journal_at):
    with Journal(journal_at) as a, Journal(journal_at) as b:
        run_id = _shared(a, parts=2)
        # A lease of 2 s: a chunk write's transaction may sit idle for at most its lease
        # (limit_silence), and 0.3 s was less than a loaded machine's pause inside one.
        stale = a.claim_part_unit(run_id, 1, 2.0)
        assert a.record_unit_part(stale, 1, '"e1"', 5, worker_id=1, lease=2.0)
        time.sleep(2.2)
        fresh = b.claim_part_unit(run_id, 2, 30)
        assert (fresh.id, fresh.epoch) == (stale.id, 2)
        # The old holder comes back: its part is refused, nothing of it written.
        assert not a.record_unit_part(stale, 2, '"stale"', 5, worker_id=1, lease=30)
        assert not a.renew_unit_lease(stale.id, stale.epoch, 30)
        assert a.part_rows("up-1") == {1: ('"e1"', 5, 1)}
        # The new holder sends only what is not journaled; the close needs both parts.
        assert not b.close_unit(fresh, 30)
        assert b.record_unit_part(fresh, 2, '"e2"', 5, worker_id=2, lease=30)
        assert not a.close_unit(stale, 30)  # fenced
        assert b.close_unit(fresh, 30)
        assert b.units_left("up-1") == 0
        assert b.part_rows("up-1") == {1: ('"e1"', 5, 1), 2: ('"e2"', 5, 2)}


def test_units_of_an_upload_no_longer_active_are_not_claimed(journal_at):
    with Journal(journal_at) as journal:
        run_id = _shared(journal)
        unit = journal.claim_part_unit(run_id, 1, 30)
        assert journal.release_unit(unit.id, unit.epoch)
        assert journal.part_work_may_come(run_id, 10)
        journal.set_upload_state("up-1", "aborted")
        assert journal.claim_part_unit(run_id, 1, 30) is None
        assert not journal.part_work_may_come(run_id, 10)
        # Nor those of an upload this process was told to skip.
        journal.set_upload_state("up-1", "active")
        assert journal.claim_part_unit(run_id, 1, 30, skip=["up-1"]) is None
        assert journal.claim_part_unit(run_id, 1, 30, upload_id="up-1") is not None


def test_parts_the_store_does_not_hold_are_forgotten_and_their_unit_reopened(journal_at):
    with Journal(journal_at) as journal:
        run_id = _shared(journal, parts=4)
        unit = journal.claim_part_unit(run_id, 1, 30)
        for number in (1, 2):
            assert journal.record_unit_part(unit, number, f'"e{number}"', 5, 1, 30)
        assert journal.close_unit(unit, 30)
        journal.forget_parts("up-1", [2])
        assert set(journal.part_rows("up-1")) == {1}
        again = journal.claim_part_unit(run_id, 2, 30)
        assert (again.id, again.epoch, again.first) == (unit.id, 2, 1)


@pytest.mark.parametrize(("size", "others", "unit"), [
    (64 * MiB, 3, 16 * MiB),        # four processes: a quarter each
    (64 * MiB, 1, 32 * MiB),
    (25 * MiB, 2, 16 * MiB),        # a third is 8.3 MiB: two parts of 8 MiB at least
    (20 * GiB, 3, 128 * MiB),       # never more than --part-unit
    (100 * MiB, 7, 16 * MiB),       # 12.5 MiB rounds up to whole parts: two
])
def test_a_unit_is_about_one_processs_share_of_the_file_in_whole_parts(size, others, unit):
    assert unit_bytes_among(size, 8 * MiB, 128 * MiB, others) == unit


def test_two_owners_making_one_upload_s_units_at_once_make_them_once(pg_url):
    """Two connections interleaved, as two owners of one file's upload (a chunk taken over
    while its first owner was still making units): A has looked for units and found none,
    then B makes them all and commits, then A inserts. The units exist once; A is told how
    many there are. PostgreSQL: SQLite's writers take turns (one write transaction at a
    time), so no second writer can come between a look and an insert there."""
    groups = [(1, 2, [101, 102]), (3, 4, [103, 104]), (5, 5, [105])]
    a_made, b_made, rows = make_units_interleaved(pg_url, groups, groups)
    assert b_made == [3] and a_made == 3
    assert rows == [(1, 2), (3, 4), (5, 5)]
