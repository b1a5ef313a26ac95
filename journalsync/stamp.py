"""Stream then stamp (issue 14): which large files skip the pre-hash, and the stamp that
writes their SHA-256 afterwards.

A multipart upload's metadata is fixed at CreateMultipartUpload, and the file's SHA-256 is
known only once every byte was read. The pre-hash (prehash.py) reads the file whole first:
the first byte waits for that read, and the file is read twice. Streaming instead: the
upload is created with `sha256-pending` metadata, the file read once, in order, each part
hashed into the running SHA-256 and sent; after Complete, a CopyObject of the object onto
itself (MetadataDirective=REPLACE, CopySourceIfMatch=the Complete's ETag, so an object
another writer replaced meanwhile is never stamped) writes the sha256. No object bytes
cross the network twice; the store copies them on its side.

Used only where that is safe and cheap (`LargeFiles.streams`, --large-files auto):
- the object is at most 5 GiB (CopyObject's limit; larger ones are pre-hashed);
- the bucket is not versioned (GetBucketVersioning, once per run): there the copy would
  keep a noncurrent version of every large object, stored twice until a lifecycle rule
  expires it. A bucket whose versioning is Suspended keeps no version for new writes
  (the Complete and the copy both write the `null` version), so it streams.
- the storage class (--storage-class) has no minimum storage duration: STANDARD (or none
  given), INTELLIGENT_TIERING, REDUCED_REDUNDANCY. In STANDARD_IA, ONEZONE_IA and the
  Glacier classes the object the copy replaces would be billed for its whole minimum
  (30 to 180 days) as an early deletion, and GLACIER and DEEP_ARCHIVE objects cannot be
  a copy's source at all (InvalidObjectState) until restored.
- the store has not refused a copy this run: a stamp refused (501 NotImplemented, or
  AccessDenied: credentials without s3:PutObject for copies) is one line, and the rest of
  the run's large files are pre-hashed; the refused file is uploaded again that way.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from botocore.exceptions import ClientError

from journalsync.adopt import ContentHasher, prove_by_etag
from journalsync.clients import ClientFactory
from journalsync.config import GiB, Config
from journalsync.errors import Interrupted
from journalsync.journal import Journal, UploadRecord
from journalsync.models import PlanItem, TransferResult
from journalsync.objectmeta import (PENDING_KEY, calendar_ns, file_identity, metadata_sha256,
                                   mtime_of_text, object_args, read_identity, stored_ns)
from journalsync.retry import Attempts, describe, error_code, http_status

log = logging.getLogger(__name__)

COPY_OBJECT_MAX = 5 * GiB
MODES = ("auto", "stream", "prehash")
# Storage classes an object may be replaced in at once without an early-deletion charge.
NO_MINIMUM_DURATION = frozenset({"STANDARD", "INTELLIGENT_TIERING", "REDUCED_REDUNDANCY"})


class StampRefused(Exception):
    """The store refuses CopyObject (no copies, or not for these credentials)."""


class StampPrecondition(Exception):
    """The object is no longer the one the upload completed (CopySourceIfMatch failed)."""


class LargeFiles:
    """The run's choice between streaming and pre-hashing a large file (thread-safe)."""

    def __init__(self, cfg: Config, clients: ClientFactory, journal: Journal,
                 stop: threading.Event | None = None):
        self.cfg = cfg
        self.clients = clients
        self.journal = journal
        self.stop = stop or threading.Event()  # the run's: finish_completed's read heeds it
        self._lock = threading.Lock()
        self._versioned: bool | None = None
        self.refused: str | None = None  # why the store refused a stamp, once it has

    def streams(self, size: int) -> bool:
        """Whether a large file of `size` bytes is streamed (else pre-hashed)."""
        if self.cfg.large_files == "prehash" or self.refused or size > COPY_OBJECT_MAX:
            return False
        if self.cfg.large_files == "stream":
            return True
        storage_class = (self.cfg.storage_class or "STANDARD").upper()
        return storage_class in NO_MINIMUM_DURATION and not self._bucket_versioned()

    def _bucket_versioned(self) -> bool:
        with self._lock:
            if self._versioned is None:
                self._versioned = self._ask_versioning()
            return self._versioned

    def _ask_versioning(self) -> bool:
        client = self.clients.get()
        bucket = self.cfg.dest.bucket
        try:
            status = self.clients.call(
                lambda: client.get_bucket_versioning(Bucket=bucket)).get("Status")
        except ClientError as exc:
            if http_status(exc) == 501 or error_code(exc) == "NotImplemented":
                return False  # a store without versioning keeps no old versions
            log.warning("cannot tell whether bucket %s is versioned (%s): large files are "
                        "pre-hashed", bucket, describe(exc))
            return True
        if status == "Enabled":
            log.info("bucket %s is versioned: large files are pre-hashed (a stamp's copy "
                     "would keep a noncurrent version of each)", bucket)
        return status == "Enabled"

    def refuse(self, exc: Exception) -> None:
        """Note a refused stamp, in one line for the run."""
        with self._lock:
            first = self.refused is None
            self.refused = describe(exc)
        if first:
            log.warning("the store refuses copies (%s): large files are pre-hashed for the "
                        "rest of this run", self.refused)

    def stamp(self, key: str, sha256: str, mtime_ns: int, size: int, etag: str) -> str:
        """Copy the object `key` (completed with `etag`) onto itself with our metadata and
        `sha256`; returns the object's ETag after the copy. Raises StampRefused,
        StampPrecondition, or the store's error."""
        client = self.clients.get()
        args = object_args(self.cfg, key, sha256, mtime_ns)
        source = {"Bucket": args["Bucket"], "Key": args["Key"]}
        try:
            self.clients.call(lambda: client.copy_object(
                **args, CopySource=source, CopySourceIfMatch=f'"{etag}"',
                MetadataDirective="REPLACE"))
        except ClientError as exc:
            status, code = http_status(exc), error_code(exc)
            if status == 501 or code in ("NotImplemented", "AccessDenied"):
                raise StampRefused(describe(exc)) from exc
            if status == 412 or code == "PreconditionFailed":
                raise StampPrecondition(describe(exc)) from exc
            raise
        head = self.clients.call(lambda: client.head_object(Bucket=args["Bucket"],
                                                            Key=args["Key"]))
        if head["ContentLength"] != size or metadata_sha256(head.get("Metadata")) != sha256:
            # moto and rclone serve s3 ignore CopySourceIfMatch: another writer's object
            # may have been copied; its size or our sha256 missing tells.
            raise StampPrecondition("the object after the stamp is not the one uploaded")
        return head["ETag"].strip('"')

    def stamp_upload(self, rec: UploadRecord, sha256: str, etag: str,
                     st: os.stat_result) -> str:
        """Stamp a streamed upload's object (completed with `etag`); its ETag after. A
        refused or pre-empted stamp ends the record: the object is sent again. `st`, a
        stat of the file, tells the time the journal's mtime stands for (calendar_ns: a
        file dated after 2262 is kept wrapped), as the upload's create wrote it."""
        mtime_ns = calendar_ns(rec.mtime_ns, st.st_mtime_ns)
        try:
            return self.stamp(rec.key, sha256, mtime_ns, rec.size, etag)
        except (StampRefused, StampPrecondition):
            self.journal.set_upload_state(rec.upload_id, "completed")
            raise

    def finish_unstamped(self, item: PlanItem, fh, st: os.stat_result,
                         counter: Attempts) -> TransferResult | None:
        """A streamed upload an earlier run completed but did not stamp (killed between the
        two): stamp it, sending nothing again, if the object is still the one completed
        (its ETag) and the file still the one read (its identity). Else None, the record
        closed: the file is uploaded as usual."""
        rec = self.journal.active_upload_for(item.key, state="unstamped")
        if rec is None:
            return None
        sha = rec.streamed_sha256
        head = None
        if sha and (rec.size, rec.mtime_ns, rec.ctime_ns, rec.inode) == file_identity(st):
            head = self._head(item.key)
        stamped = head is not None and metadata_sha256(head.get("Metadata")) == sha
        if head is None or head["ContentLength"] != rec.size or not (
                stamped or head["ETag"].strip('"') == rec.complete_etag):
            self.journal.set_upload_state(rec.upload_id, "completed")  # nothing to stamp
            return None
        # Stamped already: killed after the copy, before the journal heard of it.
        etag = head["ETag"].strip('"') if stamped else \
            self.stamp_upload(rec, sha, rec.complete_etag, st)
        self.journal.set_upload_state(rec.upload_id, "completed")
        log.info("stamped %s, completed by an earlier run: nothing sent again", item.key)
        counter.count += 1
        # The hash was taken by a read after the upload's creation, with this identity.
        return TransferResult(item.id, item.key, True, counter.count, bytes_sent=0,
                              size=rec.size, etag=etag, sha256=sha,
                              file_identity=read_identity(st, os.fstat(fh.fileno()),
                                                          int(rec.created_at * 1e9)))

    def finish_completed(self, item: PlanItem, rec: UploadRecord, fh, st: os.stat_result,
                         counter: Attempts) -> TransferResult | None:
        """A streamed upload gone from the store (NoSuchUpload): completed by a run killed
        before its journal heard of the Complete, so the object has no sha256 yet, or
        aborted. It was completed, and the object holds this file, when the object's size
        is the file's and a read of the file now proves its ETag as adoption does
        (adopt.prove_by_etag: the multipart ETag at the upload's part size, or the whole
        MD5 where a store shows that, as rclone serve s3 does). Then the object is stamped
        with the SHA-256 of that read and nothing is sent again (the file is read once here
        instead of sent whole). Else None.

        The ETag proves the bytes, not whose object it is: another writer's PUT of the same
        bytes after the kill has its MD5 for an ETag, which a read of the file proves too.
        So the object must also carry what our upload's create gave it (_ours: the
        sha256-pending mark and the upload's mtime), or it is not stamped: a copy onto it
        would replace that writer's Content-Type and metadata."""
        head = self._head(item.key)
        if head is None or head["ContentLength"] != st.st_size or not _ours(head, rec):
            return None
        etag = head["ETag"].strip('"')
        hasher = ContentHasher(st.st_size, etag, sizes=[rec.part_size])
        started = time.time_ns()
        fh.seek(0)
        while block := fh.read(8 << 20):
            if self.stop.is_set():  # a read to prove, not a byte sent: the next run reads again
                raise Interrupted("stopped while reading it to prove its object; the next "
                                  "run reads it again")
            hasher.update(block)
        fh.seek(0)
        digests = hasher.digests()
        if file_identity(os.fstat(fh.fileno())) != file_identity(st) or \
                prove_by_etag(etag, digests) is None:
            return None
        etag = self.stamp_upload(rec, digests.sha256, etag, st)
        log.info("upload of %s was completed before the journal recorded it; the object is "
                 "this file: stamped, nothing sent again", item.key)
        counter.count += 1
        return TransferResult(item.id, item.key, True, counter.count, bytes_sent=0,
                              size=st.st_size, etag=etag, sha256=digests.sha256,
                              file_identity=read_identity(st, os.fstat(fh.fileno()), started))

    def _head(self, key: str) -> dict | None:
        """The object's HEAD, or None when there is none."""
        client = self.clients.get()
        try:
            return self.clients.call(lambda: client.head_object(
                Bucket=self.cfg.dest.bucket, Key=self.cfg.dest.object_key(key)))
        except ClientError as exc:
            if http_status(exc) == 404 or error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise


def _ours(head: dict, rec: UploadRecord) -> bool:
    """Whether the object's metadata is what the streamed upload `rec` was created with
    (object_args with no sha256): the sha256-pending mark and the file's mtime then, keys
    compared case-insensitively (some servers title-case them)."""
    meta = {k.lower(): v for k, v in (head.get("Metadata") or {}).items()}
    mtime_ns = mtime_of_text(meta.get("mtime"))  # compared as the journal keeps it: stored_ns
    return PENDING_KEY in meta and mtime_ns is not None and stored_ns(mtime_ns) == rec.mtime_ns
