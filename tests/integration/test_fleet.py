"""The fleet view, end to end: `status --all` and `journals` over the jobs of one PostgreSQL
database (and over the state directory's journal files), with real runs of the CLI against
a real S3 server: one job with a refused file, one SIGKILLed mid multipart (its worker row
left working), a job at an older schema revision (shown, never migrated), a schema that is
no job (left out), and a role that may only read. `verify` and `cleanup` given
`--journal URL --job`."""

from __future__ import annotations

import hashlib
import json
import random
import signal
import socket
import time
import uuid
from pathlib import Path

import pytest

from journalsync.config import MiB
from journalsync.journal.location import PgLocation
from tests.support.proxy import Fault, RecordingProxy

PART = 5 * MiB
ARGS = ("--multipart-threshold", "5MiB", "--part-size", "5MiB", "--workers", "1")


def sql(url: str, statement: str, *params) -> list[tuple]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as db:
        cur = db.execute(statement, params)
        return [tuple(r) for r in cur.fetchall()] if cur.description else []


def refused_run(sync, job: str) -> int:
    """A run of `job` in which the store refuses one file (403): exit 1, failed=1. Returns
    the run's pid (its own worker row's)."""
    sync.write("ok.txt", b"fine")
    sync.write("denied.txt", b"not allowed")
    refused = "/" + sync.object_key("denied.txt")

    def hook(req):
        if req.operation == "PutObject" and req.path.endswith(refused):
            return Fault(403, "AccessDenied")
        return None

    with RecordingProxy(sync.s3.port, hook=hook) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        proc = sync.start(*sync.run_args("--job", job))
        out, err = proc.communicate(timeout=120)
    sync.endpoint_url = None
    assert proc.returncode == 1 and "failed=1" in out, (out, err)
    return proc.pid


def killed_multipart_run(sync, url: str, job: str) -> int:
    """A run of `job` SIGKILLed once two parts of a 7-part file are journaled: its run row
    still says running, its worker row working, its upload is incomplete. Returns its pid."""
    sync.write("big.img", random.Random(7).randbytes(6 * PART + 11))

    def parts() -> int:
        try:
            return sql(url, f"SELECT count(*) FROM {job}.multipart_parts")[0][0]
        except Exception:  # noqa: BLE001 - the schema is not made yet
            return 0

    slow = lambda req: Fault(status=0, delay=0.1) if req.operation == "UploadPart" else None  # noqa: E731
    with RecordingProxy(sync.s3.port, hook=slow) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        proc = sync.start(*sync.run_args("--job", job, *ARGS))
        deadline = time.monotonic() + 60
        while parts() < 2:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no part journaled"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    sync.endpoint_url = None
    return proc.pid


def older_job(url: str, job: str) -> None:
    """A job's schema at revision 0009, as a journalsync before this one left it."""
    from journalsync.journal import migrate
    from journalsync.journal.pg import create_engine_for

    engine = create_engine_for(PgLocation(url, job))
    migrate.upgrade_to_head(engine, "0009")
    engine.dispose()


@pytest.mark.parametrize("journal_kind", ["postgresql"], indirect=True)  # a database of its own
@pytest.mark.parametrize("s3", ["moto"], indirect=True)
def test_status_all_shows_every_job_of_a_database(sync, s3, s3client, tmp_path):
    from tests.conftest import Sync
    from tests.support.pg import fresh_database

    with fresh_database() as url:
        (tmp_path / "two").mkdir()
        two = Sync(s3, sync.bucket, tmp_path / "two", prefix="backup/host2")
        for s in (sync, two):
            s.journal, s.job = url, None  # the jobs are named below
        one_pid = refused_run(sync, "one")
        two_pid = killed_multipart_run(two, url, "two")
        older_job(url, "old")
        sql(url, "CREATE SCHEMA shop")
        sql(url, "CREATE TABLE shop.runs (id int)")  # a schema that is no job of ours
        beat = sql(url, "SELECT heartbeat_at FROM two.workers")[0][0]
        time.sleep(max(0.0, beat + 3.5 - time.time()))  # over 3 leases of 1 s

        result = sync.cli("status", "--all", "--journal", url, "--lease", "1s",
                          "--failures", "3", "--json")
        assert result.code == 0, result.err
        data = json.loads(result.out)
        assert data["journal"] == url and data["lease"] == 1.0
        jobs = {job["job"]: job for job in data["jobs"]}
        assert sorted(jobs) == ["old", "one", "two"]  # shop is not a job

        one = jobs["one"]
        assert (one["source"], one["destination"]) == (str(sync.src), sync.dest)
        assert one["last_run"]["state"] == "partial" and one["last_run"]["uploaded"] == 1
        assert one["last_run"]["failed"] == 1 and one["failures"] == 1
        [line] = one["failure_lines"]
        assert line["what"] == "denied.txt" and line["phase"] == "upload"
        assert "AccessDenied" in line["error"]
        [w] = one["workers"]
        assert (w["host"], w["pid"], w["state"]) == (socket.gethostname(), one_pid, "done")
        assert w["bytes_done"] == len(b"fine") and w["bytes_per_s"] > 0 and not w["stale"]
        assert w["heartbeat_age"] >= 0

        two_view = jobs["two"]
        assert two_view["source"] == str(two.src) and two_view["destination"] == two.dest
        assert two_view["last_run"]["state"] == "interrupted"  # no process holds its lock
        assert two_view["failures"] == 0 and two_view["chunks"]["claimed"] == 1
        [w] = two_view["workers"]
        assert (w["pid"], w["state"], w["stale"]) == (two_pid, "working", True)
        assert w["heartbeat_age"] > 3

        alone = sync.cli("status", "--journal", url, "--job", "two", "--lease", "1s", "--json")
        assert alone.code == 0, alone.err
        [w] = json.loads(alone.out)["workers"]
        assert (w["pid"], w["stale"]) == (two_pid, True)

        old = jobs["old"]
        assert old["schema"] == "0009" and "older" in old["note"] and old["last_run"] is None
        assert sql(url, "SELECT version_num FROM old.alembic_version") == [("0009",)]

        text = sync.cli("status", "--all", "--journal", url, "--lease", "1s", "--failures", "3")
        assert text.code == 0, text.err
        out = text.out
        for expected in ("3 job(s)", "job one", "job two", "job old", "schema 0009, older",
                         f"{sync.src} -> {sync.dest}", "failures: 1", "upload denied.txt",
                         f"pid {one_pid}: done", f"pid {two_pid}: working", "STALE", "s ago"):
            assert expected in out, (expected, out)
        assert "shop" not in out

        listed = sync.cli("journals", "--journal", url, "--json")
        assert listed.code == 0, listed.err
        rows = {row["job"]: row for row in json.loads(listed.out)["journals"]}
        assert sorted(rows) == ["old", "one", "two"]
        assert rows["one"]["last_run"]["state"] == "partial" and rows["one"]["path"] == url
        assert rows["old"]["note"].startswith("schema 0009")
        plain = sync.cli("journals", "--journal", url)
        assert plain.code == 0 and "  job two" in plain.out and f"{two.src} -> " in plain.out

        _read_only_role_sees_the_same(sync, url, data)
        _verify_and_cleanup_by_job(sync, two, url, s3client)


def _read_only_role_sees_the_same(sync, url: str, data: dict) -> None:
    """A role granted only CONNECT, USAGE and SELECT runs status --all (and one job's status)
    and sees what the owner saw: status writes nothing."""
    role = f"js_ro_{uuid.uuid4().hex[:10]}"
    sql(url, f"CREATE ROLE {role} LOGIN")
    try:
        database = url.rsplit("/", 1)[1]
        sql(url, f'GRANT CONNECT ON DATABASE "{database}" TO {role}')
        for schema in ("journalsync", "one", "two", "old"):
            sql(url, f"GRANT USAGE ON SCHEMA {schema} TO {role}")
        for schema in ("journalsync", "one", "old"):
            sql(url, f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {role}")
        sql(url, f"GRANT SELECT ON two.runs, two.alembic_version TO {role}")  # and no more
        ro_url = "postgresql://" + role + "@" + url.split("://", 1)[1].split("@", 1)[1]
        result = sync.cli("status", "--all", "--journal", ro_url, "--failures", "3", "--json")
        assert result.code == 0, result.err
        seen = {j["job"]: j for j in json.loads(result.out)["jobs"]}
        for job in data["jobs"]:
            if job["job"] != "two":
                mine = seen[job["job"]]  # all but the URL's user and the heartbeat's age
                assert {**mine, "journal": None, "workers": None} == {
                    **job, "journal": None, "workers": None}
                assert [w["pid"] for w in mine["workers"]] == [w["pid"] for w in job["workers"]]
        problem = seen["two"]["problem"]
        assert "permission denied" in problem and "SELECT on its tables" in problem, problem
        assert seen["two"]["last_run"]["state"] == "running"  # as the catalog read it
        one = sync.cli("status", "--journal", ro_url, "--job", "one", "--json")
        assert one.code == 0, one.err
        assert json.loads(one.out)["failed"][0]["key"] == "denied.txt"
        listed = sync.cli("journals", "--journal", ro_url)
        assert listed.code == 0 and "job one" in listed.out, listed.err
    finally:
        sql(url, f"DROP OWNED BY {role}")
        sql(url, f"DROP ROLE {role}")


def _verify_and_cleanup_by_job(sync, two, url: str, s3client) -> None:
    """verify and cleanup find a job by --journal URL --job NAME, its destination too."""
    ok = sync.cli("verify", "--journal", url, "--job", "one", "--json")
    assert ok.code == 0, ok.err
    assert json.loads(ok.out) == {"checked": 1, "synced": 1, "mismatches": []}
    s3client.put_object(Bucket=sync.bucket, Key=sync.object_key("ok.txt"), Body=b"tampered")
    bad = sync.cli("verify", "--journal", url, "--job", "one")
    assert bad.code == 1 and "mismatch ok.txt" in bad.out, (bad.out, bad.err)

    listed = two.cli("cleanup", "--journal", url, "--job", "two", "--older-than", "0", "--json")
    assert listed.code == 0, listed.err
    [row] = json.loads(listed.out)
    assert row["key"] == "big.img" and row["ours"] is True
    assert row["action"].startswith("would abort")
    aborted = two.cli("cleanup", two.dest, "--journal", url, "--job", "two", "--older-than",
                      "0", "--abort", "--json")
    assert aborted.code == 0, aborted.err
    assert [r["action"] for r in json.loads(aborted.out)] == ["aborted"]
    assert sql(url, "SELECT state FROM two.multipart_uploads") == [("aborted",)]
    assert not s3client.list_multipart_uploads(Bucket=sync.bucket).get("Uploads")


@pytest.mark.sqlite_only("the state directory's default journals are files")
@pytest.mark.parametrize("s3", ["moto"], indirect=True)
def test_status_all_over_the_state_directory_reads_only(sync, s3, tmp_path):
    """Without --journal, status --all shows every journal file that `journals` lists,
    and leaves each byte for byte as it was, with no -wal or -shm beside it."""
    from tests.conftest import Sync

    (tmp_path / "two").mkdir()
    two = Sync(s3, sync.bucket, tmp_path / "two", prefix="backup/host2",
               env_overrides={"XDG_STATE_HOME": str(tmp_path / "state")})
    for s, name in ((sync, "a.txt"), (two, "b.txt")):
        s.write(name, b"x" * 10)
        done = s.cli("run", str(s.src), s.dest)
        assert done.code == 0, done.err
    state = tmp_path / "state" / "journalsync"
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in state.iterdir()}
    assert len([n for n in before if n.endswith(".sqlite")]) == 2

    result = sync.cli("status", "--all", "--json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert data["journal"] == str(state)
    seen = {(j["source"], j["destination"]): j for j in data["jobs"]}
    assert set(seen) == {(str(sync.src), sync.dest), (str(two.src), two.dest)}
    for job in seen.values():
        assert job["job"] is None and Path(job["journal"]).parent == state
        assert job["last_run"]["state"] == "done" and job["last_run"]["uploaded"] == 1
        [w] = job["workers"]
        assert w["bytes_done"] == 10 and w["state"] == "done" and not w["stale"]
    text = sync.cli("status", "--all")
    assert text.code == 0 and text.out.startswith(f"{state}: 2 job(s)"), text.out
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in state.iterdir()}
    assert after == before


def test_status_all_and_journals_refuse_what_they_cannot_show(offline_sync):
    both = offline_sync.cli("status", "--all", "--job", "x",
                            "--journal", "postgresql://nobody@127.0.0.1:9/nothing")
    assert both.code == 2 and "--all shows every job" in both.err, both.err
    alone = offline_sync.cli("status", "--failures", "3")
    assert alone.code == 2 and "--failures goes with --all" in alone.err, alone.err
    failed = offline_sync.cli("status", "--all", "--failed")
    assert failed.code == 2 and "--failures N" in failed.err, failed.err
    a_file = offline_sync.cli("journals", "--journal", "some.sqlite")
    assert a_file.code == 2 and "takes a PostgreSQL URL" in a_file.err, a_file.err
    down = offline_sync.cli("status", "--all", "--journal", "postgresql://nobody@127.0.0.1:9/x")
    assert down.code == 5 and "127.0.0.1:9 did not answer" in down.err, down.err
    assert down.err.count("\n") == 1
