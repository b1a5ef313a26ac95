"""Transfers: a single PUT for small files, the journaled multipart driver for large ones.

Why not `upload_file` + TransferConfig: s3transfer aborts an UploadId when a part fails and
never hands it out (so a crashed upload can be neither resumed nor cleaned up by us), it
does not return the ETag we need to trust our cached manifest, it cannot prove that the
bytes it streamed are the bytes whose SHA-256 we put in the metadata, and it starts a
thread pool per call, which is slow for many small files. So a small file is read once,
hashed, and sent with Content-MD5 (or the CRC64-NVME a store checks: integrity.py) in one PutObject, retried with the same bytes, through
awscrt where it is installed (crt.py: about 4x the PUTs per second of botocore); large
files go through multipart.MultipartDriver.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property

from botocore.exceptions import ClientError

from journalsync.adopt import etag_disproves
from journalsync.clients import ClientFactory
from journalsync.config import Config, MiB
from journalsync.errors import Interrupted
from journalsync.journal import Journal
from journalsync.models import Action, PlanItem, TransferResult
from journalsync.multipart import FileChanged, MultipartDriver, UploadGone
from journalsync.sharedparts import SharedParts
from journalsync.stamp import StampPrecondition, StampRefused
from journalsync.integrity import check_for
from journalsync.objectmeta import NOT_IN_XML, inode_number, metadata_sha256, object_args, read_identity
from journalsync.process import reuse_part_buffers
from journalsync.report import shown
from journalsync.retry import Attempts, describe, error_code, fatal_reason, fatal_scope, http_status
from journalsync.safeio import SourceRefused, open_source

log = logging.getLogger(__name__)

ONE_PUT_MAX = 256 * MiB  # a large file named so that it cannot go in parts: read whole


class Uploader:
    """Uploads plan items. Called from worker threads; each uses its thread's client."""

    def __init__(self, cfg: Config, journal: Journal, run_id: int, clients: ClientFactory,
                 part_pool: ThreadPoolExecutor, stop: threading.Event | None = None,
                 head_refused: set[str] | frozenset[str] = frozenset()):
        self.cfg = cfg
        self.journal = journal
        self.clients = clients
        self.stop = stop or threading.Event()
        self.head_refused = head_refused
        reuse_part_buffers()  # from here on, part bodies come and go (process.py)
        self.multipart = MultipartDriver(cfg, journal, run_id, clients, part_pool, self.stop)
        # A large file's parts sent by many workers (PostgreSQL only): sharedparts.py.
        self.shared = SharedParts(self.multipart, cfg.part_unit)
        self._by_driver: set[int] = set()  # items in the multipart driver's hands (_send)

    def upload(self, item: PlanItem) -> TransferResult:
        """Upload one file; never raises for a per-file problem. A journaled upload of its
        key that the multipart driver did not take up is then aborted (_abort_unused)."""
        try:
            result = self._upload(item)
        finally:
            by_driver = item.id in self._by_driver
            self._by_driver.discard(item.id)
        if not (by_driver or result.interrupted or result.fatal) and \
                (item.key in self._upload_keys or item.maybe_sent):
            self._abort_unused(item.key)
        return result

    @cached_property
    def _upload_keys(self) -> frozenset[str]:
        """Keys with a journaled active upload when this process first needed to know: read
        once, so a file without one costs no query. An upload begun later is its driver's,
        unless that process lost the file's chunk (its lease expired): such an item comes
        here `maybe_sent`, and is looked up on its own."""
        return frozenset(rec.key for rec in self.journal.active_uploads()
                         if rec.kind == "upload")

    def _abort_unused(self, key: str) -> None:
        """Abort the key's journaled upload that nothing will continue. Reconcile kept it, the
        key being planned, for the multipart driver, which continues such an upload or aborts
        it (MultipartDriver._resumable); but this file never reached the driver: it shrank
        under --multipart-threshold (sent by one PutObject, or failed to be), vanished, or
        was refused. Left on the store, the upload is billed, unlisted, after a run that
        says all was done. A failed abort fails nothing: one warning, and the next run's
        reconcile aborts it (or this method does again, the key planned again)."""
        if self.stop.is_set():
            return  # a stopping run keeps every upload, as MultipartDriver._abort_quietly
        rec = self.journal.active_upload_for(key)
        if rec is None or rec.kind != "upload":
            return  # aborted by reconcile, or by another holder of this file
        try:
            self.multipart.abort(key, rec.upload_id)
        except Exception as exc:  # noqa: BLE001 - as said above
            log.warning("could not abort the unused upload of %s (%s); the next run does",
                        shown(key), describe(exc))
            return
        log.info("aborted the upload of %s begun before: its file was not sent through it",
                 shown(key))

    def _upload(self, item: PlanItem) -> TransferResult:
        counter = Attempts()
        fail = lambda error, **kw: TransferResult(item.id, item.key, False, counter.count,  # noqa: E731
                                                  error=error, **kw)
        if self.stop.is_set():
            return fail("interrupted before it started", interrupted=True)
        try:
            # One descriptor, opened without following symlinks, is stat'ed, hashed and sent.
            with open_source(str(self.cfg.source), item.path or item.key) as fh:
                result = self._send(item, fh, counter)
            log.info("uploaded %s (%s; %d bytes, %d attempt(s))", shown(item.key), item.reason,
                     result.size or 0, result.attempts)
            return result
        except Interrupted as exc:
            return fail(str(exc), interrupted=True)
        except FileChanged as exc:
            # The cached hash may be what was wrong (a write its timestamps did not show):
            # forget it, so the next scan hashes the file again instead of failing forever.
            self.journal.forget_hash(item.key)
            return fail(str(exc))
        except (SourceRefused, UploadGone) as exc:
            return fail(str(exc))
        except FileNotFoundError:
            # Gone since the scan (deleted, or its directory renamed): nothing to send, and
            # nothing failed; its object, if any, is judged by the next scan.
            return fail("vanished since the scan; not uploaded", vanished=True)
        except OSError as exc:
            return fail(f"cannot read: {exc.strerror or exc}")
        except Exception as exc:  # noqa: BLE001 - every per-file failure is journaled
            fatal = fatal_reason(exc)
            if fatal and http_status(exc) == 403 and item.key in self.head_refused:
                # Its HEAD was refused too: the store refuses this one object (another
                # account's, another customer's SSE-C key), not our credentials.
                return fail(f"refused by the store, as its HEAD was: {describe(exc)}")
            scope = fatal_scope(exc)
            return fail(fatal or self._in_the_way(item.key) or describe(exc),
                        fatal=scope in ("run", "resumable"),
                        denied=scope == "object", resumable=scope == "resumable")

    def _in_the_way(self, key: str) -> str | None:
        """Why a refused upload may have been refused, when the cached manifest tells: a store
        over a filesystem (rclone serve s3, MinIO) cannot write `a` beside objects under
        `a/`, nor `a/b` beside an object `a`, and answers with a bare 500. Asked only of a
        failed upload; with --delete such an object goes before the uploads, unless the
        guard refused (deletefirst.deletes_first)."""
        try:
            conflict = self.journal.stored_conflict(key)
        except Exception as exc:  # noqa: BLE001 - the upload's own error is still there
            log.debug("cannot look for objects in the way of %s: %s", shown(key), exc)
            return None
        if conflict is None:
            return None
        return conflict + ("; the delete guard kept it" if self.cfg.delete
                           else "; --delete would remove it")

    def _send(self, item: PlanItem, fh, counter: Attempts) -> TransferResult:
        st = os.fstat(fh.fileno())
        if item.inode is not None and inode_number(st.st_ino) != item.inode:
            log.info("%s was replaced since the scan; sending the file there now", shown(item.key))
        path = os.path.join(self.cfg.source, item.path or item.key)
        if st.st_size >= self.cfg.multipart_threshold and not self._one_put(item, st):
            self._by_driver.add(item.id)  # it continues or aborts the key's upload itself
            unit = self.shared.unit_for(item, st)
            if unit:
                return self.shared.upload(item, path, counter, fh, st, unit)
            return self.multipart.upload(item, path, counter, fh)
        return self._single(item, fh, st, counter)

    def _one_put(self, item: PlanItem, st: os.stat_result) -> bool:
        """A large file whose key an XML answer cannot carry (objectmeta.NOT_IN_XML) goes in
        one PUT, whose answer holds no key: its multipart upload would be answered with 500
        by some stores and then stop every later run's listing of uploads. Read whole into
        memory, so only up to ONE_PUT_MAX; a larger one fails alone, saying why."""
        if not NOT_IN_XML.search(self.cfg.dest.object_key(item.key)):
            return False
        if st.st_size > ONE_PUT_MAX:
            raise SourceRefused(
                "its name holds a control character that S3's multipart answers cannot "
                f"carry, and it is over {ONE_PUT_MAX // MiB} MiB, the most sent in one PUT "
                "instead: rename it")
        log.info("%s: its name holds a control character; sent in one PUT, not in parts",
                 shown(item.key))
        return True

    def _single(self, item: PlanItem, fh, st: os.stat_result, counter: Attempts) -> TransferResult:
        started = time.time_ns()
        data = fh.read()
        # The metadata describes the bytes actually sent, even if the file moved on
        # since the scan; the next scan sees the new stat and compares again.
        sha = hashlib.sha256(data).hexdigest()
        identity = read_identity(st, os.fstat(fh.fileno()), started)
        args = object_args(self.cfg, item.key, sha, st.st_mtime_ns)
        if item.maybe_sent:
            etag = self._stored_already(item, data, sha)
            if etag is not None:
                log.info("%s: the store holds it already (a former try's PUT); not sent again",
                         shown(item.key))
                return TransferResult(item.id, item.key, True, 0, size=len(data), etag=etag,
                                      sha256=sha, file_identity=identity)
        check = check_for(self.clients.body_check, data)  # Content-MD5 or CRC64-NVME
        crt = self.clients.crt()
        # --bwlimit paces the body as it is read; the CRT reads on its own threads, unpaced.
        if crt is not None and self.clients.bandwidth is None and crt.supports(args):
            etag = self.clients.call(lambda: crt.put(args, data, check), counter)
        else:
            client = self.clients.get()
            etag = self.clients.call(lambda: client.put_object(
                Body=self.clients.body(data), **check.boto_args, **args), counter)["ETag"].strip('"')
        return TransferResult(item.id, item.key, True, counter.count,
                              bytes_sent=len(data) * counter.count, size=len(data),
                              etag=etag, sha256=sha, file_identity=identity)

    def _stored_already(self, item: PlanItem, data: bytes, sha: str) -> str | None:
        """The ETag of the object under the item's key if it holds these very bytes: their
        size, our sha256 metadata equal to their hash (the file as it is now, not as the
        journal knew it), and no single-part ETag that says otherwise. Else None (no
        such object, other bytes, or a HEAD that failed): the file is sent."""
        client = self.clients.get()
        try:
            head = self.clients.call(lambda: client.head_object(
                Bucket=self.cfg.dest.bucket, Key=self.cfg.dest.object_key(item.key)))
        except ClientError as exc:
            if http_status(exc) not in (404, 400, 403):
                raise
            return None
        etag = head["ETag"].strip('"')
        if head.get("ContentLength") != len(data) or metadata_sha256(head.get("Metadata")) != sha:
            return None
        if etag_disproves(etag, hashlib.md5(data).hexdigest(), head.get("ServerSideEncryption"),
                          bool(head.get("SSECustomerAlgorithm"))):
            return None
        return etag

    def abort(self, key: str, upload_id: str) -> None:
        self.multipart.abort(key, upload_id)


def stamp_leftovers(cfg: Config, journal: Journal, run_id: int, clients: ClientFactory,
                    stop: threading.Event) -> int:
    """Before the scan: stamp the streamed uploads a killed run completed but did not stamp
    (multipart.py, stamp.py), sending nothing again:
    - `unstamped` ones (killed between Complete and the stamp), where the object is still
      the one completed and the file the one read;
    - `active` ones the store no longer knows (killed after the store took the Complete,
      before its answer came), where the object still carries the upload's sha256-pending
      mark and a read of the file now proves its ETag, as `run --resume` does
      (LargeFiles.finish_completed). Left to the plan, such an object would be adopted by
      its ETag and keep its sha256-pending mark, so `verify` would skip it for good. One
      the store still holds, or whose file the journal no longer knows, is not touched.
    The object's new ETag and sha256, and the file's hash, go into the journal as an
    upload's would, so the plan finds the pair unchanged. One that cannot be stamped
    (the file or the object changed, a 4xx about that object) is left to the plan, which
    adopts it or uploads the file as usual. Returns how many were stamped.

    A stop ends it between leftovers, or in a file's read (finish_completed: a read to
    prove an object, not a byte sent); those stamped so far are journaled, the rest are
    the next run's, and Interrupted is raised as every stopped phase does."""
    leftovers = journal.unstamped_uploads()
    streamed = journal.streamed_active_uploads()
    if not leftovers and not streamed:
        return 0
    driver = MultipartDriver(cfg, journal, run_id, clients, None, stop)  # type: ignore[arg-type]
    results = []
    try:
        _stamp_each(cfg, journal, driver, leftovers, streamed, results)
    except Interrupted:
        journal.record_results(results)
        raise
    journal.record_results(results)
    return len(results)


def _stamp_each(cfg: Config, journal: Journal, driver: MultipartDriver, leftovers, streamed,
                results: list) -> None:
    """stamp_leftovers' loop: each result appended to `results` as it is made."""
    for rec, path, active in [*((r, p, False) for r, p in leftovers),
                              *((r, p, True) for r, p in streamed)]:
        if driver.stop.is_set():
            raise Interrupted("stopped while stamping the uploads a killed run left")
        if active and (path is None or not _upload_gone(driver, rec)):
            continue  # the store holds it still (the plan continues it, or reconcile aborts
            # it), or the file is no longer known: the plan decides
        item = PlanItem(0, rec.key, Action.UPLOAD, "stamp", rec.size, path=path)
        try:
            with open_source(str(cfg.source), path or rec.key) as fh:
                st = os.fstat(fh.fileno())
                result = driver.large.finish_completed(item, rec, fh, st, Attempts()) \
                    if active else driver.large.finish_unstamped(item, fh, st, Attempts())
        except (StampRefused, StampPrecondition, SourceRefused, OSError, ClientError) as exc:
            if isinstance(exc, ClientError) and not _refused_for_this_object(exc):
                raise  # the store's trouble or the run's (5xx, credentials): exit 4, as before
            if isinstance(exc, StampRefused):
                driver.large.refuse(exc)
            if not active:  # completed, as its journal says: the plan decides
                journal.set_upload_state(rec.upload_id, "completed")
            # An active one stays so: its NoSuchUpload may have come from something on the
            # way while the store still holds it, and only an active upload is aborted by
            # reconcile (journaled `completed`, it would be left on the store for good).
            log.info("%s was not stamped (%s); the plan decides", shown(rec.key),
                     describe(exc) if isinstance(exc, ClientError) else exc)
            continue
        if result is not None:
            if active:
                journal.set_upload_state(rec.upload_id, "completed")
            results.append(result)


def _refused_for_this_object(exc: ClientError) -> bool:
    """A 4xx about this one object: its HEAD or copy refused (a bucket policy on its key,
    another writer's SSE-C object read without its key: 400), or the object deleted since
    the HEAD. It is left to the plan, which meets such an object as any other; ending the
    run here would leave the record as it is, and every plain run would end the same way
    before its scan. A 5xx, a throttle, or credentials and clock refused for the whole run
    (fatal_scope "run" or "resumable") still end the run."""
    status = http_status(exc)
    return status is not None and 400 <= status < 500 and status != 429 and \
        fatal_scope(exc) in (None, "object")


def _upload_gone(driver: MultipartDriver, rec) -> bool:
    """Whether the store says it no longer knows this upload (completed or aborted). Any
    other answer (ListParts refused to these credentials, say) leaves it to the plan."""
    try:
        driver.held_parts(rec.key, rec.upload_id)
    except ClientError as exc:
        if error_code(exc) == "NoSuchUpload":
            return True
        log.info("cannot tell whether the upload of %s was completed (%s); the plan decides",
                 shown(rec.key), describe(exc))
    return False
