"""The remote manifest: LIST the prefix into the journal, HEAD only where a hash is missing.

The prefix is a boundary: we list `prefix/`, so `backup/host1` never sees `backup/host10`,
and any key a server returns outside it is ignored, never touched.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from botocore.exceptions import ClientError

from journalsync.clients import ClientFactory
from journalsync.config import Config
from journalsync.errors import Interrupted
from journalsync.journal import Journal
from journalsync.journal import BATCH
from journalsync.retry import error_code
from journalsync.objectmeta import metadata_sha256
from journalsync.workers import bounded_map


@dataclass(slots=True)
class ManifestStats:
    listed: int = 0
    pages: int = 0
    heads: int = 0


def check_bucket(clients: ClientFactory, cfg: Config) -> None:
    """One cheap LIST so a wrong bucket or bad credentials fail before any scanning."""
    client = clients.get()
    clients.call(lambda: client.list_objects_v2(
        Bucket=cfg.dest.bucket, Prefix=cfg.dest.list_prefix, MaxKeys=1))


def refresh(clients: ClientFactory, cfg: Config, journal: Journal, run_id: int,
            stop: threading.Event | None = None) -> ManifestStats:
    """Replace the cached manifest with a fresh ListObjectsV2 of the prefix."""
    stats = ManifestStats()
    prefix = cfg.dest.list_prefix
    fetch = _page_fetcher(clients, cfg)
    journal.begin_listing()
    token: str | None = None
    rows: list[tuple] = []
    while True:
        page, token = clients.call(lambda: fetch(token))
        stats.pages += 1
        for key, size, etag, last_modified in page:
            if not key.startswith(prefix) or len(key) == len(prefix):
                continue  # outside the boundary, or the "prefix/" marker itself
            rows.append((key[len(prefix):], size, etag, last_modified))
        if len(rows) >= BATCH:
            journal.stage_remote(rows)
            stats.listed += len(rows)
            rows = []
        if stop is not None and stop.is_set():
            raise Interrupted("stopped while listing")
        if not token:
            break
    journal.stage_remote(rows)
    stats.listed += len(rows)
    journal.commit_listing(run_id)
    return stats


def _page_fetcher(clients: ClientFactory, cfg: Config):
    """fetch(token) -> (rows of (key, size, etag, last_modified), next token or None):
    through awscrt and our own XML parsing where it is available, else botocore."""
    prefix = cfg.dest.list_prefix
    crt = clients.crt()
    if crt is not None:
        return lambda token: crt.list_page(prefix, token)
    client = clients.get()

    def fetch(token: str | None):
        kwargs = {"Bucket": cfg.dest.bucket, "Prefix": prefix, "MaxKeys": 1000}
        if token:
            kwargs["ContinuationToken"] = token
        page = client.list_objects_v2(**kwargs)
        rows = [(obj["Key"], obj["Size"], obj.get("ETag", "").strip('"'),
                 obj["LastModified"].timestamp()) for obj in page.get("Contents", ())]
        return rows, page.get("NextContinuationToken") if page.get("IsTruncated") else None

    return fetch


def fill_hashes(clients: ClientFactory, cfg: Config, journal: Journal, stats: ManifestStats) -> None:
    """HEAD the objects whose hash is unknown but whose size equals the local file's, and
    take their sha256 metadata. Objects that differ in size need no HEAD: they upload."""

    def head(item: tuple[str, str]) -> dict | None:
        key, etag = item
        client = clients.get()
        try:
            resp = clients.call(
                lambda: client.head_object(Bucket=cfg.dest.bucket, Key=cfg.dest.object_key(key)))
        except ClientError as exc:
            if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None  # gone since LIST: it will be uploaded
            raise
        sha = metadata_sha256(resp.get("Metadata"))
        return {"key": key, "etag": resp["ETag"].strip('"'), "sha256": sha} if sha else None

    found: list[dict] = []
    with ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="head") as pool:
        for row in bounded_map(pool, head, journal.keys_needing_head(), cfg.workers * 2):
            stats.heads += 1
            if row:
                found.append(row)
            if len(found) >= BATCH:
                journal.set_remote_hashes(found)
                found = []
    journal.set_remote_hashes(found)
