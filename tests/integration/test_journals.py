"""Finding a journal without retyping the run's every detail, and the operator's small
things: `journalsync journals`, `--version`, `--config` on every command, one type for
`resumed`, one measure of elapsed, whole UploadIds, attempts that count retries."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from tests.conftest import Result
from tests.support.proxy import Fault, RecordingProxy

# The subject is the client (its journal bookkeeping, its summary line and what it prints):
# one server shows it (tests/conftest.py ONE_SERVER); the stores' differences are tested
# where they matter (test_sync, test_trust, test_delete, test_adopt...). With these on three
# servers, a fresh clone's `make test` took 14:33 in pytest (15:20 with its install) on 2
# cores, at the edge of its 15 minutes.
pytestmark = pytest.mark.one_server


def cli_without_endpoint(sync, *args: str) -> Result:
    """The CLI with no AWS_ENDPOINT_URL in the environment: the endpoint is only what the
    command line or a job file gives, as for an operator who typed it into `run`."""
    env = {k: v for k, v in sync.env().items() if k != "AWS_ENDPOINT_URL"}
    proc = subprocess.run([sys.executable, "-m", "journalsync", *args], env=env,
                          capture_output=True, text=True, timeout=180)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def state_journals(sync) -> list:
    return sorted((sync.tmp / "state" / "journalsync").glob("*.sqlite"))


@pytest.mark.sqlite_only("the state directory's default journal file")
def test_status_verify_and_cleanup_find_a_journal_made_with_an_endpoint(sync, s3):
    """The run was given --endpoint-url; status, verify and cleanup are not, yet find its
    journal (and verify and cleanup reach the store at the journal's endpoint)."""
    sync.write("a.txt", b"a")
    sync.write("b.txt", b"b")
    first = cli_without_endpoint(sync, "run", str(sync.src), sync.dest,
                                 "--endpoint-url", s3.endpoint_url)
    assert first.code == 0, first.err
    [journal] = state_journals(sync)

    status = cli_without_endpoint(sync, "status", str(sync.src), sync.dest)
    assert status.code == 0, status.err
    assert f"journal: {journal}" in status.out
    verify = cli_without_endpoint(sync, "verify", sync.dest)
    assert verify.code == 0, verify.err
    assert verify.out.strip() == "journalsync: verified=2 of 2 mismatches=0"
    with_source = cli_without_endpoint(sync, "verify", str(sync.src), sync.dest, "--json")
    assert with_source.code == 0 and json.loads(with_source.out)["checked"] == 2, with_source.err
    cleanup = cli_without_endpoint(sync, "cleanup", sync.dest, "--older-than", "0")
    assert cleanup.code == 0, cleanup.err
    assert cleanup.out.strip() == f"no incomplete multipart uploads under {sync.dest}"


@pytest.mark.sqlite_only("the state directory's default journal file")
def test_a_job_file_serves_status_verify_and_cleanup(sync, s3):
    job = sync.tmp / "job.toml"
    job.write_text(f'source = "{sync.src}"\ndestination = "{sync.dest}"\n'
                   f'endpoint = "{s3.endpoint_url}"\n')
    sync.write("a.txt", b"a")
    assert cli_without_endpoint(sync, "run", "--config", str(job)).code == 0
    [journal] = state_journals(sync)
    status = cli_without_endpoint(sync, "status", "--config", str(job), "--json")
    assert status.code == 0, status.err
    assert json.loads(status.out)["journal"] == str(journal)
    verify = cli_without_endpoint(sync, "verify", "--config", str(job))
    assert verify.code == 0, verify.err
    assert verify.out.strip() == "journalsync: verified=1 of 1 mismatches=0"
    cleanup = cli_without_endpoint(sync, "cleanup", "--config", str(job), "--json")
    assert cleanup.code == 0 and json.loads(cleanup.out) == [], cleanup.err


def test_status_json_types_and_one_elapsed(sync):
    """skip_reasons is an object, resumed an integer count in both places, and the
    summary's elapsed is status's (one number, recorded in the run's row)."""
    sync.write("a.txt", b"a")
    assert sync.run().code == 0
    second = sync.run("--json")
    assert second.code == 0, second.err
    summary = json.loads(second.out)
    third = sync.run()
    status = json.loads(sync.cli("status", *sync.journal_args(), "--json").out)
    runs = status["runs"]
    assert runs[1]["skip_reasons"] == {"unchanged: size and sha256 match": 1}
    assert summary["skip_reasons"] == runs[1]["skip_reasons"]
    assert type(summary["resumed"]) is int and type(runs[1]["resumed"]) is int
    assert summary["resumed"] == runs[1]["resumed"] == 0
    assert summary["elapsed"] == runs[1]["elapsed"]
    text = sync.cli("status", *sync.journal_args())
    secs = third.summary["elapsed"].removesuffix("s")
    row = next(line for line in text.out.splitlines() if re.search(r"[│|]\s+3\s+[│|]", line))
    assert re.search(rf"[│|]\s+{re.escape(secs)}\s+[│|]", row), (secs, row)


def test_cleanup_prints_every_upload_id_whole(sync, s3client):
    ids = [s3client.create_multipart_upload(Bucket=sync.bucket, Key=sync.object_key(f"stray{i}.bin"))["UploadId"]
           for i in range(2)]
    result = sync.cli("cleanup", sync.dest, "--older-than", "0")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    for upload_id in ids:
        assert any(upload_id in line.split() for line in lines), (upload_id, result.out)


def test_attempts_count_the_retries_of_a_multipart_files_data(sync, s3):
    """A multipart upload with no retry is 1 attempt (Create and Complete are not
    attempts); one UploadPart refused once and retried makes 2."""
    sync.write("big.bin", b"b" * (6 * 1024 * 1024))
    args = ("-v", "--multipart-threshold", "5MiB", "--part-size", "5MiB")
    clean = sync.run(*args)
    assert clean.code == 0, clean.err
    assert "uploaded big.bin (new file; 6291456 bytes, 1 attempt(s))" in clean.err
    sync.write("big.bin", b"c" * (6 * 1024 * 1024))
    refused: list[int] = []

    def once(req):
        if req.operation == "UploadPart" and not refused:
            refused.append(1)
            return Fault(503, "SlowDown")
        return None

    with RecordingProxy(s3.port, hook=once) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        retried = sync.run(*args)
    assert retried.code == 0, retried.err
    assert refused == [1]
    assert re.search(r"uploaded big\.bin \(.*; 6291456 bytes, 2 attempt\(s\)\)", retried.err), retried.err


# -- no server needed --------------------------------------------------------------------


def _journal(path, source: str, dest: str, endpoint: str | None, state: str = "done") -> None:
    """A real journal file with one finished run, as a run would leave it."""
    from journalsync.journal import Journal
    from journalsync.models import RunCounts

    with Journal(path) as journal:
        run_id = journal.start_run(source, dest, endpoint, False)
        journal.finish_run(run_id, state, RunCounts())


def _state(offline_sync):
    state = offline_sync.tmp / "state" / "journalsync"
    state.mkdir(parents=True, exist_ok=True)
    return state


def test_several_matching_journals_are_listed_not_guessed(offline_sync):
    sync = offline_sync
    state = _state(sync)
    _journal(state / "one.sqlite", str(sync.src), sync.dest, "http://127.0.0.1:9000")
    _journal(state / "two.sqlite", str(sync.src), sync.dest, "http://127.0.0.1:9100")
    _journal(state / "other.sqlite", "/elsewhere", sync.dest, "http://127.0.0.1:9000")
    both = cli_without_endpoint(sync, "status", str(sync.src), sync.dest)
    assert both.code == 2
    assert "2 journals match" in both.err and "--journal" in both.err
    for name, port in (("one", 9000), ("two", 9100)):
        assert f"{state / name}.sqlite  (endpoint http://127.0.0.1:{port}; last run 1, " in both.err
    assert "other.sqlite" not in both.err

    chosen = cli_without_endpoint(sync, "status", str(sync.src), sync.dest, "--json",
                                  "--endpoint-url", "http://127.0.0.1:9100")
    assert chosen.code == 0, chosen.err
    assert json.loads(chosen.out)["journal"] == str(state / "two.sqlite")
    by_dest = cli_without_endpoint(sync, "verify", sync.dest, "--endpoint-url", "http://127.0.0.1:9000")
    assert by_dest.code == 2 and "2 journals match" in by_dest.err and "(or give SOURCE)" in by_dest.err


def test_no_matching_journal_points_the_right_way(offline_sync):
    sync = offline_sync
    state = _state(sync)
    nothing = cli_without_endpoint(sync, "status", str(sync.src), sync.dest)
    assert nothing.code == 2
    assert f"no journal in {state} for {sync.src} -> {sync.dest}" in nothing.err
    assert "--journal" in nothing.err and "journalsync journals" in nothing.err

    _journal(state / "one.sqlite", str(sync.src), sync.dest, "http://127.0.0.1:9000")
    wrong = cli_without_endpoint(sync, "status", str(sync.src), sync.dest,
                                 "--endpoint-url", "http://127.0.0.1:9999")
    assert wrong.code == 2
    assert "1 at another endpoint" in wrong.err and "endpoint http://127.0.0.1:9000" in wrong.err


def test_journals_lists_each_journal_and_a_damaged_one_without_changing_any(offline_sync):
    from sqlalchemy import create_engine, text

    from journalsync.journal import migrate

    sync = offline_sync
    state = _state(sync)
    _journal(state / "aws.sqlite", str(sync.src), sync.dest, None)
    _journal(state / "local.sqlite", "/srv/www", "s3://site", "http://127.0.0.1:9000", "partial")
    (state / "broken.sqlite").write_bytes(b"this is not a journal\n" * 200)
    old = state / "old.sqlite"
    engine = create_engine(f"sqlite:///{old}")
    migrate.upgrade_to_head(engine, "0005")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO runs (started_at, finished_at, state, source, dest, "
                          "dry_run, scanned, uploaded, skipped, deleted, failed, extra, "
                          "symlinks, bytes) VALUES (1.0, 2.0, 'done', '/old', 's3://old', 0, "
                          "0, 0, 0, 0, 0, 0, 0, 0)"))
    engine.dispose()
    before = {p.name: p.read_bytes() for p in state.iterdir()}

    listed = sync.cli("journals")
    assert listed.code == 0, listed.err
    out = listed.out
    assert f"{state / 'aws.sqlite'}\n    {sync.src} -> {sync.dest} at AWS\n    last run 1, " in out
    assert f"{state / 'local.sqlite'}\n    /srv/www -> s3://site at http://127.0.0.1:9000\n" in out
    assert ", partial (1 run(s) kept)" in out
    assert f"{state / 'broken.sqlite'}\n    damaged (file is not a database)" in out
    assert "schema 0005, older: the next run upgrades it" in out

    as_json = sync.cli("journals", "--json")
    assert as_json.code == 0, as_json.err
    found = {j["path"]: j for j in json.loads(as_json.out)["journals"]}
    assert found[str(state / "local.sqlite")]["endpoint"] == "http://127.0.0.1:9000"
    assert found[str(state / "local.sqlite")]["last_run"]["state"] == "partial"
    assert found[str(state / "broken.sqlite")]["problem"].startswith("damaged")
    assert found[str(old)]["schema"] == "0005" and found[str(old)]["source"] == "/old"

    fleet = sync.cli("status", "--all", "--json")  # the same journals, each as status shows it
    assert fleet.code == 0, fleet.err
    jobs = {j["journal"]: j for j in json.loads(fleet.out)["jobs"]}
    assert sorted(jobs) == sorted(str(p) for p in state.glob("*.sqlite"))
    assert jobs[str(old)]["note"].startswith("schema 0005, older")
    assert jobs[str(old)]["last_run"]["state"] == "done" and jobs[str(old)]["workers"] == []
    assert jobs[str(state / "broken.sqlite")]["problem"].startswith("damaged")
    assert jobs[str(state / "local.sqlite")]["last_run"]["state"] == "partial"
    assert {p.name: p.read_bytes() for p in state.iterdir()} == before  # nothing migrated


def test_journals_in_an_empty_state_dir(offline_sync):
    result = offline_sync.cli("journals")
    assert result.code == 0, result.err
    assert result.out.startswith("no journals in ")
    assert json.loads(offline_sync.cli("journals", "--json").out)["journals"] == []


def test_version_and_glob_metavars(offline_sync):
    from importlib.metadata import version

    result = offline_sync.cli("--version")
    assert result.code == 0, result.err
    assert result.out.strip() == f"journalsync {version('journalsync')}"
    helped = offline_sync.cli("run", "--help")
    assert "--include GLOB" in helped.out and "--exclude GLOB" in helped.out
    assert "list[str]" not in helped.out


def test_journals_reads_a_journal_a_run_is_writing_without_waiting(offline_sync):
    """A run in progress (its row committed, a write transaction open) is listed as
    running: the listing neither waits on the writer nor upgrades anything."""
    import sqlite3

    from journalsync.journal import Journal

    sync = offline_sync
    path = _state(sync) / "live.sqlite"
    with Journal(path) as journal:
        journal.start_run(str(sync.src), sync.dest, None, False)
        writer = sqlite3.connect(path)
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("UPDATE runs SET state = 'uncommitted'")
        listed = sync.cli("journals", "--json", timeout=20)
        writer.rollback()
        writer.close()
    assert listed.code == 0, listed.err
    [info] = json.loads(listed.out)["journals"]
    assert info["last_run"]["state"] == "running" and info["problem"] is None
