"""The journal on real SQLite files (and, where it is the same code, in PostgreSQL:\njournal_at): migrations, schema, WAL, batched scan folding."""

from __future__ import annotations

import sqlite3

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine

from journalsync.journal import Journal
from journalsync.journal import migrate
from journalsync.journal.schema import metadata


def test_head_constant_matches_the_scripts():
    assert migrate.HEAD_REVISION == migrate.script_head()


def test_new_journal_is_at_head_and_matches_schema(tmp_path):
    path = tmp_path / "j.sqlite"
    Journal(path).close()
    engine = create_engine(f"sqlite:///{path}")
    assert migrate.current_revision(engine) == migrate.HEAD_REVISION
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == [], diff  # the migrations build exactly schema.py
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_new_journal_schema_is_the_one_the_migrations_build(tmp_path):
    """A new SQLite journal is given headddl.py's schema in one transaction, not migrated
    step by step: it must be exactly what the migrations build (regenerate headddl.py with
    `python -m journalsync.devtools.headddl` after adding a migration)."""
    from journalsync.journal import headddl

    assert headddl.REVISION == migrate.HEAD_REVISION, "regenerate journalsync/journal/headddl.py"
    assert list(headddl.STATEMENTS) == migrate.statements_from_migrations(), \
        "regenerate journalsync/journal/headddl.py"
    by_alembic, new = tmp_path / "alembic.sqlite", tmp_path / "new.sqlite"
    engine = create_engine(f"sqlite:///{by_alembic}")
    migrate.upgrade_to_head(engine, target=migrate.HEAD_REVISION)  # an explicit target: Alembic
    engine.dispose()
    Journal(new).close()
    assert migrate.schema_rows(new) == migrate.schema_rows(by_alembic)
    for path in (by_alembic, new):
        with sqlite3.connect(path) as db:
            assert db.execute("SELECT version_num FROM alembic_version").fetchall() == [
                (migrate.HEAD_REVISION,)]
            tables = [r[0] for r in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
            assert all(db.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] == 0
                       for t in tables if t != "alembic_version")
        db.close()
    assert sqlite3.connect(new).execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental


def test_a_file_with_tables_of_its_own_is_not_given_the_new_schema(tmp_path):
    """Only a file holding none of the journal's tables is created at head in one go; any
    other is left as it was for Alembic to judge."""
    path = tmp_path / "other.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE runs (x)")
        db.execute("INSERT INTO runs VALUES (7)")
    db.close()
    engine = create_engine(f"sqlite:///{path}")
    assert migrate.create_at_head(engine) is False
    engine.dispose()
    with sqlite3.connect(path) as db:
        assert [r[0] for r in db.execute("SELECT name FROM sqlite_master")] == ["runs"]
        assert db.execute("SELECT x FROM runs").fetchall() == [(7,)]
    db.close()


def test_two_processes_creating_one_new_journal_both_open_it_at_head(tmp_path):
    import threading

    path, errors = tmp_path / "race.sqlite", []

    def open_it():
        try:
            Journal(path).close()
        except Exception as exc:  # noqa: BLE001 - reported by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchall() == [
            (migrate.HEAD_REVISION,)]
    db.close()


def test_an_upgrade_that_fails_half_way_leaves_the_journal_as_it_was(tmp_path):
    """SQLite does DDL inside a transaction only if one was begun, and its Python driver
    begins one only before DML: an upgrade that failed (or was killed) after some of its
    DDL kept that DDL but not the version, so every later open failed again on it
    ("table ... already exists") until the journal was deleted. Here 0010 fails on a table
    in its way; everything 0002..0009 did is undone with it."""
    import pytest
    from sqlalchemy.exc import OperationalError

    path = tmp_path / "old.sqlite"
    engine = create_engine(f"sqlite:///{path}")
    migrate.upgrade_to_head(engine, target="0001")
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE chunks (x)")  # 0010 creates a table of this name
    db.close()
    before = sorted(sqlite3.connect(path).execute("SELECT type, name, sql FROM sqlite_master"))
    with pytest.raises(OperationalError, match="chunks"):
        migrate.upgrade_to_head(engine)
    engine.dispose()
    assert migrate.current_revision(create_engine(f"sqlite:///{path}")) == "0001"
    assert sorted(sqlite3.connect(path).execute("SELECT type, name, sql FROM sqlite_master")) == before


def test_old_revision_journal_upgrades_keeping_its_rows(tmp_path):
    path = tmp_path / "old.sqlite"
    engine = create_engine(f"sqlite:///{path}")
    migrate.upgrade_to_head(engine, target="0001")  # a journal written by an older release
    assert migrate.current_revision(engine) == "0001"
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO files (key, path, size, mtime_ns, ctime_ns, inode, sha256, seen_run)"
                   " VALUES ('a.txt', 'a.txt', 1, 2, 3, 4, 'ab', 1)")
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "multipart_uploads" not in tables
    engine.dispose()

    with Journal(path) as journal:
        assert journal.active_uploads() == []
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchone()[0] == migrate.HEAD_REVISION
        assert db.execute("SELECT key, sha256 FROM files").fetchall() == [("a.txt", "ab")]
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"multipart_uploads", "multipart_parts"} <= tables


def test_commit_scan_keeps_unreadable_and_drops_gone(journal_at):
    with Journal(journal_at) as journal:
        def row(key, size=1, error=None, sha=None):
            return {"key": key, "path": key, "size": size, "mtime_ns": 1, "ctime_ns": 1,
                    "inode": 1, "sha256": sha, "error": error}

        journal.begin_scan()
        journal.stage_files([row("keep", sha="k"), row("gone", sha="g"), row("later", sha="l"),
                             row("dir/inner", sha="i")])
        journal.commit_scan(1)
        journal.begin_scan()
        journal.stage_files([row("keep"), row("later", error="cannot read: Permission denied")])
        journal.commit_scan(2, unreadable_dirs=[("dir", "cannot list directory")])
        inputs = {local.key: local.sha256 for local, _ in journal.iter_plan_inputs()}
        assert inputs == {"keep": "k"}  # unchanged keeps its hash; errors are not planned
        assert journal.scan_error_count() == 2  # "later" and "dir/inner" kept, flagged
        journal.begin_listing()
        journal.stage_remote([(k, 1, "e", 0.0)
                              for k in ("keep", "later", "dir/inner", "gone")])
        journal.commit_listing(2)
        assert [r.key for r in journal.iter_extras()] == ["gone"]  # only "gone" is an extra


def test_listing_keeps_hash_only_while_size_and_etag_match(journal_at):
    with Journal(journal_at) as journal:
        def listing(run, rows):
            journal.begin_listing()
            journal.stage_remote([(k, s, e, 0.0)
                                  for k, s, e in rows])
            journal.commit_listing(run)

        listing(1, [("a", 1, "e1"), ("b", 1, "e1"), ("c", 1, "e1")])
        journal.set_remote_hashes([{"key": k, "etag": "e1", "sha256": "h" + k} for k in "abc"])
        listing(2, [("a", 1, "e1"), ("b", 1, "e2"), ("c", 2, "e1")])
        journal.begin_scan()
        journal.stage_files([{"key": k, "path": k, "size": 1, "mtime_ns": 1, "ctime_ns": 1,
                              "inode": 1, "sha256": "x", "error": None} for k in "abc"])
        journal.commit_scan(2)
        remote = {local.key: r.sha256 for local, r in journal.iter_plan_inputs()}
        assert remote == {"a": "ha", "b": None, "c": None}


def test_two_names_of_one_key_are_both_refused(journal_at):
    """Two local names that normalise to one key mark the key, whether they arrive in one
    staging batch or in two (PostgreSQL stages a batch in one statement: pg.py)."""
    def row(key, path):
        return {"key": key, "path": path, "size": 1, "mtime_ns": 1, "ctime_ns": 1, "inode": 1,
                "sha256": None, "error": None}

    with Journal(journal_at) as journal:
        journal.begin_scan()
        journal.stage_files([row("café", "cafe\u0301"), row("café", "caf\u00e9"), row("a", "a")])
        journal.stage_files([row("b", "b")])
        journal.stage_files([row("b", "b2"), row("c", "c")])
        assert [key for key, _ in journal.staged_collisions()] == ["b", "café"]
        with journal._read() as conn:
            paths = dict(conn.exec_driver_sql("SELECT key, path FROM scan_stage").all())
        assert paths == {"café": "cafe\u0301", "a": "a", "b": "b", "c": "c"}  # the first name's row
