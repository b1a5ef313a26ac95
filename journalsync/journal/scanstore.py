"""The scan's side of the journal: the walk staged in a TEMP table, the files to hash,
and the fold of a scan into `files` (only rows that changed are written). Mixed into
Journal (store.py), whose connections, lock and helpers it relies on."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence

from sqlalchemy import bindparam, func, insert, select, text, update

from journalsync.journal.schema import file_errors, files, scan_gone, scan_stage


_COLLISION = "two local names map to this key (Unicode normalisation)"

# The files gone from the tree: neither staged nor under an unlistable directory (the
# ranges, a JSON array of [lo, hi] pairs). JSON is read in each dialect's own words.
_GONE_SQLITE = """
    DELETE FROM files
    WHERE NOT EXISTS (SELECT 1 FROM scan_stage s WHERE s.key = files.key)
      AND NOT EXISTS (SELECT 1 FROM json_each(:ranges) d
                      WHERE files.key >= json_extract(d.value, '$[0]')
                        AND files.key < json_extract(d.value, '$[1]'))"""
_GONE_PG = """
    DELETE FROM files
    WHERE NOT EXISTS (SELECT 1 FROM scan_stage s WHERE s.key = files.key)
      AND NOT EXISTS (SELECT 1 FROM json_array_elements(CAST(:ranges AS json)) d
                      WHERE files.key >= d.value->>0 AND files.key < d.value->>1)"""


class ScanStore:

    def begin_scan(self, diff: bool = False) -> None:
        """`diff`: the scan stages only new and changed files and records the gone ones
        (diffstage.py); else every file it saw is staged."""
        with self._write() as conn:
            # TEMP, so on the write connection only: every read of the stage goes through
            # _read(), never _stream() (the read connection cannot see it).
            scan_stage.create(conn, checkfirst=True)
        self._clear_stage("scan_stage")
        self._scan_diff = diff
        self._staged["scan"] = 0
        if diff:
            self._begin_gone(scan_gone)

    def stage_files(self, rows: Sequence[dict]) -> None:
        """Stage what the walk saw. Two names that normalise to one key both fail."""
        if not rows:
            return
        self._count_staged("scan", len(rows))
        if self._pg:
            self._stage_files_pg(rows)
            return
        # Driver-level executemany: this runs once per file on every scan, and SQLAlchemy's
        # per-row parameter processing cost more than SQLite's insert (measured: 1.3 s vs
        # 0.6 s for 50,000 rows).
        with self._write() as conn:
            conn.exec_driver_sql(
                "INSERT INTO scan_stage (key, path, size, mtime_ns, ctime_ns, inode, sha256, error)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET error ="
                " 'two local names map to this key (Unicode normalisation)'",
                [(r["key"], r["path"], r["size"], r["mtime_ns"], r["ctime_ns"], r["inode"],
                  r["sha256"], r["error"]) for r in rows])

    def _stage_files_pg(self, rows: Sequence[dict]) -> None:
        """PostgreSQL: the batch as one statement over binary arrays (unnest), not a
        statement per row (20,000 rows in batches of 500: 1.1-1.9 s against executemany's
        3.5-5.5 s, measured three times on a loaded 2-core machine). One statement may not
        update a row twice, so keys repeated inside the batch are folded here first, as the
        per-row ON CONFLICT folds them (the first name's row, marked)."""
        batch: dict[str, list] = {}
        for r in rows:
            if r["key"] in batch:
                batch[r["key"]][7] = _COLLISION
            else:
                batch[r["key"]] = [r["key"], r["path"], r["size"], r["mtime_ns"], r["ctime_ns"],
                                   r["inode"], r["sha256"], r["error"]]
        columns = [list(c) for c in zip(*batch.values())]
        self._pg_execute(
            "INSERT INTO scan_stage (key, path, size, mtime_ns, ctime_ns, inode, sha256, error)"
            " SELECT * FROM unnest(%b::text[], %b::text[], %b::int8[], %b::int8[],"
            " %b::int8[], %b::int8[], %b::text[], %b::text[])"
            " ON CONFLICT (key) DO UPDATE SET error = %s", (*columns, _COLLISION))

    def staged_collisions(self) -> list[tuple[str, str]]:
        """(key, reason) of staged keys that two local names mapped to."""
        stmt = text("SELECT key, error FROM scan_stage WHERE error LIKE 'two local names%' ORDER BY key")
        with self._read() as conn:
            return [(r.key, r.error) for r in conn.execute(stmt)]

    def iter_files_to_hash(self, all_changed: bool = False) -> Iterator[dict]:
        """Staged files the plan needs a hash of, with `etag` set for adoption candidates.

        A hash is needed only where the store holds an object of the file's size under its
        key: an adoption candidate (adopt.py: that object's hash is unknown; its ETag comes
        along), or a changed file (its (size, mtime_ns, ctime_ns, inode) differ from the last
        scan, or its hash is not known yet) whose object's hash is known. Any other changed
        file is an upload whatever its bytes: the worker hashes it in the read that sends it
        (lazy hashing). `all_changed` also yields those. An unchanged tree whose remote
        hashes are all known yields nothing."""
        stmt = text("""
            SELECT s.key, s.path, s.size, s.mtime_ns, s.ctime_ns, s.inode,
                   CASE WHEN r.sha256 IS NULL THEN r.etag END AS etag
            FROM scan_stage s LEFT JOIN files f ON f.key = s.key
            LEFT JOIN remote_objects r ON r.key = s.key AND r.size = s.size
            WHERE s.error IS NULL AND s.key > :after AND (
                ((f.key IS NULL OR f.sha256 IS NULL OR f.scan_error IS NOT NULL
                  OR f.size IS NOT s.size OR f.mtime_ns IS NOT s.mtime_ns
                  OR f.ctime_ns IS NOT s.ctime_ns OR f.inode IS NOT s.inode)
                 AND (:all_changed OR r.key IS NOT NULL))
                OR (r.key IS NOT NULL AND r.sha256 IS NULL))
            ORDER BY s.key LIMIT :chunk""")
        self._analyze_stage("scan_stage")
        yield from self._stage_pages(stmt, {"all_changed": all_changed})

    def _stage_pages(self, stmt, params: dict | None = None, chunk: int = 2000) -> Iterator[dict]:
        """Rows of a SELECT over a staging table, ordered by key, asked `chunk` rows at a
        time after the last key seen (its :after and :chunk; `params` are the rest of its
        parameters). On the write connection, as
        the stage is TEMP; no cursor stays open between pages, since the caller writes to
        the stage meanwhile."""
        if self._pg:
            yield from self._stage_windows(stmt, params, chunk)
            return
        after = ""
        while True:
            with self._read() as conn:
                rows = [dict(r._mapping) for r in conn.execute(
                    stmt, {**(params or {}), "after": after, "chunk": chunk})]
            yield from rows
            if len(rows) < chunk:
                return
            after = rows[-1]["key"]

    def _stage_windows(self, stmt, params: dict | None, chunk: int) -> Iterator[dict]:
        """PostgreSQL: the same rows, a window of `chunk` staged keys at a time. Its planner
        sorts the whole filtered join for each page where SQLite walks the stage's key
        order and stops at the LIMIT: with most staged files selected (adoption
        candidates) that made the pages quadratic. A window [after, upto] of the stage's
        primary key bounds each page's work instead."""
        windowed = text(stmt.text.replace("s.key > :after", "s.key > :after AND s.key <= :upto"))
        edge = text("SELECT max(key) FROM (SELECT key FROM scan_stage WHERE key > :after"
                    " ORDER BY key LIMIT :chunk) w")
        after = ""
        while True:
            with self._read() as conn:
                upto = conn.execute(edge, {"after": after, "chunk": chunk}).scalar()
                if upto is None:
                    return
                rows = [dict(r._mapping) for r in conn.execute(
                    windowed, {**(params or {}), "after": after, "upto": upto, "chunk": chunk})]
            yield from rows
            after = upto

    def set_staged_hashes(self, rows: Sequence[dict]) -> None:
        """Record hashes (with the stat seen while hashing) or per-file errors."""
        if not rows:
            return
        stmt = update(scan_stage).where(scan_stage.c.key == bindparam("k")).values(
            size=bindparam("size"), mtime_ns=bindparam("mtime_ns"),
            ctime_ns=bindparam("ctime_ns"), inode=bindparam("inode"),
            sha256=bindparam("sha256"), error=bindparam("error"), md5=bindparam("md5"))
        with self._write() as conn:
            conn.execute(stmt, [{"k": r["key"], "md5": None, **r} for r in rows])

    def forget_hash(self, key: str) -> None:
        """Drop a file's cached hash (the upload found the file's bytes disagree with it),
        so the next scan hashes it again whatever its stat says."""
        with self._write() as conn:
            conn.execute(update(files).where(files.c.key == key).values(sha256=None, md5=None))

    def commit_scan(self, run_id: int, unreadable_dirs: Iterable[tuple[str, str]] = ()) -> None:
        """Fold the staged scan into `files` in one transaction.

        Unchanged files keep their hash; files that could not be read keep their last good
        row with `scan_error` set; files under a directory that could not be listed are kept
        too. Only files truly gone from the tree are dropped.

        Only rows that differ are written (an unchanged tree writes nothing to `files`): the
        join selects only new or changed rows for the upsert, and what is gone is found by
        an anti-join with the stage, never by marking every row seen.
        """
        self._analyze_stage("scan_stage")
        with self._write() as conn:
            # Filtered in the SELECT rather than in ON CONFLICT ... WHERE: SQLite then never
            # materialises the unchanged rows (0.15 s of CPU instead of 0.39 s at 200,000).
            conn.execute(text("""
                INSERT INTO files (key, path, size, mtime_ns, ctime_ns, inode, sha256, md5,
                                   scan_error)
                SELECT s.key, s.path, s.size, s.mtime_ns, s.ctime_ns, s.inode,
                       -- a hash taken now; else the last one while the file is as it
                       -- was (a changed file left unhashed has none: lazy hashing)
                       CASE WHEN s.sha256 IS NOT NULL THEN s.sha256
                            WHEN f.size IS s.size AND f.mtime_ns IS s.mtime_ns
                             AND f.ctime_ns IS s.ctime_ns AND f.inode IS s.inode THEN f.sha256 END,
                       -- the MD5 goes with the SHA-256 it was read with: a new hash brings
                       -- its own (or none), an old one keeps its own while the file is as
                       -- it was, and so does the same hash read again without an MD5 (a
                       -- racy file's second read): the bytes are the same, and
                       -- --adopt-metadata's check needs the MD5
                       CASE WHEN s.sha256 IS NOT NULL AND s.md5 IS NULL AND s.sha256 = f.sha256
                                 THEN f.md5
                            WHEN s.sha256 IS NOT NULL THEN s.md5
                            WHEN f.size IS s.size AND f.mtime_ns IS s.mtime_ns
                             AND f.ctime_ns IS s.ctime_ns AND f.inode IS s.inode THEN f.md5 END,
                       NULL
                FROM scan_stage s LEFT JOIN files f ON f.key = s.key
                WHERE s.error IS NULL AND (
                    f.key IS NULL OR f.scan_error IS NOT NULL
                    OR f.path IS NOT s.path OR f.size IS NOT s.size
                    OR f.mtime_ns IS NOT s.mtime_ns OR f.ctime_ns IS NOT s.ctime_ns
                    OR f.inode IS NOT s.inode
                    OR (s.sha256 IS NOT NULL AND (f.sha256 IS NOT s.sha256
                                                  OR (s.md5 IS NOT NULL AND f.md5 IS NOT s.md5))))
                ON CONFLICT (key) DO UPDATE SET path = excluded.path, size = excluded.size,
                    mtime_ns = excluded.mtime_ns, ctime_ns = excluded.ctime_ns,
                    inode = excluded.inode, sha256 = excluded.sha256, md5 = excluded.md5,
                    scan_error = NULL"""))
            conn.execute(text("""
                INSERT INTO files (key, path, scan_error)
                SELECT key, path, error FROM scan_stage WHERE error IS NOT NULL
                ON CONFLICT (key) DO UPDATE SET scan_error = excluded.scan_error
                WHERE files.scan_error IS NOT excluded.scan_error"""))
            # Every key under an unlistable directory: the range [dir/, dir0) in binary order.
            ranges = [{"reason": reason, "lo": dir_key + "/", "hi": dir_key + "0"}
                      for dir_key, reason in unreadable_dirs]
            if ranges:
                conn.execute(text("""
                    UPDATE files SET scan_error = :reason
                    WHERE key >= :lo AND key < :hi AND scan_error IS NOT :reason"""), ranges)
            # Gone: neither staged nor under an unlistable directory (a diff scan recorded
            # them as it merged, never under such a directory).
            if self._scan_diff:
                conn.execute(text("DELETE FROM files WHERE key IN (SELECT key FROM scan_gone)"))
            else:
                conn.execute(text(_GONE_PG if self._pg else _GONE_SQLITE),
                             {"ranges": json.dumps([[r["lo"], r["hi"]] for r in ranges])})

    def record_file_errors(self, run_id: int, rows: Sequence[tuple[str, str]]) -> None:
        if rows:
            with self._write() as conn:
                conn.execute(insert(file_errors), [
                    {"run_id": run_id, "path": path, "reason": reason} for path, reason in rows])

    def clear_file_errors(self, run_id: int) -> None:
        """Forget a run's scan errors before the run scans again (a resumed run re-checking
        its deletes), so each failure is counted once."""
        with self._write() as conn:
            conn.execute(file_errors.delete().where(file_errors.c.run_id == run_id))

    def refuse_files(self, run_id: int, rows: Sequence[tuple[str, str, str]]) -> None:
        """rows: (key, display path, reason) of files found unfit after the scan: each is a
        file error of the run, and its row is set aside like an unreadable file's (never
        planned, its object never an extra)."""
        if rows:
            with self._write() as conn:
                conn.execute(update(files).where(files.c.key == bindparam("k")).values(
                    scan_error=bindparam("reason")), [{"k": k, "reason": r} for k, _, r in rows])
            self.record_file_errors(run_id, [(path, reason) for _, path, reason in rows])

    def file_errors(self, run_id: int, limit: int | None = None) -> list[dict]:
        stmt = (select(file_errors.c.path, file_errors.c.reason)
                .where(file_errors.c.run_id == run_id).order_by(file_errors.c.id).limit(limit))
        return [dict(r._mapping) for r in self._stream(stmt)]

    def scan_error_count(self) -> int:
        with self._read() as conn:
            n = conn.execute(select(func.count()).select_from(files)
                             .where(files.c.scan_error.is_not(None))).scalar_one()
        return int(n)
