"""What a shared upload (sharedparts.py) decides from numbers alone: how many bytes of
parts each unit holds, and which parts the store does not hold as the journal says."""

from __future__ import annotations

from journalsync.integrity import crc64_b64
from journalsync.prehash import PreHash


def unit_bytes_among(size: int, part: int, most: int, others: int) -> int:
    """Bytes per unit of a file of `size` in parts of `part` while `others` other processes
    work the run: about one unit per process, at most `most` (--part-unit), so
    the hosts left idle at the end of a run help with the last large files instead of
    waiting for one host to send them (a 64 MiB file at 50 Mbit/s is 11 s of one link),
    but never less than two parts, or the units' rows would cost more than they spread."""
    even = -(-size // (others + 1))
    return max(2 * part, min(most, -(-even // part) * part))


# How many times the owner's check before Complete may reopen units whose parts the store
# does not hold as journaled, before it aborts the upload (a store that keeps losing parts).
REOPENS = 2


def not_held(rec, pre: PreHash, numbers, journaled: dict, held: dict) -> list[int]:
    """Of `numbers`, the parts the store does not hold as journaled: not journaled, not
    held, or held or journaled at another size than the part's, or held with a CRC64-NVME
    (where the store gives one) other than the pre-hash's. ETags are not compared: a
    store's ListParts may give a part's ETag in another form than its UploadPart did, or
    an opaque one; every sender checked its bytes against the pre-hash's CRC and the store
    checked each part's Content-MD5 or CRC on arrival."""
    bad = []
    for number in numbers:
        size = min(rec.part_size, rec.size - (number - 1) * rec.part_size)
        mine, there = journaled.get(number), held.get(number)
        if mine is None or there is None or mine[1] != size or there[1] != size or \
                (there[2] is not None and there[2] != crc64_b64(pre.part_crcs[number - 1])):
            bad.append(number)
    return bad
