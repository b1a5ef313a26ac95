"""The jobs of a PostgreSQL journal database, read without changing them: catalog.py's twin
for `journalsync journals --journal URL` and `status --all --journal URL`.

A job is a schema that holds a journal (its `runs` and `alembic_version` tables), whether or
not `journalsync.jobs` names it yet (a first run that stopped before its LIST binds
nothing); any other schema of the database is someone else's and is left out. The session
is read only (default_transaction_read_only), so a role granted only USAGE and SELECT can
list, and nothing is migrated: a job at an older revision is described with a note, as an
older journal file is.

Plain psycopg rather than SQLAlchemy, as catalog.py uses plain sqlite3: a few small SELECTs
per job.
"""

from __future__ import annotations

from journalsync.journal.catalog import JournalInfo
from journalsync.journal.location import PgLocation, is_job_name

# Schemas holding both tables of a journal. pg_class is readable by every role, so a schema
# the role may not use is still found (and then listed with the reason it cannot be read).
_JOB_SCHEMAS = """
    SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relname IN ('runs', 'alembic_version') AND c.relkind IN ('r', 'p')
    GROUP BY n.nspname HAVING count(DISTINCT c.relname) = 2"""

# Columns every revision of the runs table has (as catalog._LAST_RUN).
_LAST_RUN = ("SELECT id, started_at, finished_at, state, dry_run, source, dest, endpoint "
             "FROM {job}.runs ORDER BY id DESC LIMIT 1")


def list_job_infos(url: str) -> list[JournalInfo]:
    """Every job of the database at `url`, described, by name. Raises psycopg's error when
    the server cannot be reached (the caller makes it one line: health.pg_journal_error)."""
    from journalsync.journal.pg import _connect

    with _connect(url) as conn:
        conn.execute("SET default_transaction_read_only = on")
        schemas = {row[0] for row in conn.execute(_JOB_SCHEMAS)}
        bound = _bindings(conn)
        names = sorted(name for name in schemas | set(bound) if is_job_name(name))
        return [_describe(conn, PgLocation(url, name), bound.get(name), name in schemas)
                for name in names]


def _bindings(conn) -> dict[str, tuple]:
    """journalsync.jobs: job -> (source, dest, endpoint), as the job's last run bound it."""
    if conn.execute("SELECT to_regclass('journalsync.jobs')").fetchone()[0] is None:
        return {}
    rows = conn.execute("SELECT name, source, dest, endpoint FROM journalsync.jobs").fetchall()
    return {name: (source, dest, endpoint) for name, source, dest, endpoint in rows}


def _describe(conn, where: PgLocation, binding: tuple | None, has_schema: bool) -> JournalInfo:
    """One job, never raising for what its schema holds (autocommit: a failed SELECT
    leaves the session usable for the next job)."""
    import psycopg

    if not has_schema:
        return JournalInfo(where, *(binding or (None, None, None)),
                           problem="named in journalsync.jobs, but its schema holds no journal")
    try:
        revision = conn.execute(f"SELECT version_num FROM {where.job}.alembic_version").fetchone()
        count = conn.execute(f"SELECT count(*) FROM {where.job}.runs").fetchone()[0]
        row = conn.execute(_LAST_RUN.format(job=where.job)).fetchone()
    except psycopg.Error as exc:
        detail = " ".join(str(exc).split()) or type(exc).__name__
        return JournalInfo(where, *(binding or (None, None, None)),
                           problem=f"unreadable ({detail})")
    revision = revision[0] if revision else None
    if row is None:
        return JournalInfo(where, *(binding or (None, None, None)), runs=0, revision=revision)
    last = {"id": row[0], "started_at": row[1], "finished_at": row[2], "state": row[3],
            "dry_run": bool(row[4])}
    return JournalInfo(where, *(binding or row[5:8]), last_run=last, runs=count,
                       revision=revision)
