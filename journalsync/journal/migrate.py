"""Bring a journal to the newest schema with Alembic when it is opened.

Alembic records the revision in `alembic_version` inside the same transaction as the
migration (on PostgreSQL, in the job's schema; on SQLite in a transaction begun
explicitly, as its driver would leave DDL in autocommit), so a crash mid-upgrade leaves the
journal at the old revision, not half-way.
Opening an up-to-date journal reads one row and does not import Alembic at all (it costs
about a quarter of a second); HEAD_REVISION is checked against the scripts by a test.
A brand-new SQLite journal is not migrated step by step either: it is given the newest
schema in one transaction (create_at_head, from headddl.py, which a test checks against a
journal the migrations built).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # catalog.py reads HEAD_REVISION without SQLAlchemy
    from sqlalchemy import Engine

HEAD_REVISION = "0013"


def migrations_dir() -> Path:
    """The migrations folder: shipped as the package journalsync.migrations."""
    return Path(str(resources.files("journalsync.migrations")))


def alembic_config():
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(migrations_dir()))
    return cfg


def script_head() -> str:
    """The head revision according to the migration scripts themselves."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    from sqlalchemy import text

    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":  # in the job's schema (its search_path)
            exists = conn.execute(text("SELECT to_regclass('alembic_version')")).scalar()
        else:
            exists = conn.execute(text(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version'")).first()
        if not exists:
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def upgrade_to_head(engine: Engine, target: str = "head") -> None:
    """Upgrade the journal behind `engine` to `target` (default: the newest revision)."""
    if target == "head":
        revision = current_revision(engine)
        if revision == HEAD_REVISION:
            return
        if revision is None and engine.dialect.name == "sqlite" and create_at_head(engine):
            return
    from alembic import command

    cfg = alembic_config()
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            # Two processes opening one new job must not both migrate it (SQLite's write
            # lock serialises them there); Alembic reads the revision again under the lock.
            from sqlalchemy import text

            from journalsync.journal.pg import BOOTSTRAP_KEY

            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": BOOTSTRAP_KEY})
        else:
            # SQLite's Python driver begins a transaction only before DML, so DDL ran in
            # autocommit: an upgrade that failed or was killed half-way kept some of its
            # DDL but not the version, and every later open failed again on it. Begun here,
            # the whole upgrade and its version bump commit or vanish together, and a second
            # process opening the journal waits for the first one's upgrade to end.
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, target)


def create_at_head(engine: Engine) -> bool:
    """Give a new SQLite journal the newest schema and revision in one transaction, without
    Alembic: 0.2 CPU-s less for a first run (importing Alembic and running every migration
    in turn). False, with nothing changed, if the file already holds a table of the same
    name as one of the journal's (a second process that got there first), or the script
    fails for any other reason (a damaged or full file): the caller then goes the usual
    way, through Alembic, which says what it finds. A file with unrelated tables only is
    given the journal's beside them, as Alembic would."""
    import sqlite3

    from journalsync.journal import headddl

    if headddl.REVISION != HEAD_REVISION:  # a stale snapshot is never used (a test fails too)
        return False
    script = ";\n".join(("BEGIN IMMEDIATE", *headddl.STATEMENTS,
                         f"INSERT INTO alembic_version (version_num) VALUES ('{HEAD_REVISION}')",
                         "COMMIT"))
    raw = engine.raw_connection()
    try:
        db = raw.driver_connection
        try:
            db.executescript(script)
        except sqlite3.Error:
            if db.in_transaction:
                db.rollback()
            return False
        return True
    finally:
        raw.close()


def schema_rows(path: Path) -> list[tuple[str, str, str, str]]:
    """(type, name, table, sql) of every object SQLite keeps for the schema, in the order
    they can be created again: tables first, then indexes, triggers and views."""
    import sqlite3

    order = {"table": 0, "index": 1, "trigger": 2, "view": 3}
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT type, name, tbl_name, sql FROM sqlite_master "
                          "WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' "
                          "ORDER BY rowid").fetchall()
    db.close()
    return sorted(rows, key=lambda r: order[r[0]])


def statements_from_migrations() -> list[str]:
    """The schema the migrations build, as statements (headddl.py's, when it is current)."""
    import tempfile

    from sqlalchemy import create_engine

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "head.sqlite"
        engine = create_engine(f"sqlite:///{path}")
        upgrade_to_head(engine, target=HEAD_REVISION)  # through Alembic, never the snapshot
        engine.dispose()
        return [row[3] for row in schema_rows(path)]
