"""A large file's parts as claimable units (issue 15): `part_units` (ranges of one
journaled UploadId's parts, with each part's CRC64-NVME from the owner's pre-hash, claimed
under a lease and fenced by epoch like chunks) and `multipart_parts.sent_by` (the worker
that sent a part of a shared upload).

Revision ID: 0012
Revises: 0011
"""
from alembic import op
import sqlalchemy as sa

from journalsync.journal.sqltypes import Int

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "part_units",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("run_id", Int, nullable=False),
        sa.Column("upload_id", sa.Text, nullable=False),
        sa.Column("first_part", Int, nullable=False),
        sa.Column("last_part", Int, nullable=False),
        sa.Column("crcs", sa.Text, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("owner", Int),
        sa.Column("epoch", Int, nullable=False, server_default="0"),
        sa.Column("lease_until", sa.Float),
        sa.Column("claimed_at", sa.Float),
        sa.Column("done_at", sa.Float),
    )
    op.create_index("ix_part_units_run_state", "part_units", ["run_id", "state", "id"])
    op.create_index("ix_part_units_upload", "part_units", ["upload_id", "first_part"])
    with op.batch_alter_table("multipart_parts") as batch:
        batch.add_column(sa.Column("sent_by", Int))


def downgrade() -> None:
    with op.batch_alter_table("multipart_parts") as batch:
        batch.drop_column("sent_by")
    op.drop_index("ix_part_units_upload", table_name="part_units")
    op.drop_index("ix_part_units_run_state", table_name="part_units")
    op.drop_table("part_units")
