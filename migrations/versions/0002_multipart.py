"""Multipart uploads we own: the UploadId, part size and file identity, then each part.

Revision ID: 0002
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa

# BIGINT and binary-ordered keys on PostgreSQL; exactly Integer and Text on SQLite
from journalsync.journal.sqltypes import Int, Key

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "multipart_uploads",
        sa.Column("upload_id", sa.Text, primary_key=True),
        sa.Column("key", Key, nullable=False),
        sa.Column("run_id", Int, sa.ForeignKey("runs.id"), nullable=False),
        sa.Column("plan_item_id", Int),
        sa.Column("part_size", Int, nullable=False),
        sa.Column("size", Int, nullable=False),
        sa.Column("mtime_ns", Int, nullable=False),
        sa.Column("ctime_ns", Int, nullable=False),
        sa.Column("inode", Int, nullable=False),
        sa.Column("sha256", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
    )
    op.create_index("ix_multipart_uploads_state", "multipart_uploads", ["state"])
    op.create_table(
        "multipart_parts",
        sa.Column("upload_id", sa.Text, sa.ForeignKey("multipart_uploads.upload_id"),
                  nullable=False),
        sa.Column("part_number", Int, nullable=False),
        sa.Column("etag", sa.Text, nullable=False),
        sa.Column("size", Int, nullable=False),
        sa.PrimaryKeyConstraint("upload_id", "part_number"),
    )


def downgrade() -> None:
    op.drop_table("multipart_parts")
    op.drop_table("multipart_uploads")
