"""Progress on a terminal: files and bytes done of the total, rate, ETA, and the shared
backoff's state (requests in flight, throttled responses). Not on a terminal, or with
--quiet, -v, --debug or --json, nothing is drawn: cron mail gets the summary line only."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from journalsync.models import TransferResult


class ProgressView:
    def __init__(self, console: Console | None = None):
        self.console = console or Console(file=sys.stderr)
        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
            TransferSpeedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[files]}"),
            TextColumn("{task.fields[net]}"), console=self.console, transient=True)
        self._task = None
        self._files = (0, 0)
        self.backoff = None

    @classmethod
    def for_terminal(cls, enabled: bool) -> ProgressView | None:
        console = Console(file=sys.stderr)
        return cls(console) if enabled and console.is_terminal else None

    def __enter__(self) -> ProgressView:
        self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.stop()

    def phase(self, text: str) -> None:
        if self._task is None:
            self._task = self._progress.add_task(text, total=None, files="", net="")
        else:
            self._progress.update(self._task, description=text)

    def uploads(self, files: int, total_bytes: int) -> None:
        self._files = (0, files)
        self.phase("uploading")
        self._progress.update(self._task, total=total_bytes, completed=0,
                              files=f"{0}/{files} files")

    def on_result(self, result: TransferResult) -> None:
        done, total = self._files
        self._files = (done + 1, total)
        net = ""
        if self.backoff is not None and (self.backoff.throttled or self.backoff.limit < self.backoff.max):
            net = (f"in flight {int(self.backoff.limit)}/{self.backoff.max}, "
                   f"throttled {self.backoff.throttled}x")
        self._progress.update(self._task, advance=result.size or 0 if result.ok else 0,
                              files=f"{done + 1}/{total} files", net=net)
