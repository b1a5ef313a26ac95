"""Our own multipart driver: UploadIds we own, journaled before the first part, resumable.

s3transfer aborts an UploadId when a part fails and never hands it to the caller, so a
crashed upload could be neither resumed nor cleaned up. Here:

1. CreateMultipartUpload with the file's SHA-256 in the metadata (the scan's, or, when the
   scan did not read the file (lazy hashing), a pre-hash: prehash.py, one large file at a
   time), or, streamed (stamp.py: --large-files auto on a bucket without versioning, up
   to 5 GiB), with `sha256-pending` metadata, the SHA-256 taken as the parts are read and
   written after Complete by a copy of the object onto itself; then commit the UploadId,
   the part size and the file's identity (size, mtime_ns, ctime_ns, inode, sha256 or
   journal.uploads.STREAM_MARK) to the journal before the first part is sent.
2. Parts are sent concurrently with Content-MD5, or with their CRC64-NVME where the store
   checks that (integrity.py: the upload is then created with ChecksumAlgorithm CRC64NVME
   and the Complete lists each part's CRC); each finished part (number, ETag, size) is
   journaled. Pre-hashed parts are streamed by the CRT from the file and their CRC checked
   against the pre-hash's; otherwise parts are read in order and hashed as they are read.
   That part pipeline is partsend.py's; this module holds the upload's life: create,
   resume, complete, abort.
3. Complete only if the bytes read are the bytes of the metadata's SHA-256 and the file did
   not change meanwhile; otherwise abort. A HEAD afterwards confirms size and metadata.
   Streamed: the SHA-256 is journaled before the Complete, the Complete's ETag after it
   (state `unstamped`), then the stamp; a run killed between the two is stamped by the
   next one (LargeFiles.finish_unstamped), nothing sent again.

Resume: an active journaled upload for the same key whose file identity is unchanged is
continued. ListParts says what the server holds; a held part is reused when its size fits
and its ETag is the one we journaled or the MD5 of our bytes (when we have it: a pre-hash
for a store that checks CRCs has no MD5); only the rest is sent. The
whole file is still read (locally) so the final hash check covers every byte.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from botocore.exceptions import ClientError

from journalsync.clients import ClientFactory
from journalsync.config import S3_MAX_PART_SIZE, S3_MAX_PARTS, Config, MiB
from journalsync.errors import Interrupted
from journalsync.integrity import create_args
from journalsync.journal import Journal, UploadRecord
from journalsync.journal.uploads import STREAM_MARK
from journalsync.models import PlanItem, TransferResult
from journalsync.objectmeta import (
    file_identity,
    metadata_sha256,
    object_args,
    read_identity,
)
from journalsync.partsend import FileChanged, HeldPartChanged, PartSender, UploadGone
from journalsync.prehash import HashSlots, PreHash, prehash
from journalsync.retry import Attempts, error_code, fatal_reason, is_retryable
from journalsync.stamp import LargeFiles, StampPrecondition, StampRefused

log = logging.getLogger(__name__)

S3_MAX_OBJECT = 5 * 1024**4


def part_size_for(size: int, requested: int) -> int:
    """The requested part size, grown (in whole MiB) so no file needs over 10,000 parts."""
    needed = math.ceil(size / S3_MAX_PARTS)
    part = max(requested, math.ceil(needed / MiB) * MiB)
    return min(part, S3_MAX_PART_SIZE)


def _as_scanned(st: os.stat_result, item: PlanItem) -> bool:
    """The file still has the identity the plan's hash was taken with. A racy hash (scan.py)
    was recorded without a ctime: it is trusted for this run's upload, where the SHA-256 of
    every byte read is checked before Complete anyway, and hashed again by the next scan."""
    size, mtime_ns, ctime_ns, inode = file_identity(st)
    return (item.size, item.mtime_ns, item.inode) == (size, mtime_ns, inode) \
        and item.ctime_ns in (ctime_ns, None) and item.mtime_ns is not None


class MultipartDriver:
    """Uploads one large file per call; called from worker threads."""

    def __init__(self, cfg: Config, journal: Journal, run_id: int, clients: ClientFactory,
                 part_pool: ThreadPoolExecutor, stop: threading.Event):
        self.cfg = cfg
        self.journal = journal
        self.run_id = run_id
        self.clients = clients
        self.stop = stop
        # Parts are sent by one sender for every file (partsend.py: the part slots and
        # buffers that bound the memory of the parts in flight are its).
        self.parts = PartSender(cfg, journal, clients, part_pool, stop)
        self.hash_slots = HashSlots()
        self.large = LargeFiles(cfg, clients, journal, stop)  # stream then stamp, or pre-hash

    def _call(self, fn, counter: Attempts | None = None):
        return self.clients.call(fn, counter)

    def upload(self, item: PlanItem, path: str, counter: Attempts, fh) -> TransferResult:
        """Upload (or resume) one file from `fh`, the caller's descriptor for `path` (opened
        by safeio, never through a symlink; everything is read from it). Raises FileChanged,
        UploadGone, Interrupted or the store's error; the caller turns them into a result."""
        st = os.fstat(fh.fileno())
        if st.st_size > S3_MAX_OBJECT:
            raise OSError(f"file is {st.st_size} bytes, over S3's 5 TiB object limit")
        try:
            done = self.large.finish_unstamped(item, fh, st, counter)
            return done if done is not None else self._upload(item, path, counter, fh, st)
        except StampRefused as exc:
            # The object was completed but cannot be stamped: send it again pre-hashed
            # (created with its sha256), as every large file after it this run.
            self.large.refuse(exc)
            fh.seek(0)
            return self._upload(item, path, counter, fh, st)
        except StampPrecondition as exc:
            raise FileChanged(f"replaced on the store during its upload, so not stamped ({exc}); "
                              "the next run compares it again") from None

    def _upload(self, item: PlanItem, path: str, counter: Attempts, fh,
                st: os.stat_result) -> TransferResult:
        pre = self._current_sha256(item, fh, st)
        sha = STREAM_MARK if pre is None else pre if isinstance(pre, str) else pre.sha256
        rec, held = self._resumable(item, file_identity(st), sha)
        if held is None:  # the journaled upload is gone from the store
            done = self._stored_already(item, rec, fh, st, pre, counter)
            self.journal.set_upload_state(rec.upload_id, "aborted" if done is None else "completed")
            if done is not None:
                return done
            rec, held = None, {}
        # A new upload when the one before vanished server-side: once for no reason we know
        # (a lifecycle rule, someone's abort: it may happen again), and until
        # cfg.retry_attempts uploads in all (10; no option sets it) after a part of ours
        # was refused as damaged (BadDigest), the likely reason the store dropped it
        # (rclone serve s3 drops an upload whose part fails its check): on a link that
        # damages bodies for a while, each new upload may be dropped in turn, and the file
        # is still sent whole once the link is clean.
        vanished = 0
        restarted = False
        while True:
            if rec is None:
                rec, held = self._create(item, st, sha), {}
            try:
                return self._send_and_complete(item, path, fh, st, rec, held, counter,
                                               pre if isinstance(pre, PreHash) else None)
            except UploadGone as exc:
                # every part has ended here (send_parts waits for them all)
                damaged = self.parts.refused_as_damaged(rec.upload_id)
                self._abort_vanished(rec)
                vanished += 1
                if vanished >= (max(2, self.cfg.retry_attempts) if damaged else 2):
                    if damaged:  # say why, not only that some UploadId is gone
                        raise UploadGone(
                            f"the store dropped its upload {vanished} times, the last after a "
                            "part of it arrived damaged (BadDigest): something on the way "
                            "damages bodies; the next run sends it again") from exc
                    raise
                log.warning("upload of %s vanished on the server%s; starting a new one", item.key,
                            " after a part of it arrived damaged (BadDigest)" if damaged else "")
                rec = None
                fh.seek(0)
            except HeldPartChanged as exc:
                self._abort_quietly(rec)
                if restarted:
                    raise
                restarted = True  # once: a file that keeps changing fails, as it should
                log.warning("%s %s; sending it whole in a new upload", item.key, exc)
                rec = None
                fh.seek(0)
            except (Interrupted, StampRefused, StampPrecondition):
                raise  # keep the upload (--resume continues it), or it is completed already
            except Exception as exc:
                # A dead link or a stopped run keeps the upload for the next run to
                # resume; anything else (the file changed, the store refused a part)
                # aborts it so it accrues nothing.
                if not (is_retryable(exc) or fatal_reason(exc)):
                    self._abort_quietly(rec)
                raise

    def _current_sha256(self, item: PlanItem, fh, st: os.stat_result) -> str | PreHash | None:
        """The scan's SHA-256 while the file is as scanned; else None where the file is
        streamed (hashed as its parts are sent, stamped after Complete: stamp.py); else hash
        it now (lazy hashing: the scan did not read it; or it changed since the scan, or
        since a killed run's plan), with each part's CRC (prehash.py), one large file at a
        time."""
        if item.sha256 is not None and _as_scanned(st, item):
            return item.sha256
        if self.large.streams(st.st_size):
            return None
        with self.hash_slots:
            if self.stop.is_set():
                raise Interrupted("stopped before its upload began")
            # SHA-256 and the parts' CRCs only: where the store checks Content-MD5, each
            # part's MD5 is taken on its own worker just before it is sent (part_md5), so
            # the first byte waits for one pass of SHA-256, not of SHA-256 and MD5.
            pre = prehash(fh, part_size_for(st.st_size, self.cfg.part_size), md5s=False,
                          stop=self.stop)
        if file_identity(os.fstat(fh.fileno())) != file_identity(st):
            raise FileChanged("kept changing while it was hashed; the next run retries it")
        fh.seek(0)
        return pre

    def _resumable(self, item: PlanItem, ident: tuple,
                   sha: str) -> tuple[UploadRecord | None, dict | None]:
        """The journaled upload to continue for this key, with the parts the server holds
        (None: the server no longer knows the upload)."""
        rec = self.journal.active_upload_for(item.key)
        if rec is None:
            return None, {}
        same = rec.streamed if sha == STREAM_MARK else rec.sha256 == sha
        if (rec.size, rec.mtime_ns, rec.ctime_ns, rec.inode) != ident or not same:
            log.info("%s changed since its upload began; aborting that upload", item.key)
            self._abort_quietly(rec)
            return None, {}
        try:
            held = self.list_parts(rec.key, rec.upload_id)
        except ClientError as exc:
            if error_code(exc) != "NoSuchUpload":
                raise
            return rec, None  # gone: _stored_already tells whether it was completed
        log.info("resuming upload of %s: the server holds %d part(s)", item.key, len(held))
        return rec, held

    def _stored_already(self, item: PlanItem, rec: UploadRecord, fh, st: os.stat_result,
                        pre: str | PreHash | None, counter: Attempts) -> TransferResult | None:
        """The journaled upload is gone from the store: completed by a run killed before
        its journal said so, or aborted. It was completed when the object is this file: its
        size, and its sha256 metadata equal to the hash of the file read now (a pre-hash
        made for this upload, or made here: the scan's hash may be a cached one); a streamed
        one, whose object has no sha256 yet, when a read of the file proves its ETag
        (LargeFiles.finish_completed, which stamps it). Then the file is done without a byte
        sent; else None, and a new upload begins."""
        if pre is None:  # streamed: no sha256 on the object before it is stamped
            with self.hash_slots:
                done = self.large.finish_completed(item, rec, fh, st, counter)
            if done is None:
                log.warning("upload of %s is gone from the server; starting a new one",
                            item.key)
            return done
        client = self.clients.get()
        try:
            head = self._call(lambda: client.head_object(
                Bucket=self.cfg.dest.bucket, Key=self.cfg.dest.object_key(item.key)))
        except ClientError:
            head = None
        if head is not None and head["ContentLength"] == st.st_size and \
                metadata_sha256(head.get("Metadata")) is not None:
            if isinstance(pre, str):
                with self.hash_slots:
                    pre = prehash(fh, part_size_for(st.st_size, self.cfg.part_size),
                                  md5s=False, stop=self.stop)
                fh.seek(0)
            if metadata_sha256(head.get("Metadata")) == pre.sha256 and \
                    file_identity(os.fstat(fh.fileno())) == file_identity(st):
                log.info("upload of %s was completed before the journal recorded it; the "
                         "object is this file, not sent again", item.key)
                return TransferResult(item.id, item.key, True, counter.count, bytes_sent=0,
                                      size=st.st_size, etag=head["ETag"].strip('"'),
                                      sha256=pre.sha256, file_identity=read_identity(
                                          st, os.fstat(fh.fileno()), pre.started_ns))
        log.warning("upload of %s is gone from the server; starting a new one", item.key)
        return None

    def list_parts(self, key: str, upload_id: str) -> dict[int, tuple[str, int]]:
        """{part number: (ETag, size)} the server holds, all pages of 1000."""
        return {n: (etag, size) for n, (etag, size, _) in self.held_parts(key, upload_id).items()}

    def held_parts(self, key: str, upload_id: str) -> dict[int, tuple[str, int, str | None]]:
        """{part number: (ETag, size, its CRC64-NVME in base64 where the server gives one)}
        the server holds, all pages of 1000."""
        client = self.clients.get()
        held: dict[int, tuple[str, int, str | None]] = {}
        marker = 0
        while True:
            page = self._call(lambda: client.list_parts(
                Bucket=self.cfg.dest.bucket, Key=self.cfg.dest.object_key(key),
                UploadId=upload_id, MaxParts=1000, PartNumberMarker=marker))
            for part in page.get("Parts", ()):
                held[part["PartNumber"]] = (part["ETag"], part["Size"],
                                            part.get("ChecksumCRC64NVME"))
            marker = page.get("NextPartNumberMarker") or 0
            if not page.get("IsTruncated") or not marker:
                return held

    def _create(self, item: PlanItem, st: os.stat_result, sha: str) -> UploadRecord:
        """Create the upload and journal it. Never once the run is stopping: a first signal
        finishes the work in flight, and an upload not yet created is not in flight (a
        pre-hash that ended as the signal came, say); the next run sends the file."""
        if self.stop.is_set():
            raise Interrupted("stopped before its upload began")
        client = self.clients.get()
        args = {**object_args(self.cfg, item.key, None if sha == STREAM_MARK else sha,
                              st.st_mtime_ns),
                **create_args(self.clients.body_check)}
        tries = Attempts()  # not the file's attempts: those count its data requests
        # Journaled first: killed before the UploadId is, the next run still finds the
        # upload by this intent (cleanup.reconcile). Left in place if the create fails:
        # its tries may have created uploads whose answers were lost.
        intent = self.journal.record_create_intent(item.key, self.run_id, item.id)
        upload_id = self._call(lambda: client.create_multipart_upload(**args), tries)["UploadId"]
        rec = UploadRecord(upload_id, item.key, self.run_id,
                           part_size_for(st.st_size, self.cfg.part_size), *file_identity(st),
                           sha, time.time(), "active")
        self.journal.record_upload(rec, item.id, intent)  # committed before the first part
        if tries.count > 1:
            # An earlier try may have created an upload whose answer was lost: its UploadId
            # reached no one, so nothing would ever complete or abort it.
            self._abort_strays(item.key)
        return rec

    def _abort_strays(self, key: str) -> None:
        """Abort the incomplete uploads of `key` that the journal does not know."""
        client = self.clients.get()
        full = self.cfg.dest.object_key(key)
        try:
            page = self._call(lambda: client.list_multipart_uploads(
                Bucket=self.cfg.dest.bucket, Prefix=full, MaxUploads=1000))
        except Exception as exc:  # noqa: BLE001 - the next run's reconcile finds the stray
            log.warning("could not list the uploads of %s after a retried create: %s", key, exc)
            return
        ours = [up for up in page.get("Uploads", ()) if up["Key"] == full]
        known = self.journal.known_upload_ids(up["UploadId"] for up in ours)
        for up in ours:
            if up["UploadId"] not in known:
                log.info("aborting an upload of %s left by a retried create", key)
                try:
                    self.abort(key, up["UploadId"])
                except Exception as exc:  # noqa: BLE001 - as above
                    log.warning("could not abort a stray upload of %s: %s", key, exc)

    def _send_and_complete(self, item: PlanItem, path: str, fh, st: os.stat_result,
                           rec: UploadRecord, held: dict, counter: Attempts,
                           pre: PreHash | None = None) -> TransferResult:
        started = time.time_ns()
        if pre is not None and (pre.part_size != rec.part_size or pre.sha256 != rec.sha256):
            pre = None  # a resumed upload cut in other parts: prove it by SHA-256 again
        parts, sent, digest = self.parts.send_parts(fh, rec, held, counter, pre)
        if pre is not None:
            started = pre.started_ns  # the CRCs vouch for the bytes the pre-hash read
        # stat by path as well as by descriptor: a file renamed over ours is a change too.
        if (digest != rec.sha256 and not rec.streamed) \
                or file_identity(os.stat(path, follow_symlinks=False)) != file_identity(st):
            raise FileChanged("changed during upload; the upload was aborted and the next run retries it")
        if rec.streamed:
            # Journaled before the Complete: a run killed after it stamps with this hash.
            self.journal.set_upload_sha256(rec.upload_id, digest)
        etag = self._complete(item, rec, parts, None if rec.streamed else rec.sha256)
        if rec.streamed:
            self.journal.set_upload_unstamped(rec.upload_id, etag)
            etag = self.large.stamp_upload(rec, digest, etag, st)
        self.journal.set_upload_state(rec.upload_id, "completed")
        # Every byte was read (and hashed to `digest`) after `started`, with the file's
        # identity st throughout: that hash is the file's, recorded as any scan's would be.
        return TransferResult(item.id, item.key, True, counter.count, bytes_sent=sent,
                              size=st.st_size, etag=etag, sha256=digest,
                              file_identity=read_identity(st, os.fstat(fh.fileno()), started))

    def _complete(self, item: PlanItem, rec: UploadRecord, parts: list[dict],
                  sha256: str | None) -> str:
        """Complete, then HEAD: the HEAD's ETag is what LIST will show (some servers give a
        different one in the Complete response) and it proves our metadata landed (`sha256`;
        None for a streamed upload, stamped after)."""
        client = self.clients.get()
        bucket, key = self.cfg.dest.bucket, self.cfg.dest.object_key(item.key)
        gone = False
        try:
            self._call(lambda: client.complete_multipart_upload(
                Bucket=bucket, Key=key, UploadId=rec.upload_id, MultipartUpload={"Parts": parts}))
        except ClientError as exc:
            # NoSuchUpload after a retried Complete whose first try had succeeded: the
            # object is there. The HEAD below tells that from a truly vanished upload.
            if error_code(exc) != "NoSuchUpload":
                raise
            gone = True
        head = self._call(lambda: client.head_object(Bucket=bucket, Key=key))
        if head["ContentLength"] != rec.size or (
                sha256 is not None and metadata_sha256(head.get("Metadata")) != sha256):
            if gone:
                raise UploadGone(f"upload {rec.upload_id} vanished before Complete")
            raise FileChanged("object after Complete does not match the file (size or sha256)")
        return head["ETag"].strip('"')

    def abort(self, key: str, upload_id: str) -> None:
        """Abort an upload and mark it so in the journal; a missing upload is already gone."""
        client = self.clients.get()
        try:
            self._call(lambda: client.abort_multipart_upload(
                Bucket=self.cfg.dest.bucket, Key=self.cfg.dest.object_key(key), UploadId=upload_id))
        except ClientError as exc:
            if error_code(exc) != "NoSuchUpload":
                raise
        self.journal.set_upload_state(upload_id, "aborted")

    def _abort_vanished(self, rec: UploadRecord) -> None:
        """An upload some request heard NoSuchUpload for, given up: abort it all the same
        (NoSuchUpload: gone indeed), so no new upload is started beside one the store still
        holds (a NoSuchUpload from something on the way, a store whose uploads are listed a
        while after they are said gone). Journaled "aborted" either way: a failed abort is
        left to `cleanup`, which lists the incomplete uploads the journal does not know."""
        try:
            self.abort(rec.key, rec.upload_id)
        except Exception as exc:  # noqa: BLE001 - as said above
            log.warning("could not abort the vanished upload of %s: %s", rec.key, exc)
            self.journal.set_upload_state(rec.upload_id, "aborted")

    def _abort_quietly(self, rec: UploadRecord) -> None:
        if self.stop.is_set():
            # A stopping run keeps every upload: an error now may come from the stop itself
            # (a second signal closes the journal under the threads still sending), and the
            # next run resumes the upload or aborts it (cleanup.reconcile).
            log.info("stopping: keeping the upload of %s for the next run", rec.key)
            return
        try:
            self.abort(rec.key, rec.upload_id)
        except Exception as exc:  # noqa: BLE001 - it stays 'active'; the next run retries
            log.warning("could not abort upload of %s: %s", rec.key, exc)
