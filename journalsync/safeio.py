"""Open a source file the way the scan saw it, or refuse with a reason.

Between the scan and the upload (seconds, or a night for `--resume`) any path in the tree
can be swapped. Opening by name would follow what is there now: a planned file replaced
by a symlink to /etc/shadow would upload /etc/shadow, a directory replaced by a symlink to
/etc would do the same one level up, and a FIFO would block the worker in open() forever.
So a source file is reached one component at a time from the source root with openat
(`dir_fd`) and O_NOFOLLOW, never through a symlink; it is lstat'ed, then opened with
O_NONBLOCK (a FIFO or device swapped in between cannot block), fstat'ed, and used only if
it is a regular file. Everything after that (hashing, sending) reads that one descriptor.

The source root itself is followed: the user named it, and /srv/data -> /mnt/disk is
ordinary. Only what lies under it is checked.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import BinaryIO

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = (os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
               | getattr(os, "O_NOCTTY", 0))


class SourceRefused(Exception):
    """The planned path is no longer a regular file reached without symlinks; it was not read."""


def open_source(root: str, rel: str) -> BinaryIO:
    """Open `rel` (a POSIX path relative to `root`, as the scan stored it) for reading.

    Raises SourceRefused when a component is now a symlink, or the file is no longer a
    regular file; OSError for anything else (gone, unreadable). The caller owns the
    returned file and should fstat its descriptor rather than the path.
    """
    parts = rel.split("/")
    dir_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for depth, name in enumerate(parts[:-1], 1):
            parent, dir_fd = dir_fd, _enter(dir_fd, name, "/".join(parts[:depth]))
            os.close(parent)
        fd = _open_regular(dir_fd, parts[-1])
    finally:
        os.close(dir_fd)
    return os.fdopen(fd, "rb", buffering=0)


def _enter(dir_fd: int, name: str, shown: str) -> int:
    """The directory `name` under dir_fd, opened without following a symlink."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ENOTDIR, errno.ELOOP):
            raise SourceRefused(_dir_reason(dir_fd, name, shown)) from exc
        raise


def _dir_reason(dir_fd: int, name: str, shown: str) -> str:
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return f"directory {shown}/ is gone or changed since the scan; not read"
    if stat.S_ISLNK(st.st_mode):
        return f"directory {shown}/ was replaced by a symlink since the scan; not followed"
    return f"directory {shown}/ {_kind(st.st_mode)} now; not read"


def _open_regular(dir_fd: int, name: str) -> int:
    # lstat first: opening a FIFO releases a writer blocked in its own open(), and opening
    # a device can have side effects, so neither is opened at all when we can tell.
    _refuse_unless_regular(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    try:
        fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # swapped for a symlink since the lstat above
            _refuse_unless_regular(stat.S_IFLNK)
        raise
    try:
        # The descriptor decides: whatever was swapped in since the lstat is caught here.
        _refuse_unless_regular(os.fstat(fd).st_mode)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _refuse_unless_regular(mode: int) -> None:
    if stat.S_ISLNK(mode):
        raise SourceRefused("replaced by a symlink since the scan; not followed")
    if not stat.S_ISREG(mode):
        raise SourceRefused(f"{_kind(mode)} now; not read")


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "is a directory"
    if stat.S_ISFIFO(mode):
        return "is a FIFO"
    if stat.S_ISSOCK(mode):
        return "is a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "is a device"
    if stat.S_ISREG(mode):
        return "is a regular file"
    return "is not a regular file"
