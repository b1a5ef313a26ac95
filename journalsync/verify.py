"""`journalsync verify`: HEAD the objects the journal says are synced and report any whose
size or `sha256` metadata no longer matches the file as last scanned (an object overwritten
or deleted behind our back, or bit rot on a store we cannot trust).

An object another tool wrote, adopted by a proof (adopt.py) and not given our metadata
(--adopt-metadata), has no sha256 to read: it passes while its ETag is still the one the
proof was made against (the same object), and fails otherwise."""

from __future__ import annotations

import random
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from botocore.exceptions import ClientError

from journalsync.clients import ClientFactory
from journalsync.config import Config
from journalsync.journal import Journal
from journalsync.objectmeta import metadata_sha256
from journalsync.retry import error_code
from journalsync.workers import bounded_map


@dataclass(frozen=True, slots=True)
class Mismatch:
    key: str
    problem: str


@dataclass(slots=True)
class VerifyReport:
    checked: int = 0
    sampled_from: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)


def _sample(rows: Iterator[tuple], percent: float, seed: int | None,
            report: VerifyReport):
    """A random `percent` of the rows, counting all of them, without holding them."""
    rnd = random.Random(seed)
    for row in rows:
        report.sampled_from += 1
        if percent >= 100 or rnd.random() * 100 < percent:
            yield row


def verify(cfg: Config, journal: Journal, percent: float = 100.0,
           seed: int | None = None) -> VerifyReport:
    """HEAD every synced object (or a random `percent` of them) and compare."""
    clients = ClientFactory(cfg)
    report = VerifyReport()

    def check(row: tuple[str, int, str, str | None]) -> Mismatch | None:
        key, size, sha, proven_etag = row
        client = clients.get()
        try:
            head = clients.call(lambda: client.head_object(
                Bucket=cfg.dest.bucket, Key=cfg.dest.object_key(key)))
        except ClientError as exc:
            if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return Mismatch(key, "missing")
            raise
        if head["ContentLength"] != size:
            return Mismatch(key, f"size {head['ContentLength']}, file {size}")
        remote_sha = metadata_sha256(head.get("Metadata"))
        if remote_sha is None and proven_etag is not None:
            etag = head["ETag"].strip('"')
            return None if etag == proven_etag else Mismatch(
                key, f"adopted object changed: ETag {etag}, proven {proven_etag}")
        if remote_sha != sha:
            return Mismatch(key, f"sha256 {remote_sha or 'absent'}, file {sha}")
        return None

    rows = _sample(journal.synced_files(), percent, seed, report)
    with ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="verify") as pool:
        for result in bounded_map(pool, check, rows, cfg.workers * 2):
            report.checked += 1
            if result:
                report.mismatches.append(result)
    report.mismatches.sort(key=lambda m: m.key)
    return report
