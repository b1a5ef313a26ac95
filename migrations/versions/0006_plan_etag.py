"""The ETag each planned delete was planned against: a resumed run deletes an object only
while the store still holds that same object (a re-LIST compares them). And an index by
(run, key): a resumed run re-planning finds the keys its plan already holds.

Revision ID: 0006
Revises: 0005
"""
from alembic import op
import sqlalchemy as sa

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("plan_items") as batch:
        batch.add_column(sa.Column("etag", sa.Text))
    op.create_index("ix_plan_items_run_key", "plan_items", ["run_id", "key"])


def downgrade() -> None:
    op.drop_index("ix_plan_items_run_key", table_name="plan_items")
    with op.batch_alter_table("plan_items") as batch:
        batch.drop_column("etag")
