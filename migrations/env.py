"""Alembic environment for the journal. journalsync.journal.store runs it on every open with
the journal's own connection, so a migration and its version bump commit together."""

from alembic import context

from journalsync.journal.schema import metadata


def run_migrations_online() -> None:
    connection = context.config.attributes["connection"]
    # render_as_batch: SQLite cannot ALTER most things in place; batch mode copies the table.
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("journalsync migrations run online only")
run_migrations_online()
