"""Adoption (adopt.py): the whole-file MD5 read in the same pass as a file's SHA-256, kept
while that SHA-256 is, so a peer's MD5 metadata read by HEAD (rclone's md5chksum, s3cmd's
s3cmd-attrs) can prove an object holds the file's bytes. Null for files hashed when no
object of their size was waiting for a proof.

Revision ID: 0008
Revises: 0007
"""
from alembic import op
import sqlalchemy as sa

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("files") as batch:
        batch.add_column(sa.Column("md5", sa.Text))
    with op.batch_alter_table("scan_stage") as batch:
        batch.add_column(sa.Column("md5", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("scan_stage") as batch:
        batch.drop_column("md5")
    with op.batch_alter_table("files") as batch:
        batch.drop_column("md5")
