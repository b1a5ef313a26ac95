"""A no-op writes only what changed: the staging tables move to the write connection's TEMP
schema (out of the journal file and its WAL), and the per-row scan/LIST marks `files.seen_run`
and `remote_objects.listed_run` go (absence is found by an anti-join with the stage).

Revision ID: 0009
Revises: 0008
"""
from alembic import op
import sqlalchemy as sa

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
        batch.add_column(sa.Column("listed_run", sa.Integer))
    with op.batch_alter_table("files") as batch:
        batch.add_column(sa.Column("seen_run", sa.Integer))
    op.create_table(
        "remote_stage",
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("etag", sa.Text, nullable=False),
        sa.Column("last_modified", sa.Float),
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
        sa.Column("md5", sa.Text),
    )
