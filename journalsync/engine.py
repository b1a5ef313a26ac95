"""One sync run: scan -> manifest -> plan -> uploads -> guarded deletes, all journaled.

This module only sequences the phases and turns their outcomes into counts and an exit
code; each phase lives in its own module and talks to the journal itself.

`--resume` continues the last run only if it was interrupted (a signal, a kill, an
expired token) after its plan was stored, and only while that plan is younger than
--resume-max-age (12 h): it skips scan, LIST and plan, and executes the plan rows still
pending or failed. Anything else (a run that ended on a fatal error, an old plan) is planned
afresh, which still continues the journaled multipart uploads of unchanged files.

A stored plan is a list of intentions, not of facts. Every upload opens and checks the file
it sends; every delete looks for the file again just before it (presence.py); and a resumed
run with deletes pending scans and LISTs again first, cancels the deletes whose file is
back or whose object changed, and asks the guard again on the fresh counts.

The phases most runs never reach (--adopt-metadata's copies, the deletes) are imported where
they start, not here: every run, a no-op above all, pays for what this module imports
(tests/integration/test_startup_noop.py).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from journalsync import manifest, rewrites
from journalsync.chunkwork import work_chunks
from journalsync.cleanup import reconcile
from journalsync.clients import ClientFactory
from journalsync.config import Config
from journalsync.errors import (
    ConfigError,
    ExitCode,
    FatalRemoteError,
    Interrupted,
    JournalsyncError,
    UsageError,
)
from journalsync.deletefirst import conflicting_deletes, delete_facts, deletes_first, policy
from journalsync.guard import Verdict, check_deletes
from journalsync.journal import Journal
from journalsync.journal.health import is_journal_failure, journal_error, journal_errors
from journalsync.lock import run_lock
from journalsync.models import PlanItem, RunCounts
from journalsync.plan import build_plan, plan_new_uploads
from journalsync.presence import LocalPresence
from journalsync.process import release_large_buffers, settle_gc
from journalsync.report import FailureLines
from journalsync.retry import config_reason, describe, whole_run_error
from journalsync.scan import scan
from journalsync.signals import SIGNAL_EXIT, stop_on_signals
from journalsync.transfer import Uploader, stamp_leftovers
from journalsync.workers import thread_pool

log = logging.getLogger("journalsync")


@dataclass(slots=True)
class RunOutcome:
    run_id: int
    counts: RunCounts
    elapsed: float
    exit_code: ExitCode
    state: str
    resumed: int = 0  # times this run was resumed (--resume), as `status` shows it
    notes: list[str] = field(default_factory=list)
    verdict: Verdict | None = None  # the delete guard's, when --delete was given
    # A second signal stopped the run at once: threads may still be sending; the caller
    # ends the process (os._exit) after its report instead of waiting for them.
    left_in_flight: bool = False


@dataclass(slots=True)
class Run:
    """What the phases of one run share."""

    cfg: Config
    journal: Journal
    run_id: int
    counts: RunCounts
    stop: threading.Event
    clients: ClientFactory | None = None
    notes: list[str] = field(default_factory=list)
    resumed: bool = False
    view: object | None = None  # progress.ProgressView on a terminal
    journal_files: int = 0  # files the journal remembered before this run's scan
    verdict: Verdict | None = None
    head_refused: set[str] = field(default_factory=set)  # keys whose HEAD the store refused
    failed_deletes: int = 0  # in `extra` (the objects remain), not in counts.failed
    failures: FailureLines = field(default_factory=FailureLines)  # one stderr line each
    deleted_first: int = 0  # deletes done before the uploads (deletes_first)


def check_source(cfg: Config) -> None:
    problem = None
    try:
        os.stat(cfg.source)
    except FileNotFoundError:
        problem = f"source {cfg.source} does not exist"
    except OSError as exc:  # a symlink loop, a path through a file, a dead mount
        problem = f"source {cfg.source}: {exc.strerror or exc}"
    if problem is None and not cfg.source.is_dir():
        problem = f"source {cfg.source} is not a directory"
    if problem and cfg.delete:
        raise JournalsyncError(f"{problem}; refusing a run with --delete (an unmounted disk?)",
                               ExitCode.GUARD)
    if problem:
        raise UsageError(problem)


def run_sync(cfg: Config, on_plan_item: Callable[[PlanItem], None] | None = None,
             view=None) -> RunOutcome:
    """Run (or resume) one sync. Raises UsageError / FatalRemoteError for errors that stop
    the run; per-file failures are counted and journaled, never raised."""
    check_source(cfg)
    release_large_buffers()
    started = time.monotonic()
    stop = threading.Event()
    with journal_errors(cfg.journal_path), run_lock(cfg.journal_path), \
            Journal(cfg.journal_path) as journal, stop_on_signals(stop) as signals:
        run = _open_run(cfg, journal, stop)
        run.view = view
        try:
            state = _execute(run, on_plan_item)
        finally:
            run.failures.close()
        signals.armed = False
        received = signals.received
        if received:
            state = "interrupted"
        journal.finish_run(run.run_id, state, run.counts,
                           "interrupted by a signal" if received else None)
        journal.housekeep(run.run_id, cfg.keep_runs)
        journal.prune_chunks()
        # One measure for the summary and for status: this try's seconds, added to the
        # run's (a resumed run reports its tries summed, as it does its counts).
        timing = journal.add_elapsed(run.run_id, time.monotonic() - started)
    if received:
        run.notes.append("stopped by a signal; `journalsync run --resume` continues")
    if run.counts.vanished:
        run.notes.append(f"{run.counts.vanished} planned file(s) vanished before their upload; "
                         "not uploaded, not failed")
    if run.failed_deletes:
        run.notes.append(f"{run.failed_deletes} delete(s) failed; their objects remain, in "
                         "`extra` (journalsync status --failed)")
    return RunOutcome(run.run_id, run.counts, timing["elapsed"],
                      _exit_code(run, received), state, timing["resumed"], run.notes, run.verdict,
                      left_in_flight=signals.hurried)


def _open_run(cfg: Config, journal: Journal, stop: threading.Event) -> Run:
    _check_binding(cfg, journal)
    journal.bind_job(str(cfg.source), str(cfg.dest), cfg.endpoint_url)
    journal.mark_abandoned_runs()
    previous, why_not = _resumable(cfg, journal) if cfg.resume and not cfg.dry_run else (None, None)
    if previous:
        log.info("resuming run %d", previous["id"])
        journal.reopen_run(previous["id"])
        return Run(cfg, journal, previous["id"], journal.plan_counts(previous["id"]), stop,
                   resumed=True)
    run_id = journal.start_run(str(cfg.source), str(cfg.dest), cfg.endpoint_url, cfg.dry_run)
    return Run(cfg, journal, run_id, RunCounts(), stop, notes=[why_not] if why_not else [])


def _check_binding(cfg: Config, journal: Journal) -> None:
    """A journal serves one (source, destination, endpoint): refuse to mix two jobs. With
    --endpoint-moved, the same store reached at a new URL keeps its journal."""
    other = journal.binding_conflict(str(cfg.source), str(cfg.dest), cfg.endpoint_url)
    if not other:
        return
    same_job = other["source"] == str(cfg.source) and other["dest"] == str(cfg.dest)
    if same_job and cfg.endpoint_moved:
        journal.rebind_endpoint(cfg.endpoint_url)
        log.info("journal rebound from %s to %s (--endpoint-moved)", other["endpoint"] or "AWS",
                 cfg.endpoint_url or "AWS")
        return
    hint = (" (or --endpoint-moved if the same store is now reached at this URL)"
            if same_job else "")
    raise UsageError(
        f"journal {cfg.journal_path} belongs to {other['source']} -> {other['dest']} at "
        f"{other['endpoint'] or 'AWS'}, not to {cfg.source} -> {cfg.dest} at "
        f"{cfg.endpoint_url or 'AWS'}; give this job its own --journal{hint}")


def _resumable(cfg: Config, journal: Journal) -> tuple[dict | None, str | None]:
    """The run --resume may continue, or None and why not (None when there is no run to
    continue at all: a finished last run is no news)."""
    last = journal.last_real_run()
    if last is None or not last["planned_at"] or last["state"] not in ("interrupted", "failed"):
        return None, None
    if last["state"] == "failed":
        return None, (f"--resume: run {last['id']} ended on an error ({last['error']}); "
                      "planned afresh")
    age = time.time() - last["planned_at"]
    if age > cfg.resume_max_age:
        return None, (f"--resume: run {last['id']}'s plan is {age / 3600:.1f} h old, over "
                      f"--resume-max-age {cfg.resume_max_age / 3600:g} h; planned afresh")
    return last, None


def _exit_code(run: Run, received: list[int]) -> ExitCode:
    if received:
        return SIGNAL_EXIT[received[0]]
    if run.verdict is not None and not run.verdict.allowed and run.verdict.exit_code != ExitCode.OK:
        return run.verdict.exit_code  # 3 for a guard limit; 1 when errors (an unreadable
        # directory counts none in `failed`) kept the deletes back
    return ExitCode.OK if run.counts.failed + run.failed_deletes == 0 else ExitCode.PARTIAL


def _execute(run: Run, on_plan_item: Callable[[PlanItem], None] | None) -> str:
    """Run the phases, recording a stopped run before re-raising what stopped it."""
    cfg = run.cfg
    try:
        run.clients = _clients(cfg)
        settle_gc()  # start-up is over (cli.main turned the collector off)
        _remote("cannot list", cfg, lambda: manifest.check_bucket(run.clients, cfg))
        if not run.resumed:
            if not cfg.dry_run:
                _remote("cannot stamp in", cfg, lambda: stamp_leftovers(
                    cfg, run.journal, run.run_id, run.clients, run.stop))
            _scan_and_plan(run, on_plan_item)
        if not cfg.dry_run:
            if not run.resumed:
                deletes_first(run)
            _transfer(run)
            _final_counts(run)
            if cfg.adopt_metadata:
                _adopt_metadata(run)
            _delete_phase(run)
    except Interrupted:
        _final_counts(run)
        return "interrupted"
    except (FatalRemoteError, ConfigError) as exc:
        _record_stop(run, "interrupted" if getattr(exc, "resumable", False) else "failed", str(exc))
        raise
    except BaseException as exc:
        # A journal failure is journaled (if the journal still takes it) as the one line the
        # user sees, not as the driver's text with its SQL.
        _record_stop(run, "failed", str(journal_error(exc, run.cfg.journal_path))
                     if is_journal_failure(exc) else describe(exc))
        raise
    _final_counts(run)
    return "done" if run.counts.failed + run.failed_deletes == 0 and (run.verdict is None or run.verdict.allowed) else "partial"


def _record_stop(run: Run, state: str, error: str) -> None:
    """Journal how the run ended. If the journal itself is what failed, this fails too:
    then the original error, not this one, is what the user must see."""
    try:
        _final_counts(run)
        run.journal.finish_run(run.run_id, state, run.counts, error)
    except Exception as exc:  # noqa: BLE001 - the error being raised matters more
        log.debug("could not record the end of run %d: %s", run.run_id, exc)


def _clients(cfg: Config) -> ClientFactory:
    try:
        return ClientFactory(cfg)
    except Exception as exc:
        reason = config_reason(exc)
        if reason is None:
            raise
        raise ConfigError(reason) from exc


def _remote(what: str, cfg: Config, fn: Callable[[], object]) -> object:
    """Run a whole-run remote step; any error it cannot retry away ends the run in one
    line (retry.whole_run_error: exit 4, or 6 when the local setup is at fault)."""
    try:
        return fn()
    except Interrupted:
        raise
    except Exception as exc:  # noqa: BLE001 - mapped to one line and its exit code
        mapped = whole_run_error(f"{what} {cfg.dest} at {cfg.endpoint_url or 'AWS'}", exc)
        if mapped is None:
            raise
        raise mapped from exc


def _scan_and_plan(run: Run, on_plan_item: Callable[[PlanItem], None] | None) -> None:
    cfg, journal, counts = run.cfg, run.journal, run.counts
    t = time.monotonic()
    listed = _scan_and_list(run, _must_list(run))
    _refuse_rewritten(run)
    _remote("cannot read object metadata in", cfg,
            lambda: manifest.fill_hashes(run.clients, cfg, journal, listed))
    run.head_refused = listed.refused
    counts.adopted += sum(listed.adopted.values())
    log.info("manifest: %d objects in %d pages, %d staged, %d HEADs, %.2fs since the scan began",
             listed.listed, listed.pages, listed.staged, listed.heads, time.monotonic() - t)

    plan = build_plan(journal, run.run_id, cfg)
    if run.stop.is_set():
        raise Interrupted("stopped while planning")
    counts.skipped, counts.extra = plan.skipped, plan.extra
    counts.skip_reasons = dict(plan.skip_reasons)
    journal.save_plan_counts(run.run_id, counts, plan.remote_total)
    log.info("plan: %d uploads (%d bytes), %d unchanged, %d extra, %d deletes", plan.uploads,
             plan.upload_bytes, plan.skipped, plan.extra, plan.deletes)
    if cfg.dry_run:
        _dry_run_report(run, plan, on_plan_item)


def _scan_and_list(run: Run, must_list: bool) -> manifest.ManifestStats:
    """Scan the source into the journal with the LIST (network) beside it (disk). The walk
    overlaps the LIST; the hashing waits for it (adopt.py: a file is read once, knowing
    its object's ETag). Sets the scan's counts and notes."""
    cfg, journal, counts = run.cfg, run.journal, run.counts
    run.journal_files = journal.count_files()
    if run.view:
        run.view.phase("scanning and listing")
    t = time.monotonic()
    with thread_pool(1, "list") as lister:
        listing = lister.submit(_list, run) if must_list else None
        try:
            scanned = scan(cfg.source, cfg.dest, journal, run.run_id, min(4, cfg.workers),
                           run.stop, cfg.key_filter,
                           before_hash=listing.result if listing else None)
        except BaseException:
            run.stop.set()  # let the LIST stop at its next page
            raise
        log.info("scan: %d files, %d staged, %d hashed (%d bytes), %d failed, %d symlinks not "
                 "followed, %.2fs", scanned.scanned, scanned.staged, scanned.hashed,
                 scanned.hashed_bytes, scanned.failed, scanned.symlinks, time.monotonic() - t)
        listed = listing.result() if listing else manifest.ManifestStats()
    # An unreadable directory is one entry of the source the run could not back up: it is
    # scanned, and failed (so `failed` is what `status --failed` lists and the guard counts).
    counts.scanned = scanned.scanned + scanned.failed_dirs
    counts.symlinks, counts.special = scanned.symlinks, scanned.special
    counts.adopted += sum(scanned.adopted.values())
    if scanned.symlinks:
        run.notes.append(f"{scanned.symlinks} symlink(s) not followed")
    if scanned.special:
        run.notes.append(f"{scanned.special} special file(s) (FIFO, socket, device) not backed up")
    return listed


def _refuse_rewritten(run: Run) -> None:
    """Files whose key the store keeps under another name fail (rewrites.py)."""
    refused = _remote("cannot read object metadata in", run.cfg, lambda: rewrites.refuse_rewritten(
        run.clients, run.cfg, run.journal, run.run_id))
    if refused:
        run.notes.append(f"{refused} file(s) refused: the store keeps their keys under other "
                         "names (journalsync status --failed)")
    for row in run.journal.file_errors(run.run_id):
        run.failures.add(row["path"], row["reason"])


def _must_list(run: Run) -> bool:
    """LIST unless --manifest-max-age trusts a listing recent enough."""
    if run.cfg.manifest_max_age is None:
        return True
    age = run.journal.last_listing_age()
    if age is None or age > run.cfg.manifest_max_age:
        return True
    log.info("trusting the cached manifest from %.0fs ago (--manifest-max-age)", age)
    run.notes.append(f"no LIST: trusted the manifest cached {age:.0f}s ago")
    return False


def _list(run: Run) -> manifest.ManifestStats:
    return _remote("cannot list", run.cfg, lambda: manifest.refresh(
        run.clients, run.cfg, run.journal, run.run_id, run.stop))


def _dry_run_report(run: Run, plan, on_plan_item) -> None:
    run.notes.append(f"dry run: {plan.uploads} upload(s) of {plan.upload_bytes} bytes and "
                     f"{plan.deletes} delete(s) planned, nothing sent")
    for item in run.journal.iter_plan(run.run_id) if on_plan_item else ():
        on_plan_item(item)
    if run.cfg.delete:
        run.verdict = check_deletes(delete_facts(run, plan.deletes), policy(run.cfg))
        first = len(conflicting_deletes(run))
        if first:
            run.notes.append(f"dry run: {first} of the deletes would go before the uploads, "
                             "their keys being in the way of uploads (if the guard passes)")


def _transfer(run: Run) -> None:
    cfg = run.cfg
    with thread_pool(cfg.workers, "part") as part_pool:
        uploader = Uploader(cfg, run.journal, run.run_id, run.clients, part_pool, run.stop,
                            run.head_refused)
        aborted = _remote("cannot list incomplete uploads in", cfg, lambda: reconcile(
            run.journal, run.run_id, uploader.multipart, run.clients, cfg))
        if aborted:
            log.info("aborted %d incomplete upload(s) this run will not continue", aborted)
        made = run.journal.make_chunks(run.run_id, cfg.chunk_files, cfg.chunk_bytes)
        if made:
            log.info("plan: %d chunk(s) for workers (`journalsync worker`)", made)
        on_result = None
        if run.view:
            files, size = run.journal.pending_uploads(run.run_id)
            run.view.backoff = run.clients.backoff
            run.view.uploads(files, size)
            on_result = run.view.on_result
        # The run works like any worker, then waits for the chunks others hold (claiming
        # any whose lease expires): only then may the delete phase run, alone.
        stopped = work_chunks(run.journal, run.run_id, uploader.upload, cfg.workers,
                              run.journal.register_worker(run.run_id), lease=cfg.lease,
                              stop=run.stop, wait_for_all=True, on_result=on_result,
                              failures=run.failures,
                              shared=uploader.shared if run.journal.shared else None)
    if stopped:
        raise FatalRemoteError(f"stopped: {stopped.reason}", resumable=stopped.resumable)
    if run.stop.is_set():
        raise Interrupted("stopped by a signal")


def _adopt_metadata(run: Run) -> None:
    """--adopt-metadata: our metadata onto adopted objects (adoptcopy.py). A failed copy is
    a warning for its object (logged there) and a note here, never a failed run."""
    from journalsync import adoptcopy  # only with --adopt-metadata

    stats = _remote("cannot write metadata in", run.cfg, lambda: adoptcopy.write_metadata(
        run.clients, run.cfg, run.journal, run.run_id, run.stop))
    if stats.copied or stats.already:
        log.info("--adopt-metadata: %d object(s) now carry sha256 metadata (%d had it)",
                 stats.copied + stats.already, stats.already)
    if stats.left:
        run.notes.append(f"--adopt-metadata: {stats.left} adopted object(s) left alone: a copy "
                         "would not keep their Object Lock, Expires, redirect or ACL (-v lists them)")
    if stats.failed:
        run.notes.append(f"--adopt-metadata: {stats.failed} adopted object(s) could not be "
                         "rewritten with sha256 metadata; they stay adopted, verify skips them")


def _delete_phase(run: Run) -> None:
    """After every upload: ask the guard, then delete the planned extras, or nothing. The
    guard's refusal before the uploads (deletes_first) stands: nothing more is deleted."""
    if run.verdict is not None and not run.verdict.allowed:
        return
    totals = run.journal.transfer_totals(run.run_id)
    pending = totals["pending_deletes"]
    if not pending:
        return
    if not run.cfg.delete:
        run.notes.append(f"{pending} planned delete(s) not done: --delete was not given")
        return
    if run.resumed:
        _refresh_resumed_plan(run)
        totals = run.journal.transfer_totals(run.run_id)
        pending = totals["pending_deletes"]
        if not pending:
            return
    # The deletes done first were of the set the guard passed; it is judged whole again.
    run.verdict = check_deletes(delete_facts(run, pending + run.deleted_first, totals["failed"]),
                                policy(run.cfg))
    if not run.verdict.allowed:
        run.notes.append(f"deletes refused, nothing deleted: {run.verdict.reason}")
        return
    from journalsync.deleter import Deleter, run_deletes  # only when deletes are allowed

    log.info("deleting %d extra object(s): %s", pending, run.verdict.reason)
    back = run_deletes(run.journal, run.run_id, Deleter(run.cfg, run.clients), run.stop,
                       LocalPresence(run.cfg.source), run.failures)
    if back:
        run.notes.append(f"{back} planned delete(s) not done: the file exists again")


def _refresh_resumed_plan(run: Run) -> None:
    """A resumed plan's deletes were decided by an older scan and LIST. Scan and LIST again
    (this run's scan errors start afresh), cancel every delete whose file is back or whose
    object is gone or changed, and upload what the fresh look finds missing (files that
    came back, or changed) before the guard is asked on the fresh counts."""
    cfg, journal = run.cfg, run.journal
    journal.clear_file_errors(run.run_id)
    listed = _scan_and_list(run, must_list=True)
    _refuse_rewritten(run)
    _remote("cannot read object metadata in", cfg,
            lambda: manifest.fill_hashes(run.clients, cfg, journal, listed))
    run.head_refused = listed.refused
    journal.set_remote_total(run.run_id, journal.count_remote())
    for why, count in journal.revalidate_deletes(run.run_id).items():
        if count:
            run.notes.append(f"{count} stored delete(s) cancelled on resume: "
                             + ("the file exists again" if why == "back"
                                else "the object is gone or changed since the plan"))
    added = plan_new_uploads(journal, run.run_id, cfg)
    if added.uploads:
        run.notes.append(f"{added.uploads} upload(s) added on resume: files new, back or "
                         "changed since the plan")
        _transfer(run)
    _final_counts(run)


def _final_counts(run: Run) -> None:
    """Counts from the journal, so a resumed run reports everything it did across tries."""
    totals = run.journal.transfer_totals(run.run_id)
    counts = run.counts
    counts.uploaded, counts.deleted = totals["uploaded"], totals["deleted"]
    counts.bytes, counts.sent = totals["bytes"], totals["sent"]
    counts.failed = totals["failed_uploads"] + run.journal.scan_failures(run.run_id,
                                                                          include_dirs=True)
    counts.pending = totals["pending_uploads"]
    counts.vanished = totals["vanished"]
    run.failed_deletes = totals["failed_deletes"]
    gone = run.counts.deleted + totals.get("cancelled_deletes", 0)
    run.counts.extra = max(0, run.journal.plan_counts(run.run_id).extra - gone)
