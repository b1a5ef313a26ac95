"""Shared backoff (AIMD), the bandwidth limiter and provider presets, with fake clocks."""

from __future__ import annotations

import io

import pytest

from journalsync.clients import resolve_provider
from journalsync.ratelimit import RateLimiter
from journalsync.retry import SharedBackoff


class FakeClock:
    def __init__(self):
        self.now = 0.0
        self.slept = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept += seconds
        self.now += seconds


def test_aimd_halves_once_per_second_and_grows_back():
    clock = FakeClock()
    backoff = SharedBackoff(16, clock=clock)
    for _ in range(5):  # a burst of SlowDowns from requests already in flight: one cut
        backoff.acquire()
        backoff.release(throttled=True)
    assert backoff.limit == 8 and backoff.throttled == 5
    clock.now += 1.0
    backoff.acquire()
    backoff.release(throttled=True)
    assert backoff.limit == 4
    for _ in range(17):  # additive increase: +1/limit each, about one per round of requests
        backoff.acquire()
        backoff.release(throttled=False)
    assert int(backoff.limit) == 7
    for _ in range(200):
        backoff.acquire()
        backoff.release(throttled=False)
    assert backoff.limit == 16  # never above the maximum


def test_aimd_never_below_one():
    clock = FakeClock()
    backoff = SharedBackoff(2, clock=clock)
    for _ in range(10):
        clock.now += 2
        backoff.acquire()
        backoff.release(throttled=True)
    assert backoff.limit == 1


def test_rate_limiter_paces_reads_to_the_rate():
    clock = FakeClock()
    limiter = RateLimiter(1_000_000, clock=clock, sleep=clock.sleep)
    body = limiter.wrap(b"x" * 3_000_000)
    assert len(body) == 3_000_000
    assert body.read(1_000_000) == b"x" * 1_000_000
    assert body.read() == b"x" * 2_000_000
    # 3 MB at 1 MB/s, less the initial burst allowance (1/8 s)
    assert clock.slept == pytest.approx(3.0 - 0.125, abs=0.01)
    body.seek(0)
    assert body.tell() == 0 and body.read(5) == b"xxxxx"
    body.seek(0, io.SEEK_END)
    assert body.read() == b""


@pytest.mark.parametrize("name, endpoint, preset", [
    ("auto", None, "aws"),
    ("auto", "https://s3.eu-west-1.amazonaws.com", "aws"),
    ("auto", "https://acc.r2.cloudflarestorage.com", "r2"),
    ("auto", "https://storage.googleapis.com", "gcs"),
    ("auto", "http://127.0.0.1:9000", "other"),
    ("minio", "http://127.0.0.1:9000", "minio"),
])
def test_resolve_provider(name, endpoint, preset):
    resolved = resolve_provider(name, endpoint)
    assert resolved.name == preset
    if preset != "aws":
        assert resolved.checksums == "when_required" and resolved.addressing_style == "path"
    assert resolved.batch_delete is (preset != "gcs")
