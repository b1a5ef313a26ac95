"""The remote manifest when the store misbehaves: one object that refuses HEAD, and a
listing page that claims to be truncated without saying where to go on."""

from __future__ import annotations

import pytest

from tests.support.proxy import Fault, RecordingProxy

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("status", [403, 400])
def test_head_refused_for_one_object_uploads_it_and_goes_on(sync, s3, s3client, status):
    for name in ("foreign.txt", "plain.txt"):
        sync.write(name, b"same bytes as the object")
        # Same size, no sha256 metadata: the run must HEAD both.
        s3client.put_object(Bucket=sync.bucket, Key=sync.object_key(name), Body=b"same bytes as the object")
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
