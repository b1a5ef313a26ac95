"""Where a journal lives: a SQLite file (a Path), or a job inside a PostgreSQL database.

Many jobs share one PostgreSQL database, each in a SCHEMA of its own, so every table and
every statement of the journal stays the one SQLite has (the connections' search_path
names the job's schema). The job's name is given (--job) or derived from (source,
destination, endpoint) as the SQLite journal's default file name is, so one nightly job
finds the same schema every night without being told.

No SQLAlchemy or psycopg here: the CLI builds a location before it imports either.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from journalsync.errors import UsageError

_SCHEMES = ("postgresql://", "postgres://", "postgresql+psycopg://")
# A schema name that needs no quoting anywhere (search_path in a libpq option included).
_JOB_RE = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def is_url(value: object) -> bool:
    return isinstance(value, str) and value.startswith(_SCHEMES)


@dataclass(frozen=True, slots=True)
class PgLocation:
    """One job's journal in a PostgreSQL database. `url` is as the user gave it."""

    url: str
    job: str

    @property
    def sqlalchemy_url(self) -> str:
        """The URL with SQLAlchemy's psycopg 3 driver named (users write postgresql://)."""
        rest = self.url.split("://", 1)[1]
        return f"postgresql+psycopg://{rest}"

    @property
    def libpq_url(self) -> str:
        """The URL as libpq (psycopg.connect) reads it: no SQLAlchemy driver name."""
        return "postgresql://" + self.url.split("://", 1)[1]

    @property
    def server(self) -> str:
        """host:port, for the line that says the server did not answer."""
        parts = urlsplit(self.url)
        host = parts.hostname or "localhost (socket)"
        return f"{host}:{parts.port or 5432}"

    @property
    def redacted(self) -> str:
        """The URL without its password: what messages and `status` print."""
        parts = urlsplit(self.url)
        if parts.password is None:
            return self.url
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        return urlunsplit(parts._replace(netloc=netloc))

    def __str__(self) -> str:
        return f"{self.redacted} (job {self.job})"


def is_job_name(name: str) -> bool:
    """Whether `name` could be a job's schema (journalsync makes no other)."""
    return _JOB_RE.fullmatch(name) is not None


def check_job_name(name: str) -> str:
    if not _JOB_RE.fullmatch(name):
        raise UsageError(f"--job {name!r}: use lowercase letters, digits and _ (at most 63, "
                         "not starting with a digit): it is the job's schema in the database")
    return name


def default_job_name(label: str, digest: str) -> str:
    """The job (schema) name from the default journal file's label and digest
    (config.default_journal_path): lowercase, [a-z0-9_] only, within PostgreSQL's 63."""
    clean = re.sub(r"[^a-z0-9_]+", "_", label.lower()).strip("_")[:40]
    return f"j_{clean}_{digest}" if clean else f"j_{digest}"


def journal_location(value: str | Path | None, job: str | None, default: Path) -> Path | PgLocation:
    """What --journal (and --job) name: a URL is a PostgreSQL journal, anything else a
    file. `default` is the default journal file, whose name gives the default job."""
    if is_url(value):
        if job is None:
            label, _, digest = default.stem.rpartition("-")
            job = default_job_name(label, digest)
        return PgLocation(str(value), check_job_name(job))
    if job is not None:
        raise UsageError("--job names a job in a PostgreSQL journal: give --journal "
                         "postgresql://... with it")
    return Path(value).expanduser() if value else default
