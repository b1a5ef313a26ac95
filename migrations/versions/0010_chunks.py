"""Work units for many workers (issue 15): `chunks` (claimed under a lease, fenced by epoch),
`plan_items.chunk_id`, and `workers` (each process working a run, for status).

Revision ID: 0010
Revises: 0009
"""
from alembic import op
import sqlalchemy as sa

# BIGINT on PostgreSQL (a chunk of one huge file, a worker's bytes); exactly Integer on SQLite
from journalsync.journal.sqltypes import Int

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "chunks",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("run_id", Int, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("files", Int, nullable=False),
        sa.Column("bytes", Int, nullable=False),
        sa.Column("owner", Int),
        sa.Column("epoch", Int, nullable=False, server_default="0"),
        sa.Column("lease_until", sa.Float),
        sa.Column("claimed_at", sa.Float),
        sa.Column("done_at", sa.Float),
    )
    op.create_index("ix_chunks_run_state", "chunks", ["run_id", "state", "id"])
    op.create_table(
        "workers",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("run_id", Int, nullable=False),
        sa.Column("host", sa.Text, nullable=False),
        sa.Column("pid", Int, nullable=False),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("heartbeat_at", sa.Float),
        sa.Column("chunks_done", Int, nullable=False, server_default="0"),
        sa.Column("bytes_done", Int, nullable=False, server_default="0"),
        sa.Column("state", sa.Text, nullable=False),
    )
    op.create_index("ix_workers_run", "workers", ["run_id"])
    with op.batch_alter_table("plan_items") as batch:
        batch.add_column(sa.Column("chunk_id", Int))
    op.create_index("ix_plan_items_chunk", "plan_items", ["chunk_id"])


def downgrade() -> None:
    op.drop_index("ix_plan_items_chunk", table_name="plan_items")
    with op.batch_alter_table("plan_items") as batch:
        batch.drop_column("chunk_id")
    op.drop_index("ix_workers_run", table_name="workers")
    op.drop_table("workers")
    op.drop_index("ix_chunks_run_state", table_name="chunks")
    op.drop_table("chunks")
