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

SERVERS = ["moto", "rclone", "seaweed"] + (["external"] if os.environ.get("S3_TEST_ENDPOINT_URL") else [])


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


def _server_of(item) -> str | None:
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("s3") if callspec else None


def pytest_collection_modifyitems(config, items):
    kept, dropped = [], []
    for item in items:
        server = _server_of(item)
        one = item.get_closest_marker("one_server")
        if one and server is not None and server != (one.args[0] if one.args else ONE_SERVER):
            dropped.append(item)
        else:
            kept.append(item)
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
               PYTHONUNBUFFERED="1")
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

    def __post_init__(self):
        self.src = self.tmp / "src"
        self.src.mkdir(exist_ok=True)
        self.journal = self.tmp / "journal.sqlite"
        self._bound_to = self.endpoint_url

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
        env = self.env()
        proc = subprocess.run([sys.executable, "-m", "journalsync", *args], env=env,
                              capture_output=True, text=True, timeout=timeout)
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def start(self, *args: str) -> subprocess.Popen:
        """The CLI as a background process (for SIGKILL and SIGTERM tests)."""
        env = self.env()
        return subprocess.Popen([sys.executable, "-m", "journalsync", *args], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def run_args(self, *extra: str) -> list[str]:
        return ["run", str(self.src), self.dest, "--journal", str(self.journal), *self._moved(),
                *extra]

    def run(self, *extra: str) -> Result:
        return self.cli(*self.run_args(*extra))

    def write(self, rel: str, data: bytes) -> Path:
        path = self.src / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    def object_key(self, rel: str) -> str:
        return f"{self.prefix}/{rel}" if self.prefix else rel


@pytest.fixture
def sync(s3, bucket, tmp_path) -> Sync:
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
