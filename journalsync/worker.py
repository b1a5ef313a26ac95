"""`journalsync worker`: one more process working the chunks of a journal's active run.

It needs no job settings of its own to be correct: the run's binding (source, destination,
endpoint) is in the journal, credentials come from the standard chain, and the transfer
settings a job file gives (part size, storage class, encryption...) are read from --config
when one is given. It registers in `workers`, works chunks like the run does
(chunkwork.py), and exits when the run has no chunk left to claim and it holds none; with
--follow it then waits for the next run.

A run still planning (running, no chunks yet) is waited for while its process lives: a
worker started beside `run` must not exit just before the work appears.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

from journalsync.chunkwork import Tally, work_chunks
from journalsync.config import Config, Destination
from journalsync.errors import ConfigError, ExitCode, FatalRemoteError, UsageError
from journalsync.journal import Journal
from journalsync.lock import run_alive
from journalsync.report import FailureLines
from journalsync.signals import SIGNAL_EXIT, stop_on_signals
from journalsync.workers import thread_pool

log = logging.getLogger("journalsync")

POLL = 1.0  # seconds between looks for a run to work on


@dataclass(slots=True)
class WorkerOutcome:
    run_id: int | None
    chunks: int = 0
    bytes: int = 0
    failed: int = 0
    elapsed: float = 0.0


def run_worker(journal_path: Path, base: Config, follow: bool, source: Path | None,
               endpoint: str | None, say=print) -> int:
    """Work the active run's chunks (then the next runs', with `follow`). `base` holds the
    transfer settings; the binding comes from the run. Returns the exit code."""
    from journalsync.journal.health import journal_errors
    from journalsync.process import release_large_buffers

    release_large_buffers()
    stop = threading.Event()
    with journal_errors(journal_path), Journal(journal_path) as journal, \
            stop_on_signals(stop) as signals:
        code, done_run = ExitCode.OK, None
        while not stop.is_set():
            run = _active_run(journal, journal_path, follow, stop, after=done_run)
            if run is None:
                break
            cfg = _run_config(base, run, source, endpoint)
            outcome = _work(journal, cfg, run["id"], stop)
            say(f"journalsync: worker run={outcome.run_id} chunks={outcome.chunks} "
                f"bytes={outcome.bytes} failed={outcome.failed} elapsed={outcome.elapsed:.2f}s")
            if outcome.failed:
                code = ExitCode.PARTIAL
            done_run = run["id"]
            if not follow:
                break
        if done_run is None and not signals.received:
            say(f"journalsync: no active run in {journal_path}; nothing to do")
    if signals.received:
        return int(SIGNAL_EXIT[signals.received[0]])
    return int(code)


def _active_run(journal: Journal, path: Path, follow: bool, stop: threading.Event,
                after: int | None) -> dict | None:
    """The run to work on: running, planned and chunked. A run still planning is waited
    for while its process lives (SQLite: its run lock is held). None when there is none
    (and, with `follow`, only once stopped)."""
    while not stop.is_set():
        run = journal.active_run()
        if run is not None and run["id"] != after:
            if run["planned_at"] and sum(journal.chunk_counts(run["id"]).values()):
                return run
            if not run_alive(path):
                run = None  # its process died while planning: nothing will come of it
        elif run is not None:
            run = None  # the run just worked: wait for the next one
        if run is None and not follow:
            return None
        stop.wait(POLL)
    return None


def _run_config(base: Config, run: dict, source: Path | None, endpoint: str | None) -> Config:
    dest = Destination.parse(run["dest"])
    if base.dest is not None and str(base.dest) != str(dest):
        raise UsageError(f"the journal's active run syncs to {dest}, not to {base.dest} "
                         "(the --config job file's destination)")
    return replace(base, source=source or Path(run["source"]), dest=dest,
                   endpoint_url=endpoint or run["endpoint"]).validate()


def _work(journal: Journal, cfg: Config, run_id: int, stop: threading.Event) -> WorkerOutcome:
    from journalsync.clients import ClientFactory
    from journalsync.retry import config_reason
    from journalsync.transfer import Uploader

    started = time.monotonic()
    try:
        clients = ClientFactory(cfg)
    except Exception as exc:
        reason = config_reason(exc)
        if reason is None:
            raise
        raise ConfigError(reason) from exc
    outcome = WorkerOutcome(run_id)
    tally = Tally()
    failures = FailureLines()
    worker_id = journal.register_worker(run_id)
    log.info("worker %d: working run %d (%s -> %s)", worker_id, run_id, cfg.source, cfg.dest)
    with thread_pool(cfg.workers, "part") as part_pool:
        uploader = Uploader(cfg, journal, run_id, clients, part_pool, stop)
        stopped = work_chunks(journal, run_id, uploader.upload, cfg.workers, worker_id,
                              lease=cfg.lease, stop=stop, failures=failures, tally=tally,
                              shared=uploader.shared if journal.shared else None)
    failures.close()
    outcome.chunks, outcome.bytes, outcome.failed = tally.chunks, tally.bytes, failures.count
    outcome.elapsed = time.monotonic() - started
    if stopped:
        raise FatalRemoteError(f"stopped: {stopped.reason}", resumable=stopped.resumable)
    return outcome
