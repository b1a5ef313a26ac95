"""Exit codes that tell the truth (issue 11, item 7): every environment problem gets its
own documented code and one line naming the file or setting; 70 is kept for our bugs.

The read-only and full filesystems are real: small tmpfs mounts (root only).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.proxy import Fault, RecordingProxy


def one_line(result, *words: str) -> None:
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    for word in words:
        assert word in lines[0], lines[0]


@pytest.fixture
def mount(tmp_path):
    """mount(options) -> a fresh tmpfs directory with those options; unmounted after."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("needs root and mount(8) for a real read-only or full filesystem")
    mounted: list[Path] = []

    def make(options: str) -> Path:
        where = tmp_path / f"mnt{len(mounted)}"
        where.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], check=True)
        mounted.append(where)
        return where

    yield make
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], check=False)


def synced(sync, n: int = 6) -> None:
    for i in range(n):
        sync.write(f"f{i}.txt", f"file {i}".encode())
    first = sync.run()
    assert first.code == 0, first.err


@pytest.mark.one_server
def test_unknown_profile_is_a_configuration_error(sync):
    sync.write("a.txt", b"a")
    result = sync.run("--profile", "nosuchprofile")
    assert result.code == 6
    one_line(result, "'nosuchprofile'", "profile")


@pytest.mark.one_server
def test_endpoint_without_a_scheme_is_a_usage_error(sync, s3):
    sync.write("a.txt", b"a")
    result = sync.run("--endpoint-url", f"127.0.0.1:{s3.port}")
    assert result.code == 2
    one_line(result, "is not a URL", "https://")


@pytest.mark.one_server
@pytest.mark.sqlite_only("a SQLite file on a read-only mount")
def test_journal_on_a_read_only_filesystem(sync, mount):
    sync.write("a.txt", b"a")
    ro = mount("ro,size=1m")
    result = sync.cli(*sync.run_args()[:3], "--journal", str(ro / "j.sqlite"))
    assert result.code == 5
    one_line(result, str(ro), "Read-only file system", "--journal")


@pytest.mark.one_server
@pytest.mark.sqlite_only("a SQLite file on a full disk")
def test_journal_on_a_full_filesystem(sync, s3client, mount):
    """The journal fills its filesystem mid-run: exit 5, one line; what was uploaded is
    intact, and with a journal elsewhere the next run finishes the job."""
    for i in range(3000):
        sync.write(f"d{i % 30}/file-with-a-long-name-{i:05d}.txt", f"{i}".encode())
    full = mount("size=256k")
    result = sync.cli(*sync.run_args()[:3], "--journal", str(full / "j.sqlite"))
    assert result.code == 5, result.err
    one_line(result, "no space left for journal", str(full))
    again = sync.run()
    assert again.code == 0, again.err
    assert int(again.summary["uploaded"]) + int(again.summary["skipped"]) == 3000


@pytest.mark.one_server
@pytest.mark.sqlite_only("truncates the SQLite file")
def test_truncated_journal_says_how_to_recover(sync, s3client):
    synced(sync)
    size = sync.journal.stat().st_size
    with open(sync.journal, "r+b") as fh:
        fh.truncate(size // 3)
    for name in ("-wal", "-shm"):
        Path(f"{sync.journal}{name}").unlink(missing_ok=True)
    result = sync.run()
    assert result.code == 5, result.err
    one_line(result, str(sync.journal), "damaged", "move it aside", "nothing stored")
    status = sync.cli("status", *sync.journal_args())
    assert status.code == 5 and "damaged" in status.err
    # The advice works: moved aside, the next run rebuilds it and sends nothing again.
    sync.journal.rename(sync.journal.with_suffix(".damaged"))
    rebuilt = sync.run()
    assert rebuilt.code == 0, rebuilt.err
    assert rebuilt.summary["uploaded"] == "0" and rebuilt.summary["skipped"] == "6"


@pytest.mark.one_server
@pytest.mark.sqlite_only("writes garbage over the SQLite file's pages")
def test_corrupted_journal_is_not_blamed_on_the_store(sync):
    synced(sync, 300)
    size = sync.journal.stat().st_size
    with open(sync.journal, "r+b") as fh:  # garbage over every page but the first
        fh.seek(4096)
        fh.write(os.urandom(size - 4096))
    result = sync.run()
    assert result.code == 5, result.err
    one_line(result, "damaged", str(sync.journal))
    assert "cannot list" not in result.err


@pytest.mark.one_server
@pytest.mark.sqlite_only("the SQLite journal's lock file")
def test_a_lock_that_cannot_be_taken(sync):
    sync.write("a.txt", b"a")
    Path(f"{sync.journal}.lock").mkdir(parents=True)
    result = sync.run()
    assert result.code == 5
    one_line(result, "the run lock", ".lock")


def test_delete_objects_access_denied_is_the_store_refusing(sync, s3, s3client):
    synced(sync, 30)
    (sync.src / "f0.txt").unlink()
    (sync.src / "f1.txt").unlink()
    refuse = lambda req: Fault(403, "AccessDenied") if req.operation.startswith("Delete") else None  # noqa: E731
    with RecordingProxy(s3.port, hook=refuse) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        result = sync.run("--delete", "--force")
    assert result.code == 4, result.err
    assert "stopped deleting: access denied (AccessDenied)" in result.err
    assert {sync.object_key("f0.txt"), sync.object_key("f1.txt")} <= {
        o["Key"] for o in s3client.list_objects_v2(Bucket=sync.bucket)["Contents"]}
