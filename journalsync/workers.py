"""The worker phase: claim plan rows in batches, transfer them on a bounded pool, and record
the results in batched journal transactions."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ThreadPoolExecutor, wait
from typing import TypeVar

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
    the fatal error, if one stopped the run; the counts are in the journal.

    The calling thread claims items from the journal into a short queue and records the
    results in batches; `workers` threads take items and transfer them. (A future per item
    and `wait(FIRST_COMPLETED)` cost more Python time per small file than the PUT itself
    once the PUT went through awscrt.) Only the calling thread touches the journal."""
    stop = stop or threading.Event()
    todo: queue.Queue = queue.Queue(maxsize=workers * 2)
    done: queue.SimpleQueue = queue.SimpleQueue()
    state = {"fatal": None, "buffer": [], "flushed": time.monotonic()}

    def work() -> None:
        while (item := todo.get()) is not None:
            if stop.is_set():
                continue  # left pending in the journal: --resume takes it
            try:
                done.put(transfer(item))
            except BaseException as exc:  # noqa: BLE001 - re-raised by the calling thread
                stop.set()
                done.put(exc)

    def handle(result) -> None:
        if isinstance(result, BaseException):
            raise result
        if not (result.ok or result.interrupted):
            log.warning("failed: %s: %s", shown(result.key), result.error)
        if result.fatal and state["fatal"] is None:
            state["fatal"] = result.error
            stop.set()
        if on_result:
            on_result(result)
        state["buffer"].append(result)
        if len(state["buffer"]) >= FLUSH_EVERY or time.monotonic() - state["flushed"] > FLUSH_SECONDS:
            journal.record_results(state["buffer"])
            state["buffer"], state["flushed"] = [], time.monotonic()

    def drain(timeout: float | None = None) -> None:
        try:
            result = done.get(timeout=timeout) if timeout else done.get_nowait()
            while True:
                handle(result)
                result = done.get_nowait()
        except queue.Empty:
            pass

    threads = [threading.Thread(target=work, name=f"worker-{i}", daemon=True)
               for i in range(workers)]
    for thread in threads:
        thread.start()
    try:
        for item in _claimed(journal, run_id):
            if stop.is_set():
                break
            while True:
                try:
                    todo.put(item, timeout=0.05)
                    break
                except queue.Full:
                    drain()
            drain()
    finally:
        stop_workers = [None] * len(threads)
        while stop_workers or any(t.is_alive() for t in threads):
            if stop_workers:
                try:
                    todo.put(stop_workers[-1], timeout=0.05)
                    stop_workers.pop()
                except queue.Full:
                    pass
            drain(0.05)
        drain()
        journal.record_results(state["buffer"])
    return state["fatal"]


def _claimed(journal: Journal, run_id: int) -> Iterator:
    after = 0
    while batch := journal.claim_batch(run_id, after, CLAIM_BATCH):
        yield from batch
        after = batch[-1].id

