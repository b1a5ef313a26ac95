"""Stream then stamp (issue 14): a large file's upload is created before its SHA-256 is
known, and its metadata written after Complete by a copy of the object onto itself. The
Complete's ETag is journaled (`complete_etag`, state `unstamped`) so a run killed between
the Complete and the copy is stamped by the next one without sending the file again.

Revision ID: 0011
Revises: 0010
"""
from alembic import op
import sqlalchemy as sa

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("multipart_uploads") as batch:
        batch.add_column(sa.Column("complete_etag", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("multipart_uploads") as batch:
        batch.drop_column("complete_etag")
