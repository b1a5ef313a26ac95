"""Plan rows and their outcomes: the part of the journal the plan and the workers use.
Mixed into Journal (store.py), whose connections, lock and helpers it relies on."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

from sqlalchemy import bindparam, insert, select, text, update

from journalsync.journal import pgbatch
from journalsync.journal.schema import files, plan_items, remote_objects
from journalsync.models import Action, ItemStatus, LocalFile, PlanItem, RemoteObject, TransferResult

BATCH = 500  # rows per transaction on the hot paths

# SQL for the one case plan.decide() skips a local file: an object of the same size whose
# sha256 is known and equals the file's. NULLs (no object, an unknown hash) make it 0, so an
# unknown is never a match. A CASE, not coalesce(<boolean>, 0): PostgreSQL's booleans are
# not numbers. tests/unit/test_pure.py checks it against decide() case by case.
UNCHANGED = "CASE WHEN f.size = r.size AND f.sha256 = r.sha256 THEN 1 ELSE 0 END"


class PlanStore:

    def count_unchanged(self) -> int:
        """Readable local files whose object is certainly the same: counted, not streamed."""
        stmt = text(f"""SELECT count(*) FROM files f JOIN remote_objects r ON r.key = f.key
                        WHERE f.scan_error IS NULL AND {UNCHANGED} = 1""")
        with self._reader.begin():
            return int(self._reader.execute(stmt).scalar())

    def count_readable_files(self) -> int:
        stmt = text("SELECT count(*) FROM files WHERE scan_error IS NULL")
        with self._reader.begin():
            return int(self._reader.execute(stmt).scalar())

    def iter_plan_inputs(self, changed_only: bool = False, unplanned_in: int | None = None,
                         ) -> Iterator[tuple[LocalFile, RemoteObject | None]]:
        """Every readable local file with its remote object, if any, in key order; with
        `changed_only`, only those count_unchanged() does not count; with `unplanned_in`,
        only keys that run has no upload row for."""
        unplanned = ("AND NOT EXISTS (SELECT 1 FROM plan_items p WHERE p.run_id = :run"
                     " AND p.key = f.key AND p.action = 'upload')" if unplanned_in is not None else "")
        stmt = text(f"""
            SELECT f.key, f.path, f.size, f.mtime_ns, f.ctime_ns, f.inode, f.sha256,
                   r.size AS r_size, r.etag AS r_etag, r.sha256 AS r_sha256
            FROM files f LEFT JOIN remote_objects r ON r.key = f.key
            WHERE f.scan_error IS NULL {f"AND {UNCHANGED} = 0" if changed_only else ""}
              {unplanned}
            ORDER BY f.key""")
        for row in self._stream(stmt, {"run": unplanned_in}):
            local = LocalFile(row.key, row.path, row.size, row.mtime_ns, row.ctime_ns,
                              row.inode, row.sha256)
            remote = (RemoteObject(row.key, row.r_size, row.r_etag, row.r_sha256)
                      if row.r_size is not None else None)
            yield local, remote

    def unlisted_keys_containing(self, chars: str, readable_only: bool) -> list[tuple[str, str]]:
        """(key, path) of local files with one of `chars` in their key and no object under
        that key: the few keys a store that rewrites names may hold under another one."""
        if not chars:
            return []
        params = {f"c{i}": c for i, c in enumerate(chars)}
        has = " OR ".join(f"instr(f.key, :{name}) > 0" for name in params)
        stmt = text(f"""
            SELECT f.key, f.path FROM files f
            WHERE ({has}) {"AND f.scan_error IS NULL" if readable_only else ""}
              AND NOT EXISTS (SELECT 1 FROM remote_objects r WHERE r.key = f.key)
            ORDER BY f.key""")
        with self._read() as conn:  # not _stream: the plan calls this while it streams the extras
            return [(r.key, r.path) for r in conn.execute(stmt, params)]

    def remote_etags(self, keys: Sequence[str]) -> dict[str, str]:
        """{key: ETag} of those of `keys` the cached manifest holds."""
        return dict(self._in_chunks(select(remote_objects.c.key, remote_objects.c.etag),
                                    remote_objects.c.key, keys))

    def existing_keys(self, keys: Sequence[str]) -> set[str]:
        """Those of `keys` that are local files (readable or not)."""
        return {row[0] for row in self._in_chunks(select(files.c.key), files.c.key, keys)}

    def add_plan_items(self, run_id: int, rows: Sequence[dict]) -> None:
        """rows: key, action, reason, size, sha256."""
        if rows and self._pg:  # one statement over arrays (pgbatch.py)
            self._pg_execute(pgbatch.PLAN_ROWS, pgbatch.columns(
                rows, ("key", "action", "reason", "size", "sha256", "etag"),
                run=run_id, now=time.time()))
        elif rows:
            now = time.time()
            with self._write() as conn:
                conn.execute(insert(plan_items), [
                    {**r, "run_id": run_id, "status": ItemStatus.PENDING.value, "attempts": 0,
                     "bytes_sent": 0, "updated_at": now} for r in rows])

    def claim_batch(self, run_id: int, after_id: int, limit: int,
                    action: Action = Action.UPLOAD) -> list[PlanItem]:
        """The next pending plan items of one action, in id order, with their local paths."""
        stmt = text("""
            SELECT p.id, p.key, p.action, p.reason, p.size, p.sha256, f.path,
                   f.mtime_ns, f.ctime_ns, f.inode, f.sha256 AS f_sha256
            FROM plan_items p LEFT JOIN files f ON f.key = p.key
            WHERE p.run_id = :run AND p.status = 'pending' AND p.action = :action
              AND p.id > :after
            ORDER BY p.id LIMIT :limit""")
        with self._read() as conn:
            rows = conn.execute(stmt, {"run": run_id, "after": after_id, "limit": limit,
                                       "action": action.value}).all()
        # The identity is only worth carrying while the files row still describes the hash
        # the plan was made with; otherwise the file is hashed again before a multipart.
        return [PlanItem(r.id, r.key, Action(r.action), r.reason, r.size, r.sha256, r.path,
                         *((r.mtime_ns, r.ctime_ns, r.inode) if r.f_sha256 == r.sha256 else ()))
                for r in rows]

    def iter_plan(self, run_id: int) -> Iterator[PlanItem]:
        stmt = text("""SELECT id, key, action, reason, size, sha256 FROM plan_items
                       WHERE run_id = :run ORDER BY id""")
        for r in self._stream(stmt, {"run": run_id}):
            yield PlanItem(r.id, r.key, Action(r.action), r.reason, r.size, r.sha256)

    def record_results(self, results: Sequence[TransferResult], fence=None) -> None:
        """One transaction for a batch of finished items: their plan rows, and for each
        upload the object we now know (size, ETag, our hash) in the cached manifest.

        A chunk's results come with its `fence` (chunks.ChunkFence): asked first in the
        same transaction, it keeps the whole batch out of the journal once the chunk is
        no longer the writer's, and closes the chunk last."""
        if not results and fence is None:
            return
        now = time.time()
        item_rows = [{"i": r.item_id, "status": _status(r).value,
                      "attempts": r.attempts, "bytes_sent": r.bytes_sent, "error": r.error,
                      "updated_at": now} for r in results]
        uploaded = [{"key": r.key, "size": r.size, "etag": r.etag, "sha256": r.sha256,
                     "sha_source": "upload", "last_modified": now}
                    for r in results if r.ok and r.etag is not None and r.action is Action.UPLOAD]
        deleted = [{"k": r.key} for r in results if r.ok and r.action is Action.DELETE]
        hashed = [{"k": r.key, "sha256": r.sha256, "size": r.file_identity[0],
                   "mtime_ns": r.file_identity[1], "ctime_ns": r.file_identity[2],
                   "inode": r.file_identity[3]}
                  for r in results if r.ok and r.file_identity is not None and r.sha256]
        with self._write() as conn:
            if fence is not None and not fence.hold(conn):
                return
            if self._pg:  # the same writes, one statement each over arrays (pgbatch.py)
                self._record_pg(conn, now, item_rows, uploaded, hashed)
                item_rows = uploaded = hashed = []
            if item_rows:
                conn.execute(update(plan_items).where(plan_items.c.id == bindparam("i")).values(
                    status=bindparam("status"), attempts=bindparam("attempts"),
                    bytes_sent=bindparam("bytes_sent"), error=bindparam("error"),
                    updated_at=bindparam("updated_at")), item_rows)
            if uploaded:
                stmt = self._upsert(remote_objects)
                conn.execute(stmt.on_conflict_do_update(index_elements=["key"], set_={
                    c: stmt.excluded[c] for c in ("size", "etag", "sha256", "sha_source",
                                                  "last_modified")}), uploaded)
            if hashed:
                # The hash of the bytes sent becomes the file's (lazy hashing: the scan did
                # not read it), with the identity seen around that read; its MD5 stays only
                # if it goes with this very SHA-256.
                conn.execute(text("""
                    UPDATE files SET md5 = CASE WHEN sha256 = :sha256 THEN md5 END,
                        sha256 = :sha256, size = :size, mtime_ns = :mtime_ns,
                        ctime_ns = :ctime_ns, inode = :inode
                    WHERE key = :k AND scan_error IS NULL"""), hashed)
            if deleted:
                conn.execute(remote_objects.delete().where(remote_objects.c.key == bindparam("k")),
                             deleted)
            if fence is not None:
                fence.close(conn)

    def _record_pg(self, conn, now: float, item_rows: list[dict], uploaded: list[dict],
                   hashed: list[dict]) -> None:
        if item_rows:
            self._pg_run(conn, pgbatch.ITEMS, pgbatch.columns(
                [{**r, "id": r["i"]} for r in item_rows],
                ("id", "status", "attempts", "bytes_sent", "error"), fold="id", now=now))
        if uploaded:
            self._pg_run(conn, pgbatch.UPLOADED, pgbatch.columns(
                uploaded, ("key", "size", "etag", "sha256"), fold="key", now=now))
        if hashed:
            self._pg_run(conn, pgbatch.HASHED, pgbatch.columns(
                hashed, ("k", "sha256", "size", "mtime_ns", "ctime_ns", "inode"), fold="k"))

    def failed_items(self, run_id: int, limit: int | None = None) -> list[dict]:
        stmt = (select(plan_items.c.key, plan_items.c.action, plan_items.c.error,
                       plan_items.c.attempts)
                .where(plan_items.c.run_id == run_id, plan_items.c.status == ItemStatus.FAILED.value)
                .order_by(plan_items.c.id).limit(limit))
        return [dict(r._mapping) for r in self._stream(stmt)]

    def failure_count(self, run_id: int) -> int:
        """A run's failures, as `status` lists them: failed plan items and scan errors."""
        stmt = text("""
            SELECT (SELECT count(*) FROM plan_items WHERE run_id = :run AND status = 'failed')
                 + (SELECT count(*) FROM file_errors WHERE run_id = :run)""")
        with self._read() as conn:
            return int(conn.execute(stmt, {"run": run_id}).scalar_one())

    def transfer_totals(self, run_id: int) -> dict[str, int]:
        """A run's plan items by outcome, across all its resumptions: uploaded, deleted,
        failed (failed_uploads + failed_deletes), bytes (file bytes uploaded), sent (bytes on
        the wire, retries included), pending_uploads, pending_deletes, cancelled_deletes,
        vanished (uploads whose file was gone when its turn came). Counted by CASE, as
        PostgreSQL cannot sum() a boolean."""
        stmt = text("""
            SELECT coalesce(sum(CASE WHEN action = 'upload' AND status = 'done' THEN 1 ELSE 0 END), 0) AS uploaded,
                   coalesce(sum(CASE WHEN action = 'delete' AND status = 'done' THEN 1 ELSE 0 END), 0) AS deleted,
                   coalesce(sum(CASE WHEN status = 'failed' THEN 1 ELSE 0 END), 0) AS failed,
                   coalesce(sum(CASE WHEN action = 'upload' AND status = 'failed' THEN 1 ELSE 0 END), 0) AS failed_uploads,
                   coalesce(sum(CASE WHEN action = 'delete' AND status = 'failed' THEN 1 ELSE 0 END), 0) AS failed_deletes,
                   coalesce(sum(CASE WHEN action = 'upload' AND status = 'pending' THEN 1 ELSE 0 END), 0) AS pending_uploads,
                   coalesce(sum(bytes_sent), 0) AS sent,
                   coalesce(sum(CASE WHEN action = 'upload' AND status = 'done'
                                     THEN size ELSE 0 END), 0) AS bytes,
                   coalesce(sum(CASE WHEN action = 'delete' AND status = 'pending' THEN 1 ELSE 0 END), 0) AS pending_deletes,
                   coalesce(sum(CASE WHEN action = 'delete' AND status = 'cancelled' THEN 1 ELSE 0 END), 0) AS cancelled_deletes,
                   coalesce(sum(CASE WHEN action = 'upload' AND status = 'cancelled' THEN 1 ELSE 0 END), 0) AS vanished
            FROM plan_items WHERE run_id = :run""")
        return {k: int(v) for k, v in self._one(stmt, {"run": run_id})._mapping.items()}

    def planned_upload_keys(self, run_id: int, keys: Sequence[str]) -> set[str]:
        """Which of `keys` this run still has to upload."""
        stmt = select(plan_items.c.key).where(
            plan_items.c.run_id == run_id, plan_items.c.action == Action.UPLOAD.value,
            plan_items.c.status == ItemStatus.PENDING.value)
        return {row[0] for row in self._in_chunks(stmt, plan_items.c.key, keys)}

    def upload_conflicts(self, run_id: int, keys: Sequence[str]) -> set[str]:
        """Which of `keys` (extras planned for deletion) stand where a pending upload of the
        run needs room on a store over a filesystem: a key under an upload's key + `/`, or
        a key that is a directory of an upload's (some upload's key starts with it + `/`).
        By index: a key's directories are looked up as keys, and the uploads under a key
        are a range of the (run_id, key) index: from key + '/' up to key + '0', '0' being
        the character after '/' in the binary order both journals keep keys in."""
        dirs = {key: [key[:i] for i, c in enumerate(key) if c == "/"] for key in keys}
        uploads = self.planned_upload_keys(run_id, sorted({d for ds in dirs.values() for d in ds}))
        found = {key for key, ds in dirs.items() if uploads.intersection(ds)}
        under = text("""SELECT 1 FROM plan_items WHERE run_id = :run AND action = 'upload'
                          AND status = 'pending' AND key >= :lo AND key < :hi LIMIT 1""")
        with self._read() as conn:
            found.update(key for key in keys if key not in found and conn.execute(
                under, {"run": run_id, "lo": key + "/", "hi": key + "0"}).first() is not None)
        return found

    def stored_conflict(self, key: str) -> str | None:
        """An object of the cached manifest that a store over a filesystem would not let
        `key` be written beside: one under `key/`, or one at a directory of `key`. None
        when the manifest holds neither."""
        dirs = [key[:i] for i, c in enumerate(key) if c == "/"]
        with self._read() as conn:
            above = conn.execute(select(remote_objects.c.key).where(
                remote_objects.c.key.in_(dirs)).limit(1)).scalar() if dirs else None
            if above is not None:
                return f"{above} exists on the store as an object, where {key} needs it as a directory"
            below = conn.execute(text("""SELECT key FROM remote_objects WHERE key >= :lo
                                         AND key < :hi ORDER BY key LIMIT 1"""),
                                 {"lo": key + "/", "hi": key + "0"}).scalar()
        return f"{below} exists on the store under {key}/" if below is not None else None

    def pending_uploads(self, run_id: int) -> tuple[int, int]:
        """(files, bytes) still to upload in a run."""
        row = self._one(text("""SELECT count(*), coalesce(sum(size), 0) FROM plan_items
                                WHERE run_id = :run AND action = 'upload' AND status = 'pending'"""),
                        {"run": run_id})
        return int(row[0]), int(row[1])

    def has_pending_uploads(self, run_id: int) -> bool:
        stmt = select(plan_items.c.id).where(
            plan_items.c.run_id == run_id, plan_items.c.action == Action.UPLOAD.value,
            plan_items.c.status == ItemStatus.PENDING.value).limit(1)
        with self._read() as conn:
            return conn.execute(stmt).first() is not None


    def cancel_items(self, rows: Sequence[tuple[int, str]]) -> None:
        """Mark plan items (id, reason) cancelled: a re-check found them stale."""
        if rows:
            with self._write() as conn:
                conn.execute(update(plan_items).where(plan_items.c.id == bindparam("i")).values(
                    status=ItemStatus.CANCELLED.value, error=bindparam("why"),
                    updated_at=time.time()), [{"i": i, "why": why} for i, why in rows])

    def revalidate_deletes(self, run_id: int) -> dict[str, int]:
        """After a fresh scan and LIST: cancel every pending delete whose file is back, or
        whose object is gone or is no longer the object the plan saw (another ETag, or a
        plan from before ETags were kept). Returns the counts by reason."""
        checks = {
            "back": ("EXISTS (SELECT 1 FROM files f WHERE f.key = plan_items.key)",
                     "not deleted: the local file exists again"),
            "changed": ("NOT EXISTS (SELECT 1 FROM remote_objects r WHERE r.key = plan_items.key"
                        " AND r.etag = plan_items.etag)",
                        "not deleted: the object is gone or changed since the plan"),
        }
        done: dict[str, int] = {}
        with self._write() as conn:
            for name, (condition, why) in checks.items():
                done[name] = conn.execute(text(f"""
                    UPDATE plan_items SET status = 'cancelled', error = :why, updated_at = :now
                    WHERE run_id = :run AND action = 'delete' AND status = 'pending'
                      AND {condition}"""), {"run": run_id, "why": why, "now": time.time()}).rowcount
        return done


def _status(result: TransferResult) -> ItemStatus:
    if result.ok:
        return ItemStatus.DONE
    if result.vanished:
        return ItemStatus.CANCELLED
    return ItemStatus.PENDING if result.interrupted else ItemStatus.FAILED
