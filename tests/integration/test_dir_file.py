"""A directory replaced by a file of its name, and the reverse, on every server.

A store over a filesystem (rclone serve s3; MinIO alike) cannot hold an object `a` beside
objects under `a/`: the upload of the new `a` (or of `a/b`) fails while the old objects
stand. With --delete, the deletes in the way go before the uploads, once the guard has
passed the run's whole delete set; without it, the failed upload says what is in the way.
moto and SeaweedFS hold both, and converge as they always did."""

from __future__ import annotations

import shutil

import pytest

from tests.integration.test_delete import keys
from tests.support.proxy import RecordingProxy

FILLER = [f"f/x{i:02d}.txt" for i in range(30)]  # 2 deletes of 33 objects: within 10%
# A run whose upload of `a` rclone refuses (500) would retry it for 180 s by default: the
# subject here is what is in the way, not the retries.
FAILS_FAST = ("--retry-timeout", "3s")
# Where an upload is expected to fail, the store's refusal is the subject, not the journal.
STORE_ONLY = pytest.mark.sqlite_only("the store's refusal is the subject, not the journal")


def filesystem_backed(s3) -> bool:
    return s3.name == "rclone"


def stored(s3, s3client, bucket: str) -> set[str]:
    """The keys the store holds. rclone's from its directory: after a refused PUT of `a`
    its listing shows a phantom `a` in place of the objects under `a/`, still on disk."""
    if not filesystem_backed(s3):
        return keys(s3client, bucket)
    root = s3.data_dir / bucket
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def replaced(sync, turn: str) -> tuple[set[str], set[str]]:
    """Sync a tree holding a directory `a` (dir_to_file) or a file `a` (file_to_dir), plus
    `old.txt` and the filler; then turn `a` into the other kind and remove `old.txt`.
    Returns (the keys to delete, the relative paths the source now holds)."""
    before = ["a/b", "a/c/d"] if turn == "dir_to_file" else ["a"]
    for rel in [*before, "old.txt", *FILLER]:
        sync.write(rel, rel.encode())
    first = sync.run()
    assert first.code == 0, first.err
    (sync.src / "old.txt").unlink()
    if turn == "dir_to_file":
        shutil.rmtree(sync.src / "a")
        sync.write("a", b"now a file")
        after = ["a"]
    else:
        (sync.src / "a").unlink()
        sync.write("a/b", b"now a directory")
        after = ["a/b"]
    return {*before, "old.txt"}, {*after, *FILLER}


TURNS = pytest.mark.parametrize("turn", ["dir_to_file", "file_to_dir"])


@TURNS
def test_converges_in_one_run_with_delete(sync, s3, s3client, turn):
    gone, tree = replaced(sync, turn)
    with RecordingProxy(s3.port) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        result = sync.run("--delete")
    assert result.code == 0, result.err
    assert (result.summary["uploaded"], result.summary["deleted"]) == ("1", str(len(gone)))
    assert result.summary["extra"] == "0"
    assert stored(s3, s3client, sync.bucket) == {sync.object_key(rel) for rel in tree}
    # Only the deletes in the way go first; `old.txt` waits for the uploads, as before.
    sent = [(r.operation, r.path) for r in proxy.requests
            if r.operation in ("PutObject", "DeleteObjects", "DeleteObject")]
    put = next(i for i, (op, _) in enumerate(sent) if op == "PutObject")
    assert [op for op, _ in sent[:put]] in (["DeleteObjects"], ["DeleteObject"] * (len(gone) - 1))
    assert sent[-1][0].startswith("DeleteObject") and put < len(sent) - 1
    sync.endpoint_url = None
    again = sync.run("--delete")
    assert again.code == 0, again.err
    assert (again.summary["uploaded"], again.summary["deleted"]) == ("0", "0")


@STORE_ONLY
@TURNS
def test_the_guard_still_caps_the_deletes_in_the_way(sync, s3, s3client, turn):
    gone, tree = replaced(sync, turn)
    before = stored(s3, s3client, sync.bucket)
    result = sync.run("--delete", "--max-delete", "1", *FAILS_FAST)
    assert result.code == 3, result.err  # README: the guard refused, nothing deleted
    assert "over --max-delete 1" in result.err
    assert result.summary["deleted"] == "0"
    new = "a" if turn == "dir_to_file" else "a/b"
    if filesystem_backed(s3):
        assert stored(s3, s3client, sync.bucket) == before
        assert "the delete guard kept it" in result.err
        assert result.summary["failed"] == "1"
    else:
        assert stored(s3, s3client, sync.bucket) == before | {sync.object_key(new)}
    if filesystem_backed(s3):
        return  # rclone lists a phantom `a` for minutes after its refused PUT (see stored())
    forced = sync.run("--delete", "--max-delete", "1", "--force")
    assert forced.code == 0, forced.err
    assert stored(s3, s3client, sync.bucket) == {sync.object_key(rel) for rel in tree}


@TURNS
def test_dry_run_lists_the_deletes_and_sends_nothing(sync, s3, s3client, turn):
    gone, tree = replaced(sync, turn)
    before = stored(s3, s3client, sync.bucket)
    with RecordingProxy(s3.port) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        result = sync.run("--delete", "--dry-run")
    assert result.code == 0, result.err
    lines = result.out.strip().splitlines()
    for rel in gone:
        assert f"delete {rel} (extra: no local file, --delete given)" in lines
    in_the_way = len(gone) - 1  # all but old.txt
    assert f"dry run: {in_the_way} of the deletes would go before the uploads" in result.err
    assert not {"PutObject", "DeleteObjects", "DeleteObject"} & set(proxy.operations())
    assert stored(s3, s3client, sync.bucket) == before
    sync.endpoint_url = None
    real = sync.run("--delete")
    assert real.code == 0, real.err
    assert stored(s3, s3client, sync.bucket) == {sync.object_key(rel) for rel in tree}


@STORE_ONLY
@TURNS
def test_without_delete_the_old_objects_stay(sync, s3, s3client, turn):
    gone, tree = replaced(sync, turn)
    before = stored(s3, s3client, sync.bucket)
    result = sync.run(*FAILS_FAST)
    new = "a" if turn == "dir_to_file" else "a/b"
    assert result.summary["deleted"] == "0" and result.summary["extra"] == str(len(gone))
    if filesystem_backed(s3):
        assert result.code == 1
        assert stored(s3, s3client, sync.bucket) == before
        why = ("a/b exists on the store under a/" if turn == "dir_to_file"
               else "a exists on the store as an object, where a/b needs it as a directory")
        assert f"{why}; --delete would remove it" in result.err
    else:
        assert result.code == 0, result.err
        assert stored(s3, s3client, sync.bucket) == before | {sync.object_key(new)}
