"""Migration 0012 (part_units, multipart_parts.sent_by) on a journal with rows, SQLite and
PostgreSQL: a journal taken back to 0011 holding an active upload and its parts (as an older
release wrote it) is upgraded on open, keeps them, and can share that upload's parts. And
0013 (units unique by upload and first part) on a journal whose units were made twice."""

from __future__ import annotations

import time

from alembic import command
from sqlalchemy import create_engine, text

from journalsync.journal import Journal, UploadRecord, migrate
from journalsync.journal.location import PgLocation


def _engine(where):
    if isinstance(where, PgLocation):
        return create_engine(where.sqlalchemy_url,
                             connect_args={"options": f"-c search_path={where.job}"})
    return create_engine(f"sqlite:///{where}")


def test_0011_journal_with_parts_upgrades_to_0012_and_shares_them(journal_at):
    with Journal(journal_at) as journal:
        run_id = journal.start_run("/src", "s3://b/p", None, False)
    engine = _engine(journal_at)
    try:
        cfg = migrate.alembic_config()
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0011")
        assert migrate.current_revision(engine) == "0011"
        with engine.begin() as conn:
            assert "sent_by" not in [r[0] for r in conn.execute(
                text("SELECT * FROM multipart_parts")).keys()]
            conn.execute(text(
                "INSERT INTO multipart_uploads (upload_id, key, run_id, part_size, size,"
                " mtime_ns, ctime_ns, inode, sha256, created_at, state)"
                " VALUES ('up-1', 'big.bin', :r, 5, 15, 1, 1, 1, :s, :t, 'active')"),
                {"r": run_id, "s": "ab" * 32, "t": time.time()})
            for n in (1, 2):
                conn.execute(text("INSERT INTO multipart_parts (upload_id, part_number, etag,"
                                  " size) VALUES ('up-1', :n, :e, 5)"), {"n": n, "e": f'"e{n}"'})
    finally:
        engine.dispose()

    with Journal(journal_at) as journal:  # upgraded on open
        rec = journal.active_upload_for("big.bin")
        assert isinstance(rec, UploadRecord) and rec.upload_id == "up-1"
        assert journal.part_rows("up-1") == {1: ('"e1"', 5, None), 2: ('"e2"', 5, None)}
        assert journal.unit_crcs("up-1") == {}
        assert journal.make_part_units(run_id, "up-1", [(1, 2, [11, 12]), (3, 3, [13])]) == 2
        unit = journal.claim_part_unit(run_id, 7, 30)
        assert (unit.first, unit.last, unit.crc(2)) == (1, 2, 12)
        assert journal.close_unit(unit, 30)  # both its parts were journaled before 0012
        unit = journal.claim_part_unit(run_id, 7, 30)
        assert journal.record_unit_part(unit, 3, '"e3"', 5, 7, 30)
        assert journal.close_unit(unit, 30) and journal.units_left("up-1") == 0
        assert journal.part_rows("up-1")[3] == ('"e3"', 5, 7)
    engine = _engine(journal_at)
    try:
        assert migrate.current_revision(engine) == migrate.HEAD_REVISION
    finally:
        engine.dispose()


def test_0012_journal_with_units_made_twice_upgrades_to_0013_keeping_the_oldest(journal_at):
    """Before 0013 two owners could make one upload's units twice (make_part_units looked,
    then inserted): the upgrade keeps the oldest unit of each (upload, first part), and
    from then on the units are made once."""
    with Journal(journal_at) as journal:
        run_id = journal.start_run("/src", "s3://b/p", None, False)
        journal.record_upload(UploadRecord("up-1", "big.bin", run_id, 5, 15, 1, 1, 1,
                                           "ab" * 32, time.time(), "active"), None)
    engine = _engine(journal_at)
    try:
        cfg = migrate.alembic_config()
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0012")
        with engine.begin() as conn:
            for first, last, state in ((1, 2, "done"), (3, 3, "pending"), (1, 2, "pending"),
                                       (3, 3, "pending")):
                conn.execute(text(
                    "INSERT INTO part_units (run_id, upload_id, first_part, last_part, crcs,"
                    " state, epoch) VALUES (:r, 'up-1', :f, :l, '[1]', :s, 0)"),
                    {"r": run_id, "f": first, "l": last, "s": state})
    finally:
        engine.dispose()

    with Journal(journal_at) as journal:  # upgraded on open
        assert journal.units_left("up-1") == 1  # the oldest (1, 2) is the done one
        assert journal.make_part_units(run_id, "up-1", [(1, 2, [1, 2]), (3, 3, [3])]) == 2
        assert [journal.claim_part_unit(run_id, 7, 30).first,
                journal.claim_part_unit(run_id, 7, 30)] == [3, None]
    engine = _engine(journal_at)
    try:
        assert migrate.current_revision(engine) == migrate.HEAD_REVISION == "0013"
    finally:
        engine.dispose()
