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
fails. Its UploadId and parts are journaled (multipart_uploads, marked as a copy: see
journal/uploads.py), so a run killed half-way leaves an upload that `status` shows in
flight, the next run aborts, and `journalsync cleanup` lists as ours. A part copy
answered without an ETag is taken as not done (`rclone serve s3` answers UploadPartCopy
with an empty part) and the upload is aborted before Complete could replace the object.

What a copy would lose, and what we do about it:
- **The ACL.** A copy gets the default (private) ACL. Before copying, GetObjectAcl: an
  object with any grant beyond its owner's FULL_CONTROL is copied with the same grants
  (GrantFullControl/GrantRead/GrantReadACP/GrantWriteACP, the owner's included), and its
  ACL is read again afterwards (put back with PutObjectAcl if it differs). A grant that
  cannot be expressed that way leaves the object alone. A store without object ACLs
  (GetObjectAcl answers 501 NotImplemented, or, outside AWS, 500 twice in a row as
  `rclone serve s3` does) is taken as owner-only, for the rest of the run.
  Credentials without s3:GetObjectAcl stop --adopt-metadata (one line): we cannot tell
  whether a copy would make a public object private.
- **Object Lock retention or legal hold, Expires, WebsiteRedirectLocation** are not
  carried over: an object whose HEAD shows any of them is left alone, with one line.
- **Versioned buckets:** each copy is a new version and the old one is kept as
  noncurrent, so the bytes are stored twice until a lifecycle rule expires noncurrent
  versions.

A failed copy is a warning for that object, never a failed run: the object keeps its
content and its adoption proof. A store that answers 501 (no copies) or AccessDenied
(credentials without s3:PutObject for copies) stops the copies after the first, in one
line, rather than asking again for every object.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from botocore.exceptions import ClientError

from journalsync import adopt
from journalsync.clients import ClientFactory
from journalsync.config import GiB, Config
from journalsync.errors import Interrupted
from journalsync.journal import Journal, UploadRecord
from journalsync.journal.uploads import COPY_MARK
from journalsync.multipart import part_size_for
from journalsync.objectmeta import calendar_ns, metadata_sha256, mtime_text
from journalsync.retry import describe, error_code, http_status
from journalsync.workers import bounded_map

log = logging.getLogger(__name__)

COPY_OBJECT_MAX = 5 * GiB  # CopyObject's limit: larger objects are copied in parts
COPY_PART_SIZE = 512 * 1024 * 1024
# What a HEAD returns that a copy with MetadataDirective=REPLACE must be told again.
_KEPT_HEADERS = ("ContentType", "CacheControl", "ContentEncoding", "ContentDisposition",
                 "ContentLanguage", "StorageClass", "ServerSideEncryption", "SSEKMSKeyId")


class CopyRefused(Exception):
    """The store answered a copy step without doing it (no ETag for a copied part)."""


class StopCopies(Exception):
    """No copy can succeed (or be made safely) with this store or these credentials."""


@dataclass(slots=True)
class CopyStats:
    copied: int = 0
    already: int = 0  # a HEAD found our sha256 there already (an object we wrote once)
    skipped: int = 0  # changed or gone since the LIST: left alone
    failed: int = 0
    left: int = 0  # a copy would lose something (see the module doc): left alone


@dataclass(slots=True)
class _Shared:
    """What the copy threads learn about the store once, for all of them."""

    lock: threading.Lock
    stopped: list[str]  # non-empty: no more copies (the reason, said once)
    no_acls: bool = False  # GetObjectAcl is not supported: every object is owner-only


def copy_args(cfg: Config, key: str, head: dict, sha256: str, mtime_ns: int) -> dict:
    """The arguments of a CopyObject (or CreateMultipartUpload) that keeps what the object
    had and adds our metadata. Pure."""
    metadata = {k: v for k, v in (head.get("Metadata") or {}).items()
                if k.lower() not in ("sha256", "mtime")}
    metadata.update(sha256=sha256, mtime=mtime_text(mtime_ns))
    args = {"Bucket": cfg.dest.bucket, "Key": cfg.dest.object_key(key), "Metadata": metadata}
    args.update({name: head[name] for name in _KEPT_HEADERS if head.get(name)})
    return args


def not_carried(head: dict) -> str | None:
    """What a HEAD shows that a copy would not carry over (the object is then left
    alone), or None. Pure."""
    if head.get("ObjectLockMode") or head.get("ObjectLockRetainUntilDate"):
        return "Object Lock retention"
    if head.get("ObjectLockLegalHoldStatus") == "ON":
        return "an Object Lock legal hold"
    if head.get("Expires") or head.get("ExpiresString"):
        return "an Expires header"
    if head.get("WebsiteRedirectLocation"):
        return "a website redirect"
    return None


def grant_args(acl: dict) -> dict[str, str] | None:
    """Grant* arguments that give a copy exactly the grants of `acl` (a GetObjectAcl
    answer): {} when the ACL is only its owner's FULL_CONTROL (what a copy gets anyway),
    None when some grant cannot be said in a Grant* header. Pure."""
    owner = (acl.get("Owner") or {}).get("ID")
    grants = acl.get("Grants") or []
    if all(_grantee(g["Grantee"]) == f'id="{owner}"' and g["Permission"] == "FULL_CONTROL"
           for g in grants):
        return {}
    args: dict[str, list[str]] = {}
    for grant in grants:
        header, who = _GRANT_HEADERS.get(grant.get("Permission")), _grantee(grant["Grantee"])
        if header is None or who is None:
            return None
        args.setdefault(header, []).append(who)
    return {header: ", ".join(who) for header, who in args.items()}


_GRANT_HEADERS = {"FULL_CONTROL": "GrantFullControl", "READ": "GrantRead",
                  "READ_ACP": "GrantReadACP", "WRITE_ACP": "GrantWriteACP"}


def _grantee(grantee: dict) -> str | None:
    kind = grantee.get("Type")
    if kind == "CanonicalUser" and grantee.get("ID"):
        return f'id="{grantee["ID"]}"'
    if kind == "Group" and grantee.get("URI"):
        return f'uri="{grantee["URI"]}"'
    if kind == "AmazonCustomerByEmail" and grantee.get("EmailAddress"):
        return f'emailAddress="{grantee["EmailAddress"]}"'
    return None


def _grant_set(acl: dict) -> set[tuple[str | None, str]]:
    return {(_grantee(g["Grantee"]), g["Permission"]) for g in acl.get("Grants") or []}


def write_metadata(clients: ClientFactory, cfg: Config, journal: Journal, run_id: int,
                   stop: threading.Event | None = None) -> CopyStats:
    """Copy every adopted object onto itself with our metadata (see the module doc).
    `run_id` owns the multipart copies journaled on the way."""
    stats = CopyStats()
    shared = _Shared(threading.Lock(), [])

    def one(row: dict) -> None:
        outcome = "failed"
        if not shared.stopped:
            try:
                outcome = _stamp(clients, cfg, journal, run_id, row, shared)
            except StopCopies as exc:
                _stop(shared, str(exc))
            except (ClientError, CopyRefused) as exc:
                if http_status(exc) == 501 or error_code(exc) == "NotImplemented":
                    _stop(shared, f"the store does not support copies ({describe(exc)})")
                elif error_code(exc) == "AccessDenied":
                    _stop(shared, "the credentials lack s3:PutObject for copies (CopyObject: "
                                  f"{describe(exc)})")
                else:
                    log.warning("--adopt-metadata: %s: not rewritten: %s", row["key"],
                                describe(exc))
        with shared.lock:
            setattr(stats, outcome, getattr(stats, outcome) + 1)

    with ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="adopt") as pool:
        for _ in bounded_map(pool, one, journal.adopted_without_metadata(), cfg.workers * 2,
                             stop=stop):
            pass
    if stop is not None and stop.is_set():
        raise Interrupted("stopped while writing metadata onto adopted objects")
    return stats


def _stop(shared: _Shared, reason: str) -> None:
    with shared.lock:
        first = not shared.stopped
        shared.stopped.append(reason)
    if first:  # one line, not one per object
        log.warning("--adopt-metadata: %s; no further adopted object is rewritten", reason)


def _stamp(clients: ClientFactory, cfg: Config, journal: Journal, run_id: int, row: dict,
           shared: _Shared) -> str:
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
    lost, acl, grants = _what_a_copy_loses(clients, cfg, full_key, head, shared)
    if lost:
        log.warning("--adopt-metadata: %s: left alone: it has %s, which a copy onto itself "
                    "would not keep (it stays adopted)", row["key"], lost)
        return "left"
    # The journal's mtime (stored_ns) as a time: no stat here, so the one nearest now.
    mtime_ns = calendar_ns(row["mtime_ns"], time.time_ns())
    args = {**copy_args(cfg, row["key"], head, row["sha256"], mtime_ns), **grants}
    source = {"Bucket": cfg.dest.bucket, "Key": full_key}
    if row["size"] > COPY_OBJECT_MAX:
        new_etag = _multipart_copy(clients, journal, _copy_record(run_id, row), args, source,
                                   head["ETag"])
    else:
        resp = clients.call(lambda: client.copy_object(
            **args, CopySource=source, CopySourceIfMatch=head["ETag"],
            MetadataDirective="REPLACE"))
        new_etag = (resp.get("CopyObjectResult") or {}).get("ETag")
    if grants:
        _check_acl(clients, cfg, row["key"], acl)
    if not new_etag:  # rclone serve s3 answers a copy without its ETag
        new_etag = clients.call(lambda: client.head_object(
            Bucket=cfg.dest.bucket, Key=full_key))["ETag"]
    new_etag = new_etag.strip('"')
    if row.get("md5") and adopt.etag_disproves(new_etag, row["md5"], head.get("ServerSideEncryption"),
                                               bool(head.get("SSECustomerAlgorithm"))):
        # The copy's ETag is the MD5 of other bytes: the object was replaced between the
        # HEAD and the copy and the store ignored CopySourceIfMatch (moto, rclone serve s3).
        journal.forget_copied_hash(row["key"], etag, new_etag)
        log.warning("--adopt-metadata: %s changed during the copy; its file will be uploaded "
                    "next run", row["key"])
        return "skipped"
    journal.set_metadata_written(row["key"], etag, new_etag, "adopt-copy")
    log.info("--adopt-metadata: %s now carries sha256", row["key"])
    return "copied"


def _what_a_copy_loses(clients: ClientFactory, cfg: Config, full_key: str, head: dict,
                       shared: _Shared) -> tuple[str | None, dict | None, dict[str, str]]:
    """(what a copy onto itself would lose, or None; the object's ACL, None on a store
    without ACLs; the Grant* arguments that keep it)."""
    lost = not_carried(head)
    if lost:
        return lost, None, {}
    acl = _object_acl(clients, cfg, full_key, shared)
    grants = {} if acl is None else grant_args(acl)
    if grants is None:
        return "an ACL grant a copy cannot repeat", acl, {}
    return None, acl, grants


def _object_acl(clients: ClientFactory, cfg: Config, full_key: str, shared: _Shared) -> dict | None:
    """The object's ACL, or None on a store without object ACLs (see the module doc).
    Not through the run's retry policy: `rclone serve s3` answers 500 to every
    GetObjectAcl, so outside AWS a 500 given twice in a row means no ACLs, for the run."""
    if shared.no_acls:
        return None
    for attempt in (1, 2):
        try:
            return clients.get().get_object_acl(Bucket=cfg.dest.bucket, Key=full_key)
        except ClientError as exc:
            status, code = http_status(exc), error_code(exc)
            if code == "AccessDenied":
                raise StopCopies("the credentials lack s3:GetObjectAcl, so a copy could make a "
                                 "public object private") from exc
            if not (status == 501 or code == "NotImplemented"
                    or status == 500 and clients.preset.name != "aws"):
                raise
            if status == 500 and attempt == 1:
                time.sleep(0.5)  # a passing 500 must not turn the ACL check off
                continue
            with shared.lock:
                shared.no_acls = True
            log.info("--adopt-metadata: the store has no object ACLs (%s): copies keep the "
                     "owner's access only", describe(exc))
            return None
    return None  # not reached: the second attempt returns or raises


def _check_acl(clients: ClientFactory, cfg: Config, key: str, before: dict) -> None:
    """The copy was given the object's grants: read them back, and put them back if the
    store did not keep them exactly."""
    client = clients.get()
    full_key = cfg.dest.object_key(key)
    after = clients.call(lambda: client.get_object_acl(Bucket=cfg.dest.bucket, Key=full_key))
    if _grant_set(after) == _grant_set(before):
        return
    log.warning("--adopt-metadata: %s: the copy did not keep its ACL; putting it back", key)
    policy = {"Grants": before["Grants"], "Owner": after.get("Owner") or before.get("Owner")}
    clients.call(lambda: client.put_object_acl(Bucket=cfg.dest.bucket, Key=full_key,
                                               AccessControlPolicy=policy))


def _copy_record(run_id: int, row: dict) -> UploadRecord:
    """The journal row of a multipart copy: the file's identity, and its sha256 behind
    COPY_MARK so no upload of the file ever continues it (journal/uploads.py)."""
    return UploadRecord("", row["key"], run_id, part_size_for(row["size"], COPY_PART_SIZE),
                        row["size"], row["mtime_ns"] or 0, row.get("ctime_ns") or 0,
                        row.get("inode") or 0, COPY_MARK + row["sha256"], 0.0, "active")


def _multipart_copy(clients: ClientFactory, journal: Journal, rec: UploadRecord, args: dict,
                    source: dict, if_match: str) -> str:
    """UploadPartCopy of the whole object onto itself, journaled like an upload (so a
    killed run's copy is aborted by the next run); aborted if any step fails."""
    client = clients.get()
    upload_id = clients.call(lambda: client.create_multipart_upload(**args))["UploadId"]
    journal.record_upload(replace(rec, upload_id=upload_id, created_at=time.time()), None)
    try:
        parts = []
        for number, start in enumerate(range(0, rec.size, rec.part_size), 1):
            end = min(start + rec.part_size, rec.size) - 1
            resp = clients.call(lambda: client.upload_part_copy(
                Bucket=args["Bucket"], Key=args["Key"], UploadId=upload_id, PartNumber=number,
                CopySource=source, CopySourceIfMatch=if_match,
                CopySourceRange=f"bytes={start}-{end}"))
            part_etag = (resp.get("CopyPartResult") or {}).get("ETag")
            if not part_etag:
                raise CopyRefused(f"the store answered UploadPartCopy of part {number} "
                                  "without an ETag (not supported?)")
            journal.record_part(upload_id, number, part_etag.strip('"'), end + 1 - start)
            parts.append({"PartNumber": number, "ETag": part_etag})
        # IfMatch: the parts were copied from `if_match`; an object replaced since the last
        # part copy must not be reverted by Complete (AWS honours it; stores that ignore it
        # leave a window of one request).
        done = clients.call(lambda: client.complete_multipart_upload(
            Bucket=args["Bucket"], Key=args["Key"], UploadId=upload_id,
            MultipartUpload={"Parts": parts}, IfMatch=if_match))
    except BaseException:
        try:
            client.abort_multipart_upload(Bucket=args["Bucket"], Key=args["Key"], UploadId=upload_id)
            journal.set_upload_state(upload_id, "aborted")
        except Exception as exc:  # noqa: BLE001 - the copy's own error matters more
            log.warning("--adopt-metadata: could not abort upload %s of %s: %s", upload_id,
                        args["Key"], describe(exc))
        raise
    journal.set_upload_state(upload_id, "completed")
    return done.get("ETag", "")
