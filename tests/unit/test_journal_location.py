"""Where a journal lives (journal/location.py): a file, or a job in PostgreSQL named by
--job or by the default file's name; what messages print of a URL (never its password)."""

from __future__ import annotations

from pathlib import Path

import pytest

from journalsync.config import Destination, default_journal_path
from journalsync.errors import UsageError
from journalsync.journal.location import PgLocation, journal_location


def test_a_url_is_a_job_named_like_the_default_file(tmp_path):
    default = default_journal_path(tmp_path, Destination.parse("s3://my.bucket/Host-1"), None)
    where = journal_location("postgresql://u@db:6543/jobs", None, default)
    label, _, digest = default.stem.rpartition("-")
    assert where == PgLocation("postgresql://u@db:6543/jobs", f"j_my_bucket_host_1_{digest}")
    assert where.sqlalchemy_url == "postgresql+psycopg://u@db:6543/jobs"
    assert where.server == "db:6543"
    assert journal_location("postgres://u@db/jobs", "nightly", default).job == "nightly"


def test_a_path_is_a_file_and_a_job_needs_a_url(tmp_path):
    default = tmp_path / "default.sqlite"
    assert journal_location(None, None, default) == default
    assert journal_location("~/j.sqlite", None, default) == Path("~/j.sqlite").expanduser()
    with pytest.raises(UsageError, match="--job names a job in a PostgreSQL journal"):
        journal_location(str(tmp_path / "j.sqlite"), "nightly", default)


def test_the_password_is_never_shown():
    where = PgLocation("postgresql://sync:s3cret@db.example:5432/jobs?sslmode=require", "nightly")
    assert "s3cret" not in str(where) and "s3cret" not in where.redacted
    assert str(where) == "postgresql://sync:***@db.example:5432/jobs?sslmode=require (job nightly)"
    assert where.libpq_url.startswith("postgresql://sync:s3cret@")  # what psycopg is given
