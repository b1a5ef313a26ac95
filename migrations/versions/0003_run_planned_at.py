"""Record when a run's plan was complete, so --resume never executes half a plan.

Revision ID: 0003
Revises: 0002
"""
from alembic import op
import sqlalchemy as sa

# BIGINT and binary-ordered keys on PostgreSQL; exactly Integer and Text on SQLite
from journalsync.journal.sqltypes import Int

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("planned_at", sa.Float))
        batch.add_column(sa.Column("resumed", Int, nullable=False, server_default="0"))
    op.create_index("ix_multipart_uploads_key", "multipart_uploads", ["key", "state"])


def downgrade() -> None:
    op.drop_index("ix_multipart_uploads_key", "multipart_uploads")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("resumed")
        batch.drop_column("planned_at")
