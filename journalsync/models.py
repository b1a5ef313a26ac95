"""Frozen records that flow between the phases. No I/O here."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class Action(str, Enum):
    UPLOAD = "upload"
    SKIP = "skip"
    DELETE = "delete"


class ItemStatus(str, Enum):
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"  # a re-check found the planned action stale; nothing was done


@dataclass(frozen=True, slots=True)
class LocalFile:
    """A scanned file. `key` is relative to the destination prefix; `path` is relative to
    the source root as the filesystem spells it (it differs from the key only by Unicode
    normalisation)."""

    key: str
    path: str
    size: int
    mtime_ns: int
    ctime_ns: int | None  # None: the hash was racy (scan.is_racy); the next scan hashes again
    inode: int
    sha256: str | None


@dataclass(frozen=True, slots=True)
class RemoteObject:
    """An object under the prefix, as the manifest knows it. `sha256` is None when unknown."""

    key: str
    size: int
    etag: str
    sha256: str | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    reason: str


@dataclass(frozen=True, slots=True)
class PlanItem:
    """One row of the plan: what a worker must do with one key, and why."""

    id: int
    key: str
    action: Action
    reason: str
    size: int | None = None
    sha256: str | None = None
    path: str | None = None
    # The file's identity when it was scanned (and hashed): a file that no longer matches
    # it is hashed again before a multipart upload claims a SHA-256 in its metadata.
    mtime_ns: int | None = None
    ctime_ns: int | None = None
    inode: int | None = None
    # A former holder of its chunk may have sent it (a killed run, a worker gone): the
    # store may hold it though the journal never heard. Checked before sending (transfer.py).
    maybe_sent: bool = False

    @property
    def identity(self) -> tuple:
        return self.size, self.mtime_ns, self.ctime_ns, self.inode

    def __str__(self) -> str:
        return f"{self.action.value} {self.key} ({self.reason})"


@dataclass(frozen=True, slots=True)
class TransferResult:
    """What a worker reports back for one plan item; the journal records it in batches."""

    item_id: int
    key: str
    ok: bool
    # Tries of the file's data: a PUT's tries, or for a multipart upload one plus every
    # retried UploadPart (Create and Complete carry no data and are not counted). 1: no
    # retry; 0: no data request was made (the file vanished, Create failed, ...).
    attempts: int = 1
    bytes_sent: int = 0
    size: int | None = None
    etag: str | None = None
    sha256: str | None = None
    error: str | None = None
    fatal: bool = False  # the error dooms the whole run (credentials, bucket, clock)
    denied: bool = False  # the store refused this object (AccessDenied, KMS): maybe only it
    resumable: bool = False  # fatal, but the cause passes by itself (an expired token)
    action: Action = Action.UPLOAD
    interrupted: bool = False  # stopped by a signal: the item stays pending for --resume
    vanished: bool = False  # the file is gone since the scan: cancelled, not failed
    # (size, mtime_ns, ctime_ns, inode) of the file whose bytes `sha256` describes, as its
    # descriptor was fstat'ed around the read that hashed and sent them (ctime_ns None: a
    # racy hash, scan.is_racy); None when the file changed during that read. The journal
    # keeps it as the file's hash, so the next scan need not read the file.
    file_identity: tuple | None = None
    # Bytes of this file's parts that other workers sent (a shared upload: sharedparts.py),
    # so each process's tally counts only what it sent.
    others_sent: int = 0


@dataclass(slots=True)
class RunCounts:
    """The numbers in the summary line."""

    scanned: int = 0
    uploaded: int = 0
    skipped: int = 0
    deleted: int = 0
    failed: int = 0
    extra: int = 0
    symlinks: int = 0
    bytes: int = 0  # file bytes uploaded: the sizes of the files this run put in the store
    vanished: int = 0  # planned uploads whose file was gone when their turn came
    pending: int = 0  # planned uploads not done: a dry run, or a run stopped early
    sent: int = 0  # bytes on the wire for uploads, retries and resent parts included
    special: int = 0  # FIFOs, sockets and devices: not backed up
    adopted: int = 0  # objects another tool wrote, proven to hold their file's bytes (adopt.py)
    skip_reasons: dict[str, int] = field(default_factory=dict)
