"""The multipart driver against moto's server in this process, through the recording fault
proxy: a fresh upload, a resume that sends only what the server lacks, uploads that vanish
or change underneath, and what is aborted or kept. Parts are 1 MiB (moto's 5 MiB minimum
lowered for the test), so each case moves a few MiB."""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import types
from concurrent.futures import ThreadPoolExecutor

import moto.s3.models
from moto.core import DEFAULT_ACCOUNT_ID
import pytest
import tenacity
from botocore.exceptions import ClientError

from journalsync.config import MiB
from journalsync.errors import Interrupted
from journalsync.journal import Journal
from journalsync.models import Action, PlanItem
from journalsync.multipart import S3_MAX_OBJECT, FileChanged, MultipartDriver, UploadGone
from journalsync.objectmeta import file_identity
from journalsync.retry import Attempts
from tests.mutation_support.s3env import ClientFactory, code_of, make_config, use_server_env
from tests.support.proxy import Fault, RecordingProxy



on_moto = pytest.mark.parametrize("s3", ["moto"], indirect=True)  # in this process: seconds

SIZE = 3 * MiB + 100  # four parts of 1 MiB, the last one short


class World:
    """A source file, a journal, a proxy in front of moto and a driver wired to them."""

    def __init__(self, s3, bucket, tmp_path, proxy, **cfg):
        self.s3, self.bucket, self.proxy, self.tmp = s3, bucket, proxy, tmp_path
        self.client = s3.client()
        self.path = tmp_path / "big.bin"
        self.write(b"a")
        self.journal = Journal(tmp_path / "j.sqlite")
        self.run_id = self.journal.start_run("src", "dest", None, False)
        cfg.setdefault("part_size", MiB)
        cfg.setdefault("workers", 1)
        self.cfg = make_config(proxy.endpoint_url, bucket, tmp_path, **cfg)
        self.clients = ClientFactory(self.cfg)
        self.pool = ThreadPoolExecutor(2)
        self.stop = threading.Event()
        self.driver = MultipartDriver(self.cfg, self.journal, self.run_id, self.clients,
                                      self.pool, self.stop)

    def write(self, fill: bytes, size: int = SIZE) -> bytes:
        data = (fill * size)[:size]
        self.path.write_bytes(data)
        self.data = data
        return data

    def item(self, sha: str | None = "auto", identity: bool = True) -> PlanItem:
        sha = hashlib.sha256(self.data).hexdigest() if sha == "auto" else sha
        st = os.stat(self.path)
        ident = (st.st_mtime_ns, st.st_ctime_ns, st.st_ino) if identity else (None,) * 3
        return PlanItem(1, "big.bin", Action.UPLOAD, "new file", st.st_size, sha,
                        "big.bin", *ident)

    def upload(self, item: PlanItem | None = None):
        counter = Attempts()
        with open(self.path, "rb") as fh:  # as Uploader does, through safeio's descriptor
            return self.driver.upload(item or self.item(), str(self.path), counter, fh), counter

    def ops(self) -> list[str]:
        return [r.operation for r in self.proxy.requests]

    def part_numbers(self) -> list[int]:
        return sorted(int(r.query["partNumber"][0]) for r in self.proxy.requests
                      if r.operation == "UploadPart")

    def stored(self) -> tuple[bytes, dict]:
        obj = self.client.get_object(Bucket=self.bucket, Key="pre/big.bin")
        return obj["Body"].read(), obj["Metadata"]

    def active(self):
        return self.journal.active_upload_for("big.bin")

    def states(self) -> dict[str, str]:
        """{UploadId: state} of every upload the journal knows."""
        with self.journal._write() as conn:
            return dict(conn.exec_driver_sql("SELECT upload_id, state FROM multipart_uploads").all())


@pytest.fixture
def world(s3, bucket, tmp_path, monkeypatch):
    use_server_env(monkeypatch, tmp_path, s3)
    monkeypatch.setattr(moto.s3.models, "S3_UPLOAD_PART_MIN_SIZE", 1)
    with RecordingProxy(s3.port) as proxy:
        made: list[World] = []

        def make(**cfg) -> World:
            made.append(World(s3, bucket, tmp_path, proxy, **cfg))
            return made[-1]

        yield make
        for w in made:
            w.pool.shutdown()
            w.journal.close()


def on(operation, fault, number=None):
    """A hook that answers `operation` (part `number`, if given) with `fault`."""
    def hook(req):
        if req.operation == operation and (number is None or req.query.get("partNumber") == [str(number)]):
            return fault
        return None
    return hook


@on_moto
def test_a_fresh_upload(world):
    w = world()
    result, counter = w.upload()
    sha = hashlib.sha256(w.data).hexdigest()
    head = w.client.head_object(Bucket=w.bucket, Key="pre/big.bin")
    assert (result.item_id, result.key, result.ok, result.attempts, result.bytes_sent,
            result.size, result.etag, result.sha256) == (
        1, "big.bin", True, counter.count, SIZE, SIZE, head["ETag"].strip('"'), sha)
    assert counter.count == 1  # one try of the data: Create and Complete do not count
    assert w.stored() == (w.data, {"sha256": sha, "mtime": head["Metadata"]["mtime"]})
    assert w.ops() == ["CreateMultipartUpload"] + ["UploadPart"] * 4 + [
        "CompleteMultipartUpload", "HeadObject"]
    assert w.part_numbers() == [1, 2, 3, 4]
    assert w.active() is None  # completed
    upload_id = w.proxy.requests[1].query["uploadId"][0]
    assert sorted(w.journal.part_etags(upload_id)) == [1, 2, 3, 4]
    assert w.states() == {upload_id: "completed"}


@on_moto
@pytest.mark.parametrize("bwlimit, rto_cap, by_crt", [
    (None, False, True),
    (100e6, False, False),  # paced: the CRT reads bodies at its own pace
    (None, True, False),  # botocore's sockets ride out a dropped link (clients.link_options)
])
def test_parts_go_through_awscrt_unless_paced_or_botocore_rides_out_flaps(world, bwlimit, rto_cap, by_crt):
    w = world(crt=True, bwlimit=bwlimit)
    w.clients.link_options = [(socket.IPPROTO_TCP, 44, 1000)] if rto_cap else []
    crt = w.clients.crt()
    assert crt is not None
    sent_by_crt = []
    real = crt.upload_part

    def spy(key, upload_id, number, data, md5, length=None):
        sent_by_crt.append(number)
        return real(key, upload_id, number, data, md5, length)

    crt.upload_part = spy
    result, _ = w.upload()
    assert result.ok and w.stored()[0] == w.data
    assert sorted(sent_by_crt) == ([1, 2, 3, 4] if by_crt else [])


@on_moto
def test_an_empty_part_list_is_never_sent_for_a_small_file(world):
    w = world()
    w.write(b"s", 10)
    result, _ = w.upload()
    assert result.ok and w.part_numbers() == [1] and w.stored()[0] == w.data


@on_moto
def test_a_large_file_gets_larger_parts(world):
    w = world()
    w.write(b"q", SIZE)
    w.driver.cfg = w.cfg  # the part size is recorded with the upload, before any part
    item = w.item()
    rec = w.driver._create(item, os.stat(w.path), item.sha256)
    assert (rec.part_size, rec.size, rec.sha256, rec.state) == (MiB, SIZE, item.sha256, "active")
    assert w.active().upload_id == rec.upload_id


@on_moto
def test_a_resume_sends_only_the_parts_the_server_lacks(world, caplog):
    w = world()
    w.proxy.hook = on("UploadPart", Fault(status=500, code="InternalError"), number=3)
    with pytest.raises(ClientError):
        w.upload()
    rec = w.active()
    assert rec is not None  # a retryable failure keeps the upload for the next run
    held = sorted(w.journal.part_etags(rec.upload_id))
    assert 3 not in held and 1 in held
    w.proxy.hook = None
    w.proxy.clear()
    caplog.set_level(logging.INFO, logger="journalsync.multipart")
    result, _ = w.upload()
    assert result.ok and w.stored()[0] == w.data
    assert f"resuming upload of big.bin: the server holds {len(held)} part(s)" in caplog.messages
    assert w.part_numbers() == [n for n in (1, 2, 3, 4) if n not in held]
    assert result.bytes_sent == sum(len(w.data[(n - 1) * MiB:n * MiB])
                                    for n in w.part_numbers())
    assert w.ops()[:1] == ["ListParts"] and "CreateMultipartUpload" not in w.ops()


@on_moto
def test_a_retried_part_counts_its_bytes_twice(world, monkeypatch):
    monkeypatch.setattr(tenacity.nap, "time", types.SimpleNamespace(sleep=lambda s: None))
    w = world(retry_attempts=2)
    refused = []

    def refuse_part_3_once(req):
        if req.operation == "UploadPart" and req.query["partNumber"] == ["3"] and not refused:
            refused.append(req)
            return Fault(status=500, code="InternalError")
        return None
    w.proxy.hook = refuse_part_3_once
    result, _ = w.upload()
    assert result.ok and w.part_numbers() == [1, 2, 3, 3, 4]
    assert result.bytes_sent == SIZE + MiB


@on_moto
def test_a_held_part_with_an_unknown_etag_is_sent_again(world):
    w = world()
    w.proxy.hook = on("UploadPart", Fault(status=500, code="InternalError"), number=3)
    with pytest.raises(ClientError):
        w.upload()
    rec = w.active()
    with w.journal._write() as conn:  # the journal lost part 1's row (a crash before it)
        conn.exec_driver_sql("DELETE FROM multipart_parts WHERE part_number = 1")
    # ... and the server holds other bytes under part 1 than the file's first MiB
    w.client.upload_part(Bucket=w.bucket, Key="pre/big.bin", UploadId=rec.upload_id,
                         PartNumber=1, Body=b"z" * MiB)
    w.proxy.hook = None
    w.proxy.clear()
    result, _ = w.upload()
    assert result.ok and w.stored()[0] == w.data
    assert 1 in w.part_numbers() and 3 in w.part_numbers()


@on_moto
def test_a_held_part_matching_our_bytes_is_reused_and_journaled(world):
    w = world()
    w.proxy.hook = on("UploadPart", Fault(status=500, code="InternalError"), number=3)
    with pytest.raises(ClientError):
        w.upload()
    rec = w.active()
    with w.journal._write() as conn:  # the part reached the server, its row did not
        conn.exec_driver_sql("DELETE FROM multipart_parts WHERE part_number = 1")
    w.proxy.hook = None
    w.proxy.clear()
    result, _ = w.upload()
    assert result.ok and 1 not in w.part_numbers()
    assert 1 in w.journal.part_etags(rec.upload_id)


@on_moto
def test_a_refused_part_aborts_the_upload(world):
    w = world()
    w.proxy.hook = on("UploadPart", Fault(status=400, code="InvalidArgument"), number=2)
    with pytest.raises(ClientError) as info:
        w.upload()
    assert code_of(info.value) == "InvalidArgument"
    assert w.ops()[-1] == "AbortMultipartUpload" and list(w.states().values()) == ["aborted"]
    assert w.client.list_multipart_uploads(Bucket=w.bucket).get("Uploads", []) == []


@on_moto
def test_a_fatal_error_keeps_the_upload(world):
    w = world()
    w.proxy.hook = on("UploadPart", Fault(status=403, code="AccessDenied"), number=2)
    with pytest.raises(ClientError):
        w.upload()
    assert "AbortMultipartUpload" not in w.ops() and w.active() is not None


@on_moto
def test_an_abort_that_fails_leaves_the_upload_active(world, caplog):
    w = world()
    w.proxy.hook = lambda req: (Fault(status=400, code="InvalidArgument")
                                if req.operation in ("UploadPart", "AbortMultipartUpload") else None)
    caplog.set_level(logging.WARNING, logger="journalsync.multipart")
    with pytest.raises(ClientError):
        w.upload()
    assert w.active() is not None
    [message] = caplog.messages
    assert message.startswith("could not abort upload of big.bin: An error occurred (InvalidArgument)")


@on_moto
def test_abort_of_an_upload_the_server_forgot(world):
    w = world()
    item = w.item()
    rec = w.driver._create(item, os.stat(w.path), item.sha256)
    w.client.abort_multipart_upload(Bucket=w.bucket, Key="pre/big.bin", UploadId=rec.upload_id)
    w.driver.abort("big.bin", rec.upload_id)  # NoSuchUpload: already gone, fine
    assert w.states() == {rec.upload_id: "aborted"}
    w.proxy.hook = on("AbortMultipartUpload", Fault(status=403, code="AccessDenied"))
    rec = w.driver._create(item, os.stat(w.path), item.sha256)
    with pytest.raises(ClientError):
        w.driver.abort("big.bin", rec.upload_id)
    assert w.active().upload_id == rec.upload_id


@on_moto
def test_a_file_changed_during_the_upload_is_not_completed(world):
    w = world()

    def rewrite_during_part_2(req):
        if req.operation == "UploadPart" and req.query["partNumber"] == ["2"]:
            w.path.write_bytes(w.data[:-1] + b"!")  # same size, new bytes, new mtime
    w.proxy.hook = rewrite_during_part_2
    with pytest.raises(FileChanged, match="^changed during upload; the upload was aborted"):
        w.upload()
    assert "CompleteMultipartUpload" not in w.ops() and w.ops()[-1] == "AbortMultipartUpload"
    assert list(w.states().values()) == ["aborted"]


@on_moto
def test_a_planned_hash_is_trusted_only_while_the_file_is_as_planned(world):
    w = world()
    wrong = "0" * 64
    with pytest.raises(FileChanged):  # identity as planned: the plan's hash is used ...
        w.upload(w.item(sha=wrong))  # ... and the bytes do not match it: nothing completes
    assert w.ops()[-1] == "AbortMultipartUpload"
    result, _ = w.upload(w.item(sha=wrong, identity=False))  # not as planned: hashed again
    assert result.ok and result.sha256 == hashlib.sha256(w.data).hexdigest()
    result, _ = w.upload(w.item(sha=None))
    assert result.ok and w.stored()[1]["sha256"] == hashlib.sha256(w.data).hexdigest()


@on_moto
def test_a_file_that_changes_while_it_is_hashed_fails(world, monkeypatch):
    import journalsync.multipart as multipart

    w = world(large_files="prehash")  # auto streams here (moto's bucket is not versioned)
    real = multipart.prehash

    def digest_then_touch(fh, part_size, **kw):
        result = real(fh, part_size, **kw)
        with open(w.path, "ab") as out:
            out.write(b"+")
        return result

    monkeypatch.setattr(multipart, "prehash", digest_then_touch)
    with pytest.raises(FileChanged, match="^kept changing while it was hashed"):
        w.upload(w.item(sha=None))
    assert w.ops() == []


@on_moto
def test_an_active_upload_for_a_changed_file_is_aborted_and_replaced(world, caplog):
    w = world()
    w.proxy.hook = on("UploadPart", Fault(status=500, code="InternalError"), number=3)
    with pytest.raises(ClientError):
        w.upload()
    old = w.active().upload_id
    w.write(b"b")
    w.proxy.hook = None
    w.proxy.clear()
    caplog.set_level(logging.INFO, logger="journalsync.multipart")
    result, _ = w.upload()
    assert result.ok and w.stored()[0] == w.data
    assert w.ops()[:2] == ["AbortMultipartUpload", "CreateMultipartUpload"]
    assert w.proxy.requests[0].query["uploadId"] == [old]
    assert "big.bin changed since its upload began; aborting that upload" in caplog.messages


@on_moto
def test_an_active_upload_for_a_touched_file_is_replaced_too(world):
    """Same bytes, new mtime: the identity the upload was journaled with no longer holds."""
    w = world()
    w.proxy.hook = on("UploadPart", Fault(status=500, code="InternalError"), number=3)
    with pytest.raises(ClientError):
        w.upload()
    st = os.stat(w.path)
    os.utime(w.path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    w.proxy.hook = None
    w.proxy.clear()
    result, _ = w.upload()
    assert result.ok and w.ops()[:2] == ["AbortMultipartUpload", "CreateMultipartUpload"]


@pytest.mark.parametrize("s3", ["rclone"], indirect=True)  # moto never checks Content-MD5
def test_a_part_damaged_on_the_way_is_refused_and_sent_again(world):
    """One bit of part 2 flipped after botocore signed it (as a bad NIC or proxy would):
    Content-MD5 makes the server refuse it (BadDigest) and the retry sends it whole."""
    w = world(retry_attempts=3)
    damaged = []

    def flip_a_bit(request, **_):
        if "partNumber=2" in request.url and not damaged:
            body = request.body.read() if hasattr(request.body, "read") else bytes(request.body)
            request.body = body[:100] + bytes([body[100] ^ 1]) + body[101:]
            damaged.append(request.url)

    w.clients._session.register("before-send.s3.UploadPart", flip_a_bit)
    result, counter = w.upload()
    assert damaged and result.ok and w.stored()[0] == w.data  # the damage never landed
    assert w.part_numbers().count(2) >= 2  # part 2 was refused, then sent again
    # (rclone sometimes forgets the upload after a BadDigest; the driver then starts anew)


@on_moto
def test_an_active_upload_the_server_forgot_is_replaced(world, caplog):
    w = world()
    w.proxy.hook = on("UploadPart", Fault(status=500, code="InternalError"), number=3)
    with pytest.raises(ClientError):
        w.upload()
    old = w.active().upload_id
    w.client.abort_multipart_upload(Bucket=w.bucket, Key="pre/big.bin", UploadId=old)
    w.proxy.hook = None
    w.proxy.clear()
    caplog.set_level(logging.WARNING, logger="journalsync.multipart")
    result, _ = w.upload()
    assert result.ok and w.stored()[0] == w.data
    # ListParts: the upload is gone; HEAD: no object completed from it; then a new upload
    assert w.ops()[:3] == ["ListParts", "HeadObject", "CreateMultipartUpload"]
    assert w.part_numbers() == [1, 2, 3, 4]
    assert w.states()[old] == "aborted"
    assert caplog.messages == ["upload of big.bin is gone from the server; starting a new one"]


@on_moto
def test_list_parts_failing_otherwise_is_raised(world):
    w = world()
    w.proxy.hook = on("UploadPart", Fault(status=500, code="InternalError"), number=3)
    with pytest.raises(ClientError):
        w.upload()
    w.proxy.hook = on("ListParts", Fault(status=403, code="AccessDenied"))
    with pytest.raises(ClientError) as info:
        w.upload()
    assert code_of(info.value) == "AccessDenied" and w.active() is not None


@on_moto
def test_an_upload_that_vanishes_midway_is_started_once_more(world, caplog):
    w = world()
    gone = Fault(status=404, code="NoSuchUpload")  # what S3 says once a lifecycle rule aborted it
    uploads = []

    def vanish(times):
        def hook(req):
            if req.operation == "UploadPart" and req.query["partNumber"] == ["1"]:
                uploads.append(req.query["uploadId"][0])
                return gone if len(uploads) <= times else None
            return None
        return hook

    w.proxy.hook = vanish(1)
    caplog.set_level(logging.WARNING, logger="journalsync.multipart")
    result, _ = w.upload()
    assert result.ok and w.stored()[0] == w.data
    assert w.ops().count("CreateMultipartUpload") == 2 and uploads[0] != uploads[1]
    assert w.states() == {uploads[0]: "aborted", uploads[1]: "completed"}
    assert caplog.messages == ["upload of big.bin vanished on the server; starting a new one"]
    uploads.clear()
    w.proxy.hook = vanish(2)
    with pytest.raises(UploadGone, match=r"^upload \S+ is gone$"):
        w.upload()
    assert w.journal.active_uploads() == []


@on_moto
def test_a_complete_retried_after_success_is_success(world):
    w = world()
    w.proxy.hook = on("CompleteMultipartUpload",
                      Fault(status=404, code="NoSuchUpload", after_forward=True))
    result, _ = w.upload()
    assert result.ok and w.stored()[0] == w.data
    assert w.ops().count("CreateMultipartUpload") == 1


@on_moto
def test_a_complete_that_never_happened_starts_over(world):
    w = world()
    w.client.put_object(Bucket=w.bucket, Key="pre/big.bin", Body=b"older")
    w.proxy.hook = lambda req: (Fault(status=404, code="NoSuchUpload")
                                if req.operation == "CompleteMultipartUpload"
                                and w.ops().count("CompleteMultipartUpload") == 1 else None)
    result, _ = w.upload()
    assert result.ok and w.stored()[0] == w.data
    assert w.ops().count("CreateMultipartUpload") == 2


@on_moto
def test_a_complete_that_never_happens_twice_gives_up(world):
    w = world()
    w.client.put_object(Bucket=w.bucket, Key="pre/big.bin", Body=b"older")
    w.proxy.hook = on("CompleteMultipartUpload", Fault(status=404, code="NoSuchUpload"))
    with pytest.raises(UploadGone, match=r"^upload \S+ vanished before Complete$"):
        w.upload()
    assert w.ops().count("CreateMultipartUpload") == 2
    assert sorted(w.states().values()) == ["aborted", "aborted"]


@on_moto
def test_a_complete_failing_otherwise_is_raised(world):
    w = world()
    w.proxy.hook = on("CompleteMultipartUpload", Fault(status=400, code="InvalidPart"))
    with pytest.raises(ClientError) as info:
        w.upload()
    assert code_of(info.value) == "InvalidPart"


@on_moto
def test_an_object_replaced_before_the_head_is_a_change(world):
    w = world()

    def overwrite_before_head(req):
        if req.operation == "HeadObject":
            w.client.put_object(Bucket=w.bucket, Key="pre/big.bin", Body=b"someone else")
    w.proxy.hook = overwrite_before_head
    with pytest.raises(FileChanged, match=r"^object after Complete does not match the file"):
        w.upload()


@on_moto
def test_a_same_size_object_with_other_metadata_is_a_change(world):
    w = world()

    def overwrite_before_head(req):
        if req.operation == "HeadObject":
            w.client.put_object(Bucket=w.bucket, Key="pre/big.bin", Body=w.data,
                                Metadata={"sha256": "1" * 64})
    w.proxy.hook = overwrite_before_head
    with pytest.raises(FileChanged):
        w.upload()


def _stop_on_create(w):
    """A hook that sets the run's stop as the upload is created: a signal after the
    create, before any part."""
    def hook(req):
        if req.operation == "CreateMultipartUpload":
            w.stop.set()
    return hook


@on_moto
def test_a_stop_keeps_the_upload_for_resume(world):
    w = world()
    w.proxy.hook = _stop_on_create(w)
    with pytest.raises(Interrupted, match="^stopped before every part was sent; --resume continues$"):
        w.upload()
    assert w.active() is not None and "AbortMultipartUpload" not in w.ops()


@on_moto
def test_a_stop_before_the_create_starts_no_upload(world):
    """Once the run is stopping nothing new is begun: the file is the next run's."""
    w = world()
    w.stop.set()
    with pytest.raises(Interrupted, match="^stopped before its upload began$"):
        w.upload()
    assert w.active() is None and w.ops() == []


def test_a_stop_ends_the_read_that_proves_a_completed_upload(tmp_path):
    """LargeFiles.finish_completed (run --resume, and stamp_leftovers before a plain run's
    scan) reads the whole file to prove the object's ETag: a read, not a byte sent, so a
    stop ends it at its next block and the next run reads again."""
    from journalsync.journal.uploads import STREAM_MARK, UploadRecord
    from journalsync.objectmeta import mtime_text
    from journalsync.stamp import LargeFiles

    path = tmp_path / "big.bin"
    path.write_bytes(bytes(3 * 8 * MiB))
    st = os.stat(path)
    stop = threading.Event()
    stop.set()
    large = LargeFiles(None, None, None, stop)  # type: ignore[arg-type]
    large._head = lambda key: {"ContentLength": st.st_size, "ETag": '"0123-3"', "Metadata": {
        "sha256-pending": "1", "mtime": mtime_text(st.st_mtime_ns)}}
    rec = UploadRecord("u1", "big.bin", 1, 8 * MiB, *file_identity(st), STREAM_MARK, 1.0,
                       "active")
    item = PlanItem(1, "big.bin", Action.UPLOAD, "new", st.st_size)
    with open(path, "rb") as fh, pytest.raises(Interrupted, match="^stopped while reading"):
        large.finish_completed(item, rec, fh, st, Attempts())


@on_moto
def test_over_five_tib_is_refused_before_any_request(world):
    w = world()
    os.truncate(w.path, S3_MAX_OBJECT + 1)  # sparse: no disk used
    with pytest.raises(OSError, match=f"^file is {S3_MAX_OBJECT + 1} bytes, over S3's 5 TiB"):
        w.upload(w.item(sha="0" * 64))
    assert w.ops() == []


@on_moto
def test_list_parts_of_an_upload_without_parts(world):
    w = world()
    item = w.item()
    rec = w.driver._create(item, os.stat(w.path), item.sha256)
    assert w.driver.list_parts("big.bin", rec.upload_id) == {}


@on_moto
def test_an_empty_file_is_one_empty_part(world):
    w = world()
    w.write(b"", 0)
    result, _ = w.upload()
    assert result.ok and w.part_numbers() == [1] and w.stored()[0] == b""


@on_moto
def test_exactly_five_tib_is_allowed(world):
    w = world()
    os.truncate(w.path, S3_MAX_OBJECT)  # sparse; the stop keeps any part from being read
    w.proxy.hook = _stop_on_create(w)
    with pytest.raises(Interrupted):
        w.upload(w.item(sha="0" * 64))
    assert w.ops() == ["CreateMultipartUpload"]


@on_moto
def test_list_parts_reads_every_page(world):
    w = world()
    item = w.item()
    rec = w.driver._create(item, os.stat(w.path), item.sha256)
    # 1002 parts, more than one ListParts page, seeded straight into the server's state
    # (moto runs in this process): 1002 UploadPart requests would take a minute.
    backend = moto.s3.models.s3_backends[DEFAULT_ACCOUNT_ID]["global"]
    for number in range(1, 1003):
        backend.upload_part(w.bucket, rec.upload_id, number, b"%d" % number)
    w.proxy.clear()
    held = w.driver.list_parts("big.bin", rec.upload_id)
    assert sorted(held) == list(range(1, 1003))
    assert held[1002] == (f'"{hashlib.md5(b"1002").hexdigest()}"', 4)
    assert w.ops() == ["ListParts", "ListParts"]


@on_moto
def test_a_damaged_part_never_earns_fewer_new_uploads_than_no_reason(world):
    """With one attempt per request, an upload that vanished after a part of it was refused
    as damaged is still started once more, as one that vanished for no reason is."""
    w = world(retry_attempts=1)
    uploads: list[str] = []
    part_2_refused = threading.Event()

    def hook(req):
        if req.operation != "UploadPart":
            return None
        upload = req.query["uploadId"][0]
        if upload not in uploads:
            uploads.append(upload)
        if upload != uploads[0]:
            return None
        if req.query["partNumber"] == ["2"]:
            part_2_refused.set()
            return Fault(status=400, code="BadDigest")
        # part 1 is answered once part 2 is on its way (two parts in flight), so the
        # driver has heard both before it decides
        part_2_refused.wait(30)
        return Fault(status=404, code="NoSuchUpload")

    w.proxy.hook = hook
    result, _ = w.upload()
    assert result.ok and w.stored()[0] == w.data
    assert w.ops().count("CreateMultipartUpload") == 2
