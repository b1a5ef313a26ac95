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
    JOURNAL = 5  # the journal cannot be used: damaged, read-only, disk full, lock file error
    CONFIG = 6  # the local setup cannot be used: unknown profile, CA bundle, TLS trust, endpoint URL
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
    """The store refused the whole run (bucket, credentials, clock); retrying will not help.
    `resumable`: the cause passes by itself (an expired session token), so the run is left
    interrupted for --resume rather than failed."""

    exit_code = ExitCode.FATAL_REMOTE

    def __init__(self, message: str, exit_code: ExitCode | None = None, resumable: bool = False):
        super().__init__(message, exit_code)
        self.resumable = resumable


class JournalError(JournalsyncError):
    """The journal file cannot be read or written. The message names the file and, for a
    damaged one, how to recover (move it aside: the next run rebuilds it from a scan and a
    LIST, and the bucket loses nothing)."""

    exit_code = ExitCode.JOURNAL


class ConfigError(JournalsyncError):
    """The environment is wrong before any file is touched: a profile that does not exist,
    an unreadable CA bundle, a certificate the endpoint presents that we cannot trust, an
    endpoint URL we cannot use. The message names the setting."""

    exit_code = ExitCode.CONFIG


class Interrupted(Exception):
    """A stop was requested (SIGINT or SIGTERM); work in flight was finished or kept."""


class StopNow(Interrupted):
    """A second signal: stop at once. What finished is recorded and the summary printed;
    work still in flight is left to `--resume` (the process does not wait for it)."""
