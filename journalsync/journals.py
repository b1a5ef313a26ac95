"""Finding a journal by what the operator knows, and the `journalsync journals` listing.

A run keeps one journal per (source, destination, endpoint) in the state directory, named
by a hash of the three. `status`, `verify` and `cleanup` must not make the operator
retype all three exactly as the run had them: they look through the journals there
(read-only, journal/catalog.py) and match what was given. One match is used; several are
listed, and the command stops (exit 2) rather than guess; none says where to look.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from journalsync.config import Destination, default_journal_path, state_dir
from journalsync.errors import UsageError
from journalsync.journal.catalog import (
    JournalInfo,
    list_journals,
    matching,
    read_info,
    same_source,
)
from journalsync.journal.location import PgLocation, check_job_name, is_url


@dataclass(frozen=True, slots=True)
class Wanted:
    """What the operator named. `endpoint` None: any endpoint (none was given by flag,
    job file or environment)."""

    source: Path | None = None
    dest: Destination | None = None
    endpoint: str | None = None

    def describe(self) -> str:
        where = f" at {self.endpoint}" if self.endpoint else ""
        if self.source and self.dest:
            return f"{self.source} -> {self.dest}{where}"
        if self.dest:
            return f"{self.dest}{where}"
        return f"any source and destination{where}"


def endpoint_name(endpoint: str | None) -> str:
    return endpoint or "AWS"


def last_run_text(info: JournalInfo) -> str:
    """`run 3, 2026-11-26 13:22:33, done` (or why there is none)."""
    run = info.last_run
    if run is None:
        return "no runs yet"
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run["started_at"]))
    state = run["state"] + (" (dry run)" if run["dry_run"] else "")
    return f"run {run['id']}, {when}, {state}"


def one_line(info: JournalInfo) -> str:
    """A journal in an error's listing: path, endpoint, last run."""
    if info.problem:
        return f"  {info.path}  ({info.problem})"
    return f"  {info.path}  (endpoint {endpoint_name(info.endpoint)}; last {last_run_text(info)})"


def find_journal(wanted: Wanted, journal: Path | str | None = None,
                 job: str | None = None) -> JournalInfo:
    """The one journal for `wanted`, or a UsageError that lists the candidates or says
    where to look. `journal` (--journal) wins over any search; a PostgreSQL --journal is
    searched for the job (`job`, else the one job that matches `wanted`)."""
    if is_url(journal):
        return _find_job(wanted, str(journal), job)
    if journal is not None:
        if not journal.exists():
            raise UsageError(f"no journal at {journal} (given by --journal)")
        return read_info(journal)
    if wanted.source and wanted.dest and wanted.endpoint:
        # Given all three, the journal's name is known: no need to look (and a damaged one
        # is then reported as damaged by the command, not as missing).
        path = default_journal_path(wanted.source.expanduser().absolute(), wanted.dest,
                                    wanted.endpoint)
        if path.exists():
            return read_info(path)
    found = list_journals(state_dir())
    dest = str(wanted.dest) if wanted.dest else None
    hits = matching(found, wanted.source, dest, wanted.endpoint, wanted.endpoint is None)
    if len(hits) == 1:
        return hits[0]
    if hits:
        raise UsageError(_listing(f"{len(hits)} journals match {wanted.describe()}; name one "
                                  f"with --journal{_narrowing(wanted)}:", hits))
    raise UsageError(_none_found(wanted, found, dest))


def _narrowing(wanted: Wanted) -> str:
    """What else would tell the candidates apart."""
    more = []
    if wanted.source is None:
        more.append("SOURCE" if wanted.dest else "SOURCE DEST")
    if wanted.endpoint is None:
        more.append("--endpoint-url")
    return f" (or give {' and '.join(more)})" if more else ""


def _none_found(wanted: Wanted, found: list[JournalInfo], dest: str | None) -> str:
    elsewhere = matching(found, wanted.source, dest, None, any_endpoint=True)
    if elsewhere:
        return _listing(f"no journal for {wanted.describe()}; {len(elsewhere)} at another "
                        "endpoint (give its --endpoint-url, or --journal):", elsewhere)
    damaged = [info for info in found if info.problem]
    hint = (f"; {len(damaged)} journal(s) there cannot be read (`journalsync journals` "
            "shows them)" if damaged else "; `journalsync journals` lists the journals there")
    return (f"no journal in {state_dir()} for {wanted.describe()}: nothing has run for it "
            f"with the default journal (a run given --journal keeps it there: give the same "
            f"--journal){hint}")


def _listing(head: str, infos: list[JournalInfo]) -> str:
    return "\n".join([head, *(one_line(info) for info in infos)])


def journals_for_dest(dest: Destination, endpoint: str | None) -> tuple[list[Path], str | None]:
    """For `cleanup`: the journals that sync to `dest` (any source), to tell our uploads
    from others', and the endpoint to use: the one given, else theirs when they agree."""
    found = list_journals(state_dir())
    hits = matching(found, None, str(dest), endpoint, any_endpoint=endpoint is None)
    if endpoint is None:
        endpoints = {info.endpoint for info in hits}
        if len(endpoints) > 1:
            raise UsageError(_listing(f"journals sync to {dest} at {len(endpoints)} endpoints; "
                                      "give --endpoint-url:", hits))
        endpoint = next(iter(endpoints), None)
    return [info.path for info in hits], endpoint


def all_journals(journal: Path | str | None) -> tuple[str, list[JournalInfo]]:
    """What `journals` and `status --all` look at, and where: the jobs of a PostgreSQL
    --journal (its URL, password left out), the one journal file given, or every journal
    in the state directory. Read-only, never migrating."""
    if is_url(journal):
        from journalsync.journal.pgcatalog import list_job_infos

        where = PgLocation(str(journal), "any")
        try:
            return where.redacted, list_job_infos(str(journal))
        except Exception as exc:
            from journalsync.journal.health import is_journal_failure, pg_journal_error

            if is_journal_failure(exc):
                raise pg_journal_error(exc, where) from exc
            raise
    if journal is not None:
        path = Path(journal).expanduser()
        if not path.exists():
            raise UsageError(f"no journal at {path} (given by --journal)")
        return str(path), [read_info(path)]
    return str(state_dir()), list_journals(state_dir())


def render_list(infos: list[JournalInfo], database: str | None = None) -> list[str]:
    """The text form of `journalsync journals`: a block of lines per journal (per job of
    a PostgreSQL `database`), whole paths and URLs on lines of their own so they can be
    copied."""
    if not infos and database:
        return [f"no jobs in {database} (a run given --journal URL keeps its job there)"]
    if not infos:
        return [f"no journals in {state_dir()} (a run keeps one there for each source, "
                "destination and endpoint, unless given --journal)"]
    lines: list[str] = [database] if database else []
    for info in infos:
        lines.append(f"  job {info.path.job}" if database else str(info.path))
        if info.problem:
            lines.append(f"    {info.problem}")
            continue
        if info.last_run is None:
            lines.append("    no runs yet")
        else:
            lines.append(f"    {info.source} -> {info.dest} at {endpoint_name(info.endpoint)}")
            lines.append(f"    last {last_run_text(info)} ({info.runs} run(s) kept)")
        if info.note:
            lines.append(f"    {info.note}")
    return lines


def _find_job(wanted: Wanted, url: str, job: str | None) -> JournalInfo:
    """The job in a PostgreSQL journal for `wanted` (or named by --job), found in the
    database's journalsync.jobs, as journals in the state directory are found by their runs."""
    from journalsync.journal.health import is_journal_failure, pg_journal_error
    from journalsync.journal.pg import list_jobs

    where = PgLocation(url, job or "any")
    try:
        jobs = list_jobs(url)
    except Exception as exc:
        if is_journal_failure(exc):
            raise pg_journal_error(exc, where) from exc
        raise
    infos = [JournalInfo(PgLocation(url, row["name"]), row["source"], row["dest"],
                         row["endpoint"]) for row in jobs]
    if job is not None:
        check_job_name(job)
        hits = [info for info in infos if info.path.job == job]
        if not hits:
            raise UsageError(f"no job {job} in {where.redacted} (it has "
                             f"{len(infos)} job(s): `--journal URL` with SOURCE DEST finds one)")
        return hits[0]
    dest = str(wanted.dest) if wanted.dest else None
    hits = [info for info in infos
            if (wanted.source is None or same_source(info.source, wanted.source))
            and (dest is None or info.dest == dest)
            and (wanted.endpoint is None or info.endpoint == wanted.endpoint)]
    if len(hits) == 1:
        return hits[0]
    if hits:
        raise UsageError("\n".join([f"{len(hits)} jobs in {where.redacted} match "
                                    f"{wanted.describe()}; name one with --job:",
                                    *(f"  {info.path.job}  ({info.source} -> {info.dest} at "
                                      f"{endpoint_name(info.endpoint)})" for info in hits)]))
    raise UsageError(f"no job in {where.redacted} for {wanted.describe()}: nothing has run "
                     "for it with this --journal")
