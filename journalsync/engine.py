"""One sync run: scan -> manifest -> plan -> workers, every phase journaled.

This module only sequences the phases and turns their outcomes into counts and an exit
code; each phase lives in its own module and talks to the journal itself.

`--resume` continues the last run that stopped after its plan was stored (killed,
interrupted, or stopped by a fatal error): it skips scan, LIST and plan, and executes the
plan rows still pending or failed. A plain run after a crash plans afresh but still
continues the in-flight multipart uploads of unchanged files (multipart.py).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

from journalsync import manifest
from journalsync.cleanup import reconcile
from journalsync.clients import ClientFactory
from journalsync.config import Config
from journalsync.errors import ExitCode, FatalRemoteError, Interrupted, UsageError
from journalsync.journal import Journal
from journalsync.models import PlanItem, RunCounts
from journalsync.plan import build_plan
from journalsync.retry import describe, fatal_reason
from journalsync.scan import scan
from journalsync.transfer import Uploader
from journalsync.workers import run_workers

log = logging.getLogger("journalsync")

_SIGNAL_EXIT = {signal.SIGINT: ExitCode.INTERRUPTED, signal.SIGTERM: ExitCode.TERMINATED}


@dataclass(slots=True)
class RunOutcome:
    run_id: int
    counts: RunCounts
    elapsed: float
    exit_code: ExitCode
    state: str
    resumed: bool = False
    notes: list[str] = field(default_factory=list)


def check_source(cfg: Config) -> None:
    if not cfg.source.exists():
        raise UsageError(f"source {cfg.source} does not exist")
    if not cfg.source.is_dir():
        raise UsageError(f"source {cfg.source} is not a directory")


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[list[int]]:
    """SIGINT/SIGTERM set `stop`: no new work is claimed, work in flight finishes, the
    journal stays consistent. A second signal ends the process at once."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum, _frame):
        if received:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        received.append(signum)
        stop.set()
        log.warning("%s: finishing the work in flight, then stopping (again to stop now)",
                    signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, handler) for sig in _SIGNAL_EXIT}
    try:
        yield received
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run_sync(cfg: Config, on_plan_item: Callable[[PlanItem], None] | None = None) -> RunOutcome:
    """Run (or resume) one sync. Raises UsageError / FatalRemoteError for errors that stop
    the run; per-file failures are counted and journaled, never raised."""
    check_source(cfg)
    started = time.monotonic()
    stop = threading.Event()
    with Journal(cfg.journal_path) as journal, stop_on_signals(stop) as received:
        journal.mark_abandoned_runs()
        previous = journal.resumable_run() if cfg.resume and not cfg.dry_run else None
        if previous:
            run_id = previous["id"]
            journal.reopen_run(run_id)
            counts = journal.plan_counts(run_id)
            log.info("resuming run %d", run_id)
        else:
            run_id = journal.start_run(str(cfg.source), str(cfg.dest), cfg.endpoint_url, cfg.dry_run)
            counts = RunCounts()
        notes: list[str] = []
        state = _execute(cfg, journal, run_id, counts, notes, stop, previous is not None,
                         on_plan_item)
        if received:
            state = "interrupted"
        journal.finish_run(run_id, state, counts, "interrupted by a signal" if received else None)
    if received:
        exit_code = _SIGNAL_EXIT[received[0]]
        notes.append("stopped by a signal; `journalsync run --resume` continues")
    else:
        exit_code = ExitCode.OK if counts.failed == 0 else ExitCode.PARTIAL
    return RunOutcome(run_id, counts, time.monotonic() - started, exit_code, state,
                      previous is not None, notes)


def _execute(cfg: Config, journal: Journal, run_id: int, counts: RunCounts, notes: list[str],
             stop: threading.Event, resuming: bool,
             on_plan_item: Callable[[PlanItem], None] | None) -> str:
    """Run the phases, recording a stopped run before re-raising what stopped it."""
    try:
        clients = ClientFactory(cfg)
        _remote("cannot list", cfg, lambda: manifest.check_bucket(clients, cfg))
        if not resuming:
            _scan_and_plan(cfg, journal, run_id, counts, notes, clients, stop, on_plan_item)
        if not cfg.dry_run:
            _transfer(cfg, journal, run_id, counts, clients, stop)
    except Interrupted:
        _final_counts(journal, run_id, counts, cfg.dry_run)
        return "interrupted"
    except FatalRemoteError as exc:
        _final_counts(journal, run_id, counts, cfg.dry_run)
        journal.finish_run(run_id, "failed", counts, str(exc))
        raise
    except KeyboardInterrupt:
        journal.finish_run(run_id, "interrupted", counts, "interrupted")
        raise
    except BaseException as exc:
        journal.finish_run(run_id, "failed", counts, describe(exc))
        raise
    _final_counts(journal, run_id, counts, cfg.dry_run)
    return "done" if counts.failed == 0 else "partial"


def _remote(what: str, cfg: Config, fn: Callable[[], object]) -> object:
    """Run a whole-run remote step; any error it cannot retry away ends the run (exit 4)."""
    try:
        return fn()
    except Interrupted:
        raise
    except Exception as exc:  # noqa: BLE001 - mapped to one line and exit 4
        reason = fatal_reason(exc) or describe(exc)
        raise FatalRemoteError(f"{what} {cfg.dest} at {cfg.endpoint_url or 'AWS'}: {reason}") from exc


def _scan_and_plan(cfg: Config, journal: Journal, run_id: int, counts: RunCounts,
                   notes: list[str], clients: ClientFactory, stop: threading.Event,
                   on_plan_item: Callable[[PlanItem], None] | None) -> None:
    t = time.monotonic()
    scanned = scan(cfg.source, cfg.dest, journal, run_id, min(4, cfg.workers), stop)
    counts.scanned, counts.symlinks = scanned.scanned, scanned.symlinks
    log.info("scan: %d files, %d hashed (%d bytes), %d failed, %d symlinks not followed, %.2fs",
             scanned.scanned, scanned.hashed, scanned.hashed_bytes, scanned.failed,
             scanned.symlinks, time.monotonic() - t)
    if scanned.symlinks:
        notes.append(f"{scanned.symlinks} symlink(s) not followed")

    t = time.monotonic()
    listed = _remote("cannot list", cfg, lambda: manifest.refresh(clients, cfg, journal, run_id, stop))
    _remote("cannot read object metadata in", cfg,
            lambda: manifest.fill_hashes(clients, cfg, journal, listed))
    log.info("manifest: %d objects in %d pages, %d HEADs, %.2fs",
             listed.listed, listed.pages, listed.heads, time.monotonic() - t)

    plan = build_plan(journal, run_id, cfg)
    if stop.is_set():
        raise Interrupted("stopped while planning")
    counts.skipped, counts.extra = plan.skipped, plan.extra
    counts.skip_reasons = dict(plan.skip_reasons)
    journal.save_plan_counts(run_id, counts)
    log.info("plan: %d uploads (%d bytes), %d unchanged, %d extra", plan.uploads,
             plan.upload_bytes, plan.skipped, plan.extra)
    if cfg.dry_run:
        notes.append(f"dry run: {plan.uploads} upload(s) of {plan.upload_bytes} bytes planned, "
                     "nothing sent")
        for item in journal.iter_plan(run_id) if on_plan_item else ():
            on_plan_item(item)


def _transfer(cfg: Config, journal: Journal, run_id: int, counts: RunCounts,
              clients: ClientFactory, stop: threading.Event) -> None:
    with ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="part") as part_pool:
        uploader = Uploader(cfg, journal, run_id, clients, part_pool, stop)
        aborted = _remote("cannot list incomplete uploads in", cfg,
                          lambda: reconcile(journal, run_id, uploader.multipart, clients, cfg))
        if aborted:
            log.info("aborted %d incomplete upload(s) this run will not continue", aborted)
        work = run_workers(journal, run_id, uploader.upload, cfg.workers, stop=stop)
    if work.fatal:
        raise FatalRemoteError(f"stopped: {work.fatal}")
    if stop.is_set():
        raise Interrupted("stopped by a signal")


def _final_counts(journal: Journal, run_id: int, counts: RunCounts, dry_run: bool) -> None:
    """Counts from the journal, so a resumed run reports everything it did across tries."""
    if not dry_run:
        counts.uploaded, failed, counts.bytes = journal.transfer_totals(run_id)
    else:
        failed = 0
    counts.failed = failed + journal.scan_failures(run_id)
