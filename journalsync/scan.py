"""Scan: walk the source tree into the journal and hash only what changed.

A file is re-hashed only when its (size, mtime_ns, ctime_ns, inode) differ from the last
scan, so a nightly run over an unchanged tree reads no file contents. ctime is in the
identity because a same-size edit whose mtime was put back (`touch -r`, `os.utime`,
rsync -t) still moves ctime, which no user-level call can set.

Lazy hashing: the plan needs a file's hash only where the store holds an object of the
file's size under its key (to compare, or to adopt). Every other new or changed file is an
upload whatever its bytes, so it is not read here: the upload hashes it in the read that
sends it and records that hash with the identity it fstat'ed (transfer.py). On a first run
over a terabyte of new files, the link is busy within seconds instead of after a full read.

Adoption candidates (adopt.py: a file with an object of its size whose hash is unknown)
are read for SHA-256, MD5 and the multipart ETag candidates together (a second read
only for part sizes no peer picks by default); the hashing
waits for the LIST (`before_hash`) so it knows which files those are and their ETags.

A hash is only as good as the timestamps that vouch for it: a same-size write landing in the
same timestamp tick as the hash leaves the identity unchanged. So, like git's racy-git rule,
a hash taken within RACY_WINDOW_NS of the file's mtime or ctime is recorded with no ctime
(an identity no stat can match): this run uses it, the next scan hashes the file again.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
import unicodedata
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from journalsync import adopt
from journalsync.config import S3_MAX_KEY_BYTES, Destination
from journalsync.errors import Interrupted
from journalsync.filters import KeyFilter
from journalsync.journal import Journal
from journalsync.journal import BATCH
from journalsync.objectmeta import RACY_WINDOW_NS, is_racy  # noqa: F401 - part of scan's API
from journalsync.objectmeta import file_identity
from journalsync.safeio import SourceRefused, open_source
from journalsync.scandiff import OutOfOrder, ScanDiff
from journalsync.scandiff import stage_row as _stage_row  # noqa: F401 - tests use it
from journalsync.scandiff import sorted_walk as walk  # noqa: F401 - part of scan's API
from journalsync.workers import bounded_map

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ScanStats:
    scanned: int = 0  # regular files seen, including those that failed
    symlinks: int = 0  # not followed; counted and reported
    special: int = 0  # FIFOs, sockets, devices: not backed up; counted and reported
    failed: int = 0  # files that could not be keyed or read
    failed_dirs: int = 0  # directories that could not be listed
    excluded: int = 0  # files the filters leave out
    hashed: int = 0
    hashed_bytes: int = 0
    staged: int = 0  # rows the scan staged (journal.staged_rows): none on an unchanged tree
    adopted: Counter = field(default_factory=Counter)  # proof -> objects proven by their ETag
    unreadable_dirs: list[tuple[str, str]] = field(default_factory=list)


def display_path(rel: str) -> str:
    """A relative path made printable: undecodable bytes shown as \\xNN escapes."""
    return rel.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def key_for(rel: str, dest: Destination) -> tuple[str | None, str | None]:
    """(key, None) for a POSIX relative path, or (None, reason) when it cannot be a key.

    Keys are NFC-normalised so a name typed on macOS (NFD) and on Linux (NFC) is one key.
    """
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        return None, "file name is not valid UTF-8; S3 keys must be UTF-8"
    key = unicodedata.normalize("NFC", rel)
    full = len(dest.object_key(key).encode("utf-8"))
    if full > S3_MAX_KEY_BYTES:
        return None, f"key is {full} bytes, over S3's {S3_MAX_KEY_BYTES}-byte limit"
    return key, None


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    return file_identity(st)


READ_CHUNK = 1024 * 1024


def _blocks(fh, stop: threading.Event | None):
    """`fh` to its end in READ_CHUNK blocks (views of one buffer), raising Interrupted once
    `stop` is set: a stopping run's scan does not read a large file to its end first."""
    buf = bytearray(READ_CHUNK)
    view = memoryview(buf)
    while n := fh.readinto(buf):
        if stop is not None and stop.is_set():
            raise Interrupted("stopped while hashing")
        yield view[:n]


def _sha256(fh, stop: threading.Event | None) -> str:
    sha = hashlib.sha256()
    for block in _blocks(fh, stop):
        sha.update(block)
    return sha.hexdigest()


def _read_digests(fh, size: int, etag: str, sizes: list[int],
                  stop: threading.Event | None = None) -> adopt.Digests:
    hasher = adopt.ContentHasher(size, etag, sizes)
    for block in _blocks(fh, stop):
        hasher.update(block)
    return hasher.digests()


def _candidate_digests(fh, size: int, etag: str,
                       stop: threading.Event | None = None) -> adopt.Digests:
    """An adoption candidate's SHA-256, MD5 and multipart ETags: one read with the peers'
    part sizes; a second read with the other candidates only when those prove nothing
    (adopt.split_candidates: up to 16 MD5 passes cost far more CPU than one more read).
    The caller's fstat before and after covers both reads."""
    parsed = adopt.parse_etag(etag)
    first, rest = adopt.split_candidates(size, parsed[1]) if parsed and parsed[1] else ([], [])
    found = _read_digests(fh, size, etag, first, stop)
    if rest and adopt.prove_by_etag(etag, found) is None:
        fh.seek(0)
        again = _read_digests(fh, size, etag, rest, stop)
        if again.sha256 == found.sha256:  # the same bytes both times
            found.multipart.update(again.multipart)
    return found


def hash_file(root: str, row: dict, racy_window_ns: int = RACY_WINDOW_NS,
              stop: threading.Event | None = None) -> dict:
    """SHA-256 of one staged file, with the stat seen while hashing it. For an adoption
    candidate (`row["etag"]` set) also its MD5 and the proof its ETag gives, if any.

    The file is opened without following symlinks (safeio) and fstat'ed before and after
    reading; if it changed meanwhile the hash is of no single version, so it is read again
    (three tries, then the file fails this run). A racy hash is returned with ctime_ns None.
    Raises Interrupted once `stop` is set (between blocks of the read).
    """
    result = {"key": row["key"], "sha256": None, "error": None}
    etag = row.get("etag")
    for _ in range(3):
        started = time.time_ns()
        try:
            with open_source(root, row["path"]) as fh:
                before = os.fstat(fh.fileno())
                if etag is None:
                    digest, found = _sha256(fh, stop), None
                else:
                    found = _candidate_digests(fh, before.st_size, etag, stop)
                    digest = found.sha256
                after = os.fstat(fh.fileno())
        except SourceRefused as exc:
            return {**result, **_stat_fields(row), "error": str(exc)}
        except OSError as exc:
            return {**result, **_stat_fields(row), "error": f"cannot read: {exc.strerror}"}
        if _identity(before) == _identity(after):
            size, mtime_ns, ctime_ns, inode = _identity(after)
            if is_racy(after, started, racy_window_ns):
                ctime_ns = None
            if found is not None:
                result.update(md5=found.md5, etag=etag, proof=adopt.prove_by_etag(etag, found))
            return {**result, "sha256": digest, "size": size, "mtime_ns": mtime_ns,
                    "ctime_ns": ctime_ns, "inode": inode}
    return {**result, **_stat_fields(row), "error": "file kept changing while it was read"}


def _stat_fields(row: dict) -> dict:
    return {k: row[k] for k in ("size", "mtime_ns", "ctime_ns", "inode")}


def scan(root: Path, dest: Destination, journal: Journal, run_id: int,
         hash_threads: int = 4, stop: threading.Event | None = None,
         key_filter: KeyFilter = KeyFilter(), racy_window_ns: int = RACY_WINDOW_NS,
         before_hash: Callable[[], object] | None = None, hash_all: bool = False) -> ScanStats:
    """Walk `root` into the journal, hash what changed, and fold it into `files`. Files
    the filter excludes are not looked at at all. Raises Interrupted if `stop` is set; the
    journal's `files` are then left as they were.

    `before_hash` is called between the walk and the hashing (the engine waits there for
    the LIST, and its error is raised from here), so the hashing knows the adoption
    candidates and records the proofs their ETags give.

    Only files with an object of their size are hashed (Journal.iter_files_to_hash): any
    other changed file is an upload, hashed by the worker in the read that sends it.
    `hash_all` hashes every changed file here instead."""
    diff = journal.diff_staging
    while True:
        stats, errors = ScanStats(), []
        journal.begin_scan(diff=diff)
        merge = ScanDiff(journal, BATCH) if diff else None
        try:
            _walk_into_stage(str(root), dest, journal, stats, errors, key_filter, stop, merge)
            break
        except OutOfOrder as exc:  # two directories, one key: stage everything instead
            log.info("scan: %s came out of key order; staging every file", display_path(str(exc)))
            diff = False
        finally:
            if merge is not None:
                merge.close()
    errors.extend(journal.staged_collisions())
    if before_hash is not None:
        before_hash()
    if diff:  # unchanged files whose object's hash is unknown are hashed as before
        journal.stage_hash_candidates(stats.unreadable_dirs)
    stats.staged = journal.staged_rows("scan")
    _hash_changed(str(root), journal, stats, errors, hash_threads, stop, racy_window_ns,
                  hash_all)
    journal.commit_scan(run_id, stats.unreadable_dirs)
    journal.record_file_errors(run_id, errors)
    stats.failed_dirs = sum(1 for path, _ in errors if path.endswith("/"))
    stats.failed = len(errors) - stats.failed_dirs
    return stats


def _walk_into_stage(root: str, dest: Destination, journal: Journal, stats: ScanStats,
                     errors: list[tuple[str, str]], key_filter: KeyFilter,
                     stop: threading.Event | None, merge: ScanDiff | None) -> None:
    """The walk into the stage: every file (merge None), or only what differs from
    `files` with the gone ones recorded (scandiff.py)."""
    staged: list[dict] = []
    if merge is not None:
        add = merge.add
    else:
        def add(key: str, rel: str, st: os.stat_result | None, error: str | None = None) -> None:
            staged.append(_stage_row(key, rel, st, error))
    selected = key_filter.selected if key_filter.active else None

    def descend(rel: str) -> bool:
        key, _ = key_for(rel, dest)
        return key is None or key_filter.may_contain(key)

    for n, (kind, rel, info) in enumerate(
            walk(root, descend if key_filter.active else (lambda rel: True))):
        if kind == "symlink":
            stats.symlinks += 1
        elif kind == "special":
            key, _ = key_for(rel, dest)
            stats.special += key is None or key_filter.selected(key)  # not backed up: noted
        elif kind == "direrror":
            dir_key, _ = key_for(rel, dest)
            if dir_key is not None:
                stats.unreadable_dirs.append((dir_key, str(info)))
                if merge is not None:
                    merge.unreadable_dir(dir_key)
            errors.append((display_path(rel) + "/", str(info)))
        else:
            key, reason = key_for(rel, dest)
            if key is not None and selected is not None and not selected(key):
                stats.excluded += 1
                continue
            stats.scanned += 1
            if kind == "error":
                reason = str(info)
            if key is None or kind == "error":
                errors.append((display_path(rel), reason or "unknown error"))
                if key is not None:  # keep its last good row: never an "extra" by accident
                    add(key, rel, None, reason)
                continue
            add(key, rel, info)
        if len(staged) >= BATCH:
            journal.stage_files(staged)
            staged = []
        if (n + 1) % BATCH == 0 and stop is not None and stop.is_set():
            raise Interrupted("stopped while scanning")
    journal.stage_files(staged)
    if merge is not None:
        merge.finish()


INLINE_HASH_MAX = 256 * 1024  # smaller files are hashed on the scanning thread


def _hash_changed(root: str, journal: Journal, stats: ScanStats, errors: list[tuple[str, str]],
                  threads: int, stop: threading.Event | None, racy_window_ns: int,
                  hash_all: bool = False) -> None:
    """Hash every staged file that changed: large ones on a few threads (hashlib releases
    the GIL), small ones right here, where a thread hand-off would cost more than the hash."""
    done: list[dict] = []
    proven: list[dict] = []

    def record(result: dict) -> None:
        nonlocal done, proven
        if result["error"]:
            errors.append((result["key"], result["error"]))
        else:
            stats.hashed += 1
            stats.hashed_bytes += result["size"]
            if result.get("proof"):
                log.info("adopted %s: %s", result["key"], result["proof"])
                stats.adopted[result["proof"]] += 1
                proven.append({"key": result["key"], "etag": result["etag"],
                               "sha256": result["sha256"], "sha_source": result["proof"]})
        done.append(result)
        if len(done) >= BATCH:
            journal.set_staged_hashes(done)
            journal.set_remote_hashes(proven)
            done, proven = [], []

    def large_ones():
        for row in journal.iter_files_to_hash(all_changed=hash_all):
            if stop is not None and stop.is_set():
                return
            if (row["size"] or 0) < INLINE_HASH_MAX:
                record(hash_file(root, row, racy_window_ns, stop))
            else:
                yield row

    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="hash") as pool:
        for result in bounded_map(pool, lambda row: hash_file(root, row, racy_window_ns, stop),
                                  large_ones(),
                                  window=threads * 4, stop=stop):
            record(result)
    journal.set_staged_hashes(done)
    journal.set_remote_hashes(proven)
    if stop is not None and stop.is_set():
        raise Interrupted("stopped while hashing")
