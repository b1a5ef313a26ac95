"""The commands that look after jobs rather than sync them: status (one job's runs, or
--all: every job), journals (the journals there are), cleanup (incomplete uploads) and
verify (the synced objects against their files). cli.py registers them on its app.

Like cli.py: no `from __future__ import annotations` (typer would compile each annotation
string every time it builds the commands), and each body imports what it needs (the
journal, rich, botocore) itself, so that `--help` loads none of it.
"""

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer

from journalsync import report
from journalsync.cliparams import (
    ConfigOpt,
    EndpointOpt,
    JobOpt,
    JournalOpt,
    JsonOpt,
    ProfileOpt,
    RegionOpt,
    endpoint_of,
    guarded,
    with_job_file,
)
from journalsync.config import Config, Destination, parse_duration
from journalsync.errors import UsageError
from journalsync.journal.location import is_url


@contextmanager
def _remote_errors(what: str):
    """A store error outside a run (cleanup, verify): one line, exit 4 (or 5, 6)."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - one line and its exit code
        from journalsync.retry import whole_run_error

        mapped = whole_run_error(what, exc)
        if mapped is None:
            raise
        raise mapped from exc


def _job_params(ctx: typer.Context, config: Path | None) -> dict:
    """The parameters of status, verify and cleanup, with the job file's where none was
    given. One argument alone that looks like s3://... is DEST (`verify s3://b/p`)."""
    if ctx.params.get("dest") is None and str(ctx.params.get("source") or "").startswith("s3://"):
        ctx.params["source"], ctx.params["dest"] = None, str(ctx.params["source"])
    return with_job_file(ctx, config)


def _job_needs_url(p: dict) -> None:
    """--job names a job of a PostgreSQL --journal: alone, it names nothing."""
    if p.get("job") and not is_url(p.get("journal")):
        raise UsageError("--job names a job in a PostgreSQL journal: give --journal "
                         "postgresql://... with it")


def _wanted(p: dict):
    """What the operator named, for finding the journal (journals.py)."""
    from journalsync.journals import Wanted

    return Wanted(source=Path(p["source"]).expanduser().absolute() if p.get("source") else None,
                  dest=Destination.parse(str(p["dest"])) if p.get("dest") else None,
                  endpoint=endpoint_of(p.get("endpoint_url")))


def status(
    ctx: typer.Context,
    source: Annotated[Optional[str], typer.Argument(help="Source of the sync to show (or `source` in --config). One argument alone that starts s3:// is DEST.")] = None,
    dest: Annotated[Optional[str], typer.Argument(help="Destination of the sync to show (or `destination` in --config).")] = None,
    config: ConfigOpt = None,
    journal: JournalOpt = None,
    job: JobOpt = None,
    endpoint_url: EndpointOpt = None,
    runs: Annotated[int, typer.Option(help="How many recent runs to show.")] = 5,
    failed: Annotated[bool, typer.Option("--failed", help="Only the last run's failed files, with error and attempts.")] = False,
    all_jobs: Annotated[bool, typer.Option("--all", help="Every job of the --journal database (or every journal in the state directory): binding, last run, failures, workers.")] = False,
    failures: Annotated[int, typer.Option(help="With --all: show each job's first N failures.")] = 0,
    lease: Annotated[str, typer.Option(help="The workers' --lease: a working worker unheard of for 3 leases is flagged stale.")] = "30s",
    json_out: JsonOpt = False,
) -> None:
    """Show recent runs, the last run's failed files with reasons, and uploads in flight.

    --all shows every job of a PostgreSQL --journal (every journal in the state directory
    without one) instead: its source, destination and endpoint, its last run, how many
    failures it had, and the workers of that run (host, pid, chunks, bytes/s, last
    heartbeat). Read-only: a job at another schema revision is shown with a note, never
    upgraded. Its --json: journal, lease, jobs (job, journal, source, destination,
    endpoint, schema, note, problem, last_run, failures, failure_lines, chunks, workers
    (id, host, pid, state, chunks_done, bytes_done, started_at, heartbeat_at, bytes_per_s,
    heartbeat_age, stale), shared_uploads (key, upload_id, size, units_done, units_total,
    bytes_journaled, holders (host, pid, units, lease_expired))).

    The journal is found by what is given: --journal, else the journals in the state
    directory matching SOURCE and DEST (either may be left out) and the endpoint if one is
    given; several matches are listed (exit 2). `journalsync journals` lists them all.

    --json prints one object: journal (path), runs (newest first: id, started_at,
    finished_at, elapsed, state, dry_run, resumed (times resumed), scanned, uploaded,
    skipped, deleted, extra, failed, bytes, skip_reasons (reason: count), error, ...),
    failed (key, action, error, attempts: tries of the file's data, 1 = no retry),
    file_errors (path, reason), in_flight (key,
    upload_id, part_size, size, parts_done, bytes_done, created_at, ..., units: a shared
    upload's part units (units_done, units_total, bytes_journaled, holders (host, pid,
    units, lease_expired)), else null), adopted (proof:
    count of the objects another tool wrote that the journal adopted, e.g. etag-md5),
    chunks (pending, claimed, done) and workers of the last run (id, host, pid, state,
    chunks_done, bytes_done, started_at, heartbeat_at, bytes_per_s, heartbeat_age, stale)."""

    def body() -> int:
        from journalsync.journal import Journal
        from journalsync.journal.health import journal_errors
        from journalsync.journals import find_journal

        if all_jobs and failed:
            raise UsageError("--all shows each job's failures with --failures N, not --failed")
        if all_jobs:
            return _status_all(ctx, config, failures, parse_duration(lease), json_out)
        if failures:
            raise UsageError("--failures goes with --all (one job's: status --failed)")
        p = _job_params(ctx, config)
        path = find_journal(_wanted(p), p["journal"], p.get("job")).path
        with journal_errors(path), Journal.for_view(path) as j:
            data = report.status_data(j, runs=runs, failures=None if failed else 50,
                                      lease=parse_duration(lease))
        if failed:
            data = {"journal": data["journal"], "failed": data["failed"],
                    "file_errors": data["file_errors"]}
        if json_out:
            print(json.dumps(data, default=str))
        else:
            from rich.console import Console

            console = Console()
            if not console.is_terminal:
                console = Console(width=160)  # cron mail and pipes: don't squeeze columns
            if failed:
                report.render_failures(data, console)
            else:
                report.render_status(data, console)
        return 0

    raise typer.Exit(guarded(body))


def _status_all(ctx: typer.Context, config: Path | None, failures: int, lease: float,
                json_out: bool) -> int:
    """`status --all`: the fleet view (fleet.py) of a database's jobs or the state
    directory's journals."""
    from journalsync import fleet
    from journalsync.journals import all_journals

    if ctx.params.get("source") or ctx.params.get("dest") or ctx.params.get("job"):
        raise UsageError("--all shows every job: give no SOURCE, DEST or --job with it")
    if failures < 0:
        raise UsageError("--failures must be 0 or more")
    p = with_job_file(ctx, config)
    where, infos = all_journals(p["journal"])
    data = fleet.fleet_data(infos, where, failures, lease)
    if json_out:
        print(json.dumps(data, default=str))
    else:
        print("\n".join(fleet.render(data)))
    return 0


def journals(
    journal: Annotated[Optional[str], typer.Option(
        "--journal", help="A PostgreSQL database (postgresql://USER@HOST[:PORT]/DB): list its "
        "jobs instead.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """List the journals in the state directory (with --journal URL: the jobs of that
    PostgreSQL database): for each, its path (job), source, destination, endpoint and last
    run (when, and how it ended). A journal that cannot be read is listed with the reason.
    Nothing is changed: each is opened read-only, not upgraded.

    --json prints one object: state_dir (or journal: the database), journals (path, job,
    source, destination, endpoint, last_run (id, started_at, finished_at, state, dry_run)
    or null, runs, schema, problem, note)."""

    def body() -> int:
        from journalsync.journals import all_journals, render_list

        if journal is not None and not is_url(journal):
            raise UsageError("journals --journal takes a PostgreSQL URL (postgresql://...); "
                             "journal files are listed from the state directory")
        where, found = all_journals(journal)
        if json_out:
            key = "journal" if journal else "state_dir"
            print(json.dumps({key: where, "journals": [info.as_dict() for info in found]}))
        else:
            print("\n".join(render_list(found, where if journal else None)))
        return 0

    raise typer.Exit(guarded(body))


def cleanup(
    ctx: typer.Context,
    dest: Annotated[Optional[str], typer.Argument(help="s3://BUCKET[/PREFIX] whose incomplete uploads to list (or `destination` in --config).")] = None,
    config: ConfigOpt = None,
    endpoint_url: EndpointOpt = None,
    region: RegionOpt = None,
    profile: ProfileOpt = None,
    journal: JournalOpt = None,
    job: JobOpt = None,
    older_than: Annotated[str, typer.Option(help="Only uploads started at least this long ago (e.g. 24h, 30m, 0).")] = "24h",
    abort: Annotated[bool, typer.Option("--abort", help="Abort them (without it, only list: a dry run).")] = False,
    json_out: JsonOpt = False,
) -> None:
    """List incomplete multipart uploads under DEST (marking ours); abort them with --abort.

    Ours: known to a journal that syncs to DEST (--journal, else those in the state
    directory). Without --endpoint-url, the endpoint those journals used."""

    def body() -> int:
        from journalsync.cleanup import cleanup as run_cleanup
        from journalsync.journals import Wanted, find_journal, journals_for_dest

        p = with_job_file(ctx, config)
        _job_needs_url(p)
        info = None
        if p["dest"] is None and is_url(p["journal"]) and p.get("job"):
            info = find_journal(Wanted(), p["journal"], p["job"])  # DEST: the job's
            p["dest"] = info.dest
        if p["dest"] is None:
            raise UsageError("give DEST, or a --config job file with a destination")
        destination = Destination.parse(str(p["dest"]))
        endpoint = endpoint_of(p["endpoint_url"])
        if p["journal"]:
            info = info or find_journal(Wanted(dest=destination), p["journal"], p.get("job"))
            paths, endpoint = [info.path], endpoint or info.endpoint
        else:
            paths, endpoint = journals_for_dest(destination, endpoint)
        cfg = Config(source=Path.cwd(), dest=destination, endpoint_url=endpoint,
                     region=p["region"], profile=p["profile"],
                     journal_path=paths[0] if p["journal"] else Path("/nonexistent"))
        with _remote_errors(f"cannot list uploads in {destination}"):
            rows = run_cleanup(cfg, paths, parse_duration(older_than), abort)
        if json_out:
            print(json.dumps([report.cleanup_dict(row) for row in rows]))
        else:
            report.render_cleanup(rows, destination)
        return 0

    raise typer.Exit(guarded(body))


def verify(
    ctx: typer.Context,
    source: Annotated[Optional[str], typer.Argument(help="The local directory synced to DEST: optional, it tells apart journals of one DEST. One argument alone is DEST.")] = None,
    dest: Annotated[Optional[str], typer.Argument(help="s3://BUCKET[/PREFIX] to verify (or `destination` in --config).")] = None,
    config: ConfigOpt = None,
    endpoint_url: EndpointOpt = None,
    region: RegionOpt = None,
    profile: ProfileOpt = None,
    journal: JournalOpt = None,
    job: JobOpt = None,
    sample: Annotated[float, typer.Option(help="Check only this percentage of the objects, chosen at random.")] = 100.0,
    workers: Annotated[int, typer.Option(help="Concurrent HEAD requests.")] = 8,
    json_out: JsonOpt = False,
) -> None:
    """HEAD the synced objects and report any whose size or sha256 no longer match the
    file. Exit 1 on a mismatch. The journal is found as for `status`; without
    --endpoint-url, the requests go to the endpoint that journal's runs used."""

    def body() -> int:
        from journalsync.journal import Journal
        from journalsync.journal.health import journal_errors
        from journalsync.journals import Wanted, find_journal
        from journalsync.verify import verify as run_verify

        p = _job_params(ctx, config)
        _job_needs_url(p)
        if p["dest"] is None and not (is_url(p["journal"]) and p.get("job")):
            raise UsageError("give DEST, or a --config job file with a destination")
        if not 0 < sample <= 100:
            raise UsageError("--sample must be a percentage above 0 and at most 100")
        wanted = _wanted(p)
        info = find_journal(wanted, p["journal"], p.get("job"))
        if wanted.dest is None:  # --journal URL --job NAME: the job's own destination
            wanted = Wanted(wanted.source, Destination.parse(info.dest), wanted.endpoint)
        cfg = Config(source=Path.cwd(), dest=wanted.dest, region=p["region"],
                     endpoint_url=wanted.endpoint or info.endpoint, profile=p["profile"],
                     journal_path=info.path, workers=p["workers"]).validate()
        with journal_errors(info.path), _remote_errors(f"cannot verify {wanted.dest}"), \
                Journal(info.path) as j:
            result = run_verify(cfg, j, sample)
        if json_out:
            print(json.dumps({"checked": result.checked, "synced": result.sampled_from,
                              "mismatches": [{"key": m.key, "problem": m.problem}
                                             for m in result.mismatches]}))
        else:
            for m in result.mismatches:
                print(f"mismatch {report.shown(m.key)}: {m.problem}")
            print(f"journalsync: verified={result.checked} of {result.sampled_from} "
                  f"mismatches={len(result.mismatches)}")
        return 1 if result.mismatches else 0

    raise typer.Exit(guarded(body))
