"""--bwlimit: a token bucket in bytes per second shared by every worker, and request bodies
that draw from it as the HTTP layer reads them, so the cap holds across all uploads at once
and the bytes still go out in a smooth stream rather than in bursts."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable

CHUNK = 64 * 1024


class RateLimiter:
    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = float(rate)
        self.capacity = max(self.rate / 8, CHUNK)  # at most 1/8 s of burst
        self._tokens = self.capacity
        self._clock = clock
        self._sleep = sleep
        self._last = clock()
        self._lock = threading.Lock()

    def take(self, n: int) -> float:
        """Spend n bytes; sleeps until the bucket can pay for them. Returns the wait."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= n
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)
        return wait

    def wrap(self, data: bytes) -> LimitedBody:
        return LimitedBody(data, self)


class LimitedBody(io.RawIOBase):
    """A seekable, sized, read-only body whose reads are paid for from a RateLimiter."""

    def __init__(self, data: bytes, limiter: RateLimiter):
        super().__init__()
        self._view = memoryview(data)
        self._pos = 0
        self._limiter = limiter

    def __len__(self) -> int:
        return len(self._view)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._view)}[whence]
        self._pos = max(0, min(len(self._view), base + offset))
        return self._pos

    def read(self, size: int = -1) -> bytes:
        end = len(self._view) if size is None or size < 0 else min(len(self._view), self._pos + size)
        out = bytearray()
        while self._pos < end:  # pay in chunks so one big read is paced, not one burst
            step = min(CHUNK, end - self._pos)
            self._limiter.take(step)
            out += self._view[self._pos:self._pos + step]
            self._pos += step
        return bytes(out)

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)
