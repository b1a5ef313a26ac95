"""A shared upload's units once each (issue 15): `ix_part_units_upload` (upload_id,
first_part) becomes unique, so that make_part_units inserts them with ON CONFLICT DO
NOTHING: two owners of one upload making its units at once (a chunk taken over while its
first owner was still at it) made them twice. Units made twice before are kept once: the
oldest of each (upload, first part), parts being journaled by upload and number, not unit.

Revision ID: 0013
Revises: 0012
"""
from alembic import op
import sqlalchemy as sa

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(sa.text("""
        DELETE FROM part_units WHERE id NOT IN (
            SELECT min(id) FROM part_units GROUP BY upload_id, first_part)"""))
    op.drop_index("ix_part_units_upload", table_name="part_units")
    op.create_index("ix_part_units_upload", "part_units", ["upload_id", "first_part"],
                    unique=True)


def downgrade() -> None:
    op.drop_index("ix_part_units_upload", table_name="part_units")
    op.create_index("ix_part_units_upload", "part_units", ["upload_id", "first_part"])
