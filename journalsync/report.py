"""Reporting: the one-line summary, its JSON twin, and the `status` view. Read-only.

Imported by the CLI for every command, `--help` included, so it imports neither the
journal (SQLAlchemy) nor rich at its top: status_data is handed an open Journal, and only
the status views import rich's Table.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import asdict
from typing import TYPE_CHECKING

from journalsync.models import PlanItem, RunCounts

if TYPE_CHECKING:
    from rich.console import Console

    from journalsync.journal import Journal

log = logging.getLogger("journalsync")

# The columns of a run in `status` (the journal's runs table keeps these).
SUMMARY_FIELDS = ("scanned", "uploaded", "skipped", "deleted", "extra", "failed", "bytes")
# The summary line's fields. They obey, in every run (fresh, resumed, dry, stopped):
#   scanned = uploaded + skipped + failed + vanished + pending
LINE_FIELDS = ("scanned", "uploaded", "skipped", "failed", "vanished", "pending", "deleted",
               "extra", "bytes", "sent")


def summary_line(counts: RunCounts, elapsed: float) -> str:
    """`journalsync: scanned=N uploaded=N skipped=N failed=N vanished=N pending=N deleted=N
    extra=N bytes=N sent=N elapsed=S.SSs`. scanned = uploaded + skipped + failed + vanished
    + pending. `extra` counts objects under the prefix with no local file that are still
    there (all of them without --delete); `bytes` the file bytes uploaded, `sent` the bytes
    sent for them, retries included. `adopted=N` (when N > 0) counts the skipped objects
    another tool wrote that this run proved hold their file's bytes (adopt.py)."""
    fields = " ".join(f"{name}={getattr(counts, name)}" for name in LINE_FIELDS)
    if counts.adopted:  # only in a run that adopted objects: the usual line stays as it was
        fields += f" adopted={counts.adopted}"
    return f"journalsync: {fields} elapsed={elapsed:.2f}s"


def summary_json(counts: RunCounts, elapsed: float, **extra) -> str:
    data = {name: getattr(counts, name) for name in LINE_FIELDS}
    data.update(elapsed=round(elapsed, 3), symlinks=counts.symlinks, special=counts.special,
                adopted=counts.adopted,
                skip_reasons=counts.skip_reasons, **extra)
    return json.dumps(data, sort_keys=False)


FAILURE_LINES = 20  # lines a run prints for its failures; the rest is one line


class FailureLines:
    """Every failure of a run, scan or transfer, as one warning line on stderr, up to a cap
    (cron mail stays readable with 10,000 vanished files); close() prints how many more
    there were and where to see them. Thread-safe: workers report from their results."""

    def __init__(self, cap: int = FAILURE_LINES):
        self.cap = cap
        self.count = 0
        self._lock = threading.Lock()

    def add(self, what: str, reason: str, verb: str = "failed") -> None:
        with self._lock:
            self.count += 1
            shown_now = self.count <= self.cap
        if shown_now:
            log.warning("%s: %s: %s", verb, shown(what), reason)

    def close(self) -> None:
        """`… and N more: journalsync status --failed`, when lines were held back."""
        if self.count > self.cap:
            log.warning("\u2026 and %d more: journalsync status --failed", self.count - self.cap)
            self.cap = self.count  # said once


def shown(text: str) -> str:
    """A key or path safe to print on one line: control characters escaped."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def plan_line(item: PlanItem) -> str:
    """One dry-run line: `upload photos/a.jpg (new file)`."""
    return f"{item.action.value} {shown(item.key)} ({item.reason})"


def guard_line(verdict, dry_run: bool) -> str:
    """`guard: would pass: 3 of 60 objects (5.0%), within the limits`"""
    word = ("would pass" if verdict.allowed else "would refuse") if dry_run else (
        "passed" if verdict.allowed else "refused")
    return f"guard: {word}: {verdict.reason}"


def plan_dict(item: PlanItem) -> dict:
    return {"action": item.action.value, "key": item.key, "reason": item.reason, "size": item.size}


def cleanup_dict(row) -> dict:
    return {"key": row.key, "upload_id": row.upload_id, "initiated": row.initiated,
            "ours": row.ours, "action": row.action}


def render_cleanup(rows: list, dest) -> None:
    """A plain-text table (columns padded, nothing cut or wrapped), so every UploadId can
    be copied whole from a terminal or from cron mail."""
    if not rows:
        print(f"no incomplete multipart uploads under {dest}")
        return
    print(f"incomplete multipart uploads under {dest}:")
    table = [("KEY", "UPLOAD ID", "STARTED", "OURS", "ACTION")] + [
        (shown(row.key), row.upload_id, when(row.initiated), "yes" if row.ours else "no",
         row.action) for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]) - 1)]
    for line in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths)) + "  " + line[-1])


def when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def status_data(journal: Journal, runs: int = 5, failures: int | None = 50,
                lease: float = 30.0) -> dict:
    """Everything `status` shows, as plain data (the --json form). `lease`: the workers'
    (a working worker unheard of for STALE_LEASES of them is stale)."""
    recent = [run_view(row) for row in journal.recent_runs(runs)]
    show_dead_runs(journal, recent)
    last = recent[0] if recent else None
    data = {"journal": str(journal.path), "runs": recent, "failed": [], "file_errors": [],
            "in_flight": in_flight(journal), "adopted": journal.adopted_by_proof()}
    if last:
        data["failed"] = journal.failed_items(last["id"], failures)
        data["file_errors"] = journal.file_errors(last["id"], failures)
        # The processes that worked the last run's chunks (the run's own included), and
        # its chunks by state (chunkwork.py).
        now = journal.clock()  # the clock the heartbeats were written by
        data["workers"] = [worker_view(w, lease, now)
                           for w in journal.run_workers_rows(last["id"])]
        data["chunks"] = journal.chunk_counts(last["id"])
    return data


def in_flight(journal: Journal) -> list[dict]:
    """The uploads in flight, each with `units`: a shared upload's part units
    (sharedparts.py: units_done, units_total, bytes_journaled, holders (host, pid, units,
    lease_expired)), null for an upload one process sends."""
    units = journal.shared_upload_progress()
    return [{**asdict(u), "kind": u.kind, "units": units.get(u.upload_id)}
            for u in journal.active_uploads()]


def units_text(units: dict) -> str:
    """`3/8 units done, held by host1 pid 12 (2 units), host2 pid 40 (1 unit, 1 past its
    lease)`: a unit past its lease is anyone's to take."""
    text = f"{units['units_done']}/{units['units_total']} units done"
    held = [f"{h['host']} pid {h['pid']} ({h['units']} unit{'' if h['units'] == 1 else 's'}"
            + (f", {h['lease_expired']} past its lease" if h["lease_expired"] else "") + ")"
            for h in units["holders"]]
    return text + (", held by " + ", ".join(held) if held else "")


def run_view(row: dict) -> dict:
    """A runs row as status shows it: skip_reasons an object, elapsed always a number
    once the run ended (runs recorded before the journal kept it: finished - started)."""
    view = dict(row, skip_reasons=json.loads(row.get("skip_reasons") or "{}"))
    if view.get("elapsed") is None and view["finished_at"] is not None:
        view["elapsed"] = view["finished_at"] - view["started_at"]
    if view.get("elapsed") is not None:
        view["elapsed"] = round(view["elapsed"], 3)
    return view


def show_dead_runs(journal: Journal, recent: list[dict]) -> None:
    """A run still marked running while no process holds the run lock was killed: show it
    as interrupted (the next run records it so; status only reads)."""
    from journalsync.lock import run_alive

    if any(r["state"] == "running" for r in recent) and not run_alive(journal.path):
        for r in recent:
            if r["state"] == "running":
                r["state"] = "interrupted"
                r["error"] = r.get("error") or "the process ended without finishing"


def _table(title: str):
    """A rich Table (imported here: only the status views draw one)."""
    from rich.table import Table

    return Table(title=title, title_justify="left")


def render_status(data: dict, console: Console) -> None:
    console.print(f"journal: {data['journal']}")
    runs = _table("recent runs")
    for col in ("run", "started", "secs", "state", *SUMMARY_FIELDS):
        runs.add_column(col, justify="right" if col not in ("started", "state") else "left")
    for r in data["runs"]:
        secs = f"{r['elapsed']:.2f}" if r["finished_at"] and r["elapsed"] is not None else "-"
        state = r["state"] + (" (dry run)" if r["dry_run"] else "")
        runs.add_row(str(r["id"]), when(r["started_at"]), secs, state,
                     *(str(r[c]) for c in SUMMARY_FIELDS))
    console.print(runs)
    if not data["runs"]:
        return
    last = data["runs"][0]
    if last.get("error"):
        console.print(f"last run stopped: {last['error']}")
    for reason, n in sorted(last["skip_reasons"].items()):
        console.print(f"skipped {n}: {reason}")
    if data.get("adopted"):
        console.print(adopted_line(data["adopted"]))
    render_failures(data, console)
    _render_in_flight(data, console)
    _render_workers(data, console)


def _render_workers(data: dict, console: Console) -> None:
    """The last run's chunks by state and its workers: host, pid, chunks, bytes, heartbeat."""
    counts = data.get("chunks") or {}
    if not sum(counts.values()):
        return
    console.print("chunks of the last run: " + ", ".join(
        f"{counts[state]} {state}" for state in ("done", "claimed", "pending")))
    table = _table("workers of the last run")
    for col in ("worker", "host", "pid", "state", "chunks done", "bytes", "bytes/s",
                "last heartbeat"):
        table.add_column(col, justify="right" if col in ("worker", "pid", "chunks done", "bytes",
                                                         "bytes/s") else "left")
    for w in data.get("workers", []):
        speed = "-" if w.get("bytes_per_s") is None else human_rate(w["bytes_per_s"])
        beat = "-" if w.get("heartbeat_age") is None else ago(w["heartbeat_age"])
        table.add_row(str(w["id"]), w["host"], str(w["pid"]),
                      w["state"] + (" (stale)" if w.get("stale") else ""),
                      str(w["chunks_done"]), str(w["bytes_done"]), speed, beat)
    console.print(table)


def adopted_line(adopted: dict[str, int]) -> str:
    """`adopted: 1,990 etag-md5, 10 multipart-etag:8MiB`: the journal's objects another tool
    wrote, by the proof that they hold their file's bytes, most first."""
    ranked = sorted(adopted.items(), key=lambda item: (-item[1], item[0]))
    return "adopted: " + ", ".join(f"{n:,} {proof}" for proof, n in ranked)


def render_failures(data: dict, console: Console) -> None:
    if not data["failed"] and not data["file_errors"]:
        console.print("no failed files in the last run")
        return
    table = _table("failed in the last run")
    for col in ("key or path", "phase", "attempts", "reason"):
        table.add_column(col, overflow="fold")
    for f in data["file_errors"]:
        table.add_row(shown(f["path"]), "scan", "-", f["reason"])
    for f in data["failed"]:
        table.add_row(shown(f["key"]), f["action"], str(f["attempts"]), f["error"] or "")
    console.print(table)


def _render_in_flight(data: dict, console: Console) -> None:
    if not data["in_flight"]:
        return
    shared = any(u.get("units") for u in data["in_flight"])
    table = _table("multipart uploads in flight")
    for col in ("key", "run", "parts done", "bytes done", "size", "started",
                *(("part units (shared upload)",) if shared else ())):
        table.add_column(col, overflow="fold")
    for u in data["in_flight"]:
        total = max(1, -(-u["size"] // u["part_size"]))
        key = shown(u["key"]) + (" (--adopt-metadata copy)" if u["kind"] == "adopt-copy" else "")
        units = (units_text(u["units"]) if u.get("units") else "-",) if shared else ()
        table.add_row(key, str(u["run_id"]), f"{u['parts_done']}/{total}",
                      str(u["bytes_done"]), str(u["size"]), when(u["created_at"]), *units)
    console.print(table)


# A worker still marked working whose heartbeat is older than this many leases is stale: it
# beats every lease/3 (chunkwork.Heartbeat), so nine beats were missed; its chunks are
# anyone's already (after one lease).
STALE_LEASES = 3


def worker_view(row: dict, lease: float, now: float) -> dict:
    """A workers row and what follows from it: bytes_per_s (bytes_done over the time from
    its start to its last heartbeat; null before a first interval), heartbeat_age (seconds)
    and stale (still marked working, unheard of for STALE_LEASES leases)."""
    beat = row.get("heartbeat_at")
    span = (beat - row["started_at"]) if beat is not None else 0.0
    age = max(0.0, now - beat) if beat is not None else None
    return {**row, "bytes_per_s": round(row["bytes_done"] / span, 1) if span > 0 else None,
            "heartbeat_age": round(age, 1) if age is not None else None,
            "stale": row["state"] == "working" and (age is None or age > STALE_LEASES * lease)}


def ago(seconds: float) -> str:
    """`12 s ago`, `5 min ago`, `3 h ago`, `2 d ago`."""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= 2 * size:
            return f"{int(seconds // size)} {unit} ago"
    return f"{int(seconds)} s ago"


def human_rate(rate: float) -> str:
    """`1.5 MiB/s`."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if rate >= size:
            return f"{rate / size:.1f} {unit}/s"
    return f"{rate:.0f} B/s"
