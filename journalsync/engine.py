"""One sync run: scan -> manifest -> plan -> workers, every phase journaled.

This module only sequences the phases and turns their outcomes into counts and an exit
code; each phase lives in its own module and talks to the journal itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from journalsync import manifest
from journalsync.clients import ClientFactory
from journalsync.config import Config
from journalsync.errors import ExitCode, FatalRemoteError, UsageError
from journalsync.journal import Journal
from journalsync.models import PlanItem, RunCounts
from journalsync.plan import build_plan
from journalsync.retry import describe, fatal_reason
from journalsync.scan import scan
from journalsync.transfer import Uploader
from journalsync.workers import run_workers

log = logging.getLogger("journalsync")


@dataclass(slots=True)
class RunOutcome:
    run_id: int
    counts: RunCounts
    elapsed: float
    exit_code: ExitCode
    state: str
    notes: list[str] = field(default_factory=list)


def check_source(cfg: Config) -> None:
    if not cfg.source.exists():
        raise UsageError(f"source {cfg.source} does not exist")
    if not cfg.source.is_dir():
        raise UsageError(f"source {cfg.source} is not a directory")


def run_sync(cfg: Config, on_plan_item: Callable[[PlanItem], None] | None = None) -> RunOutcome:
    """Run one sync. Raises UsageError / FatalRemoteError for errors that stop the run;
    per-file failures are counted and journaled, never raised."""
    check_source(cfg)
    started = time.monotonic()
    counts = RunCounts()
    with Journal(cfg.journal_path) as journal:
        run_id = journal.start_run(str(cfg.source), str(cfg.dest), cfg.endpoint_url, cfg.dry_run)
        try:
            notes = _phases(cfg, journal, run_id, counts, on_plan_item)
        except FatalRemoteError as exc:
            journal.finish_run(run_id, "failed", counts, str(exc))
            raise
        except KeyboardInterrupt:
            journal.finish_run(run_id, "interrupted", counts, "interrupted")
            raise
        except BaseException as exc:
            journal.finish_run(run_id, "failed", counts, describe(exc))
            raise
        state = "done" if counts.failed == 0 else "partial"
        journal.finish_run(run_id, state, counts)
    exit_code = ExitCode.OK if counts.failed == 0 else ExitCode.PARTIAL
    return RunOutcome(run_id, counts, time.monotonic() - started, exit_code, state, notes)


def _remote(what: str, cfg: Config, fn: Callable[[], object]) -> object:
    """Run a whole-run remote step; any error it cannot retry away ends the run (exit 4)."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - mapped to one line and exit 4
        reason = fatal_reason(exc) or describe(exc)
        raise FatalRemoteError(f"{what} {cfg.dest} at {cfg.endpoint_url or 'AWS'}: {reason}") from exc


def _phases(cfg: Config, journal: Journal, run_id: int, counts: RunCounts,
            on_plan_item: Callable[[PlanItem], None] | None) -> list[str]:
    notes: list[str] = []
    clients = ClientFactory(cfg)
    _remote("cannot list", cfg, lambda: manifest.check_bucket(clients, cfg))

    t = time.monotonic()
    scanned = scan(cfg.source, cfg.dest, journal, run_id, hash_threads=min(4, cfg.workers))
    counts.scanned, counts.symlinks, counts.failed = scanned.scanned, scanned.symlinks, scanned.failed
    log.info("scan: %d files, %d hashed (%d bytes), %d failed, %d symlinks not followed, %.2fs",
             scanned.scanned, scanned.hashed, scanned.hashed_bytes, scanned.failed,
             scanned.symlinks, time.monotonic() - t)
    if scanned.symlinks:
        notes.append(f"{scanned.symlinks} symlink(s) not followed")

    t = time.monotonic()
    listed = _remote("cannot list", cfg, lambda: manifest.refresh(clients, cfg, journal, run_id))
    _remote("cannot read object metadata in", cfg,
            lambda: manifest.fill_hashes(clients, cfg, journal, listed))
    log.info("manifest: %d objects in %d pages, %d HEADs, %.2fs",
             listed.listed, listed.pages, listed.heads, time.monotonic() - t)

    plan = build_plan(journal, run_id, cfg)
    counts.skipped, counts.extra = plan.skipped, plan.extra
    counts.skip_reasons = dict(plan.skip_reasons)
    log.info("plan: %d uploads (%d bytes), %d unchanged, %d extra", plan.uploads,
             plan.upload_bytes, plan.skipped, plan.extra)
    if cfg.dry_run:
        notes.append(f"dry run: {plan.uploads} upload(s) of {plan.upload_bytes} bytes planned, "
                     "nothing sent")
        if on_plan_item:
            for item in journal.iter_plan(run_id):
                on_plan_item(item)
        return notes

    with ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="part") as part_pool:
        uploader = Uploader(cfg, journal, run_id, clients, part_pool)
        _abort_orphans(journal, uploader)
        work = run_workers(journal, run_id, uploader.upload, cfg.workers)
    counts.uploaded, counts.bytes = work.uploaded, work.bytes
    counts.failed += work.failed
    if work.fatal:
        raise FatalRemoteError(f"stopped: {work.fatal}")
    return notes


def _abort_orphans(journal: Journal, uploader: Uploader) -> None:
    """Abort multipart uploads an earlier, killed run left open, so they stop accruing
    storage charges. (They were journaled before their first part was sent.)"""
    for rec in journal.active_uploads():
        try:
            uploader.abort(rec.key, rec.upload_id)
            log.info("aborted multipart upload left by run %d: %s", rec.run_id, rec.key)
        except Exception as exc:  # noqa: BLE001 - try again next run
            log.warning("could not abort upload %s of %s: %s", rec.upload_id, rec.key, describe(exc))
