"""The console script and `python -m journalsync`: the command line (cli.main), then the
end of the process without the interpreter's teardown (end_process). Apart from process.py,
which cli and the engine import, so that nothing imports back up to the CLI."""

from __future__ import annotations

from typing import NoReturn


def main() -> NoReturn:
    """The console script and `python -m journalsync`: the command line (cli.main), then
    the end of the process without the interpreter's teardown (end_process)."""
    from journalsync.cli import main as cli_main

    try:
        cli_main()
    except SystemExit as exc:
        end_process(exc.code)
    end_process(0)


def end_process(code: object) -> NoReturn:
    """Exit with `code` the way the interpreter would, minus its teardown: stdout and
    stderr flushed, then every atexit handler run (logging's, which flushes and closes
    --log-file), then os._exit. What the teardown does besides is free, one by one, what
    start-up made (modules, botocore's models, SQLAlchemy's classes) and wind down the
    threads and native state of the libraries (the CRT's): measured on a no-op run of the
    2,000-file tree, the summary line to the process's end took 0.019-0.041 s (medians of
    6, a busy machine) with the teardown and 0.009-0.014 s without it. It costs waiting
    more than CPU: cli.main's gc.freeze already spares the teardown its collections.

    Nothing durable is left to it: each command closes its journal (its last transaction
    committed) and its lock before it prints its result, and a process killed at any point
    is what the journal is built to survive. Where the interpreter would still have work
    of ours to do, it does it: another thread that is not a daemon (it would be joined),
    a code that is not a number from 0 to 255 (it prints it, or takes it modulo 256), or
    a stream that cannot be flushed (it reports that as it always did)."""
    import atexit
    import os
    import sys
    import threading

    if code is None:
        code = 0
    others = [t for t in threading.enumerate()
              if t is not threading.main_thread() and not t.daemon and t.is_alive()]
    if not isinstance(code, int) or not 0 <= code <= 255 or others:
        raise SystemExit(code)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        raise SystemExit(code) from None
    atexit._run_exitfuncs()  # noqa: SLF001 - the interpreter's own step, run early
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        raise SystemExit(code) from None
    os._exit(code)
