"""Adoption: prove, from what the store already tells us, that an object another tool wrote
(aws s3 sync, rclone, s5cmd, s3cmd, boto3) holds a local file's bytes. Pure: no I/O here
but the caller's buffers; scan.py reads the file, manifest.py HEADs.

An adoption candidate is a local file with a remote object of the same size whose SHA-256
is unknown. ONE read of the file feeds, from the same buffers:
  - SHA-256 (what the journal compares),
  - the whole-file MD5 (rule 1, and rule 3's peer metadata),
  - for a multipart ETag `<hex>-N`, the MD5 of every part for each candidate part size.

Why one hasher per candidate part size and not "the MD5 of every MiB block": MD5 does not
compose. md5(A + B) cannot be computed from md5(A) and md5(B), so block digests say
nothing about a part's digest. Each candidate part size gets its own md5 hasher, fed the
same buffers and reset at that size's part boundaries; the multipart ETag is then
md5(concat(part digests)) + "-N". The CPU cost is one MD5 pass per candidate, so at most
MAX_CANDIDATES (16) are tried, and in two reads (scan.py, split_candidates): the peers'
defaults (steps 1 and 2 below, usually one candidate) with the SHA-256 and MD5, then the
rest only if those prove nothing (16 MD5 passes ran at 40 MiB/s a core: one more read is
cheaper for every file a peer wrote with its default part size).

Candidate part sizes are those ps with ceil(size / ps) == N, in this order:
  1. peer defaults: 5 MiB (rclone), 8 MiB (aws cli, boto3), 15 MiB (s3cmd), 16 MiB, 50 MiB
     (s5cmd);
  2. what peers pick when the default would need more than 10,000 parts:
     aws cli / boto3 (s3transfer) double 8 MiB until ceil(size / ps) <= 10,000;
     rclone takes size / 10,000 rounded up to a whole MiB (one MiB more when that lands
     exactly on 10,000 parts with a remainder);
     s5cmd (aws-sdk-go's s3manager) takes size // 10,000 + 1 bytes;
  3. powers of two MiB; 4. every whole MiB count, ascending.

Proof rules, in order (the first that holds wins; none holding means "unknown": upload):
  1. ETag of 32 hex, no `-N`, equal to the file's MD5: `etag-md5`.
  2. ETag `<hex>-N` equal to the recomputed multipart ETag for a candidate:
     `multipart-etag:8MiB` (the part size, in MiB when whole, else in bytes).
  3. (manifest.fill_hashes, by HEAD, only when 1 and 2 could not decide) our own `sha256`
     metadata; else rclone's `md5chksum` (base64 of the whole-file MD5): `rclone-md5`;
     else s3cmd's `s3cmd-attrs` `md5:<hex>` field: `s3cmd-md5`. Names compared
     case-insensitively.
A mismatch never proves anything: the file is uploaded.

SSE-KMS and SSE-C objects have ETags that are not MD5s of the bytes (even when they look
like one), and some stores (R2) build multipart ETags otherwise: they never match, so
they fall through to rule 3 or get uploaded. A false match would need an MD5 collision on
bytes the peer wrote, which we treat as impossible for a sync tool's input (the SHA-256
recorded is still the one we read).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass, field

MiB = 1024 * 1024
MAX_PARTS = 10_000
MAX_CANDIDATES = 16  # md5 hashers per file: the CPU cost of a multipart proof is this many passes
PEER_DEFAULTS = (5 * MiB, 8 * MiB, 15 * MiB, 16 * MiB, 50 * MiB)

# Proof names for the journal's remote_objects.sha_source.
ETAG_MD5 = "etag-md5"
MULTIPART_PREFIX = "multipart-etag:"
RCLONE_MD5 = "rclone-md5"
S3CMD_MD5 = "s3cmd-md5"
METADATA_PROOFS = (RCLONE_MD5, S3CMD_MD5)

_ETAG_RE = re.compile(r"([0-9a-fA-F]{32})(?:-([0-9]+))?")


def is_adoption_proof(sha_source: str | None) -> bool:
    """True for the sha_source values this module's proofs write."""
    return bool(sha_source) and (sha_source in (ETAG_MD5, *METADATA_PROOFS)
                                 or sha_source.startswith(MULTIPART_PREFIX))


def parse_etag(etag: str | None) -> tuple[str, int | None] | None:
    """(lowercase hex, N) for `<hex>-N`, (hex, None) for a plain MD5-looking ETag, or None
    for anything else (quotes stripped; a weak `W/` ETag is not an MD5)."""
    if not etag:
        return None
    match = _ETAG_RE.fullmatch(etag.strip().strip('"'))
    if match is None:
        return None
    parts = int(match.group(2)) if match.group(2) is not None else None
    if parts is not None and not 1 <= parts <= MAX_PARTS:
        return None
    return match.group(1).lower(), parts


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _s3transfer_size(size: int) -> int:
    ps = 8 * MiB
    while _ceil_div(size, ps) > MAX_PARTS:
        ps *= 2
    return ps


def _rclone_size(size: int) -> int:
    if size <= MAX_PARTS * 5 * MiB:
        return 5 * MiB
    ps = _ceil_div(size // MAX_PARTS, MiB) * MiB
    if size // ps == MAX_PARTS and size % MAX_PARTS:
        ps += MiB
    return ps


def _s3manager_size(size: int) -> int:
    return size // MAX_PARTS + 1 if size // (50 * MiB) >= MAX_PARTS else 50 * MiB


def _peer_sizes(size: int) -> tuple[int, ...]:
    """The part sizes peers pick by default for a file of this size (steps 1 and 2)."""
    return (*PEER_DEFAULTS, _s3transfer_size(size), _rclone_size(size), _s3manager_size(size))


def _ordered_sizes(size: int, parts: int):
    """Every part size worth trying, in preference order, duplicates included."""
    yield from _peer_sizes(size)
    ps = MiB
    while ps <= 5 * 1024 * MiB:
        yield ps
        ps *= 2
    # Whole MiB counts that give exactly `parts` parts: ps in [ceil(size/N), ceil(size/(N-1)) - 1].
    low = _ceil_div(size, parts)
    high = _ceil_div(size, parts - 1) - 1 if parts > 1 else low
    for mib in range(max(1, _ceil_div(low, MiB)), high // MiB + 1):
        yield mib * MiB


def candidate_part_sizes(size: int, parts: int, cap: int = MAX_CANDIDATES) -> list[int]:
    """Part sizes ps with ceil(size / ps) == parts, peers' choices first, at most `cap`.
    With one part every part size cuts the file alike: one candidate is enough."""
    if size <= 0 or parts < 1:
        return []
    found: list[int] = []
    for ps in _ordered_sizes(size, parts):
        if ps > 0 and ps not in found and _ceil_div(size, ps) == parts:
            found.append(ps)
            if len(found) >= (1 if parts == 1 else cap):
                break
    if parts == 1 and not found:
        found.append(size)
    return found


def split_candidates(size: int, parts: int) -> tuple[list[int], list[int]]:
    """candidate_part_sizes split into (the peers' defaults, the rest). A file is read
    with the first only (usually one MD5 hasher); the rest (up to MAX_CANDIDATES hashers,
    as many MD5 passes) are tried in a second read only when the first proves nothing."""
    peers = set(_peer_sizes(size))
    found = candidate_part_sizes(size, parts)
    return [ps for ps in found if ps in peers], [ps for ps in found if ps not in peers]


def part_label(part_size: int) -> str:
    """`8MiB` for whole MiB, else the byte count."""
    return f"{part_size // MiB}MiB" if part_size % MiB == 0 else str(part_size)


class _PartHasher:
    """The MD5 of each `part_size` part of a stream, and its multipart ETag at the end."""

    __slots__ = ("part_size", "left", "md5", "digests")

    def __init__(self, part_size: int):
        self.part_size, self.left = part_size, part_size
        self.md5, self.digests = hashlib.md5(), []

    def update(self, buf: memoryview) -> None:
        while len(buf) >= self.left:
            self.md5.update(buf[:self.left])
            buf = buf[self.left:]
            self.digests.append(self.md5.digest())
            self.md5, self.left = hashlib.md5(), self.part_size
        if len(buf):
            self.md5.update(buf)
            self.left -= len(buf)

    def etag(self) -> str:
        digests = self.digests + ([self.md5.digest()] if self.left != self.part_size else [])
        return f"{hashlib.md5(b''.join(digests)).hexdigest()}-{len(digests)}"


@dataclass(slots=True)
class Digests:
    """What one read of a candidate file yields."""

    sha256: str
    md5: str
    multipart: dict[int, str] = field(default_factory=dict)  # part size -> `<hex>-N`


class ContentHasher:
    """Feed a file's bytes once; get SHA-256, MD5 and the multipart ETags for the candidate
    part sizes of `etag` (none when the ETag is not multipart)."""

    def __init__(self, size: int, etag: str | None, sizes: list[int] | None = None):
        self.sha, self.md5 = hashlib.sha256(), hashlib.md5()
        if sizes is None:
            parsed = parse_etag(etag)
            sizes = candidate_part_sizes(size, parsed[1]) if parsed and parsed[1] else []
        self.parts = [_PartHasher(ps) for ps in sizes]

    def update(self, data) -> None:
        view = memoryview(data)
        self.sha.update(view)
        self.md5.update(view)
        for hasher in self.parts:
            hasher.update(view)

    def digests(self) -> Digests:
        return Digests(self.sha.hexdigest(), self.md5.hexdigest(),
                       {h.part_size: h.etag() for h in self.parts})


def prove_by_etag(etag: str | None, digests: Digests) -> str | None:
    """Rules 1 and 2: the proof string, or None when the ETag proves nothing."""
    parsed = parse_etag(etag)
    if parsed is None:
        return None
    hexdigest, parts = parsed
    if parts is None:
        return ETAG_MD5 if hexdigest == digests.md5 else None
    wanted = f"{hexdigest}-{parts}"
    for part_size, computed in digests.multipart.items():  # in candidate order
        if computed == wanted:
            return MULTIPART_PREFIX + part_label(part_size)
    return None


def _lower_keys(metadata: dict[str, str] | None) -> dict[str, str]:
    return {k.lower(): v for k, v in (metadata or {}).items()}


def rclone_md5(metadata: dict[str, str] | None) -> str | None:
    """rclone's `md5chksum` metadata (base64 of the whole-file MD5) as hex, or None."""
    value = _lower_keys(metadata).get("md5chksum")
    if not value:
        return None
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw.hex() if len(raw) == 16 else None


def s3cmd_md5(metadata: dict[str, str] | None) -> str | None:
    """The `md5:<hex>` field of s3cmd's `s3cmd-attrs` metadata (`k:v/k:v/...`), or None."""
    value = _lower_keys(metadata).get("s3cmd-attrs")
    for item in (value or "").split("/"):
        name, _, field_value = item.partition(":")
        if name.strip().lower() == "md5":
            field_value = field_value.strip().lower()
            return field_value if re.fullmatch(r"[0-9a-f]{32}", field_value) else None
    return None


# Server-side encryption under which an object's ETag is still the MD5 of its bytes (AWS's
# SSE-S3); under any other (SSE-KMS, DSSE-KMS, SSE-C) it is not, even when it looks like one.
_MD5_SSE = (None, "", "AES256")


def etag_disproves(etag: str | None, md5: str, sse: str | None = None,
                   customer_key: bool = False) -> bool:
    """True when the object's own ETag says its bytes differ from a file of this MD5: a
    single-part ETag (an MD5 of the bytes unless SSE-KMS or SSE-C) that is not the file's.
    Metadata another tool wrote never outvotes that (a mismatch always means upload)."""
    parsed = parse_etag(etag)
    if parsed is None or parsed[1] is not None or customer_key:
        return False
    if sse not in _MD5_SSE:
        return False
    return parsed[0] != md5.lower()


def prove_by_metadata(metadata: dict[str, str] | None, md5: str | None,
                      etag: str | None = None, sse: str | None = None,
                      customer_key: bool = False) -> str | None:
    """Rule 3's peer metadata against the file's whole MD5: the proof, or None. `etag`,
    `sse` and `customer_key` come from the same HEAD: an ETag that disproves the file's MD5
    (etag_disproves) leaves nothing to prove."""
    if not md5 or etag_disproves(etag, md5, sse, customer_key):
        return None
    claims = [(proof, claimed) for proof, claimed in ((RCLONE_MD5, rclone_md5(metadata)),
                                                      (S3CMD_MD5, s3cmd_md5(metadata)))
              if claimed is not None]
    if not claims or any(claimed != md5 for _, claimed in claims):
        return None  # no claim, or one that disagrees: never a proof
    return claims[0][0]
