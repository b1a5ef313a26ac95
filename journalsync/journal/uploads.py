"""Multipart uploads we own: UploadIds, their file identity and their parts. Mixed into
Journal (store.py), whose connections, lock and helpers it relies on.

Two kinds share the table: a file's upload (multipart.py), and --adopt-metadata's
multipart copy of an object onto itself (adoptcopy.py, objects above 5 GiB). A copy's
`sha256` is COPY_MARK followed by the file's SHA-256, so it never equals a file's hash:
the uploader never continues a copy, and the next run aborts it (cleanup.reconcile)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import delete, insert, select, text, update

from journalsync.journal.schema import multipart_parts, multipart_uploads

COPY_MARK = "adopt-copy:"  # prefix of a multipart copy's sha256 column (see the module doc)
# Prefix of the sha256 column of a file's upload created without its hash in the metadata
# (multipart.py's stream then stamp): the mark alone while the file is read, the mark and
# the hash once every byte was read (journaled before the Complete; the stamp writes it).
STREAM_MARK = "stream:"
# upload_id of a row (state `creating`) journaled before a CreateMultipartUpload is sent:
# record_create_intent.
INTENT_MARK = "creating:"


@dataclass(frozen=True, slots=True)
class UploadRecord:
    """A multipart upload as the journal knows it."""

    upload_id: str
    key: str
    run_id: int
    part_size: int
    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int
    sha256: str
    created_at: float
    state: str
    parts_done: int = 0
    bytes_done: int = 0
    complete_etag: str | None = None

    @property
    def streamed(self) -> bool:
        """Created without the file's SHA-256 (it is written after Complete by a copy)."""
        return self.sha256.startswith(STREAM_MARK)

    @property
    def streamed_sha256(self) -> str | None:
        """A streamed upload's SHA-256, once every byte was read; else None."""
        return (self.sha256[len(STREAM_MARK):] or None) if self.streamed else None

    @property
    def kind(self) -> str:
        """`upload` (a file's data) or `adopt-copy` (a server-side copy, never continued)."""
        return "adopt-copy" if self.sha256.startswith(COPY_MARK) else "upload"


class UploadStore:

    def record_create_intent(self, key: str, run_id: int, plan_item_id: int | None) -> str:
        """Commit, before a CreateMultipartUpload is sent, that one is about to be: a run
        killed after the store created the upload but before its UploadId was journaled
        leaves this row, and the next run's reconcile finds the upload by its key and time
        and aborts it (create_intents), even once the file is gone and its key no longer
        planned. Returns the row's id (INTENT_MARK + a random hex), for record_upload."""
        intent = INTENT_MARK + uuid.uuid4().hex
        with self._write() as conn:
            conn.execute(insert(multipart_uploads).values(
                upload_id=intent, key=key, run_id=run_id, plan_item_id=plan_item_id,
                part_size=0, size=0, mtime_ns=0, ctime_ns=0, inode=0, sha256="",
                created_at=time.time(), state="creating"))
        return intent

    def create_intents(self, before_run: int) -> list[tuple[str, str, float]]:
        """(intent, key, when) of the creates that runs before `before_run` began but never
        journaled an UploadId for (killed mid-create, or the create failed)."""
        stmt = (select(multipart_uploads.c.upload_id, multipart_uploads.c.key,
                       multipart_uploads.c.created_at)
                .where(multipart_uploads.c.state == "creating",
                       multipart_uploads.c.run_id < before_run)
                .order_by(multipart_uploads.c.created_at))
        with self._read() as conn:
            return [tuple(row) for row in conn.execute(stmt).all()]

    def forget_create_intent(self, intent: str) -> None:
        with self._write() as conn:
            conn.execute(delete(multipart_uploads).where(
                multipart_uploads.c.upload_id == intent, multipart_uploads.c.state == "creating"))

    def record_upload(self, rec: UploadRecord, plan_item_id: int | None,
                      intent: str | None = None) -> None:
        """Commit a new UploadId before its first part is sent (and, in the same
        transaction, forget the `intent` to create it)."""
        with self._write() as conn:
            if intent is not None:
                conn.execute(delete(multipart_uploads).where(
                    multipart_uploads.c.upload_id == intent,
                    multipart_uploads.c.state == "creating"))
            conn.execute(insert(multipart_uploads).values(
                upload_id=rec.upload_id, key=rec.key, run_id=rec.run_id,
                plan_item_id=plan_item_id, part_size=rec.part_size, size=rec.size,
                mtime_ns=rec.mtime_ns, ctime_ns=rec.ctime_ns, inode=rec.inode,
                sha256=rec.sha256, created_at=rec.created_at, state=rec.state))

    def record_part(self, upload_id: str, part_number: int, etag: str, size: int) -> None:
        stmt = self._upsert(multipart_parts).values(
            upload_id=upload_id, part_number=part_number, etag=etag, size=size)
        with self._write() as conn:
            conn.execute(stmt.on_conflict_do_update(
                index_elements=["upload_id", "part_number"],
                set_={"etag": stmt.excluded.etag, "size": stmt.excluded.size}))

    def set_upload_state(self, upload_id: str, state: str) -> None:
        with self._write() as conn:
            conn.execute(update(multipart_uploads)
                         .where(multipart_uploads.c.upload_id == upload_id).values(state=state))

    def set_upload_sha256(self, upload_id: str, sha256: str) -> None:
        """A streamed upload's SHA-256, journaled once every byte was read, before Complete."""
        with self._write() as conn:
            conn.execute(update(multipart_uploads)
                         .where(multipart_uploads.c.upload_id == upload_id)
                         .values(sha256=STREAM_MARK + sha256))

    def set_upload_unstamped(self, upload_id: str, complete_etag: str) -> None:
        """A streamed upload completed: its object exists with this ETag, without our sha256
        metadata until the stamp (then set_upload_state(..., "completed"))."""
        with self._write() as conn:
            conn.execute(update(multipart_uploads)
                         .where(multipart_uploads.c.upload_id == upload_id)
                         .values(state="unstamped", complete_etag=complete_etag))

    def active_upload_for(self, key: str, state: str = "active") -> UploadRecord | None:
        """The newest upload of a key in `state` (active, or unstamped), if any."""
        stmt = (select(multipart_uploads).where(multipart_uploads.c.key == key,
                                                multipart_uploads.c.state == state)
                .order_by(multipart_uploads.c.created_at.desc()).limit(1))
        with self._read() as conn:
            row = conn.execute(stmt).mappings().first()
        return _upload_record(row) if row else None

    def unstamped_uploads(self) -> list[tuple[UploadRecord, str | None]]:
        """Streamed uploads completed but not stamped (a run killed between the two), each
        with its file's path as last scanned (None if the file is no longer known)."""
        stmt = text("""SELECT u.*, f.path AS file_path FROM multipart_uploads u
                       LEFT JOIN files f ON f.key = u.key
                       WHERE u.state = 'unstamped' ORDER BY u.created_at""")
        return [(_upload_record(r._mapping), r.file_path) for r in self._stream(stmt)]

    def streamed_active_uploads(self) -> list[tuple[UploadRecord, str | None]]:
        """Streamed uploads still active in the journal (a run killed before Complete, or
        before its answer came), each with its file's path as last scanned (or None)."""
        stmt = text("""SELECT u.*, f.path AS file_path FROM multipart_uploads u
                       LEFT JOIN files f ON f.key = u.key
                       WHERE u.state = 'active' AND u.sha256 LIKE :mark
                       ORDER BY u.created_at""").bindparams(mark=STREAM_MARK + "%")
        return [(_upload_record(r._mapping), r.file_path) for r in self._stream(stmt)]

    def part_etags(self, upload_id: str) -> dict[int, str]:
        stmt = select(multipart_parts.c.part_number, multipart_parts.c.etag).where(
            multipart_parts.c.upload_id == upload_id)
        with self._read() as conn:
            rows = conn.execute(stmt).all()
        return {r.part_number: r.etag for r in rows}

    def known_upload_ids(self, candidates: Iterable[str]) -> set[str]:
        """Those of `candidates` (UploadIds the server lists as incomplete) that this
        journal created: asked in chunks, so the cost follows the listing, never the
        journal's history."""
        stmt = select(multipart_uploads.c.upload_id)
        return {row[0] for row in self._in_chunks(stmt, multipart_uploads.c.upload_id,
                                                  list(candidates))}

    def active_uploads(self) -> list[UploadRecord]:
        stmt = text("""
            SELECT u.*, count(p.part_number) AS parts_done, coalesce(sum(p.size), 0) AS bytes_done
            FROM multipart_uploads u LEFT JOIN multipart_parts p ON p.upload_id = u.upload_id
            WHERE u.state = 'active' GROUP BY u.upload_id ORDER BY u.created_at""")
        # PostgreSQL's sum() of integers is a numeric (Decimal): status --json printed it
        # as a string.
        return [_upload_record({**r._mapping, "parts_done": int(r.parts_done),
                                "bytes_done": int(r.bytes_done)}) for r in self._stream(stmt)]



def _upload_record(row) -> UploadRecord:
    cols = UploadRecord.__dataclass_fields__
    return UploadRecord(**{k: v for k, v in row.items() if k in cols})
