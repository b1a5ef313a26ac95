"""Objects another tool wrote that a proof adopted (adopt.py): counted for `status`, and
listed for --adopt-metadata. Mixed into Journal (store.py), whose connections, lock and
helpers it relies on."""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import text

# sha_source values that are adoption proofs (adopt.py); `adopt-copy` is an adopted object
# that now carries our own metadata.
_PROOF_SQL = ("(r.sha_source IN ('etag-md5', 'rclone-md5', 's3cmd-md5', 'adopt-copy')"
              " OR r.sha_source LIKE 'multipart-etag:%')")


class AdoptionStore:

    def adopted_by_proof(self) -> dict[str, int]:
        """proof -> number of objects in the manifest adopted by it (status)."""
        stmt = text(f"SELECT r.sha_source, count(*) AS n FROM remote_objects r "
                    f"WHERE {_PROOF_SQL} GROUP BY r.sha_source")
        with self._read() as conn:
            return {row.sha_source: int(row.n) for row in conn.execute(stmt)}

    def adopted_without_metadata(self) -> Iterator[dict]:
        """Adopted objects that do not carry our metadata yet and still match their file:
        key, etag (as listed), size, the file's sha256, md5, mtime_ns, ctime_ns and inode
        (--adopt-metadata)."""
        stmt = text(f"""
            SELECT r.key, r.etag, r.size, f.sha256, f.md5, f.mtime_ns, f.ctime_ns, f.inode
            FROM remote_objects r
            JOIN files f ON f.key = r.key
            WHERE {_PROOF_SQL} AND r.sha_source != 'adopt-copy'
              AND f.scan_error IS NULL AND f.sha256 = r.sha256 AND f.size = r.size
            ORDER BY r.key""")
        for row in self._stream(stmt):
            yield dict(row._mapping)

    def set_metadata_written(self, key: str, old_etag: str, new_etag: str, source: str) -> None:
        """The object now carries our metadata (a copy onto itself gave it `new_etag`, or a
        HEAD found it there already). Only while the manifest still holds `old_etag`."""
        with self._write() as conn:
            conn.execute(text("""UPDATE remote_objects SET etag = :new, sha_source = :src
                                 WHERE key = :key AND etag = :old"""),
                         {"new": new_etag, "src": source, "key": key, "old": old_etag})

    def forget_copied_hash(self, key: str, old_etag: str, new_etag: str) -> None:
        """A copy onto itself gave the object other bytes than the ones proven (another
        writer replaced it between our HEAD and the copy, on a store that ignores
        CopySourceIfMatch): its hash is unknown again, so the next run uploads the file."""
        with self._write() as conn:
            conn.execute(text("""UPDATE remote_objects SET etag = :new, sha256 = NULL,
                                 sha_source = NULL WHERE key = :key AND etag = :old"""),
                         {"new": new_etag, "key": key, "old": old_etag})
