"""What every object we write carries, and how we read it back: Content-Type, Cache-Control,
`sha256` and `mtime` metadata. Pure helpers, no I/O."""

from __future__ import annotations

import base64
import hashlib
import mimetypes
import os
import re

from journalsync.config import Config

_COMPRESSED_TYPES = {"gzip": "application/gzip", "bzip2": "application/x-bzip2",
                     "xz": "application/x-xz", "br": "application/x-brotli",
                     "compress": "application/x-compress"}


def content_type(key: str) -> str:
    """Content-Type from the name. A compressed file keeps its compressed type: we store
    bytes as they are and never set Content-Encoding."""
    guessed, encoding = mimetypes.guess_type(key, strict=False)
    if encoding:
        return _COMPRESSED_TYPES.get(encoding, "application/octet-stream")
    return guessed or "application/octet-stream"


def mtime_text(mtime_ns: int) -> str:
    """Seconds since the epoch with nanoseconds, the form rclone also reads as `mtime`."""
    return f"{mtime_ns // 10**9}.{mtime_ns % 10**9:09d}"


def mtime_of_text(text: str | None) -> int | None:
    """mtime_text read back (ns), or None for a value it did not write."""
    seconds, _, nanos = (text or "").partition(".")
    try:
        return int(seconds) * 10**9 + int(nanos) if len(nanos) == 9 else None
    except ValueError:
        return None


def md5_b64(data: bytes) -> str:
    """Content-MD5 header value: the server rejects a body that does not match it."""
    return base64.b64encode(hashlib.md5(data).digest()).decode("ascii")


def file_identity(st: os.stat_result) -> tuple[int, int, int, int]:
    """(size, mtime_ns, ctime_ns, inode): what says a file is still the one we hashed, as
    the journal keeps it (signed 64-bit: stored_ns, inode_number). st_size is an off_t,
    signed 64-bit on Linux: it always fits."""
    return st.st_size, stored_ns(st.st_mtime_ns), stored_ns(st.st_ctime_ns), \
        inode_number(st.st_ino)


def signed64(n: int) -> int:
    """`n` modulo 2^64 as a signed 64-bit integer (two's complement): what SQLite's INTEGER
    and PostgreSQL's BIGINT hold. Every n in [-2^63, 2^63) is itself."""
    return (n + (1 << 63)) % (1 << 64) - (1 << 63)


def stored_ns(ns: int) -> int:
    """A file's mtime or ctime as the journal keeps it and every identity check compares
    it: signed 64-bit (signed64). st_mtime_ns of a file dated after 2262-04-11 is 2^63 or
    more (`touch -d 2300-01-01`, a camera's bad clock; ext4 and XFS store up to 2446 and
    2486, btrfs and tmpfs more), which no journal column holds: such a file stopped every
    scan. Identities are only compared for equality, so a wrapped value serves as well (a
    change also moves ctime, the kernel's clock: two far-future mtimes 2^64 ns apart with
    one ctime are no real case). Nothing orders these values: is_racy reads the stat's own
    times, and the object's `mtime` metadata is written from the stat (or from
    calendar_ns). Journals written before keep their rows: every time before 2262 is
    itself."""
    return signed64(ns)


def calendar_ns(stored: int, near_ns: int) -> int:
    """The time a journal's `stored` (stored_ns) stands for: of the times it may be (it
    plus or minus multiples of 2^64 ns, 584 years), the one nearest `near_ns`, a stat of
    the same file (its very time when the file is unchanged) or the clock."""
    return near_ns + signed64(stored - near_ns)


def inode_number(st_ino: int) -> int:
    """A file's inode as the journal keeps it and every check compares it: st_ino as a
    signed 64-bit integer (two's complement). st_ino is unsigned and NFS, CephFS, Lustre,
    FUSE and overlayfs (xino) hand out numbers of 2^63 and above, which neither SQLite's
    INTEGER nor PostgreSQL's BIGINT can hold. One number still names one inode, and every
    inode below 2^63 is itself, so journals written before keep their rows as they are.
    Every read of st_ino goes through here (or file_identity): a raw one would never
    equal what the journal holds for such a file."""
    return signed64(st_ino)


# Two seconds: FAT stores mtime in 2 s steps, and HFS+, ext3, SMB and NFS servers in 1 s or
# coarser; local ext4/xfs/btrfs take timestamps from the kernel's tick (a few ms before
# Linux 6.13). Detecting each filesystem's step would save little: the cost of the margin is
# one extra hash next run for files written in the two seconds before they were hashed.
# Characters of a key that an XML answer or body cannot carry faithfully: XML 1.0 forbids
# most control characters, and a parser reads a carriage return as a line feed. A store
# must put the key in its answer to CreateMultipartUpload and in ListMultipartUploads,
# which has no url encoding: rclone serve s3 and moto answer 500 there, then fail every
# later listing of the prefix. Such keys are never sent in parts (transfer.py) nor deleted
# in batches (deleter.py).
NOT_IN_XML = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff\ufffe\uffff]")

RACY_WINDOW_NS = 2 * 10**9


def is_racy(st: os.stat_result, hashed_at_ns: int, window_ns: int = RACY_WINDOW_NS) -> bool:
    """True when a write after `hashed_at_ns` could leave mtime and ctime as they are: the
    file's timestamps are within one clock step of the hash (or in the future)."""
    return max(st.st_mtime_ns, st.st_ctime_ns) > hashed_at_ns - window_ns


def read_identity(before: os.stat_result, after: os.stat_result,
                  started_ns: int) -> tuple[int, int, int | None, int] | None:
    """The identity a hash of a read between two fstats of one descriptor may be recorded
    with: None if the file changed during the read (the hash is of no single version),
    ctime None if the hash is racy (is_racy: the next scan hashes the file again)."""
    if file_identity(before) != file_identity(after):
        return None
    size, mtime_ns, ctime_ns, inode = file_identity(after)
    return size, mtime_ns, None if is_racy(after, started_ns) else ctime_ns, inode


def metadata_sha256(metadata: dict[str, str] | None) -> str | None:
    """Our sha256 metadata value, read case-insensitively (some servers title-case keys)."""
    value = {k.lower(): v for k, v in (metadata or {}).items()}.get("sha256")
    if value and len(value) == 64 and all(c in "0123456789abcdef" for c in value.lower()):
        return value.lower()
    return None


# The metadata of an object whose SHA-256 is written after its upload (multipart.py's stream
# then stamp): until the stamp it says so, instead of carrying no hash unexplained.
PENDING_KEY = "sha256-pending"


def object_args(cfg: Config, key: str, sha256: str | None, mtime_ns: int) -> dict:
    """Bucket, Key, Content-Type, Cache-Control and metadata for a PUT or a multipart create
    (or a stamp's copy). `sha256` None: a streamed upload's create, its hash still pending."""
    meta = {"sha256": sha256} if sha256 is not None else {PENDING_KEY: "1"}
    args = {"Bucket": cfg.dest.bucket, "Key": cfg.dest.object_key(key),
            "ContentType": content_type(key),
            "Metadata": {**meta, "mtime": mtime_text(mtime_ns)}}
    cache_control = cfg.cache_control_for(key)
    if cache_control:
        args["CacheControl"] = cache_control
    if cfg.storage_class:
        args["StorageClass"] = cfg.storage_class
    if cfg.sse:
        args["ServerSideEncryption"] = cfg.sse
    if cfg.sse_kms_key_id:
        args["SSEKMSKeyId"] = cfg.sse_kms_key_id
    return args
