"""Stream then stamp (issue 14, stamp.py): a large file the scan did not hash is read once,
its parts sent as they are hashed, and its sha256 written after Complete by a copy of the
object onto itself. Against all three servers, through the recording proxy; crashes are
real SIGKILLs of the CLI, the journal is read with plain sqlite3 or psycopg."""

from __future__ import annotations

import hashlib
import mmap
import os
import random
import signal
import time

import pytest
from botocore.exceptions import ClientError

from tests.faults.test_multipart_crash import (
    ARGS,
    PART,
    incomplete,
    journal_parts,
    journal_rows,
    kill_mid_upload,
    object_sha,
    part_numbers,
    slow_parts,
)
from tests.support.proxy import Fault, RecordingProxy

pytestmark = pytest.mark.slow


def copies(proxy) -> int:
    """CopyObject requests (a PUT with x-amz-copy-source: the proxy calls it PutObject)."""
    return sum(1 for r in proxy.requests if r.method == "PUT" and r.header("x-amz-copy-source"))


def meta(client, bucket, key) -> dict[str, str]:
    """The object's user metadata, keys lower-cased (rclone serve s3 title-cases them)."""
    head = client.head_object(Bucket=bucket, Key=key)
    return {k.lower(): v for k, v in head["Metadata"].items()}


def upload_rows(sync) -> list[tuple[str, str, str | None]]:
    return journal_rows(sync, "SELECT sha256, state, complete_etag FROM multipart_uploads "
                              "ORDER BY created_at")


def test_streamed_file_is_stamped_with_its_sha256(sync, s3, s3client):
    big = random.Random(21).randbytes(3 * PART + 12345)
    sync.write("big.bin", big)
    sync.write("small.txt", b"small")
    with RecordingProxy(s3.port) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        result = sync.run(*ARGS)
    assert result.code == 0, result.err
    sha = hashlib.sha256(big).hexdigest()
    key = sync.object_key("big.bin")
    assert object_sha(s3client, sync.bucket, key) == sha
    assert meta(s3client, sync.bucket, key)["sha256"] == sha
    assert "sha256-pending" not in meta(s3client, sync.bucket, key)
    ops = proxy.operations()
    assert ops["CreateMultipartUpload"] == 1 and ops["UploadPart"] == 4, ops
    assert copies(proxy) == 1
    assert upload_rows(sync) == [(f"stream:{sha}", "completed", upload_rows(sync)[0][2])]
    assert incomplete(s3client, sync.bucket) == []
    # The manifest holds the stamped object: a second run sends and copies nothing.
    with RecordingProxy(s3.port) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        again = sync.run(*ARGS, "--json")
    assert again.code == 0, again.err
    assert '"uploaded": 0' in again.out
    assert copies(proxy) == 0 and proxy.operations()["UploadPart"] == 0


def test_prehash_option_creates_with_the_sha256(sync, s3, s3client):
    big = random.Random(22).randbytes(2 * PART + 7)
    sync.write("big.bin", big)
    with RecordingProxy(s3.port) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        result = sync.run(*ARGS, "--large-files", "prehash")
    assert result.code == 0, result.err
    sha = hashlib.sha256(big).hexdigest()
    assert copies(proxy) == 0
    assert upload_rows(sync)[0][:2] == (sha, "completed")
    assert meta(s3client, sync.bucket, sync.object_key("big.bin"))["sha256"] == sha


def test_bad_large_files_value_is_a_usage_error(sync):
    result = sync.run("--large-files", "sometimes")
    assert result.code == 2
    assert "--large-files must be auto, stream or prehash" in result.err


def test_file_changed_mid_stream_is_aborted(sync, s3, s3client):
    rnd = random.Random(23)
    path = sync.write("big.bin", rnd.randbytes(6 * PART))
    with RecordingProxy(s3.port, hook=slow_parts(0.3)) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        proc = sync.start(*sync.run_args(*ARGS, "--workers", "1"))
        deadline = time.monotonic() + 60
        while journal_parts(sync) < 1:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.005)
        with open(path, "r+b") as fh:  # same size, other bytes
            fh.seek(5 * PART)
            fh.write(rnd.randbytes(100))
        out, err = proc.communicate(timeout=120)
    assert proc.returncode != 0, (out, err)
    assert "changed during upload" in err
    ops = proxy.operations()
    assert ops["AbortMultipartUpload"] == 1 and ops["CompleteMultipartUpload"] == 0, ops
    assert copies(proxy) == 0
    with pytest.raises(ClientError):
        s3client.head_object(Bucket=sync.bucket, Key=sync.object_key("big.bin"))
    assert incomplete(s3client, sync.bucket) == []
    assert [r[1] for r in upload_rows(sync)] == ["aborted"]


@pytest.mark.parametrize("again", [(), ("--resume",)], ids=["run", "resume"])
def test_kill_after_complete_before_stamp_then_stamp_only(sync, s3, s3client, again):
    big = random.Random(24).randbytes(3 * PART + 99)
    sync.write("big.bin", big)
    sha = hashlib.sha256(big).hexdigest()

    kill_before_stamp(sync, s3)
    (row,) = upload_rows(sync)
    assert row[0] == f"stream:{sha}" and row[1] == "unstamped" and row[2]
    key = sync.object_key("big.bin")
    assert "sha256" not in meta(s3client, sync.bucket, key)  # completed, not stamped
    with RecordingProxy(s3.port) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        result = sync.run(*ARGS, *again)
    assert result.code == 0, result.err
    ops = proxy.operations()
    assert ops["UploadPart"] == 0 and ops["CreateMultipartUpload"] == 0, ops
    assert copies(proxy) == 1, (ops, result.out, result.err)
    sent = sum(r.size for r in proxy.requests)
    assert sent < PART, f"{sent} bytes sent to stamp"
    assert " sent=0 " in result.out, result.out
    assert meta(s3client, sync.bucket, key)["sha256"] == sha
    assert object_sha(s3client, sync.bucket, key) == sha
    assert [r[1] for r in upload_rows(sync)] == ["completed"]


def kill_before_stamp(sync, s3) -> None:
    """Run until the upload is completed but not stamped (its stamp held at the proxy),
    then SIGKILL the run."""
    def hold_copies(req):  # the stamp waits here until the kill
        return Fault(status=0, stall=60, stall_at=1.0) if req.header("x-amz-copy-source") else None

    with RecordingProxy(s3.port, hook=hold_copies) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        proc = sync.start(*sync.run_args(*ARGS))
        deadline = time.monotonic() + 60
        while not any(r[1] == "unstamped" for r in upload_rows_safe(sync)):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def upload_rows_safe(sync):
    try:
        return upload_rows(sync)
    except Exception:  # noqa: BLE001 - the journal is not created or migrated yet
        return []


def test_kill_after_complete_then_file_changed_uploads_again(sync, s3, s3client):
    rnd = random.Random(25)
    path = sync.write("big.bin", rnd.randbytes(2 * PART + 5))
    kill_before_stamp(sync, s3)
    new = rnd.randbytes(2 * PART + 5)
    path.write_bytes(new)
    with RecordingProxy(s3.port) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        result = sync.run(*ARGS)
    assert result.code == 0, result.err
    assert proxy.operations()["UploadPart"] == 3
    sha = hashlib.sha256(new).hexdigest()
    assert meta(s3client, sync.bucket, sync.object_key("big.bin"))["sha256"] == sha
    assert object_sha(s3client, sync.bucket, sync.object_key("big.bin")) == sha


def test_kill_mid_parts_resume_sends_only_missing_parts(sync, s3, s3client):
    big = random.Random(26).randbytes(8 * PART + 3)
    sync.write("big.bin", big)
    with RecordingProxy(s3.port, hook=slow_parts(0.1)) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        kill_mid_upload(sync, proxy, 3, 0.0, *ARGS, "--workers", "1")
        journaled = {n for (n,) in journal_rows(sync, "SELECT part_number FROM multipart_parts")}
        assert upload_rows(sync)[0][:2] == ("stream:", "active")
        (upload_id,), = journal_rows(sync, "SELECT upload_id FROM multipart_uploads")
        # A part the store took but whose answer the kill cut off (the proxy's write to the
        # killed client fails) is held, not journaled: ListParts shows it, and it is not sent again.
        held = {p["PartNumber"] for p in s3client.list_parts(
            Bucket=sync.bucket, Key=sync.object_key("big.bin"),
            UploadId=upload_id).get("Parts", ())}
        assert journaled <= held and len(held - journaled) <= 1, (journaled, held)
        proxy.clear()
        result = sync.run(*ARGS, "--resume")
    assert result.code == 0, result.err
    ops = proxy.operations()
    assert ops["CreateMultipartUpload"] == 0 and ops["ListParts"] == 1, ops
    resent = set(part_numbers(proxy))
    assert not resent & held, "a part the store held was sent again"
    assert resent | held == set(range(1, 10))
    assert copies(proxy) == 1
    sha = hashlib.sha256(big).hexdigest()
    assert meta(s3client, sync.bucket, sync.object_key("big.bin"))["sha256"] == sha
    assert object_sha(s3client, sync.bucket, sync.object_key("big.bin")) == sha
    assert incomplete(s3client, sync.bucket) == []


def test_refused_copy_falls_back_to_prehash(sync, s3, s3client):
    rnd = random.Random(27)
    files = {f"big{i}.bin": rnd.randbytes(2 * PART + i) for i in range(2)}
    for name, data in files.items():
        sync.write(name, data)

    def refuse_copies(req):
        return Fault(status=501, code="NotImplemented") if req.header("x-amz-copy-source") else None

    with RecordingProxy(s3.port, hook=refuse_copies) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        result = sync.run(*ARGS, "--workers", "1")
    assert result.code == 0, result.err
    assert result.err.count("the store refuses copies") == 1, result.err
    assert copies(proxy) == 1  # the first file's; none after it
    for name, data in files.items():
        sha = hashlib.sha256(data).hexdigest()
        assert meta(s3client, sync.bucket, sync.object_key(name))["sha256"] == sha
        assert object_sha(s3client, sync.bucket, sync.object_key(name)) == sha
    assert incomplete(s3client, sync.bucket) == []


@pytest.mark.pg_server("moto")
def test_versioned_bucket_is_prehashed(sync, s3, s3client):
    if s3.name != "moto":
        pytest.skip("versioning: moto's (rclone serve s3 has none; SeaweedFS's not tried)")
    s3client.put_bucket_versioning(Bucket=sync.bucket, VersioningConfiguration={"Status": "Enabled"})
    big = random.Random(28).randbytes(2 * PART + 1)
    sync.write("big.bin", big)
    with RecordingProxy(s3.port) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        result = sync.run(*ARGS)
    assert result.code == 0, result.err
    sha = hashlib.sha256(big).hexdigest()
    assert copies(proxy) == 0
    assert upload_rows(sync)[0][:2] == (sha, "completed")
    key = sync.object_key("big.bin")
    assert meta(s3client, sync.bucket, key)["sha256"] == sha
    versions = s3client.list_object_versions(Bucket=sync.bucket, Prefix=key)["Versions"]
    assert len(versions) == 1


@pytest.mark.one_server
def test_streamed_parts_in_flight_count_their_two_copies(sync, s3, s3client):
    """A streamed part is held twice while it is sent (our buffer, the sender's copy), so at
    most PART_MEMORY // (2 x part size) of them are in flight: 4 with 5 MiB parts, where 8
    workers would otherwise send 8 (peak RSS on 8 x 1 GiB: 186 MB before, 137 MB after)."""
    big = random.Random(31).randbytes(12 * PART + 7)
    sync.write("big.bin", big)
    with RecordingProxy(s3.port, hook=slow_parts(0.3)) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        result = sync.run(*ARGS, "--large-files", "stream", "--workers", "8")
    assert result.code == 0, result.err
    assert 2 <= proxy.peak_in_flight() <= 4
    assert meta(s3client, sync.bucket, sync.object_key("big.bin"))["sha256"] == \
        hashlib.sha256(big).hexdigest()


@pytest.mark.pg_server("moto")
def test_a_storage_class_with_a_minimum_duration_is_prehashed(sync, s3, s3client):
    """STANDARD_IA: the copy would replace an object billed for 30 days at least (an early
    deletion), so auto pre-hashes; no copy is made, and the object is in its class."""
    if s3.name != "moto":
        pytest.skip("storage classes: moto's (rclone serve s3 keeps none)")
    big = random.Random(30).randbytes(2 * PART + 5)
    sync.write("big.bin", big)
    with RecordingProxy(s3.port) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        result = sync.run(*ARGS, "--storage-class", "STANDARD_IA")
    assert result.code == 0, result.err
    sha = hashlib.sha256(big).hexdigest()
    assert copies(proxy) == 0
    key = sync.object_key("big.bin")
    head = s3client.head_object(Bucket=sync.bucket, Key=key)
    assert head["Metadata"]["sha256"] == sha
    assert head.get("StorageClass") == "STANDARD_IA"


@pytest.mark.pg_server("moto")
def test_job_file_large_files_setting(sync, s3, s3client, tmp_path):
    if s3.name != "moto":
        pytest.skip("plumbing: one server is enough")
    big = random.Random(29).randbytes(2 * PART + 3)
    sync.write("big.bin", big)
    job = tmp_path / "job.toml"
    job.write_text('large_files = "prehash"\nmultipart_threshold = "5MiB"\npart_size = "5MiB"\n')
    with RecordingProxy(s3.port) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        result = sync.run("--config", str(job))
    assert result.code == 0, result.err
    assert copies(proxy) == 0
    assert upload_rows(sync)[0][:2] == (hashlib.sha256(big).hexdigest(), "completed")
    job.write_text('large_files = 3\n')
    bad = sync.run("--config", str(job))
    assert bad.code == 2 and "large_files must be a string" in bad.err


@pytest.mark.parametrize("resume", [False, True], ids=["plain", "resume"])
def test_a_held_part_whose_bytes_changed_unseen_is_sent_again(sync, s3, s3client, resume):
    """Found by a soak: a streamed upload killed after some parts; part 1's bytes then
    change with no timestamp moving (a write through a mapping whose page was faulted in
    before: the kernel moves mtime and ctime on the first write fault only). The next run
    kept part 1 by its journaled ETag, hashed the bytes it read now and stamped that hash:
    the object's sha256 was not the hash of its bytes, and `verify` said all was well. A
    streamed held part is now reused only when its ETag is the MD5 of the bytes read now;
    one of ours with other bytes now ends that upload and the file goes whole in a new
    one (rclone serve s3 refuses a part sent again with other bytes)."""
    if not resume and s3.name != "rclone":
        pytest.skip("a plain run takes the same path as --resume; rclone's is the store that "
                    "refuses a part sent again")
    path = sync.write("big.bin", random.Random(27).randbytes(4 * PART + 3))
    with open(path, "r+b") as fh, mmap.mmap(fh.fileno(), 0) as mapped:
        mapped[100:101] = mapped[100:101]  # the write fault: timestamps move now, not later
        time.sleep(2.2)  # past the racy window: the scan trusts the stat
        with RecordingProxy(s3.port, hook=slow_parts(0.1)) as proxy:
            sync.endpoint_url = proxy.endpoint_url
            kill_mid_upload(sync, proxy, 2, 0.0, *ARGS, "--workers", "1",
                            "--large-files", "stream")
            before = os.stat(path)
            mapped[100:108] = b"EDITEDV2"
            mapped.flush()
            after = os.stat(path)
            assert (before.st_mtime_ns, before.st_ctime_ns) == (after.st_mtime_ns, after.st_ctime_ns)
            proxy.clear()
            result = sync.run(*ARGS, "--large-files", "stream", *(["--resume"] if resume else []))
    assert result.code == 0, result.err
    key = sync.object_key("big.bin")
    stored = s3client.get_object(Bucket=sync.bucket, Key=key)["Body"].read()
    assert stored == path.read_bytes()
    assert meta(s3client, sync.bucket, key)["sha256"] == hashlib.sha256(stored).hexdigest()
    assert proxy.operations()["CreateMultipartUpload"] == 1  # a new upload, sent whole
    assert sorted(part_numbers(proxy)) == [1, 2, 3, 4, 5]
    assert "timestamps did not move; sending it whole in a new upload" in result.err
    assert incomplete(s3client, sync.bucket) == []


@pytest.mark.one_server  # the client's slot accounting; the store's side is tested above
def test_two_held_parts_changed_unseen_do_not_exhaust_the_part_slots(sync, s3, s3client):
    """Review: _check_streamed_held raises HeldPartChanged with the part just read still
    holding its buffer slot and part slot (the FileChanged beside it gives them back,
    partsend.py's _done_with). Each restarted file leaks one of each: with --workers 1
    there are two, so the second such file's new upload waits for a slot for ever and the
    run hangs (on an SSE-KMS bucket every streamed resume with a held part raises it)."""
    from tests.support.hung import finish

    paths = [sync.write(name, random.Random(40 + i).randbytes(4 * PART + 3))
             for i, name in enumerate(["a.bin", "b.bin"])]
    files = [open(p, "r+b") for p in paths]
    maps = [mmap.mmap(fh.fileno(), 0) for fh in files]
    try:
        for mapped in maps:
            mapped[100:101] = mapped[100:101]  # the write fault now: timestamps move now
        time.sleep(2.2)
        with RecordingProxy(s3.port, hook=slow_parts(0.2)) as proxy:
            sync.endpoint_url = proxy.endpoint_url
            proc = sync.start(*sync.run_args(*ARGS, "--workers", "2", "--large-files", "stream"))
            deadline = time.monotonic() + 60
            while (sync.journal_rows("SELECT count(DISTINCT upload_id) FROM multipart_parts",
                                     if_any=True) or [(0,)])[0][0] < 2:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "no progress"
                time.sleep(0.01)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        for mapped in maps:
            mapped[100:108] = b"EDITEDV2"
            mapped.flush()
        sync.endpoint_url = None
        proc = sync.start(*sync.run_args(*ARGS, "--workers", "1", "--large-files", "stream"))
        out, err = finish(proc, 90)
    finally:
        for mapped in maps:
            mapped.close()
        for fh in files:
            fh.close()
    assert proc.returncode == 0, err
    for path in paths:
        key = sync.object_key(path.name)
        stored = s3client.get_object(Bucket=sync.bucket, Key=key)["Body"].read()
        assert stored == path.read_bytes()
    assert incomplete(s3client, sync.bucket) == []
