"""Crash-safe multipart against both servers: SIGKILL mid-part and resume, SIGTERM,
Complete-after-success, an upload aborted behind our back, a file changed mid-upload,
strays from a crash before the journal commit, and `cleanup`.

The CLI runs as a real subprocess through the recording proxy, so what was sent before and
after a kill is counted on the wire; the journal is read with plain sqlite3 or psycopg
(tests/support/journalrows.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import time
from pathlib import Path
from urllib.parse import unquote

import pytest
from botocore.exceptions import ClientError

from journalsync.config import MiB
from tests.support.hung import kill_when
from tests.support.proxy import Fault, RecordingProxy

pytestmark = pytest.mark.slow

PART = 5 * MiB
ARGS = ("--multipart-threshold", "5MiB", "--part-size", "5MiB")


def journal_parts(sync) -> int:
    """Parts journaled for uploads still active (none before the journal exists)."""
    rows = sync.journal_rows("""SELECT count(*) FROM multipart_parts p JOIN multipart_uploads u
                                ON u.upload_id = p.upload_id WHERE u.state = 'active'""",
                             if_any=True)
    return rows[0][0] if rows else 0


def journal_rows(sync, sql, *params):
    return sync.journal_rows(sql, *params)


def incomplete(client, bucket) -> list[tuple[str, str]]:
    try:
        uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    except ClientError as exc:  # rclone: a bucket that never had an upload
        if exc.response["Error"]["Code"] == "NoSuchUpload":
            return []
        raise
    return [(u["Key"], u["UploadId"]) for u in uploads]


def object_sha(client, bucket, key) -> str:
    return hashlib.sha256(client.get_object(Bucket=bucket, Key=key)["Body"].read()).hexdigest()


def slow_parts(delay: float):
    """A proxy hook that holds every UploadPart a while, so a kill lands mid-upload."""
    return lambda req: Fault(status=0, delay=delay) if req.operation == "UploadPart" else None


def part_numbers(proxy) -> list[int]:
    return [int(r.query["partNumber"][0]) for r in proxy.requests if r.operation == "UploadPart"]


def kill_mid_upload(sync, proxy, after_parts: int, extra_delay: float, *args: str):
    """Start a run, SIGKILL it once `after_parts` parts are journaled (plus a delay)."""
    proc = sync.start(*sync.run_args(*args))
    deadline = time.monotonic() + 60
    while journal_parts(sync) < after_parts:
        assert proc.poll() is None, f"run ended before the kill: {proc.communicate()}"
        assert time.monotonic() < deadline, "no progress"
        time.sleep(0.005)
    time.sleep(extra_delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


KILL_SEEDS = [(11, 1), (14, 1), (13, 4)]  # (seed, workers)


def kill_point(rnd: random.Random) -> tuple[int, float]:
    """Kill after this many journaled parts, plus this delay."""
    return rnd.randint(1, 9), rnd.uniform(0, 0.25)


def test_sigkill_seeds_draw_different_kill_points():
    """Two seeds with one worker are only worth their time if they kill at different
    parts (11 and 12 both drew "after 8 parts")."""
    single = [kill_point(random.Random(seed))[0] for seed, workers in KILL_SEEDS if workers == 1]
    assert len(set(single)) == len(single), single


@pytest.mark.parametrize("seed, workers", KILL_SEEDS)
def test_sigkill_mid_part_then_resume(sync, s3, s3client, seed, workers):
    rnd = random.Random(seed)
    after_parts, extra_delay = kill_point(rnd)
    print(f"seed={seed} workers={workers} kill after {after_parts} parts + {extra_delay:.3f}s")
    big = rnd.randbytes(64 * MiB + rnd.randint(1, PART))  # 13 or 14 parts
    sync.write("big/disk.img", big)
    sync.write("small.txt", b"small")
    args = (*ARGS, "--workers", str(workers))
    with RecordingProxy(s3.port, hook=slow_parts(0.05)) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        kill_mid_upload(sync, proxy, after_parts, extra_delay, *args)
        started_before = set(part_numbers(proxy))
        journaled = {n for (n,) in journal_rows(sync, "SELECT part_number FROM multipart_parts")}

        status = sync.cli("status", *sync.journal_args(), "--json")
        in_flight = json.loads(status.out)["in_flight"]
        assert [u["key"] for u in in_flight] == ["big/disk.img"]
        assert in_flight[0]["parts_done"] == len(journaled) >= after_parts

        proxy.clear()
        result = sync.run(*args, "--resume")
        assert result.code == 0, result.err
        resent = set(part_numbers(proxy)) & started_before
    ops = proxy.operations()
    assert ops["CreateMultipartUpload"] == 0 and ops["ListParts"] == 1, ops
    assert not (set(part_numbers(proxy)) & journaled), "a journaled part was sent again"
    # Only the parts on the wire at the kill can be sent twice: one per part thread.
    assert len(resent) <= workers, (sorted(resent), sorted(started_before), sorted(journaled))
    (bytes_sent,) = journal_rows(sync,
                                 "SELECT bytes_sent FROM plan_items WHERE key = 'big/disk.img'")[0]
    assert bytes_sent == sum(min(PART, len(big) - (n - 1) * PART) for n in part_numbers(proxy))
    print(f"re-sent parts {sorted(resent)}; resume sent {bytes_sent} of {len(big)} bytes")
    assert object_sha(s3client, sync.bucket, sync.object_key("big/disk.img")) == hashlib.sha256(big).hexdigest()
    assert incomplete(s3client, sync.bucket) == []


def test_plain_run_after_kill_reuses_the_upload(sync, s3, s3client):
    big = random.Random(3).randbytes(30 * MiB)
    sync.write("big.bin", big)
    with RecordingProxy(s3.port, hook=slow_parts(0.05)) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        kill_mid_upload(sync, proxy, 2, 0.0, *ARGS, "--workers", "1")
        proxy.clear()
        result = sync.run(*ARGS)  # cron just runs it again: no --resume
        assert result.code == 0, result.err
    assert proxy.operations()["CreateMultipartUpload"] == 0
    assert len(part_numbers(proxy)) < 6
    assert object_sha(s3client, sync.bucket, sync.object_key("big.bin")) == hashlib.sha256(big).hexdigest()
    assert incomplete(s3client, sync.bucket) == []


def test_file_changed_between_kill_and_resume_starts_over(sync, s3, s3client):
    rnd = random.Random(4)
    path = sync.write("big.bin", rnd.randbytes(20 * MiB))
    with RecordingProxy(s3.port, hook=slow_parts(0.05)) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        kill_mid_upload(sync, proxy, 1, 0.0, *ARGS, "--workers", "1")
        new = rnd.randbytes(20 * MiB)
        path.write_bytes(new)
        proxy.clear()
        result = sync.run(*ARGS, "--resume")
    assert result.code == 0, result.err
    ops = proxy.operations()
    assert ops["AbortMultipartUpload"] == 1 and ops["CreateMultipartUpload"] == 1, ops
    assert object_sha(s3client, sync.bucket, sync.object_key("big.bin")) == hashlib.sha256(new).hexdigest()
    assert incomplete(s3client, sync.bucket) == []


def test_sigterm_stops_cleanly_and_resume_finishes(sync, s3, s3client):
    big = random.Random(5).randbytes(40 * MiB)
    sync.write("big.bin", big)
    for i in range(20):
        sync.write(f"small/{i}.txt", b"x" * i)
    with RecordingProxy(s3.port, hook=slow_parts(0.2)) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        proc = sync.start(*sync.run_args(*ARGS, "--workers", "2"))
        while journal_parts(sync) < 1:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.005)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
        assert proc.returncode == 143, err
        assert out.startswith("journalsync: scanned=21 ") and "--resume" in err
        status = json.loads(sync.cli("status", *sync.journal_args(), "--json").out)
        assert status["runs"][0]["state"] == "interrupted"
        assert [u["key"] for u in status["in_flight"]] == ["big.bin"]
        result = sync.run(*ARGS, "--resume", "--json")
    assert result.code == 0, result.err
    summary = json.loads(result.out)
    assert summary["resumed"] == 1 and summary["uploaded"] == 21
    assert object_sha(s3client, sync.bucket, sync.object_key("big.bin")) == hashlib.sha256(big).hexdigest()
    assert incomplete(s3client, sync.bucket) == []


def test_complete_retried_after_success_is_done_without_reupload(sync, s3, s3client):
    big = random.Random(6).randbytes(12 * MiB)
    sync.write("big.bin", big)
    failed_once = []

    def hook(req):
        if req.operation == "CompleteMultipartUpload" and not failed_once:
            failed_once.append(req)
            return Fault(500, "InternalError", after_forward=True)  # it did complete
        return None

    with RecordingProxy(s3.port, hook=hook) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        result = sync.run(*ARGS)
    assert result.code == 0, result.err
    ops = proxy.operations()
    assert ops["CompleteMultipartUpload"] == 2 and ops["CreateMultipartUpload"] == 1, ops
    assert ops["UploadPart"] == 3
    assert object_sha(s3client, sync.bucket, sync.object_key("big.bin")) == hashlib.sha256(big).hexdigest()
    assert incomplete(s3client, sync.bucket) == []


def _abort_upstream(s3client, bucket):
    """A hook that aborts the upload on the server before its 2nd part arrives, as a
    lifecycle rule would. With `every`, it does so to every upload. Requests naming an
    aborted upload get S3's answer, 404 NoSuchUpload (moto's server answers a 500 there)."""
    aborted: set[str] = set()

    def hook(req, every=False):
        upload_id = req.query.get("uploadId", [None])[0]
        if upload_id in aborted:
            return Fault(404, "NoSuchUpload")
        if req.operation == "UploadPart" and req.query["partNumber"] == ["2"] and (every or not aborted):
            aborted.add(upload_id)
            key = unquote(req.path.split("/", 2)[2])
            s3client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
            return Fault(404, "NoSuchUpload")
        return None

    return hook


def test_upload_aborted_behind_our_back_restarts_once(sync, s3, s3client):
    big = random.Random(7).randbytes(12 * MiB)
    sync.write("big.bin", big)
    with RecordingProxy(s3.port, hook=_abort_upstream(s3client, sync.bucket)) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        result = sync.run(*ARGS, "--workers", "1")
    assert result.code == 0, result.err
    assert proxy.operations()["CreateMultipartUpload"] == 2
    assert object_sha(s3client, sync.bucket, sync.object_key("big.bin")) == hashlib.sha256(big).hexdigest()
    assert incomplete(s3client, sync.bucket) == []


def test_upload_aborted_every_time_fails_without_looping(sync, s3, s3client):
    sync.write("big.bin", random.Random(8).randbytes(12 * MiB))
    hook = _abort_upstream(s3client, sync.bucket)
    with RecordingProxy(s3.port, hook=lambda req: hook(req, every=True)) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        result = sync.run(*ARGS, "--workers", "1")
    assert result.code == 1
    assert proxy.operations()["CreateMultipartUpload"] == 2
    status = sync.cli("status", *sync.journal_args())
    assert "vanished" in status.out or "gone" in status.out
    assert incomplete(s3client, sync.bucket) == []


def test_file_changed_during_upload_is_aborted_and_retried_next_run(sync, s3, s3client):
    rnd = random.Random(9)
    path = sync.write("big.bin", rnd.randbytes(16 * MiB))
    new = rnd.randbytes(16 * MiB)
    changed = []

    def hook(req):
        if req.operation == "UploadPart" and not changed:
            changed.append(req)
            path.write_bytes(new)  # same size, new content, new mtime
        return None

    with RecordingProxy(s3.port, hook=hook) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        result = sync.run(*ARGS, "--workers", "1")
    assert result.code == 1, result.err
    assert result.summary["failed"] == "1" and result.summary["uploaded"] == "0"
    status = json.loads(sync.cli("status", *sync.journal_args(), "--json").out)
    assert "changed during upload" in status["failed"][0]["error"]
    assert incomplete(s3client, sync.bucket) == []
    assert "Contents" not in s3client.list_objects_v2(Bucket=sync.bucket)  # never completed
    sync.endpoint_url = None
    again = sync.run(*ARGS)
    assert again.code == 0 and again.summary["uploaded"] == "1"
    assert object_sha(s3client, sync.bucket, sync.object_key("big.bin")) == hashlib.sha256(new).hexdigest()


def test_stray_upload_unknown_to_the_journal_is_aborted(sync, s3client):
    """A crash between CreateMultipartUpload and the journal commit leaves a stray."""
    sync.write("big.bin", random.Random(10).randbytes(6 * MiB))
    stray = s3client.create_multipart_upload(Bucket=sync.bucket, Key=sync.object_key("big.bin"))
    other = s3client.create_multipart_upload(Bucket=sync.bucket, Key=sync.object_key("not-ours.bin"))
    result = sync.run(*ARGS)
    assert result.code == 0, result.err
    left = incomplete(s3client, sync.bucket)
    assert left == [(sync.object_key("not-ours.bin"), other["UploadId"])]  # not a key we upload
    assert stray["UploadId"] not in {u for _, u in left}
    s3client.abort_multipart_upload(Bucket=sync.bucket, Key=sync.object_key("not-ours.bin"),
                                    UploadId=other["UploadId"])


def test_cleanup_lists_then_aborts_only_under_the_prefix(sync, s3, s3client):
    sync.write("big.bin", random.Random(11).randbytes(12 * MiB))
    with RecordingProxy(s3.port, hook=slow_parts(0.05)) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        kill_mid_upload(sync, proxy, 1, 0.0, *ARGS, "--workers", "1")
    sync.endpoint_url = None
    foreign = s3client.create_multipart_upload(Bucket=sync.bucket, Key="backup/host1/foreign.bin")
    sibling = s3client.create_multipart_upload(Bucket=sync.bucket, Key="backup/host10/x.bin")
    ours = {u for k, u in incomplete(s3client, sync.bucket) if k == "backup/host1/big.bin"}
    assert len(ours) == 1

    base = ("cleanup", sync.dest, *sync.journal_args(), "--json")
    if s3.name != "moto":  # moto dates every upload 2010-11-10, so none is young there
        kept = json.loads(sync.cli(*base).out)  # default --older-than 24h: all too young
        assert {r["action"].split(":")[0] for r in kept} == {"kept"}
    listed = json.loads(sync.cli(*base, "--older-than", "0").out)
    assert {(r["key"], r["ours"]) for r in listed} == {("big.bin", True), ("foreign.bin", False)}
    assert all(r["action"].startswith("would abort") for r in listed)
    assert len(incomplete(s3client, sync.bucket)) == 3  # the dry run aborted nothing

    aborted = json.loads(sync.cli(*base, "--older-than", "0", "--abort").out)
    assert {r["action"] for r in aborted} == {"aborted"}
    assert incomplete(s3client, sync.bucket) == [("backup/host10/x.bin", sibling["UploadId"])]
    assert journal_rows(sync, "SELECT state FROM multipart_uploads") == [("aborted",)]
    assert foreign["UploadId"] not in {u for _, u in incomplete(s3client, sync.bucket)}


# --- a killed run's upload that the next run sends no part of --------------------------------


def _killed_with_upload(sync, s3, s3client, name: str, seed: int):
    """A run SIGKILLed mid-upload of a 20 MiB file: its upload stays on the store, active
    in the journal. Returns the file's path."""
    path = sync.write(name, random.Random(seed).randbytes(20 * MiB))
    with RecordingProxy(s3.port, hook=slow_parts(0.05)) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        kill_mid_upload(sync, proxy, 1, 0.0, *ARGS, "--workers", "1")
    sync.endpoint_url = None
    assert incomplete(s3client, sync.bucket), "the kill left no upload to test with"
    return path


def _upload_states(sync) -> list[str]:
    return [state for (state,) in journal_rows(sync, "SELECT state FROM multipart_uploads")]


@pytest.mark.parametrize("resume", [False, True], ids=["plain", "resume"])
def test_a_file_shrunk_below_the_threshold_after_a_kill_leaves_no_upload(sync, s3, s3client,
                                                                        resume):
    """README: 'After a successful run no incomplete upload of its own remains.' The file
    cut to 1 MiB (a log rotated) is planned, so reconcile keeps its journaled upload; it
    is now sent by one PutObject, never by the multipart driver that continues or aborts
    such an upload: the Uploader aborts it."""
    path = _killed_with_upload(sync, s3, s3client, "big.bin", 7)
    small = os.urandom(MiB)
    path.write_bytes(small)
    result = sync.run(*ARGS, *(["--resume"] if resume else []))
    assert result.code == 0, result.err
    body = s3client.get_object(Bucket=sync.bucket, Key=sync.object_key("big.bin"))["Body"].read()
    assert body == small
    assert incomplete(s3client, sync.bucket) == [], "the old upload was left on the store"
    assert _upload_states(sync) == ["aborted"]


def test_a_large_file_deleted_between_a_kill_and_resume_leaves_no_upload(sync, s3, s3client):
    """The same with the file gone: `--resume` keeps the planned key's upload, the file is
    recorded `vanished` (exit 0), and its upload is aborted all the same."""
    sync.write("a.txt", b"a")
    path = _killed_with_upload(sync, s3, s3client, "big.bin", 8)
    path.unlink()
    result = sync.run(*ARGS, "--resume")
    assert result.code == 0, result.err
    assert incomplete(s3client, sync.bucket) == [], "the old upload was left on the store"
    assert _upload_states(sync) == ["aborted"]


def _refuse(operation: str):
    """A proxy hook that refuses every `operation` with 403 AccessDenied (a bucket policy on
    that one action): not retried, and not fatal for the run."""
    return lambda req: Fault(403, "AccessDenied") if req.operation == operation else None


def test_the_upload_is_aborted_when_the_single_put_fails(sync, s3, s3client):
    """The shrunk file's PutObject refused: the file fails (exit 1), and its old upload,
    which nothing would continue, is aborted all the same."""
    path = _killed_with_upload(sync, s3, s3client, "big.bin", 9)
    path.write_bytes(os.urandom(MiB))
    with RecordingProxy(s3.port, hook=_refuse("PutObject")) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        result = sync.run(*ARGS)
    assert result.code == 1, result.err
    assert proxy.operations()["AbortMultipartUpload"] == 1
    assert incomplete(s3client, sync.bucket) == []
    assert _upload_states(sync) == ["aborted"]


def test_an_abort_that_fails_is_one_warning_and_the_next_run_aborts_it(sync, s3, s3client):
    """The abort refused: the file sent fine stays sent (exit 0), one warning line says so,
    the upload stays active in the journal, and the next run's reconcile aborts it."""
    path = _killed_with_upload(sync, s3, s3client, "big.bin", 10)
    small = os.urandom(MiB)
    path.write_bytes(small)
    with RecordingProxy(s3.port, hook=_refuse("AbortMultipartUpload")) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        result = sync.run(*ARGS)
    assert result.code == 0, result.err
    assert result.summary["uploaded"] == "1" and result.summary["failed"] == "0"
    warned = [line for line in result.err.splitlines() if "could not abort" in line]
    assert len(warned) == 1 and "big.bin" in warned[0], result.err
    assert len(incomplete(s3client, sync.bucket)) == 1
    assert _upload_states(sync) == ["active"]
    sync.endpoint_url = None
    again = sync.run(*ARGS)
    assert again.code == 0, again.err
    assert incomplete(s3client, sync.bucket) == []
    assert _upload_states(sync) == ["aborted"]
    body = s3client.get_object(Bucket=sync.bucket, Key=sync.object_key("big.bin"))["Body"].read()
    assert body == small


def test_another_prefixs_upload_of_the_same_name_is_left_alone(sync, s3, s3client):
    """Only the journaled upload of this job's key is aborted: an upload of the same name
    under a sibling prefix (another host's job, `backup/host10/`) and one of another key
    under ours that the journal never saw and this run does not plan are not touched."""
    path = _killed_with_upload(sync, s3, s3client, "big.bin", 12)
    sibling = s3client.create_multipart_upload(Bucket=sync.bucket, Key="backup/host10/big.bin")
    other = s3client.create_multipart_upload(Bucket=sync.bucket, Key=sync.object_key("not-ours.bin"))
    path.write_bytes(os.urandom(MiB))
    result = sync.run(*ARGS)
    assert result.code == 0, result.err
    left = incomplete(s3client, sync.bucket)
    assert sorted(left) == sorted([("backup/host10/big.bin", sibling["UploadId"]),
                                   (sync.object_key("not-ours.bin"), other["UploadId"])])
    for key, upload_id in left:
        s3client.abort_multipart_upload(Bucket=sync.bucket, Key=key, UploadId=upload_id)


def _killed_at_create(sync, s3, s3client, name: str) -> Path:
    """A run SIGKILLed once the store has taken its CreateMultipartUpload, whose answer is
    held: the store holds an upload whose UploadId the journal never heard of."""
    path = sync.write(name, random.Random(12).randbytes(2 * PART + 1))
    kill_when(sync, s3, (*ARGS, "--workers", "1"),
              lambda req: Fault(status=0, hold=60) if req.operation == "CreateMultipartUpload"
              else None, lambda proxy: incomplete(s3client, sync.bucket),
              "the store never took the create")
    sync.endpoint_url = None
    assert journal_rows(sync, "SELECT state FROM multipart_uploads") == [("creating",)]
    return path


@pytest.mark.parametrize("then", ["deleted", "renamed"])
def test_an_upload_created_but_never_journaled_is_aborted_once_its_file_is_gone(
        sync, s3, s3client, then):
    """Found by a soak: a run killed after the store created an upload but before the
    UploadId was journaled; then the file was deleted or renamed. Reconcile aborted only
    unjournaled uploads of keys planned this run, so this one stayed on the store for good,
    every run exiting 0. The intent to create, journaled before the request, names it."""
    if s3.name == "moto":
        pytest.skip("moto lists every upload as initiated on 2010-11-10: no time to match")
    path = _killed_at_create(sync, s3, s3client, "big.bin")
    other = s3client.create_multipart_upload(Bucket=sync.bucket,
                                             Key=sync.object_key("someone-elses.bin"))
    if then == "deleted":
        path.unlink()
        sync.write("small.txt", b"a file, so the run has something to do")
    else:
        path.rename(path.with_name("moved.bin"))
    result = sync.run(*ARGS)
    assert result.code == 0, result.err
    left = incomplete(s3client, sync.bucket)
    assert left == [(sync.object_key("someone-elses.bin"), other["UploadId"])], left
    assert journal_rows(sync, "SELECT state FROM multipart_uploads WHERE state = 'creating'") == []


def test_an_intent_whose_create_was_journaled_leaves_nothing_behind(sync, s3client):
    """Every create journals its intent first and replaces it with the UploadId: a run
    that completes its uploads leaves no intent row and no upload."""
    sync.write("big.bin", random.Random(13).randbytes(2 * PART + 1))
    assert sync.run(*ARGS).code == 0
    assert journal_rows(sync, "SELECT state FROM multipart_uploads") == [("completed",)]
    assert incomplete(s3client, sync.bucket) == []


def test_an_intent_whose_listing_failed_outlives_the_housekeeping(sync, s3, s3client):
    """Review: an intent whose key could not be listed "stays for the next run"
    (cleanup._abort_unjournaled_creates), but the same run's housekeeping deletes every
    row not `active` of a run outside --keep-runs: the intent (state creating) went with
    them, and the upload the killed run created stayed on the store for good."""
    if s3.name == "moto":
        pytest.skip("moto lists every upload as initiated on 2010-11-10: no time to match")
    path = _killed_at_create(sync, s3, s3client, "big.bin")
    path.unlink()
    sync.write("small.txt", b"a file, so the run has something to do")
    full = sync.object_key("big.bin")
    refused = lambda req: Fault(status=400, code="InvalidRequest") if (  # noqa: E731
        req.operation == "ListMultipartUploads" and req.query.get("prefix") == [full]) else None
    with RecordingProxy(s3.port, hook=refused) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        result = sync.run(*ARGS, "--keep-runs", "1")
    assert result.code == 0, result.err
    assert "could not list the uploads of big.bin" in result.err, result.err
    sync.endpoint_url = None
    again = sync.run(*ARGS, "--keep-runs", "1")
    assert again.code == 0, again.err
    assert incomplete(s3client, sync.bucket) == []
