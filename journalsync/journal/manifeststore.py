"""The remote manifest's side of the journal: a LIST staged in a TEMP table and merged
into `remote_objects` (a hash survives only while size and ETag are unchanged), the
objects worth a HEAD, and the extras. Mixed into Journal (store.py), whose connections,
lock and helpers it relies on."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

from sqlalchemy import bindparam, func, select, text, update

from journalsync.journal.schema import remote_gone, remote_objects, remote_stage, runs
from journalsync.models import RemoteObject


class ManifestStore:

    def begin_listing(self, diff: bool = False) -> None:
        """`diff`: LIST pages are staged by stage_remote_page (only what differs, and the
        gone keys: diffstage.py); else every object listed is staged by stage_remote."""
        with self._write() as conn:
            remote_stage.create(conn, checkfirst=True)  # TEMP, as scan_stage
        self._clear_stage("remote_stage")
        self._list_diff = diff
        self._staged["list"] = 0
        if diff:
            self._begin_gone(remote_gone)

    def stage_remote(self, rows: Sequence[tuple]) -> None:
        """Rows of (key, size, etag, last_modified) from one or more LIST pages."""
        self._count_staged("list", len(rows))
        if rows and self._pg:  # one statement over arrays, as in stage_files
            self._pg_execute(
                "INSERT INTO remote_stage (key, size, etag, last_modified) SELECT * FROM"
                " unnest(%b::text[], %b::int8[], %b::text[], %b::float8[])"
                " ON CONFLICT (key) DO NOTHING", [list(c) for c in zip(*rows)])
        elif rows:
            with self._write() as conn:  # driver-level, as in stage_files
                conn.exec_driver_sql(
                    "INSERT INTO remote_stage (key, size, etag, last_modified) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (key) DO NOTHING",
                    rows)

    def commit_listing(self, run_id: int, gaps: Sequence[tuple[str | None, str | None]] = ()) -> None:
        """Replace the cached manifest with the LIST just staged. A hash we knew survives
        only while the object's size and ETag are unchanged. Only objects that differ from
        the cached row are written: an unchanged bucket writes nothing to `remote_objects`.
        `gaps`: after a diff LIST, the key ranges no listing covered (_commit_remote_gone)."""
        self._analyze_stage("remote_stage")
        if self._list_diff:  # unanalyzed, it is planned as 1,360 keys: a hash join that
            self._analyze_stage("remote_gone")  # reads every cached row (EXPLAIN, PG 15)
        with self._write() as conn:
            # New objects, and objects whose size or ETag changed (their hash is dropped).
            # last_modified alone is no reason to write: nothing decides on it, and the row
            # our own upload recorded holds the client's clock, a second off the server's.
            conn.execute(text("""
                INSERT INTO remote_objects (key, size, etag, last_modified)
                SELECT s.key, s.size, s.etag, s.last_modified
                FROM remote_stage s LEFT JOIN remote_objects r ON r.key = s.key
                WHERE r.key IS NULL OR r.size IS NOT s.size OR r.etag IS NOT s.etag
                ON CONFLICT (key) DO UPDATE SET size = excluded.size, etag = excluded.etag,
                    last_modified = excluded.last_modified, sha256 = NULL, sha_source = NULL"""))
            # What this LIST did not see is gone, whichever run listed it before: a resumed
            # run lists again under its own run id, and must not keep its first LIST's rows.
            if self._list_diff:
                self._commit_remote_gone(conn, gaps)
            else:
                conn.execute(text("""DELETE FROM remote_objects WHERE NOT EXISTS
                                 (SELECT 1 FROM remote_stage s WHERE s.key = remote_objects.key)"""))
            conn.execute(update(runs).where(runs.c.id == run_id).values(listed_at=time.time()))

    def last_listing_age(self) -> float | None:
        """Seconds since the last complete LIST of the prefix, or None if there was none."""
        listed_at = self._one(select(func.max(runs.c.listed_at)))[0]
        return None if listed_at is None else max(0.0, time.time() - listed_at)

    def keys_needing_head(self) -> Iterator[tuple[str, str, str | None, str | None]]:
        """(key, etag, the file's sha256, the file's md5) of objects whose hash is unknown
        and whose size equals the local file's: the only objects worth a HEAD (adoption
        candidates the ETag could not prove). A size mismatch is an upload anyway."""
        stmt = text("""
            SELECT r.key, r.etag, f.sha256, f.md5 FROM remote_objects r JOIN files f ON f.key = r.key
            WHERE r.sha256 IS NULL AND r.size = f.size AND f.scan_error IS NULL
            ORDER BY r.key""")
        for row in self._stream(stmt):
            yield row.key, row.etag, row.sha256, row.md5

    def set_remote_hashes(self, rows: Sequence[dict]) -> None:
        """rows: key, etag (as LIST or HEAD saw it), sha256, and optionally sha_source (the
        proof; default `head`). Ignored if the object changed since that etag was seen."""
        if rows:
            stmt = (update(remote_objects)
                    .where(remote_objects.c.key == bindparam("k"))
                    .where(remote_objects.c.etag == bindparam("e"))
                    .values(sha256=bindparam("sha256"), sha_source=bindparam("src")))
            with self._write() as conn:
                conn.execute(stmt, [{"k": r["key"], "e": r["etag"], "sha256": r["sha256"],
                                     "src": r.get("sha_source") or "head"} for r in rows])

    def iter_extras(self) -> Iterator[RemoteObject]:
        """Objects under the prefix with no local file at all, in key order. A file that
        exists but could not be read is not missing: its object is never an extra."""
        stmt = text("""
            SELECT r.key, r.size, r.etag, r.sha256 FROM remote_objects r
            WHERE NOT EXISTS (SELECT 1 FROM files f WHERE f.key = r.key) ORDER BY r.key""")
        for row in self._stream(stmt):
            yield RemoteObject(row.key, row.size, row.etag, row.sha256)
