"""One run per journal at a time.

An exclusive `flock` on `<journal>.lock`, held for the whole run. The kernel releases it
when the process ends however it ends (SIGKILL, OOM, reboot), so a lock left by a killed
run is never stale: the next run simply takes it. The holder's pid is written into the file
only so the refusal can name it.

A PostgreSQL journal's lock is a session advisory lock instead (journal/pg.py): the
server drops it when the holder's session ends, however it ends.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from journalsync.errors import UsageError


def lock_path(journal_path: Path) -> Path:
    journal_path = Path(journal_path)
    return journal_path.with_name(journal_path.name + ".lock")


def run_lock(journal) -> RunLock:
    """The run lock of a journal file, or of a job in a PostgreSQL journal."""
    from journalsync.journal.location import PgLocation

    if isinstance(journal, PgLocation):
        from journalsync.journal.pg import PgRunLock

        return PgRunLock(journal)
    return RunLock(journal)


def run_alive(journal_path) -> bool:
    """Whether a run of this journal is alive: its lock is held. A non-blocking probe that
    holds the lock (shared) for an instant only; when the file cannot be opened it cannot
    tell, and says alive (nothing is then shown as interrupted that might not be)."""
    from journalsync.journal.location import PgLocation

    if isinstance(journal_path, PgLocation):
        from journalsync.journal.pg import run_alive as pg_run_alive

        return pg_run_alive(journal_path)
    try:
        fd = os.open(lock_path(journal_path), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing the descriptor releases the probe's lock
    return False


class RunLock:
    def __init__(self, journal_path: Path):
        self.journal_path = Path(journal_path)
        self.path = lock_path(self.journal_path)
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            from journalsync.journal.health import os_journal_error

            raise os_journal_error(exc, self.path, "the run lock") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise UsageError(f"another run (pid {holder}) holds {self.journal_path}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
