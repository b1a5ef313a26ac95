"""Diff staging: a scan or a LIST stages only what differs from the journal.

The walk comes in key order (scan.sorted_walk) and is merged with `files` read in key
order (scandiff.py); each LIST page comes in key order and is compared with the rows of
`remote_objects` in that page's key range (manifest.py). New and changed rows go to
scan_stage / remote_stage, gone keys to scan_gone / remote_gone. On an unchanged tree
nothing is staged: a staged million rows spill the TEMP schema to its file (53 MB of
writes for 200,000 files and objects, measured, against 41 KB to the journal's WAL), and
on PostgreSQL a full stage is every key sent to the server and indexed there, every run.

The merge needs the journal's key order to be Python's (code point order): SQLite's
binary collation is, and so is PostgreSQL's, where every key column is COLLATE "C"
(sqltypes.Key: byte order of UTF-8) whatever the database's own collation. A key compared
with a parameter or a JSON text takes the column's collation (an explicit column
collation wins over the default), so every range below is a byte range on both. Mixed
into Journal (store.py), whose connections, lock and helpers it relies on.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence

from sqlalchemy import text

from journalsync.journal.schema import remote_gone, scan_gone

KNOWN_FILES = ("SELECT key, path, size, mtime_ns, ctime_ns, inode, sha256 IS NOT NULL, scan_error"
               " FROM files ORDER BY key")

# Unchanged files (not staged) that still need a hash: an object of their size whose hash
# is unknown (an adoption candidate, iter_files_to_hash). Staged as the full stage would
# have held them; not gone, not under an unlistable directory (ranges, as in scanstore).
_CANDIDATES = """
    INSERT INTO scan_stage (key, path, size, mtime_ns, ctime_ns, inode, sha256, error)
    SELECT f.key, f.path, f.size, f.mtime_ns, f.ctime_ns, f.inode, NULL, NULL
    FROM remote_objects r JOIN files f ON f.key = r.key AND f.size = r.size
    WHERE r.sha256 IS NULL AND f.scan_error IS NULL
      AND NOT EXISTS (SELECT 1 FROM scan_stage s WHERE s.key = f.key)
      AND NOT EXISTS (SELECT 1 FROM scan_gone g WHERE g.key = f.key)
      AND NOT EXISTS (SELECT 1 FROM json_each(:ranges) d
                      WHERE f.key >= json_extract(d.value, '$[0]')
                        AND f.key < json_extract(d.value, '$[1]'))"""
# PostgreSQL's JSON words (as scanstore._GONE_PG): the key column on one side of each
# comparison, so it is made in the column's "C" collation.
_CANDIDATES_PG = _CANDIDATES.replace(
    "json_each(:ranges) d", "json_array_elements(CAST(:ranges AS json)) d").replace(
    "json_extract(d.value, '$[0]')", "d.value->>0").replace(
    "json_extract(d.value, '$[1]')", "d.value->>1")


class DiffStage:

    @property
    def diff_staging(self) -> bool:
        return True

    def iter_known_files(self) -> Iterator[tuple]:
        """(key, path, size, mtime_ns, ctime_ns, inode, has_sha256, scan_error) of every
        file, in key order, on the read connection (plain tuples: a million rows).
        PostgreSQL: a server-side cursor (psycopg would otherwise fetch the whole result
        at once), in the read connection's transaction."""
        with self._reader.begin():
            raw = self._reader.connection.driver_connection
            cur = raw.cursor(name="known_files") if self._pg else raw.execute(KNOWN_FILES)
            try:
                if self._pg:
                    cur.execute(KNOWN_FILES)
                while rows := cur.fetchmany(5000):
                    yield from rows
            finally:
                cur.close()

    def staged_rows(self, side: str) -> int:
        """Rows sent to the stages since the scan ("scan") or the LIST ("list") began:
        files or objects new and changed (all of them, on a full stage), gone keys, and
        adoption candidates. What diff staging saves shows here: an unchanged tree and
        bucket stage none."""
        with self._lock:
            return self._staged[side]

    def _count_staged(self, side: str, n: int) -> None:
        with self._lock:  # the LIST's threads stage pages at once
            self._staged[side] += n

    def stage_scan_gone(self, keys: Sequence[str]) -> None:
        self._stage_gone("scan_gone", keys)

    def _stage_gone(self, table: str, keys: Sequence[str]) -> None:
        """Keys into scan_gone or remote_gone (a key twice: once). PostgreSQL: one
        statement over an array, as stage_files."""
        if not keys:
            return
        self._count_staged("scan" if table == "scan_gone" else "list", len(keys))
        if self._pg:
            self._pg_execute(f"INSERT INTO {table} (key) SELECT * FROM unnest(%b::text[])"
                             " ON CONFLICT (key) DO NOTHING", (list(keys),))
            return
        with self._write() as conn:
            conn.exec_driver_sql(f"INSERT OR IGNORE INTO {table} (key) VALUES (?)",
                                 [(k,) for k in keys])

    def stage_hash_candidates(self, unreadable_dirs: Sequence[tuple[str, str]] = ()) -> None:
        ranges = [[d + "/", d + "0"] for d, _ in unreadable_dirs]
        self._analyze_stage("scan_stage")  # and for commit_scan's delete of the gone:
        self._analyze_stage("scan_gone")  # see ManifestStore.commit_listing
        with self._write() as conn:
            staged = conn.execute(text(_CANDIDATES_PG if self._pg else _CANDIDATES),
                                  {"ranges": json.dumps(ranges)}).rowcount
        self._count_staged("scan", max(0, staged))

    def _begin_gone(self, table) -> None:
        with self._write() as conn:
            table.create(conn, checkfirst=True)
        self._clear_stage(table.name)

    def stage_remote_page(self, rows: Sequence[tuple], lo: str | None, lo_incl: bool,
                          hi: str | None, hi_incl: bool, top_only: bool) -> None:
        """One LIST page's rows (relative key, size, etag, last_modified), which are every
        object whose key lies in the range (lo, hi) (bounds None: open; `top_only`: only
        keys without a "/", a delimiter listing's). Stages the new and changed objects and
        the cached ones the page did not show."""
        # Driver-level: a thousand rows per page, a thousand pages. Parameters in the
        # driver's own style (sqlite3 :name, psycopg %(name)s); `instr` is translated for
        # PostgreSQL by pg.translate. The key column on one side of every comparison: its
        # collation (binary, "C") orders them.
        mark = "%({})s" if self._pg else ":{}"
        where, params = ["1 = 1"], {}
        if lo is not None:
            where.append(("key >= " if lo_incl else "key > ") + mark.format("lo"))
            params["lo"] = lo
        if hi is not None:
            where.append(("key <= " if hi_incl else "key < ") + mark.format("hi"))
            params["hi"] = hi
        if top_only:
            where.append("instr(key, '/') = 0")
        sql = f"SELECT key, size, etag FROM remote_objects WHERE {' AND '.join(where)}"
        with self._read() as conn:
            known = {k: (s, e) for k, s, e in conn.exec_driver_sql(sql, params)}
        changed = [r for r in rows if known.get(r[0]) != (r[1], r[2])]
        seen = {r[0] for r in rows}
        gone = [k for k in known if k not in seen]
        if changed:
            self.stage_remote(changed)
        self._stage_gone("remote_gone", gone)

    def _commit_remote_gone(self, conn, gaps: Sequence[tuple[str | None, str | None]]) -> None:
        """Drop what the pages found gone, and every nested key outside the listed
        "directories" (`gaps`: ranges [lo, hi) no listing covered, bounds None: open)."""
        # (compiled statements: pg.translate spells instr as strpos for PostgreSQL)
        conn.execute(text("DELETE FROM remote_objects WHERE key IN (SELECT key FROM remote_gone)"))
        for lo, hi in gaps:
            where = ["instr(key, '/') > 0"] + (["key >= :lo"] if lo is not None else []) \
                + (["key < :hi"] if hi is not None else [])
            conn.execute(text(f"DELETE FROM remote_objects WHERE {' AND '.join(where)}"),
                         {"lo": lo, "hi": hi})


__all__ = ["DiffStage", "remote_gone", "scan_gone"]
