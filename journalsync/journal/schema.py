"""The journal's tables, at the head revision. Migrations in migrations/versions build exactly
this (a test compares them), so an old journal and a new one end in the same shape.

Keys everywhere are relative to the destination prefix.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
)

from journalsync.journal.sqltypes import Int, Key

# Int (BIGINT on PostgreSQL) and Key (binary collation there): sqltypes.py.

metadata = MetaData()

runs = Table(
    "runs",
    metadata,
    Column("id", Int, primary_key=True),
    Column("started_at", Float, nullable=False),
    Column("finished_at", Float),
    # running | done | partial | failed | interrupted
    Column("state", Text, nullable=False),
    Column("source", Text, nullable=False),
    Column("dest", Text, nullable=False),
    Column("endpoint", Text),
    Column("dry_run", Boolean, nullable=False, default=False),
    Column("pid", Int),
    Column("scanned", Int, nullable=False, default=0),
    Column("uploaded", Int, nullable=False, default=0),
    Column("skipped", Int, nullable=False, default=0),
    Column("deleted", Int, nullable=False, default=0),
    Column("failed", Int, nullable=False, default=0),
    Column("extra", Int, nullable=False, default=0),
    Column("symlinks", Int, nullable=False, default=0),
    Column("bytes", Int, nullable=False, default=0),
    Column("skip_reasons", Text),  # JSON object: reason -> count
    Column("error", Text),  # the fatal error that ended the run, if any
    Column("planned_at", Float),  # set once the whole plan is stored: only then is it resumable
    Column("resumed", Int, nullable=False, default=0, server_default="0"),  # times resumed
    Column("remote_total", Int),  # objects under the prefix at planning: the guard's base
    Column("listed_at", Float),  # when this run's LIST of the prefix completed
    # Seconds the run took, summed over its tries (a resumed run adds each try's): the
    # summary's elapsed= and status's secs are this one number.
    Column("elapsed", Float),
)

# One row per regular file under the source root, as of the last scan.
files = Table(
    "files",
    metadata,
    Column("key", Key, primary_key=True),
    Column("path", Key, nullable=False),
    Column("size", Int),
    Column("mtime_ns", Int),
    Column("ctime_ns", Int),
    Column("inode", Int),
    Column("sha256", Text),
    # The whole-file MD5 from the same read as sha256 (adopt.py), only for files read as
    # adoption candidates; dropped whenever sha256 is dropped or changes.
    Column("md5", Text),
    # Set when the last scan could not read the file; its last good row is kept so the
    # remote object is never mistaken for an extra.
    Column("scan_error", Text),
)

# Staging tables live in the write connection's TEMP schema, not in the journal file: a
# first run stages every file and every object (a no-op only what differs: diffstage.py),
# and none of that needs to reach the WAL.
# Only the differences between a stage and its table are written to the journal.
staging = MetaData()

# Per-scan staging of what the walk saw, joined against `files` in one statement.
scan_stage = Table(
    "scan_stage",
    staging,
    Column("key", Key, primary_key=True),
    Column("path", Key, nullable=False),
    Column("size", Int),
    Column("mtime_ns", Int),
    Column("ctime_ns", Int),
    Column("inode", Int),
    Column("sha256", Text),
    Column("error", Text),
    Column("md5", Text),
    prefixes=["TEMPORARY"],
    sqlite_with_rowid=False,  # the key is stored once, not in a table and again in its index
)

# The cached remote manifest: every object under the prefix at the last LIST.
remote_objects = Table(
    "remote_objects",
    metadata,
    Column("key", Key, primary_key=True),
    Column("size", Int, nullable=False),
    Column("etag", Text, nullable=False),
    Column("last_modified", Float),
    # Known from our own upload (while size and ETag still match) or from HEAD metadata.
    Column("sha256", Text),
    # upload | head | an adoption proof (adopt.py: etag-md5, multipart-etag:8MiB,
    # rclone-md5, s3cmd-md5) | adopt-copy (--adopt-metadata wrote our metadata onto it)
    Column("sha_source", Text),
)

# Per-LIST staging of the objects listed (TEMP, like scan_stage).
remote_stage = Table(
    "remote_stage",
    staging,
    Column("key", Key, primary_key=True),
    Column("size", Int, nullable=False),
    Column("etag", Text, nullable=False),
    Column("last_modified", Float),
    prefixes=["TEMPORARY"],
    sqlite_with_rowid=False,  # the key is stored once, not in a table and again in its index
)

# What a diff scan or LIST found gone (TEMP): a no-op stages only the differences between
# the walk (or a LIST page) and the journal, so the stages above no longer hold every key
# and what is gone is recorded here (journal/diffstage.py).
scan_gone = Table("scan_gone", staging, Column("key", Key, primary_key=True),
                  prefixes=["TEMPORARY"], sqlite_with_rowid=False)
remote_gone = Table("remote_gone", staging, Column("key", Key, primary_key=True),
                    prefixes=["TEMPORARY"], sqlite_with_rowid=False)

plan_items = Table(
    "plan_items",
    metadata,
    Column("id", Int, primary_key=True),
    Column("run_id", Int, ForeignKey("runs.id"), nullable=False),
    Column("key", Key, nullable=False),
    Column("action", Text, nullable=False),  # upload | delete
    Column("reason", Text, nullable=False),
    Column("size", Int),
    Column("sha256", Text),
    Column("etag", Text),  # deletes: the object's ETag when planned (re-checked on resume)
    # pending | done | failed | cancelled (a re-check found the plan stale: not done, not failed)
    Column("status", Text, nullable=False, default="pending"),
    Column("attempts", Int, nullable=False, default=0),
    Column("bytes_sent", Int, nullable=False, default=0),
    Column("error", Text),
    Column("updated_at", Float),
    # The work unit (chunks, below) an upload row belongs to; deletes have none.
    Column("chunk_id", Int),
    Index("ix_plan_items_run_status", "run_id", "status", "id"),
    Index("ix_plan_items_run_key", "run_id", "key"),
    Index("ix_plan_items_chunk", "chunk_id"),
)

# Files the scan could not turn into a key or read: they fail alone, the rest continue.
file_errors = Table(
    "file_errors",
    metadata,
    Column("id", Int, primary_key=True),
    Column("run_id", Int, ForeignKey("runs.id"), nullable=False),
    Column("path", Key, nullable=False),
    Column("reason", Text, nullable=False),
    Index("ix_file_errors_run", "run_id"),
)

# Every multipart UploadId we create, committed before the first part is sent.
multipart_uploads = Table(
    "multipart_uploads",
    metadata,
    Column("upload_id", Text, primary_key=True),
    Column("key", Key, nullable=False),
    Column("run_id", Int, ForeignKey("runs.id"), nullable=False),
    Column("plan_item_id", Int),
    Column("part_size", Int, nullable=False),
    Column("size", Int, nullable=False),
    Column("mtime_ns", Int, nullable=False),
    Column("ctime_ns", Int, nullable=False),
    Column("inode", Int, nullable=False),
    Column("sha256", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    # creating (an intent, journal/uploads.py: record_create_intent) | active | unstamped
    # (completed, its sha256 metadata not yet written: multipart.py's
    # stream then stamp) | completed | aborted
    Column("state", Text, nullable=False),
    Column("complete_etag", Text),  # the Complete's ETag, for the stamp (state unstamped)
    Index("ix_multipart_uploads_state", "state"),
    Index("ix_multipart_uploads_key", "key", "state"),
)

multipart_parts = Table(
    "multipart_parts",
    metadata,
    Column("upload_id", Text, ForeignKey("multipart_uploads.upload_id"), nullable=False),
    Column("part_number", Int, nullable=False),
    Column("etag", Text, nullable=False),
    Column("size", Int, nullable=False),
    # workers.id of the process that sent it, for a part of a shared upload (sharedparts.py);
    # NULL when one process sends the whole file.
    Column("sent_by", Int),
    PrimaryKeyConstraint("upload_id", "part_number"),
)

# Work units of a run's uploads (journal/chunks.py): claimed by one worker at a time under a
# lease, and fenced by epoch: a claim bumps it, and every completion is written only while
# the chunk's epoch is still the writer's. No foreign key to runs: housekeeping prunes runs
# first and their chunks after (chunks.prune_chunks), which an enforced key would refuse.
chunks = Table(
    "chunks",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("run_id", Int, nullable=False),
    Column("state", Text, nullable=False),  # pending | claimed | done
    Column("files", Int, nullable=False),
    Column("bytes", Int, nullable=False),
    Column("owner", Int),  # workers.id of the holder
    Column("epoch", Int, nullable=False, default=0, server_default="0"),
    Column("lease_until", Float),
    Column("claimed_at", Float),
    Column("done_at", Float),
    Index("ix_chunks_run_state", "run_id", "state", "id"),
)

# A shared large file's parts (sharedparts.py, PostgreSQL only): ranges of part numbers of one
# journaled UploadId, claimed like chunks (lease, epoch); `crcs` holds each part's
# CRC64-NVME from the owner's pre-hash (a JSON list, first_part first), against which every
# sender checks the bytes it read before it sends them.
part_units = Table(
    "part_units",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("run_id", Int, nullable=False),
    Column("upload_id", Text, nullable=False),
    Column("first_part", Int, nullable=False),
    Column("last_part", Int, nullable=False),
    Column("crcs", Text, nullable=False),
    Column("state", Text, nullable=False),  # pending | claimed | done
    Column("owner", Int),  # workers.id of the holder
    Column("epoch", Int, nullable=False, default=0, server_default="0"),
    Column("lease_until", Float),
    Column("claimed_at", Float),
    Column("done_at", Float),
    Index("ix_part_units_run_state", "run_id", "state", "id"),
    # Unique: two owners making one upload's units at once make them once (migration 0013).
    Index("ix_part_units_upload", "upload_id", "first_part", unique=True),
)

# Every process that works a run's chunks: the run itself and each `journalsync worker`.
workers = Table(
    "workers",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("run_id", Int, nullable=False),
    Column("host", Text, nullable=False),
    Column("pid", Int, nullable=False),
    Column("started_at", Float, nullable=False),
    Column("heartbeat_at", Float),
    Column("chunks_done", Int, nullable=False, default=0, server_default="0"),
    Column("bytes_done", Int, nullable=False, default=0, server_default="0"),
    Column("state", Text, nullable=False),  # working | done | stopped
    Index("ix_workers_run", "run_id"),
)
