"""Hostile review of issue 13 (adoption): cases the first tests did not try, each on the
real servers. Each failed against main at 960418d (or is marked xfail where the store
cannot honour the fix; the ACL finding is fixed in adoptcopy.py since). The rule-3 finding
(peer metadata against a disagreeing single-part ETag) is test_adopt.py's
test_peer_metadata_never_overrules_a_plain_md5_etag_that_disagrees, fixed on main too."""

from __future__ import annotations

import hashlib
import random

import pytest

from journalsync.config import MiB
from tests.integration.test_adopt import even_parts, put_multipart, run_through_proxy
from tests.support.proxy import Fault, RecordingProxy


def _meta(head: dict) -> dict[str, str]:
    return {k.lower(): v for k, v in (head.get("Metadata") or {}).items()}


def _acl_grants(s3client, bucket: str, key: str) -> set[tuple[str, str]]:
    grants = s3client.get_object_acl(Bucket=bucket, Key=key).get("Grants") or []
    return {(g["Grantee"].get("URI") or g["Grantee"].get("ID") or "", g["Permission"])
            for g in grants}


@pytest.mark.pg_server("moto")
def test_adopt_metadata_keeps_an_objects_acl(sync, s3, s3client):
    """CopyObject gives the copy the default (private) ACL: a public-read object a peer
    published (`aws s3 sync --acl public-read`) must stay public after --adopt-metadata.
    (Skipped, not xfailed, on servers without object ACLs.)"""
    data = b"<html>public</html>"
    key = sync.object_key("index.html")
    try:
        s3client.put_object(Bucket=sync.bucket, Key=key, Body=data, ACL="public-read",
                            ContentType="text/html")
        before = _acl_grants(s3client, sync.bucket, key)
    except s3client.exceptions.ClientError as exc:
        pytest.skip(f"{s3.name} has no object ACLs: {exc}")
    if not any("AllUsers" in who for who, _ in before):
        pytest.skip(f"{s3.name} does not keep a public-read ACL")
    sync.write("index.html", data)
    result = sync.run("--adopt-metadata")
    assert (result.code, result.summary["uploaded"], result.summary.get("adopted")) == \
        (0, "0", "1"), result.out + result.err
    after = _acl_grants(s3client, sync.bucket, key)
    assert after == before
    head = s3client.head_object(Bucket=sync.bucket, Key=key)
    assert _meta(head).get("sha256") == hashlib.sha256(data).hexdigest()  # copied, not left


def _replace_on(s3client, bucket: str, key: str, body: bytes, operation: str):
    """A proxy hook: when `operation` on `key` arrives, another writer replaces the object
    first (once), then the request goes on to the server."""
    done = []

    def hook(req):
        if not done and req.operation == operation and req.path.endswith("/" + key) \
                and (operation != "PutObject" or req.header("x-amz-copy-source")):
            done.append(req)
            s3client.put_object(Bucket=bucket, Key=key, Body=body)
        return None

    return hook, done


def test_adopt_metadata_never_stamps_an_object_replaced_just_before_the_copy(sync, s3, s3client):
    """Another writer replaces an adopted object between --adopt-metadata's HEAD and its
    CopyObject. The other writer's bytes must never be trusted as the file's, even when a
    store that ignores CopySourceIfMatch stamped them with its sha256: the next run uploads."""
    data, other = b"A" * 5000, b"B" * 5000
    key = sync.object_key("race.txt")
    s3client.put_object(Bucket=sync.bucket, Key=key, Body=data)
    sync.write("race.txt", data)
    assert sync.run().summary.get("adopted") == "1"
    hook, done = _replace_on(s3client, sync.bucket, key, other, "PutObject")
    with RecordingProxy(s3.port, hook=hook) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        result = sync.run("--adopt-metadata")
    assert done, proxy.requests
    assert result.code in (0, 1), result.err
    # A store that honours CopySourceIfMatch (SeaweedFS, AWS) refuses the copy; one that
    # ignores it (moto, rclone serve s3) stamps the other bytes with the file's sha256.
    sync.endpoint_url = s3.endpoint_url
    again = sync.run()
    stored = s3client.get_object(Bucket=sync.bucket, Key=key)["Body"].read()
    assert stored == data, (again.out, again.err)


@pytest.mark.parametrize("name", ["a b+c.txt", "pct%20and%2Fslash.txt", "q?x=1&y#frag.txt",
                                  "ünï/cödé ☃.txt", "tilde~semi;colon'quote\".txt"])
def test_adopt_metadata_with_hostile_names(sync, s3, s3client, name):
    """Keys that need escaping in CopySource and in the URL: adopted, then stamped in place."""
    data = name.encode() * 50
    s3client.put_object(Bucket=sync.bucket, Key=sync.object_key(name), Body=data,
                        ContentType="text/x-peer")
    sync.write(name, data)
    result = sync.run("--adopt-metadata")
    assert (result.code, result.summary["uploaded"], result.summary.get("adopted")) == \
        (0, "0", "1"), result.out + result.err
    listed = [o["Key"] for o in s3client.list_objects_v2(Bucket=sync.bucket)["Contents"]]
    assert listed == [sync.object_key(name)]
    head = s3client.head_object(Bucket=sync.bucket, Key=sync.object_key(name))
    assert _meta(head).get("sha256") == hashlib.sha256(data).hexdigest()
    assert head["ContentType"] == "text/x-peer"
    assert s3client.get_object(Bucket=sync.bucket, Key=sync.object_key(name))["Body"].read() == data


def test_a_store_that_refuses_copyobject(sync, s3, s3client):
    """A store answering CopyObject with 501 NotImplemented: the run still succeeds, nothing
    is lost, and stderr says it once (not once per object)."""
    for i in range(20):
        s3client.put_object(Bucket=sync.bucket, Key=sync.object_key(f"f{i}.txt"), Body=b"x" * (i + 1))
        sync.write(f"f{i}.txt", b"x" * (i + 1))

    def hook(req):
        if req.operation == "PutObject" and req.header("x-amz-copy-source"):
            return Fault(status=501, code="NotImplemented")
        return None

    with RecordingProxy(s3.port, hook=hook) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        result = sync.run("--adopt-metadata", "--workers", "2")
    assert (result.code, result.summary["uploaded"], result.summary.get("adopted")) == \
        (0, "0", "20"), result.out + result.err
    copies = [r for r in proxy.requests if r.header("x-amz-copy-source")]
    lines = [line for line in result.err.splitlines() if "not rewritten" in line
             or "could not be rewritten" in line]
    assert len(lines) <= 2, result.err
    assert len(copies) <= 6, "a store that refused one copy was asked for every object"


@pytest.mark.pg_server("seaweed")
def test_a_multipart_copy_never_reverts_an_object_replaced_before_complete(sync, s3, s3client,
                                                                          monkeypatch):
    """Above 5 GiB --adopt-metadata copies in parts (limit lowered here, as in test_adopt).
    Another writer replaces the object after the last UploadPartCopy and before Complete:
    Complete must not put the old bytes back over the newer object."""
    from journalsync import adoptcopy
    from journalsync.clients import ClientFactory
    from journalsync.config import Config, Destination
    from journalsync.journal import Journal

    if s3.name == "rclone":
        pytest.skip("rclone serve s3 has no UploadPartCopy (the copy is refused there)")
    if s3.name == "moto":
        # Skipped, not xfailed: the expected failure's traceback once crashed pytest's own
        # report formatting (tb_lineno None on Python 3.11, INTERNALERROR), ending the run.
        pytest.skip("moto ignores If-Match on CompleteMultipartUpload (AWS and SeaweedFS "
                    "honour it)")
    data = random.Random(4).randbytes(11 * MiB + 5)
    newer = random.Random(5).randbytes(3000)
    key = sync.object_key("big.bin")
    s3client.put_object(Bucket=sync.bucket, Key=key, Body=data)
    sync.write("big.bin", data)
    assert sync.run().summary["adopted"] == "1"
    hook, done = _replace_on(s3client, sync.bucket, key, newer, "CompleteMultipartUpload")
    monkeypatch.setattr(adoptcopy, "COPY_OBJECT_MAX", MiB)
    monkeypatch.setattr(adoptcopy, "COPY_PART_SIZE", 5 * MiB)
    with RecordingProxy(s3.port, hook=hook) as proxy:
        for name, value in s3.env().items():
            monkeypatch.setenv(name, value)
        cfg = Config(source=sync.src, dest=Destination.parse(sync.dest), journal_path=sync.location,
                     endpoint_url=proxy.endpoint_url, endpoint_moved=True).validate()
        with Journal(sync.location) as journal:
            adoptcopy.write_metadata(ClientFactory(cfg), cfg, journal,
                                     journal.recent_runs(1)[0]["id"])
    assert done, proxy.requests
    assert s3client.get_object(Bucket=sync.bucket, Key=key)["Body"].read() == newer
