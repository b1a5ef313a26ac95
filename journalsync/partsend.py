"""A multipart upload's parts, sent: multipart.py's part pipeline, and the part senders that
sharedparts.py uses for a shared upload's units.

Parts are sent concurrently with Content-MD5, or with their CRC64-NVME where the store
checks that (integrity.py); each finished part (number, ETag, size) is journaled.
Pre-hashed parts are streamed by the CRT from the file and their CRC checked against the
pre-hash's; otherwise parts are read in order and hashed as they are read. A part the
server already holds (a resumed upload's ListParts) is reused when its size fits and its
ETag is the one we journaled or the MD5 of our bytes.

Parts in flight across all files, whichever file they are of, share one budget of slots
and buffers (PART_MEMORY), held here.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait

from botocore.exceptions import ClientError

from journalsync.clients import ClientFactory
from journalsync.config import Config, MiB
from journalsync.errors import Interrupted
from journalsync.integrity import MD5, BodyCheck, check_for, of_crc, of_md5
from journalsync.journal import Journal, UploadRecord
from journalsync.prehash import (
    BufferStream,
    PartBuffers,
    PartStream,
    PreHash,
    part_md5,
    read_into,
)
from journalsync.retry import Attempts, error_code

class FileChanged(Exception):
    """The file changed while it was being uploaded; the upload was not completed."""


class HeldPartChanged(FileChanged):
    """A part an earlier run sent holds other bytes than the file now: the upload cannot
    be continued, but the file can be sent whole in a new one."""


class UploadGone(Exception):
    """The server no longer knows the UploadId (a lifecycle rule or someone aborted it)."""


# The part buffers a run holds at once: with the default 8 MiB parts, six in flight. Peers
# for scale: rclone sends 4 parts of a file at once, s5cmd 5, aws cli up to 10.
PART_MEMORY = 48 * MiB
_MD5_HEX = re.compile(r"[0-9a-f]{32}")


def parts_in_flight(workers: int, part_size: int) -> int:
    """How many parts may be in flight across all files: the workers, as long as their
    buffers fit in PART_MEMORY, and never fewer than two (one sending, one being read)."""
    return max(2, min(workers, PART_MEMORY // part_size))


class PartSender:
    """Sends the parts of multipart uploads; one per run, shared by every file's upload
    (MultipartDriver's, and sharedparts.py's units), called from worker threads."""

    def __init__(self, cfg: Config, journal: Journal, clients: ClientFactory,
                 part_pool: ThreadPoolExecutor, stop: threading.Event):
        self.cfg = cfg
        self.journal = journal
        self.clients = clients
        self.part_pool = part_pool
        self.stop = stop
        self._damaged: set[str] = set()  # uploads a part of which was refused as damaged
        # Parts in flight across all files hold a part-size buffer each (ours on the
        # botocore path; the CRT's own on its path: it reads a whole request body into its
        # buffer before sending, measured as 8 MiB of peak RSS per 8 MiB part in flight):
        # bound them by PART_MEMORY as well as by the workers.
        self.part_slots = threading.BoundedSemaphore(parts_in_flight(cfg.workers, cfg.part_size))
        # A part read into a buffer of ours (a streamed file's) is held twice while it is
        # sent: in that buffer and in the sender's own copy (the CRT reads a body whole; the
        # botocore path sends bytes()). Those count double against PART_MEMORY (8 GiB tree:
        # 186 MB peak RSS with 6 such parts in flight).
        self.buffer_slots = threading.BoundedSemaphore(
            parts_in_flight(cfg.workers, 2 * cfg.part_size))
        self.buffers = PartBuffers(parts_in_flight(cfg.workers, cfg.part_size))

    def _call(self, fn, counter: Attempts | None = None):
        return self.clients.call(fn, counter)

    def send_parts(self, fh, rec: UploadRecord, held: dict, counter: Attempts,
                   pre: PreHash | None = None) -> tuple[list[dict], int, str]:
        """Read every part in order (hashing it, or with `pre` checking its CRC against the
        pre-hash's), reuse what the server holds, send the rest concurrently. Returns the
        parts for Complete, the bytes sent and the SHA-256 of the bytes read.

        `counter` gets the file's attempts as a single PUT's would count them: one for
        this pass over the file, plus one for every retried UploadPart (Create, ListParts
        and Complete carry no file data and are not counted)."""
        hasher = hashlib.sha256()
        # Pre-hashed, and the CRT sends: the CRT reads each part from the file as it sends
        # it (no part buffer of ours), with the pre-hash's Content-MD5, and the part's CRC
        # is checked against the pre-hash's (prehash.PartStream).
        crt = self.clients.crt() if pre is not None and self.clients.bandwidth is None else None
        part_tries: list[Attempts] = []  # one per part sent, read once every part ended
        journaled = self.journal.part_etags(rec.upload_id)
        reused: list[tuple[int, str, int]] = []
        futures: list[Future] = []
        # Set by a part's future when it fails: asking every earlier future before each
        # part cost parts^2/2 questions (10,000 parts: about 50 CPU-s, holding the GIL).
        failed = threading.Event()

        def note_failure(f: Future) -> None:
            if f.cancelled() or f.exception() is not None:
                failed.set()

        stopped = False
        try:
            for number in range(1, max(1, math.ceil(rec.size / rec.part_size)) + 1):
                if self.stop.is_set():
                    stopped = True
                    break
                if failed.is_set():
                    break
                if crt is not None:
                    length = min(rec.part_size, rec.size - (number - 1) * rec.part_size)
                    # Without the part's MD5 (the store checks CRCs), only the ETag we
                    # journaled when the store took the part proves a held part is ours.
                    md5 = self._md5_of(pre, number, fh.fileno(), rec.part_size, length)
                    if self._reusable(held.get(number), journaled.get(number), length, md5):
                        reused.append(self._reuse(rec, number, held[number][0], journaled, length,
                                                  self._reused_check(pre, number)))
                        continue
                    self.part_slots.acquire()
                    part_tries.append(Attempts())
                    future = self.part_pool.submit(self._stream_part, crt, rec, number, fh.fileno(),
                                                   length, pre, part_tries[-1])
                    future.add_done_callback(lambda _f: self.part_slots.release())
                    future.add_done_callback(note_failure)
                    futures.append(future)
                    continue
                buf, data = self._read_part(fh, rec.part_size)
                if pre is None:
                    hasher.update(data)
                elif not pre.crc_matches(number, data):
                    self._done_with(buf)
                    raise FileChanged("changed during upload; the upload was aborted "
                                      "and the next run retries it")
                if pre is None and held.get(number) is not None:
                    try:
                        self._check_streamed_held(held[number], journaled.get(number), data,
                                                  md5_etags=self.cfg.sse != "aws:kms")
                    except HeldPartChanged:
                        self._done_with(buf)  # its slots back, as FileChanged above
                        raise
                # Streamed (no pre-hash), the SHA-256 is of the bytes read now, so a held part
                # is reused only when its ETag is the MD5 of these very bytes (above: ours by
                # the journal, yet other bytes now, is a changed file): the ETag we journaled
                # proves it ours, not that the file still holds what it sent (a write through
                # a mapping moves no timestamp). An ETag that is no MD5 (SSE-KMS): sent again.
                if self._reusable(held.get(number), journaled.get(number) if pre else None,
                                  len(data), lambda: hashlib.md5(data).hexdigest()):
                    reused.append(self._reuse(rec, number, held[number][0], journaled, len(data),
                                              check_for(self.clients.body_check, data)))
                    self._done_with(buf)
                    continue
                part_tries.append(Attempts())
                future = self.part_pool.submit(self._send_part, rec, number, data, part_tries[-1])
                future.add_done_callback(lambda f, b=buf: self._done_with(b, f))
                future.add_done_callback(note_failure)
                futures.append(future)
        finally:
            # Every part in flight ends before anything else happens (an abort sent while
            # parts are still arriving could leave one stored on the server).
            wait(futures)
            counter.count += 1 + sum(max(0, tries.count - 1) for tries in part_tries)
        sent = [f.result() for f in futures]  # re-raises the first failure
        if stopped:
            raise Interrupted("stopped before every part was sent; --resume continues")
        parts = sorted(reused + sent)
        # With CRCs, the Complete names each part's too: the store compares them with the
        # parts it holds (and AWS requires them of an upload created with CRC64NVME).
        return ([{"PartNumber": n, "ETag": etag, **check.completed_part}
                 for n, etag, _, check in parts],
                sum(b for _, _, b, _ in parts), hasher.hexdigest() if pre is None else pre.sha256)

    def _read_part(self, fh, size: int) -> tuple[bytearray, memoryview]:
        """Take a part slot and a buffer, then read one part into it; a read error gives
        the slot back."""
        self.buffer_slots.acquire()  # always before a part slot: no two threads wait crosswise
        self.part_slots.acquire()
        try:
            buf = self.buffers.take(size)
            return buf, read_into(fh, buf)
        except BaseException:
            self.part_slots.release()
            self.buffer_slots.release()
            raise

    def _done_with(self, buf: bytearray, sent: Future | None = None) -> None:
        """A part's slot back, and its buffer for the next part, unless its send failed
        (a cancelled request's body may still be read: that buffer is left to the GC)."""
        self.part_slots.release()
        self.buffer_slots.release()
        if sent is None or (not sent.cancelled() and sent.exception() is None):
            self.buffers.give(buf)

    @staticmethod
    def _check_streamed_held(held: tuple[str, int], journaled_etag: str | None, data,
                             md5_etags: bool) -> None:
        """A held part we journaled whose ETag is an MD5 other than that of the bytes read
        now: the file changed since that part was sent, unseen by its timestamps. The
        upload cannot go on (some stores, rclone serve s3, refuse a part sent again with
        other bytes): HeldPartChanged, and the driver sends the file in a new upload.

        `md5_etags`: the store's part ETags are the MD5 of their bytes. Not with SSE-KMS
        (--sse aws:kms): there 32 hex digits prove nothing, and the part is sent again
        instead (S3 takes a part sent again). A bucket whose default encryption is KMS,
        with no --sse given, is not known here: a streamed resume there starts the file
        over (bytes sent again, never a wrong hash)."""
        etag = held[0].strip('"')
        if not md5_etags or held[0] != journaled_etag or not _MD5_HEX.fullmatch(etag):
            return
        if held[1] != len(data) or etag != hashlib.md5(data).hexdigest():
            raise HeldPartChanged("changed since an earlier run sent part of it, though its "
                                  "timestamps did not move")

    @staticmethod
    def _reusable(held: tuple[str, int] | None, journaled_etag: str | None, size: int,
                  md5_hex) -> bool:
        """A part the server holds is ours when its size fits and its ETag is the one we
        journaled or the MD5 of our bytes (`md5_hex`: the hex, a function giving it, or
        None when it is not known: then only the journaled ETag counts)."""
        if held is None or held[1] != size:
            return False
        etag = held[0]
        if etag == journaled_etag:
            return True
        if callable(md5_hex):
            md5_hex = md5_hex()
        return md5_hex is not None and etag.strip('"') == md5_hex

    def _reuse(self, rec: UploadRecord, number: int, etag: str, journaled: dict,
               size: int, check: BodyCheck) -> tuple[int, str, int, BodyCheck]:
        if number not in journaled:
            self.journal.record_part(rec.upload_id, number, etag, size)
        return number, etag, 0, check

    def _pre_check(self, pre: PreHash, number: int, fd: int | None = None,
                   part_size: int = 0, length: int = 0) -> BodyCheck:
        """Part `number`'s check: its CRC from the pre-hash where CRCs are checked; else its
        MD5, from the pre-hash if it has them, or read now from `fd` (part_md5). Raises
        FileChanged when the part read now is not the part pre-hashed."""
        if self.clients.body_check != MD5:
            return of_crc(pre.part_crcs[number - 1])
        if pre.part_md5s:
            return of_md5(pre.part_md5s[number - 1])
        digest = part_md5(fd, (number - 1) * part_size, length, pre.part_crcs[number - 1])
        if digest is None:
            raise FileChanged("changed during upload; the upload was aborted and the next run "
                              "retries it")
        return of_md5(digest)

    def _md5_of(self, pre: PreHash, number: int, fd: int, part_size: int, length: int):
        """For _reusable: the part's MD5 hex where the store checks MD5 (a function, read
        only if a held part needs proving), None where it checks CRCs: then only the ETag
        we journaled proves a held part ours."""
        if self.clients.body_check != MD5:
            return None
        if pre.part_md5s:
            return pre.part_md5s[number - 1].hex()

        def digest() -> str:
            check = self._pre_check(pre, number, fd, part_size, length)
            return base64.b64decode(check.value).hex()

        return digest

    def _reused_check(self, pre: PreHash, number: int) -> BodyCheck:
        """What a reused part contributes to the Complete: its CRC where CRCs are checked;
        with MD5 nothing (the Complete lists no MD5), so none is read for it."""
        if self.clients.body_check != MD5:
            return of_crc(pre.part_crcs[number - 1])
        return BodyCheck(MD5, "")

    def _stream_part(self, crt, rec: UploadRecord, number: int, fd: int, length: int,
                     pre: PreHash, counter: Attempts) -> tuple[int, str, int, BodyCheck]:
        """Send one part read by the CRT from `fd` (every try reads the file again), then
        check that what it read is the part pre-hashed."""
        changed = FileChanged("changed during upload; the upload was aborted and the next run "
                              "retries it")
        send, check = self.file_part_sender(crt, rec, number, fd, length, pre, changed)
        return self._sent(rec, number, length, send, counter, check)

    def file_part_sender(self, crt, rec: UploadRecord, number: int, fd: int, length: int,
                         pre: PreHash, changed: Exception) -> tuple[Callable[[], str], BodyCheck]:
        """(send, check) for part `number` read by the CRT straight from `fd`
        (prehash.PartStream, every try reading the file again), with its Content-MD5
        (part_md5: read now and checked to be of the part pre-hashed by its CRC) or its
        CRC64-NVME; `send` raises `changed` unless the bytes the CRT read are the part
        pre-hashed. Also sharedparts.py's, for a unit's parts."""
        key = self.cfg.dest.object_key(rec.key)
        check = self._pre_check(pre, number, fd, rec.part_size, length)

        def send() -> str:
            stream = PartStream(fd, (number - 1) * rec.part_size, length)
            try:
                etag = crt.upload_part(key, rec.upload_id, number, stream, check, length)
            except Exception:
                if stream.count == length and not stream.sent_as_hashed(pre, number):
                    raise changed from None  # a BadDigest, say: our bytes were not the hashed
                raise
            if not stream.sent_as_hashed(pre, number):
                raise changed
            return etag

        return send, check

    def _send_part(self, rec: UploadRecord, number: int, data: memoryview,
                   counter: Attempts) -> tuple[int, str, int, BodyCheck]:
        # A streamed part goes the way a pre-hashed one does (through the CRT: no payload
        # SHA-256 by botocore's signer over plain HTTP, far less Python per request).
        crt = self.clients.crt() if rec.streamed and self.clients.bandwidth is None \
            else self.clients.parts_crt()
        send, check = self.buffer_part_sender(crt, rec, number, data)
        return self._sent(rec, number, len(data), send, counter, check)

    def buffer_part_sender(self, crt, rec: UploadRecord, number: int,
                           data: memoryview) -> tuple[Callable[[], str], BodyCheck]:
        """(send, check) for part `number` held in `data`, with its MD5 or CRC: through the
        CRT if given, else botocore. Also sharedparts.py's."""
        check = check_for(self.clients.body_check, data)
        key = self.cfg.dest.object_key(rec.key)
        if crt is not None:
            send = lambda: crt.upload_part(key, rec.upload_id, number,  # noqa: E731
                                           BufferStream(data), check, len(data))
        else:
            client = self.clients.get()
            send = lambda: client.upload_part(  # noqa: E731
                Bucket=self.cfg.dest.bucket, Key=key, UploadId=rec.upload_id, PartNumber=number,
                Body=self._body(data), **check.boto_args)["ETag"]
        return send, check

    def _body(self, data: memoryview):
        """Part `data` as botocore's request body, with no copy of it where it can be: the
        part's whole buffer (botocore takes a bytearray, not a view: the buffer is ours
        until the part's future is done, every try included), or read through the view,
        paced by --bwlimit. Only a short last part is copied."""
        if self.clients.bandwidth is not None:
            return self.clients.bandwidth.wrap(data)
        whole = data.obj
        return whole if isinstance(whole, bytearray) and data.nbytes == len(whole) else bytes(data)

    def call_part(self, rec: UploadRecord, send: Callable[[], str], counter: Attempts) -> str:
        """Run a part's `send` (retried); an upload the store no longer has is UploadGone."""
        def watched() -> str:
            try:
                return send()
            except ClientError as exc:
                if error_code(exc) == "BadDigest":
                    self._damaged.add(rec.upload_id)
                raise

        try:
            return self._call(watched, counter)
        except ClientError as exc:
            if error_code(exc) == "NoSuchUpload":
                raise UploadGone(f"upload {rec.upload_id} is gone") from exc
            raise

    def refused_as_damaged(self, upload_id: str) -> bool:
        """Whether a part of this upload was refused as damaged (BadDigest) in this run.
        On `rclone serve s3` that explains the upload vanishing (it drops a whole upload
        when one part fails its check); S3, MinIO and SeaweedFS keep the upload and take
        the part sent again, so there it explains nothing, only allows more new uploads.
        Asked once, when the upload has vanished: the answer is forgotten then."""
        try:
            self._damaged.remove(upload_id)
        except KeyError:
            return False
        return True

    def _sent(self, rec: UploadRecord, number: int, size: int, send, counter: Attempts,
              check: BodyCheck) -> tuple[int, str, int, BodyCheck]:
        """Run `send` (retried), journal the part, and return (number, ETag, bytes sent,
        the part's check for the Complete)."""
        etag = self.call_part(rec, send, counter)
        self.journal.record_part(rec.upload_id, number, etag, size)
        return number, etag, size * counter.count, check
