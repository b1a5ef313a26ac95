"""A no-op writes only what changed: the staging tables move to the write connection's TEMP
schema (out of the journal file and its WAL), and the per-row scan/LIST marks `files.seen_run`
and `remote_objects.listed_run` go (absence is found by an anti-join with the stage).

Revision ID: 0009
Revises: 0008
"""
from alembic import op
import sqlalchemy as sa

# BIGINT and binary-ordered keys on PostgreSQL; exactly Integer and Text on SQLite
from journalsync.journal.sqltypes import Int, Key

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_table("scan_stage")
    op.drop_table("remote_stage")
    with op.batch_alter_table("files") as batch:
        batch.drop_column("seen_run")
    with op.batch_alter_table("remote_objects") as batch:
        batch.drop_column("listed_run")


def downgrade() -> None:
    with op.batch_alter_table("remote_objects") as batch:
        batch.add_column(sa.Column("listed_run", Int))
    with op.batch_alter_table("files") as batch:
        batch.add_column(sa.Column("seen_run", Int))
    op.create_table(
        "remote_stage",
        sa.Column("key", Key, primary_key=True),
        sa.Column("size", Int, nullable=False),
        sa.Column("etag", sa.Text, nullable=False),
        sa.Column("last_modified", sa.Float),
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
        sa.Column("md5", sa.Text),
    )
