"""What the commands share (cli.py's run, worker and dev-server; cliops.py's status,
journals, cleanup and verify): their common options, the job file's values under the
command line's, and the one-line errors and exit codes of every command body.

Like cli.py, no `from __future__ import annotations` (typer would compile each annotation
string every time it builds the commands) and only light imports.
"""

import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Optional

import typer

from journalsync import jobfile
from journalsync.errors import ExitCode, JournalsyncError
from journalsync.process import settle_gc

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
ConfigOpt = Annotated[Optional[Path], typer.Option(
    "--config", help="A TOML job file (as for run): its source, destination, endpoint, journal, "
    "profile and region, where the command line gives none.")]


def endpoint_of(value: str | None) -> str | None:
    """The endpoint URL, without a trailing slash (the same endpoint is one journal)."""
    found = value or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    return found.rstrip("/") or None if found else None


def _err(message: str) -> None:
    print(f"journalsync: error: {message}", file=sys.stderr, flush=True)


def guarded(body: Callable[[], int], settle: bool = True) -> int:
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


def with_job_file(ctx: typer.Context, config: Path | None) -> dict:
    """The run's parameters: the job file's values where the command line gave none."""
    job = jobfile.load(config) if config else {}
    # Compared by name: typer ships its own copy of click's ParameterSource enum. An
    # argument counts by its value: cliops._job_params may have moved one to another name.
    given = {name for name in ctx.params if getattr(ctx.get_parameter_source(name), "name",
                                                    "DEFAULT") not in ("DEFAULT", "DEFAULT_MAP")}
    given = {name for name in given if name not in ("source", "dest")} | {
        name for name in ("source", "dest") if ctx.params.get(name) is not None}
    return jobfile.with_job(ctx.params, given, job)
