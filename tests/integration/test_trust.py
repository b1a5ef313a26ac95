"""What the journal stored is an intention or a cache, never a fact (issue 11, items 1, 2, 6).

- A resumed plan's deletes are checked again against the source and the store.
- A run that ended on an error is not replayed by --resume: the next night scans.
- A journal is bound to its (source, destination, endpoint).
"""

from __future__ import annotations

import json
import signal
import time


from tests.support.proxy import Fault, RecordingProxy


def keys(client, bucket, prefix="") -> set[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {o["Key"] for page in pages for o in page.get("Contents", ())}


def tree(sync, n: int) -> dict[str, bytes]:
    files = {f"d{i % 4}/f{i:03d}.txt": f"file {i}".encode() for i in range(n)}
    for rel, data in files.items():
        sync.write(rel, data)
    return files


def wait_for(predicate, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def kill_in_delete_phase(sync, s3, *args: str) -> RecordingProxy:
    """Run with --delete through a proxy that holds the first delete request; SIGKILL the
    run while it waits, so its plan (deletes pending) is all the journal has."""
    held = lambda req: Fault(status=0, delay=60, reset=True) if req.operation.startswith("Delete") else None  # noqa: E731
    proxy = RecordingProxy(s3.port, hook=held).__enter__()
    sync.endpoint_url = proxy.endpoint_url
    proc = sync.start(*sync.run_args("--delete", *args))
    try:
        wait_for(lambda: any(r.operation.startswith("Delete") for r in proxy.requests),
                 "the delete phase")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    proxy.hook = None
    return proxy


def kill_at_first_upload(sync, s3) -> None:
    """SIGKILL a run at its first upload (held, then dropped unsent): its plan is stored,
    nothing is uploaded. Later runs go straight to the server again."""
    held = lambda req: Fault(status=0, delay=60, reset=True) if req.method == "PUT" else None  # noqa: E731
    with RecordingProxy(s3.port, hook=held) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        proc = sync.start(*sync.run_args("--workers", "1"))
        wait_for(lambda: proxy.counts()["PUT"] >= 1, "the first upload")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    sync.endpoint_url = None


def test_resume_does_not_delete_files_that_came_back(sync, s3, s3client):
    """Item 1: planned deletes, a kill at the delete phase, the files restored, then
    `run --resume --delete`: the restored files' objects stay."""
    files = tree(sync, 40)
    assert sync.run().code == 0
    gone = ["d0/f000.txt", "d1/f001.txt", "d2/f002.txt"]  # 3 of 40: inside the 10% cap
    for rel in gone:
        (sync.src / rel).unlink()
    proxy = kill_in_delete_phase(sync, s3)
    try:
        assert keys(s3client, sync.bucket) == {sync.object_key(r) for r in files}  # nothing yet
        for rel in gone[:2]:  # two come back; the third stays gone
            sync.write(rel, files[rel])
        resumed = sync.run("--resume", "--delete", "--json")
    finally:
        proxy.__exit__(None, None, None)
    assert resumed.code == 0, resumed.err
    out = json.loads(resumed.out)
    assert out["resumed"] == 1 and out["deleted"] == 1, out
    assert "2 stored delete(s) cancelled on resume: the file exists again" in resumed.err
    assert keys(s3client, sync.bucket) == {sync.object_key(r) for r in files if r != gone[2]}


def test_resume_does_not_delete_an_object_replaced_since_the_plan(sync, s3, s3client):
    """Item 1, the store side: an object rewritten by someone else after the plan is not
    the object the plan meant to delete."""
    files = tree(sync, 40)
    assert sync.run().code == 0
    (sync.src / "d3/f003.txt").unlink()
    proxy = kill_in_delete_phase(sync, s3)
    try:
        key = sync.object_key("d3/f003.txt")
        s3client.put_object(Bucket=sync.bucket, Key=key, Body=b"written by another tool")
        resumed = sync.run("--resume", "--delete", "--json")
    finally:
        proxy.__exit__(None, None, None)
    assert resumed.code == 0, resumed.err
    assert json.loads(resumed.out)["deleted"] == 0
    assert "the object is gone or changed since the plan" in resumed.err
    assert s3client.get_object(Bucket=sync.bucket, Key=key)["Body"].read() == b"written by another tool"
    assert len(keys(s3client, sync.bucket)) == len(files)


def test_a_file_back_before_its_delete_is_not_deleted_in_a_fresh_run(sync, s3, s3client):
    """Every delete looks for its file again, resumed or not: a file restored while the
    run was uploading keeps its object."""
    files = tree(sync, 40)
    assert sync.run().code == 0
    (sync.src / "d0/f004.txt").unlink()

    def hook(req):
        if req.operation.startswith("Delete"):
            return None
        if req.operation == "PutObject" and "new.txt" in req.path:
            sync.write("d0/f004.txt", files["d0/f004.txt"])  # back while the run uploads
        return None

    sync.write("new.txt", b"new")
    with RecordingProxy(s3.port, hook=hook) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        result = sync.run("--delete", "--no-crt")
    assert result.code == 0, result.err
    assert "1 planned delete(s) not done: the file exists again" in result.err
    assert sync.object_key("d0/f004.txt") in keys(s3client, sync.bucket)
    assert not any(r.operation.startswith("Delete") for r in proxy.requests)


def test_resume_reruns_the_guard_on_the_current_counts(sync, s3, s3client):
    """A resumed run asks the guard again, with a fresh scan: a source emptied since the
    plan (an unmounted disk) deletes nothing."""
    files = tree(sync, 40)
    assert sync.run().code == 0
    (sync.src / "d1/f005.txt").unlink()
    proxy = kill_in_delete_phase(sync, s3)
    try:
        for rel in files:
            (sync.src / rel).unlink(missing_ok=True)
        resumed = sync.run("--resume", "--delete")
    finally:
        proxy.__exit__(None, None, None)
    assert resumed.code == 3, resumed.err
    assert "the source is empty" in resumed.err
    assert len(keys(s3client, sync.bucket)) == len(files)


def test_a_refused_file_does_not_stop_the_nights_that_follow(sync, s3, s3client):
    """Item 2: AccessDenied on one PUT fails that file only; the next night's --resume
    scans afresh, so new files are backed up."""
    tree(sync, 12)
    denied = lambda req: (Fault(403, "AccessDenied")  # noqa: E731
                          if req.method == "PUT" and "d0/f000.txt" in req.path else None)
    with RecordingProxy(s3.port, hook=denied) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        first = sync.run("--json")
        assert first.code == 1, first.err
        assert json.loads(first.out)["uploaded"] == 11
        sync.write("later/new.txt", b"made the next day")
        second = sync.run("--resume", "--json")
    assert second.code == 1, second.err
    assert json.loads(second.out)["uploaded"] == 1
    assert sync.object_key("later/new.txt") in keys(s3client, sync.bucket)


def test_a_store_refusing_everything_stops_early_and_is_not_replayed(sync, s3, s3client):
    """Item 2: AccessDenied on every PUT stops the run after a short streak (exit 4); the
    next --resume does not replay that plan but scans and plans afresh."""
    tree(sync, 30)
    with RecordingProxy(s3.port, hook=lambda req: Fault(403, "AccessDenied")
                        if req.method == "PUT" else None) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        first = sync.run("--workers", "1")
        assert first.code == 4, first.err
        assert "on 3 files in a row" in first.err
        # three refusals stop it; one more may already be in flight (two claims per worker)
        assert 3 <= proxy.operations()["PutObject"] <= 4
        proxy.hook = None
        sync.write("later/new.txt", b"made the next day")
        second = sync.run("--resume", "--json")
    assert second.code == 0, second.err
    assert json.loads(second.out)["resumed"] == 0
    assert "ended on an error" in second.err and "planned afresh" in second.err
    assert sync.object_key("later/new.txt") in keys(s3client, sync.bucket)


def test_resume_refuses_a_plan_older_than_its_bound(sync, s3, s3client):
    """A plan older than --resume-max-age is made afresh, and the files it missed go up."""
    tree(sync, 10)
    kill_at_first_upload(sync, s3)
    sync.journal_rows("UPDATE runs SET planned_at = planned_at - 13 * 3600")  # the night passes
    sync.write("later/new.txt", b"new")
    result = sync.run("--resume", "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["resumed"] == 0
    assert "over --resume-max-age 12 h; planned afresh" in result.err
    assert sync.object_key("later/new.txt") in keys(s3client, sync.bucket)


def test_a_journal_is_bound_to_its_job(sync, s3, s3client):
    """Item 6: two jobs (primary and DR) given one journal path: the second is refused in
    one line, and with its own journal the DR bucket gets every file, whatever the
    primary's cached listing said."""
    files = tree(sync, 5)
    assert sync.run("--manifest-max-age", "1h").code == 0
    dr = f"dr-{sync.bucket}"[:63]
    s3.create_bucket(dr)
    refused = sync.cli("run", str(sync.src), f"s3://{dr}/backup", *sync.journal_args(),
                       "--manifest-max-age", "1h")
    assert refused.code == 2
    assert refused.err.count("\n") == 1 and "give this job its own --journal" in refused.err
    assert keys(s3client, dr) == set()
    own = sync.cli("run", str(sync.src), f"s3://{dr}/backup", *sync.other_journal_args("dr"),
                   "--manifest-max-age", "1h")
    assert own.code == 0, own.err
    assert keys(s3client, dr) == {f"backup/{rel}" for rel in files}


def test_endpoint_moved_keeps_the_journal(sync, s3, s3client):
    """The same store at a new URL: refused without --endpoint-moved, kept with it (the
    cached hashes stay valid: nothing is uploaded again)."""
    tree(sync, 5)
    assert sync.run().code == 0
    with RecordingProxy(s3.port) as proxy:
        sync.endpoint_url = proxy.endpoint_url  # cli() below does not add --endpoint-moved
        base = ["run", str(sync.src), sync.dest, *sync.journal_args(), "--json"]
        refused = sync.cli(*base)
        assert refused.code == 2 and "--endpoint-moved" in refused.err
        kept = sync.cli(*base, "--endpoint-moved")
    assert kept.code == 0, kept.err
    assert json.loads(kept.out)["uploaded"] == 0


def test_a_long_upload_does_not_hold_finished_ones_out_of_the_journal(sync, s3, s3client):
    """Results are journaled about once a second even while no other result arrives: a
    kill during one long upload does not lose the record of the files already sent."""
    sync.write("a.txt", b"quick")
    sync.write("b.txt", b"slow")
    held = lambda req: Fault(status=0, delay=30) if "b.txt" in req.path else None  # noqa: E731
    with RecordingProxy(s3.port, hook=held) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        proc = sync.start(*sync.run_args("--workers", "2"))
        try:
            def a_done() -> bool:
                return sync.journal_rows("SELECT status FROM plan_items WHERE key = 'a.txt'",
                                         if_any=True) == [("done",)]
            wait_for(a_done, "a.txt journaled while b.txt is still held", timeout=15)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
    assert sync.object_key("a.txt") in keys(s3client, sync.bucket)


def test_resume_relists_and_uploads_what_went_missing_since_the_plan(sync, s3, s3client):
    """A resumed run with deletes pending LISTs again: an object deleted behind our back
    since the plan (its file still here) is seen gone and uploaded again, and the listing
    it leaves cached is the true one."""
    files = tree(sync, 40)
    assert sync.run().code == 0
    (sync.src / "d0/f000.txt").unlink()
    proxy = kill_in_delete_phase(sync, s3)
    try:
        s3client.delete_object(Bucket=sync.bucket, Key=sync.object_key("d1/f001.txt"))
        resumed = sync.run("--resume", "--delete", "--json")
    finally:
        proxy.__exit__(None, None, None)
    assert resumed.code == 0, resumed.err
    out = json.loads(resumed.out)
    assert out["resumed"] == 1 and (out["uploaded"], out["deleted"]) == (1, 1), out
    assert "1 upload(s) added on resume" in resumed.err
    assert keys(s3client, sync.bucket) == {sync.object_key(r) for r in files if r != "d0/f000.txt"}
    sync.endpoint_url = None
    cached = sync.run("--manifest-max-age", "1h", "--json")  # trusts that listing: all there
    assert cached.code == 0 and json.loads(cached.out)["uploaded"] == 0


def test_a_file_back_during_a_long_delete_phase_keeps_its_object(sync, s3, s3client):
    """Deletes one key at a time look at the source again every few keys: a file restored
    while the deletes run is not deleted, even in the same 1000-key batch."""
    files = tree(sync, 80)
    assert sync.run().code == 0
    doomed = sorted(files)[:60]
    for rel in doomed:
        (sync.src / rel).unlink()
    last = doomed[-1]

    def hook(req):
        if req.operation == "DeleteObject":
            if sum(r.operation == "DeleteObject" for r in proxy.requests) == 10:
                sync.write(last, files[last])  # back while the deletes run
            return Fault(status=0, delay=0.02)
        return None

    with RecordingProxy(s3.port, hook=hook) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        result = sync.run("--delete", "--force", "--provider", "gcs", "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["deleted"] == 59
    assert sync.object_key(last) in keys(s3client, sync.bucket)


def test_a_second_sigterm_stops_single_deletes_at_once(sync, s3, s3client):
    """One-at-a-time deletes honour a stop every few keys, and a second signal at once."""
    files = tree(sync, 240)
    assert sync.run().code == 0
    for rel in sorted(files)[:200]:
        (sync.src / rel).unlink()
    slow = lambda req: Fault(status=0, delay=0.05) if req.operation == "DeleteObject" else None  # noqa: E731
    with RecordingProxy(s3.port, hook=slow) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        proc = sync.start(*sync.run_args("--delete", "--force", "--provider", "gcs"))
        wait_for(lambda: proxy.operations()["DeleteObject"] >= 20, "the deletes")
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        at_signal = proxy.operations()["DeleteObject"]
        out, err = proc.communicate(timeout=60)
        sent = proxy.operations()["DeleteObject"]
    assert proc.returncode == 143, err
    assert out.strip().splitlines()[-1].startswith("journalsync: scanned=")
    # at once: well before the next 25-key look at the source would have stopped it
    assert sent <= at_signal + 10, (at_signal, sent)
    assert len(keys(s3client, sync.bucket)) >= 240 - sent


def test_a_planned_file_gone_before_its_upload_is_not_a_failure(sync, s3, s3client):
    """A file removed between a killed run and its resume is not uploaded and not failed:
    exit 0, with a note."""
    tree(sync, 6)
    kill_at_first_upload(sync, s3)
    (sync.src / "d3/f003.txt").unlink()
    result = sync.run("--resume", "--json")
    assert result.code == 0, result.err
    out = json.loads(result.out)
    assert out["resumed"] == 1 and (out["uploaded"], out["failed"]) == (5, 0), out
    assert "1 planned file(s) vanished before their upload" in result.err


def test_a_run_that_never_listed_binds_no_journal(sync, s3, s3client):
    """A first run with a mistyped bucket (exit 4) does not lock its journal to that
    bucket: the corrected run goes through."""
    tree(sync, 3)
    typo = sync.cli("run", str(sync.src), f"s3://{sync.bucket}-typo/x", *sync.journal_args())
    assert typo.code == 4, typo.err
    fixed = sync.run()
    assert fixed.code == 0, fixed.err
    assert len(keys(s3client, sync.bucket)) == 3
