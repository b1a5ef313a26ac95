"""Stores that rewrite keys: what we PUT as `a\\b.txt`, SeaweedFS lists as `a/b.txt`.

Left alone, such a key is re-uploaded every run (its own key is never listed) and its
stored form looks like an extra, so `--delete` removes the object the same run uploaded.

What we do, without any request on a run where no local key could be rewritten:

- A local key is a *candidate* when a known rewrite changes it, the LIST lacks it, and
  the LIST has its stored form. Then one HEAD of the key decides: a store that answers
  for a key its LIST does not show, with the ETag listed under the stored form, keeps
  that key under the other name. That is proof, not a guess from names, so a store that
  keeps keys as given (S3, MinIO, rclone) never has a file refused.
- A proven key is refused: a per-file error (failed, `status --failed`), never uploaded.
  We refuse rather than map it to the stored form because a restore from that store
  gives back another name (`a/b.txt` is a different path), and because the stored form
  may be the key of a real local file, which would then share one object with it.
- The stored form of a local key the LIST lacks is never an extra, so never deleted:
  until a HEAD has proven otherwise, that object may be this file's.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from botocore.exceptions import ClientError

from journalsync.clients import ClientFactory
from journalsync.config import Config, Destination
from journalsync.journal import Journal
from journalsync.retry import error_code
from journalsync.scan import display_path
from journalsync.workers import bounded_map

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Rewrite:
    """One way a store renames keys: `needles` are the characters without which a key is
    kept as given (a cheap filter in SQL), `apply` maps a whole object key to its stored
    form, `what` says it in an error message."""

    needles: str
    apply: Callable[[str], str]
    what: str


def _path_like(key: str) -> str:
    # SeaweedFS keeps objects as filer paths: "\" becomes "/", runs of "/" become one and a
    # leading "/" goes (checked against weed 4.48: p/c\\d -> p/c/d, \top -> top).
    return re.sub(r"/{2,}", "/", key.replace("\\", "/")).lstrip("/")


KNOWN_REWRITES = (Rewrite("\\", _path_like, "it stores '\\' as '/'"),)
NEEDLES = "".join(sorted({c for rw in KNOWN_REWRITES for c in rw.needles}))


def stored_key(key: str, dest: Destination) -> tuple[str, str] | None:
    """(stored form relative to the prefix, what rewrote it) for a key a known rewrite
    changes, else None. The rewrite applies to the whole object key, prefix included."""
    full = dest.object_key(key)
    for rewrite in KNOWN_REWRITES:
        stored = rewrite.apply(full)
        base = dest.list_prefix
        if stored != full and stored.startswith(base) and len(stored) > len(base):
            return stored[len(base):], rewrite.what
    return None


@dataclass(frozen=True, slots=True)
class Candidate:
    key: str
    path: str
    stored: str
    what: str
    etag: str = ""  # the ETag listed under the stored form


def candidates(journal: Journal, dest: Destination) -> list[Candidate]:
    """Readable local keys the LIST lacks whose stored form it has."""
    found = []
    for key, path in journal.unlisted_keys_containing(NEEDLES, readable_only=True):
        rewritten = stored_key(key, dest)
        if rewritten is not None:
            found.append(Candidate(key, path, *rewritten))
    listed = journal.remote_etags([c.stored for c in found])
    return [Candidate(c.key, c.path, c.stored, c.what, listed[c.stored])
            for c in found if c.stored in listed]


def refuse_rewritten(clients: ClientFactory, cfg: Config, journal: Journal, run_id: int) -> int:
    """HEAD every candidate; refuse (as a per-file error of this run) each key the store
    proves it keeps under its stored form. Returns how many were refused."""
    found = candidates(journal, cfg.dest)
    if not found:
        return 0
    local = journal.existing_keys([c.stored for c in found])

    def head_etag(c: Candidate) -> tuple[Candidate, str | None]:
        client = clients.get()
        try:
            resp = clients.call(lambda: client.head_object(
                Bucket=cfg.dest.bucket, Key=cfg.dest.object_key(c.key)))
        except ClientError as exc:
            if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return c, None  # kept as given, just not there: an ordinary new file
            raise
        return c, resp["ETag"].strip('"')

    refused = []
    with ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="head") as pool:
        for c, etag in bounded_map(pool, head_etag, found, cfg.workers * 2):
            if etag is not None and etag == c.etag:
                refused.append((c.key, display_path(c.path), refusal_reason(c, c.stored in local)))
                log.warning("refused %s: %s", *refused[-1][1:])
    journal.refuse_files(run_id, refused)
    return len(refused)


def refusal_reason(c: Candidate, collides: bool) -> str:
    """The per-file error of a key the store renames."""
    if collides:
        return (f"the store keeps this key as {c.stored!r} ({c.what}), the key of another "
                "local file: both would share one object; rename one of them")
    return (f"the store keeps this key as {c.stored!r} ({c.what}), so a restore would not "
            "give back this name; rename the file or --exclude it")


def shadowed(journal: Journal, dest: Destination) -> set[str]:
    """Stored forms of the local keys the LIST lacks (readable or not): objects that may
    be those files', so never extras."""
    found = set()
    for key, _path in journal.unlisted_keys_containing(NEEDLES, readable_only=False):
        rewritten = stored_key(key, dest)
        if rewritten is not None:
            found.add(rewritten[0])
    return found
