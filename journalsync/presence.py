"""Is a key's file in the source tree right now? Asked just before an object is deleted.

A plan row saying "no local file" is an intention made at scan time, not a fact at delete
time: a file can come back while the uploads run, or between a killed run and its resume.
So every delete first looks again, the way the scan would see it: the key's directories
must be real directories (symlinks are not followed) and its last component a regular file.
Names are compared by their key (NFC), so a file saved under its NFD spelling still counts.
Anything we cannot read counts as present: when in doubt, do not delete.
"""

from __future__ import annotations

import os
import stat as stat_mod
import unicodedata
from pathlib import Path

_DIR, _FILE, _OTHER = "dir", "file", "other"


class LocalPresence:
    """Answers `present(key)` with one scandir per directory, cached until `forget()`."""

    def __init__(self, root: Path):
        self.root = str(root)
        self._dirs: dict[str, dict[str, tuple[str, str]] | None] = {}

    def present(self, key: str) -> bool:
        """True if the scan would find a regular file (or an unreadable entry) for `key`."""
        parts = key.split("/")
        real = ""  # the directory as the filesystem spells it
        for depth, name in enumerate(parts):
            entries = self._listing(real)
            if entries is None:
                return True  # cannot read the directory: unknown, so present
            found = entries.get(unicodedata.normalize("NFC", name))
            if found is None:
                return False
            kind, spelled = found
            last = depth == len(parts) - 1
            if last:
                return kind in (_FILE, "unknown")
            if kind == "unknown":
                return True
            if kind != _DIR:
                return False  # a file or a symlink where a directory should be
            real = f"{real}/{spelled}" if real else spelled
        return False

    def forget(self) -> None:
        """Drop the cached listings: the next look reads the directories again."""
        self._dirs.clear()

    def _listing(self, rel: str) -> dict[str, tuple[str, str]] | None:
        if rel not in self._dirs:
            self._dirs[rel] = _read_dir(os.path.join(self.root, rel) if rel else self.root)
        return self._dirs[rel]


def _read_dir(path: str) -> dict[str, tuple[str, str]] | None:
    """{NFC name: (kind, name as spelled)}; None when the directory cannot be read."""
    try:
        with os.scandir(path) as it:
            entries = list(it)
    except FileNotFoundError:
        return {}
    except OSError:
        return None
    listing: dict[str, tuple[str, str]] = {}
    for entry in entries:
        listing[unicodedata.normalize("NFC", entry.name)] = (_kind(entry), entry.name)
    return listing


def _kind(entry: os.DirEntry) -> str:
    try:
        mode = entry.stat(follow_symlinks=False).st_mode
    except OSError:
        return "unknown"
    if stat_mod.S_ISDIR(mode):
        return _DIR
    return _FILE if stat_mod.S_ISREG(mode) else _OTHER
