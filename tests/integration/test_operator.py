"""Operator features against both servers: filters, verify, and the run lock's message."""

from __future__ import annotations

import json

import pytest

from tests.integration.test_delete import keys
from tests.support.proxy import RecordingProxy


def test_excluded_files_are_neither_uploaded_nor_deleted(sync, s3client):
    sync.write("keep.txt", b"keep")
    sync.write("x.tmp", b"scratch")
    sync.write("node_modules/a/b.js", b"js")
    sync.write("logs/2026/a.log", b"log")
    for key in ("cache.tmp", "node_modules/old.js"):  # excluded objects already there
        s3client.put_object(Bucket=sync.bucket, Key=sync.object_key(key), Body=b"old")
    result = sync.run("--exclude", "*.tmp", "--exclude", "node_modules/**", "--delete", "--force")
    assert result.code == 0, result.err
    assert (result.summary["uploaded"], result.summary["deleted"], result.summary["extra"]) == ("2", "0", "0")
    assert keys(s3client, sync.bucket) == {sync.object_key(k) for k in (
        "keep.txt", "logs/2026/a.log", "cache.tmp", "node_modules/old.js")}

    only_logs = sync.run("--include", "logs/**", "--delete", "--force")
    assert only_logs.code == 0, only_logs.err
    assert only_logs.summary["scanned"] == "1" and only_logs.summary["deleted"] == "0"
    assert sync.object_key("keep.txt") in keys(s3client, sync.bucket)  # not included: kept


def test_verify_catches_an_object_overwritten_behind_our_back(sync, s3client):
    for i in range(10):
        sync.write(f"f{i}.txt", f"file {i}".encode())
    assert sync.run().code == 0
    base = ("verify", sync.dest, *sync.journal_args())
    clean = sync.cli(*base)
    assert clean.code == 0, clean.err
    assert clean.out.strip() == "journalsync: verified=10 of 10 mismatches=0"

    s3client.put_object(Bucket=sync.bucket, Key=sync.object_key("f3.txt"), Body=b"tampered",
                        Metadata={"sha256": "0" * 64})
    s3client.put_object(Bucket=sync.bucket, Key=sync.object_key("f4.txt"), Body=b"file 4")  # no metadata
    s3client.delete_object(Bucket=sync.bucket, Key=sync.object_key("f5.txt"))
    tampered = sync.cli(*base, "--json")
    assert tampered.code == 1
    found = {m["key"]: m["problem"] for m in json.loads(tampered.out)["mismatches"]}
    assert set(found) == {"f3.txt", "f4.txt", "f5.txt"}
    assert found["f5.txt"] == "missing" and found["f4.txt"].startswith("sha256 absent")


def test_verify_sample_checks_about_that_share(sync, s3):
    """--sample 10 over 200 objects HEADs about 20 of them. The band holds 3..60 (a
    binomial draw falls outside it about twice in ten million runs) and leaves out 200."""
    for i in range(200):
        sync.write(f"d{i % 4}/f{i:03d}.txt", f"file {i}".encode())
    assert sync.run().code == 0
    with RecordingProxy(s3.port) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        sampled = sync.cli("verify", sync.dest, *sync.journal_args(), "--sample", "10", "--json")
    assert sampled.code == 0, sampled.err
    report = json.loads(sampled.out)
    assert report["synced"] == 200 and report["mismatches"] == []
    assert 3 <= report["checked"] <= 60, report["checked"]
    assert proxy.operations()["HeadObject"] == report["checked"]


@pytest.mark.one_server  # the client's own output
def test_debug_log_holds_no_secret_key_token_or_signature(sync, s3, tmp_path):
    token = "FwoGZXIvYXdzEJr-journalsync-test-session-token-0123456789"
    sync.env_overrides = {"AWS_SESSION_TOKEN": token}
    sync.write("a.txt", b"a")
    sync.write("big.bin", b"b" * (6 * 1024 * 1024))
    log = tmp_path / "debug.log"
    result = sync.run("--debug", "--log-file", str(log), "--multipart-threshold", "5MiB")
    text = log.read_text() + result.err
    assert "botocore" in text and "<redacted>" in text  # the debug log really is verbose
    assert s3.secret_key not in text
    assert token not in text
    import re

    assert not re.search(r"Signature=[0-9a-f]{64}", text)
    # The JSON log's shape, with no session token (SeaweedFS refuses a token it did not
    # issue, InvalidAccessKeyId, and a run refused at once logs nothing to its file).
    sync.env_overrides = {}
    json_log = tmp_path / "run.jsonl"
    plain = sync.run("--log-file", str(json_log), "--log-format", "json", "-v")
    assert plain.code == 0, plain.err
    first = json.loads(json_log.read_text().splitlines()[0])
    assert {"time", "level", "logger", "message"} <= set(first)


@pytest.mark.one_server  # the client's own output
def test_quiet_prints_only_the_summary(sync, tmp_path):
    import os

    sync.write("a.txt", b"a")
    os.symlink("/etc", sync.src / "link")
    loud = sync.run()
    assert "symlink(s) not followed" in loud.err
    quiet = sync.run("--quiet")
    assert quiet.code == 0 and quiet.err == "" and len(quiet.out.splitlines()) == 1


def test_job_file_reproduces_a_flag_driven_run(sync, s3, s3client, tmp_path):
    for rel in ("index.html", "assets/app.js", "notes.tmp", "docs/a.txt"):
        sync.write(rel, rel.encode())
    flags = sync.run("--exclude", "*.tmp", "--cache-control", "max-age=60", "--workers", "3")
    assert flags.code == 0, flags.err
    job = tmp_path / "job.toml"
    job.write_text(f'''
source = "{sync.src}"
destination = "s3://{sync.bucket}/from-job"
endpoint = "{s3.endpoint_url}"
workers = 3
exclude = ["*.tmp"]
cache_control = "max-age=60"
{sync.other_journal_toml("job")}
''')
    from_job = sync.cli("run", "--config", str(job))
    assert from_job.code == 0, from_job.err
    assert from_job.summary["uploaded"] == flags.summary["uploaded"] == "3"

    def objects(prefix):
        found = {}
        for key in keys(s3client, sync.bucket, prefix + "/"):
            head = s3client.head_object(Bucket=sync.bucket, Key=key)
            found[key[len(prefix) + 1:]] = (head["ContentLength"], head.get("CacheControl"),
                                            head["Metadata"].get("sha256") or head["Metadata"].get("Sha256"))
        return found

    assert objects("from-job") == objects(sync.prefix)
    # A flag overrides the file: the same job, another prefix. The job file's journal is
    # bound to its own destination, so the other prefix is refused until it gets its own.
    other = f"s3://{sync.bucket}/override"
    refused = sync.cli("run", "--config", str(job), str(sync.src), other)
    assert refused.code == 2 and "give this job its own --journal" in refused.err
    assert not keys(s3client, sync.bucket, "override/")
    override = sync.cli("run", "--config", str(job), str(sync.src), other,
                        *sync.other_journal_args("override"))
    assert override.code == 0 and keys(s3client, sync.bucket, "override/")


def test_cache_control_rules_land_on_the_right_objects(sync, s3, s3client, tmp_path):
    for rel in ("index.html", "blog/post.html", "assets/app.js", "assets/img/logo.png", "robots.txt"):
        sync.write(rel, rel.encode())
    job = tmp_path / "site.toml"
    job.write_text(f'''
source = "{sync.src}"
destination = "{sync.dest}"
{sync.journal_toml}

[cache_control]
"*.html" = "no-cache"
"assets/**" = "max-age=31536000, immutable"
''')
    result = sync.cli("run", "--config", str(job))
    assert result.code == 0, result.err

    def cache(rel):
        return s3client.head_object(Bucket=sync.bucket, Key=sync.object_key(rel)).get("CacheControl")

    assert cache("index.html") == cache("blog/post.html") == "no-cache"
    assert cache("assets/app.js") == cache("assets/img/logo.png") == "max-age=31536000, immutable"
    assert cache("robots.txt") is None


def test_malformed_job_file_names_the_line(offline_sync, tmp_path):
    job = tmp_path / "bad.toml"
    job.write_text('source = "/x"\ndestination = "s3://b/x"\nworkers = = 3\n')
    result = offline_sync.cli("run", "--config", str(job))
    assert result.code == 2
    assert "line 3" in result.err and len(result.err.strip().splitlines()) == 1
    job.write_text('source = "/x"\ndestination = "s3://b/x"\n[delete]\nenabeld = true\n')
    typo = offline_sync.cli("run", "--config", str(job))
    assert typo.code == 2 and "unknown setting 'enabeld' in [delete]" in typo.err


def test_help_works_for_every_command(offline_sync):
    for command in ("run", "status", "cleanup", "verify"):
        result = offline_sync.cli(command, "--help")
        assert result.code == 0 and "Usage: journalsync" in result.out, result.err


@pytest.mark.one_server  # the client's own output
def test_progress_draws_on_a_terminal_only(sync):
    import os
    import subprocess
    import sys

    from tests.conftest import base_env

    for i in range(20):
        sync.write(f"f{i}.txt", b"x" * 1000)
    controller, terminal = os.openpty()
    env = {**base_env(sync.tmp), **sync.s3.env(), "COLUMNS": "120", "TERM": "xterm"}
    proc = subprocess.run([sys.executable, "-m", "journalsync", *sync.run_args()], env=env,
                          stdout=subprocess.PIPE, stderr=terminal, text=True, timeout=120)
    os.close(terminal)
    drawn = b""
    try:
        while chunk := os.read(controller, 65536):
            drawn += chunk
    except OSError:
        pass
    os.close(controller)
    assert proc.returncode == 0
    assert proc.stdout.startswith("journalsync: scanned=20 uploaded=20") and len(proc.stdout.splitlines()) == 1
    assert b"files" in drawn and b"\x1b[" in drawn  # a live display on the terminal
    piped = sync.run()  # stderr is a pipe: nothing drawn
    assert piped.err == "" and len(piped.out.splitlines()) == 1


@pytest.mark.one_server  # the client's own output
def test_status_failed_lists_only_failures(sync, s3):
    from tests.support.proxy import Fault, RecordingProxy

    sync.write("ok.txt", b"ok")
    sync.write("bad.txt", b"bad")
    with RecordingProxy(s3.port, hook=lambda r: Fault(400, "InvalidArgument")
                        if r.operation == "PutObject" and r.path.endswith("bad.txt") else None) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        assert sync.run().code == 1
    failed = json.loads(sync.cli("status", *sync.journal_args(), "--failed", "--json").out)
    assert set(failed) == {"journal", "failed", "file_errors"}
    assert [(f["key"], f["attempts"]) for f in failed["failed"]] == [("bad.txt", 1)]
    assert failed["failed"][0]["error"].startswith("InvalidArgument")
    text = sync.cli("status", *sync.journal_args(), "--failed").out
    assert "bad.txt" in text and "recent runs" not in text


@pytest.mark.one_server  # the client's own output
def test_verbose_prints_one_line_per_action_with_its_reason(sync, s3client):
    sync.write("a.txt", b"a")
    sync.write("b.txt", b"b")
    assert sync.run().code == 0
    sync.write("a.txt", b"A longer")
    (sync.src / "b.txt").unlink()
    result = sync.run("-v", "--delete", "--force")
    assert result.code == 0, result.err
    assert "uploaded a.txt (size differs: local 8, remote 1;" in result.err
    assert "deleted b.txt (extra: no local file, --delete given)" in result.err
    # What the lines say happened did happen.
    assert keys(s3client, sync.bucket) == {sync.object_key("a.txt")}
    body = s3client.get_object(Bucket=sync.bucket, Key=sync.object_key("a.txt"))["Body"].read()
    assert body == b"A longer"
