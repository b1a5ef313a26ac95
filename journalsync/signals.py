"""Stop signals during a run: the first SIGINT/SIGTERM finishes the work in flight, a
second stops at once, and either way what finished is recorded and the summary printed."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from journalsync.errors import ExitCode, StopNow

log = logging.getLogger("journalsync")

SIGNAL_EXIT = {signal.SIGINT: ExitCode.INTERRUPTED, signal.SIGTERM: ExitCode.TERMINATED}


@dataclass(slots=True)
class Signals:
    """The stop signals a run received. `armed`: a further one still stops the phases at
    once (cleared once they are over, so it cannot cut the final bookkeeping short)."""

    received: list[int] = field(default_factory=list)
    armed: bool = True
    hurried: bool = False  # a second signal stopped the run at once
    busy: bool = False  # the handler is writing its log line


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[Signals]:
    """SIGINT/SIGTERM set `stop`: no new work is claimed, work in flight finishes, the
    journal stays consistent. A second signal stops at once: StopNow is raised in the main
    thread, so what finished is still recorded and the summary line still printed, and
    the work in flight is left for --resume."""
    signals = Signals()
    if threading.current_thread() is not threading.main_thread():
        yield signals
        return

    def handler(signum, _frame):
        signals.received.append(signum)
        if signals.busy:
            return  # the call below raises once its line is out (logging swallows raises)
        signals.busy = True
        name = signal.Signals(signum).name
        try:
            if len(signals.received) == 1:
                stop.set()
                log.warning("%s: finishing the work in flight, then stopping (again to stop now)",
                            name)
            elif signals.armed:
                log.warning("%s again: stopping now; --resume continues the work in flight", name)
        finally:
            signals.busy = False
        if len(signals.received) > 1 and signals.armed:
            signals.hurried = True
            raise StopNow("stopped at once by a second signal")

    previous = {sig: signal.signal(sig, handler) for sig in SIGNAL_EXIT}
    try:
        yield signals
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
