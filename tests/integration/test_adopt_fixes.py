"""Issue 13 follow-ups (brief adoptfix): what --adopt-metadata's copy onto itself must not
lose or leave behind, on the real servers. Each test failed against main at 435dbbe.

- An object with a website redirect (or Object Lock, Expires) is left alone, in one line.
- AccessDenied on CopyObject, or on GetObjectAcl, stops the copies after the first, in one
  line, as 501 NotImplemented already did.
- A run SIGKILLed in the middle of a multipart copy (objects above 5 GiB; the limit is
  lowered in the subprocess by a sitecustomize on PYTHONPATH, see `low_copy_limit`) leaves
  an upload that `status` shows in flight, `cleanup` lists as ours and the next run aborts.
"""

from __future__ import annotations

import hashlib
import json
import random
import signal
import threading
import time
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from journalsync.config import MiB
from tests.support.proxy import Fault, RecordingProxy


def _meta(head: dict) -> dict[str, str]:
    return {k.lower(): v for k, v in (head.get("Metadata") or {}).items()}


def _copy_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if "--adopt-metadata" in line]


def _adopt_files(sync, s3client, count: int) -> None:
    for i in range(count):
        s3client.put_object(Bucket=sync.bucket, Key=sync.object_key(f"f{i}.txt"), Body=b"x" * (i + 1))
        sync.write(f"f{i}.txt", b"x" * (i + 1))


def test_an_object_with_a_website_redirect_is_left_alone(sync, s3, s3client):
    """CopyObject does not carry WebsiteRedirectLocation over: the object is not copied
    (one line says why), keeps its redirect and stays adopted; the others are copied."""
    redirected = sync.object_key("old.html")
    s3client.put_object(Bucket=sync.bucket, Key=redirected, Body=b"moved",
                        WebsiteRedirectLocation="/new.html")
    if s3client.head_object(Bucket=sync.bucket, Key=redirected).get("WebsiteRedirectLocation") \
            != "/new.html":
        pytest.skip(f"{s3.name} does not keep a website redirect")
    sync.write("old.html", b"moved")
    s3client.put_object(Bucket=sync.bucket, Key=sync.object_key("new.html"), Body=b"new page")
    sync.write("new.html", b"new page")
    result = sync.run("--adopt-metadata")
    assert (result.code, result.summary["uploaded"], result.summary.get("adopted")) == \
        (0, "0", "2"), result.out + result.err
    head = s3client.head_object(Bucket=sync.bucket, Key=redirected)
    assert head.get("WebsiteRedirectLocation") == "/new.html"
    assert "sha256" not in _meta(head)
    lines = [line for line in result.err.splitlines() if "old.html: left alone" in line]
    assert len(lines) == 1 and "website redirect" in lines[0], result.err
    new = s3client.head_object(Bucket=sync.bucket, Key=sync.object_key("new.html"))
    assert _meta(new).get("sha256") == hashlib.sha256(b"new page").hexdigest()
    again = sync.run()
    assert (again.code, again.summary["uploaded"]) == (0, "0"), again.err


@pytest.mark.parametrize("denied", ["copy", "acl"])
def test_access_denied_stops_the_copies_in_one_line(sync, s3, s3client, denied):
    """Credentials without s3:PutObject for copies (or without s3:GetObjectAcl, so a copy
    could turn a public object private): the first AccessDenied stops --adopt-metadata, one
    line says so, the run succeeds and every object stays adopted as it was."""
    _adopt_files(sync, s3client, 20)

    def hook(req):
        refused = (req.operation == "PutObject" and req.header("x-amz-copy-source")) \
            if denied == "copy" else (req.operation == "GetObject" and "acl" in req.query)
        return Fault(status=403, code="AccessDenied") if refused else None

    with RecordingProxy(s3.port, hook=hook) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        result = sync.run("--adopt-metadata", "--workers", "2")
    assert (result.code, result.summary["uploaded"], result.summary.get("adopted")) == \
        (0, "0", "20"), result.out + result.err
    lines = [line for line in _copy_lines(result.err) if "s3:" in line or "not rewritten" in line]
    assert len(lines) == 1, result.err
    assert ("s3:PutObject" if denied == "copy" else "s3:GetObjectAcl") in lines[0]
    copies = [r for r in proxy.requests if r.header("x-amz-copy-source")]
    assert len(copies) <= 6, "credentials refused once were tried for every object"
    for i in (0, 19):
        head = s3client.head_object(Bucket=sync.bucket, Key=sync.object_key(f"f{i}.txt"))
        assert "sha256" not in _meta(head)


def low_copy_limit(sync, tmp_path: Path) -> None:
    """Lower CopyObject's 5 GiB limit in the CLI subprocesses (1 MiB, 5 MiB part copies),
    as test_adopt's in-process test does, through a sitecustomize on PYTHONPATH: a test
    hook that needs no knob in journalsync itself."""
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(
        "from journalsync import adoptcopy\n"
        "adoptcopy.COPY_OBJECT_MAX = 1 << 20\n"
        "adoptcopy.COPY_PART_SIZE = 5 << 20\n")
    sync.env_overrides["PYTHONPATH"] = str(hooks)


def incomplete(client, bucket) -> list[tuple[str, str]]:
    try:
        uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    except ClientError as exc:  # rclone: a bucket that never had an upload
        if exc.response["Error"]["Code"] == "NoSuchUpload":
            return []
        raise
    return [(u["Key"], u["UploadId"]) for u in uploads]


def test_sigkill_mid_multipart_copy_leaves_nothing_behind(sync, s3, s3client, tmp_path):
    data = random.Random(8).randbytes(11 * MiB + 5)
    key = sync.object_key("big.bin")
    s3client.put_object(Bucket=sync.bucket, Key=key, Body=data)
    sync.write("big.bin", data)
    assert sync.run().summary["adopted"] == "1"
    low_copy_limit(sync, tmp_path)
    release = threading.Event()

    def hold_part_copies(req):
        if req.operation == "UploadPart" and req.header("x-amz-copy-source"):
            release.wait(60)  # until the run is dead; then the part is never copied
            return Fault(status=500, code="InternalError")
        return None

    with RecordingProxy(s3.port, hook=hold_part_copies) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        proc = sync.start(*sync.run_args("--adopt-metadata", "--workers", "1"))
        try:
            deadline = time.monotonic() + 60
            while not any(r.operation == "UploadPart" for r in proxy.requests):
                assert proc.poll() is None, f"run ended before the kill: {proc.communicate()}"
                assert time.monotonic() < deadline, "no part copy"
                time.sleep(0.01)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        finally:
            release.set()
    assert proc.returncode == -signal.SIGKILL
    sync.endpoint_url = s3.endpoint_url
    left = [u for k, u in incomplete(s3client, sync.bucket) if k == key]
    assert len(left) == 1

    status = json.loads(sync.cli("status", *sync.journal_args(), "--json").out)
    assert [(u["key"], u["upload_id"], u["kind"]) for u in status["in_flight"]] == \
        [("big.bin", left[0], "adopt-copy")]
    listed = json.loads(sync.cli("cleanup", sync.dest, *sync.journal_args(), "--json",
                                 "--older-than", "0").out)
    assert [(r["key"], r["upload_id"], r["ours"]) for r in listed] == [("big.bin", left[0], True)]

    result = sync.run()  # the next run aborts the copy it will never continue
    assert (result.code, result.summary["uploaded"]) == (0, "0"), result.err
    assert incomplete(s3client, sync.bucket) == []
    status = json.loads(sync.cli("status", *sync.journal_args(), "--json").out)
    assert status["in_flight"] == []
    assert sync.journal_rows("SELECT state FROM multipart_uploads") == [("aborted",)]
    assert s3client.get_object(Bucket=sync.bucket, Key=key)["Body"].read() == data

    result = sync.run("--adopt-metadata")  # and the copy can be done again, whole
    assert (result.code, result.summary["uploaded"]) == (0, "0"), result.err
    assert incomplete(s3client, sync.bucket) == []
    head = s3client.head_object(Bucket=sync.bucket, Key=key)
    copied = s3.name != "rclone"  # rclone serve s3 has no UploadPartCopy: refused, aborted
    assert _meta(head).get("sha256") == (hashlib.sha256(data).hexdigest() if copied else None)
    assert s3client.get_object(Bucket=sync.bucket, Key=key)["Body"].read() == data
