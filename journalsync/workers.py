"""The worker phase: claim plan rows in batches, transfer them on a bounded pool, and record
the results in batched journal transactions."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from typing import TypeVar

from journalsync.errors import StopNow
from journalsync.journal import Journal
from journalsync.models import TransferResult
from journalsync.report import shown

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")

CLAIM_BATCH = 256
FLUSH_EVERY = 200  # results per journal transaction
FLUSH_SECONDS = 1.0


def bounded_map(pool: Executor, fn: Callable[[T], R], items: Iterable[T], window: int,
                stop: threading.Event | None = None) -> Iterator[R]:
    """Like pool.map, but with at most `window` items in flight (so a million-item stream
    never becomes a million futures) and results in completion order. Once `stop` is set
    nothing new is submitted; what is in flight is still yielded."""
    it = iter(items)
    in_flight: set[Future] = set()
    exhausted = False
    while True:
        while not exhausted and len(in_flight) < window and not (stop and stop.is_set()):
            try:
                in_flight.add(pool.submit(fn, next(it)))
            except StopIteration:
                exhausted = True
        if not in_flight:
            return
        done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
        for future in done:
            yield future.result()


def run_workers(journal: Journal, run_id: int, transfer: Callable[..., TransferResult],
                workers: int, on_result: Callable[[TransferResult], None] | None = None,
                stop: threading.Event | None = None) -> str | None:
    """Execute every pending plan item of the run. A fatal error (credentials, bucket) or
    `stop` (a signal) stops new claims; items in flight finish and are recorded. Returns
    the fatal error, if one stopped the run; the counts are in the journal."""
    fatal = None
    stop = stop or threading.Event()
    buffer: list[TransferResult] = []
    last_flush = time.monotonic()
    try:
        with thread_pool(workers, "worker") as pool:
            for result in bounded_map(pool, transfer, _claimed(journal, run_id), workers * 2, stop):
                if not (result.ok or result.interrupted):
                    log.warning("failed: %s: %s", shown(result.key), result.error)
                if result.fatal and fatal is None:
                    fatal = result.error
                    stop.set()
                if on_result:
                    on_result(result)
                buffer.append(result)
                if len(buffer) >= FLUSH_EVERY or time.monotonic() - last_flush > FLUSH_SECONDS:
                    journal.record_results(buffer)
                    buffer, last_flush = [], time.monotonic()
    finally:
        journal.record_results(buffer)  # what finished is recorded, even on a stop at once
    return fatal


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

