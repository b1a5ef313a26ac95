"""A store that rewrites keys (SeaweedFS stores `\\` as `/`), on every server.

Whether the store rewrites is observed, not assumed: after the first run the listing shows
the object either under the file's own key or under its stored form. On SeaweedFS it must
be the stored form, so the rewriting branch is always exercised there."""

from __future__ import annotations

import json


def listed(client, sync) -> set[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=sync.bucket)
    return {o["Key"] for page in pages for o in page.get("Contents", ())}


def body(client, sync, key: str) -> bytes:
    return client.get_object(Bucket=sync.bucket, Key=sync.object_key(key))["Body"].read()


def rewrites(client, sync, key: str, stored: str) -> bool:
    keys = listed(client, sync)
    assert sync.object_key(key) in keys or sync.object_key(stored) in keys, keys
    found = sync.object_key(key) not in keys
    if sync.s3.name == "seaweed":
        assert found, "SeaweedFS used to store '\\' as '/'"
    return found


def failed_files(sync) -> list[dict]:
    out = sync.cli("status", *sync.journal_args(), "--failed", "--json").out
    return json.loads(out)["file_errors"]


def test_a_rewritten_key_is_never_deleted_nor_uploaded_again(sync, s3client):
    sync.write("keep.txt", b"keep")
    sync.write("a\\b.txt", b"backslash")
    first = sync.run("--delete", "--force")
    assert (first.code, first.summary["uploaded"]) == (0, "2"), first.err
    rewritten = rewrites(s3client, sync, "a\\b.txt", "a/b.txt")
    for _ in range(2):  # the bug lost the object on every other run
        again = sync.run("--delete", "--force")
        assert body(s3client, sync, "a/b.txt" if rewritten else "a\\b.txt") == b"backslash"
        assert (again.summary["uploaded"], again.summary["deleted"]) == ("0", "0"), again.out
        if not rewritten:
            assert again.code == 0 and again.summary["failed"] == "0", again.err
            continue
        assert (again.code, again.summary["failed"]) == (1, "1"), again.err
        [error] = failed_files(sync)
        assert error["path"] == "a\\b.txt"
        assert "keeps this key as 'a/b.txt'" in error["reason"] and "rename" in error["reason"]
    if rewritten:
        text = sync.cli("status", *sync.journal_args(), "--failed").out
        assert "a\\b.txt" in text


def test_a_real_file_at_the_stored_form_keeps_its_object(sync, s3client):
    """`a\\b.txt` and `a/b.txt` are one object on a store that rewrites: the rewritten one
    is refused, the real `a/b.txt` is synced and never deleted."""
    sync.write("a\\b.txt", b"the backslash file")
    sync.write("a/b.txt", b"the real a/b.txt")
    sync.run("--delete")
    rewritten = rewrites(s3client, sync, "a\\b.txt", "a/b.txt")
    for _ in range(2):
        again = sync.run("--delete")
        assert body(s3client, sync, "a/b.txt") == b"the real a/b.txt"
        assert again.summary["deleted"] == "0", again.out
        if not rewritten:
            assert again.code == 0 and again.summary["uploaded"] == "0", again.err
            assert body(s3client, sync, "a\\b.txt") == b"the backslash file"
            continue
        assert (again.code, again.summary["failed"]) == (1, "1"), again.err
        [error] = failed_files(sync)
        assert error["path"] == "a\\b.txt" and "another local file" in error["reason"]
    assert again.summary["uploaded"] == "0", again.out


def test_the_next_run_lists_and_at_most_proves_each_rewritten_key(sync, s3, s3client):
    """A store that keeps the key: LIST only, as for any no-op run. One that rewrites it:
    one HEAD per rewritten key (the proof), nothing written."""
    from tests.support.proxy import RecordingProxy

    sync.write("x/y.txt", b"y")
    sync.write("a\\b.txt", b"backslash")
    assert sync.run().code == 0
    rewritten = rewrites(s3client, sync, "a\\b.txt", "a/b.txt")
    with RecordingProxy(s3.port) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        result = sync.run()
    assert result.summary["uploaded"] == "0", result.out
    operations = proxy.operations()
    assert operations.pop("HeadObject", 0) == (1 if rewritten else 0), proxy.requests
    assert set(operations) == {"ListObjects"}, proxy.requests
