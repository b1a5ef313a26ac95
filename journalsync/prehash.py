"""The read before a multipart upload: the file's SHA-256 (it must be in the upload's
metadata before the first part) and each part's CRC64-NVME, in one pass. Nothing else:
this read is on the way to a large file's first byte, and MD5 (about 1 CPU-s per 544 MB,
twice SHA-256's cost with SHA-NI; the CRC is nearly free) would double it. Where the store
checks only Content-MD5 (integrity.py), each part's MD5 is read on its own worker just
before the part is sent (`part_md5`, from the page cache as a rule), and checked to be of
the part pre-hashed by its CRC. Measured on 1 GiB from the page cache: 2.56 CPU-s per GiB
with MD5 in the pre-hash, 0.93 without. (`prehash(md5s=True)` still gives the MD5s.)

Then the parts are sent without being held in memory of ours: the CRT reads each one from
the file as it sends it (PartStream, os.preadv into the CRT's buffer), with the part's
Content-MD5 or its CRC64-NVME as x-amz-checksum-crc64nvme, and CRCs what it read. What is
sent must be the bytes that were hashed; two checks say so, neither a second SHA-256 pass:
  - the part's CRC64-NVME as sent equals the pre-hash's (awscrt runs it at several GB/s;
    a part that differs and keeps its 64-bit CRC needs an accidental collision, 2^-64,
    while the file's size, mtime, ctime and inode stayed the same: the upload checks those);
  - the store checks the part's Content-MD5 (AWS, MinIO, rclone serve s3, SeaweedFS; not
    moto) or its CRC64-NVME (AWS, MinIO, R2, SeaweedFS) and refuses a part whose bytes
    differ from those the pre-hash read.
So per byte: one read from the disk, SHA-256 + CRC64 in the pre-hash, CRC64 as sent, and
where the store checks MD5, one more read from the page cache with MD5 + CRC64.

Only one large file is pre-hashed at a time (`HashSlots`): the first file's parts are on
the wire after one file's read, not after every worker's file has been read at once, and
the next file is hashed while this one's parts are in flight.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from dataclasses import dataclass

from awscrt.checksums import crc64nvme

from journalsync.errors import Interrupted

READ_CHUNK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class PreHash:
    sha256: str
    part_size: int
    part_crcs: tuple[int, ...]  # CRC64-NVME of each part of `part_size`, in order
    part_md5s: tuple[bytes, ...]  # and its MD5 (Content-MD5), or () where CRCs are checked
    started_ns: int  # time.time_ns() before the read: the hash's time for the racy rule

    def crc_matches(self, number: int, data) -> bool:
        """Part `number` (1-based) read now is the part that was hashed."""
        return 0 < number <= len(self.part_crcs) and crc64nvme(data) == self.part_crcs[number - 1]


def prehash(fh, part_size: int, md5s: bool = True,
            stop: threading.Event | None = None) -> PreHash:
    """Read `fh` from where it stands to its end once: SHA-256, and each part's CRC64-NVME
    and, with `md5s` (the store checks Content-MD5, not CRCs: integrity.py), its MD5.

    Raises Interrupted as soon as `stop` is set (checked between blocks): a first signal
    finishes the work in flight, and a pre-hash is preparation, not a byte on the wire.
    Read to its end, a 1 TiB file would keep a stopping run going for many minutes (past
    systemd's 90 s stop timeout); abandoned, it is hashed again by the next run."""
    started = time.time_ns()
    sha = hashlib.sha256()
    crcs: list[int] = []
    digests: list[bytes] = []
    crc, md5, left = 0, hashlib.md5() if md5s else None, part_size
    buf = bytearray(READ_CHUNK)
    view = memoryview(buf)
    while n := fh.readinto(buf):
        if stop is not None and stop.is_set():
            raise Interrupted("stopped while pre-hashing it; the next run hashes it again")
        chunk = view[:n]
        sha.update(chunk)
        while len(chunk) >= left:
            crcs.append(crc64nvme(chunk[:left], crc))
            if md5 is not None:
                md5.update(chunk[:left])
                digests.append(md5.digest())
                md5 = hashlib.md5()
            chunk, crc, left = chunk[left:], 0, part_size
        if len(chunk):
            if md5 is not None:
                md5.update(chunk)
            crc, left = crc64nvme(chunk, crc), left - len(chunk)
    if left != part_size or not crcs:
        crcs.append(crc)  # the last, short part (or the one part of an empty file)
        if md5 is not None:
            digests.append(md5.digest())
    return PreHash(sha.hexdigest(), part_size, tuple(crcs), tuple(digests), started)


def part_md5(fd: int, offset: int, length: int, expected_crc: int) -> bytes | None:
    """The MD5 of a part read now (for Content-MD5, where the store checks nothing else), or
    None when what was read is not the part pre-hashed (its CRC64-NVME differs, or the file
    is shorter): the file changed. Read in 1 MiB pieces, from the page cache as a rule (the
    pre-hash has just read the file), on the part's own worker: the MD5 work is spread over
    the parts in flight, not done before the first byte as one pass over the whole file."""
    md5, crc, pos, end = hashlib.md5(), 0, offset, offset + length
    buf = bytearray(min(READ_CHUNK, max(1, length)))
    view = memoryview(buf)
    while pos < end:
        n = os.preadv(fd, [view[:min(len(buf), end - pos)]], pos)
        if not n:
            break
        md5.update(view[:n])
        crc, pos = crc64nvme(view[:n], crc), pos + n
    return md5.digest() if pos == end and crc == expected_crc else None


class PartStream:
    """One part of a file as a request body that the CRT reads straight from the file's
    descriptor (os.preadv into the CRT's own buffer): no copy of the part is held in Python,
    so parts in flight cost no memory of ours. Each byte is CRC'd as it is read, so the
    caller can check afterwards that the part sent is the part pre-hashed."""

    def __init__(self, fd: int, offset: int, length: int):
        self.fd, self.pos, self.end, self.length = fd, offset, offset + length, length
        self.crc, self.count = 0, 0

    def readinto(self, buffer) -> int:
        want = min(len(buffer), self.end - self.pos)
        if want <= 0:
            return 0
        view = memoryview(buffer)[:want]
        n = os.preadv(self.fd, [view], self.pos)
        if n:
            self.crc = crc64nvme(view[:n], self.crc)
            self.pos, self.count = self.pos + n, self.count + n
        return n

    def read(self, size: int = -1) -> bytes:  # awscrt wants a read(); readinto is used
        buf = bytearray(max(0, min(size if size >= 0 else self.length, self.end - self.pos)))
        return bytes(buf[:self.readinto(buf)])

    def sent_as_hashed(self, pre: PreHash, number: int) -> bool:
        """Every byte of part `number` was read, and they are the bytes pre-hashed."""
        return self.count == self.length and 0 < number <= len(pre.part_crcs) \
            and self.crc == pre.part_crcs[number - 1]


class HashSlots:
    """How many large files are pre-hashed at once (one: see the module's docstring)."""

    def __init__(self, slots: int = 1):
        self._sem = threading.BoundedSemaphore(slots)

    def __enter__(self) -> HashSlots:
        self._sem.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self._sem.release()


class BufferStream:
    """A part held in a buffer of ours, as a request body the CRT reads (readinto copies
    into its own buffer; io.BytesIO would first copy a bytearray whole). Made anew for
    each try, so a retry sends the part from its start."""

    def __init__(self, view: memoryview):
        self.view, self.pos = view, 0

    def readinto(self, buffer) -> int:
        n = min(len(buffer), len(self.view) - self.pos)
        if n <= 0:
            return 0
        memoryview(buffer)[:n] = self.view[self.pos:self.pos + n]
        self.pos += n
        return n

    def read(self, size: int = -1) -> bytes:  # awscrt wants a read(); readinto is used
        end = len(self.view) if size < 0 else min(len(self.view), self.pos + size)
        data, self.pos = bytes(self.view[self.pos:end]), max(self.pos, end)
        return data


class PartBuffers:
    """Part buffers used again from part to part of a streamed file: a new 8 MiB bytes for
    every part is fresh memory each time (its pages faulted in, then unmapped: about an
    eighth of the stream's kernel CPU in a perf profile). At most `keep` are kept."""

    def __init__(self, keep: int):
        self._free: list[bytearray] = []
        self._keep = keep
        self._lock = threading.Lock()

    def take(self, size: int) -> bytearray:
        with self._lock:
            while self._free:
                buf = self._free.pop()
                if len(buf) == size:
                    return buf
        return bytearray(size)

    def give(self, buf: bytearray) -> None:
        with self._lock:
            if len(self._free) < self._keep:
                self._free.append(buf)


def read_into(fh, buf: bytearray) -> memoryview:
    """Fill `buf` from `fh` (short only at the end of the file); the part read."""
    view, got = memoryview(buf), 0
    while got < len(buf):
        n = fh.readinto(view[got:])
        if not n:
            break
        got += n
    return view[:got]
