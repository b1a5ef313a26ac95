"""One large file sent by several processes together (issue 15, sharedparts.py): `run` and
two `journalsync worker` processes on one PostgreSQL journal, through the recording proxy
in front of moto (every UploadPart counted on the wire). Which process sent each part is
read from the journal (multipart_parts.sent_by); the object is checked for size, sha256
metadata and bytes. Then a worker holding units of parts is SIGKILLed: the run completes
and only the parts that worker had in flight are sent again."""

from __future__ import annotations

import hashlib
import json
import random
import signal
import sys
import threading
import time
import uuid
from collections import Counter

import pytest

from journalsync.config import MiB
from journalsync.objectmeta import metadata_sha256
from tests.support.hung import stacks_of_hung
from tests.support.proxy import Fault, RecordingProxy

# One journal variant (PostgreSQL: shared parts exist only there), jobs named per test.
pytestmark = [pytest.mark.slow, pytest.mark.parametrize("s3", ["moto"], indirect=True),
              pytest.mark.parametrize("journal_kind", ["postgresql"], indirect=True)]

ARGS = ("--multipart-threshold", "5MiB", "--part-size", "5MiB", "--part-unit", "10MiB",
        "--lease", "3s")
BIG = "z/big.bin"  # after the small files in plan order: the run starts on those alone


def _rows(url: str, job: str, sql: str, *params) -> list[tuple]:
    import psycopg

    try:
        with psycopg.connect(url, options=f"-c search_path={job}", autocommit=True) as db:
            return [tuple(r) for r in db.execute(sql, params).fetchall()]
    except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
        return []  # not created or not migrated yet


def _tree(sync, parts: int, seed: int) -> dict[str, bytes]:
    rnd = random.Random(seed)
    files = {f"a/s{i}.txt": rnd.randbytes(1000 + i) for i in range(6)}
    files[BIG] = rnd.randbytes(parts * 5 * MiB - 5 * MiB + 123)  # the last part is short
    for rel, data in files.items():
        sync.write(rel, data)
    return files


def _hook(url: str, job: str, processes: int, part_delay: float):
    """Hold every PutObject until `processes` processes work the run (so each has a share
    whatever the load), and every UploadPart `part_delay` seconds (so units overlap)."""
    all_in = threading.Event()

    def hook(req):
        if req.operation == "UploadPart":
            return Fault(status=0, delay=part_delay)
        if req.operation != "PutObject":
            return None
        deadline = time.monotonic() + 60
        while not all_in.is_set() and time.monotonic() < deadline:
            if _rows(url, job, "SELECT count(*) FROM workers") == [(processes,)]:
                all_in.set()
            time.sleep(0.05)
        return None

    return hook


def _start(sync, url: str, job: str, procs: list, unit: str = "10MiB"):
    args = [a if a != "10MiB" else unit for a in ARGS]
    run = sync.start("run", str(sync.src), sync.dest, "--journal", url, "--job", job,
                     "--chunk-files", "2", "--chunk-bytes", "5MiB", "--workers", "2", *args)
    procs.append(run)
    _wait("chunks", lambda: _rows(url, job, "SELECT 1 FROM chunks LIMIT 1"), procs)
    # A worker takes its transfer settings from a job file: the same as the run's.
    settings = sync.tmp / "transfer.toml"
    settings.write_text('multipart_threshold = "5MiB"\npart_size = "5MiB"\n'
                        f'part_unit = "{unit}"\n')
    workers = [sync.start("worker", "--journal", url, "--job", job, "--workers", "2", "-v",
                          "--config", str(settings), "--lease", "3s") for _ in range(2)]
    procs += workers
    return run, workers


def _wait(what, condition, procs, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        for proc in procs:
            assert proc.poll() is None, (what, proc.args, proc.communicate())
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _finish(proc, timeout: float = 120) -> tuple[int, str, str]:
    """(exit code, out, err); a hung process: -1, with its threads' stacks written below
    the failure (the others' logs say why)."""
    got = stacks_of_hung(proc, timeout)
    if got is None:
        out, err = proc.hung_output
        sys.stderr.write(f"--- pid {proc.pid} did not end within {timeout:.0f} s; its "
                         f"stderr's end, its threads' stacks included:\n{err[-12000:]}\n")
        return -1, out, err
    return proc.returncode, *got


def _kill_all(procs) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def _object_is(sync, rel: str, data: bytes) -> None:
    got = sync.s3.client().get_object(Bucket=sync.bucket, Key=sync.object_key(rel))
    assert got["ContentLength"] == len(data)
    assert metadata_sha256(got["Metadata"]) == hashlib.sha256(data).hexdigest()
    assert got["Body"].read() == data


def _bucket_equals(sync, files: dict[str, bytes]) -> None:
    listed = sync.s3.client().list_objects_v2(Bucket=sync.bucket, Prefix=sync.prefix + "/")
    assert sorted(o["Key"] for o in listed.get("Contents", [])) == sorted(
        sync.object_key(rel) for rel in files)
    for rel, data in files.items():
        _object_is(sync, rel, data)


class PartWatch(threading.Thread):
    """Reads multipart_parts (part number -> sent_by) every 50 ms while the processes run:
    the run prunes the parts of completed uploads at its end."""

    def __init__(self, url: str, job: str):
        super().__init__(daemon=True)
        self.url, self.job, self.seen = url, job, {}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.05):
            self.seen.update(_rows(self.url, self.job,
                                   "SELECT part_number, sent_by FROM multipart_parts"))

    def __enter__(self) -> PartWatch:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.join()


def _part_puts(proxy) -> Counter:
    return Counter(int(r.query["partNumber"][0]) for r in proxy.requests
                   if r.operation == "UploadPart")


def _run_three(sync, s3, pg_url: str, job: str, files: dict[str, bytes],
               unit: str = "10MiB") -> RecordingProxy:
    """A run and two workers through the recording proxy, all exiting 0, the bucket equal
    to `files`; returns the proxy (its requests)."""
    procs: list = []
    with RecordingProxy(s3.port, hook=_hook(pg_url, job, 3, 0.3)) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        try:
            _start(sync, pg_url, job, procs, unit=unit)
            results = [_finish(p) for p in procs]
        finally:
            _kill_all(procs)
    for code, out, err in results:
        assert code == 0, results
    _bucket_equals(sync, files)
    return proxy


def test_two_workers_and_the_run_send_one_files_parts_together(sync, s3, pg_url):
    job = f"shared_parts_{uuid.uuid4().hex[:8]}"
    files = _tree(sync, parts=9, seed=21)
    with PartWatch(pg_url, job) as watch:
        proxy = _run_three(sync, s3, pg_url, job, files)

    ops = proxy.operations()
    assert ops["CreateMultipartUpload"] == 1 and ops["CompleteMultipartUpload"] == 1, ops
    assert _part_puts(proxy) == Counter({n: 1 for n in range(1, 10)})  # none sent twice
    # Who sent each part, as journaled (sent_by: workers.id) while the upload was active.
    senders = Counter(watch.seen.values())
    assert sorted(watch.seen) == list(range(1, 10)) and None not in senders, watch.seen
    assert len(senders) >= 2, senders
    pids = dict(_rows(pg_url, job, "SELECT id, pid FROM workers"))
    print(f"\nparts sent per process: { {pids[w]: n for w, n in senders.items()} }")
    units = _rows(pg_url, job, "SELECT state, owner FROM part_units")
    assert len(units) == 5 and {state for state, _ in units} == {"done"}, units
    assert len({owner for _, owner in units}) >= 2, units
    # Each process's tally counts the bytes it sent, a shared file's parts included once.
    status = json.loads(sync.cli("status", "--journal", pg_url, "--job", job, "--json").out)
    assert sum(w["bytes_done"] for w in status["workers"]) == sum(map(len, files.values()))


def test_a_file_smaller_than_a_part_unit_is_shared_while_others_work(sync, s3, pg_url):
    """--part-unit (default 128 MiB) is the most a unit holds; while others work the run, a
    file is cut into about one unit per process, so at the end of a run the idle hosts help
    with the last large file instead of one host sending it alone (unit_bytes_among)."""
    job = f"shared_small_{uuid.uuid4().hex[:8]}"
    files = _tree(sync, parts=6, seed=23)  # 25 MiB + 123 bytes: 6 parts of 5 MiB
    proxy = _run_three(sync, s3, pg_url, job, files, unit="128MiB")
    assert _part_puts(proxy) == Counter({n: 1 for n in range(1, 7)})
    # With both workers still working as it starts: a third of 25 MiB in whole parts, units
    # of 10 MiB (two parts), three units; with one (the other done and gone on a loaded
    # machine), half: 15 MiB, two units. Never one unit of 128 MiB.
    units = _rows(pg_url, job, "SELECT first_part, last_part, state FROM part_units ORDER BY 1")
    assert units in ([(1, 2, "done"), (3, 4, "done"), (5, 6, "done")],
                     [(1, 3, "done"), (4, 6, "done")]), units


@pytest.mark.parametrize("victim_is", ["sender", "owner"])
def test_a_killed_worker_holding_part_units_costs_only_its_parts_in_flight(sync, s3, pg_url,
                                                                          victim_is):
    """A worker that sends units of another process's file (`sender`), or the worker that
    owns the file's upload (`owner`: its chunk is taken over, the next holder continues the
    journaled UploadId, checks ListParts against the journal, and completes)."""
    job = f"shared_kill_{victim_is}_{uuid.uuid4().hex[:8]}"
    files = _tree(sync, parts=13, seed=22)
    procs: list = []
    with RecordingProxy(s3.port, hook=_hook(pg_url, job, 3, 0.6)) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        try:
            run, workers = _start(sync, pg_url, job, procs)
            owner_sql = ("SELECT w.pid FROM chunks c JOIN workers w ON w.id = c.owner"
                         " JOIN plan_items p ON p.chunk_id = c.id WHERE p.key = %s")
            units_sql = ("SELECT u.id, u.first_part, u.last_part FROM part_units u"
                         " JOIN workers w ON w.id = u.owner"
                         " WHERE w.pid = %s AND u.state = 'claimed'")

            def victim_holds_units():
                owners = {pid for (pid,) in _rows(pg_url, job, owner_sql, BIG)}
                if victim_is == "owner" and run.pid in owners:
                    return [run]  # not to be killed: the test cannot go on
                return [p for p in workers if (p.pid in owners) == (victim_is == "owner")
                        and _rows(pg_url, job, units_sql, p.pid)]

            _wait(f"a worker holding units, the file's {victim_is}", victim_holds_units, procs)
            victim = victim_holds_units()[0]
            if victim is run:
                pytest.skip("the run, not a worker, claimed the large file's chunk")
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            held = _rows(pg_url, job, units_sql, victim.pid)
            assert held, "the victim held no unit when killed"
            journaled = {n for (n,) in _rows(pg_url, job,
                                             "SELECT part_number FROM multipart_parts")}
            in_flight = {n for _, lo, hi in held for n in range(lo, hi + 1)} - journaled
            results = [_finish(p) for p in procs if p is not victim]
        finally:
            _kill_all(procs)
    for code, out, err in results:
        assert code == 0, (out, err)
    _bucket_equals(sync, files)

    puts = _part_puts(proxy)
    assert set(puts) == set(range(1, 14))
    resent = {n for n, count in puts.items() if count > 1}
    print(f"\nkilled worker held unit(s) {[u for u, *_ in held]}: {len(in_flight)} part(s) "
          f"in flight, {len(resent)} sent again: {sorted(resent)}")
    assert resent <= in_flight, (resent, in_flight)
    assert all(count <= 2 for count in puts.values()), puts
    assert proxy.operations()["CreateMultipartUpload"] == 1
    assert _rows(pg_url, job, "SELECT count(*) FROM part_units WHERE state != 'done'") == [(0,)]
    # The victim's units were claimed again (epoch 2) when it had parts left to send.
    epochs = dict(_rows(pg_url, job, "SELECT id, epoch FROM part_units WHERE id = ANY(%s)",
                        [u for u, *_ in held]))
    assert all(epochs[u] >= 2 for u, lo, hi in held
               if set(range(lo, hi + 1)) & in_flight), epochs
