"""Issue 13 with the real peer tools: a bucket filled by `aws s3 sync`, `rclone sync` or
`s5cmd sync` (tests/support/peers.py) on each real server, then journalsync's first run
over it, counted at the recording proxy.

The first run proves every object from what the LIST says (a single-part ETag is the MD5
of the bytes; a multipart ETag is recomputed for the peer's part size) and sends no object
bytes; the next run is an ordinary no-op. A file edited in place to the same size and
mtime, and a multipart object with a corrupted middle part, are uploaded, never adopted.

Each peer fills its bucket in two syncs: three files above its multipart threshold, two
sent in 6 MiB parts and the third (added to the second sync) in the tool's default part
size where that is cheap (aws 8 MiB; rclone 5 MiB chunks, its 200 MiB cutoff lowered),
else 5 MiB (s5cmd, whose default is 50 MiB). That each of them really went multipart is
read off the proxy: `rclone serve s3` gives a multipart object a plain MD5 ETag.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import time
from pathlib import Path

import pytest

from tests.conftest import Sync
from tests.support.peers import PEERS, Fill, MiB, fill_bucket, multipart_uploads
from tests.support.proxy import RecordingProxy

pytestmark = pytest.mark.slow

PREFIX = "adopted/host1"
DEFAULT_SIZED = "big/c.bin"  # the one file each peer sends with its default part size
LARGE = {"big/a.bin": 12 * MiB + 314_159, "big/nested/b.bin": 13 * MiB + 271_828,
         DEFAULT_SIZED: 17 * MiB + 161_803}
SECOND_PART_SIZE = {"aws": None, "rclone": None, "s5cmd": 5 * MiB}  # None: the tool's default
WRITES = ("PutObject", "UploadPart", "CreateMultipartUpload", "CompleteMultipartUpload", "Post")


def fills(peer: str) -> list[Fill]:
    return [Fill(peer, 6 * MiB, exclude=(DEFAULT_SIZED,)), Fill(peer, SECOND_PART_SIZE[peer])]


def small_tree(count: int = 40) -> dict[str, bytes]:
    """`count` small files: some empty, most in subdirectories, one with a unicode name."""
    rnd = random.Random(13)
    files = {"naïve/ünïcødé €.txt": "grüße, ☃\n".encode() * 40}
    for i in range(count - 1):
        rel = f"d{i % 4}/f{i:03d}.txt" if i % 5 else f"top{i:03d}.txt"
        files[rel] = b"" if i % 10 == 3 else rnd.randbytes(rnd.randint(1, 30_000))
    return files


def write_tree(sync: Sync, files: dict[str, bytes]) -> None:
    """Write the files with an mtime an hour in the past. aws and s5cmd send a file again
    when its mtime is not older than the object's LastModified, which moto keeps in whole
    seconds: a file written in the same second as the first fill would be sent again (in
    other parts) by the second fill."""
    past = time.time_ns() - 3600 * 10**9
    for rel, data in files.items():
        path = sync.write(rel, data)
        os.utime(path, ns=(past, past))


def uploaded_by(rel: str, peer_fills: list[Fill]) -> Fill:
    return next(f for f in peer_fills if rel not in f.exclude)


def fill_and_check(peer: str, sync: Sync, proxy: RecordingProxy, sizes: dict[str, int]) -> None:
    """The peer syncs the tree through the proxy; every file above its threshold must have
    gone up in parts, as many as its part size makes, and nothing else in parts."""
    peer_fills = fills(peer)
    for fill in peer_fills:
        fill_bucket(fill, sync.src, sync.s3, proxy.endpoint_url, sync.bucket, PREFIX,
                    sync.tmp / "peer")
    expected = {}
    for rel, size in sizes.items():
        fill = uploaded_by(rel, peer_fills)
        if fill.is_multipart(size):
            expected[sync.object_key(rel)] = fill.parts(size)
    assert len(expected) == len(LARGE)
    assert dict(multipart_uploads(proxy.requests, sync.bucket)) == expected
    listed = {o["Key"]: o["ETag"].strip('"') for o in list_objects(sync)}
    assert set(listed) == {sync.object_key(rel) for rel in sizes}
    for key, parts in expected.items():
        if sync.s3.name == "rclone":  # rclone serve s3: a plain MD5 ETag, parts or not
            assert re.fullmatch(r"[0-9a-f]{32}", listed[key]), (key, listed[key])
        else:
            assert listed[key].endswith(f"-{parts}"), (key, listed[key])
    proxy.clear()


def list_objects(sync: Sync) -> list[dict]:
    pages = sync.s3.client().get_paginator("list_objects_v2").paginate(
        Bucket=sync.bucket, Prefix=f"{PREFIX}/")
    return [o for page in pages for o in page.get("Contents", [])]


def expected_proofs(server: str, peer: str, sizes: dict[str, int]) -> dict[str, int]:
    """proof -> objects: the ETag proves each (a multipart one by its part size), except
    that `rclone serve s3` gives multipart objects the plain MD5 ETag."""
    proofs: dict[str, int] = {}
    for rel, size in sizes.items():
        fill = uploaded_by(rel, fills(peer))
        multipart = fill.is_multipart(size) and server != "rclone"
        proof = f"multipart-etag:{fill.effective_part_size // MiB}MiB" if multipart else "etag-md5"
        proofs[proof] = proofs.get(proof, 0) + 1
    return proofs


def object_ops(proxy: RecordingProxy, sync: Sync) -> list[tuple[str, str]]:
    """(operation, key) of every request on an object under the prefix."""
    base = f"/{sync.bucket}/{PREFIX}/"
    from urllib.parse import unquote

    return [(r.operation, unquote(r.path)[len(base):]) for r in proxy.requests
            if unquote(r.path).startswith(base)]


def status_json(sync: Sync) -> dict:
    res = sync.cli("status", *sync.journal_args(), "--json")
    assert res.code == 0, res.err
    return json.loads(res.out)


def status_adopted_line(sync: Sync) -> dict[str, int]:
    """proof -> count from `journalsync status`'s `adopted: 40 etag-md5, 3 ...` line."""
    res = sync.cli("status", *sync.journal_args())
    assert res.code == 0, res.err
    line = next((ln for ln in res.out.splitlines() if ln.startswith("adopted: ")), None)
    assert line is not None, res.out
    pairs = (item.split(" ", 1) for item in line[len("adopted: "):].split(", "))
    return {proof: int(n.replace(",", "")) for n, proof in pairs}


def edit_keeping_size_and_mtime(path: Path) -> bytes:
    """New bytes of the same length, and the old mtime put back (what aws and s5cmd
    compare): only the content and the ctime change."""
    st = path.stat()
    old = path.read_bytes()
    new = bytes(b ^ 0x5A for b in old)
    path.write_bytes(new)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    return new


def corrupt_middle_part(sync: Sync, rel: str, data: bytes, part_size: int) -> None:
    """Write the object again as a multipart upload with the same part sizes and total size
    but one byte of its middle part changed (what a damaged part looks like in a LIST)."""
    client, key = sync.s3.client(), sync.object_key(rel)
    parts = [bytearray(data[i:i + part_size]) for i in range(0, len(data), part_size)]
    assert len(parts) >= 3
    middle = parts[len(parts) // 2]
    middle[len(middle) // 2] ^= 0xFF
    upload = client.create_multipart_upload(Bucket=sync.bucket, Key=key)["UploadId"]
    done = [{"PartNumber": n, "ETag": client.upload_part(
        Bucket=sync.bucket, Key=key, UploadId=upload, PartNumber=n, Body=bytes(part))["ETag"]}
        for n, part in enumerate(parts, 1)]
    client.complete_multipart_upload(Bucket=sync.bucket, Key=key, UploadId=upload,
                                     MultipartUpload={"Parts": done})


@pytest.mark.parametrize("peer", PEERS)
def test_first_run_adopts_a_bucket_a_peer_filled(peer, s3, bucket, tmp_path, journal_pg_url):
    files = small_tree()
    large = {rel: random.Random(rel).randbytes(size) for rel, size in LARGE.items()}
    sizes = {rel: len(data) for rel, data in {**files, **large}.items()}
    with RecordingProxy(s3.port) as proxy:
        sync = Sync(s3, bucket, tmp_path, prefix=PREFIX, endpoint_url=proxy.endpoint_url,
                    pg_url=journal_pg_url)
        write_tree(sync, {**files, **large})
        fill_and_check(peer, sync, proxy, sizes)

        first = sync.run()
        assert first.code == 0, first.err
        ops = object_ops(proxy, sync)
        assert [op for op in ops if op[0] in WRITES] == []  # no object bytes sent
        assert [op for op in ops if op[0] == "HeadObject"] == []  # every ETag decided
        assert first.summary["uploaded"] == "0"
        assert first.summary["adopted"] == str(len(sizes))
        assert status_adopted_line(sync) == expected_proofs(s3.name, peer, sizes)

        proxy.clear()
        second = sync.run()
        assert second.code == 0, second.err
        assert second.summary["uploaded"] == "0" and "adopted" not in second.summary
        assert [op for op in object_ops(proxy, sync) if op[0] in (*WRITES, "HeadObject")] == []

        edited = "d2/f006.txt"
        new = edit_keeping_size_and_mtime(sync.src / edited)
        proxy.clear()
        third = sync.run()
        assert third.code == 0, third.err
        assert third.summary["uploaded"] == "1"
        assert [op for op in object_ops(proxy, sync) if op[0] in WRITES] == [("PutObject", edited)]
    body = s3.client().get_object(Bucket=bucket, Key=sync.object_key(edited))["Body"].read()
    assert body == new


@pytest.mark.parametrize("peer", PEERS)
def test_first_run_uploads_what_differs_from_a_peer_bucket(peer, s3, bucket, tmp_path, journal_pg_url):
    """Before the first run: a local file edited to the same size and mtime, and an object
    rewritten with its middle part damaged. Both are uploaded; the rest is adopted."""
    files = small_tree(8)
    corrupted = "big/nested/b.bin"
    large = {corrupted: random.Random(corrupted).randbytes(LARGE[corrupted])}
    sizes = {rel: len(data) for rel, data in {**files, **large}.items()}
    with RecordingProxy(s3.port) as proxy:
        sync = Sync(s3, bucket, tmp_path, prefix=PREFIX, endpoint_url=proxy.endpoint_url,
                    pg_url=journal_pg_url)
        write_tree(sync, {**files, **large})
        fill = Fill(peer, 6 * MiB)
        fill_bucket(fill, sync.src, s3, proxy.endpoint_url, bucket, PREFIX, tmp_path / "peer")
        assert multipart_uploads(proxy.requests, bucket) == {sync.object_key(corrupted): 3}

        edited = "d1/f001.txt"
        new = edit_keeping_size_and_mtime(sync.src / edited)
        corrupt_middle_part(sync, corrupted, large[corrupted], fill.effective_part_size)
        proxy.clear()
        first = sync.run()
        assert first.code == 0, first.err
        assert first.summary["uploaded"] == "2"
        assert first.summary["adopted"] == str(len(sizes) - 2)
        writes = {op for op in object_ops(proxy, sync) if op[0] in ("PutObject", "UploadPart")}
        assert writes == {("PutObject", edited), ("UploadPart", corrupted)}
        assert sum(status_json(sync)["adopted"].values()) == len(sizes) - 2
    client = s3.client()
    for rel, data in ((edited, new), (corrupted, large[corrupted])):
        body = client.get_object(Bucket=bucket, Key=sync.object_key(rel))["Body"].read()
        assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest(), rel


@pytest.mark.parametrize("peer", ["aws", "rclone"])  # s5cmd's part size is whole MiB only
def test_a_part_size_no_etag_candidate_matches(peer, s3, bucket, tmp_path, journal_pg_url):
    """5.5 MiB parts: no candidate part size rebuilds the multipart ETag, so that object is
    the only one HEADed. rclone's `md5chksum` metadata then proves it (`rclone-md5`); aws
    wrote no such metadata, so it is uploaded. `rclone serve s3`'s plain MD5 ETag proves
    it either way, with no HEAD."""
    files = small_tree(6)
    rel = "big/a.bin"
    data = random.Random(rel).randbytes(LARGE[rel])
    with RecordingProxy(s3.port) as proxy:
        sync = Sync(s3, bucket, tmp_path, prefix=PREFIX, endpoint_url=proxy.endpoint_url,
                    pg_url=journal_pg_url)
        write_tree(sync, {**files, rel: data})
        fill_bucket(Fill(peer, 5 * MiB + MiB // 2), sync.src, s3, proxy.endpoint_url, bucket,
                    PREFIX, tmp_path / "peer")
        assert multipart_uploads(proxy.requests, bucket) == {sync.object_key(rel): 3}
        proxy.clear()
        first = sync.run()
        assert first.code == 0, first.err
        ops = object_ops(proxy, sync)
        heads = {key for op, key in ops if op == "HeadObject"}  # an upload may HEAD it too
        writes = {key for op, key in ops if op in WRITES}
        adopted = status_json(sync)["adopted"]
    if s3.name == "rclone":
        assert (heads, writes, adopted) == (set(), set(), {"etag-md5": len(files) + 1})
    elif peer == "rclone":
        assert (heads, writes, adopted) == ({rel}, set(), {"etag-md5": len(files), "rclone-md5": 1})
        assert first.summary["uploaded"] == "0"
    else:
        assert (heads, writes, adopted) == ({rel}, {rel}, {"etag-md5": len(files)})
        assert first.summary["uploaded"] == "1"
