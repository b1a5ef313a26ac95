"""The PostgreSQL counterparts of test_exit_codes.py's journal-file faults (those are
sqlite_only): a journal damaged by hand (a table dropped: on both journals), and a role that
may read the job but not write it (a read-only file's counterpart). Each is one line and
exit 5 (the journal cannot be used), never 70."""

from __future__ import annotations

import uuid

import pytest

from tests.faults.test_exit_codes import one_line, synced

pytestmark = pytest.mark.one_server
ON_PG = pytest.mark.parametrize("journal_kind", ["postgresql"], indirect=True)


def test_a_journal_missing_a_table_is_one_line_exit_5(sync, s3client):
    """On both journals: a table dropped by hand (psql, sqlite3) stops the run with one line
    that names the journal (the job, or the file), and the store is not blamed."""
    synced(sync)
    sync.journal_rows("DROP TABLE files")
    result = sync.run()
    assert result.code == 5, result.err
    one_line(result, "files", sync.job if sync.on_pg else str(sync.journal))
    assert "cannot list" not in result.err
    # The run's row keeps that one line (status prints it), not the driver's text and SQL.
    (error,) = sync.journal_rows("SELECT error FROM runs ORDER BY id DESC LIMIT 1")[0]
    assert error and "\n" not in error and "[SQL" not in error and "files" in error, error


@ON_PG
def test_a_role_that_may_only_read_the_job_is_one_line_exit_5(sync):
    synced(sync)
    role = f"js_ro_{uuid.uuid4().hex[:10]}"
    owner = sync.journal
    database = owner.rsplit("/", 1)[1]
    grants = [f"CREATE ROLE {role} LOGIN", f'GRANT CONNECT ON DATABASE "{database}" TO {role}',
              f"GRANT USAGE ON SCHEMA journalsync, {sync.job} TO {role}",
              f"GRANT SELECT ON ALL TABLES IN SCHEMA journalsync TO {role}",
              f"GRANT SELECT ON ALL TABLES IN SCHEMA {sync.job} TO {role}"]
    for statement in grants:
        sync.journal_rows(statement)
    try:
        sync.journal = "postgresql://" + role + "@" + owner.split("://", 1)[1].split("@", 1)[1]
        sync.write("new.txt", b"new")
        result = sync.run()
        assert result.code == 5, result.err
        one_line(result, "permission denied")
        assert sync.cli("status", *sync.journal_args()).code == 0  # reading is allowed
    finally:
        sync.journal = owner
        sync.journal_rows(f"DROP OWNED BY {role}")
        sync.journal_rows(f"DROP ROLE {role}")
