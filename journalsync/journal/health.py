"""What SQLite says about a journal file, turned into one line an operator can act on.

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

_DAMAGED = ("malformed", "not a database", "file is encrypted", "database corrupt")


def is_journal_failure(exc: BaseException) -> bool:
    """An error raised by SQLite (through SQLAlchemy or not)."""
    return isinstance(exc, (DBAPIError, sqlite3.Error))


def journal_error(exc: BaseException, path: Path) -> JournalError:
    """The one line for a SQLite error on the journal at `path`."""
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
def journal_errors(path: Path) -> Iterator[None]:
    """Turn SQLite errors inside the block into JournalError for `path`."""
    try:
        yield
    except JournalError:
        raise
    except Exception as exc:
        if is_journal_failure(exc):
            raise journal_error(exc, path) from exc
        raise
