"""The migrations build schema.py on both dialects: after `upgrade head` on SQLite and on
PostgreSQL, the tables, columns (names, nullability, broad types), primary keys, unique
constraints and indexes are journal/schema.py's metadata, and Alembic finds nothing to
autogenerate."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Boolean, Float, Integer, String, create_engine, inspect

from journalsync.journal import Journal, migrate
from journalsync.journal.location import PgLocation
from journalsync.journal.schema import metadata


def _broad(type_) -> str:
    for kind, name in ((Boolean, "bool"), (Integer, "int"), (Float, "float"), (String, "text")):
        if isinstance(type_, kind):
            return name
    try:  # a Variant, or a dialect's own class (PostgreSQL's DOUBLE_PRECISION is a Float)
        return _broad(type_.as_generic())
    except NotImplementedError:
        return repr(type_)


def _engine(where):
    if isinstance(where, PgLocation):
        return create_engine(where.sqlalchemy_url,
                             connect_args={"options": f"-c search_path={where.job}"})
    return create_engine(f"sqlite:///{where}")


def _shape_of_database(engine) -> dict:
    insp = inspect(engine)
    shape = {}
    for table in sorted(set(insp.get_table_names()) - {"alembic_version"}):
        shape[table] = {
            "columns": {c["name"]: (c["nullable"], _broad(c["type"]))
                        for c in insp.get_columns(table)},
            "pk": tuple(insp.get_pk_constraint(table)["constrained_columns"]),
            "indexes": {i["name"]: (tuple(i["column_names"]), bool(i["unique"]))
                        for i in insp.get_indexes(table)},
            "unique": sorted(tuple(u["column_names"]) for u in insp.get_unique_constraints(table)),
        }
    return shape


def _shape_of_metadata() -> dict:
    shape = {}
    for table in sorted(metadata.tables.values(), key=lambda t: t.name):
        shape[table.name] = {
            "columns": {c.name: (c.nullable, _broad(c.type)) for c in table.columns},
            "pk": tuple(c.name for c in table.primary_key.columns),
            "indexes": {i.name: (tuple(c.name for c in i.columns), bool(i.unique))
                        for i in table.indexes},
            "unique": sorted(tuple(c.name for c in u.columns) for u in table.constraints
                             if type(u).__name__ == "UniqueConstraint"),
        }
    return shape


def test_migrated_schema_is_schema_py(journal_at):
    Journal(journal_at).close()  # upgrade head, as every open does
    engine = _engine(journal_at)
    try:
        assert migrate.current_revision(engine) == migrate.HEAD_REVISION
        assert _shape_of_database(engine) == _shape_of_metadata()
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), metadata)
        assert diff == [], diff
    finally:
        engine.dispose()


def test_postgresql_integers_are_64_bits_and_keys_sort_as_bytes(pg_url):
    """What SQLite gives for nothing: sizes and nanosecond times above 2**31, and keys in
    binary order (the scan's [dir/, dir0) ranges and keyset pages rely on it)."""
    where = PgLocation(pg_url, "t_types")
    with Journal(where) as journal:
        journal.begin_scan()
        keys = ["a/b", "a0", "a-b", "B", "é", "a"]
        journal.stage_files([{"key": k, "path": k, "size": 5 * 2**30, "mtime_ns": 2**62,
                              "ctime_ns": 1, "inode": 2**40, "sha256": None, "error": None}
                             for k in keys])
        journal.commit_scan(1, unreadable_dirs=[("a", "cannot list directory")])
        listed = [(f.key, f.size, f.mtime_ns) for f, _ in journal.iter_plan_inputs()]
    assert listed == [(k, 5 * 2**30, 2**62) for k in sorted(set(keys) - {"a/b"})]


@pytest.mark.parametrize("job", ["Upper", "1digit", "with-dash", "x" * 64])
def test_job_names_are_plain_schema_names(job):
    from journalsync.errors import UsageError
    from journalsync.journal.location import check_job_name

    with pytest.raises(UsageError):
        check_job_name(job)
