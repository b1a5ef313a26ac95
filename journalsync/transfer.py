"""Transfers: a single PUT for small files, our own journaled multipart driver for large ones.

Why not `upload_file` + TransferConfig for everything: s3transfer aborts an UploadId when a
part fails and never hands it out (so a crashed upload can be neither resumed nor cleaned
up by us), it does not return the ETag we need to trust our cached manifest, and it cannot
prove that the bytes it streamed are the bytes whose SHA-256 we put in the metadata. So:

- single PUT: read the file once, hash those exact bytes, send them with Content-MD5 (the
  server verifies them), retry with the same bytes;
- multipart: CreateMultipartUpload with the scan's SHA-256 in the metadata, commit the
  UploadId, part size and file identity to the journal before the first part, send parts
  with Content-MD5 while hashing them in order, and Complete only if the hash of everything
  sent equals the metadata and the file did not change meanwhile; otherwise abort.
"""

from __future__ import annotations

import base64
import hashlib
import math
import mimetypes
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

from botocore.exceptions import ClientError

from journalsync.clients import ClientFactory
from journalsync.config import S3_MAX_PART_SIZE, S3_MAX_PARTS, Config, MiB
from journalsync.journal import Journal, UploadRecord
from journalsync.models import PlanItem, TransferResult
from journalsync.retry import Attempts, call_with_retry, describe, error_code, fatal_reason

S3_MAX_OBJECT = 5 * 1024**4
_COMPRESSED_TYPES = {"gzip": "application/gzip", "bzip2": "application/x-bzip2",
                     "xz": "application/x-xz", "br": "application/x-brotli",
                     "compress": "application/x-compress"}


class FileChanged(Exception):
    """The file changed while it was being uploaded; the upload was not completed."""


def content_type(key: str) -> str:
    """Content-Type from the name. A compressed file keeps its compressed type: we store
    bytes as they are and never set Content-Encoding."""
    guessed, encoding = mimetypes.guess_type(key, strict=False)
    if encoding:
        return _COMPRESSED_TYPES.get(encoding, "application/octet-stream")
    return guessed or "application/octet-stream"


def part_size_for(size: int, requested: int) -> int:
    """The requested part size, grown (in whole MiB) so no file needs over 10,000 parts."""
    needed = math.ceil(size / S3_MAX_PARTS)
    part = max(requested, math.ceil(needed / MiB) * MiB)
    return min(part, S3_MAX_PART_SIZE)


def mtime_text(mtime_ns: int) -> str:
    """Seconds since the epoch with nanoseconds, the form rclone also reads as `mtime`."""
    return f"{mtime_ns // 10**9}.{mtime_ns % 10**9:09d}"


def _md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode("ascii")


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino


def metadata_sha256(metadata: dict[str, str]) -> str | None:
    """Our sha256 metadata value, read case-insensitively (some servers title-case keys)."""
    value = {k.lower(): v for k, v in (metadata or {}).items()}.get("sha256")
    if value and len(value) == 64 and all(c in "0123456789abcdef" for c in value.lower()):
        return value.lower()
    return None


class Uploader:
    """Uploads plan items. Called from worker threads; each uses its thread's client."""

    def __init__(self, cfg: Config, journal: Journal, run_id: int, clients: ClientFactory,
                 part_pool: ThreadPoolExecutor):
        self.cfg = cfg
        self.journal = journal
        self.run_id = run_id
        self.clients = clients
        self.part_pool = part_pool
        # Parts in flight across all files hold a part-size buffer each: bound them.
        self.part_slots = threading.BoundedSemaphore(max(2, cfg.workers))

    def _call(self, fn, counter: Attempts | None = None):
        return call_with_retry(fn, attempts=self.cfg.retry_attempts,
                               timeout=self.cfg.retry_timeout, counter=counter)

    def upload(self, item: PlanItem) -> TransferResult:
        """Upload one file; never raises for a per-file problem."""
        path = os.path.join(self.cfg.source, item.path or item.key)
        counter = Attempts()
        try:
            st = os.stat(path, follow_symlinks=False)
            if st.st_size >= self.cfg.multipart_threshold:
                return self._multipart(item, path, counter)
            return self._single(item, path, counter)
        except FileChanged as exc:
            return TransferResult(item.id, item.key, False, counter.count, error=str(exc))
        except OSError as exc:
            return TransferResult(item.id, item.key, False, counter.count,
                                  error=f"cannot read: {exc.strerror or exc}")
        except Exception as exc:  # noqa: BLE001 - every per-file failure is journaled
            fatal = fatal_reason(exc)
            return TransferResult(item.id, item.key, False, counter.count,
                                  error=fatal or describe(exc), fatal=fatal is not None)

    def _object_args(self, key: str, sha256: str, mtime_ns: int) -> dict:
        args = {"Bucket": self.cfg.dest.bucket, "Key": self.cfg.dest.object_key(key),
                "ContentType": content_type(key),
                "Metadata": {"sha256": sha256, "mtime": mtime_text(mtime_ns)}}
        if self.cfg.cache_control:
            args["CacheControl"] = self.cfg.cache_control
        return args

    def _single(self, item: PlanItem, path: str, counter: Attempts) -> TransferResult:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            data = fh.read()
        # The metadata describes the bytes actually sent, even if the file moved on
        # since the scan; the next scan sees the new stat and compares again.
        sha = hashlib.sha256(data).hexdigest()
        args = self._object_args(item.key, sha, st.st_mtime_ns)
        md5 = _md5_b64(data)
        client = self.clients.get()
        resp = self._call(lambda: client.put_object(Body=data, ContentMD5=md5, **args), counter)
        return TransferResult(item.id, item.key, True, counter.count,
                              bytes_sent=len(data) * counter.count, size=len(data),
                              etag=resp["ETag"].strip('"'), sha256=sha)

    def _multipart(self, item: PlanItem, path: str, counter: Attempts) -> TransferResult:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            if st.st_size > S3_MAX_OBJECT:
                raise OSError(f"file is {st.st_size} bytes, over S3's 5 TiB object limit")
            if item.sha256 is None or st.st_size != item.size:
                raise FileChanged("changed since scan; the next run uploads it")
            part_size = part_size_for(st.st_size, self.cfg.part_size)
            args = self._object_args(item.key, item.sha256, st.st_mtime_ns)
            client = self.clients.get()
            upload_id = self._call(lambda: client.create_multipart_upload(**args), counter)["UploadId"]
            size, mtime_ns, ctime_ns, inode = _identity(st)
            self.journal.record_upload(UploadRecord(
                upload_id, item.key, self.run_id, part_size, size, mtime_ns, ctime_ns, inode,
                item.sha256, time.time(), "active"), item.id)
            try:
                return self._send_and_complete(item, fh, st, upload_id, part_size, counter)
            except BaseException:
                try:
                    self.abort(item.key, upload_id)
                except Exception:  # noqa: BLE001 - it stays 'active'; the next run aborts it
                    pass
                raise

    def _send_and_complete(self, item: PlanItem, fh, st: os.stat_result, upload_id: str,
                           part_size: int, counter: Attempts) -> TransferResult:
        parts, sent, digest = self._send_parts(fh, item.key, upload_id, part_size, st.st_size)
        after = os.stat(fh.name, follow_symlinks=False)
        if digest != item.sha256 or _identity(after) != _identity(st):
            raise FileChanged("changed during upload; the upload was aborted and the next run retries it")
        etag = self._complete(item, upload_id, parts, counter)
        self.journal.set_upload_state(upload_id, "completed")
        return TransferResult(item.id, item.key, True, counter.count, bytes_sent=sent,
                              size=st.st_size, etag=etag, sha256=item.sha256)

    def _send_parts(self, fh, key: str, upload_id: str, part_size: int,
                    size: int) -> tuple[list[dict], int, str]:
        """Read parts in order (hashing them), send them concurrently. Returns the parts
        list for Complete, the bytes sent and the SHA-256 of everything read."""
        hasher = hashlib.sha256()
        futures: list[Future] = []
        count = max(1, math.ceil(size / part_size))
        for number in range(1, count + 1):
            self.part_slots.acquire()
            if any(f.done() and f.exception() for f in futures):
                self.part_slots.release()
                break
            data = fh.read(part_size)
            hasher.update(data)
            future = self.part_pool.submit(self._send_part, key, upload_id, number, data)
            future.add_done_callback(lambda _f: self.part_slots.release())
            futures.append(future)
        results = [f.result() for f in futures]  # re-raises the first part's failure
        parts = [{"PartNumber": n, "ETag": etag} for n, etag, _ in results]
        return parts, sum(sent for _, _, sent in results), hasher.hexdigest()

    def _send_part(self, key: str, upload_id: str, number: int, data: bytes) -> tuple[int, str, int]:
        client = self.clients.get()
        md5 = _md5_b64(data)
        counter = Attempts()
        resp = self._call(lambda: client.upload_part(
            Bucket=self.cfg.dest.bucket, Key=self.cfg.dest.object_key(key), UploadId=upload_id,
            PartNumber=number, Body=data, ContentMD5=md5), counter)
        etag = resp["ETag"]
        self.journal.record_part(upload_id, number, etag, len(data))
        return number, etag, len(data) * counter.count

    def _complete(self, item: PlanItem, upload_id: str, parts: list[dict],
                  counter: Attempts) -> str:
        """Complete, then HEAD: the HEAD's ETag is what LIST will show (some servers give a
        different one in the Complete response) and it proves our metadata landed."""
        client = self.clients.get()
        bucket, key = self.cfg.dest.bucket, self.cfg.dest.object_key(item.key)
        try:
            self._call(lambda: client.complete_multipart_upload(
                Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}),
                counter)
        except ClientError as exc:
            # A retried Complete whose first try succeeded: the upload is gone but the
            # object is there. Anything else is a real failure.
            if error_code(exc) != "NoSuchUpload":
                raise
        head = self._call(lambda: client.head_object(Bucket=bucket, Key=key))
        if head["ContentLength"] != item.size or metadata_sha256(head.get("Metadata")) != item.sha256:
            raise FileChanged("object after Complete does not match the file (size or sha256)")
        return head["ETag"].strip('"')

    def abort(self, key: str, upload_id: str) -> None:
        """Abort an upload and mark it so in the journal; a missing upload is already gone."""
        client = self.clients.get()
        try:
            self._call(lambda: client.abort_multipart_upload(
                Bucket=self.cfg.dest.bucket, Key=self.cfg.dest.object_key(key),
                UploadId=upload_id))
        except ClientError as exc:
            if error_code(exc) != "NoSuchUpload":
                raise
        self.journal.set_upload_state(upload_id, "aborted")
