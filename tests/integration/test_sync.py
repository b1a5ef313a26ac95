"""The behaviour suite, run against every server in conftest.SERVERS over real HTTP."""

from __future__ import annotations

import hashlib
import os
import random
import time

import pytest
from botocore.exceptions import ClientError

from journalsync.config import MiB
from journalsync.objectmeta import RACY_WINDOW_NS
from journalsync.transfer import ONE_PUT_MAX
from tests.faults.test_multipart_crash import incomplete
from tests.support.proxy import RecordingProxy

MULTIPART = ("--multipart-threshold", "5MiB", "--part-size", "5MiB")


def mixed_tree(sync, seed: int = 7) -> dict[str, bytes]:
    """Small files in nested folders, an empty file, awkward names, and one multipart file."""
    rnd = random.Random(seed)
    files = {f"docs/{i:03d}.txt": rnd.randbytes(rnd.randint(1, 40_000)) for i in range(30)}
    files.update({
        "empty.bin": b"",
        "index.html": b"<html>hi</html>",
        "data/config.json": b'{"a": 1}',
        "photos/2024/caf\u00e9 \u00e0 la plage.jpg": rnd.randbytes(5000),
        "weird/sp ace+plus%percent#hash?q.txt": b"weird",
        "big/disk.img": rnd.randbytes(11 * MiB + 123),  # three 5 MiB parts
    })
    for rel, data in files.items():
        sync.write(rel, data)
    return files


def read_object(client, bucket: str, key: str) -> tuple[bytes, dict]:
    resp = client.get_object(Bucket=bucket, Key=key)
    return resp["Body"].read(), resp


def meta(resp: dict) -> dict[str, str]:
    return {k.lower(): v for k, v in resp.get("Metadata", {}).items()}


def assert_bucket_matches(sync, client, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        body, resp = read_object(client, sync.bucket, sync.object_key(rel))
        assert hashlib.sha256(body).hexdigest() == hashlib.sha256(data).hexdigest(), rel
        assert meta(resp)["sha256"] == hashlib.sha256(data).hexdigest(), rel
        assert "mtime" in meta(resp), rel


def test_mixed_tree_uploads_byte_identical_with_metadata(sync, s3client):
    files = mixed_tree(sync)
    result = sync.run(*MULTIPART)
    assert result.code == 0, result.err
    assert result.summary["uploaded"] == str(len(files))
    assert result.summary["failed"] == "0"
    assert result.summary["bytes"] == str(sum(len(d) for d in files.values()))
    assert len(result.out.strip().splitlines()) == 1, "exactly one line on stdout"
    assert_bucket_matches(sync, s3client, files)
    assert not s3client.list_multipart_uploads(Bucket=sync.bucket).get("Uploads")


def test_content_type_and_cache_control(sync, s3client):
    sync.write("index.html", b"<p>")
    sync.write("app.js", b"x")
    sync.write("blob", b"x")
    sync.write("logs.tar.gz", b"x")
    assert sync.run("--cache-control", "max-age=60").code == 0
    expected = {"index.html": "text/html", "app.js": "text/javascript",
                "blob": "application/octet-stream", "logs.tar.gz": "application/gzip"}
    for rel, ctype in expected.items():
        head = s3client.head_object(Bucket=sync.bucket, Key=sync.object_key(rel))
        assert head["ContentType"].split(";")[0] == ctype, rel
        assert head.get("CacheControl") == "max-age=60", rel


def test_second_run_uploads_nothing_and_sends_no_put(sync, s3, s3client):
    files = mixed_tree(sync)
    assert sync.run(*MULTIPART).code == 0
    with RecordingProxy(s3.port) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        result = sync.run(*MULTIPART)
    assert result.code == 0, result.err
    assert result.summary["uploaded"] == "0"
    assert result.summary["skipped"] == str(len(files))
    sent = proxy.counts()
    assert sent["PUT"] == 0 and sent["POST"] == 0 and sent["DELETE"] == 0, proxy.requests
    # The cached manifest knows every hash (the multipart object's too): LIST only, no HEAD.
    # One check, one listing of the prefix with delimiter "/", one per top-level directory.
    top_dirs = {rel.split("/")[0] for rel in files if "/" in rel}
    assert proxy.operations() == {"ListObjects": 2 + len(top_dirs)}, proxy.requests


def test_crt_and_botocore_paths_agree(sync, s3, s3client):
    """The awscrt path (default) and the botocore path (--no-crt) write the same objects and
    read the same listing: a run on one after a run on the other uploads nothing."""
    files = mixed_tree(sync)
    assert sync.run(*MULTIPART, "--no-crt", "--cache-control", "max-age=5").code == 0
    assert_bucket_matches(sync, s3client, files)
    head = s3client.head_object(Bucket=sync.bucket, Key=sync.object_key("index.html"))
    assert (head["ContentType"].split(";")[0], head["CacheControl"]) == ("text/html", "max-age=5")
    result = sync.run(*MULTIPART)  # awscrt LIST of objects botocore wrote
    assert (result.code, result.summary["uploaded"]) == (0, "0"), result.err
    sync.write("docs/000.txt", b"now through the CRT")
    sync.write("weird/new one+plus%.txt", b"new")
    with RecordingProxy(s3.port) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        result = sync.run(*MULTIPART, "--cache-control", "max-age=5")
    assert (result.code, result.summary["uploaded"]) == (0, "2"), result.err
    assert proxy.counts()["PUT"] == 2
    files.update({"docs/000.txt": b"now through the CRT", "weird/new one+plus%.txt": b"new"})
    assert_bucket_matches(sync, s3client, files)
    head = s3client.head_object(Bucket=sync.bucket, Key=sync.object_key("docs/000.txt"))
    assert (head["ContentType"].split(";")[0], head["CacheControl"]) == ("text/plain", "max-age=5")
    sync.endpoint_url = s3.endpoint_url
    result = sync.run(*MULTIPART, "--no-crt")  # botocore LIST of objects the CRT wrote
    assert (result.code, result.summary["uploaded"], result.summary["skipped"]) == \
        (0, "0", str(len(files))), result.err


def test_same_size_edit_with_restored_mtime_is_uploaded(sync, s3client):
    path = sync.write("notes.txt", b"version one")
    sync.write("other.txt", b"unchanged")
    assert sync.run().code == 0
    before = os.stat(path)
    path.write_bytes(b"version two")  # same size
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # mtime put back
    assert os.stat(path).st_mtime_ns == before.st_mtime_ns
    result = sync.run()
    assert result.code == 0, result.err
    assert result.summary["uploaded"] == "1"
    body, resp = read_object(s3client, sync.bucket, sync.object_key("notes.txt"))
    assert body == b"version two"
    assert meta(resp)["sha256"] == hashlib.sha256(b"version two").hexdigest()


def test_changed_file_is_uploaded_and_unchanged_skipped(sync, s3client):
    sync.write("a.txt", b"a")
    sync.write("b.txt", b"b")
    assert sync.run().code == 0
    sync.write("a.txt", b"a longer content")
    sync.write("c.txt", b"new")
    result = sync.run()
    assert (result.summary["uploaded"], result.summary["skipped"]) == ("2", "1")
    assert read_object(s3client, sync.bucket, sync.object_key("a.txt"))[0] == b"a longer content"


def test_prefix_boundary(sync, s3client):
    for key in ("backup/host10/keep.txt", "backup/host1x", "backup/host1.txt", "other/x"):
        s3client.put_object(Bucket=sync.bucket, Key=key, Body=b"not ours")
    sync.write("keep.txt", b"ours")
    dry = sync.run("--dry-run", "--delete", "--force")  # a sibling's key would be a delete
    assert dry.code == 0, dry.err
    assert dry.out.splitlines()[:-1] == ["upload keep.txt (new file)",
                                         "guard: would pass: nothing to delete"]
    assert (dry.summary["extra"], dry.summary["scanned"]) == ("0", "1")
    result = sync.run("--json")
    assert result.code == 0, result.err
    import json

    summary = json.loads(result.out)
    assert summary["uploaded"] == 1 and summary["extra"] == 0
    keys = {o["Key"] for o in s3client.list_objects_v2(Bucket=sync.bucket)["Contents"]}
    assert keys == {"backup/host10/keep.txt", "backup/host1x", "backup/host1.txt", "other/x",
                    "backup/host1/keep.txt"}
    body, _ = read_object(s3client, sync.bucket, "backup/host10/keep.txt")
    assert body == b"not ours"


def test_split_listing_sees_every_key_a_flat_listing_sees(sync, s3client):
    """The manifest lists the prefix with delimiter "/", then each top-level directory on
    its own: keys at the top, deep ones, "//", directory markers and names that sort
    around "/" must all be seen (each becomes a planned delete here)."""
    odd = ["top.txt", "a/b/c/deep.txt", "a//double", "marker/", "a-dash", "a.dot",
           "a/", "z/\u00e9t\u00e9 + %20.txt", "sp ace/x"]
    for key in odd:
        try:
            s3client.put_object(Bucket=sync.bucket, Key=sync.object_key(key), Body=b"x")
        except ClientError:  # rclone's file-backed store refuses "//"
            pass
    # What the store itself lists flat (rclone's file-backed store folds some of these).
    flat = {o["Key"][len(sync.object_key("")):]
            for page in s3client.get_paginator("list_objects_v2").paginate(
                Bucket=sync.bucket, Prefix=sync.object_key(""))
            for o in page.get("Contents", ())}
    assert len(flat) >= 6
    s3client.put_object(Bucket=sync.bucket, Key="backup/host10/not-ours", Body=b"x")
    sync.write("keep.txt", b"keep")
    result = sync.run("--delete", "--force", "--dry-run")
    assert result.code == 0, result.err
    planned = {line.split(" (")[0][len("delete "):] for line in result.out.splitlines()
               if line.startswith("delete ")}
    assert planned == flat


def test_dry_run_prints_every_action_and_changes_nothing(sync, s3client):
    sync.write("a.txt", b"a")
    sync.write("sub/b.txt", b"b")
    result = sync.run("--dry-run")
    assert result.code == 0, result.err
    lines = result.out.strip().splitlines()
    assert lines[:-1] == ["upload a.txt (new file)", "upload sub/b.txt (new file)"]
    assert lines[-1].startswith("journalsync: ")
    assert "Contents" not in s3client.list_objects_v2(Bucket=sync.bucket)
    # A real run afterwards still uploads both.
    assert sync.run().summary["uploaded"] == "2"


def test_existing_objects_with_our_metadata_are_not_reuploaded(sync, s3, s3client):
    """A new journal (say, a rebuilt machine) trusts sha256 metadata found by HEAD."""
    sync.write("a.txt", b"same")
    sync.write("b.txt", b"different")
    assert sync.run().code == 0
    sync.forget_journal()
    sync.write("b.txt", b"DIFFERENT")  # same size, other content
    with RecordingProxy(s3.port) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        result = sync.run()
    assert (result.summary["uploaded"], result.summary["skipped"]) == ("1", "1")
    # Both had equal sizes: a.txt's single-PUT ETag proves it (adopt.py); b.txt's ETag
    # does not match, so its sha256 metadata is needed (an SSE-KMS ETag never matches).
    assert proxy.counts()["HEAD"] == 1


def test_foreign_object_without_metadata_is_adopted_or_replaced(sync, s3client):
    """Same bytes: its MD5 ETag proves it (adopt.py), nothing is sent. Same size, other
    bytes: replaced, with our metadata."""
    s3client.put_object(Bucket=sync.bucket, Key=sync.object_key("a.txt"), Body=b"same")
    s3client.put_object(Bucket=sync.bucket, Key=sync.object_key("b.txt"), Body=b"SAME")
    sync.write("a.txt", b"same")
    sync.write("b.txt", b"same")
    result = sync.run()
    assert (result.summary["uploaded"], result.summary["adopted"]) == ("1", "1")
    _, resp = read_object(s3client, sync.bucket, sync.object_key("b.txt"))
    assert meta(resp)["sha256"] == hashlib.sha256(b"same").hexdigest()


def test_symlinks_are_not_followed(sync, s3client, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("do not back me up")
    sync.write("real.txt", b"real")
    os.symlink(outside, sync.src / "link-dir")
    os.symlink(outside / "secret.txt", sync.src / "link-file")
    result = sync.run()
    assert result.code == 0
    assert result.summary["uploaded"] == "1"
    assert "2 symlink(s) not followed" in result.err
    keys = [o["Key"] for o in s3client.list_objects_v2(Bucket=sync.bucket)["Contents"]]
    assert keys == [sync.object_key("real.txt")]


def test_hostile_names_fail_alone(sync, s3client):
    sync.write("good.txt", b"good")
    bad = os.fsencode(sync.src) + b"/bad-\xff-name.txt"
    with open(bad, "wb") as fh:
        fh.write(b"latin-1 name")
    deep = "d/" + "x" * 200 + "/" + "y" * 200 + "/" + "z" * 200 + "/" + "w" * 250 + "/" + "v" * 200
    sync.write(deep, b"too long a key")
    result = sync.run()
    assert result.code == 1, result.err
    assert (result.summary["uploaded"], result.summary["failed"]) == ("1", "2")
    status = sync.cli("status", *sync.journal_args())
    assert "not valid UTF-8" in status.out
    assert "over S3's 1024-byte limit" in status.out
    keys = [o["Key"] for o in s3client.list_objects_v2(Bucket=sync.bucket)["Contents"]]
    assert keys == [sync.object_key("good.txt")]


def test_control_characters_in_names(sync, s3, s3client):
    if s3.name == "moto":
        pytest.skip("moto's server answers 404 to a PUT whose key holds a newline (real S3 takes it)")
    sync.write("new\nline.txt", b"newline in the name")
    sync.write("tab\tname.txt", b"tab")
    result = sync.run("--dry-run")
    assert "upload new\\nline.txt (new file)" in result.out.splitlines()
    assert sync.run().code == 0
    assert sync.run().summary["skipped"] == "2"
    assert read_object(s3client, sync.bucket, sync.object_key("new\nline.txt"))[0] == b"newline in the name"


def test_a_large_file_with_a_control_character_goes_in_one_put(sync, s3client):
    """rclone serve s3 and moto create the multipart upload of `ctl\\x01.bin` but answer 500,
    as their XML cannot carry the key, and from then on answer 500 to every listing of the
    prefix's uploads: every later run stopped at reconcile (exit 4), for good. Such a file
    goes in one PUT; one too large to read whole fails alone, saying why, sending nothing."""
    data = os.urandom(9 * MiB)
    sync.write("ctl\x01.bin", data)
    huge = sync.src / "ctl\x02huge.bin"
    with open(huge, "wb") as fh:
        fh.truncate(ONE_PUT_MAX + 1)  # sparse: refused before a byte is read
    first = sync.run("--multipart-threshold", "5MiB", "--retry-timeout", "10s")
    assert first.code == 1, first.err
    assert (first.summary["uploaded"], first.summary["failed"]) == ("1", "1"), first.out
    assert "control character" in first.err and "rename it" in first.err, first.err
    assert read_object(s3client, sync.bucket, sync.object_key("ctl\x01.bin"))[0] == data
    assert incomplete(s3client, sync.bucket) == []
    sync.write("b.txt", b"a new file the next night")
    second = sync.run("--multipart-threshold", "5MiB", "--retry-timeout", "10s")
    assert second.code == 1, second.err  # the huge one fails again, alone
    assert (second.summary["uploaded"], second.summary["skipped"]) == ("1", "1"), second.out


def test_whole_bucket_destination(sync, s3client):
    sync.prefix = ""
    sync.write("top.txt", b"top")
    assert sync.run().code == 0
    assert read_object(s3client, sync.bucket, "top.txt")[0] == b"top"


def test_status_shows_last_run_counts(sync, s3):
    sync.write("a.txt", b"a")
    sync.env_overrides = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9"}  # the flag wins
    assert sync.run("--endpoint-url", s3.endpoint_url).code == 0
    status = sync.cli("status", *sync.journal_args(), "--json")
    assert status.code == 0, status.err
    import json

    data = json.loads(status.out)
    assert data["runs"][0]["uploaded"] == 1 and data["runs"][0]["state"] == "done"
    assert data["in_flight"] == [] and data["failed"] == []


@pytest.mark.sqlite_only("the state directory's default journal file")
def test_default_journal_lives_in_xdg_state_dir(sync):
    sync.write("a.txt", b"a")
    result = sync.cli("run", str(sync.src), sync.dest)
    assert result.code == 0, result.err
    journals = list((sync.tmp / "state" / "journalsync").glob("*.sqlite"))
    assert len(journals) == 1
    status = sync.cli("status", str(sync.src), sync.dest, "--json")
    assert status.code == 0, status.err
    import json

    data = json.loads(status.out)  # status found that journal by itself, and its one run
    assert data["journal"] == str(journals[0])
    assert [(r["state"], r["uploaded"]) for r in data["runs"]] == [("done", 1)]


@pytest.mark.parametrize("dest", ["bucket-only-no-scheme", "s3://", "s3://UP/../"])
def test_malformed_destination_exits_2(offline_sync, dest):
    local = offline_sync
    result = local.cli("run", str(local.src), dest, "--journal", str(local.journal))
    assert result.code == 2
    assert len(result.err.strip().splitlines()) == 1 and "Traceback" not in result.err


def test_missing_source_exits_2(offline_sync):
    missing = offline_sync.tmp / "nope"
    result = offline_sync.cli("run", str(missing), offline_sync.dest, "--journal",
                              str(offline_sync.journal))
    assert result.code == 2
    assert result.err.strip() == f"journalsync: error: source {missing} does not exist"


def test_missing_bucket_exits_4(sync):
    sync.bucket = "jst-no-such-bucket-here"
    sync.write("a.txt", b"a")
    result = sync.run()
    assert result.code == 4
    assert "bucket does not exist" in result.err
    assert len(result.err.strip().splitlines()) == 1 and "Traceback" not in result.err


def test_bad_credentials_exit_4(sync, s3):
    if s3.name == "moto":
        pytest.skip("this moto instance accepts any key; see test_bad_credentials_moto_with_auth")
    sync.env_overrides = {"AWS_SECRET_ACCESS_KEY": "wrong-secret-key-value"}
    sync.write("a.txt", b"a")
    result = sync.run()
    assert result.code == 4, result.err
    assert "SignatureDoesNotMatch" in result.err or "InvalidAccessKeyId" in result.err
    assert len(result.err.strip().splitlines()) == 1


def test_no_credentials_exit_4(offline_sync):
    offline_sync.env_overrides = {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}
    offline_sync.write("a.txt", b"a")
    result = offline_sync.run()
    assert result.code == 4, result.err
    assert "no usable credentials" in result.err


def _scan_line(result) -> str:
    return next(line for line in result.err.splitlines() if "scan: " in line)


def test_new_files_are_read_once_by_their_upload_and_the_next_run_reads_none(sync, s3client):
    """Lazy hashing: new files with no object of their size are not hashed by the scan; the
    upload hashes each in the read that sends it and journals that hash with the identity
    it saw, so the next run over the unchanged tree reads no file at all."""
    files = {f"small/{i}.bin": os.urandom(1000 + i) for i in range(5)}
    files["big.bin"] = os.urandom(11 * MiB + 5)  # multipart: three 5 MiB parts
    for rel, data in files.items():
        sync.write(rel, data)
    time.sleep(RACY_WINDOW_NS / 1e9 + 0.1)  # so the uploads' hashes are not racy
    first = sync.run("-v", *MULTIPART)
    assert first.code == 0, first.err
    assert first.summary["uploaded"] == str(len(files))
    assert " 0 hashed (0 bytes)" in _scan_line(first), first.err
    rows = dict(sync.journal_rows("SELECT key, sha256 FROM files WHERE ctime_ns IS NOT NULL"))
    assert rows == {rel: hashlib.sha256(data).hexdigest() for rel, data in files.items()}
    assert_bucket_matches(sync, s3client, files)
    second = sync.run("-v", *MULTIPART)
    assert second.code == 0, second.err
    assert (second.summary["uploaded"], second.summary["skipped"]) == ("0", str(len(files)))
    assert " 0 hashed (0 bytes)" in _scan_line(second), second.err
