"""Initial journal: runs, files, the remote manifest, the plan, and per-file scan errors.

Revision ID: 0001
Revises:
"""
from alembic import op
import sqlalchemy as sa

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("finished_at", sa.Float),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("dest", sa.Text, nullable=False),
        sa.Column("endpoint", sa.Text),
        sa.Column("dry_run", sa.Boolean, nullable=False),
        sa.Column("pid", sa.Integer),
        *[sa.Column(name, sa.Integer, nullable=False)
          for name in ("scanned", "uploaded", "skipped", "deleted", "failed", "extra",
                       "symlinks", "bytes")],
        sa.Column("skip_reasons", sa.Text),
        sa.Column("error", sa.Text),
    )
    op.create_table(
        "files",
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("size", sa.Integer),
        sa.Column("mtime_ns", sa.Integer),
        sa.Column("ctime_ns", sa.Integer),
        sa.Column("inode", sa.Integer),
        sa.Column("sha256", sa.Text),
        sa.Column("scan_error", sa.Text),
        sa.Column("seen_run", sa.Integer),
    )
    op.create_table(
        "scan_stage",
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("size", sa.Integer),
        sa.Column("mtime_ns", sa.Integer),
        sa.Column("ctime_ns", sa.Integer),
        sa.Column("inode", sa.Integer),
        sa.Column("sha256", sa.Text),
        sa.Column("error", sa.Text),
    )
    op.create_table(
        "remote_objects",
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("etag", sa.Text, nullable=False),
        sa.Column("last_modified", sa.Float),
        sa.Column("sha256", sa.Text),
        sa.Column("sha_source", sa.Text),
        sa.Column("listed_run", sa.Integer),
    )
    op.create_table(
        "remote_stage",
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("etag", sa.Text, nullable=False),
        sa.Column("last_modified", sa.Float),
    )
    op.create_table(
        "plan_items",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id"), nullable=False),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("size", sa.Integer),
        sa.Column("sha256", sa.Text),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("bytes_sent", sa.Integer, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("updated_at", sa.Float),
    )
    op.create_index("ix_plan_items_run_status", "plan_items", ["run_id", "status", "id"])
    op.create_table(
        "file_errors",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id"), nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
    )
    op.create_index("ix_file_errors_run", "file_errors", ["run_id"])


def downgrade() -> None:
    for table in ("file_errors", "plan_items", "remote_stage", "remote_objects",
                  "scan_stage", "files", "runs"):
        op.drop_table(table)
