"""prehash: one read gives the file's SHA-256 and each part's CRC64-NVME, which the send
pass checks each part it reads against (multipart.py)."""

from __future__ import annotations

import hashlib
import io
import os

import pytest
from awscrt.checksums import crc64nvme

from journalsync.prehash import READ_CHUNK, PartStream, prehash

PART = 5 * 1024 * 1024 + 3  # not a multiple of the read chunk: parts straddle chunks


@pytest.mark.parametrize("size", [1, PART - 1, PART, PART + 1, 3 * PART, 2 * PART + READ_CHUNK])
def test_prehash_gives_the_sha256_and_every_parts_crc(size):
    data = os.urandom(size)
    pre = prehash(io.BytesIO(data), PART)
    parts = [data[i:i + PART] for i in range(0, size, PART)]
    assert pre.sha256 == hashlib.sha256(data).hexdigest()
    assert pre.part_crcs == tuple(crc64nvme(p) for p in parts)
    assert pre.part_md5s == tuple(hashlib.md5(p).digest() for p in parts)
    assert all(pre.crc_matches(n, p) for n, p in enumerate(parts, 1))


def test_a_part_that_differs_from_what_was_hashed_does_not_match():
    data = bytearray(os.urandom(2 * PART))
    pre = prehash(io.BytesIO(bytes(data)), PART)
    data[PART + 7] ^= 1
    assert pre.crc_matches(1, bytes(data[:PART]))
    assert not pre.crc_matches(2, bytes(data[PART:]))
    assert not pre.crc_matches(2, bytes(data[PART:-1]))  # a short read is no match either
    assert not pre.crc_matches(3, b"")  # no such part


def test_a_part_stream_reads_its_range_and_knows_whether_it_was_the_hashed_part(tmp_path):
    path = tmp_path / "f"
    data = os.urandom(2 * PART + 10)
    path.write_bytes(data)
    with open(path, "rb") as fh:
        pre = prehash(fh, PART)
        stream = PartStream(fh.fileno(), PART, PART)
        assert stream.read(100) + stream.read() == data[PART:2 * PART]
        assert stream.read() == b"" and stream.sent_as_hashed(pre, 2)
        assert not stream.sent_as_hashed(pre, 1)
        short = PartStream(fh.fileno(), PART, PART)
        short.read(10)
        assert not short.sent_as_hashed(pre, 2)  # not every byte read: never "as hashed"
        with open(path, "r+b") as out:  # the file changes between the pre-hash and the send
            out.seek(PART + 5)
            out.write(b"\0" if data[PART + 5] else b"\1")
        again = PartStream(fh.fileno(), PART, PART)
        again.read()
        assert not again.sent_as_hashed(pre, 2)


def test_without_md5s_the_prehash_gives_the_same_sha256_and_crcs_and_no_md5(tmp_path):
    """A store that checks CRC64-NVME (integrity.py): the pre-hash skips MD5, its biggest
    cost, and everything else is as before."""
    data = os.urandom(3 * PART + 5)
    full, lean = prehash(io.BytesIO(data), PART), prehash(io.BytesIO(data), PART, md5s=False)
    assert (lean.sha256, lean.part_crcs) == (full.sha256, full.part_crcs)
    assert lean.part_md5s == () and len(full.part_md5s) == 4


def test_part_md5_is_the_parts_md5_and_none_once_the_part_changed(tmp_path):
    """Where the store checks Content-MD5, each part's MD5 is read on its worker just before
    it is sent (the pre-hash takes only SHA-256 and CRCs): it must be the MD5 of the part
    pre-hashed, and nothing when the part on disk is no longer that part."""
    from journalsync.prehash import part_md5

    data = os.urandom(3 * 1024 * 1024 + 123)
    path = tmp_path / "f"
    path.write_bytes(data)
    part = 1024 * 1024 + 7
    with open(path, "rb") as fh:
        pre = prehash(fh, part, md5s=False)
    assert pre.part_md5s == ()
    with open(path, "r+b") as fh:
        fd = fh.fileno()
        for number, crc in enumerate(pre.part_crcs, 1):
            start = (number - 1) * part
            piece = data[start:start + part]
            assert part_md5(fd, start, len(piece), crc) == hashlib.md5(piece).digest()
        fh.seek(part + 5)
        fh.write(b"\0" if data[part + 5] else b"\1")  # one byte of part 2
        fh.flush()
        assert part_md5(fd, part, part, pre.part_crcs[1]) is None
        assert part_md5(fd, 0, part, pre.part_crcs[0]) == hashlib.md5(data[:part]).digest()
        assert part_md5(fd, len(data) - 10, 20, pre.part_crcs[-1]) is None  # past the end


class _StopAfter(io.BytesIO):
    """A file that sets `stop` once `blocks` reads have been made of it (a signal that
    arrives while the pre-hash reads), and counts its reads."""

    def __init__(self, data: bytes, stop, blocks: int):
        super().__init__(data)
        self.stop, self.blocks, self.reads = stop, blocks, 0

    def readinto(self, buf):
        self.reads += 1
        if self.reads == self.blocks:
            self.stop.set()
        return super().readinto(buf)


def test_a_stop_during_the_prehash_ends_it_at_the_next_block():
    """A first signal finishes the work in flight; a pre-hash is not a byte on the wire, so
    it is abandoned at once (Interrupted) instead of reading the file to its end."""
    import threading

    from journalsync.errors import Interrupted

    stop = threading.Event()
    fh = _StopAfter(bytes(64 * READ_CHUNK), stop, 3)
    with pytest.raises(Interrupted, match="^stopped while pre-hashing"):
        prehash(fh, PART, md5s=False, stop=stop)
    assert fh.reads == 3


def test_an_unset_stop_changes_nothing():
    import threading

    from dataclasses import replace

    data = os.urandom(3 * PART)
    with_stop = prehash(io.BytesIO(data), PART, stop=threading.Event())
    assert replace(with_stop, started_ns=0) == replace(prehash(io.BytesIO(data), PART),
                                                      started_ns=0)
