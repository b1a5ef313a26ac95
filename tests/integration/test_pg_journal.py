"""The journal in PostgreSQL, end to end: the CLI as a real process, a real S3 server, a
real PostgreSQL database (tests/support/pg.py; skipped without a server, failed under
CI=true). A nightly job's life (first run, a no-op that sends nothing, an edit, a --delete),
a SIGKILL mid multipart and `run --resume`, two jobs in one database, `status`, the run
lock, and the one-line errors."""

from __future__ import annotations

import hashlib
import json
import random
import signal
import time

import pytest

from journalsync.config import MiB
from journalsync.journal.location import PgLocation
from journalsync.journal.pg import PgRunLock
from tests.support.proxy import RecordingProxy

PART = 5 * MiB
ARGS = ("--multipart-threshold", "5MiB", "--part-size", "5MiB")


def pg_rows(url: str, job: str, sql: str, *params) -> list[tuple]:
    """What a job's schema holds, read on a connection of the test's own."""
    import psycopg

    with psycopg.connect(url, options=f"-c search_path={job}", autocommit=True) as db:
        return [tuple(r) for r in db.execute(sql, params).fetchall()]


def use_pg(sync, pg_url: str, job: str | None) -> None:
    """Point a Sync's runs at a job of the PostgreSQL database (None: the default name)."""
    sync.journal = pg_url
    sync.job = job


def run(sync, *extra: str):
    return sync.run(*extra)


# The tests here choose their PostgreSQL job themselves: one journal kind, every server asked.
ON_PG = pytest.mark.parametrize("journal_kind", ["postgresql"], indirect=True)


# Not rclone: the journal's home does not depend on the server, and rclone's run of this
# test took 22 s against seaweed's 6 (the added suite stays under a minute on 2 cores).
@ON_PG
@pytest.mark.parametrize("s3", ["moto", "seaweed"], indirect=True)
def test_nightly_life_with_the_journal_in_postgresql(sync, s3, s3client, pg_url):
    job = f"nightly_{s3.name}"  # one database per test session, a job per test
    use_pg(sync, pg_url, job)
    for i in range(12):
        sync.write(f"d{i % 3}/f{i:02}.txt", b"content %d" % i)
    with RecordingProxy(s3.port) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        first = run(sync)
        assert (first.code, first.summary["uploaded"]) == (0, "12"), first.err
        assert proxy.operations()["PutObject"] == 12

        proxy.clear()
        noop = run(sync)
        assert (noop.code, noop.summary["uploaded"]) == (0, "0"), noop.err
        assert proxy.counts()["PUT"] == 0, proxy.operations()

        sync.write("d0/f00.txt", b"edited, and longer")
        (sync.src / "d1/f01.txt").unlink()
        proxy.clear()
        edit = run(sync, "--delete", "--max-delete-percent", "50")
        assert edit.code == 0, edit.err
        assert (edit.summary["uploaded"], edit.summary["deleted"]) == ("1", "1"), edit.out
        assert proxy.operations()["PutObject"] == 1
    keys = sorted(o["Key"] for o in s3client.list_objects_v2(Bucket=sync.bucket)["Contents"])
    assert keys == sorted(sync.object_key(f"d{i % 3}/f{i:02}.txt") for i in range(12) if i != 1)
    body = s3client.get_object(Bucket=sync.bucket, Key=sync.object_key("d0/f00.txt"))["Body"]
    assert body.read() == b"edited, and longer"
    # The journal is in the job's schema, not in a file.
    assert pg_rows(pg_url, job, "SELECT count(*) FROM runs") == [(3,)]
    assert not sync.journal.startswith("/") and not list(sync.tmp.glob("**/*.sqlite"))

    status = sync.cli("status", str(sync.src), sync.dest, "--journal", pg_url, "--json")
    assert status.code == 0, status.err
    data = json.loads(status.out)
    assert [r["state"] for r in data["runs"]] == ["done"] * 3
    assert data["runs"][0]["uploaded"] == 1 and data["runs"][0]["deleted"] == 1
    assert job in data["journal"]


@ON_PG
@pytest.mark.parametrize("s3", ["moto"], indirect=True)
def test_sigkill_mid_multipart_then_resume(sync, s3, s3client, pg_url):
    use_pg(sync, pg_url, "crash")
    big = random.Random(5).randbytes(6 * PART + 123)  # 7 parts
    sync.write("big.img", big)

    def journaled() -> int:
        try:
            return pg_rows(pg_url, "crash", "SELECT count(*) FROM multipart_parts")[0][0]
        except Exception:  # noqa: BLE001 - the schema is not migrated yet
            return 0

    with RecordingProxy(s3.port, hook=_slow_parts(0.1)) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        proc = sync.start(*sync.run_args(*ARGS, "--workers", "1"))
        deadline = time.monotonic() + 60
        while journaled() < 2:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no part journaled"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        done_before = {n for (n,) in pg_rows(pg_url, "crash",
                                             "SELECT part_number FROM multipart_parts")}
        status = sync.cli("status", "--journal", pg_url, "--job", "crash", "--json")
        assert status.code == 0, status.err
        data = json.loads(status.out)
        assert data["runs"][0]["state"] == "interrupted"  # no run holds the job's lock
        assert [u["key"] for u in data["in_flight"]] == ["big.img"]

        proxy.clear()
        resumed = run(sync, *ARGS, "--workers", "1", "--resume")
        assert resumed.code == 0, resumed.err
        ops = proxy.operations()
        sent = {int(r.query["partNumber"][0]) for r in proxy.requests
                if r.operation == "UploadPart"}
    assert ops["CreateMultipartUpload"] == 0 and ops["CompleteMultipartUpload"] == 1, ops
    assert not sent & done_before, "a journaled part was sent again"
    got = s3client.get_object(Bucket=sync.bucket, Key=sync.object_key("big.img"))["Body"].read()
    assert hashlib.sha256(got).digest() == hashlib.sha256(big).digest()
    assert pg_rows(pg_url, "crash", "SELECT count(*), max(resumed) FROM runs") == [(1, 1)]


def _slow_parts(delay: float):
    from tests.support.proxy import Fault

    return lambda req: Fault(status=0, delay=delay) if req.operation == "UploadPart" else None


@ON_PG
@pytest.mark.parametrize("s3", ["moto"], indirect=True)
def test_two_jobs_in_one_database_keep_to_themselves(sync, s3, pg_url, tmp_path):
    """Two sources, two jobs (default names, from source and destination), one database:
    each job's rows are its own, `status` finds each by SOURCE DEST, and one job's name
    given to the other source is refused, as a file journal of another job is. A database
    of its own (the session's holds the jobs of the tests before it)."""
    from tests.support.pg import fresh_database

    with fresh_database() as url:
        _two_jobs(sync, s3, url, tmp_path)


def _two_jobs(sync, s3, pg_url, tmp_path):
    from tests.conftest import Sync

    (tmp_path / "other").mkdir()
    other = Sync(s3, sync.bucket, tmp_path / "other", prefix="backup/host2")
    for s in (sync, other):
        use_pg(s, pg_url, None)
    sync.write("only-in-one.txt", b"1")
    other.write("only-in-two.txt", b"2")
    assert sync.run().code == 0 and other.run().code == 0
    jobs = pg_rows(pg_url, "public", "SELECT name, source FROM journalsync.jobs ORDER BY source")
    assert [source for _, source in jobs] == sorted([str(sync.src), str(other.src)])
    for (job, source) in jobs:
        keys = pg_rows(pg_url, job, "SELECT key FROM files")
        assert keys == ([("only-in-one.txt",)] if source == str(sync.src) else [("only-in-two.txt",)])
        assert pg_rows(pg_url, job, "SELECT count(*) FROM runs") == [(1,)]

    for s, key in ((sync, "only-in-one.txt"), (other, "only-in-two.txt")):
        status = s.cli("status", str(s.src), s.dest, "--journal", pg_url, "--json")
        assert status.code == 0, status.err
        assert json.loads(status.out)["runs"][0]["uploaded"] == 1
    both = sync.cli("status", "--journal", pg_url)
    assert both.code == 2 and "2 jobs" in both.err and "--job" in both.err, both.err

    one_job = dict((source, job) for job, source in jobs)[str(sync.src)]
    wrong = other.run("--job", one_job)
    assert wrong.code == 2, wrong.err
    assert f"belongs to {sync.src} -> {sync.dest}" in wrong.err and len(wrong.err.splitlines()) == 1


def test_a_second_run_of_a_job_is_refused_while_one_holds_it(offline_sync, pg_url):
    offline_sync.journal = pg_url
    with PgRunLock(PgLocation(pg_url, "held")):
        result = offline_sync.run("--job", "held")
    assert result.code == 2, result.err
    assert "another run (journalsync pid" in result.err and "job held" in result.err


def test_a_postgresql_server_that_does_not_answer_is_one_line_exit_5(offline_sync):
    offline_sync.journal = "postgresql://nobody@127.0.0.1:9/nothing"
    result = offline_sync.run()
    assert result.code == 5, result.err
    assert result.err.count("\n") == 1 and "127.0.0.1:9 did not answer" in result.err, result.err


def test_a_job_name_that_is_no_schema_name_is_a_usage_error(offline_sync):
    offline_sync.journal = "postgresql://nobody@127.0.0.1:9/nothing"
    result = offline_sync.run("--job", "Not-A-Name")
    assert result.code == 2 and "--job 'Not-A-Name'" in result.err, result.err


@pytest.mark.slow
@ON_PG
@pytest.mark.parametrize("s3", ["moto"], indirect=True)
def test_run_and_a_worker_share_a_jobs_chunks_in_postgresql(sync, s3, pg_url):
    """`journalsync worker --journal postgresql://… --job NAME` beside the run: both claim
    chunks of the job's run (FOR UPDATE SKIP LOCKED), every file is PUT once, and the
    bucket equals the source."""
    from collections import Counter

    from tests.support.proxy import Fault

    job = f"w_{random.randrange(1 << 30):x}"
    use_pg(sync, pg_url, job)
    files = {f"d{i % 3}/f{i:03d}.txt": f"file {i} ".encode() * (i + 1) for i in range(24)}
    for rel, data in files.items():
        sync.write(rel, data)

    def owners() -> int:
        try:
            return pg_rows(pg_url, job, "SELECT count(DISTINCT owner) FROM chunks "
                                        "WHERE owner IS NOT NULL")[0][0]
        except Exception:  # noqa: BLE001 - the schema is not there yet
            return 0

    both = {"in": False}

    def hold_until_both_claimed(req):  # each process gets a share whatever the load
        if req.operation != "PutObject":
            return None
        deadline = time.monotonic() + 60
        while not both["in"] and time.monotonic() < deadline:
            both["in"] = owners() >= 2
            time.sleep(0.05)
        return Fault(status=0, delay=0.05)

    with RecordingProxy(s3.port, hook=hold_until_both_claimed) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        runner = sync.start(*sync.run_args("--chunk-files", "4", "--workers", "1"))
        deadline = time.monotonic() + 60
        while not owners():
            assert runner.poll() is None, runner.communicate()
            assert time.monotonic() < deadline, "the run made no chunk"
            time.sleep(0.05)
        worker = sync.start("worker", "--journal", pg_url, "--job", job, "--workers", "2")
        results = [p.communicate(timeout=120) + (p.returncode,) for p in (runner, worker)]
    for out, err, code in results:
        assert code == 0, (out, err)
    assert results[1][0].startswith("journalsync: worker run=1 chunks="), results[1]
    prefix = f"/{sync.bucket}/"
    puts = Counter(r.path[len(prefix):] for r in proxy.requests if r.operation == "PutObject")
    assert puts == Counter({sync.object_key(rel): 1 for rel in files})
    done = dict(pg_rows(pg_url, job, "SELECT w.pid, count(c.id) FROM workers w "
                                     "LEFT JOIN chunks c ON c.owner = w.id GROUP BY w.pid"))
    assert set(done) == {runner.pid, worker.pid} and all(n >= 1 for n in done.values()), done
    client = s3.client()
    for rel, data in files.items():
        assert client.get_object(Bucket=sync.bucket, Key=sync.object_key(rel))["Body"].read() == data
