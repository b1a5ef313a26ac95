"""The journals in the state directory, read without changing them.

`journalsync journals`, and `status`, `verify` and `cleanup` when no --journal is named,
look at every journal to find the one for a source and a destination. That look must be
harmless: each file is opened read-only (SQLite's `mode=ro`), with no pragmas and no
migration, so listing never upgrades a journal, never takes the run lock and never waits
long on a running sync (WAL readers do not block on the writer), and leaves no file behind. A journal with an older
schema is read all the same (the runs columns read here exist since revision 0001); a
damaged file is listed as damaged, never raised.

Plain sqlite3 rather than SQLAlchemy: one small SELECT per file, and a read-only URI.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from journalsync.journal.migrate import HEAD_REVISION


@dataclass(frozen=True, slots=True)
class JournalInfo:
    """What one journal file says about itself. `problem` is set when it could not be read
    (then source and dest are None); `note` for a readable journal worth a remark."""

    path: Path
    source: str | None = None
    dest: str | None = None
    endpoint: str | None = None
    last_run: dict | None = None  # id, started_at, finished_at, state, dry_run
    runs: int = 0
    revision: str | None = None
    problem: str | None = None

    @property
    def note(self) -> str | None:
        if self.problem or self.revision in (None, HEAD_REVISION):
            return None
        if self.revision < HEAD_REVISION:
            return f"schema {self.revision}, older: the next run upgrades it"
        return f"schema {self.revision}, newer than this journalsync ({HEAD_REVISION})"

    def as_dict(self) -> dict:
        """The --json form (a job of a PostgreSQL journal: path is the database's URL,
        password left out, and job its name; null for a file)."""
        job = getattr(self.path, "job", None)
        path = self.path.redacted if job is not None else str(self.path)
        return {"path": path, "job": job, "source": self.source, "destination": self.dest,
                "endpoint": self.endpoint, "last_run": self.last_run, "runs": self.runs,
                "schema": self.revision, "problem": self.problem, "note": self.note}


_LAST_RUN = ("SELECT id, started_at, finished_at, state, dry_run, source, dest, endpoint "
             "FROM runs ORDER BY id DESC LIMIT 1")


def read_info(path: Path) -> JournalInfo:
    """Describe one journal file; never raises for what the file holds."""
    path = Path(path)
    # A journal closed cleanly has no -wal file: everything is in the main file, and
    # `immutable` reads it without creating the -wal and -shm files a read-only WAL
    # reader otherwise leaves behind. With a -wal (a run is live, or was killed) the
    # ordinary read-only open sees its commits too. If a run began between the check and
    # the read, the immutable read may fail: then look again the ordinary way.
    live = path.with_name(path.name + "-wal").exists()
    info = _read_with(path, immutable=not live)
    if info.problem and not live:
        info = _read_with(path, immutable=False)
    return info


def _read_with(path: Path, immutable: bool) -> JournalInfo:
    uri = f"{path.absolute().as_uri()}?mode=ro" + ("&immutable=1" if immutable else "")
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=2.0)
    except sqlite3.Error as exc:
        return JournalInfo(path, problem=f"cannot open: {exc}")
    try:
        return _read(conn, path)
    except sqlite3.Error as exc:
        return JournalInfo(path, problem=_problem(exc))
    finally:
        conn.close()


def _read(conn: sqlite3.Connection, path: Path) -> JournalInfo:
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "runs" not in tables:
        return JournalInfo(path, problem="not a journal (no runs table)")
    revision = None
    if "alembic_version" in tables:
        revision = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        revision = revision[0] if revision else None
    count = conn.execute("SELECT count(*) FROM runs").fetchone()[0]
    row = conn.execute(_LAST_RUN).fetchone()
    if row is None:
        return JournalInfo(path, runs=0, revision=revision)
    last = {"id": row[0], "started_at": row[1], "finished_at": row[2], "state": row[3],
            "dry_run": bool(row[4])}
    return JournalInfo(path, row[5], row[6], row[7], last, count, revision)


def _problem(exc: sqlite3.Error) -> str:
    detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    low = detail.lower()
    if any(word in low for word in ("malformed", "not a database", "encrypted", "corrupt")):
        return f"damaged ({detail}): move it aside; the next run of its job rebuilds it"
    return f"unreadable ({detail})"


def list_journals(state_dir: Path) -> list[JournalInfo]:
    """Every `*.sqlite` in the state directory, described, in path order."""
    if not state_dir.is_dir():
        return []
    return [read_info(path) for path in sorted(state_dir.glob("*.sqlite"))]


def same_source(stored: str | None, wanted: Path) -> bool:
    """Whether a run's recorded source is `wanted` (recorded absolute, maybe unresolved)."""
    if stored is None:
        return False
    if stored == str(wanted.expanduser().absolute()):
        return True
    try:
        return Path(stored).resolve() == wanted.expanduser().resolve()
    except OSError:
        return False


def matching(found: list[JournalInfo], source: Path | None, dest: str | None,
             endpoint: str | None, any_endpoint: bool) -> list[JournalInfo]:
    """The readable journals whose last run synced `source` (if given) to `dest` (if given)
    at `endpoint` (unless `any_endpoint`)."""
    return [info for info in found if info.problem is None and info.last_run is not None
            and (source is None or same_source(info.source, source))
            and (dest is None or info.dest == dest)
            and (any_endpoint or info.endpoint == endpoint)]
