"""The walk in key order, merged with the journal's `files` in key order: only new and
changed files are staged, and the files gone are found as the merge passes them
(journal/diffstage.py says why). Holds one batch and one directory listing per level,
whatever the tree's size.
"""

from __future__ import annotations

import os
import stat as stat_mod
import unicodedata
from collections.abc import Iterator

from journalsync.errors import UsageError
from journalsync.objectmeta import file_identity


class OutOfOrder(Exception):
    """The walk gave a key below the last one (two directories whose names normalise to
    one): the scan starts again with the full stage."""


def _order(entry: os.DirEntry) -> str:
    """Where an entry's keys fall among its siblings': a directory's keys all start with
    its name and "/", so it sorts as that ("a-b" < "a/..." < "a0")."""
    name = entry.name if entry.name.isascii() else unicodedata.normalize("NFC", entry.name)
    try:
        return name + "/" if entry.is_dir(follow_symlinks=False) else name
    except OSError:
        return name


def sorted_walk(root: str, descend=lambda rel: True) -> Iterator[tuple[str, str, os.stat_result | str | None]]:
    """scan.walk's entries (kind, relative path, stat or reason), depth first with each
    directory's entries in key order, so the files come in key order."""
    def listing(rel_dir: str):
        with os.scandir(os.path.join(root, rel_dir) if rel_dir else root) as it:
            return iter(sorted(it, key=_order))

    try:
        stack = [("", listing(""))]
    except OSError as exc:
        raise UsageError(f"cannot read source directory {root}: {exc.strerror}") from exc
    while stack:
        rel_dir, entries = stack[-1]
        entry = next(entries, None)
        if entry is None:
            stack.pop()
            continue
        rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
        try:
            if entry.is_symlink():
                yield "symlink", rel, None
            elif entry.is_dir(follow_symlinks=False):
                if descend(rel):
                    try:
                        stack.append((rel, listing(rel)))
                    except OSError as exc:
                        yield "direrror", rel, f"cannot list directory: {exc.strerror}"
            else:
                st = entry.stat(follow_symlinks=False)
                yield ("file" if stat_mod.S_ISREG(st.st_mode) else "special"), rel, st
        except OSError as exc:
            yield "error", rel, f"cannot stat: {exc.strerror}"


def stage_row(key: str, rel: str, st: os.stat_result | None, error: str | None) -> dict:
    """A scan_stage row: what the walk saw of one file (no stat: it could not be read)."""
    if st is None:
        return {"key": key, "path": rel, "size": None, "mtime_ns": None, "ctime_ns": None,
                "inode": None, "sha256": None, "error": error}
    size, mtime_ns, ctime_ns, inode = file_identity(st)  # as the journal keeps them
    return {"key": key, "path": rel, "size": size, "mtime_ns": mtime_ns,
            "ctime_ns": ctime_ns, "inode": inode, "sha256": None, "error": error}


class ScanDiff:
    """Takes the walk's files in key order; stages (in batches) those that differ from
    `files`, and the keys of `files` the walk passed without seeing as gone, except under
    a directory that could not be listed (those keep their rows)."""

    def __init__(self, journal, batch: int):
        self.journal, self.batch = journal, batch
        self.known = journal.iter_known_files()
        self.next = next(self.known, None)
        self.last: tuple | None = None  # the last file added (key, rel, stat, error)
        self.last_staged = False  # and whether it was staged
        self.staged: list[dict] = []
        self.gone: list[str] = []
        self.unreadable: list[str] = []  # "dir/" of directories that could not be listed

    def unreadable_dir(self, dir_key: str) -> None:
        self.unreadable.append(dir_key + "/")

    def add(self, key: str, rel: str, st: os.stat_result | None, error: str | None = None) -> None:
        """One file (its stat, or why it could not be stated)."""
        last = self.last
        if last is not None and key <= last[0]:
            if key != last[0]:
                raise OutOfOrder(key)
            # Two names, one key: both staged, where stage_files marks the collision.
            if not self.last_staged:
                self.staged.append(stage_row(*last))
            self.staged.append(stage_row(key, rel, st, error))
            self.last_staged = True
            return
        if self.next is not None and self.next[0] < key:
            self._pass_below(key)
        known = self.next
        if known is not None and known[0] == key:
            self.next = next(self.known, None)
            # Unchanged: the same path and identity, a hash known, no error then or now.
            unchanged = (st is not None and error is None and known[6] and known[7] is None
                         and known[1] == rel and (known[2], known[3], known[4], known[5]) == file_identity(st))
        else:
            unchanged = False
        self.last = (key, rel, st, error)
        self.last_staged = not unchanged
        if not unchanged:
            self.staged.append(stage_row(key, rel, st, error))
            if len(self.staged) >= self.batch:
                self._flush(self.batch)

    def _pass_below(self, key: str | None) -> None:
        """The known files below `key` (all, for None) that the walk did not see."""
        while self.next is not None and (key is None or self.next[0] < key):
            gone = self.next[0]
            if not any(gone.startswith(d) for d in self.unreadable):
                self.gone.append(gone)
            self.next = next(self.known, None)
        if len(self.gone) >= self.batch:
            self._flush(self.batch)

    def _flush(self, at_least: int) -> None:
        if len(self.staged) >= at_least:
            self.journal.stage_files(self.staged)
            self.staged = []
        if len(self.gone) >= at_least:
            self.journal.stage_scan_gone(self.gone)
            self.gone = []

    def finish(self) -> None:
        self._pass_below(None)
        self._flush(1)
        self.close()

    def close(self) -> None:
        self.known.close()
