"""What SQLite (or PostgreSQL) says about a journal, turned into one line an operator can act on.

A journal is a cache of facts that can all be rebuilt (a scan, a LIST), so a damaged one is
never a reason to touch the bucket: the line says to move it aside. Every such problem
exits 5 (ExitCode.JOURNAL), never 70, which is kept for our own bugs.
"""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy.exc import DBAPIError

from journalsync.errors import JournalError
from journalsync.journal.location import PgLocation

_DAMAGED = ("malformed", "not a database", "file is encrypted", "database corrupt")


def is_journal_failure(exc: BaseException) -> bool:
    """An error raised by SQLite or by psycopg (through SQLAlchemy or not: the run lock of
    a PostgreSQL journal talks to psycopg itself)."""
    return isinstance(exc, (DBAPIError, sqlite3.Error)) or (
        type(exc).__module__.startswith("psycopg") and isinstance(exc, Exception)
        and any(c.__name__ == "Error" for c in type(exc).__mro__))


# psycopg's words when the server is not there, or not reachable in time.
_NO_ANSWER = ("connection refused", "could not connect", "connection timeout", "timeout expired",
              "no route to host", "could not translate host name", "name or service not known",
              "server closed the connection", "connection is lost", "network is unreachable",
              "connection failed")


def pg_journal_error(exc: BaseException, location: PgLocation) -> JournalError:
    """The one line for a PostgreSQL error on a job's journal (never the URL's password)."""
    orig = getattr(exc, "orig", None) or exc
    text = " ".join(str(orig).split()) or type(orig).__name__
    low = text.lower()
    if any(words in low for words in _NO_ANSWER):
        return JournalError(f"journal database at {location.server} did not answer ({text}); "
                            f"is PostgreSQL running there? ({location.redacted})")
    if "permission denied" in low:
        return JournalError(f"journal {location}: {text}: the role needs CREATE on the "
                            "database (the job's schema) and on its tables")
    return JournalError(f"journal {location}: {text}")


def journal_error(exc: BaseException, path: Path | PgLocation) -> JournalError:
    """The one line for a SQLite error on the journal at `path`."""
    if isinstance(path, PgLocation):
        return pg_journal_error(exc, path)
    detail = str(getattr(exc, "orig", None) or exc).splitlines()[0]
    low = detail.lower()
    if any(word in low for word in _DAMAGED):
        return JournalError(
            f"journal {path} is damaged ({detail}); move it aside (mv {path} {path}.damaged) "
            "and run again: the next run rebuilds it from a scan and a LIST, and nothing "
            "stored in the bucket is lost")
    if "readonly" in low or "read-only" in low:
        return JournalError(f"journal {path} cannot be written ({detail}): a read-only "
                            "filesystem? give --journal a writable place")
    if "full" in low:
        return JournalError(f"no space left for journal {path} ({detail}); free space there "
                            "or give --journal another place")
    if "unable to open" in low:
        return JournalError(f"cannot open journal {path} ({detail}): is its directory "
                            "writable?")
    if "locked" in low:
        return JournalError(f"journal {path} is locked by another process ({detail})")
    return JournalError(f"journal {path}: {detail}")


def os_journal_error(exc: OSError, path: Path, what: str = "journal") -> JournalError:
    """An OSError on the journal's directory, its lock or its files."""
    reason = exc.strerror or str(exc)
    if exc.errno == errno.EROFS:
        reason += ": give --journal a writable place"
    elif exc.errno == errno.ENOSPC:
        reason += ": free space there or give --journal another place"
    return JournalError(f"cannot use {what} {exc.filename or path}: {reason}")


@contextmanager
def journal_errors(path: Path | PgLocation) -> Iterator[None]:
    """Turn SQLite (PostgreSQL) errors inside the block into JournalError for `path`."""
    try:
        yield
    except JournalError:
        raise
    except Exception as exc:
        if is_journal_failure(exc):
            raise journal_error(exc, path) from exc
        raise
