"""Bring a journal to the newest schema with Alembic when it is opened.

Alembic records the revision in `alembic_version` inside the same transaction as the
migration, so a crash mid-upgrade leaves the journal at the old revision, not half-way.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine


def migrations_dir() -> Path:
    """The migrations folder: shipped as the package journalsync.migrations."""
    return Path(str(resources.files("journalsync.migrations")))


def alembic_config() -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(migrations_dir()))
    return cfg


def head_revision() -> str:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade_to_head(engine: Engine, target: str = "head") -> None:
    """Upgrade the journal behind `engine` to `target` (default: the newest revision)."""
    if target == "head" and current_revision(engine) == head_revision():
        return
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, target)
