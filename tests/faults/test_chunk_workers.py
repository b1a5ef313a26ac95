"""`run` and `journalsync worker` processes sharing one journal's chunks, on a real server
behind the recording proxy (every PUT counted on the wire); a worker SIGKILLed while it
holds a chunk. moto only: the claiming is the journal's, not the server's."""

from __future__ import annotations

import json
import random
import signal
import threading
import time
from collections import Counter

import pytest

from journalsync.config import MiB
from tests.support.proxy import Fault, RecordingProxy

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("s3", ["moto"], indirect=True)]


def _slow_puts(delay: float):
    """Hold every PutObject a while, so the run lasts long enough for workers to join."""
    return lambda req: Fault(status=0, delay=delay) if req.operation == "PutObject" else None


def _query(sync, sql: str, *params) -> list[tuple]:
    return sync.journal_rows(sql, *params, if_any=True)


def _wait(what, condition, procs, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        for proc in procs:
            assert proc.poll() is None, (what, proc.communicate())
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _tree(sync, count: int) -> dict[str, bytes]:
    files = {f"d{i % 4}/f{i:03d}.txt": f"file {i} ".encode() * (i + 1) for i in range(count)}
    for rel, data in files.items():
        sync.write(rel, data)
    return files


def _bucket_equals(sync, files: dict[str, bytes]) -> None:
    client = sync.s3.client()
    listed = client.list_objects_v2(Bucket=sync.bucket, Prefix=sync.prefix + "/")
    keys = sorted(o["Key"] for o in listed.get("Contents", []))
    assert keys == sorted(sync.object_key(rel) for rel in files)
    for rel, data in files.items():
        assert client.get_object(Bucket=sync.bucket, Key=sync.object_key(rel))["Body"].read() == data


def _puts(proxy, sync) -> Counter:
    prefix = f"/{sync.bucket}/"
    return Counter(r.path[len(prefix):] for r in proxy.requests if r.operation == "PutObject")


def _finish(proc, timeout: float = 120) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def test_run_and_two_workers_share_the_chunks(sync, s3):
    files = _tree(sync, 32)
    # Every PUT waits until all three processes hold a chunk (workers take seconds to
    # start here), so each has a share of the work whatever the machine's load.
    all_in = threading.Event()

    def hold_until_all_claimed(req):
        if req.operation != "PutObject":
            return None
        deadline = time.monotonic() + 60
        while not all_in.is_set() and time.monotonic() < deadline:
            if _query(sync, "SELECT count(DISTINCT owner) FROM chunks"
                                    " WHERE owner IS NOT NULL") == [(3,)]:
                all_in.set()
            time.sleep(0.05)
        return Fault(status=0, delay=0.1)

    with RecordingProxy(s3.port, hook=hold_until_all_claimed) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        run = sync.start(*sync.run_args("--chunk-files", "4", "--workers", "1"))
        _wait("chunks", lambda: _query(sync, "SELECT 1 FROM chunks"), [run])
        workers = [sync.start("worker", *sync.journal_args(), "--workers", "2")
                   for _ in range(2)]
        results = [_finish(p) for p in [run, *workers]]
    for code, out, err in results:
        assert code == 0, (out, err)
    for _, out, _ in results[1:]:
        assert out.startswith("journalsync: worker run=1 chunks="), out
    assert _puts(proxy, sync) == Counter({sync.object_key(rel): 1 for rel in files})
    _bucket_equals(sync, files)

    status = json.loads(sync.cli("status", *sync.journal_args(), "--json").out)
    assert status["chunks"] == {"pending": 0, "claimed": 0, "done": 8}
    rows = status["workers"]
    assert sorted(w["pid"] for w in rows) == sorted(p.pid for p in [run, *workers])
    assert sum(w["chunks_done"] for w in rows) == 8
    assert sum(w["bytes_done"] for w in rows) == sum(map(len, files.values()))
    assert all(w["chunks_done"] >= 1 and w["state"] == "done" for w in rows), [
        (w["pid"], w["chunks_done"], w["state"]) for w in rows]
    text = sync.cli("status", *sync.journal_args()).out
    assert "workers of the last run" in text and "chunks of the last run: 8 done" in text
    assert all(str(p.pid) in text for p in workers)


def test_a_killed_workers_chunk_is_taken_over_after_its_lease(sync, s3):
    files = _tree(sync, 30)
    with RecordingProxy(s3.port, hook=_slow_puts(0.3)) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        run = sync.start(*sync.run_args("--chunk-files", "5", "--workers", "1", "--lease", "2s"))
        _wait("chunks", lambda: _query(sync, "SELECT 1 FROM chunks"), [run])
        victim = sync.start("worker", *sync.journal_args(), "--workers", "2",
                            "--lease", "2s")
        mine = ("SELECT c.id FROM chunks c JOIN workers w ON w.id = c.owner"
                " WHERE w.pid = ? AND c.state = 'claimed'")
        # Holding a chunk, with some of it sent: then killed mid-chunk.
        _wait("a claim by the worker", lambda: _query(sync, mine, victim.pid),
              [run, victim])
        _wait("a PUT of the worker's", lambda: sum(_puts(proxy, sync).values()) >= 3,
              [run, victim])
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        held = [c for (c,) in _query(sync, mine, victim.pid)]
        assert held, "the worker held no chunk when killed"
        held_keys = {sync.object_key(k) for (k,) in _query(
            sync, f"SELECT key FROM plan_items WHERE chunk_id IN "
            f"({','.join('?' * len(held))})", *held)}
        code, out, err = _finish(run)
    assert code == 0, (out, err)
    _bucket_equals(sync, files)
    puts = _puts(proxy, sync)
    assert set(puts) == {sync.object_key(rel) for rel in files}
    resent = {key for key, n in puts.items() if n > 1}
    assert resent <= held_keys, (resent, held_keys)
    assert all(n <= 2 for n in puts.values())
    assert _query(sync, "SELECT count(*) FROM chunks WHERE state != 'done'") == [(0,)]
    # The taken-over chunks were claimed again: epoch 2.
    assert {e for (e,) in _query(sync, f"SELECT epoch FROM chunks WHERE id IN "
                                 f"({','.join('?' * len(held))})", *held)} == {2}


def test_a_worker_frozen_past_its_lease_comes_back_to_a_rejected_completion(sync, s3):
    """A partition, as a worker sees it: SIGSTOP past its lease (its PUTs in flight still
    reach the server), the run takes the chunk over with the next epoch, then SIGCONT. The
    stale worker's results are refused whole; every chunk is recorded once."""
    files = _tree(sync, 30)
    with RecordingProxy(s3.port, hook=_slow_puts(0.3)) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        run = sync.start(*sync.run_args("--chunk-files", "5", "--workers", "1", "--lease", "2s"))
        _wait("chunks", lambda: _query(sync, "SELECT 1 FROM chunks"), [run])
        stale = sync.start("worker", *sync.journal_args(), "--workers", "2",
                           "--lease", "2s", "-v")
        mine = ("SELECT c.id, c.epoch FROM chunks c JOIN workers w ON w.id = c.owner"
                " WHERE w.pid = ? AND c.state = 'claimed'")
        _wait("a claim by the worker", lambda: _query(sync, mine, stale.pid),
              [run, stale])
        stale.send_signal(signal.SIGSTOP)
        try:
            held = _query(sync, mine, stale.pid)
            ids = ",".join(str(c) for c, _ in held)
            _wait("the run's takeover", lambda: all(
                e > 1 for (e,) in _query(sync, f"SELECT epoch FROM chunks WHERE id IN ({ids})")),
                [run], timeout=60)
        finally:
            stale.send_signal(signal.SIGCONT)
        results = [_finish(p) for p in (run, stale)]
    for code, out, err in results:
        assert code == 0, (out, err)
    assert "lost chunk" in results[1][2], results[1][2]
    _bucket_equals(sync, files)
    status = json.loads(sync.cli("status", *sync.journal_args(), "--json").out)
    assert status["chunks"] == {"pending": 0, "claimed": 0, "done": 6}
    # A chunk recorded twice would be counted by two workers.
    assert sum(w["chunks_done"] for w in status["workers"]) == 6
    assert sum(w["bytes_done"] for w in status["workers"]) == sum(map(len, files.values()))
    held_keys = {sync.object_key(k) for (k,) in _query(
        sync, f"SELECT key FROM plan_items WHERE chunk_id IN ({ids})")}
    resent = {key for key, n in _puts(proxy, sync).items() if n > 1}
    assert resent <= held_keys, (resent, held_keys)
    rows = _query(sync, "SELECT status, count(*) FROM plan_items GROUP BY status")
    assert rows == [("done", 30)]


def test_a_killed_run_resumes_beside_a_worker_that_kept_going(sync, s3):
    """Coordinator death: the run is SIGKILLed, a worker goes on with the chunks, `run
    --resume` re-attaches; the worker loses nothing and exits 0."""
    files = _tree(sync, 30)
    args = ("--chunk-files", "5", "--workers", "1", "--lease", "2s")
    with RecordingProxy(s3.port, hook=_slow_puts(0.3)) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        run = sync.start(*sync.run_args(*args))
        _wait("chunks", lambda: _query(sync, "SELECT 1 FROM chunks"), [run])
        worker = sync.start("worker", *sync.journal_args(), "--workers", "1",
                            "--lease", "2s", "-v")
        claimed = ("SELECT c.id FROM chunks c JOIN workers w ON w.id = c.owner"
                   " WHERE w.pid = ? AND c.state = 'claimed'")
        _wait("a claim by the worker", lambda: _query(sync, claimed, worker.pid),
              [run, worker])
        run.send_signal(signal.SIGKILL)
        run.wait()
        dead = [c for (c,) in _query(sync, claimed, run.pid)]
        resumed = sync.run(*args, "--resume")
        code, out, err = _finish(worker)
    assert resumed.code == 0, resumed.err
    assert code == 0 and "lost chunk" not in err, err
    _bucket_equals(sync, files)
    status = json.loads(sync.cli("status", *sync.journal_args(), "--json").out)
    assert (status["runs"][0]["state"], status["runs"][0]["resumed"]) == ("done", 1)
    assert status["chunks"] == {"pending": 0, "claimed": 0, "done": 6}
    assert sum(w["chunks_done"] for w in status["workers"]) == 6
    dead_keys = {sync.object_key(k) for (k,) in _query(
        sync, f"SELECT key FROM plan_items WHERE chunk_id IN "
        f"({','.join(str(c) for c in dead) or 'NULL'})")}
    resent = {key for key, n in _puts(proxy, sync).items() if n > 1}
    assert resent <= dead_keys, (resent, dead_keys)


def test_a_worker_takes_over_a_killed_holders_multipart_upload(sync, s3):
    """The run dies mid-multipart; a worker claims its chunk once the lease expires and
    continues the journaled UploadId: no new upload, no journaled part sent again."""
    from tests.faults.test_multipart_crash import ARGS, journal_parts, part_numbers, slow_parts

    big = random.Random(3).randbytes(4 * MiB * 5 + 123)  # 5 parts of 5 MiB
    sync.write("big.bin", big)
    args = (*ARGS, "--workers", "1", "--lease", "2s")
    with RecordingProxy(s3.port, hook=slow_parts(0.3)) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        run = sync.start(*sync.run_args(*args))
        _wait("two journaled parts", lambda: journal_parts(sync) >= 2, [run])
        run.send_signal(signal.SIGKILL)
        run.wait()
        journaled = {n for (n,) in _query(sync, "SELECT part_number FROM multipart_parts")}
        proxy.clear()
        # A worker leaves a chunk under a live lease alone (and exits when nothing else is
        # claimable): start it once the dead holder's lease is over.
        _wait("the lease to expire", lambda: _query(
            sync, "SELECT 1 FROM chunks WHERE lease_until < ?", time.time()), [])
        # The part size is the journaled upload's, whatever the worker's own settings.
        worker = sync.start("worker", *sync.journal_args(), "--workers", "1",
                            "--lease", "2s")
        code, out, err = _finish(worker)
        assert code == 0, (out, err)
        assert "chunks=1" in out, out
        resumed = sync.run(*args, "--resume")
    assert resumed.code == 0, resumed.err
    ops = proxy.operations()
    assert ops["CreateMultipartUpload"] == 0 and ops["CompleteMultipartUpload"] == 1, ops
    assert not set(part_numbers(proxy)) & journaled, "a journaled part was sent again"
    body = sync.s3.client().get_object(Bucket=sync.bucket, Key=sync.object_key("big.bin"))
    assert body["Body"].read() == big
    assert _query(sync, "SELECT epoch, state FROM chunks") == [(2, "done")]
