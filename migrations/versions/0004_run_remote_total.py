"""Remember how many objects were under the prefix when a run was planned: the delete
guard's percentage is of that number, also when the run is resumed.

Revision ID: 0004
Revises: 0003
"""
from alembic import op
import sqlalchemy as sa

# BIGINT and binary-ordered keys on PostgreSQL; exactly Integer and Text on SQLite
from journalsync.journal.sqltypes import Int

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("remote_total", Int))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("remote_total")
