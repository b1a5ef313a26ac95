"""The LIST compares each page with the cached manifest in that page's key range and
stages only the differences (journal/diffstage.py). Whatever changed in the bucket behind
the journal's back (objects added, replaced, deleted, a whole "directory" gone, a new
one), the cached manifest after a run is exactly the bucket."""

from __future__ import annotations


def manifest(sync) -> dict[str, tuple[int, str]]:
    return {k: (s, e) for k, s, e in sync.journal_rows("SELECT key, size, etag FROM remote_objects")}


def bucket(sync, client) -> dict[str, tuple[int, str]]:
    out, base = {}, sync.prefix + "/"
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=sync.bucket, Prefix=base):
        out.update((o["Key"][len(base):], (o["Size"], o["ETag"].strip('"')))
                   for o in page.get("Contents", ()))
    return out


def test_the_cached_manifest_follows_every_change_behind_its_back(sync, s3client):
    for rel in ["top.txt", "a-b", "a/x", "a/y/z", "a0", "d/1", "d/2", "e/1", "f\u00e9/1"]:
        sync.write(rel, rel.encode())
    first = sync.run("--delete")
    assert (first.code, first.summary["uploaded"]) == (0, "9"), first.err
    assert manifest(sync) == bucket(sync, s3client)

    key = f"{sync.prefix}/%s"
    s3client.delete_object(Bucket=sync.bucket, Key=key % "a/y/z")
    s3client.put_object(Bucket=sync.bucket, Key=key % "a/x", Body=b"replaced, longer")
    s3client.put_object(Bucket=sync.bucket, Key=key % "a/w", Body=b"extra in a listed dir")
    s3client.put_object(Bucket=sync.bucket, Key=key % "new/deep/1", Body=b"extra in a new dir")
    s3client.put_object(Bucket=sync.bucket, Key=key % "0top", Body=b"extra at the top")
    for rel in ("d/1", "d/2", "top.txt"):  # d/ gone whole, and a top-level object
        s3client.delete_object(Bucket=sync.bucket, Key=key % rel)
    again = sync.run()  # no --delete: the extras stay, and are seen
    assert again.code == 0, again.err
    assert (again.summary["uploaded"], again.summary["extra"]) == ("5", "3"), again.out
    assert manifest(sync) == bucket(sync, s3client)
    assert set(bucket(sync, s3client)) == {"top.txt", "a-b", "a/w", "a/x", "a/y/z", "a0", "d/1",
                                           "d/2", "e/1", "f\u00e9/1", "new/deep/1", "0top"}

    noop = sync.run()
    assert (noop.code, noop.summary["uploaded"], noop.summary["extra"]) == (0, "0", "3"), noop.err
    assert manifest(sync) == bucket(sync, s3client)

    # The extras go behind its back: one in a listed dir, the only one of a whole dir (no
    # local file comes back there: only the gap between listed dirs shows it gone), one at
    # the top.
    for rel in ("a/w", "new/deep/1", "0top"):
        s3client.delete_object(Bucket=sync.bucket, Key=key % rel)
    last = sync.run()
    assert (last.code, last.summary["uploaded"], last.summary["extra"]) == (0, "0", "0"), last.err
    assert manifest(sync) == bucket(sync, s3client)
    assert "new/deep/1" not in manifest(sync)
