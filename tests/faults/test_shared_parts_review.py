"""Hostile review of shared part units (issue 15, sharedparts.py) with real processes,
PostgreSQL, moto behind the recording proxy, SIGKILL and SIGSTOP/SIGCONT: units outliving
the run that made them, an upload aborted while its owner waits, a sender paused past its
lease, the file rewritten while its units are sent, the owner killed at its Complete."""

from __future__ import annotations

import json
import random
import signal
import threading
import time
import uuid
from collections import Counter

import pytest

from journalsync.config import MiB
from tests.faults.test_shared_parts import (
    ARGS,
    _bucket_equals,
    _finish,
    _kill_all,
    _object_is,
    _part_puts as _puts,
    _rows,
    _wait,
)
from tests.support.proxy import Fault, RecordingProxy

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("s3", ["moto"], indirect=True)]
# One journal variant per test: PostgreSQL (shared parts exist only there; jobs named per
# test), or SQLite for the test that none are made there.
ON_PG = pytest.mark.parametrize("journal_kind", ["postgresql"], indirect=True)
ON_SQLITE = pytest.mark.parametrize("journal_kind", ["sqlite"], indirect=True)

BIG = "big.bin"


def _slow_parts(req):
    return Fault(status=0, delay=0.5) if req.operation == "UploadPart" else None


def _run(sync, url: str, job: str, *extra: str):
    return sync.start("run", str(sync.src), sync.dest, "--journal", url, "--job", job,
                      "--workers", "2", "--large-files", "prehash", *ARGS, *extra)


@ON_PG
@pytest.mark.parametrize("again", ["fresh", "resume"])
def test_a_new_run_continues_the_units_a_killed_run_left(sync, s3, pg_url, again):
    """The run sharing a file is SIGKILLed with units pending (some claimed by it, now
    dead); the next run continues the journaled upload: a fresh one (a new run id: the
    units were the dead run's, and it must still claim them, not wait for them for ever),
    or --resume (the same run: the dead process's units are released at once)."""
    job = f"shared_new_run_{again}_{uuid.uuid4().hex[:8]}"
    data = random.Random(31).randbytes(6 * 5 * MiB - 77)
    sync.write(BIG, data)
    procs: list = []
    with RecordingProxy(s3.port, hook=_slow_parts) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        try:
            first = _run(sync, pg_url, job)
            procs.append(first)
            _wait("a part sent as a unit", lambda: _rows(
                pg_url, job, "SELECT 1 FROM multipart_parts p JOIN part_units u"
                " ON u.upload_id = p.upload_id LIMIT 1"), procs)
            first.send_signal(signal.SIGKILL)
            first.wait()
            left = _rows(pg_url, job, "SELECT count(*) FROM part_units WHERE state != 'done'")
            assert left[0][0] > 0, "every unit was done before the kill"
            second = _run(sync, pg_url, job, *(("--resume",) if again == "resume" else ()))
            procs.append(second)
            code, out, err = _finish(second, timeout=60)
        finally:
            _kill_all(procs)
    assert code == 0, (code, out, err[-3000:])
    _object_is(sync, BIG, data)
    assert proxy.operations()["CreateMultipartUpload"] == 1
    assert proxy.operations()["CompleteMultipartUpload"] == 1


@ON_PG
def test_an_upload_aborted_while_its_owner_waits_for_units_ends_the_run(sync, s3, pg_url):
    """`cleanup --abort` aborts a shared upload while its owner waits for the units another
    process holds (that process paused: SIGSTOP). Its units can never be claimed again (the
    upload is not active): the owner must fail the file, not wait for them for ever."""
    from tests.faults.test_shared_parts import _hook, _tree

    job = f"shared_abort_wait_{uuid.uuid4().hex[:8]}"
    _tree(sync, parts=9, seed=23)
    procs: list = []
    lease = ("--lease", "20s")
    aborted = threading.Event()
    # Every part waits here until the non-owner is paused: the units claimed meanwhile stay
    # claimed, so the window the test needs (a unit held by the non-owner) is held open by
    # the test, not caught by polling (under load a worker could claim, send and finish its
    # units between two polls).
    gate = threading.Event()
    base = _hook(pg_url, job, 2, 1.0)

    def hook(req):
        # moto answers a part of an aborted upload 500 (a KeyError), retried for minutes;
        # S3 answers 404 NoSuchUpload: answer as S3 does.
        if aborted.is_set() and req.operation == "UploadPart":
            return Fault(status=404, code="NoSuchUpload")
        if req.operation == "UploadPart":
            gate.wait(60)
        return base(req)

    with RecordingProxy(s3.port, hook=hook) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        try:
            run = sync.start("run", str(sync.src), sync.dest, "--journal", pg_url, "--job", job,
                             "--chunk-files", "2", "--chunk-bytes", "5MiB", "--workers", "2",
                             *ARGS, *lease)
            procs.append(run)
            _wait("chunks", lambda: _rows(pg_url, job, "SELECT 1 FROM chunks LIMIT 1"), procs)
            settings = sync.tmp / "transfer.toml"
            settings.write_text('multipart_threshold = "5MiB"\npart_size = "5MiB"\n'
                                'part_unit = "10MiB"\n')
            worker = sync.start("worker", "--journal", pg_url, "--job", job, "--workers", "2",
                                "--config", str(settings), *lease)
            procs.append(worker)
            by_pid = {run.pid: run, worker.pid: worker}
            owner_sql = ("SELECT w.pid FROM chunks c JOIN workers w ON w.id = c.owner"
                         " JOIN plan_items p ON p.chunk_id = c.id WHERE p.key = %s"
                         " AND c.state = 'claimed'")
            holders_sql = ("SELECT DISTINCT w.pid FROM part_units u JOIN workers w"
                           " ON w.id = u.owner WHERE u.state = 'claimed'")
            pending_sql = "SELECT count(*) FROM part_units WHERE state = 'pending'"

            def other_holding_units():
                owner = _rows(pg_url, job, owner_sql, "z/big.bin")
                holders = {pid for (pid,) in _rows(pg_url, job, holders_sql)}
                return next((by_pid[pid] for pid in holders
                             if owner and pid != owner[0][0] and pid in by_pid), None)

            # Pause the non-owner once it holds a unit (parts are held at the gate until
            # then); the owner then sends every other unit and waits for that one.
            found: list = []
            _wait("a non-owner holding a unit",
                  lambda: found.append(other_holding_units()) or found[-1], procs)
            paused = found[-1]
            paused.send_signal(signal.SIGSTOP)
            gate.set()

            def owner_waits():
                owner = _rows(pg_url, job, owner_sql, "z/big.bin")
                holders = {pid for (pid,) in _rows(pg_url, job, holders_sql)}
                return bool(owner) and _rows(pg_url, job, pending_sql) == [(0,)] and \
                    holders == {paused.pid}

            _wait("the owner waiting for the paused one's units", owner_waits,
                  [p for p in procs if p is not paused])
            try:
                aborted.set()
                got = sync.cli("cleanup", sync.dest, "--journal", pg_url, "--job", job,
                               "--older-than", "0", "--abort")
                assert got.code == 0, got
                assert _rows(pg_url, job, "SELECT state FROM multipart_uploads") == \
                    [("aborted",)]
            finally:
                paused.send_signal(signal.SIGCONT)
            results = [_finish(p, timeout=60) for p in procs]
        finally:
            _kill_all(procs)
    # Both end (the file failed: exit 1 or 3 by errors.py; never a hang, never a crash).
    for code, out, err in results:
        assert code not in (-1, 70), [(c, o[-500:], e[-2500:]) for c, o, e in results]
    assert proxy.operations()["CompleteMultipartUpload"] == 0


@ON_PG
def test_a_sender_paused_past_its_lease_writes_late_and_is_not_counted(sync, s3, pg_url):
    """A worker sending a unit of the run's large file is paused (SIGSTOP: a partition that
    comes back) past its lease while its part is on the wire; another process takes the unit
    over and sends that part again; then the paused one resumes (SIGCONT) and its late
    UploadPart lands on the store after the new holder's (Complete is held until it has).
    Its journal write is refused (sent_by stays the new holder), the Complete lists what the
    store holds (ListParts), the object is the file, and no byte is counted twice."""
    from tests.faults.test_shared_parts import PartWatch, _hook, _start, _tree

    job = f"shared_paused_sender_{uuid.uuid4().hex[:8]}"
    files = _tree(sync, parts=9, seed=24)
    procs: list = []
    resumed = threading.Event()
    state: dict = {"parts": set()}

    def late_part_landed():
        """A part of the paused sender's whose first request (the paused sender's) was
        answered after another request for it (the new holder's): a late write."""
        for n in state["parts"]:
            got = sorted((a.request.at, a.at) for a in list(proxy.answers)
                         if a.request.operation == "UploadPart" and a.status == 200
                         and int(a.request.query["partNumber"][0]) == n)
            if len(got) >= 2 and got[0][1] > min(at for _, at in got[1:]):
                return True
        return False

    base = _hook(pg_url, job, 3, 1.5)

    def hook(req):
        if req.operation != "CompleteMultipartUpload":
            return base(req)
        if req.operation == "CompleteMultipartUpload":
            deadline = time.monotonic() + 60
            while not (resumed.is_set() and late_part_landed()) and time.monotonic() < deadline:
                time.sleep(0.05)
        return None

    with RecordingProxy(s3.port, hook=hook) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        try:
            with PartWatch(pg_url, job) as watch:
                run, workers = _start(sync, pg_url, job, procs)
                owner_sql = ("SELECT w.pid FROM chunks c JOIN workers w ON w.id = c.owner"
                             " JOIN plan_items p ON p.chunk_id = c.id WHERE p.key = %s")
                units_sql = ("SELECT u.id, u.first_part, u.last_part, u.epoch, w.id"
                             " FROM part_units u JOIN workers w ON w.id = u.owner"
                             " WHERE w.pid = %s AND u.state = 'claimed'")

                def sender_with_part_in_flight():
                    owners = {pid for (pid,) in _rows(pg_url, job, owner_sql, "z/big.bin")}
                    journaled = {n for (n,) in _rows(pg_url, job,
                                                     "SELECT part_number FROM multipart_parts")}
                    for p in procs:
                        if p.pid in owners:
                            continue
                        for unit, lo, hi, epoch, wid in _rows(pg_url, job, units_sql, p.pid):
                            flying = set(range(lo, hi + 1)) - journaled
                            if flying and any(n in flying for n in _puts(proxy)):
                                return p, unit, epoch, wid, flying
                    return None

                _wait("a sender with a part on the wire", sender_with_part_in_flight, procs)
                victim, unit, epoch, victim_id, flying = sender_with_part_in_flight()
                victim.send_signal(signal.SIGSTOP)
                state["parts"] = flying
                try:
                    others = [p for p in procs if p is not victim]
                    _wait("its unit taken over and done", lambda: _rows(
                        pg_url, job, "SELECT epoch > %s AND state = 'done' FROM part_units"
                        " WHERE id = %s", epoch, unit) == [(True,)], others)
                finally:
                    victim.send_signal(signal.SIGCONT)
                    resumed.set()
                results = [_finish(p) for p in procs]
        finally:
            _kill_all(procs)
    for code, out, err in results:
        assert code == 0, [(c, o[-500:], e[-2500:]) for c, o, e in results]
    _bucket_equals(sync, files)
    assert late_part_landed(), (_puts(proxy), flying)  # the late write did land, late
    assert all(watch.seen[n] != victim_id for n in flying), (watch.seen, victim_id)
    assert proxy.operations()["CompleteMultipartUpload"] == 1
    status = json.loads(sync.cli("status", "--journal", pg_url, "--job", job, "--json").out)
    assert sum(w["bytes_done"] for w in status["workers"]) == sum(map(len, files.values()))


@ON_PG
def test_the_file_rewritten_while_others_send_its_units_is_never_completed_mixed(sync, s3,
                                                                               pg_url):
    """The large file is rewritten in place (same size, new bytes in its later parts, mtime
    changed) while the run and two workers send its units: the upload is aborted or its
    object is all of one version, never a mix; the next run stores the new bytes."""
    import hashlib
    import os

    from journalsync.objectmeta import metadata_sha256
    from tests.faults.test_shared_parts import _hook, _start, _tree

    job = f"shared_rewritten_{uuid.uuid4().hex[:8]}"
    files = _tree(sync, parts=9, seed=25)
    old = files["z/big.bin"]
    new = old[:20 * MiB] + random.Random(26).randbytes(len(old) - 20 * MiB)
    procs: list = []
    with RecordingProxy(s3.port, hook=_hook(pg_url, job, 3, 0.6)) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        try:
            _start(sync, pg_url, job, procs)
            _wait("parts sent as units", lambda: _rows(
                pg_url, job, "SELECT count(*) >= 2 FROM multipart_parts") == [(True,)], procs)
            path = sync.src / "z/big.bin"
            with open(path, "r+b") as fh:  # in place: the same inode, size kept
                fh.seek(20 * MiB)
                fh.write(new[20 * MiB:])
            os.utime(path, ns=(time.time_ns(), time.time_ns()))
            results = [_finish(p) for p in procs]
        finally:
            _kill_all(procs)
        for code, out, err in results:
            assert code in (0, 1, 3), [(c, o[-500:], e[-2500:]) for c, o, e in results]
        client = sync.s3.client()
        key = sync.object_key("z/big.bin")
        try:
            got = client.get_object(Bucket=sync.bucket, Key=key)
        except client.exceptions.NoSuchKey:
            got = None
        if got is not None:
            body = got["Body"].read()
            assert body in (old, new), "an object of mixed bytes was completed"
            assert metadata_sha256(got["Metadata"]) == hashlib.sha256(body).hexdigest()
        again = sync.cli("run", str(sync.src), sync.dest, "--journal", pg_url, "--job", job,
                         "--workers", "2", *ARGS)
        assert again.code == 0, again
    _object_is(sync, "z/big.bin", new)


@ON_PG
@pytest.mark.parametrize("again", ["fresh", "resume"])
def test_the_owner_killed_at_complete_is_completed_by_the_next_run(sync, s3, pg_url, again):
    """Every unit done, the owner SIGKILLed as its Complete reaches the server (held there,
    never forwarded): the next run (a new one, or --resume) completes the journaled upload
    without sending a part again."""
    job = f"shared_kill_complete_{again}_{uuid.uuid4().hex[:8]}"
    data = random.Random(32).randbytes(6 * 5 * MiB - 11)
    sync.write(BIG, data)
    reached = threading.Event()

    def hook(req):
        if req.operation == "CompleteMultipartUpload" and not reached.is_set():
            reached.set()
            return Fault(status=0, delay=120)  # until the kill
        return None

    procs: list = []
    with RecordingProxy(s3.port, hook=hook) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        try:
            first = _run(sync, pg_url, job)
            procs.append(first)
            _wait("the Complete", reached.is_set, procs)
            assert _rows(pg_url, job, "SELECT DISTINCT state FROM part_units") == [("done",)]
            first.send_signal(signal.SIGKILL)
            first.wait()
            sent = Counter(proxy.operations())["UploadPart"]
            second = _run(sync, pg_url, job, *(("--resume",) if again == "resume" else ()))
            procs.append(second)
            code, out, err = _finish(second, timeout=60)
        finally:
            _kill_all(procs)
    assert code == 0, (code, out, err[-3000:])
    _object_is(sync, BIG, data)
    assert proxy.operations()["UploadPart"] == sent == 6
    assert proxy.operations()["CreateMultipartUpload"] == 1


@ON_PG
def test_a_worker_whose_copy_of_the_file_differs_refuses_its_units(sync, s3, pg_url):
    """A worker sees the run's source elsewhere (`--source`, another host's mount) where
    the large file is another file of the same size and mtime: it sends none of its parts
    (refused: not the file the upload was created for); the run sends them all."""
    import os

    from tests.faults.test_shared_parts import PartWatch

    job = f"shared_other_copy_{uuid.uuid4().hex[:8]}"
    data = random.Random(27).randbytes(8 * 5 * MiB - 5)
    sync.write(BIG, data)
    there = sync.tmp / "elsewhere"
    there.mkdir()
    other = there / BIG
    other.write_bytes(random.Random(28).randbytes(len(data)))
    st = (sync.src / BIG).stat()
    os.utime(other, ns=(st.st_atime_ns, st.st_mtime_ns))
    procs: list = []
    joined = threading.Event()

    def slower(req):
        """Each of the run's parts waits until the worker has joined the run (a fixed delay
        was outlasted by the worker's start on a loaded machine), then 2 s more, so the
        worker finds units left to claim."""
        if req.operation != "UploadPart":
            return None
        deadline = time.monotonic() + 60
        while not joined.is_set() and time.monotonic() < deadline:
            if _rows(pg_url, job, "SELECT count(*) FROM workers") == [(2,)]:
                joined.set()
            time.sleep(0.05)
        return Fault(status=0, delay=2.0)

    with RecordingProxy(s3.port, hook=slower) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        try:
            with PartWatch(pg_url, job) as watch:
                run = _run(sync, pg_url, job)
                procs.append(run)
                _wait("units", lambda: _rows(pg_url, job, "SELECT 1 FROM part_units LIMIT 1"),
                      procs)
                settings = sync.tmp / "transfer.toml"
                settings.write_text('multipart_threshold = "5MiB"\npart_size = "5MiB"\n'
                                    'part_unit = "10MiB"\n')
                worker = sync.start("worker", "--journal", pg_url, "--job", job, "--workers",
                                    "2", "--config", str(settings), "--lease", "3s",
                                    "--source", str(there))
                procs.append(worker)
                results = [_finish(p) for p in procs]
        finally:
            _kill_all(procs)
    for code, out, err in results:
        assert code == 0, [(c, o[-500:], e[-2500:]) for c, o, e in results]
    _object_is(sync, BIG, data)
    ids = dict(_rows(pg_url, job, "SELECT pid, id FROM workers"))
    assert worker.pid in ids, "the worker never joined the run"
    assert sorted(watch.seen) == list(range(1, 9))
    assert set(watch.seen.values()) == {ids[run.pid]}, (watch.seen, ids)
    assert proxy.operations()["CreateMultipartUpload"] == 1
    assert "is not the file its upload was created for" in results[1][2], results[1][2]


@ON_SQLITE
def test_sqlite_never_makes_units(sync, s3):
    """On SQLite (no other process can help) a large file goes as before: no part unit,
    no part with a sender, the object whole."""
    data = random.Random(33).randbytes(4 * 5 * MiB + 9)
    sync.write(BIG, data)
    got = sync.run("--workers", "2", "--large-files", "prehash", *ARGS)
    assert got.code == 0, got
    _object_is(sync, BIG, data)
    assert sync.journal_rows("SELECT count(*) FROM part_units") == [(0,)]
    assert sync.journal_rows("SELECT count(*) FROM multipart_parts WHERE sent_by IS NOT NULL"
                             ) == [(0,)]
    assert sync.journal_rows("SELECT count(*) FROM multipart_uploads WHERE state = 'completed'"
                             ) == [(1,)]


@ON_PG
def test_an_owner_paused_past_its_lease_and_resumed_leaves_one_whole_object(sync, s3, pg_url):
    """The worker owning the shared file's upload is paused (SIGSTOP) past its lease: its
    chunk is taken over and the next holder continues the upload; then the first owner
    resumes (SIGCONT) mid-upload. Two processes now think they own it: every process must
    still end, the object must be the file, and the journal must not call it aborted."""
    from tests.faults.test_shared_parts import _hook, _start, _tree

    job = f"shared_paused_owner_{uuid.uuid4().hex[:8]}"
    files = _tree(sync, parts=13, seed=29)
    done: set[str] = set()
    base = _hook(pg_url, job, 3, 0.6)

    def hook(req):
        upload = req.query.get("uploadId", [None])[0]
        if upload in done:  # moto answers 500 (a KeyError) where S3 answers NoSuchUpload
            return Fault(status=404, code="NoSuchUpload")
        if req.operation == "CompleteMultipartUpload":  # gone once the server answered
            return Fault(status=0, rewrite=lambda data: done.add(upload) or data)
        return base(req)

    procs: list = []
    with RecordingProxy(s3.port, hook=hook) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        try:
            run, workers = _start(sync, pg_url, job, procs)
            chunk_sql = ("SELECT c.id, c.epoch, w.pid FROM chunks c JOIN workers w"
                         " ON w.id = c.owner JOIN plan_items p ON p.chunk_id = c.id"
                         " WHERE p.key = 'z/big.bin'")
            _wait("units being sent", lambda: _rows(
                pg_url, job, "SELECT 1 FROM part_units WHERE state = 'claimed'"), procs)
            chunk, epoch, pid = _rows(pg_url, job, chunk_sql)[0]
            if pid == run.pid:
                pytest.skip("the run, not a worker, claimed the large file's chunk")
            owner = next(p for p in workers if p.pid == pid)
            owner.send_signal(signal.SIGSTOP)
            try:
                others = [p for p in procs if p is not owner]
                _wait("its chunk taken over", lambda: _rows(pg_url, job, chunk_sql)[0][1] >
                      epoch, others)
                _wait("a part sent since", lambda: _rows(
                    pg_url, job, "SELECT count(*) FROM multipart_parts")[0][0] >= 8, others)
                # `status` while units are open and their upload has two would-be owners.
                shown = sync.cli("status", "--journal", pg_url, "--job", job, "--json")
                assert shown.code == 0, shown
                assert len(json.loads(shown.out)["workers"]) == 3, shown.out
            finally:
                owner.send_signal(signal.SIGCONT)
            results = [_finish(p, timeout=90) for p in procs]
        finally:
            _kill_all(procs)
    print("\n", proxy.operations(), [(c, e[-1500:]) for c, o, e in results])
    for code, out, err in results:
        assert code == 0, [(c, o[-500:], e[-2500:]) for c, o, e in results]
    _bucket_equals(sync, files)
    assert _rows(pg_url, job, "SELECT state FROM multipart_uploads") in (
        [("completed",)], [])


@ON_PG
def test_the_delete_phase_waits_for_a_shared_uploads_units(sync, s3, pg_url):
    """`run --delete` and a worker sharing the large file's upload (whichever owns it): the
    run deletes only once that upload is complete, and only the extra."""
    from tests.faults.test_shared_parts import _hook, _tree

    job = f"shared_delete_{uuid.uuid4().hex[:8]}"
    files = _tree(sync, parts=9, seed=30)
    extra = sync.object_key("gone.txt")
    sync.s3.client().put_object(Bucket=sync.bucket, Key=extra, Body=b"old")
    procs: list = []
    completed_at: list[float] = []
    base = _hook(pg_url, job, 2, 0.6)

    def hook(req):
        if req.operation == "CompleteMultipartUpload":
            completed_at.append(time.monotonic())
        return base(req)

    with RecordingProxy(s3.port, hook=hook) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        try:
            run = sync.start("run", str(sync.src), sync.dest, "--journal", pg_url, "--job", job,
                             "--chunk-files", "2", "--chunk-bytes", "5MiB", "--workers", "1",
                             "--delete", "--force", *ARGS)
            procs.append(run)
            _wait("chunks", lambda: _rows(pg_url, job, "SELECT 1 FROM chunks LIMIT 1"), procs)
            settings = sync.tmp / "transfer.toml"
            settings.write_text('multipart_threshold = "5MiB"\npart_size = "5MiB"\n'
                                'part_unit = "10MiB"\n')
            procs.append(sync.start("worker", "--journal", pg_url, "--job", job, "--workers",
                                    "2", "--config", str(settings), "--lease", "3s"))
            results = [_finish(p) for p in procs]
        finally:
            _kill_all(procs)
    for code, out, err in results:
        assert code == 0, [(c, o[-500:], e[-2500:]) for c, o, e in results]
    _bucket_equals(sync, files)  # the extra is gone, every file whole
    deletes = [r.at for r in proxy.requests if r.operation in ("DeleteObjects", "DELETE")
               or (r.method == "DELETE" and "uploadId" not in r.query)]
    assert deletes and completed_at and min(deletes) > max(completed_at), (deletes,
                                                                            completed_at)


@ON_PG
def test_the_owner_killed_before_making_units_is_continued(sync, s3, pg_url):
    """The owner SIGKILLed after its upload is created and journaled but before its units
    are (held there by a lock on part_units the test takes, seen waiting in
    pg_stat_activity): the next run continues that upload, units made then."""
    import psycopg

    job = f"shared_kill_before_units_{uuid.uuid4().hex[:8]}"
    data = random.Random(34).randbytes(6 * 5 * MiB - 3)
    sync.write(BIG, data)
    procs: list = []
    locked = threading.Event()

    def hook(req):  # the upload is created only once the test holds part_units
        if req.operation == "CreateMultipartUpload":
            locked.wait(60)
        return _slow_parts(req)

    with RecordingProxy(s3.port, hook=hook) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        try:
            # One transfer slot, the owner's: with a slot free the run would claim units
            # too, and a claim waiting on the lock holds the process's journal connection,
            # so the owner could not journal its upload first.
            first = _run(sync, pg_url, job, "--workers", "1")
            procs.append(first)
            _wait("the chunk claimed", lambda: _rows(
                pg_url, job, "SELECT 1 FROM chunks WHERE state = 'claimed'"), procs)
            with psycopg.connect(pg_url, options=f"-c search_path={job}") as lock:
                lock.execute("LOCK TABLE part_units IN ACCESS EXCLUSIVE MODE")
                locked.set()
                # Its upload journaled, and a statement on part_units waiting (another of
                # its threads may wait there first, e.g. renewing units: both are asked).
                _wait("the owner blocked making units", lambda: _rows(
                    pg_url, job, "SELECT state FROM multipart_uploads") == [("active",)]
                    and _rows(
                    pg_url, job, "SELECT 1 FROM pg_stat_activity WHERE pid != %s AND"
                    " wait_event_type = 'Lock' AND query ILIKE '%%part_units%%'"
                    " AND datname = current_database()", lock.info.backend_pid), procs)
                first.send_signal(signal.SIGKILL)
                first.wait()
                lock.rollback()
            assert _rows(pg_url, job, "SELECT count(*) FROM part_units") == [(0,)]
            second = _run(sync, pg_url, job)
            procs.append(second)
            code, out, err = _finish(second, timeout=60)
        finally:
            _kill_all(procs)
    assert code == 0, (code, out, err[-3000:])
    _object_is(sync, BIG, data)
    assert proxy.operations()["CreateMultipartUpload"] == 1
    assert proxy.operations()["UploadPart"] == 6
