"""A read error in the middle of a multipart upload gives its part slot back.

Why a unit test: the case needs read() to fail with EIO/ESTALE on an open regular file.
Nothing on this machine can do that for real: there is no libfuse for a FUSE file system,
the container has no device-mapper nodes for an `error` target, and truncating a file
under the reader only gives short reads. So the driver reads a file object whose read()
raises, against a real journal; no server is reached (the first read fails)."""

from __future__ import annotations

import errno
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from journalsync.config import Config, Destination, MiB
from journalsync.journal import Journal, UploadRecord
from journalsync.multipart import MultipartDriver
from journalsync.retry import Attempts


class FailingFile:
    """A file whose every read fails as a vanished NFS file does."""

    def read(self, _size: int) -> bytes:
        raise OSError(errno.ESTALE, "Stale file handle")

    def readinto(self, _buffer) -> int:
        raise OSError(errno.ESTALE, "Stale file handle")


def test_read_error_gives_the_part_slot_back(tmp_path: Path):
    cfg = Config(source=tmp_path, dest=Destination("b", "p"), journal_path=tmp_path / "j.sqlite",
                 workers=2)
    rec = UploadRecord("up-1", "big.bin", 1, 5 * MiB, 12 * MiB, 1, 1, 1, "00" * 32,
                       time.time(), "active")
    with Journal(cfg.journal_path) as journal, ThreadPoolExecutor(2) as pool:
        driver = MultipartDriver(cfg, journal, 1, None, pool, threading.Event())
        slots = 2
        for _ in range(slots):  # as many failures as slots: leaked, they would all be gone
            with pytest.raises(OSError):
                driver.parts.send_parts(FailingFile(), rec, {}, Attempts())
        taken = [driver.parts.part_slots.acquire(blocking=False) for _ in range(slots)]
    assert taken == [True] * slots


@pytest.mark.parametrize("workers, part_size, slots", [
    (8, 8 * MiB, 6),     # the defaults: 48 MiB of part buffers, not 64
    (4, 8 * MiB, 4),     # fewer workers than the budget allows
    (8, 5 * MiB, 8),
    (32, 5 * MiB, 9),    # many workers: the memory budget decides
    (8, 64 * MiB, 2),    # huge parts: still one sending while the next is read
])
def test_parts_in_flight_are_bounded_by_memory_and_workers(tmp_path: Path, workers, part_size, slots):
    cfg = Config(source=tmp_path, dest=Destination("b", "p"), journal_path=tmp_path / "j.sqlite",
                 workers=workers, part_size=part_size)
    with Journal(cfg.journal_path) as journal, ThreadPoolExecutor(2) as pool:
        driver = MultipartDriver(cfg, journal, 1, None, pool, threading.Event())
        taken = [driver.parts.part_slots.acquire(blocking=False) for _ in range(slots + 1)]
    assert taken == [True] * slots + [False]
