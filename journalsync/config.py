"""The run's configuration: a frozen dataclass built once by the CLI, read by every phase."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from journalsync.errors import UsageError

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

S3_MAX_KEY_BYTES = 1024
S3_MIN_PART_SIZE = 5 * MiB
S3_MAX_PART_SIZE = 5 * GiB
S3_MAX_PARTS = 10_000

_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "kib": KiB,
    "m": 1000**2, "mb": 1000**2, "mib": MiB,
    "g": 1000**3, "gb": 1000**3, "gib": GiB,
    "t": 1000**4, "tb": 1000**4, "tib": 1024**4,
}
# Bounds on numbers given by the user, so none overflows a journal column (signed 64-bit)
# or a timer (threading.TIMEOUT_MAX) long after the run began: a usage error at once.
MAX_NUMBER = 1 << 62
MAX_SECONDS = 100 * 365 * 86400.0

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str) -> int:
    """Parse `8MiB`, `64MB`, `1.5GiB` or plain bytes into an int number of bytes."""
    match = _SIZE_RE.match(str(text))
    unit = match and _SIZE_UNITS.get(match.group(2).lower())
    if not match or unit is None:
        raise UsageError(f"cannot read size {text!r}: use bytes or a unit such as 8MiB, 64MB")
    size = float(match.group(1)) * unit
    if size >= MAX_NUMBER:  # also inf: a number of 309 digits or more
        raise UsageError(f"size {text!r} is too large")
    return int(size)


_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """Parse `24h`, `30m`, `7d`, `90s` or plain seconds into seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", str(text).lower())
    if not match:
        raise UsageError(f"cannot read duration {text!r}: use e.g. 90s, 30m, 24h, 7d")
    seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if seconds > MAX_SECONDS:  # also inf; beyond it, a timer cannot wait that long
        raise UsageError(f"duration {text!r} is too long: at most 100 years")
    return seconds


@dataclass(frozen=True, slots=True)
class Destination:
    """`s3://bucket/prefix`. The prefix is a boundary: objects are listed under `prefix/`."""

    bucket: str
    prefix: str  # no leading or trailing slash; "" means the whole bucket

    @classmethod
    def parse(cls, text: str) -> Destination:
        if not text.startswith("s3://"):
            raise UsageError(f"destination must look like s3://BUCKET[/PREFIX], got {text!r}")
        bucket, _, prefix = text[len("s3://"):].partition("/")
        prefix = prefix.strip("/")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.\-_]{1,254}", bucket):
            raise UsageError(f"destination {text!r} has no valid bucket name")
        if prefix and any(part in ("", ".", "..") for part in prefix.split("/")):
            raise UsageError(f"destination prefix {prefix!r} has an empty, '.' or '..' segment")
        return cls(bucket, prefix)

    @property
    def list_prefix(self) -> str:
        """What ListObjectsV2 is given: the prefix plus '/', so host1 never matches host10."""
        return f"{self.prefix}/" if self.prefix else ""

    def object_key(self, key: str) -> str:
        """The full S3 key for a key relative to the prefix."""
        return self.list_prefix + key

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


@dataclass(frozen=True, slots=True)
class Config:
    """Everything a run needs to know; built by the CLI, never mutated."""

    source: Path
    dest: Destination
    journal_path: Path
    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    workers: int = 8
    multipart_threshold: int = 8 * MiB
    part_size: int = 8 * MiB
    cache_control: str | None = None
    dry_run: bool = False
    resume: bool = False
    resume_max_age: float = 12 * 3600.0  # --resume continues only a plan younger than this
    endpoint_moved: bool = False  # the journal's store is now reached at this endpoint URL
    delete: bool = False  # mirror: delete objects under the prefix with no local file
    max_delete_percent: float = 10.0
    max_delete: int | None = None
    force: bool = False
    allow_empty_source: bool = False
    provider: str = "auto"  # auto | aws | minio | r2 | gcs | other
    checksum: str = "auto"  # auto (the provider's) | md5 | crc64nvme: see integrity.py
    bwlimit: float | None = None  # bytes per second across all workers
    manifest_max_age: float | None = None  # trust a LIST this recent instead of listing
    includes: tuple[str, ...] = ()  # see filters.py for the precedence
    excludes: tuple[str, ...] = ()
    cache_rules: tuple[tuple[str, str], ...] = ()  # (glob, Cache-Control): first match wins
    storage_class: str | None = None
    sse: str | None = None  # AES256 | aws:kms
    sse_kms_key_id: str | None = None
    crt: bool = True  # small-file PUTs through awscrt when it is installed (crt.py)
    large_files: str = "auto"  # auto | stream | prehash: how a large new file is hashed (stamp.py)
    keep_runs: int = 30  # runs of history the journal keeps (housekeeping.py)
    adopt_metadata: bool = False  # copy adopted objects onto themselves with our metadata
    # Work units for many workers (chunkwork.py): at most this many files and bytes each,
    # claimed for `lease` seconds at a time (renewed by heartbeat every lease/3).
    chunk_files: int = 1000
    chunk_bytes: int = GiB
    lease: float = 30.0
    # On a shared journal, a file larger than this is sent by every worker of the run in
    # units of about this many bytes of whole parts (sharedparts.py).
    part_unit: int = 128 * MiB

    def cache_control_for(self, key: str) -> str | None:
        """The first matching per-glob rule, else --cache-control, else none."""
        if self.cache_rules:
            from journalsync.filters import compile_glob

            for pattern, value in self.cache_rules:
                if compile_glob(pattern).fullmatch(key):
                    return value
        return self.cache_control
    retry_attempts: int = 10
    retry_timeout: float = 180.0  # per request, across its retries

    @property
    def key_filter(self):
        from journalsync.filters import KeyFilter

        return KeyFilter(tuple(self.includes), tuple(self.excludes))

    def validate(self) -> Config:
        if self.workers < 1 or self.workers > 256:
            raise UsageError(f"--workers must be between 1 and 256, got {self.workers}")
        if not S3_MIN_PART_SIZE <= self.part_size <= S3_MAX_PART_SIZE:
            raise UsageError("--part-size must be between 5MiB and 5GiB (S3's limits)")
        if not S3_MIN_PART_SIZE <= self.multipart_threshold <= S3_MAX_PART_SIZE:
            raise UsageError("--multipart-threshold must be between 5MiB and 5GiB")
        if self.sse not in (None, "AES256", "aws:kms"):
            raise UsageError("--sse must be AES256 or aws:kms")
        if self.sse_kms_key_id and self.sse != "aws:kms":
            raise UsageError("--sse-kms-key-id needs --sse aws:kms")
        if self.provider not in ("auto", "aws", "minio", "r2", "gcs", "other"):
            raise UsageError(f"--provider must be auto, aws, minio, r2, gcs or other, not {self.provider!r}")
        if self.checksum not in ("auto", "md5", "crc64nvme"):
            raise UsageError(f"--checksum must be auto, md5 or crc64nvme, not {self.checksum!r}")
        if self.large_files not in ("auto", "stream", "prehash"):
            raise UsageError(f"--large-files must be auto, stream or prehash, not {self.large_files!r}")
        if self.bwlimit is not None and self.bwlimit <= 0:
            raise UsageError("--bwlimit must be positive")
        if self.endpoint_url is not None and not re.fullmatch(r"https?://[^/\s]+(/\S*)?",
                                                              self.endpoint_url):
            raise UsageError(f"endpoint {self.endpoint_url!r} is not a URL: give it as "
                             "https://HOST[:PORT] or http://HOST[:PORT]")
        if self.resume_max_age <= 0:
            raise UsageError("--resume-max-age must be positive")
        if self.retry_timeout <= 0:
            raise UsageError("--retry-timeout must be positive")
        if not 0 <= self.max_delete_percent <= 100:
            raise UsageError("--max-delete-percent must be between 0 and 100")
        if self.max_delete is not None and self.max_delete < 0:
            raise UsageError("--max-delete must not be negative")
        if self.chunk_files < 1:
            raise UsageError(f"--chunk-files must be at least 1, got {self.chunk_files}")
        if self.chunk_bytes < 1:
            raise UsageError("--chunk-bytes must be positive")
        if self.part_unit < 1:
            raise UsageError("--part-unit must be positive")
        if not 1 <= self.lease <= 86400:
            raise UsageError(f"--lease must be between 1 second and a day, got {self.lease:g}")
        if not 1 <= self.keep_runs <= 1_000_000:
            raise UsageError(f"--keep-runs must be between 1 and 1000000, got {self.keep_runs}")
        for option, value in (("--workers", self.workers), ("--chunk-files", self.chunk_files),
                              ("--max-delete", self.max_delete)):
            if value is not None and value >= MAX_NUMBER:
                raise UsageError(f"{option} is too large: {value}")
        return self


def state_dir() -> Path:
    """`$XDG_STATE_HOME/journalsync`, falling back to `~/.local/state/journalsync`."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(Path.home(), ".local", "state")
    return Path(base) / "journalsync"


def default_journal_path(source: Path, dest: Destination, endpoint_url: str | None) -> Path:
    """One journal per (source, destination, endpoint): the same bucket name on two endpoints
    is two different places."""
    try:
        where = source.resolve()
    except (OSError, RuntimeError):  # a symlink loop (RuntimeError before Python 3.13)
        where = source.absolute()  # check_source says what is wrong with it, in one line
    identity = "\0".join([str(where), str(dest), endpoint_url or "aws"])
    digest = hashlib.sha256(identity.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    label = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{dest.bucket}-{dest.prefix}").strip("-")[:60]
    return state_dir() / f"{label}-{digest}.sqlite"
