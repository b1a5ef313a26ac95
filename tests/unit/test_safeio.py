"""safeio.open_source against a real directory: what it opens and what it refuses."""

from __future__ import annotations

import os
import socket

import pytest

from journalsync.safeio import SourceRefused, open_source


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "src"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "f").write_bytes(b"inside")
    (root / "top").write_bytes(b"top")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "f").write_bytes(b"SECRET")
    return root, outside


def test_regular_files_open_at_any_depth(tree):
    root, _ = tree
    with open_source(str(root), "sub/f") as fh:
        assert fh.read() == b"inside"
    with open_source(str(root), "top") as fh:
        assert os.get_blocking(fh.fileno())  # O_NONBLOCK is cleared before use
        assert fh.read() == b"top"


def test_a_source_file_is_read_unbuffered(tree, tmp_path):
    """A raw descriptor file: no lseek and no isatty ioctl per file opened (each syscall a
    GIL release, a thread handover under 8 workers). Its readers loop on short reads, so the
    whole of a file larger than one read comes through the ones that send and hash."""
    import hashlib
    import io

    from journalsync.prehash import read_into

    root, _ = tree
    with open_source(str(root), "top") as fh:
        assert isinstance(fh, io.FileIO)
    big = os.urandom(3 * 1024 * 1024 + 7)
    (root / "big").write_bytes(big)
    with open_source(str(root), "big") as fh:
        assert fh.read() == big  # transfer._single: to the end, however many reads it takes
    with open_source(str(root), "big") as fh:
        part = read_into(fh, bytearray(len(big) + 1))  # multipart.py's part reads
        assert bytes(part) == big and hashlib.sha256(part).digest() == hashlib.sha256(big).digest()


def test_the_root_itself_may_be_a_symlink(tree, tmp_path):
    root, _ = tree
    (tmp_path / "root-link").symlink_to(root)
    with open_source(str(tmp_path / "root-link"), "sub/f") as fh:
        assert fh.read() == b"inside"


def test_file_swapped_for_a_symlink_is_not_followed(tree):
    root, outside = tree
    (root / "top").unlink()
    (root / "top").symlink_to(outside / "f")
    with pytest.raises(SourceRefused, match="replaced by a symlink since the scan; not followed"):
        open_source(str(root), "top")


def test_directory_swapped_for_a_symlink_is_not_followed(tree):
    root, outside = tree
    (root / "sub").rename(root / "sub.old")
    (root / "sub").symlink_to(outside)
    with pytest.raises(SourceRefused, match=r"directory sub/ was replaced by a symlink"):
        open_source(str(root), "sub/f")


def test_directory_swapped_for_a_file_is_refused(tree):
    root, _ = tree
    (root / "sub").rename(root / "sub.old")
    (root / "sub").write_bytes(b"x")
    with pytest.raises(SourceRefused, match=r"directory sub/ is a regular file now"):
        open_source(str(root), "sub/f")


def test_fifo_is_refused_without_blocking(tree):
    root, _ = tree
    (root / "top").unlink()
    os.mkfifo(root / "top")
    with pytest.raises(SourceRefused, match="is a FIFO now; not read"):
        open_source(str(root), "top")


def test_socket_and_directory_are_refused(tree):
    root, _ = tree
    (root / "top").unlink()
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(root / "top"))
        with pytest.raises(SourceRefused, match="is a socket now"):
            open_source(str(root), "top")
    with pytest.raises(SourceRefused, match="is a directory now"):
        open_source(str(root), "sub")


def test_a_missing_file_is_an_ordinary_oserror(tree):
    root, _ = tree
    with pytest.raises(FileNotFoundError):
        open_source(str(root), "sub/gone")
    with pytest.raises(FileNotFoundError):
        open_source(str(root), "nodir/f")
