"""`status` and `status --all` show a shared upload's part units in flight (issue 15): per
upload, units done of total, the processes holding its units (host, pid, and how many of
their leases expired) and the bytes journaled, on a real PostgreSQL journal read by the
CLI as a subprocess.

The journal's rows are written through the journal's own API (journal/partunits.py), as
the processes of a run write them: this process and a second, real one (a child that
registers as a worker of the run and claims a unit, then exits) hold units. No store is
reached: status reads the journal only."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid

from journalsync.journal import Journal, UploadRecord
from journalsync.journal.location import PgLocation

PART = 5  # bytes: the units' arithmetic is all that matters here
CLAIM_ONE = """
import sys
from journalsync.journal import Journal
from journalsync.journal.location import PgLocation

with Journal(PgLocation(sys.argv[1], sys.argv[2])) as journal:
    worker = journal.register_worker(int(sys.argv[3]))
    unit = journal.claim_part_unit(int(sys.argv[3]), worker, 600, upload_id="up-shared")
    assert journal.record_unit_part(unit, unit.first, '"e-child"', 5, worker, 600)
    print(unit.first)
"""


def _upload(journal: Journal, run_id: int, upload_id: str, key: str, parts: int) -> None:
    journal.record_upload(UploadRecord(upload_id, key, run_id, PART, parts * PART, 1, 1, 1,
                                       "ab" * 32, time.time(), "active"), None)


def _in_flight_journal(url: str, job: str) -> tuple[int, int]:
    """A run with a shared upload of 8 parts in 4 units: unit 1 done (parts 1-2), unit 2
    held by another process (part 3 journaled), unit 3 held here under a lease that has
    expired, unit 4 pending; beside it an upload one process sends (no units), and a shared
    upload aborted (not in flight). Returns (this pid, the other process's pid)."""
    with Journal(PgLocation(url, job)) as journal:
        run_id = journal.start_run("/src", "s3://b/p", None, False)
        journal.bind_job("/src", "s3://b/p", None)
        me = journal.register_worker(run_id)
        _upload(journal, run_id, "up-shared", "big.bin", 8)
        _upload(journal, run_id, "up-alone", "alone.bin", 3)
        journal.record_part("up-alone", 1, '"a1"', PART)
        _upload(journal, run_id, "up-gone", "gone.bin", 4)
        groups = [(lo, lo + 1, [lo, lo + 1]) for lo in range(1, 9, 2)]
        assert journal.make_part_units(run_id, "up-shared", groups) == 4
        assert journal.make_part_units(run_id, "up-gone", groups[:2]) == 2
        journal.set_upload_state("up-gone", "aborted")

        first = journal.claim_part_unit(run_id, me, 600, upload_id="up-shared")
        for number in (1, 2):
            assert journal.record_unit_part(first, number, f'"e{number}"', PART, me, 600)
        assert journal.close_unit(first, 600)
        child = subprocess.run([sys.executable, "-c", CLAIM_ONE, url, job, str(run_id)],
                               capture_output=True, text=True, timeout=60)
        assert child.returncode == 0 and child.stdout.split() == ["3"], child
        other = [w["pid"] for w in journal.run_workers_rows(run_id) if w["pid"] != os.getpid()]
        assert len(other) == 1
        # A lease of 2 s (a unit write's transaction may idle for at most its lease), then
        # past it: the unit is still this process's, but anyone's to take.
        third = journal.claim_part_unit(run_id, me, 2.0, upload_id="up-shared")
        assert (third.first, third.last) == (5, 6)
        time.sleep(2.5)
    return os.getpid(), other[0]


def test_status_shows_each_shared_upload_s_units_holders_and_bytes(pg_url, offline_sync):
    job = f"status_units_{uuid.uuid4().hex[:8]}"
    me, other = _in_flight_journal(pg_url, job)
    host = socket.gethostname()
    holders = sorted([{"host": host, "pid": me, "units": 1, "lease_expired": 1},
                      {"host": host, "pid": other, "units": 1, "lease_expired": 0}],
                     key=lambda h: h["pid"])
    shared = {"units_done": 1, "units_total": 4, "bytes_journaled": 3 * PART,
              "holders": holders}

    got = offline_sync.cli("status", "--journal", pg_url, "--job", job, "--json")
    assert got.code == 0, got
    in_flight = {u["upload_id"]: u for u in json.loads(got.out)["in_flight"]}
    assert set(in_flight) == {"up-shared", "up-alone"}
    assert in_flight["up-shared"]["units"] == shared
    assert in_flight["up-shared"]["bytes_done"] == 3 * PART
    assert in_flight["up-alone"]["units"] is None

    text = offline_sync.cli("status", "--journal", pg_url, "--job", job)
    assert text.code == 0, text
    flat = " ".join(text.out.replace("│", " ").split())
    assert "1/4 units done" in flat and f"pid {other} (1 unit)" in flat, text.out
    assert f"pid {me} (1 unit, 1 past its lease)" in flat, text.out

    every = offline_sync.cli("status", "--all", "--journal", pg_url, "--json")
    assert every.code == 0, every
    [view] = [j for j in json.loads(every.out)["jobs"] if j["job"] == job]
    assert view["shared_uploads"] == [{"key": "big.bin", "upload_id": "up-shared",
                                       "size": 8 * PART, **shared}]

    lines = offline_sync.cli("status", "--all", "--journal", pg_url)
    assert lines.code == 0, lines
    first, second = holders
    expected = (f"    shared upload big.bin: {3 * PART} of {8 * PART} bytes journaled, 1/4 units "
                f"done, held by {host} pid {first['pid']} ({_held(first)}), {host} pid "
                f"{second['pid']} ({_held(second)})")
    assert expected in lines.out.splitlines(), lines.out


def _held(holder: dict) -> str:
    return "1 unit" + (", 1 past its lease" if holder["lease_expired"] else "")
