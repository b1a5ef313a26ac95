"""Exit codes and the exceptions that carry them to the CLI.

Every error a user can cause or meet ends as one line on stderr and one of these codes;
the table is repeated in the README.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0  # everything planned was done
    PARTIAL = 1  # some files failed; the rest were synced
    USAGE = 2  # bad arguments or input: missing source, malformed destination
    GUARD = 3  # a safety guard refused the run (delete cap, empty source)
    FATAL_REMOTE = 4  # the store refused us: no such bucket, access denied, bad credentials
    INTERNAL = 70  # an unexpected error inside journalsync (a bug: please report it)
    INTERRUPTED = 130  # SIGINT
    TERMINATED = 143  # SIGTERM


class JournalsyncError(Exception):
    """An error with a one-line message and the exit code it maps to."""

    exit_code: ExitCode = ExitCode.PARTIAL

    def __init__(self, message: str, exit_code: ExitCode | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(JournalsyncError):
    exit_code = ExitCode.USAGE


class FatalRemoteError(JournalsyncError):
    """The store refused the whole run (bucket, credentials, clock); retrying will not help."""

    exit_code = ExitCode.FATAL_REMOTE


class Interrupted(Exception):
    """A stop was requested (SIGINT or SIGTERM); work in flight was finished or kept."""
