"""Adoption (adopt.py) on every server: a bucket another tool filled, written here with boto3
directly (single PUTs, multipart uploads with 5 MiB and 8 MiB parts, odd part sizes with
rclone's md5chksum or s3cmd's s3cmd-attrs metadata), is taken over without sending a byte.

What the servers answer (probed for this test): moto and SeaweedFS give multipart objects
the usual `<md5 of part md5s>-N` ETag; `rclone serve s3` gives them the plain MD5 of the
whole object, so there every object is proven by rule 1 and no HEAD is needed."""

from __future__ import annotations

import base64
import hashlib
import json
import random

from journalsync.config import MiB
from tests.support.proxy import RecordingProxy


def put_multipart(client, bucket: str, key: str, data: bytes, part_sizes: list[int], **extra) -> None:
    """A multipart upload with the given part sizes (the last part takes the rest)."""
    upload = client.create_multipart_upload(Bucket=bucket, Key=key, **extra)
    parts, offset = [], 0
    for number, size in enumerate(part_sizes + [len(data)], 1):
        chunk = data[offset:offset + size]
        if not chunk:
            break
        resp = client.upload_part(Bucket=bucket, Key=key, UploadId=upload["UploadId"],
                                  PartNumber=number, Body=chunk)
        parts.append({"PartNumber": number, "ETag": resp["ETag"]})
        offset += len(chunk)
    client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload["UploadId"],
                                     MultipartUpload={"Parts": parts})


def even_parts(size: int, part_size: int) -> list[int]:
    return [part_size] * (-(-size // part_size) - 1)


def foreign_bucket(sync, s3client) -> dict[str, tuple[bytes, str]]:
    """Fill the bucket the way peers do and the source with the same bytes. Returns
    rel -> (data, the proof moto and SeaweedFS should give)."""
    rnd = random.Random(41)
    made: dict[str, tuple[bytes, str]] = {}
    for i in range(6):
        data = rnd.randbytes(rnd.randint(1, 30_000))
        s3client.put_object(Bucket=sync.bucket, Key=sync.object_key(f"small/{i}.txt"), Body=data)
        made[f"small/{i}.txt"] = (data, "etag-md5")
    for rel, size, part in (("big/five.bin", 11 * MiB + 5, 5 * MiB),
                            ("big/eight.bin", 17 * MiB + 3, 8 * MiB)):
        data = rnd.randbytes(size)
        put_multipart(s3client, sync.bucket, sync.object_key(rel), data, even_parts(size, part))
        made[rel] = (data, f"multipart-etag:{part // MiB}MiB")
    data = rnd.randbytes(11 * MiB)  # odd part sizes: no ETag rule finds them
    md5 = hashlib.md5(data)
    put_multipart(s3client, sync.bucket, sync.object_key("odd/rclone.bin"), data,
                  [5_300_000, 5_300_000],
                  Metadata={"md5chksum": base64.b64encode(md5.digest()).decode()})
    made["odd/rclone.bin"] = (data, "rclone-md5")
    data = rnd.randbytes(10 * MiB + 77)
    put_multipart(s3client, sync.bucket, sync.object_key("odd/s3cmd.bin"), data, [5_500_000],
                  Metadata={"s3cmd-attrs": f"atime:1/gid:0/md5:{hashlib.md5(data).hexdigest()}/mode:33188"})
    made["odd/s3cmd.bin"] = (data, "s3cmd-md5")
    for rel, (data, _) in made.items():
        sync.write(rel, data)
    return made


def expected_proofs(s3, made) -> dict[str, int]:
    counts: dict[str, int] = {}
    for _, proof in made.values():
        proof = "etag-md5" if s3.name == "rclone" else proof  # rclone: plain-MD5 ETags
        counts[proof] = counts.get(proof, 0) + 1
    return counts


def assert_verified(sync, s3, n: int) -> None:
    """`journalsync verify` (straight to the server) passes on all n synced objects."""
    sync.endpoint_url = s3.endpoint_url
    verified = sync.cli("verify", sync.dest, *sync.journal_args())
    assert (verified.code, verified.out.strip().splitlines()[-1]) == \
        (0, f"journalsync: verified={n} of {n} mismatches=0"), verified.out + verified.err


def run_through_proxy(sync, s3, *args):
    with RecordingProxy(s3.port) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        result = sync.run(*args)
    return result, proxy


def test_a_foreign_bucket_is_adopted_without_sending_a_byte(sync, s3, s3client):
    made = foreign_bucket(sync, s3client)
    result, proxy = run_through_proxy(sync, s3, "-v")
    assert result.code == 0, result.err
    ops = proxy.operations()
    assert ops.get("PutObject", 0) == 0 and ops.get("UploadPart", 0) == 0, proxy.requests
    assert (result.summary["uploaded"], result.summary["skipped"]) == ("0", str(len(made)))
    assert result.summary["adopted"] == str(len(made))
    # HEADs only for what the ETag could not decide: the two odd-part objects (none on
    # rclone serve s3, whose ETags are whole-object MD5s).
    assert ops.get("HeadObject", 0) == (0 if s3.name == "rclone" else 2), proxy.requests
    proofs = expected_proofs(s3, made)
    for rel, (_, proof) in made.items():
        shown = "etag-md5" if s3.name == "rclone" else proof
        assert f"adopted {rel}: {shown}" in result.err, result.err
    status = sync.cli("status", *sync.journal_args(), "--json")
    assert json.loads(status.out)["adopted"] == proofs
    text = sync.cli("status", *sync.journal_args()).out
    line = ("adopted: 10 etag-md5" if s3.name == "rclone" else "adopted: 6 etag-md5, "
            "1 multipart-etag:5MiB, 1 multipart-etag:8MiB, 1 rclone-md5, 1 s3cmd-md5")
    assert line in text.splitlines(), text

    # The next run is a plain no-op: LIST only.
    result, proxy = run_through_proxy(sync, s3)
    assert (result.code, result.summary["uploaded"], result.summary["skipped"]) == \
        (0, "0", str(len(made))), result.err
    assert "adopted" not in result.summary
    assert set(proxy.operations()) == {"ListObjects"}, proxy.requests


def test_equal_size_other_content_and_a_damaged_part_are_uploaded(sync, s3, s3client):
    rnd = random.Random(5)
    good = rnd.randbytes(4000)
    sync.write("same.txt", good)
    s3client.put_object(Bucket=sync.bucket, Key=sync.object_key("same.txt"), Body=good)
    sync.write("edited.txt", b"A" * 5000)
    s3client.put_object(Bucket=sync.bucket, Key=sync.object_key("edited.txt"), Body=b"B" * 5000)
    data = rnd.randbytes(17 * MiB + 3)
    sync.write("disk.img", data)
    middle = 8 * MiB + 4 * MiB  # inside the second of three 8 MiB parts
    damaged = data[:middle] + bytes([data[middle] ^ 0x01]) + data[middle + 1:]
    put_multipart(s3client, sync.bucket, sync.object_key("disk.img"), damaged,
                  even_parts(len(damaged), 8 * MiB))
    result, proxy = run_through_proxy(sync, s3, "-v")
    assert result.code == 0, result.err
    assert (result.summary["uploaded"], result.summary["skipped"], result.summary["adopted"]) \
        == ("2", "1", "1"), result.out
    uploaded = {r.path.split("/", 2)[-1].split("?")[0] for r in proxy.requests
                if r.operation in ("PutObject", "CreateMultipartUpload")}
    assert uploaded == {sync.object_key("edited.txt"), sync.object_key("disk.img")}, uploaded
    body = s3client.get_object(Bucket=sync.bucket, Key=sync.object_key("disk.img"))["Body"].read()
    assert body == data


def test_peer_metadata_never_overrules_a_plain_md5_etag_that_disagrees(sync, s3, s3client):
    """An unencrypted single-part object's ETag is the MD5 of its bytes: when it is not the
    file's MD5 the bytes differ, even if a peer's metadata (copied along with an edit, say)
    claims the file's MD5. The file is uploaded, not adopted."""
    local = b"L" * 6000
    sync.write("claimed.txt", local)
    md5 = hashlib.md5(local)
    s3client.put_object(Bucket=sync.bucket, Key=sync.object_key("claimed.txt"), Body=b"R" * 6000,
                        Metadata={"md5chksum": base64.b64encode(md5.digest()).decode(),
                                  "s3cmd-attrs": f"md5:{md5.hexdigest()}"})
    result, proxy = run_through_proxy(sync, s3, "-v")
    assert result.code == 0, result.err
    assert (result.summary["uploaded"], result.summary.get("adopted")) == ("1", None), result.out
    body = s3client.get_object(Bucket=sync.bucket, Key=sync.object_key("claimed.txt"))["Body"].read()
    assert body == local


def test_adopt_metadata_writes_our_sha256_and_keeps_the_headers(sync, s3, s3client):
    rnd = random.Random(9)
    small = rnd.randbytes(3000)
    big = rnd.randbytes(11 * MiB + 5)
    s3client.put_object(Bucket=sync.bucket, Key=sync.object_key("page.csv"), Body=small,
                        ContentType="text/csv", CacheControl="max-age=77",
                        Metadata={"owner": "peer"})
    put_multipart(s3client, sync.bucket, sync.object_key("big.bin"), big, even_parts(len(big), 5 * MiB),
                  ContentType="application/x-thing", CacheControl="no-cache")
    sync.write("page.csv", small)
    sync.write("big.bin", big)
    result, proxy = run_through_proxy(sync, s3)
    assert (result.code, result.summary.get("adopted")) == (0, "2"), result.err
    assert proxy.counts()["PUT"] == 0  # without the flag nothing is written
    for rel in ("page.csv", "big.bin"):
        head = s3client.head_object(Bucket=sync.bucket, Key=sync.object_key(rel))
        assert "sha256" not in {k.lower() for k in head["Metadata"]}
    # verify passes on adopted objects by their proven ETag, before any metadata is there.
    assert_verified(sync, s3, 2)

    result, proxy = run_through_proxy(sync, s3, "--adopt-metadata")
    assert (result.code, result.summary["uploaded"]) == (0, "0"), result.err
    copies = [r for r in proxy.requests if r.method == "PUT"]
    assert len(copies) == 2 and all(r.header("x-amz-copy-source") and r.size == 0
                                    for r in copies), proxy.requests
    expected = {"page.csv": (small, "text/csv", "max-age=77"),
                "big.bin": (big, "application/x-thing", "no-cache")}
    for rel, (data, ctype, cache) in expected.items():
        head = s3client.head_object(Bucket=sync.bucket, Key=sync.object_key(rel))
        meta = {k.lower(): v for k, v in head["Metadata"].items()}
        assert meta["sha256"] == hashlib.sha256(data).hexdigest(), rel
        assert (head["ContentType"].split(";")[0], head.get("CacheControl")) == (ctype, cache), rel
        assert head["ContentLength"] == len(data)
    head = s3client.head_object(Bucket=sync.bucket, Key=sync.object_key("page.csv"))
    assert {k.lower(): v for k, v in head["Metadata"].items()}["owner"] == "peer"
    assert_verified(sync, s3, 2)
    # Done once: the next run with the flag copies nothing and uploads nothing.
    result, proxy = run_through_proxy(sync, s3, "--adopt-metadata")
    assert (result.code, result.summary["uploaded"]) == (0, "0"), result.err
    assert proxy.counts()["PUT"] == 0, proxy.requests


def test_adopt_metadata_from_a_job_file(sync, s3client, tmp_path):
    s3client.put_object(Bucket=sync.bucket, Key=sync.object_key("a.txt"), Body=b"peer")
    sync.write("a.txt", b"peer")
    job = tmp_path / "job.toml"
    job.write_text(f'source = "{sync.src}"\ndestination = "{sync.dest}"\n'
                   f'{sync.journal_toml}\nadopt_metadata = true\n')
    result = sync.cli("run", "--config", str(job))
    assert (result.code, result.summary["uploaded"], result.summary["adopted"]) == (0, "0", "1"), \
        result.err
    head = s3client.head_object(Bucket=sync.bucket, Key=sync.object_key("a.txt"))
    assert {k.lower(): v for k, v in head["Metadata"].items()}["sha256"] == \
        hashlib.sha256(b"peer").hexdigest()


def test_adopt_metadata_in_a_job_file_must_be_a_boolean(offline_sync, tmp_path):
    job = tmp_path / "job.toml"
    job.write_text('source = "/tmp"\ndestination = "s3://bkt/p"\nadopt_metadata = "yes"\n')
    result = offline_sync.cli("run", "--config", str(job))
    assert result.code == 2
    assert result.err.strip() == f"journalsync: error: job file {job}: adopt_metadata must be true or false"


def test_adopt_metadata_copies_large_objects_in_parts(sync, s3, s3client, monkeypatch):
    """Above CopyObject's 5 GiB the copy is UploadPartCopy; the limit is lowered here so an
    11 MiB object takes that path (three 5 MiB part copies) on a real server."""
    from journalsync import adoptcopy
    from journalsync.clients import ClientFactory
    from journalsync.config import Config, Destination
    from journalsync.journal import Journal

    data = random.Random(4).randbytes(11 * MiB + 5)
    s3client.put_object(Bucket=sync.bucket, Key=sync.object_key("big.bin"), Body=data,
                        ContentType="application/x-big", CacheControl="max-age=9")
    sync.write("big.bin", data)
    assert sync.run().summary["adopted"] == "1"
    for name, value in s3.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(adoptcopy, "COPY_OBJECT_MAX", MiB)
    monkeypatch.setattr(adoptcopy, "COPY_PART_SIZE", 5 * MiB)
    cfg = Config(source=sync.src, dest=Destination.parse(sync.dest), journal_path=sync.location,
                 endpoint_url=s3.endpoint_url).validate()
    # rclone serve s3 answers UploadPartCopy with an empty part and no ETag: the copy is
    # refused and aborted there, and the object is left as it was.
    copied = s3.name != "rclone"
    with Journal(sync.location) as journal:
        stats = adoptcopy.write_metadata(ClientFactory(cfg), cfg, journal,
                                            journal.recent_runs(1)[0]["id"])
        assert (stats.copied, stats.failed) == ((1, 0) if copied else (0, 1))
        assert journal.adopted_by_proof() == {"adopt-copy" if copied else "etag-md5": 1}
    head = s3client.head_object(Bucket=sync.bucket, Key=sync.object_key("big.bin"))
    meta = {k.lower(): v for k, v in head["Metadata"].items()}
    assert meta.get("sha256") == (hashlib.sha256(data).hexdigest() if copied else None)
    assert (head["ContentType"], head.get("CacheControl")) == ("application/x-big", "max-age=9")
    body = s3client.get_object(Bucket=sync.bucket, Key=sync.object_key("big.bin"))["Body"].read()
    assert body == data
    assert not s3client.list_multipart_uploads(Bucket=sync.bucket).get("Uploads")
    result = sync.run()  # the new ETag is the journal's: a plain no-op
    assert (result.code, result.summary["uploaded"]) == (0, "0"), result.err
