"""The plan: a merge-join of local files and remote objects by key (done in SQL), a pure
decision per key, and the actions stored as plan rows that workers execute later."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

from journalsync import rewrites
from journalsync.config import Config
from journalsync.journal import Journal
from journalsync.journal import BATCH
from journalsync.models import Action, Decision, LocalFile, RemoteObject

log = logging.getLogger(__name__)


def decide(local: LocalFile | None, remote: RemoteObject | None, cfg: Config | None = None) -> Decision:
    """What to do with one key, and why. Pure: no I/O, no clock.

    | local | remote | sizes  | hashes                 | action | reason                 |
    |-------|--------|--------|------------------------|--------|------------------------|
    | yes   | no     |        |                        | upload | new file               |
    | yes   | yes    | differ |                        | upload | size differs           |
    | yes   | yes    | equal  | remote unknown         | upload | remote hash unknown    |
    | yes   | yes    | equal  | local unknown          | upload | local hash unknown     |
    | yes   | yes    | equal  | differ                 | upload | content differs        |
    | yes   | yes    | equal  | equal                  | skip   | unchanged              |
    | no    | yes    |        | without --delete       | skip   | extra, kept            |
    | no    | yes    |        | with --delete          | delete | extra                  |

    An unknown hash is never taken as a match: when in doubt, upload. A delete planned here
    still has to pass the guard (guard.py) before it happens.
    """
    if local is None:
        if remote is None:
            raise ValueError("decide() needs a local file or a remote object")
        if cfg is not None and cfg.delete:
            return Decision(Action.DELETE, "extra: no local file, --delete given")
        return Decision(Action.SKIP, "extra: no local file, kept")
    if remote is None:
        return Decision(Action.UPLOAD, "new file")
    if local.size != remote.size:
        return Decision(Action.UPLOAD, f"size differs: local {local.size}, remote {remote.size}")
    if remote.sha256 is None:
        return Decision(Action.UPLOAD, "remote hash unknown: no sha256 metadata")
    if local.sha256 is None:
        return Decision(Action.UPLOAD, "local hash unknown")
    if local.sha256 != remote.sha256:
        return Decision(Action.UPLOAD, "content differs: sha256 mismatch")
    return Decision(Action.SKIP, "unchanged: size and sha256 match")


UNCHANGED_REASON = decide(LocalFile("k", "k", 1, 0, 0, 0, "0" * 64),
                          RemoteObject("k", 1, None, "0" * 64)).reason


@dataclass(slots=True)
class PlanSummary:
    uploads: int = 0
    upload_bytes: int = 0
    skipped: int = 0
    extra: int = 0  # objects under the prefix with no local file
    deletes: int = 0  # of those, planned for deletion (--delete)
    remote_total: int = 0
    skip_reasons: Counter = field(default_factory=Counter)


class _PlanWriter:
    """Collects plan rows and stores them a batch at a time."""

    def __init__(self, journal: Journal, run_id: int):
        self.journal, self.run_id, self.rows = journal, run_id, []

    def add(self, key: str, decision: Decision, size: int | None, sha256: str | None,
            etag: str | None = None) -> None:
        self.rows.append({"key": key, "action": decision.action.value, "reason": decision.reason,
                          "size": size, "sha256": sha256, "etag": etag})
        if len(self.rows) >= BATCH:
            self.flush()

    def flush(self) -> None:
        self.journal.add_plan_items(self.run_id, self.rows)
        self.rows = []


def build_plan(journal: Journal, run_id: int, cfg: Config | None = None) -> PlanSummary:
    """Decide every local file against its remote object, then every extra object, and
    store the actions as rows (uploads first, so deletes come after them). Skips are
    counted by reason rather than stored: a nightly run over a million unchanged files
    writes no million rows."""
    summary = PlanSummary()
    writer = _PlanWriter(journal, run_id)
    # The unchanged files, usually nearly all of them, are counted in SQL; decide() sees
    # the rest. The SQL condition is decide()'s own skip case (checked by a unit test).
    unchanged = journal.count_unchanged()
    if unchanged:
        summary.skipped += unchanged
        summary.skip_reasons[UNCHANGED_REASON] += unchanged
    summary.remote_total = journal.count_remote()
    # Each unchanged file is paired with one object: when they are all the readable files,
    # nothing is left to upload; when they are all the objects, there is no extra. A no-op
    # then makes one join, not three (at a million files each join costs about a second).
    if unchanged < journal.count_readable_files():
        _plan_uploads(journal.iter_plan_inputs(changed_only=True), cfg, summary, writer)
    if unchanged < summary.remote_total:
        _plan_extras(journal, cfg, summary, writer)
    writer.flush()
    return summary


def plan_new_uploads(journal: Journal, run_id: int, cfg: Config | None = None) -> PlanSummary:
    """Add to a run's stored plan the uploads a fresh scan and LIST call for and the plan
    does not hold yet (files that came back or changed since it was made). Keys it holds an
    upload for, done or failed, keep their rows: one upload outcome per key and run."""
    summary = PlanSummary()
    writer = _PlanWriter(journal, run_id)
    _plan_uploads(journal.iter_plan_inputs(changed_only=True, unplanned_in=run_id), cfg,
                  summary, writer)
    return summary


def _plan_uploads(inputs, cfg: Config | None, summary: PlanSummary, writer: _PlanWriter) -> None:
    for local, remote in inputs:
        decision = decide(local, remote, cfg)
        log.debug("%s %s (%s)", decision.action.value, local.key, decision.reason)
        if decision.action is Action.SKIP:
            summary.skipped += 1
            summary.skip_reasons[decision.reason] += 1
            continue
        summary.uploads += 1
        summary.upload_bytes += local.size or 0
        writer.add(local.key, decision, local.size, local.sha256)
    writer.flush()


def _plan_extras(journal: Journal, cfg: Config | None, summary: PlanSummary,
                 writer: _PlanWriter) -> None:
    """Every object with no local file, unless the filters leave it out or it may be a
    local file's object under the name a store that rewrites keys gave it (rewrites.py)."""
    key_filter = cfg.key_filter if cfg is not None else None
    kept: set[str] | None = None
    for remote in journal.iter_extras():
        if key_filter is not None and not key_filter.selected(remote.key):
            continue  # excluded: never an extra, never deleted
        if kept is None:  # only a run that has extras pays for this query
            kept = rewrites.shadowed(journal, cfg.dest) if cfg is not None else set()
        if remote.key in kept:
            log.info("kept %s: a local file's key may be stored under this name", remote.key)
            continue
        summary.extra += 1
        decision = decide(None, remote, cfg)
        if decision.action is Action.DELETE:
            summary.deletes += 1
            writer.add(remote.key, decision, remote.size, remote.sha256, remote.etag)
