"""A CLI process that does not end in time: its threads' stacks, not only a timeout; and
one killed at a chosen moment."""

from __future__ import annotations

import signal
import subprocess
import time

from tests.support.proxy import RecordingProxy


def stacks_of_hung(proc, timeout: float) -> tuple[str, str] | None:
    """`proc.communicate(timeout)`'s (out, err), or None when it did not end in time. Then
    SIGABRT makes its faulthandler (PYTHONFAULTHANDLER, tests/conftest.py) print every
    thread's stack to its stderr, it is killed if that does not end it, and what it wrote
    is left in `proc.hung_output` (out, err) for the caller's failure message."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        try:
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        proc.hung_output = (out, err)
        return None


def finish(proc, timeout: float) -> tuple[str, str]:
    """`proc.communicate(timeout)`, failing with the hung process's stacks and output."""
    got = stacks_of_hung(proc, timeout)
    if got is None:
        out, err = proc.hung_output
        raise AssertionError(f"pid {proc.pid} did not end within {timeout:.0f} s; its stdout:\n"
                             f"{out[-2000:]}\nits stderr's end, its threads' stacks included:\n"
                             f"{err[-12000:]}")
    return got


def kill_when(sync, s3, args: tuple, hook, ready, what: str) -> None:
    """Run with `args` through a proxy calling `hook`, SIGKILL it once `ready(proxy)` holds
    (within 60 s, the run still alive: else the test fails saying `what` never came)."""
    with RecordingProxy(s3.port, hook=hook) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        proc = sync.start(*sync.run_args(*args))
        deadline = time.monotonic() + 60
        while not ready(proxy):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, what
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
