"""The remote manifest when the store misbehaves: one object that refuses HEAD, and a
listing page that claims to be truncated without saying where to go on."""

from __future__ import annotations

import json
import re

import pytest

from tests.support.proxy import Fault, RecordingProxy

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("status", [403, 400])
def test_head_refused_for_one_object_uploads_it_and_goes_on(sync, s3, s3client, status):
    for name in ("foreign.txt", "plain.txt"):
        sync.write(name, b"same bytes as the object")
        # Same size, no sha256 metadata, an ETag that proves nothing (other bytes): the run
        # must HEAD both.
        s3client.put_object(Bucket=sync.bucket, Key=sync.object_key(name), Body=b"SAME BYTES AS THE OBJECT")
    refused = "/" + sync.object_key("foreign.txt")

    def hook(req):  # a foreign SSE-C or cross-account object answers HEAD with 403 or 400
        if req.operation == "HeadObject" and req.path.endswith(refused):
            return Fault(status, "AccessDenied" if status == 403 else "BadRequest")
        return None

    with RecordingProxy(s3.port, hook=hook) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        result = sync.run()
    assert result.code == 0, result.err
    assert result.summary["uploaded"] == "2"
    assert "foreign.txt" in result.err and "refused" in result.err
    heads = s3client.head_object(Bucket=sync.bucket, Key=sync.object_key("foreign.txt"))
    assert heads["Metadata"]  # uploaded by us now, with our sha256


def _truncated_without_token(body: bytes) -> bytes:
    return re.sub(rb"<IsTruncated>\s*false\s*</IsTruncated>", b"<IsTruncated>true</IsTruncated>", body)


@pytest.mark.parametrize("path", ["--crt", "--no-crt"])
def test_truncated_page_without_token_fails_the_listing(sync, s3, s3client, path):
    sync.write("kept.txt", b"local")
    for name in ("extra-1.txt", "extra-2.txt", "sub/extra-3.txt"):
        s3client.put_object(Bucket=sync.bucket, Key=sync.object_key(name), Body=b"remote")
    lists = lambda req: (Fault(status=0, rewrite=_truncated_without_token)  # noqa: E731
                         if req.operation == "ListObjects" else None)
    with RecordingProxy(s3.port, hook=lists) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        result = sync.run("--delete", "--max-delete-percent", "100", path)
    assert result.code == 4, result.err
    assert "truncated" in result.err and "no continuation token" in result.err
    assert len(result.err.strip().splitlines()) == 1, result.err
    sent = proxy.operations()
    assert not {"PutObject", "DeleteObject", "DeleteObjects"} & set(sent), sent  # nothing done
    status = json.loads(sync.cli("status", *sync.journal_args(), "--json").out)
    assert status["runs"][0]["state"] == "failed"


def test_object_refusing_head_and_put_fails_alone(sync, s3, s3client):
    for name in ("foreign.txt", "plain.txt"):
        sync.write(name, b"same bytes as the object")
        # other bytes of the same size: the ETag proves nothing (adopt.py), a HEAD is needed
        s3client.put_object(Bucket=sync.bucket, Key=sync.object_key(name), Body=b"SAME BYTES AS THE OBJECT")
    refused = "/" + sync.object_key("foreign.txt")

    def hook(req):  # another account's object: neither read nor overwritten by us
        if req.operation in ("HeadObject", "PutObject") and req.path.endswith(refused):
            return Fault(403, "AccessDenied")
        return None

    with RecordingProxy(s3.port, hook=hook) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        result = sync.run()
    assert result.code == 1, result.err
    assert result.summary["uploaded"] == "1" and result.summary["failed"] == "1"
    status = json.loads(sync.cli("status", *sync.journal_args(), "--json").out)
    [failed] = status["failed"]
    assert failed["key"] == "foreign.txt" and "refused by the store" in failed["error"]
