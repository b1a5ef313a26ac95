"""Initial journal: runs, files, the remote manifest, the plan, and per-file scan errors.

Revision ID: 0001
Revises:
"""
from alembic import op
import sqlalchemy as sa

# BIGINT and binary-ordered keys on PostgreSQL; exactly Integer and Text on SQLite
from journalsync.journal.sqltypes import Int, Key

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", Int, primary_key=True),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("finished_at", sa.Float),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("dest", sa.Text, nullable=False),
        sa.Column("endpoint", sa.Text),
        sa.Column("dry_run", sa.Boolean, nullable=False),
        sa.Column("pid", Int),
        *[sa.Column(name, Int, nullable=False)
          for name in ("scanned", "uploaded", "skipped", "deleted", "failed", "extra",
                       "symlinks", "bytes")],
        sa.Column("skip_reasons", sa.Text),
        sa.Column("error", sa.Text),
    )
    op.create_table(
        "files",
        sa.Column("key", Key, primary_key=True),
        sa.Column("path", Key, nullable=False),
        sa.Column("size", Int),
        sa.Column("mtime_ns", Int),
        sa.Column("ctime_ns", Int),
        sa.Column("inode", Int),
        sa.Column("sha256", sa.Text),
        sa.Column("scan_error", sa.Text),
        sa.Column("seen_run", Int),
    )
    op.create_table(
        "scan_stage",
        sa.Column("key", Key, primary_key=True),
        sa.Column("path", Key, nullable=False),
        sa.Column("size", Int),
        sa.Column("mtime_ns", Int),
        sa.Column("ctime_ns", Int),
        sa.Column("inode", Int),
        sa.Column("sha256", sa.Text),
        sa.Column("error", sa.Text),
    )
    op.create_table(
        "remote_objects",
        sa.Column("key", Key, primary_key=True),
        sa.Column("size", Int, nullable=False),
        sa.Column("etag", sa.Text, nullable=False),
        sa.Column("last_modified", sa.Float),
        sa.Column("sha256", sa.Text),
        sa.Column("sha_source", sa.Text),
        sa.Column("listed_run", Int),
    )
    op.create_table(
        "remote_stage",
        sa.Column("key", Key, primary_key=True),
        sa.Column("size", Int, nullable=False),
        sa.Column("etag", sa.Text, nullable=False),
        sa.Column("last_modified", sa.Float),
    )
    op.create_table(
        "plan_items",
        sa.Column("id", Int, primary_key=True),
        sa.Column("run_id", Int, sa.ForeignKey("runs.id"), nullable=False),
        sa.Column("key", Key, nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("size", Int),
        sa.Column("sha256", sa.Text),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("attempts", Int, nullable=False),
        sa.Column("bytes_sent", Int, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("updated_at", sa.Float),
    )
    op.create_index("ix_plan_items_run_status", "plan_items", ["run_id", "status", "id"])
    op.create_table(
        "file_errors",
        sa.Column("id", Int, primary_key=True),
        sa.Column("run_id", Int, sa.ForeignKey("runs.id"), nullable=False),
        sa.Column("path", Key, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
    )
    op.create_index("ix_file_errors_run", "file_errors", ["run_id"])


def downgrade() -> None:
    for table in ("file_errors", "plan_items", "remote_stage", "remote_objects",
                  "scan_stage", "files", "runs"):
        op.drop_table(table)
