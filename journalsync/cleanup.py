"""Incomplete multipart uploads: find them, tell ours from others', abort what must go.

Incomplete uploads are invisible in a bucket listing yet billed as storage, so nothing we
start may be left behind: before workers start, a run aborts the journaled uploads it will
not continue and any upload under the prefix, for a key it is about to upload, that its
journal never saw (a crash between CreateMultipartUpload and the journal commit leaves
one), and every multipart copy --adopt-metadata journaled and a killed run left (a copy
is never continued). `journalsync cleanup` lists everything under the prefix, ours marked
(copies included), and aborts on request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from botocore.exceptions import ClientError

from journalsync.clients import ClientFactory
from journalsync.config import Config
from journalsync.journal import Journal
from journalsync.multipart import MultipartDriver
from journalsync.retry import describe, error_code

log = logging.getLogger(__name__)

# How far the store's clock (an upload's Initiated) may be from ours (an intent's time) for
# an unjournaled upload to be taken for the one a killed run's create made.
CREATE_WINDOW = 600.0


@dataclass(frozen=True, slots=True)
class IncompleteUpload:
    key: str  # relative to the prefix
    upload_id: str
    initiated: float  # epoch seconds


@dataclass(frozen=True, slots=True)
class CleanupRow:
    key: str
    upload_id: str
    initiated: float
    ours: bool
    action: str


def list_incomplete(clients: ClientFactory, cfg: Config) -> Iterator[IncompleteUpload]:
    """Every incomplete multipart upload under the prefix (never outside it)."""
    client = clients.get()
    prefix = cfg.dest.list_prefix
    markers: dict[str, str] = {}
    while True:
        try:
            page = clients.call(lambda: client.list_multipart_uploads(
                Bucket=cfg.dest.bucket, Prefix=prefix, MaxUploads=1000, **markers))
        except ClientError as exc:
            # rclone serve s3 answers NoSuchUpload for a bucket that never had an upload.
            if error_code(exc) == "NoSuchUpload":
                return
            raise
        for up in page.get("Uploads", ()):
            if up["Key"].startswith(prefix) and len(up["Key"]) > len(prefix):
                yield IncompleteUpload(up["Key"][len(prefix):], up["UploadId"],
                                       up["Initiated"].timestamp())
        if not page.get("IsTruncated"):
            return
        markers = {"KeyMarker": page.get("NextKeyMarker", ""),
                   "UploadIdMarker": page.get("NextUploadIdMarker", "")}


def reconcile(journal: Journal, run_id: int, driver: MultipartDriver, clients: ClientFactory,
              cfg: Config) -> int:
    """Abort the uploads this run will not continue (and every --adopt-metadata copy a
    killed run left: a copy is never continued). Returns how many were aborted."""
    aborted = _abort_unjournaled_creates(journal, run_id, clients, cfg)
    active = journal.active_uploads()
    planned = journal.planned_upload_keys(run_id, [u.key for u in active])
    newest: dict[str, str] = {}
    for rec in sorted(active, key=lambda u: u.created_at):
        if rec.kind == "upload":
            newest[rec.key] = rec.upload_id
    for rec in active:
        if rec.kind != "upload" or rec.key not in planned or newest[rec.key] != rec.upload_id:
            aborted += _abort(lambda r=rec: driver.abort(r.key, r.upload_id), rec.key)
    if not journal.has_pending_uploads(run_id):
        return aborted  # nothing to upload: no stray can be ours to clean (no request sent)
    listed = list(list_incomplete(clients, cfg))
    known = journal.known_upload_ids(u.upload_id for u in listed)
    strays = [u for u in listed if u.upload_id not in known]
    planned = journal.planned_upload_keys(run_id, [u.key for u in strays])
    for up in strays:
        if up.key in planned:
            aborted += _abort(lambda u=up: _abort_remote(clients, cfg, u), up.key)
    return aborted


def _abort_unjournaled_creates(journal: Journal, run_id: int, clients: ClientFactory,
                               cfg: Config) -> int:
    """Abort the uploads an earlier run created but never journaled: it journaled the intent
    to create (journal record_create_intent), then was killed before the UploadId was, or
    the create's answer never came. An upload of that key the journal does not know,
    initiated from CREATE_WINDOW before the intent to CREATE_WINDOW (plus the create's
    retries) after it, is that run's: aborted, even once the file is gone and its key no
    longer planned. An intent whose key cannot be listed stays for the next run."""
    aborted = 0
    client = None
    for intent, key, when in journal.create_intents(before_run=run_id):
        full = cfg.dest.object_key(key)
        client = client or clients.get()
        try:
            page = clients.call(lambda full=full: client.list_multipart_uploads(
                Bucket=cfg.dest.bucket, Prefix=full, MaxUploads=1000))
        except ClientError as exc:
            if error_code(exc) != "NoSuchUpload":  # rclone: a bucket without uploads
                log.warning("could not list the uploads of %s, whose create a killed run "
                            "may have left: %s; the next run tries again", key, describe(exc))
                continue
            page = {}
        ups = [up for up in page.get("Uploads", ()) if up["Key"] == full]
        known = journal.known_upload_ids(up["UploadId"] for up in ups)
        for up in ups:
            initiated = up["Initiated"].timestamp()
            if up["UploadId"] not in known and \
                    when - CREATE_WINDOW <= initiated <= when + CREATE_WINDOW + cfg.retry_timeout:
                stray = IncompleteUpload(key, up["UploadId"], initiated)
                aborted += _abort(lambda u=stray: _abort_remote(clients, cfg, u), key)
        journal.forget_create_intent(intent)
    return aborted


def _abort_remote(clients: ClientFactory, cfg: Config, up: IncompleteUpload) -> None:
    client = clients.get()
    try:
        clients.call(lambda: client.abort_multipart_upload(
            Bucket=cfg.dest.bucket, Key=cfg.dest.object_key(up.key), UploadId=up.upload_id))
    except ClientError as exc:
        if error_code(exc) != "NoSuchUpload":
            raise


def _abort(fn, key: str) -> int:
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - the next run or `cleanup` tries again
        log.warning("could not abort an incomplete upload of %s: %s", key, describe(exc))
        return 0
    log.info("aborted an incomplete upload of %s", key)
    return 1


def cleanup(cfg: Config, journals: list[Path], older_than: float, abort: bool) -> list[CleanupRow]:
    """List (and with `abort`, abort) incomplete uploads under the prefix older than
    `older_than` seconds, marking those that belong to one of `journals`."""
    clients = ClientFactory(cfg)
    listed = list(list_incomplete(clients, cfg))
    owners: dict[str, Path] = {}
    for path in journals:
        with Journal(path) as journal:
            owners.update(dict.fromkeys(journal.known_upload_ids(u.upload_id for u in listed), path))
    now = time.time()
    rows = []
    for up in listed:
        ours = up.upload_id in owners
        if now - up.initiated < older_than:
            action = f"kept: younger than {older_than:g}s"
        elif not abort:
            action = "would abort (dry run; --abort to abort)"
        else:
            action = _cleanup_abort(clients, cfg, up, owners.get(up.upload_id))
        rows.append(CleanupRow(up.key, up.upload_id, up.initiated, ours, action))
    return rows


def _cleanup_abort(clients: ClientFactory, cfg: Config, up: IncompleteUpload,
                   journal_path: Path | None) -> str:
    try:
        _abort_remote(clients, cfg, up)
    except Exception as exc:  # noqa: BLE001 - reported in the row
        return f"abort failed: {describe(exc)}"
    if journal_path is not None:
        with Journal(journal_path) as journal:
            journal.set_upload_state(up.upload_id, "aborted")
    return "aborted"

