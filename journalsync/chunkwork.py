"""Working a run's chunks: the upload phase of `run` and all of `journalsync worker`.

A process claims a chunk (journal/chunks.py), streams its pending rows through the same
bounded pool as workers.run_workers, and claims the next chunk only once every row of the
one before is submitted, so a process holds at most one chunk it has not finished
submitting. It claims it only while a transfer slot is free and fewer than AHEAD chunks
have transfers in flight, so the pool does not drain between chunks and a process holds
no more work than it is sending. Filling the window (2 x workers items) instead, a run with
8 transfers claimed 10 of the 11 chunks of bench/hosts.py's tree (455 MiB, 8-64 MiB files)
within 2.3 s of its first claim, and the workers of 3 other hosts got 2 between them: 0.29
of linear scaling on 4 hosts at 50 Mbit/s (0.60 with this rule, one run each). A heartbeat thread renews the leases of the
chunks held every lease/3. When a renewal or a fenced write finds the chunk gone (the lease
expired and someone else claimed it), the chunk is lost: nothing more of it is submitted,
what is in flight finishes, and none of its results are recorded.

On a shared journal (PostgreSQL) a process with no chunk to claim claims a unit of a large
file's parts instead (sharedparts.py), and a worker stays while such units may still come
(a chunk holding a large file is claimed, its holder may be pre-hashing it to share it).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

from journalsync.journal import Journal
from journalsync.models import PlanItem, TransferResult
from journalsync.report import FailureLines
from journalsync.sharedparts import SharedParts
from journalsync.workers import (
    DENIED_STREAK,
    FLUSH_EVERY,
    FLUSH_SECONDS,
    Stopped,
    bounded_map,
    thread_pool,
)

log = logging.getLogger(__name__)

LEASE = 30.0  # seconds a claim lasts without a heartbeat (--lease)
AHEAD = 2  # chunks with transfers in flight before a process claims another


@dataclass(slots=True)
class Held:
    """A chunk this process claimed, at the epoch its claim gave it."""

    id: int
    epoch: int
    lost: threading.Event = field(default_factory=threading.Event)
    done: bool = False


@dataclass(slots=True)
class Tally:
    """What this process finished: shown per worker by `status`."""

    chunks: int = 0
    bytes: int = 0


class Heartbeat:
    """Renews the leases of the held chunks every lease/3, and the worker row's heartbeat."""

    def __init__(self, journal: Journal, worker_id: int, lease: float, held: dict[int, Held],
                 lock: threading.Lock, tally: Tally, shared: SharedParts | None = None):
        self.journal, self.worker_id, self.lease = journal, worker_id, lease
        self.held, self.lock, self.tally, self.shared = held, lock, tally, shared
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        """No beat after this returns (a beat in progress is waited for): the worker row's
        last write must be the final tally, not a beat's older one written after it."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self.lease / 3):
            try:
                self.beat()
            except Exception as exc:  # noqa: BLE001 - a busy journal: the next beat retries
                log.warning("heartbeat failed: %s", exc)

    def beat(self) -> None:
        with self.lock:
            mine = [c for c in self.held.values() if not (c.lost.is_set() or c.done)]
        for chunk in mine:
            if not self.journal.renew_lease(chunk.id, chunk.epoch, self.lease):
                with self.lock:
                    if chunk.done:
                        continue
                    chunk.lost.set()
                log.warning("lost chunk %d (its lease expired and another worker claimed it); "
                            "dropping it", chunk.id)
        if self.shared is not None:
            self.shared.renew()
        self.journal.worker_beat(self.worker_id, self.tally.chunks, self.tally.bytes)


def work_chunks(journal: Journal, run_id: int, transfer: Callable[[PlanItem], TransferResult],
                workers: int, worker_id: int, lease: float = LEASE,
                stop: threading.Event | None = None, wait_for_all: bool = False,
                on_result: Callable[[TransferResult], None] | None = None,
                failures: FailureLines | None = None, poll: float | None = None,
                tally: Tally | None = None,
                shared: SharedParts | None = None) -> Stopped | None:
    """Claim and upload the run's chunks until none is left to claim and this process
    holds none. With `wait_for_all` (the run process) go on until every chunk of the run is
    done: others may hold some, and one whose lease expires is claimed here. A fatal error,
    a streak of refused files or `stop` stops new claims; what is in flight finishes and is
    recorded (while its chunk is still ours), and chunks held but unfinished are given back.
    Returns why it stopped early, if it did. `shared` (a shared journal only): with no
    chunk to claim, claim units of large files' parts (sharedparts.py)."""
    stop = stop or threading.Event()
    failures = failures or FailureLines()
    tally = tally or Tally()
    poll = poll if poll is not None else min(1.0, lease / 3)
    held: dict[int, Held] = {}
    lock = threading.Lock()
    state = {"stopped": None, "streak": 0}
    buffer: dict[int, list[TransferResult]] = {}
    last_flush = [time.monotonic()]
    sending: dict[int, int] = {}  # chunk id -> its items submitted and not finished
    unsubmitted = [0]  # rows of the newest chunk not yet submitted
    if shared is not None:
        shared.bind(worker_id, lease)

    def admit() -> bool:
        """Whether the stream may go on: within a chunk always; to claim another, only
        while a slot is free and fewer than AHEAD chunks are being sent."""
        with lock:
            return unsubmitted[0] > 0 or (sum(sending.values()) < workers and
                                          len(sending) < AHEAD)

    def sent(chunk: Held) -> None:
        with lock:
            sending[chunk.id] -= 1
            if not sending[chunk.id]:
                del sending[chunk.id]

    def items() -> Iterator[tuple[Held, PlanItem]]:
        # Chunks of this host's dead processes (a killed run this one resumes, a killed
        # worker) are free now, not at the end of their leases.
        journal.release_dead_holders(run_id)
        if shared is not None:
            journal.release_dead_unit_holders(run_id)
        while not stop.is_set():
            # Workers claim largest first, so the hosts finish together; the run too once
            # workers have joined it, and in plan order while alone (its first byte comes
            # sooner): chunks.claim_chunk.
            largest = not wait_for_all or journal.working_peers(run_id, worker_id, lease) > 0
            claim = journal.claim_chunk(run_id, worker_id, lease, largest_first=largest)
            if claim is None:
                unit = shared.claim(run_id) if shared is not None else None
                if unit is None:
                    return
                log.info("claimed part unit %d: parts %d-%d (epoch %d)", unit.id,
                         unit.first, unit.last, unit.epoch)
                pseudo = Held(-unit.id, unit.epoch)  # sending's key; the unit renews itself
                with lock:
                    sending[pseudo.id] = sending.get(pseudo.id, 0) + 1
                yield pseudo, unit
                continue
            chunk = Held(*claim)
            with lock:
                held[chunk.id] = chunk
            log.info("claimed chunk %d (epoch %d)", chunk.id, chunk.epoch)
            rows = journal.chunk_items(chunk.id)
            if chunk.epoch > 1:
                # Held before (epochs count claims): its holder may have sent rows whose
                # results it never recorded (killed between the PUT and the journal's
                # batch); each is looked for in the store before it is sent.
                rows = [replace(item, maybe_sent=True) for item in rows]
            if not rows:  # a former holder finished it all but its close: close it
                settle(chunk, [])
            unsubmitted[0] = len(rows)
            for item in rows:
                if chunk.lost.is_set() or stop.is_set():
                    break
                with lock:
                    unsubmitted[0] -= 1
                    sending[chunk.id] = sending.get(chunk.id, 0) + 1
                yield chunk, item
            unsubmitted[0] = 0

    def one(pair: tuple[Held, PlanItem]) -> tuple[Held, TransferResult | None]:
        chunk, item = pair
        try:
            if not isinstance(item, PlanItem):  # a unit of parts: recorded as it is sent
                sent_bytes = shared.send_unit(item)
                with lock:
                    tally.bytes += sent_bytes
                return chunk, None
            if chunk.lost.is_set():
                return chunk, None  # queued when the chunk was lost: not sent
            return chunk, transfer(item)
        finally:
            sent(chunk)

    def settle(chunk: Held, results: list[TransferResult]) -> None:
        if chunk.lost.is_set():
            return
        outcome = journal.record_chunk_results(chunk.id, chunk.epoch, results, lease)
        with lock:
            if outcome == "lost":
                chunk.lost.set()
                log.warning("lost chunk %d before recording %d result(s); they are dropped",
                            chunk.id, len(results))
                return
            tally.bytes += sum((r.size or 0) - r.others_sent for r in results if r.ok)
            if outcome == "done":
                chunk.done = True
                tally.chunks += 1
                held.pop(chunk.id, None)

    def flush() -> None:
        pending = list(buffer.items())
        buffer.clear()
        last_flush[0] = time.monotonic()
        for chunk_id, results in pending:
            settle(held_or_known[chunk_id], results)

    held_or_known: dict[int, Held] = {}

    def take(chunk: Held, result: TransferResult) -> None:
        if not (result.ok or result.interrupted or result.vanished):
            failures.add(result.key, result.error)
        state["streak"] = state["streak"] + 1 if result.denied else (
            0 if result.ok else state["streak"])
        if state["stopped"] is None and (result.fatal or state["streak"] >= DENIED_STREAK):
            state["stopped"] = Stopped(result.error if result.fatal else
                                       f"{result.error} on {state['streak']} files in a row",
                                       result.resumable)
            stop.set()
        if on_result:
            on_result(result)
        held_or_known[chunk.id] = chunk
        buffer.setdefault(chunk.id, []).append(result)
        if sum(map(len, buffer.values())) >= FLUSH_EVERY or \
                time.monotonic() - last_flush[0] > FLUSH_SECONDS:
            flush()

    with Heartbeat(journal, worker_id, lease, held, lock, tally, shared) as heartbeat, \
            thread_pool(workers, "worker") as pool:
        try:
            while True:
                for chunk, result in bounded_map(pool, one, items(), workers * 2, stop,
                                                 on_idle=lambda: buffer and flush(),
                                                 admit=admit):
                    if result is not None and not chunk.lost.is_set():
                        take(chunk, result)
                flush()
                # Whatever is held now is lost, or holds rows left pending (a stop).
                if stop.is_set() or not (wait_for_all and journal.chunks_left(run_id) or
                                         shared is not None and shared.work_may_come(run_id)):
                    break
                stop.wait(poll)  # others hold chunks: wait for them, or for a lease to expire
        finally:
            flush()
            with lock:
                unfinished = [c for c in held.values() if not (c.lost.is_set() or c.done)]
            for chunk in unfinished:
                journal.release_chunk(chunk.id, chunk.epoch, lease)
            if shared is not None:
                shared.release_all()
            heartbeat.stop()
            journal.worker_beat(worker_id, tally.chunks, tally.bytes,
                                "stopped" if stop.is_set() else "done")
    return state["stopped"]
