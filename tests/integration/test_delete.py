"""Delete guardrails against both servers: no combination of an empty or missing source, a
mass change or a failed upload deletes a single object without --force; with --delete
--force on a healthy run exactly the extras under the prefix go."""

from __future__ import annotations

import json
import os

import pytest

from tests.support.proxy import Fault, RecordingProxy


def keys(client, bucket, prefix="") -> set[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {o["Key"] for page in pages for o in page.get("Contents", ())}


def synced_tree(sync, n: int) -> list[str]:
    names = [f"d{i % 3}/f{i:03d}.txt" for i in range(n)]
    for name in names:
        sync.write(name, name.encode())
    result = sync.run()
    assert result.code == 0 and result.summary["uploaded"] == str(n), result.err
    return names


def remove(sync, names):
    for name in names:
        (sync.src / name).unlink()


def test_without_delete_extras_are_kept_and_counted(sync, s3client):
    names = synced_tree(sync, 20)
    remove(sync, names[:2])
    result = sync.run()
    assert result.code == 0
    assert (result.summary["extra"], result.summary["deleted"]) == ("2", "0")
    assert len(keys(s3client, sync.bucket)) == 20


def test_delete_five_percent_passes_with_defaults(sync, s3client):
    names = synced_tree(sync, 40)
    remove(sync, names[:2])
    result = sync.run("--delete")
    assert result.code == 0, result.err
    assert (result.summary["deleted"], result.summary["extra"]) == ("2", "0")
    assert keys(s3client, sync.bucket) == {sync.object_key(n) for n in names[2:]}


def test_fifty_percent_is_refused_then_forced(sync, s3client):
    names = synced_tree(sync, 20)
    remove(sync, names[:10])
    refused = sync.run("--delete")
    assert refused.code == 3
    assert "50.0%" in refused.err and "--max-delete-percent 10" in refused.err
    assert refused.summary["deleted"] == "0" and refused.summary["extra"] == "10"
    assert len(keys(s3client, sync.bucket)) == 20
    forced = sync.run("--delete", "--force")
    assert forced.code == 0, forced.err
    assert forced.summary["deleted"] == "10"
    assert keys(s3client, sync.bucket) == {sync.object_key(n) for n in names[10:]}


def test_max_delete_count(sync, s3client):
    names = synced_tree(sync, 40)
    remove(sync, names[:2])
    result = sync.run("--delete", "--max-delete", "1")
    assert result.code == 3 and "over --max-delete 1" in result.err
    assert len(keys(s3client, sync.bucket)) == 40


def test_empty_source_is_refused(sync, s3client):
    names = synced_tree(sync, 5)
    remove(sync, names)
    for d in ("d0", "d1", "d2"):
        (sync.src / d).rmdir()
    result = sync.run("--delete", "--force")
    assert result.code == 3
    assert "source is empty; the journal remembers 5 files" in result.err
    assert len(keys(s3client, sync.bucket)) == 5
    capped = sync.run("--delete", "--allow-empty-source")  # still 100% > 10%
    assert capped.code == 3 and len(keys(s3client, sync.bucket)) == 5
    emptied = sync.run("--delete", "--allow-empty-source", "--force")
    assert emptied.code == 0 and emptied.summary["deleted"] == "5"
    assert keys(s3client, sync.bucket) == set()


def test_missing_source_is_refused(sync, s3client):
    synced_tree(sync, 5)
    result = sync.cli("run", str(sync.tmp / "unmounted"), sync.dest, *sync.journal_args(),
                      "--delete", "--force", "--allow-empty-source")
    assert result.code == 3, result.err
    assert "does not exist; refusing a run with --delete" in result.err
    assert len(keys(s3client, sync.bucket)) == 5


def test_failed_upload_blocks_every_delete(sync, s3, s3client):
    names = synced_tree(sync, 40)
    remove(sync, names[:2])
    sync.write(names[5], b"changed content")

    def hook(req):  # a per-file, non-retryable refusal of one upload
        if req.operation == "PutObject" and req.path.endswith(names[5]):
            return Fault(400, "InvalidArgument")
        return None

    with RecordingProxy(s3.port, hook=hook) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        result = sync.run("--delete", "--force")
    assert result.code == 1
    assert "1 error(s) in this run, so nothing is deleted" in result.err
    assert result.summary["deleted"] == "0" and result.summary["extra"] == "2"
    assert proxy.operations()["DeleteObjects"] == 0
    assert len(keys(s3client, sync.bucket)) == 40


def test_dry_run_lists_deletes_with_the_verdict_and_deletes_nothing(sync, s3client):
    names = synced_tree(sync, 40)
    remove(sync, names[:2])
    sync.write("new.txt", b"new")
    result = sync.run("--delete", "--dry-run")
    assert result.code == 0, result.err
    lines = result.out.strip().splitlines()
    assert "upload new.txt (new file)" in lines
    assert f"delete {names[0]} (extra: no local file, --delete given)" in lines
    assert f"delete {names[1]} (extra: no local file, --delete given)" in lines
    assert "guard: would pass: 2 of 40 objects (5.0%), within the limits" in lines
    assert len(keys(s3client, sync.bucket)) == 40
    remove(sync, names[2:20])
    refused = sync.run("--delete", "--dry-run", "--json")
    assert refused.code == 3
    data = json.loads(refused.out)
    assert data["guard"]["allowed"] is False
    assert sum(p["action"] == "delete" for p in data["plan"]) == 20
    assert len(keys(s3client, sync.bucket)) == 40


def test_sibling_prefixes_are_untouched(sync, s3client):
    for key in ("backup/host10/a.txt", "backup/host1x", "backup/host1.txt", "other/b.txt"):
        s3client.put_object(Bucket=sync.bucket, Key=key, Body=b"not ours")
    sync.write("keep.txt", b"keep")
    s3client.put_object(Bucket=sync.bucket, Key="backup/host1/stale.txt", Body=b"stale")
    result = sync.run("--delete", "--force")
    assert result.code == 0, result.err
    assert result.summary["deleted"] == "1"
    assert keys(s3client, sync.bucket) == {"backup/host10/a.txt", "backup/host1x",
                                           "backup/host1.txt", "other/b.txt", "backup/host1/keep.txt"}


@pytest.mark.parametrize("failing_key", [None, "f001"])
def test_single_delete_fallback_and_per_key_errors(sync, s3, s3client, failing_key):
    names = synced_tree(sync, 20)
    remove(sync, names[:3])

    def hook(req):
        if req.operation == "DeleteObjects":
            return Fault(501, "NotImplemented")  # as GCS's S3 API answers
        if failing_key and req.operation == "DeleteObject" and failing_key in req.path:
            return Fault(400, "InvalidRequest")
        return None

    with RecordingProxy(s3.port, hook=hook) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        result = sync.run("--delete", "--force")
    assert proxy.operations()["DeleteObject"] == 3
    left = keys(s3client, sync.bucket)
    if failing_key:
        assert result.code == 1 and result.summary["deleted"] == "2"
        # a failed delete is not a source file: not in `failed` (scanned = uploaded +
        # skipped + failed + vanished + pending), but noted, its object left in `extra`
        assert (result.summary["failed"], result.summary["extra"]) == ("0", "1")
        assert "1 delete(s) failed; their objects remain, in `extra`" in result.err
        assert left == {sync.object_key(n) for n in names[3:]} | {sync.object_key(names[1])}
        status = sync.cli("status", *sync.journal_args())
        assert "InvalidRequest" in status.out
    else:
        assert result.code == 0 and result.summary["deleted"] == "3"
        assert left == {sync.object_key(n) for n in names[3:]}


def test_extra_with_a_control_character_is_deleted(sync, s3client):
    """DeleteObjects cannot carry a control character in XML 1.0 (MalformedXML): that
    batch is deleted one key at a time."""
    sync.write("kept.txt", b"local")
    odd = ["bell\x07.txt", "cr\rname.txt", "tab\tname.txt", "plain-extra.txt"]
    for name in odd:
        s3client.put_object(Bucket=sync.bucket, Key=sync.object_key(name), Body=b"remote")
    result = sync.run("--delete", "--max-delete-percent", "100")
    assert result.code == 0, result.err
    assert result.summary["deleted"] == "4"
    left = [o["Key"] for o in s3client.list_objects_v2(Bucket=sync.bucket).get("Contents", [])]
    assert left == [sync.object_key("kept.txt")]


def test_batch_refused_as_malformed_xml_is_deleted_one_by_one(sync, s3, s3client):
    sync.write("kept.txt", b"local")
    for name in ("a-extra.txt", "b-extra.txt"):
        s3client.put_object(Bucket=sync.bucket, Key=sync.object_key(name), Body=b"remote")
    refuse = lambda req: Fault(400, "MalformedXML") if req.operation == "DeleteObjects" else None  # noqa: E731
    with RecordingProxy(s3.port, hook=refuse) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        result = sync.run("--delete", "--max-delete-percent", "100")
    assert result.code == 0, result.err
    assert result.summary["deleted"] == "2"
    assert proxy.operations()["DeleteObject"] == 2
    left = [o["Key"] for o in s3client.list_objects_v2(Bucket=sync.bucket).get("Contents", [])]
    assert left == [sync.object_key("kept.txt")]


def beyond_path_max(root) -> None:
    """A directory whose path is longer than PATH_MAX (4096): made one level at a time
    through directory descriptors, it cannot be listed by its path, not even by root."""
    fd = os.open(root, os.O_RDONLY)
    for level in range(18):
        name = f"{level:02d}" + "d" * 240
        os.mkdir(name, dir_fd=fd)
        inner = os.open(name, os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = inner
    os.close(fd)


@pytest.mark.parametrize("unreadable", ["name-not-utf8", "key-too-long", "dir-beyond-path-max"])
def test_scan_error_blocks_every_delete(sync, s3client, unreadable):
    names = synced_tree(sync, 40)
    remove(sync, names[:2])  # two extras, 5%: within every limit, and --force besides
    if unreadable == "name-not-utf8":
        with open(os.fsencode(sync.src) + b"/latin-1-\xe9t\xe9.txt", "wb") as fh:
            fh.write(b"a name S3 cannot hold")
    elif unreadable == "key-too-long":
        sync.write("/".join(c * 250 for c in "vwxyz"), b"a key over 1024 bytes")
    else:
        beyond_path_max(sync.src)
    before = keys(s3client, sync.bucket)
    result = sync.run("--delete", "--force")
    assert keys(s3client, sync.bucket) == before == {sync.object_key(n) for n in names}
    assert result.summary["deleted"] == "0" and result.summary["extra"] == "2"
    assert "1 error(s) in this run, so nothing is deleted" in result.err
    assert result.code == 1, result.err
