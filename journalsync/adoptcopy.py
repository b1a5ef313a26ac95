"""`--adopt-metadata`: write our `sha256` and `mtime` metadata onto adopted objects (adopt.py)
by a server-side copy of each object onto itself, so `verify` (which reads that metadata)
covers them too. No object bytes are sent. Without the flag nothing is written.

For each adopted object whose file still matches it: HEAD it (its Content-Type,
Cache-Control, Content-Encoding, Content-Disposition, Content-Language, storage class,
server-side encryption and user metadata are kept; our sha256 and mtime are added), then
CopyObject with MetadataDirective=REPLACE and CopySourceIfMatch=<the ETag we listed and
proved>, so an object replaced meanwhile is never stamped with a hash it does not have.
(moto and `rclone serve s3` ignore CopySourceIfMatch; the HEAD's ETag is compared first
too, which narrows the window there.) Above 5 GiB, CopyObject's limit, the copy is a
multipart copy (UploadPartCopy, each part with the same condition), aborted if any step
fails; it is not journaled, so a copy killed half-way leaves an incomplete upload that
`journalsync cleanup` lists. A part copy answered without an ETag is taken as not done
(`rclone serve s3` answers UploadPartCopy with an empty part) and the upload is aborted
before Complete could replace the object. A failed copy is a warning for that object,
never a failed run: the object keeps its content and its adoption proof.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from botocore.exceptions import ClientError

from journalsync.clients import ClientFactory
from journalsync.config import GiB, Config
from journalsync.errors import Interrupted
from journalsync.journal import Journal
from journalsync.multipart import part_size_for
from journalsync.objectmeta import metadata_sha256, mtime_text
from journalsync.retry import describe
from journalsync.workers import bounded_map

log = logging.getLogger(__name__)

COPY_OBJECT_MAX = 5 * GiB  # CopyObject's limit: larger objects are copied in parts
COPY_PART_SIZE = 512 * 1024 * 1024
# What a HEAD returns that a copy with MetadataDirective=REPLACE must be told again.
_KEPT_HEADERS = ("ContentType", "CacheControl", "ContentEncoding", "ContentDisposition",
                 "ContentLanguage", "StorageClass", "ServerSideEncryption", "SSEKMSKeyId")


class CopyRefused(Exception):
    """The store answered a copy step without doing it (no ETag for a copied part)."""


@dataclass(slots=True)
class CopyStats:
    copied: int = 0
    already: int = 0  # a HEAD found our sha256 there already (an object we wrote once)
    skipped: int = 0  # changed or gone since the LIST: left alone
    failed: int = 0


def copy_args(cfg: Config, key: str, head: dict, sha256: str, mtime_ns: int) -> dict:
    """The arguments of a CopyObject (or CreateMultipartUpload) that keeps what the object
    had and adds our metadata. Pure."""
    metadata = {k: v for k, v in (head.get("Metadata") or {}).items()
                if k.lower() not in ("sha256", "mtime")}
    metadata.update(sha256=sha256, mtime=mtime_text(mtime_ns))
    args = {"Bucket": cfg.dest.bucket, "Key": cfg.dest.object_key(key), "Metadata": metadata}
    args.update({name: head[name] for name in _KEPT_HEADERS if head.get(name)})
    return args


def write_metadata(clients: ClientFactory, cfg: Config, journal: Journal,
                   stop: threading.Event | None = None) -> CopyStats:
    """Copy every adopted object onto itself with our metadata (see the module doc)."""
    stats = CopyStats()
    lock = threading.Lock()

    def one(row: dict) -> None:
        try:
            outcome = _stamp(clients, cfg, journal, row)
        except (ClientError, CopyRefused) as exc:
            log.warning("--adopt-metadata: %s: not rewritten: %s", row["key"], describe(exc))
            outcome = "failed"
        with lock:
            setattr(stats, outcome, getattr(stats, outcome) + 1)

    with ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="adopt") as pool:
        for _ in bounded_map(pool, one, journal.adopted_without_metadata(), cfg.workers * 2,
                             stop=stop):
            pass
    if stop is not None and stop.is_set():
        raise Interrupted("stopped while writing metadata onto adopted objects")
    return stats


def _stamp(clients: ClientFactory, cfg: Config, journal: Journal, row: dict) -> str:
    client = clients.get()
    full_key = cfg.dest.object_key(row["key"])
    try:
        head = clients.call(lambda: client.head_object(Bucket=cfg.dest.bucket, Key=full_key))
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return "skipped"
        raise
    etag = head["ETag"].strip('"')
    if etag != row["etag"] or head["ContentLength"] != row["size"]:
        log.info("--adopt-metadata: %s changed since the LIST; left alone", row["key"])
        return "skipped"
    if metadata_sha256(head.get("Metadata")) == row["sha256"]:
        journal.set_metadata_written(row["key"], etag, etag, "head")
        return "already"
    args = copy_args(cfg, row["key"], head, row["sha256"], row["mtime_ns"])
    source = {"Bucket": cfg.dest.bucket, "Key": full_key}
    if row["size"] > COPY_OBJECT_MAX:
        new_etag = _multipart_copy(clients, args, source, head["ETag"], row["size"])
    else:
        resp = clients.call(lambda: client.copy_object(
            **args, CopySource=source, CopySourceIfMatch=head["ETag"],
            MetadataDirective="REPLACE"))
        new_etag = (resp.get("CopyObjectResult") or {}).get("ETag")
    if not new_etag:  # rclone serve s3 answers a copy without its ETag
        new_etag = clients.call(lambda: client.head_object(
            Bucket=cfg.dest.bucket, Key=full_key))["ETag"]
    journal.set_metadata_written(row["key"], etag, new_etag.strip('"'), "adopt-copy")
    log.info("--adopt-metadata: %s now carries sha256", row["key"])
    return "copied"


def _multipart_copy(clients: ClientFactory, args: dict, source: dict, if_match: str,
                    size: int) -> str:
    """UploadPartCopy of the whole object onto itself; aborted if any step fails."""
    client = clients.get()
    upload_id = clients.call(lambda: client.create_multipart_upload(**args))["UploadId"]
    part_size = part_size_for(size, COPY_PART_SIZE)
    try:
        parts = []
        for number, start in enumerate(range(0, size, part_size), 1):
            end = min(start + part_size, size) - 1
            resp = clients.call(lambda: client.upload_part_copy(
                Bucket=args["Bucket"], Key=args["Key"], UploadId=upload_id, PartNumber=number,
                CopySource=source, CopySourceIfMatch=if_match,
                CopySourceRange=f"bytes={start}-{end}"))
            part_etag = (resp.get("CopyPartResult") or {}).get("ETag")
            if not part_etag:
                raise CopyRefused(f"the store answered UploadPartCopy of part {number} "
                                  "without an ETag (not supported?)")
            parts.append({"PartNumber": number, "ETag": part_etag})
        done = clients.call(lambda: client.complete_multipart_upload(
            Bucket=args["Bucket"], Key=args["Key"], UploadId=upload_id,
            MultipartUpload={"Parts": parts}))
    except BaseException:
        try:
            client.abort_multipart_upload(Bucket=args["Bucket"], Key=args["Key"], UploadId=upload_id)
        except Exception as exc:  # noqa: BLE001 - the copy's own error matters more
            log.warning("--adopt-metadata: could not abort upload %s of %s: %s", upload_id,
                        args["Key"], describe(exc))
        raise
    return done.get("ETag", "")
