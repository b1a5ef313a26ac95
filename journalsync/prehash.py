"""The read before a multipart upload: the file's SHA-256 (it must be in the upload's
metadata before the first part) and a CRC64-NVME of every part, in one pass.

Why the CRCs: the parts are read a second time to be sent (from the page cache when the
file is not huge), and what is sent must be the bytes that were hashed. Hashing every part
again with SHA-256 proved that at the cost of a second SHA-256 pass; comparing each part's
CRC64-NVME with the one taken here proves it for a fraction of that CPU (awscrt runs it at
several GB/s; SHA-256 runs at 0.4-2 GB/s). A part that differs from what was hashed and
still has the same 64-bit CRC would need an accidental collision (2^-64 per part) while
the file's size, mtime, ctime and inode stayed the same: the upload compares those too.

Only one large file is pre-hashed at a time (`HashSlots`): the first file's parts are on
the wire after one file's read, not after every worker's file has been read at once, and
the next file is hashed while this one's parts are in flight.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass

from awscrt.checksums import crc64nvme

READ_CHUNK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class PreHash:
    sha256: str
    part_size: int
    part_crcs: tuple[int, ...]  # CRC64-NVME of each part of `part_size`, in order
    started_ns: int  # time.time_ns() before the read: the hash's time for the racy rule

    def crc_matches(self, number: int, data) -> bool:
        """Part `number` (1-based) read now is the part that was hashed."""
        return 0 < number <= len(self.part_crcs) and crc64nvme(data) == self.part_crcs[number - 1]


def prehash(fh, part_size: int) -> PreHash:
    """Read `fh` from where it stands to its end once: SHA-256 and each part's CRC64-NVME."""
    started = time.time_ns()
    sha = hashlib.sha256()
    crcs: list[int] = []
    crc, left = 0, part_size
    buf = bytearray(READ_CHUNK)
    view = memoryview(buf)
    while n := fh.readinto(buf):
        chunk = view[:n]
        sha.update(chunk)
        while len(chunk) >= left:
            crcs.append(crc64nvme(chunk[:left], crc))
            chunk, crc, left = chunk[left:], 0, part_size
        if len(chunk):
            crc, left = crc64nvme(chunk, crc), left - len(chunk)
    if left != part_size or not crcs:
        crcs.append(crc)  # the last, short part (or the one part of an empty file)
    return PreHash(sha.hexdigest(), part_size, tuple(crcs), started)


class HashSlots:
    """How many large files are pre-hashed at once (one: see the module's docstring)."""

    def __init__(self, slots: int = 1):
        self._sem = threading.BoundedSemaphore(slots)

    def __enter__(self) -> HashSlots:
        self._sem.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self._sem.release()
