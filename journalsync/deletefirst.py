"""The deletes an upload needs done first, and the guard's inputs for the run's deletes
(engine.py sequences the phases; this is the part of the delete phase that can come
before the uploads)."""

from __future__ import annotations

import logging
import threading
from typing import Protocol

from journalsync.clients import ClientFactory
from journalsync.config import Config
from journalsync.guard import DeleteFacts, DeletePolicy, Verdict, check_deletes
from journalsync.journal import Journal
from journalsync.models import Action, RunCounts
from journalsync.presence import LocalPresence
from journalsync.report import FailureLines

log = logging.getLogger("journalsync")


class Run(Protocol):
    """What of engine.Run this module reads and sets (no import of engine: it imports us)."""

    cfg: Config
    journal: Journal
    run_id: int
    clients: ClientFactory
    stop: threading.Event
    counts: RunCounts
    journal_files: int
    verdict: Verdict | None
    notes: list[str]
    failures: FailureLines
    deleted_first: int


def policy(cfg: Config) -> DeletePolicy:
    return DeletePolicy(cfg.max_delete_percent, cfg.max_delete, cfg.force, cfg.allow_empty_source)


def delete_facts(run: Run, planned: int, failed_items: int = 0) -> DeleteFacts:
    """Errors: failed plan items, and every file or directory the scan could not read."""
    errors = failed_items + run.journal.scan_failures(run.run_id, include_dirs=True)
    return DeleteFacts(planned=planned, remote_total=run.journal.remote_total(run.run_id),
                       scanned=run.counts.scanned, journal_files=run.journal_files,
                       errors=errors)


def conflicting_deletes(run: Run) -> set[int]:
    """Ids of the pending deletes in the way of a pending upload (Journal.upload_conflicts)."""
    ids: set[int] = set()
    after = 0
    while batch := run.journal.claim_batch(run.run_id, after, 1000, Action.DELETE):
        after = batch[-1].id
        conflicts = run.journal.upload_conflicts(run.run_id, [item.key for item in batch])
        ids.update(item.id for item in batch if item.key in conflicts)
    return ids


def deletes_first(run: Run) -> None:
    """Deletes wait for the uploads, but not those an upload needs done first. A store over
    a filesystem (rclone serve s3, MinIO) cannot hold an object `a` beside objects under
    `a/`: a directory `a` replaced by a file `a` (or the reverse) fails that upload while
    the old objects stand, and a failed upload keeps every delete back, so the run never
    converged. Such deletes (an extra under a planned upload's key + `/`, or an extra
    that is a directory of one) go first, and only once the guard has passed the run's
    whole delete set. A refusal deletes nothing, stands as the run's verdict (the delete
    phase does not ask again), and the uploads go on."""
    cfg = run.cfg
    totals = run.journal.transfer_totals(run.run_id)
    pending = totals["pending_deletes"]
    if not (cfg.delete and pending and totals["pending_uploads"]):
        return
    first = conflicting_deletes(run)
    if not first:
        return
    run.verdict = check_deletes(delete_facts(run, pending), policy(cfg))
    if not run.verdict.allowed:
        run.notes.append(f"deletes refused, nothing deleted: {run.verdict.reason}")
        return
    from journalsync.deleter import Deleter, run_deletes  # only when deletes are allowed

    log.info("deleting %d extra object(s) in the way of uploads first: %s", len(first),
             run.verdict.reason)
    back = run_deletes(run.journal, run.run_id, Deleter(cfg, run.clients), run.stop,
                       LocalPresence(cfg.source), run.failures, only=first)
    run.deleted_first = run.journal.transfer_totals(run.run_id)["deleted"]
    if back:
        run.notes.append(f"{back} planned delete(s) not done: the file exists again")
