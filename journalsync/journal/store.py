"""The journal: the only module that runs SQL.

One SQLite file in WAL mode, or one job's schema in a PostgreSQL database (pg.py: the
same tables and statements; what differs is chosen by `self._pg` where it is written).
A single write connection, guarded by a lock, takes batched
transactions (hundreds of rows each, never one per file on the hot path); a second
connection streams large reads (the plan's join, the files to hash) while writes go on.
Set-based work (diffing a scan against the last one, merging a LIST into the cached
manifest) is done by SQL joins, never by Python dicts of every key.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, Numeric, cast, create_engine, event, func, insert, select, text, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from journalsync.journal import migrate
from journalsync.journal.schema import files, plan_items, remote_objects, runs
from journalsync.journal.adoption import AdoptionStore
from journalsync.journal.chunks import ChunkStore
from journalsync.journal.diffstage import DiffStage
from journalsync.journal.housekeeping import Housekeeping
from journalsync.journal.location import PgLocation
from journalsync.journal.manifeststore import ManifestStore
from journalsync.journal.partunits import PartUnitStore
from journalsync.journal.plans import PlanStore
from journalsync.journal.scanstore import ScanStore
from journalsync.journal.uploads import UploadStore
from journalsync.models import ItemStatus, RunCounts



def _set_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    # Only takes effect on a new, empty file (before its first table): freed pages can then
    # be given back with incremental_vacuum (housekeeping.py). Older journals switch over
    # at their first VACUUM.
    cur.execute("PRAGMA auto_vacuum=INCREMENTAL")
    cur.execute("PRAGMA journal_mode=WAL")
    # After a checkpoint resets the WAL, truncate it back to this size rather than leave
    # it at its high-water mark (a first run of a large tree can write hundreds of MB).
    cur.execute("PRAGMA journal_size_limit=8388608")
    # NORMAL is durable across application crashes in WAL mode; only an OS crash can lose
    # the last commits, and every phase can be re-run from what remains.
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    # The staging tables are TEMP (schema.py). SQLite's default rollback journal for the temp
    # schema is a file, rewritten at every batch's transaction: 765 MB of writes to stage
    # 200,000 keys in random order, measured. In memory it holds only the pages one batch
    # touches (the stage is never cleared in one transaction: see _clear_stage).
    cur.execute("PRAGMA temp.journal_mode=MEMORY")
    cur.close()


def _read_only_sqlite(path: Path):
    """An engine that only reads the journal file: `mode=ro`, no pragmas. A journal closed
    cleanly (no -wal file) is read `immutable`, which creates no -wal and -shm beside it
    (catalog.read_info does the same)."""
    if not path.is_file():
        from journalsync.errors import JournalError

        raise JournalError(f"no journal at {path}")
    live = path.with_name(path.name + "-wal").exists()
    uri = f"{path.absolute().as_uri()}?mode=ro" + ("" if live else "&immutable=1")
    import sqlite3

    from sqlalchemy.pool import QueuePool

    # A creator, as the URI is SQLite's own (percent-encoded path, mode, immutable); a
    # QueuePool, as "sqlite://" alone would get the one-connection pool of :memory:.
    return create_engine("sqlite://", poolclass=QueuePool, creator=lambda: sqlite3.connect(
        uri, uri=True, timeout=30.0, check_same_thread=False))


class Journal(ScanStore, ManifestStore, PlanStore, UploadStore, Housekeeping, AdoptionStore,
              ChunkStore, PartUnitStore, DiffStage):
    """All reads and writes of one journal (a file, or a job in PostgreSQL). Thread-safe
    for writes."""

    def __init__(self, path: Path | PgLocation, read_only: bool = False):
        """`read_only`: for the views that only look (`status --all`): nothing is created,
        migrated or written, and the database refuses any write (PostgreSQL:
        default_transaction_read_only; SQLite: a `mode=ro` connection). The caller checks
        first that the journal is at HEAD_REVISION: an older one is not read with today's
        statements."""
        self._pg = isinstance(path, PgLocation)
        self._scan_diff = self._list_diff = False  # diffstage.py: set by begin_scan/_listing
        self._staged = {"scan": 0, "list": 0}  # diffstage.staged_rows
        self.read_only = read_only
        if self._pg:
            from journalsync.journal import pg

            self.path = path
            self._engine = pg.create_engine_for(path, read_only=read_only)
        elif read_only:
            self.path = Path(path)
            self._engine = _read_only_sqlite(self.path)
        else:
            self.path = Path(path)
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                from journalsync.journal.health import os_journal_error

                raise os_journal_error(exc, self.path) from exc
            self._engine = create_engine(
                f"sqlite:///{self.path}", connect_args={"check_same_thread": False}
            )
            event.listen(self._engine, "connect", _set_pragmas)
        if read_only:
            self.revision = migrate.current_revision(self._engine)
        else:
            migrate.upgrade_to_head(self._engine)
            self.revision = migrate.HEAD_REVISION
        self._lock = threading.RLock()
        self._writer: Connection = self._engine.connect()
        self._reader: Connection = self._engine.connect()

    @classmethod
    def for_view(cls, path: Path | PgLocation) -> Journal:
        """A journal for `status`. A job in PostgreSQL at the newest revision is opened
        read-only (a role that may only read can look; the server refuses any write). An
        older job, and a journal file, are opened as a run opens them (upgraded: today's
        statements need today's tables; status --all shows an older one with a note
        instead). A file is not read `immutable` here: a run starting meanwhile could make
        that read see a torn page, and say "damaged" of a sound journal."""
        if not isinstance(path, PgLocation):
            return cls(path)
        journal = cls(path, read_only=True)
        if journal.revision == migrate.HEAD_REVISION:
            return journal
        journal.close()
        return cls(path)

    def close(self) -> None:
        with self._lock:
            self._reader.close()
            self._writer.close()
            self._engine.dispose()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self._lock, self._writer.begin():
            yield self._writer

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        """A short read on the write connection. Always rolled back, even when the read
        fails, so a failed read never leaves a half-open transaction behind to hide the
        real error under "already initialized a Transaction" at the next write."""
        with self._lock:
            try:
                yield self._writer
            finally:
                self._writer.rollback()

    def _upsert(self, table):
        """INSERT with ON CONFLICT (on_conflict_do_update / do_nothing) in the journal's
        dialect: both dialects' insert() have the same API. PostgreSQL's is imported here,
        on use: its dialect package costs a SQLite journal's every run 6% of the engine's
        imports (tests/unit/test_startup.py)."""
        if self._pg:
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            return pg_insert(table)
        return sqlite_insert(table)

    def _pg_execute(self, sql: str, params) -> None:
        """PostgreSQL: one statement on the write connection, in its transaction, with
        psycopg's binary parameters (`%b`: arrays of hundreds of values dump faster than
        in text, which quotes each element)."""
        with self._write() as conn:
            self._pg_run(conn, sql, params)

    @staticmethod
    def _pg_run(conn: Connection, sql: str, params) -> None:
        """PostgreSQL: `sql` with binary parameters (as _pg_execute) on `conn`, in the
        transaction it is in."""
        with conn.connection.driver_connection.cursor(binary=True) as cur:
            cur.execute(sql, params)

    def _analyze_stage(self, table: str) -> None:
        """PostgreSQL: statistics for a filled staging table before it is joined. Autovacuum
        never sees TEMP tables, and without numbers the planner plans the stage's joins
        for a guess of its size rather than for the files staged."""
        if self._pg:
            with self._write() as conn:
                conn.exec_driver_sql(f"ANALYZE {table}")

    def _in_chunks(self, stmt, column, keys: Sequence[str], chunk: int = 500) -> list[tuple]:
        """Rows of `stmt` restricted to `column IN keys`, asked a chunk of keys at a time
        (SQLite caps the number of bound parameters)."""
        rows: list[tuple] = []
        with self._read() as conn:
            for start in range(0, len(keys), chunk):
                part = list(keys[start:start + chunk])
                rows.extend(tuple(r) for r in conn.execute(stmt.where(column.in_(part))))
        return rows

    def _stream(self, stmt, params=None, chunk: int = 2000) -> Iterator:
        """Rows of a large SELECT, fetched in chunks on the read connection."""
        # PostgreSQL: a server-side cursor, or psycopg would fetch the whole result at once
        # (SQLite steps its statement as rows are fetched).
        options = {"stream_results": True, "max_row_buffer": chunk} if self._pg else {}
        with self._reader.begin():
            result = self._reader.execute(stmt, params or {}, execution_options=options)
            while rows := result.fetchmany(chunk):
                yield from rows

    # -- runs ---------------------------------------------------------------------------

    def start_run(self, source: str, dest: str, endpoint: str | None, dry_run: bool) -> int:
        with self._write() as conn:
            result = conn.execute(insert(runs).values(
                started_at=time.time(), state="running", source=source, dest=dest,
                endpoint=endpoint, dry_run=dry_run, pid=os.getpid()))
            return int(result.inserted_primary_key[0])

    def finish_run(self, run_id: int, state: str, counts: RunCounts, error: str | None = None) -> None:
        values = {name: getattr(counts, name) for name in (
            "scanned", "uploaded", "skipped", "deleted", "failed", "extra", "symlinks", "bytes")}
        with self._write() as conn:
            conn.execute(update(runs).where(runs.c.id == run_id).values(
                finished_at=time.time(), state=state, error=error,
                skip_reasons=json.dumps(counts.skip_reasons, sort_keys=True), **values))

    def add_elapsed(self, run_id: int, seconds: float) -> dict:
        """Add one try's seconds to the run's elapsed time. Returns the run's elapsed
        (summed over its tries) and resumed (how many times it was resumed)."""
        total = func.coalesce(runs.c.elapsed, 0.0) + seconds
        if self._pg:  # PostgreSQL rounds to places only a numeric, not a double
            total = cast(total, Numeric)
        with self._write() as conn:
            conn.execute(update(runs).where(runs.c.id == run_id).values(
                # to the millisecond, so every view of it rounds the same number alike
                elapsed=func.round(total, 3)))
            row = conn.execute(select(runs.c.elapsed, runs.c.resumed)
                               .where(runs.c.id == run_id)).mappings().one()
        return dict(row)

    def mark_abandoned_runs(self) -> int:
        """Runs still marked running become 'interrupted', so --resume can find them.

        Call only under the run lock (lock.py), before this run's row exists: the lock
        proves no other run is alive, whatever its recorded pid says now (pid 1 in every
        container, or a pid the system has since given to another process)."""
        with self._write() as conn:
            result = conn.execute(update(runs).where(runs.c.state == "running").values(
                state="interrupted", error="the process ended without finishing"))
        return result.rowcount

    def binding_conflict(self, source: str, dest: str, endpoint: str | None) -> dict | None:
        """A run of this journal made for another (source, destination, endpoint), if any.
        A journal caches one job's listing and plans: shared with another job, it would
        make that job trust a listing of another bucket."""
        stmt = (select(runs.c.source, runs.c.dest, runs.c.endpoint)
                # a run that failed before its LIST (a typo'd bucket) cached nothing: it binds
                # nothing either
                .where(runs.c.listed_at.is_not(None) | runs.c.planned_at.is_not(None))
                .where(~((runs.c.source == source) & (runs.c.dest == dest)
                         & runs.c.endpoint.is_not_distinct_from(endpoint)))
                .order_by(runs.c.id.desc()).limit(1))
        with self._read() as conn:
            row = conn.execute(stmt).mappings().first()
        return dict(row) if row else None

    def rebind_endpoint(self, endpoint: str | None) -> None:
        """The same store, reached at a new URL: every run of the journal now names it."""
        with self._write() as conn:
            conn.execute(update(runs).values(endpoint=endpoint))
            if self._pg:
                conn.execute(text("UPDATE journalsync.jobs SET endpoint = :e WHERE name = :n"),
                             {"e": endpoint, "n": self.path.job})

    def bind_job(self, source: str, dest: str, endpoint: str | None) -> None:
        """PostgreSQL: record in journalsync.jobs which (source, destination, endpoint)
        this job syncs, so `status` finds it by them. Called once binding_conflict() let
        the run in: a job is bound by its runs, in both dialects alike (a run that failed
        before its LIST binds nothing), and the row follows the last run let in."""
        if self._pg:
            from journalsync.journal import pg

            with self._write() as conn:
                pg.bind_job(conn, self.path.job, source, dest, endpoint)

    def last_real_run(self) -> dict | None:
        """The newest run that was not a dry run."""
        with self._read() as conn:
            row = conn.execute(select(runs).where(runs.c.dry_run.is_(False))
                               .order_by(runs.c.id.desc()).limit(1)).mappings().first()
        return dict(row) if row else None

    def reopen_run(self, run_id: int) -> None:
        """Continue a run: it is running again, and its failed items are tried again."""
        with self._write() as conn:
            conn.execute(update(runs).where(runs.c.id == run_id).values(
                state="running", pid=os.getpid(), finished_at=None, error=None,
                resumed=runs.c.resumed + 1))
            conn.execute(update(plan_items).where(
                plan_items.c.run_id == run_id, plan_items.c.status == ItemStatus.FAILED.value
            ).values(status=ItemStatus.PENDING.value))

    def save_plan_counts(self, run_id: int, counts: RunCounts, remote_total: int) -> None:
        """Store the scan and plan numbers and mark the plan complete (resumable)."""
        with self._write() as conn:
            conn.execute(update(runs).where(runs.c.id == run_id).values(
                remote_total=remote_total,
                scanned=counts.scanned, skipped=counts.skipped, extra=counts.extra,
                symlinks=counts.symlinks, skip_reasons=json.dumps(counts.skip_reasons, sort_keys=True),
                planned_at=time.time()))

    def plan_counts(self, run_id: int) -> RunCounts:
        with self._read() as conn:
            row = conn.execute(select(runs).where(runs.c.id == run_id)).mappings().one()
        return RunCounts(scanned=row["scanned"], skipped=row["skipped"], extra=row["extra"],
                         symlinks=row["symlinks"],
                         skip_reasons=json.loads(row["skip_reasons"] or "{}"))

    def scan_failures(self, run_id: int, include_dirs: bool = False) -> int:
        """Files (and with include_dirs, directories) the run's scan could not read."""
        where = "" if include_dirs else " AND path NOT LIKE '%/'"
        stmt = text(f"SELECT count(*) FROM file_errors WHERE run_id = :run{where}")
        return int(self._one(stmt, {"run": run_id})[0])

    def set_remote_total(self, run_id: int, total: int) -> None:
        """The guard's base after a fresh LIST (a resumed run re-checking its deletes)."""
        with self._write() as conn:
            conn.execute(update(runs).where(runs.c.id == run_id).values(remote_total=total))

    def remote_total(self, run_id: int) -> int:
        stmt = select(runs.c.remote_total).where(runs.c.id == run_id)
        return int(self._one(stmt)[0] or 0)

    def synced_files(self) -> Iterator[tuple[str, int, str, str | None]]:
        """(key, size, sha256, proven etag) of every file whose object we believe matches
        it: the manifest holds the same hash. The proven etag is set for objects adopted
        by a proof (adopt.py) that carry no sha256 metadata of ours: the ETag the proof
        was made against."""
        stmt = text("""
            SELECT f.key, f.size, f.sha256,
                   CASE WHEN r.sha_source IN ('etag-md5', 'rclone-md5', 's3cmd-md5')
                          OR r.sha_source LIKE 'multipart-etag:%' THEN r.etag END AS proven
            FROM files f JOIN remote_objects r ON r.key = f.key
            WHERE f.scan_error IS NULL AND f.sha256 IS NOT NULL AND r.sha256 = f.sha256
            ORDER BY f.key""")
        for row in self._stream(stmt):
            yield row.key, row.size, row.sha256, row.proven

    def count_files(self) -> int:
        return int(self._one(select(func.count()).select_from(files))[0])

    def count_remote(self) -> int:
        return int(self._one(select(func.count()).select_from(remote_objects))[0])

    def _clear_stage(self, table: str, chunk: int = 5000) -> None:
        """Empty a staging table a chunk of keys per transaction, so its in-memory rollback
        journal stays small. Only at the start of a scan or a LIST: a filled stage is left
        for the connection's end to drop with the TEMP schema (that costs nothing)."""
        stmt = text(f"DELETE FROM {table} WHERE key IN (SELECT key FROM {table} LIMIT :n)")
        while True:
            with self._write() as conn:
                if not conn.execute(stmt, {"n": chunk}).rowcount:
                    return

    def _one(self, stmt, params=None):
        with self._read() as conn:
            return conn.execute(stmt, params or {}).one()

    def recent_runs(self, limit: int = 10) -> list[dict]:
        with self._read() as conn:
            rows = conn.execute(
                select(runs).order_by(runs.c.id.desc()).limit(limit)).mappings().all()
        return [dict(row) for row in rows]
