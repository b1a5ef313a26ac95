"""The rows of a test's journal, whichever kind it is: a SQLite file (sqlite3) or a job's
schema in PostgreSQL (psycopg, search_path = the job). Tests write their SQL once, in
SQLite's words with `?` parameters; for PostgreSQL the `?` become `%s`.

A statement that changes rows (a test playing a killed run, or the night passing) is
committed before the rows are returned. `if_any`: a journal not created (or not migrated)
yet has no rows, where a test polls it while a run starts.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path


def journal_rows(journal: Path | str, job: str | None, sql: str, *params,
                 if_any: bool = False) -> list[tuple]:
    if isinstance(journal, Path) or not str(journal).startswith("postgres"):
        return _sqlite_rows(Path(journal), sql, params, if_any)
    import psycopg

    if params:
        sql = sql.replace("%", "%%").replace("?", "%s")
    try:
        with psycopg.connect(str(journal), options=f"-c search_path={job}",
                             autocommit=True) as db:
            cur = db.execute(sql, params or None)
            return [tuple(r) for r in cur.fetchall()] if cur.description else []
    except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn):
        if if_any:
            return []
        raise


def _sqlite_rows(path: Path, sql: str, params: tuple, if_any: bool) -> list[tuple]:
    try:
        db = (sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) if if_any
              else sqlite3.connect(path))
        try:
            with db:
                return db.execute(sql, params).fetchall()
        finally:
            db.close()
    except sqlite3.OperationalError:
        if if_any:
            return []  # not created or not migrated yet
        raise
