"""Fixtures: real S3 servers on 127.0.0.1 (moto and rclone serve s3, plus an optional
external one), a bucket per test, and the CLI run as a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from journalsync.devtools.localserver import LocalS3Server, MotoS3Server, RcloneS3Server
from tests.support import zygote

SERVERS = ["moto", "rclone", "seaweed"] + (["external"] if os.environ.get("S3_TEST_ENDPOINT_URL") else [])
# Where the `sync` fixture's journal lives: a SQLite file, or a job (a schema of its own) in
# the session's PostgreSQL database (tests/support/pg.py). SQLite runs on every server,
# PostgreSQL on one (pytest_collection_modifyitems): each test meets each journal once.
JOURNALS = ["sqlite", "postgresql"]


# Tests whose subject is the client (a fault a proxy injects, a signal, the journal's own
# file) run on one server: any would do, and three cost two thirds of them for nothing the
# suite does not already show elsewhere. rclone serve s3 answers fastest for the least CPU
# (moto is Python, on the same two cores as the suite).
ONE_SERVER = "rclone"

# The longest tests, started first so that none of them is the last to end (and with
# xdist's worksteal, the others are shared out around them). Then the crash and fault
# tests (slow), then the rest, shortest last.
LONGEST = ("test_a_month_of_nights_keeps_the_journal_small",
           "test_random_kills_in_the_delete_phase_never_delete_a_present_file")


def _param_of(item, name: str) -> str | None:
    callspec = getattr(item, "callspec", None)
    return callspec.params.get(name) if callspec else None


def _server_of(item) -> str | None:
    return _param_of(item, "s3")


def _pg_journal_server(group: list) -> str | None:
    """The one server a test's PostgreSQL journal runs on, when the test runs on both
    journals: rclone (fastest) if the test runs there, else its first server."""
    kinds = {_param_of(item, "journal_kind") for item in group}
    if kinds != set(JOURNALS):
        return None  # one journal only (the test chose it): every server it asked for
    servers = [_server_of(item) for item in group if _param_of(item, "journal_kind") == "postgresql"]
    chosen = group[0].get_closest_marker("pg_server")
    if chosen and chosen.args[0] in servers:
        return chosen.args[0]
    return ONE_SERVER if ONE_SERVER in servers else servers[0]


# Fault tests whose subject is the transport (a proxy or a link that refuses, stalls,
# corrupts or drops requests): what they test happens between the client and the store,
# the journal writes they make are the plain ones every other test makes on both journals,
# and their PostgreSQL copies cost the suite 3 minutes of its 15 on 2 cores. They run on
# SQLite only; every crash test (SIGKILL, signals, resume, locks, hosts) runs on both.
# Likewise the adoption of buckets that aws, rclone and s5cmd filled (its subject is reading
# their objects; test_adopt, test_adopt_review and test_adopt_fixes run adoption's journal
# writes on both journals) and the CRT's transport settings: with them, a fresh clone's
# `make test` took 15:40 in pytest on 2 cores.
TRANSPORT_FAULTS = {"test_flaky", "test_part_stall", "test_unreachable", "test_link_drop",
                    "test_body_checks", "test_damaged_body", "test_multipart_failures",
                    "test_manifest_faults", "test_adopt_peers", "test_crt_settings"}


def _keep_journal(item, pg_server: str | None) -> bool:
    if _param_of(item, "journal_kind") != "postgresql":
        return True
    item.add_marker("pg_journal")
    if item.get_closest_marker("sqlite_only") or item.module.__name__.rsplit(".", 1)[-1] in TRANSPORT_FAULTS:
        return False
    return pg_server is None or _server_of(item) == pg_server


def pytest_configure(config):
    if not hasattr(config, "workerinput"):  # once, in the controller, before any worker starts
        _compile_sources()
    config.addinivalue_line("markers", "sqlite_only(reason): the test is about the SQLite journal "
                            "file itself; its PostgreSQL variant is not collected")
    config.addinivalue_line("markers", "pg_server(name): the server of the test's PostgreSQL "
                            "variant (the test skips on the others)")
    config.addinivalue_line("markers", "pg_journal: a test's PostgreSQL-journal variant (added "
                            "by tests/conftest.py; select with -m pg_journal)")


def _compile_sources() -> None:
    """Bytecode for journalsync's own modules, written before the first test starts its CLI.
    Each test runs `python -m journalsync` as a subprocess many times, and an environment
    with PYTHONDONTWRITEBYTECODE=1 (where no import writes a .pyc) would otherwise compile
    every module from source in every one of them: a sixth of a no-op run's instructions
    (callgrind), 0.1-0.15 s of CPU per process. py_compile writes whatever that setting says;
    a module edited since is compiled again here, and a stale .pyc is never used (Python
    checks the source's mtime and size)."""
    import compileall

    root = Path(__file__).resolve().parent.parent
    for package in ("journalsync", "migrations"):
        compileall.compile_dir(root / package, quiet=2)


def pytest_collection_modifyitems(config, items):
    kept, dropped = [], []
    for item in items:
        server = _server_of(item)
        one = item.get_closest_marker("one_server")
        if one and server is not None and server != (one.args[0] if one.args else ONE_SERVER):
            dropped.append(item)
        else:
            kept.append(item)
    groups: dict[str, list] = {}
    for item in kept:
        groups.setdefault(item.nodeid.split("[", 1)[0], []).append(item)
    pg_server = {name: _pg_journal_server(group) for name, group in groups.items()
                 if any(_param_of(item, "journal_kind") for item in group)}
    kept, considered = [], kept
    for item in considered:
        name = item.nodeid.split("[", 1)[0]
        (kept if _keep_journal(item, pg_server.get(name)) else dropped).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)

    def rank(item) -> int:
        if getattr(item, "originalname", item.name) in LONGEST:
            return 0
        return 1 if item.get_closest_marker("slow") else 2

    items[:] = sorted(kept, key=rank)  # stable: collection order within each rank


class ExternalS3Server(LocalS3Server):
    """Opt-in third target, e.g. MinIO from docker-compose.yml: S3_TEST_ENDPOINT_URL,
    S3_TEST_ACCESS_KEY_ID, S3_TEST_SECRET_ACCESS_KEY."""

    name = "external"

    def __init__(self) -> None:
        super().__init__()
        self._endpoint = os.environ["S3_TEST_ENDPOINT_URL"]
        self.access_key = os.environ.get("S3_TEST_ACCESS_KEY_ID", "minioadmin")
        self.secret_key = os.environ.get("S3_TEST_SECRET_ACCESS_KEY", "minioadmin")

    @property
    def endpoint_url(self) -> str:
        return self._endpoint

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


@pytest.fixture(scope="session", params=SERVERS)
def s3(request, tmp_path_factory) -> LocalS3Server:
    if request.param == "moto":
        server: LocalS3Server = MotoS3Server()
    elif request.param == "rclone":
        root = tmp_path_factory.mktemp("rclone")
        server = RcloneS3Server(root / "data", log_file=root / "rclone.log")
    elif request.param == "seaweed":
        from journalsync.devtools.localserver import SeaweedS3Server

        root = tmp_path_factory.mktemp("seaweed")
        server = SeaweedS3Server(root, log_file=root / "weed.log")
    else:
        server = ExternalS3Server()
    with server:
        yield server


@pytest.fixture
def bucket(s3) -> str:
    name = f"jst-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(name)
    return name


@pytest.fixture
def s3client(s3):
    return s3.client()


def base_env(tmp_path: Path) -> dict[str, str]:
    """A clean environment: no developer credentials or config leak into a test."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "JOURNALSYNC_"))}
    env.update(AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null",
               AWS_EC2_METADATA_DISABLED="true", XDG_STATE_HOME=str(tmp_path / "state"),
               PYTHONUNBUFFERED="1",
               # A CLI that hangs can be made to print every thread's stack (SIGABRT):
               # tests/faults/test_shared_parts.py's _finish does so before it kills one.
               PYTHONFAULTHANDLER="1")
    return env


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def summary(self) -> dict[str, str]:
        """The fields of the summary line (the last line of stdout)."""
        last = self.out.strip().splitlines()[-1]
        assert last.startswith("journalsync: "), self.out
        return dict(pair.split("=", 1) for pair in last[len("journalsync: "):].split())


@dataclass
class Sync:
    """A source tree, a destination and a journal, and the CLI to sync them."""

    s3: LocalS3Server
    bucket: str
    tmp: Path
    prefix: str = "backup/host1"
    endpoint_url: str | None = None
    env_overrides: dict[str, str] = field(default_factory=dict)
    pg_url: str | None = None  # a PostgreSQL journal: this database, job `job`
    job: str | None = None

    def __post_init__(self):
        self.src = self.tmp / "src"
        self.src.mkdir(exist_ok=True)
        self.journal: Path | str = self.pg_url or self.tmp / "journal.sqlite"
        if self.pg_url and self.job is None:
            self.job = f"t_{uuid.uuid4().hex[:12]}"  # a schema of the test's own
        self._bound_to = self.endpoint_url

    @property
    def on_pg(self) -> bool:
        return isinstance(self.journal, str) and self.journal.startswith("postgres")

    def journal_args(self) -> list[str]:
        """--journal (and --job) as a command names this Sync's journal."""
        if self.on_pg:
            return ["--journal", self.journal, *(["--job", self.job] if self.job else [])]
        return ["--journal", str(self.journal)]

    def other_journal_args(self, name: str) -> list[str]:
        """--journal (and --job) of a second journal of the same kind, for another job."""
        if self.on_pg:
            return ["--journal", self.journal, "--job", f"{self.job}_{name}"]
        return ["--journal", str(self.tmp / f"{name}.sqlite")]

    @property
    def journal_toml(self) -> str:
        """A job file's lines that name this Sync's journal."""
        if self.on_pg:
            return f'journal = "{self.journal}"' + (f'\njob = "{self.job}"' if self.job else "")
        return f'journal = "{self.journal}"'

    def other_journal_toml(self, name: str) -> str:
        """A job file's lines that name a second journal of the same kind."""
        _, journal, *job = self.other_journal_args(name)
        return f'journal = "{journal}"' + (f'\njob = "{job[1]}"' if job else "")

    def forget_journal(self) -> None:
        """A new, empty journal from here on (a rebuilt machine): the file is removed, or
        the runs go to a new job."""
        if self.on_pg:
            self.job = f"t_{uuid.uuid4().hex[:12]}"
        else:
            self.journal.unlink()

    @property
    def location(self):
        """The journal as journalsync's own code opens it (Journal(...), Config)."""
        if self.on_pg:
            from journalsync.journal.location import PgLocation

            return PgLocation(self.journal, self.job)
        return self.journal

    def journal_rows(self, sql: str, *params, if_any: bool = False) -> list[tuple]:
        """Rows of this Sync's journal (SQL in SQLite's words, `?` parameters); with
        `if_any`, none from a journal not created yet (tests/support/journalrows.py)."""
        from tests.support.journalrows import journal_rows

        return journal_rows(self.journal, self.job, sql, *params, if_any=if_any)

    def like(self, **changes) -> "Sync":
        """Another Sync on the same kind of journal (a job of its own in PostgreSQL)."""
        kw = dict(s3=self.s3, bucket=self.bucket, tmp=self.tmp, pg_url=self.pg_url)
        return Sync(**{**kw, **changes})

    def _moved(self) -> tuple[str, ...]:
        """A test that puts a proxy in front of the same server moves the journal's store
        to a new URL: say so, as a user would (the journal is bound to its endpoint)."""
        if self.endpoint_url == self._bound_to:
            return ()
        self._bound_to = self.endpoint_url
        return ("--endpoint-moved",)

    @property
    def dest(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def env(self) -> dict[str, str]:
        env = {**base_env(self.tmp), **self.s3.env(), **self.env_overrides}
        if self.endpoint_url:
            env["AWS_ENDPOINT_URL"] = self.endpoint_url
        return env

    def cli(self, *args: str, timeout: float = 180) -> Result:
        """`python -m journalsync ARGS`, run to its end: a process forked by the test
        zygote (tests/support/zygote.py), or exec'd with JOURNALSYNC_TEST_EXEC=1."""
        env = self.env()
        if zygote.enabled(env):
            return Result(*zygote.run(list(args), env, timeout))
        proc = subprocess.run([sys.executable, "-m", "journalsync", *args], env=env,
                              capture_output=True, text=True, timeout=timeout)
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def start(self, *args: str) -> subprocess.Popen:
        """The CLI as a background process (for SIGKILL and SIGTERM tests): a Popen, or
        what the tests use of one (zygote.Child)."""
        env = self.env()
        if zygote.enabled(env):
            return zygote.Child(list(args), env)  # type: ignore[return-value]
        return subprocess.Popen([sys.executable, "-m", "journalsync", *args], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def run_args(self, *extra: str) -> list[str]:
        return ["run", str(self.src), self.dest, *self.journal_args(), *self._moved(), *extra]

    def run(self, *extra: str) -> Result:
        return self.cli(*self.run_args(*extra))

    def write(self, rel: str, data: bytes) -> Path:
        path = self.src / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    def object_key(self, rel: str) -> str:
        return f"{self.prefix}/{rel}" if self.prefix else rel


@pytest.fixture(params=JOURNALS)
def journal_kind(request) -> str:
    return request.param


@pytest.fixture
def journal_pg_url(journal_kind, request) -> str | None:
    """For a test that builds its own Sync (Sync(..., pg_url=journal_pg_url)): the session's
    PostgreSQL database on the test's PostgreSQL variant, else None (a SQLite file)."""
    return request.getfixturevalue("pg_url") if journal_kind == "postgresql" else None


@pytest.fixture
def sync(s3, bucket, tmp_path, journal_kind, request) -> Sync:
    """A Sync on each journal: SQLite (a file in tmp_path) on every server, PostgreSQL (a
    job of the test's own in the session's database) on one."""
    if journal_kind == "postgresql":
        return Sync(s3, bucket, tmp_path, pg_url=request.getfixturevalue("pg_url"))
    return Sync(s3, bucket, tmp_path)


@pytest.fixture(autouse=True, scope="session")
def _quiet_servers():
    import logging

    logging.getLogger("werkzeug").setLevel(logging.WARNING)


class _NoServer(LocalS3Server):
    """Stands in for a server where none may be reached: nothing listens on port 9 of
    127.0.0.1 (discard), so a request that does go out is refused and the test fails."""

    name = "none"

    def __init__(self) -> None:
        super().__init__()
        self.port = 9


@pytest.fixture
def offline_sync(tmp_path) -> Sync:
    """A Sync for tests that never reach a server (usage errors, --help, job-file syntax,
    missing credentials): not parametrized over SERVERS, so each runs once."""
    return Sync(_NoServer(), "jst-offline", tmp_path)


@pytest.fixture(scope="session")
def pg_url() -> str:
    """A PostgreSQL database of this test session's own (tests/support/pg.py): skipped
    without a server, failed without one under CI=true."""
    from tests.support.pg import fresh_database

    with fresh_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def journal_at(request, tmp_path):
    """Where a unit test's journal lives, once per kind: a file in tmp_path, or a job of
    its own (a fresh schema) in the session's PostgreSQL database."""
    if request.param == "sqlite":
        return tmp_path / "j.sqlite"
    from journalsync.journal.location import PgLocation

    url = request.getfixturevalue("pg_url")
    return PgLocation(url, f"t_{uuid.uuid4().hex[:12]}")
