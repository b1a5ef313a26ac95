"""`journalsync status --all`: every job of a PostgreSQL journal database (or every journal
of the state directory) on one screen: its binding, its last run, its failures and the
workers of that run, with their speed and how long ago each was last heard from.

Read-only, like every status view: the jobs are found by the catalogs (catalog.py,
pgcatalog.py), each job at the current schema revision is opened with
Journal(read_only=True) (the server refuses any write), and a job at another revision is
shown from what the catalog read, with its note, never migrated.
"""

from __future__ import annotations

import time

from journalsync import report
from journalsync.journal.catalog import JournalInfo
from journalsync.journal.location import PgLocation
from journalsync.journal.migrate import HEAD_REVISION
from journalsync.journals import endpoint_name

_LAST_RUN_FIELDS = ("id", "state", "dry_run", "started_at", "finished_at", "elapsed", "resumed",
                    "scanned", "uploaded", "skipped", "deleted", "failed", "bytes", "error")


def fleet_data(infos: list[JournalInfo], where: str, failures: int = 0, lease: float = 30.0,
               now: float | None = None) -> dict:
    """The --json form: journal (the database, password left out, or the state directory),
    lease (what "stale" was measured against) and jobs (see job_view)."""
    now = time.time() if now is None else now
    return {"journal": where, "lease": lease,
            "jobs": [job_view(info, failures, lease, now) for info in infos]}


def job_view(info: JournalInfo, failures: int, lease: float, now: float) -> dict:
    """One job: job (its name in PostgreSQL, else null), journal, source, destination,
    endpoint, schema, note, problem, last_run (id, state, started_at, finished_at, elapsed,
    counts, error) or null, failures (count in the last run), failure_lines (the first
    `failures` of them), chunks (by state), workers (see worker_view) and shared_uploads
    (the part units of each shared upload in flight: key, upload_id, size, units_done,
    units_total, bytes_journaled, holders (host, pid, units, lease_expired))."""
    pg = isinstance(info.path, PgLocation)
    view = {"job": info.path.job if pg else None,
            "journal": info.path.redacted if pg else str(info.path),
            "source": info.source, "destination": info.dest, "endpoint": info.endpoint,
            "schema": info.revision, "note": info.note, "problem": info.problem,
            "last_run": info.last_run, "failures": None, "failure_lines": [], "chunks": {},
            "workers": [], "shared_uploads": []}
    if info.problem or info.revision != HEAD_REVISION or info.last_run is None:
        return view  # older or newer: only what every revision has, read by the catalog
    problem = _read_live(view, info, failures, lease, now)
    if problem and not pg and info.path.with_name(info.path.name + "-wal").exists():
        # A run began while an `immutable` read went on (store._read_only_sqlite): what it
        # read may be torn; read again the ordinary way, as catalog.read_info does.
        problem = _read_live(view, info, failures, lease, now)
    view["problem"] = problem
    return view


def _read_live(view: dict, info: JournalInfo, failures: int, lease: float,
               now: float) -> str | None:
    """Fill `view` from the journal itself; returns why it could not be read, if so."""
    from journalsync.journal import Journal
    from journalsync.journal.health import is_journal_failure, journal_error

    try:
        with Journal(info.path, read_only=True) as journal:
            view.update(_live(journal, failures, lease, now))
        return None
    except Exception as exc:  # went away or became unreadable since the catalog looked
        if not is_journal_failure(exc):
            raise
        problem = str(journal_error(exc, info.path))
        if "permission denied" in problem.lower():  # not the writer's hint (CREATE)
            problem = (" ".join(str(getattr(exc, "orig", exc)).split()) + ": status needs "
                       "USAGE on the job's schema and SELECT on its tables")
        return problem


def _live(journal, failures: int, lease: float, now: float) -> dict:
    recent = [report.run_view(row) for row in journal.recent_runs(1)]
    report.show_dead_runs(journal, recent)
    if not recent:
        return {}
    last = recent[0]
    if journal.shared:
        now = journal.clock()  # heartbeats are kept by the database's clock
    lines = []
    if failures:
        lines = [{"what": f["path"], "phase": "scan", "attempts": None, "error": f["reason"]}
                 for f in journal.file_errors(last["id"], failures)]
        lines += [{"what": f["key"], "phase": f["action"], "attempts": f["attempts"],
                   "error": f["error"]}
                  for f in journal.failed_items(last["id"], failures - len(lines))]
    return {"last_run": {name: last.get(name) for name in _LAST_RUN_FIELDS},
            "failures": journal.failure_count(last["id"]), "failure_lines": lines[:failures],
            "chunks": journal.chunk_counts(last["id"]),
            "workers": [report.worker_view(w, lease, now)
                        for w in journal.run_workers_rows(last["id"])],
            "shared_uploads": [{"key": u["key"], "upload_id": u["upload_id"],
                                "size": u["size"], **u["units"]}
                               for u in report.in_flight(journal) if u["units"]]}


# -- text ---------------------------------------------------------------------------------

def render(data: dict) -> list[str]:
    """The text form: a block per job, whole paths and URLs on lines of their own."""
    jobs = data["jobs"]
    lines = [f"{data['journal']}: {len(jobs)} job(s)" if jobs else
             f"{data['journal']}: no jobs (a run keeps its journal there)"]
    for job in jobs:
        lines += _job_lines(job, data["lease"])
    return lines


def _job_lines(job: dict, lease: float) -> list[str]:
    head = f"job {job['job']}" if job["job"] else job["journal"]
    lines = ["", head]
    if job["source"] is not None:
        lines.append(f"    {job['source']} -> {job['destination']} at "
                     f"{endpoint_name(job['endpoint'])}")
    if job["problem"]:
        return lines + [f"    {job['problem']}"]
    if job["note"]:
        lines.append(f"    {job['note']}")
    run = job["last_run"]
    if run is None:
        return lines + ["    no runs yet"]
    lines.append("    last " + _run_text(run))
    if run.get("error"):
        lines.append(f"    stopped: {run['error']}")
    if job["failures"]:
        lines.append(f"    failures: {job['failures']}")
        lines += [f"      {line['phase']} {report.shown(line['what'])}: {line['error'] or ''}"
                  for line in job["failure_lines"]]
    workers = job["workers"]
    if workers:
        stale = sum(w["stale"] for w in workers)
        lines.append(f"    workers: {len(workers)}" + (f" ({stale} stale)" if stale else ""))
        lines += [_worker_text(w, lease) for w in workers]
    for up in job.get("shared_uploads", ()):
        lines.append(f"    shared upload {report.shown(up['key'])}: "
                     f"{up['bytes_journaled']} of {up['size']} bytes journaled, "
                     + report.units_text(up))
    return lines


def _run_text(run: dict) -> str:
    """`run 3: done, started 2026-11-26 22:01:02, 1.52 s, uploaded 12, failed 0`."""
    state = run["state"] + (" (dry run)" if run.get("dry_run") else "")
    text = f"run {run['id']}: {state}, started {report.when(run['started_at'])}"
    if run.get("finished_at") is not None:
        elapsed = run.get("elapsed")
        if elapsed is None:
            elapsed = run["finished_at"] - run["started_at"]
        text += f", {elapsed:.2f} s"
    else:
        text += ", not finished"
    if "uploaded" in run:
        text += f", uploaded {run['uploaded']}, failed {run['failed']}"
    return text


def _worker_text(w: dict, lease: float) -> str:
    speed = "-" if w["bytes_per_s"] is None else report.human_rate(w["bytes_per_s"])
    beat = "never" if w["heartbeat_age"] is None else report.ago(w["heartbeat_age"])
    text = (f"      {w['host']} pid {w['pid']}: {w['state']}, {w['chunks_done']} chunk(s), "
            f"{w['bytes_done']} bytes, {speed}, heartbeat {beat}")
    if w["stale"]:
        text += f"  STALE (no heartbeat for {report.STALE_LEASES} leases of {lease:g} s)"
    return text
