"""The worker phase: claim plan rows in batches, transfer them on a bounded pool, and record
the results in batched journal transactions."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from typing import TypeVar

from journalsync.errors import StopNow
from journalsync.journal import Journal
from journalsync.models import TransferResult
from journalsync.report import FailureLines

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")

CLAIM_BATCH = 256
FLUSH_EVERY = 200  # results per journal transaction
FLUSH_SECONDS = 1.0


def bounded_map(pool: Executor, fn: Callable[[T], R], items: Iterable[T], window: int,
                stop: threading.Event | None = None,
                on_idle: Callable[[], None] | None = None,
                admit: Callable[[], bool] | None = None) -> Iterator[R]:
    """Like pool.map, but with at most `window` items in flight (so a million-item stream
    never becomes a million futures) and results in completion order. Once `stop` is set
    nothing new is submitted; what is in flight is still yielded. `on_idle` is called
    about once a second while no result arrives (one long upload must not keep the
    results before it out of the journal). `admit`, asked before each next item while
    others are in flight, can hold the stream back until one finishes."""
    it = iter(items)
    in_flight: set[Future] = set()
    exhausted = False
    while True:
        while not exhausted and len(in_flight) < window and not (stop and stop.is_set()) \
                and (admit is None or not in_flight or admit()):
            try:
                in_flight.add(pool.submit(fn, next(it)))
            except StopIteration:
                exhausted = True
        if not in_flight:
            return
        done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED,
                               timeout=FLUSH_SECONDS if on_idle else None)
        if not done and on_idle:
            on_idle()
        for future in done:
            yield future.result()


DENIED_STREAK = 3  # files refused in a row (AccessDenied, KMS) that stop the run


@dataclass(frozen=True, slots=True)
class Stopped:
    """Why the worker phase stopped early: the one line for the run, and whether the run
    may be resumed once the cause passes."""

    reason: str
    resumable: bool = False


def run_workers(journal: Journal, run_id: int, transfer: Callable[..., TransferResult],
                workers: int, on_result: Callable[[TransferResult], None] | None = None,
                stop: threading.Event | None = None,
                failures: FailureLines | None = None) -> Stopped | None:
    """Execute every pending plan item of the run. A fatal error (credentials, bucket), a
    streak of refused files, or `stop` (a signal) stops new claims; items in flight finish
    and are recorded. Returns why it stopped early, if it did; counts are in the journal.

    One refused file is that file's failure: a policy may deny one prefix or one KMS key,
    and the rest of the night's files must still go up. Several in a row are the store
    refusing us, and the run stops rather than fail every file one by one."""
    stopped: Stopped | None = None
    failures = failures or FailureLines()
    streak = 0
    stop = stop or threading.Event()
    buffer: list[TransferResult] = []
    last_flush = time.monotonic()

    def flush() -> None:
        nonlocal buffer, last_flush
        journal.record_results(buffer)
        buffer, last_flush = [], time.monotonic()

    try:
        with thread_pool(workers, "worker") as pool:
            for result in bounded_map(pool, transfer, _claimed(journal, run_id), workers * 2,
                                      stop, on_idle=lambda: buffer and flush()):
                if not (result.ok or result.interrupted or result.vanished):
                    failures.add(result.key, result.error)
                streak = streak + 1 if result.denied else (0 if result.ok else streak)
                if stopped is None and (result.fatal or streak >= DENIED_STREAK):
                    stopped = Stopped(result.error if result.fatal else
                                      f"{result.error} on {streak} files in a row",
                                      result.resumable)
                    stop.set()
                if on_result:
                    on_result(result)
                buffer.append(result)
                if len(buffer) >= FLUSH_EVERY or time.monotonic() - last_flush > FLUSH_SECONDS:
                    flush()
    finally:
        flush()  # what finished is recorded, even on a stop at once
    return stopped


@contextmanager
def thread_pool(workers: int, name: str) -> Iterator[ThreadPoolExecutor]:
    """A ThreadPoolExecutor that waits for its work on the way out, except when a second
    signal stops the run at once (StopNow): then nothing is waited for (the process exits
    without it). Queued work is not cancelled: a cancelled part would fail its upload,
    which would then be aborted; queued work sees the stop flag instead."""
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
    hurry = False
    try:
        yield pool
    except StopNow:
        hurry = True
        raise
    finally:
        pool.shutdown(wait=not hurry)


def _claimed(journal: Journal, run_id: int) -> Iterator:
    after = 0
    while batch := journal.claim_batch(run_id, after, CLAIM_BATCH):
        yield from batch
        after = batch[-1].id

