"""A real tree whose files have inode numbers of 2^63 and above, synced twice.

overlayfs with xino=on over layers on two filesystems puts the lower layer's number in the
top bit: a file of the lower layer reports st_ino = 2^63 + its inode there. Each CLI run
mounts that overlay in a mount namespace of its own (unshare -m), so nothing is visible
outside it; it needs root and overlayfs, and skips with a reason elsewhere."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys

import pytest

from journalsync.objectmeta import inode_number
from tests.conftest import Result, Sync

# Mounts a tmpfs for the upper layer and the overlay at $2 over the lower layer $1, then runs
# the rest of the arguments in that namespace.
_MOUNT = """set -e
upper=$(mktemp -d); mount -t tmpfs tmpfs "$upper"; mkdir "$upper/u" "$upper/w"
mount -t overlay overlay -o "lowerdir=$1,upperdir=$upper/u,workdir=$upper/w,xino=on" "$2"
shift 2
exec "$@"
"""


def _in_overlay(sync: Sync, mnt, *cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", _MOUNT, "sh",
                           str(sync.src), str(mnt), *cmd], env=sync.env(), capture_output=True,
                          text=True, timeout=180)


def _overlay_inode(sync: Sync, mnt, rel: str) -> int:
    """st_ino of `rel` as the overlay reports it; skips where no such overlay can be made."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) to mount an overlay in a namespace of its own")
    probe = _in_overlay(sync, mnt, "stat", "-c", "%i", str(mnt / rel))
    if probe.returncode != 0:
        pytest.skip(f"no overlayfs with xino here: {probe.stderr.strip()[:200]}")
    ino = int(probe.stdout)
    if ino < 2**63:
        pytest.skip(f"the overlay's inode numbers stay below 2^63 here ({ino})")
    return ino


@pytest.mark.one_server
def test_files_with_inodes_of_2_63_and_above_sync_and_stay_unchanged(sync, s3client):
    sync.write("a.txt", b"alpha")
    sync.write("d/b.txt", b"beta" * 1000)
    mnt = sync.tmp / "mnt"
    mnt.mkdir()
    ino = _overlay_inode(sync, mnt, "d/b.txt")

    def run() -> Result:
        proc = _in_overlay(sync, mnt, sys.executable, "-m", "journalsync", "run", str(mnt),
                           sync.dest, *sync.journal_args())
        return Result(proc.returncode, proc.stdout, proc.stderr)

    first = run()
    assert first.code == 0, first.err
    assert first.summary["uploaded"] == "2"
    second = run()
    assert second.code == 0, second.err
    assert (second.summary["uploaded"], second.summary["skipped"]) == ("0", "2")
    # Kept as the signed 64-bit form of the same number, not hashed again on the second run.
    kept = sync.journal_rows("SELECT inode FROM files WHERE key = 'd/b.txt'")
    assert kept == [(inode_number(ino),)]
    head = s3client.head_object(Bucket=sync.bucket, Key=sync.object_key("d/b.txt"))
    assert head["ContentLength"] == 4000
    assert {k.lower(): v for k, v in head["Metadata"].items()}["sha256"] == \
        hashlib.sha256(b"beta" * 1000).hexdigest()
