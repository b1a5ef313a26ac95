"""The command line: options -> Config, outcomes -> one summary line and an exit code.
Here: the app, `run`, `worker` and `dev-server`; the commands that look after jobs
(status, journals, cleanup, verify) are in cliops.py, what all of them share in
cliparams.py, and all are registered on the app below.

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
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from journalsync import jobfile, report
from journalsync.cliops import cleanup, journals, status, verify
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
from journalsync.config import (
    Config,
    Destination,
    default_journal_path,
    parse_duration,
    parse_size,
)
from journalsync.errors import UsageError
from journalsync.journal.location import journal_location

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
                  rich_markup_mode=None,  # help texts hold s3://BUCKET[/PREFIX], not markup
                  help="Resumable one-way sync of a local directory into S3-compatible storage.")


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

        p = with_job_file(ctx, config)
        if p["source"] is None or p["dest"] is None:
            raise UsageError("give SOURCE and DEST, or a --config job file with source and destination")
        src = Path(p["source"]).expanduser().absolute()
        destination = Destination.parse(p["dest"])
        endpoint = endpoint_of(p["endpoint_url"])
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

    raise typer.Exit(guarded(body, settle=False))


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

        p = with_job_file(ctx, config)
        path, named = p["journal"], p.get("job") or job
        default = None
        if p.get("source") and p.get("dest"):
            src = Path(p["source"]).expanduser().absolute()
            default = default_journal_path(src, Destination.parse(str(p["dest"])),
                                           endpoint_of(p.get("endpoint_url")))
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
                          endpoint_of(endpoint_url) if endpoint_url else None)

    raise typer.Exit(guarded(body))


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

    raise typer.Exit(guarded(body))


# Registered in the order `--help` lists them.
for command in (run, status, worker, journals, cleanup, verify):
    app.command()(command)
app.command("dev-server")(dev_server)


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
