"""The LIST compares each page with the cached manifest in that page's key range and
stages only the differences (journal/diffstage.py). Whatever changed in the bucket behind
the journal's back (objects added, replaced, deleted, a whole "directory" gone, a new
one), the cached manifest after a run is exactly the bucket."""

from __future__ import annotations

import re

from tests.support.proxy import Fault, RecordingProxy


def manifest(sync) -> dict[str, tuple[int, str]]:
    return {k: (s, e) for k, s, e in sync.journal_rows("SELECT key, size, etag FROM remote_objects")}


def bucket(sync, client) -> dict[str, tuple[int, str]]:
    out, base = {}, sync.prefix + "/"
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=sync.bucket, Prefix=base):
        out.update((o["Key"][len(base):], (o["Size"], o["ETag"].strip('"')))
                   for o in page.get("Contents", ()))
    return out


def counts(result) -> tuple[int, int, int, int, int]:
    s = result.summary
    return int(s["uploaded"]), int(s["skipped"]), int(s["deleted"]), int(s["extra"]), int(s["failed"])


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


def test_pages_split_and_changes_at_their_edges(sync, s3client):
    """Over 1,000 keys, at the top and in a "directory": pages split, and what changes
    behind the journal's back sits at their edges (a page's last key gone, the first of
    the next replaced, keys added just after a page's last)."""
    top = [f"t{i:04d}" for i in range(1205)]
    nested = [f"n/{i:04d}" for i in range(1205)]
    for rel in top + nested:
        sync.write(rel, rel.encode())
    first = sync.run("--delete")
    assert first.code == 0 and counts(first)[0] == 2410, first.err
    key = f"{sync.prefix}/%s"
    # Behind its back: a page's last key gone, the next one replaced, keys added at the
    # edges of the pages, equal-size replacements with other bytes.
    for rel in ("t0999", "n/0999", "t1000", "n/0000", "t1204"):
        s3client.delete_object(Bucket=sync.bucket, Key=key % rel)
    for rel in ("t0998", "n/1000", "n/0998"):
        s3client.put_object(Bucket=sync.bucket, Key=key % rel, Body=b"other")
    s3client.put_object(Bucket=sync.bucket, Key=key % "t0999a", Body=b"extra")
    s3client.put_object(Bucket=sync.bucket, Key=key % "n/0999a", Body=b"extra")
    s3client.put_object(Bucket=sync.bucket, Key=key % "t0997", Body=b"t0997".upper())
    second = sync.run("--delete")
    assert second.code == 0, second.err
    uploaded, skipped, deleted, extra, failed = counts(second)
    assert (uploaded, deleted, failed) == (9, 2, 0), second.out
    assert manifest(sync) == bucket(sync, s3client)
    assert set(bucket(sync, s3client)) == set(top + nested)
    for rel in ("t0997", "t0998", "n/1000", "n/0999"):
        body = s3client.get_object(Bucket=sync.bucket, Key=key % rel)["Body"].read()
        assert body == rel.encode()
    noop = sync.run("--delete")
    assert counts(noop)[:3] == (0, 2410, 0), noop.out


def _reversed_contents(body: bytes) -> bytes:
    """A LIST page with its objects in reverse order."""
    blocks = re.findall(rb"<Contents>.*?</Contents>", body, re.S)
    if len(blocks) < 2:
        return body
    it = iter(reversed(blocks))
    return re.sub(rb"<Contents>.*?</Contents>", lambda m: next(it), body, flags=re.S)


def test_a_server_that_lists_out_of_order(sync, s3, s3client):
    """Pages out of key order cannot be compared by range: the LIST is made again with
    every object staged, and the cached manifest is still the bucket."""
    names = ["a-b", "a/x", "a/y", "a0", "b", "c/1", "c/2"]
    for rel in names:
        sync.write(rel, rel.encode())
    assert sync.run().code == 0
    key = f"{sync.prefix}/%s"
    s3client.delete_object(Bucket=sync.bucket, Key=key % "a/y")  # behind its back
    s3client.delete_object(Bucket=sync.bucket, Key=key % "b")
    s3client.put_object(Bucket=sync.bucket, Key=key % "a/z", Body=b"extra")
    s3client.put_object(Bucket=sync.bucket, Key=key % "c/3", Body=b"extra")
    hook = lambda req: (Fault(status=0, rewrite=_reversed_contents)  # noqa: E731
                        if req.operation == "ListObjects" else None)
    with RecordingProxy(s3.port, hook=hook) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        result = sync.run("--delete", "--max-delete-percent", "100", "-v")
    assert result.code == 0, result.err
    assert "out of key order" in result.err, result.err  # and listed again in full
    assert counts(result)[:3] == (2, 5, 2), result.out
    assert manifest(sync) == bucket(sync, s3client)
    assert set(bucket(sync, s3client)) == set(names)


def _flat_listing(client, bucket: str, prefix: str) -> bytes:
    """What a server that ignores the delimiter answers: every key under the prefix."""
    page = client.list_objects_v2(Bucket=bucket, Prefix=prefix)
    contents = "".join(
        f"<Contents><Key>{o['Key']}</Key><LastModified>"
        f"{o['LastModified'].strftime('%Y-%m-%dT%H:%M:%S.000Z')}</LastModified>"
        f"<ETag>{o['ETag']}</ETag><Size>{o['Size']}</Size><StorageClass>STANDARD</StorageClass>"
        "</Contents>" for o in page.get("Contents", ()))
    assert not page.get("IsTruncated")
    return ('<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/'
            f'doc/2006-03-01/"><Name>{bucket}</Name><Prefix>{prefix}</Prefix><KeyCount>'
            f'{len(page.get("Contents", ()))}</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>false'
            f'</IsTruncated>{contents}</ListBucketResult>').encode()


def test_a_server_that_ignores_the_delimiter_uploads_nothing_unchanged(sync, s3, s3client):
    """A delimiter listing that comes back flat: its nested keys are no top-level page's,
    and no "directory" is listed on its own. The cached manifest must still be the bucket,
    so an unchanged tree uploads nothing."""
    names = ["a", "d/b", "d/c/e", "f"]
    for rel in names:
        sync.write(rel, rel.encode())
    assert counts(sync.run())[0] == 4

    def hook(req):
        if req.operation == "ListObjects" and "delimiter" in req.query:
            prefix = req.query["prefix"][0]
            return Fault(status=0, rewrite=lambda _: _flat_listing(s3client, sync.bucket, prefix))
        return None

    with RecordingProxy(s3.port, hook=hook) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        for _ in range(2):
            again = sync.run("--delete", "--max-delete-percent", "100")
            assert again.code == 0, again.err
            assert counts(again)[:3] == (0, 4, 0), again.out
            assert manifest(sync) == bucket(sync, s3client)



def test_one_directory_listed_out_of_order_among_others(sync, s3, s3client):
    """Only one "directory"'s listing is out of order, found on a list thread while the
    others compare their pages: the LIST is made again in full, and the cached manifest
    is the bucket."""
    names = [f"d{i}/{n}" for i in range(6) for n in ("a", "b", "c")] + ["top"]
    for rel in names:
        sync.write(rel, rel.encode())
    assert sync.run().code == 0
    key = f"{sync.prefix}/%s"
    for rel in ("d0/b", "d3/c", "d5/a"):  # behind its back
        s3client.delete_object(Bucket=sync.bucket, Key=key % rel)
    for rel in ("d1/x", "d3/x", "d9/x"):
        s3client.put_object(Bucket=sync.bucket, Key=key % rel, Body=b"extra")
    odd = f"{sync.prefix}/d3/"
    hook = lambda req: (Fault(status=0, rewrite=_reversed_contents)  # noqa: E731
                        if req.operation == "ListObjects" and req.query.get("prefix") == [odd]
                        else None)
    with RecordingProxy(s3.port, hook=hook) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        result = sync.run("--delete", "--max-delete-percent", "100", "-v")
    assert result.code == 0, result.err
    assert "out of key order" in result.err, result.err  # and listed again in full
    assert counts(result)[:3] == (3, 16, 3), result.out
    assert manifest(sync) == bucket(sync, s3client)
    assert set(bucket(sync, s3client)) == set(names)
