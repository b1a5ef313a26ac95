"""The journal in PostgreSQL: the engine for one job's schema, the run lock, the job binding.

The journal's SQL is written once, in SQLite's words. The few it has that PostgreSQL spells
otherwise are translated as each statement goes out (`_translate`), so every module keeps
one text of each statement and SQLite's stays exactly what was measured:
- `a IS NOT b` / `a IS b` between values is `IS [NOT] DISTINCT FROM` (IS NULL stays),
- `instr(haystack, needle)` is `strpos`,
- driver-level statements (stage_files, stage_remote) use `?`, psycopg `%s`.
What has no such spelling is chosen by dialect where it is written (the scan's json_each,
round() of a double, the upserts' insert()).

One job is one SCHEMA, named on the connection by search_path, so its tables are the
SQLite journal's, and its runs bind it to one (source, destination, endpoint) as a file's
runs do (Journal.binding_conflict). Across jobs, `journalsync.jobs` names each job's
(source, destination, endpoint), so `status --journal URL SOURCE DEST` finds its job (in a
schema of its own: since PostgreSQL 15 a role may not create in `public` unless it owns
the database).

The run lock is a session advisory lock held by a connection of its own for the whole run:
the server drops it when that session ends, however the process ended (SIGKILL included),
as the kernel drops the SQLite journal's flock.
"""

from __future__ import annotations

import hashlib
import os
import re
import time

from journalsync.errors import ConfigError, UsageError
from journalsync.journal.location import PgLocation

# The advisory locks' first key: ours ("js"); the second is the job's (lock_key).
LOCK_CLASS = 0x6A73
# Serialises schema creation and migrations across processes (CREATE SCHEMA IF NOT
# EXISTS races are errors in PostgreSQL, and two processes must not migrate one schema).
BOOTSTRAP_KEY = 0x6A730000

# Upper case only, as the journal's SQL and SQLAlchemy's write them (a comment's "is" stays).
_IS_NOT = re.compile(r"\bIS\s+NOT\s+(?!NULL\b|DISTINCT\b|TRUE\b|FALSE\b|true\b|false\b)")
_IS = re.compile(r"\bIS\s+(?!NOT\b|NULL\b|DISTINCT\b|TRUE\b|FALSE\b|true\b|false\b)")
_INSTR = re.compile(r"\binstr\(")

JOBS_DDL = """
    CREATE TABLE IF NOT EXISTS journalsync.jobs (
        name TEXT PRIMARY KEY,
        source TEXT NOT NULL,
        dest TEXT NOT NULL,
        endpoint TEXT,
        created_at DOUBLE PRECISION NOT NULL,
        last_run_at DOUBLE PRECISION
    )"""


def translate(sql: str, driver_level: bool) -> str:
    """A statement in SQLite's words, in PostgreSQL's (see the module doc)."""
    sql = _IS_NOT.sub("IS DISTINCT FROM ", sql)
    sql = _IS.sub("IS NOT DISTINCT FROM ", sql)
    sql = _INSTR.sub("strpos(", sql)
    if driver_level:
        sql = sql.replace("?", "%s")
    return sql


def lock_key(job: str) -> int:
    """The job's advisory lock key: a signed 32-bit number from the job's name."""
    return int.from_bytes(hashlib.sha256(job.encode()).digest()[:4], "big", signed=True)


def _application_name() -> str:
    return f"journalsync pid {os.getpid()}"[:63]


def create_engine_for(location: PgLocation, read_only: bool = False):
    """An engine whose connections see the job's schema (and temp tables) only, with the
    schema, the jobs table and the journal's tables made or brought to head. `read_only`:
    nothing is made (a job that is not there is an error), and every transaction is read
    only, so the server refuses a write whatever the role may do."""
    try:
        import psycopg  # noqa: F401 - only to say what is missing, in one line
    except ImportError as exc:
        raise ConfigError("a PostgreSQL journal needs psycopg 3: pip install "
                          "'journalsync[pg]' (or psycopg[binary])") from exc
    from sqlalchemy import create_engine, event, text

    # synchronous_commit=off is SQLite's synchronous=NORMAL here: a commit does not wait
    # for the server's WAL flush, so a crash of journalsync loses nothing and a crash of
    # the server (or its machine) may lose the last commits, never corrupt; every phase
    # can be re-run from what remains (a lost part record re-sends the part; a lost
    # UploadId leaves an upload that the next run's reconcile or `cleanup` aborts).
    options = f"-c search_path={location.job} -c synchronous_commit=off"
    if read_only:
        options += " -c default_transaction_read_only=on"
    engine = create_engine(
        location.sqlalchemy_url, pool_pre_ping=False,
        connect_args={"options": options,
                      "application_name": _application_name(), "connect_timeout": 10})

    @event.listens_for(engine, "before_cursor_execute", retval=True)
    def _to_postgresql(conn, cursor, statement, parameters, context, executemany):
        driver_level = context is None or context.compiled is None
        return translate(statement, driver_level), parameters

    if read_only:  # a view of jobs already found (pgcatalog.py): nothing to make
        return engine
    with engine.begin() as conn:
        # Made once, by the first run of the first job: opening an existing job (`status`)
        # creates nothing, so a role without CREATE on the database can read it.
        ready = conn.execute(text("SELECT to_regclass('journalsync.jobs') IS NOT NULL"
                                  " AND to_regnamespace(:job) IS NOT NULL"),
                             {"job": location.job}).scalar()
        if not ready:
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": BOOTSTRAP_KEY})
            conn.execute(text("CREATE SCHEMA IF NOT EXISTS journalsync"))
            conn.execute(text(JOBS_DDL))
            conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {location.job}"))
    return engine


def bind_job(conn, job: str, source: str, dest: str, endpoint: str | None) -> None:
    """Record the job's (source, destination, endpoint) as its newest run has them, and
    when it last ran."""
    from sqlalchemy import text

    conn.execute(text("""
        INSERT INTO journalsync.jobs (name, source, dest, endpoint, created_at, last_run_at)
        VALUES (:n, :s, :d, :e, :t, :t)
        ON CONFLICT (name) DO UPDATE SET source = excluded.source, dest = excluded.dest,
            endpoint = excluded.endpoint, last_run_at = excluded.last_run_at"""),
                 {"n": job, "s": source, "d": dest, "e": endpoint, "t": time.time()})


def list_jobs(url: str) -> list[dict]:
    """Every job of the database at `url`: name, source, dest, endpoint (empty when the
    database holds no journal yet)."""
    with _connect(url) as conn:
        exists = conn.execute("SELECT to_regclass('journalsync.jobs')").fetchone()[0]
        if exists is None:
            return []
        rows = conn.execute("SELECT name, source, dest, endpoint FROM journalsync.jobs "
                            "ORDER BY name").fetchall()
    return [dict(zip(("name", "source", "dest", "endpoint"), row)) for row in rows]


def _connect(url: str):
    import psycopg

    return psycopg.connect(PgLocation(url, "x").libpq_url, autocommit=True, connect_timeout=10,
                           application_name=_application_name())


class PgRunLock:
    """One run per job at a time: a session advisory lock on a connection of its own."""

    def __init__(self, location: PgLocation):
        self.location = location
        self._conn = None

    def acquire(self) -> PgRunLock:
        conn = _connect(self.location.url)
        key = lock_key(self.location.job)
        if not conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (LOCK_CLASS, key)).fetchone()[0]:
            holder = _holder(conn, key)
            conn.close()
            raise UsageError(f"another run ({holder}) holds {self.location}")
        self._conn = conn
        return self

    def release(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()  # ends the session: the server drops its locks
            finally:
                self._conn = None

    def __enter__(self) -> PgRunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _holder(conn, key: int) -> str:
    """Who holds the job's lock: the holder's application name (our pid) and address."""
    row = conn.execute(
        "SELECT a.application_name, a.client_addr FROM pg_locks l JOIN pg_stat_activity a "
        "ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s "
        "AND l.objid = %s AND l.objsubid = 2", (LOCK_CLASS, key & 0xFFFFFFFF)).fetchone()
    if row is None:
        return "gone since"
    name, addr = row
    return f"{name or 'unnamed'}{f' from {addr}' if addr else ''}"


def run_alive(location: PgLocation) -> bool:
    """Whether a run of this job holds its lock. When the server cannot be asked, it cannot
    tell, and says alive (as lock.run_alive does)."""
    try:
        with _connect(location.url) as conn:
            row = conn.execute(
                "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = %s"
                " AND objid = %s AND objsubid = 2",
                (LOCK_CLASS, lock_key(location.job) & 0xFFFFFFFF)).fetchone()
    except Exception:  # noqa: BLE001 - psycopg's errors, or no psycopg: cannot tell
        return True
    return row is not None
