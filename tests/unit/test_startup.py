"""Start-up cost, checked by what a process imports (never by how long it takes):
`--help` and the commands that read no journal load typer and our light modules only, and
opening a journal already at the newest schema does not load Alembic."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import pytest
from sqlalchemy import create_engine

from journalsync.journal import migrate

# Each costs a tenth of a second or more to import; none is needed to print help.
HEAVY = {"sqlalchemy", "alembic", "boto3", "botocore", "s3transfer", "awscrt", "_awscrt",
         "pydantic", "rich", "tenacity"}

# The CLI's entry point, then the top-level packages it loaded, on the last line.
PROBE = """\
import sys
from journalsync.cli import main
sys.argv = ["journalsync", *sys.argv[1:]]
try:
    main()
except SystemExit:
    pass
print("\\nLOADED", " ".join(sorted({name.split(".")[0] for name in sys.modules})))
"""


def loaded_by(tmp_path, *args: str) -> set[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path / "state")}
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    last = proc.stdout.rstrip().splitlines()[-1]
    assert last.startswith("LOADED "), (proc.stdout, proc.stderr)
    return set(last.split()[1:])


@pytest.mark.parametrize("args", [("--help",), ("run", "--help"), ("status", "--help"),
                                  ("--version",), ("journals",)])
def test_help_and_light_commands_load_no_heavy_library(tmp_path, args):
    loaded = loaded_by(tmp_path, *args)
    assert "typer" in loaded  # the probe did run the CLI
    assert loaded & HEAVY == set()


def _revision(path) -> str:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT version_num FROM alembic_version").fetchone()[0]


OPEN = """\
import sys
from journalsync.journal import Journal
Journal(sys.argv[1]).close()
print("alembic" in sys.modules)
"""


def test_old_journal_migrates_and_a_journal_at_head_opens_without_alembic(tmp_path):
    path = tmp_path / "old.sqlite"
    engine = create_engine(f"sqlite:///{path}")
    migrate.upgrade_to_head(engine, target="0001")  # a journal written by an older release
    engine.dispose()

    def open_journal() -> str:
        proc = subprocess.run([sys.executable, "-c", OPEN, str(path)], cwd=tmp_path,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip()

    assert open_journal() == "True"  # an old journal is upgraded, by Alembic
    assert _revision(path) == migrate.HEAD_REVISION
    assert open_journal() == "False"  # at head: one SELECT, and Alembic is never imported
    assert _revision(path) == migrate.HEAD_REVISION
    path = tmp_path / "new.sqlite"
    assert open_journal() == "False"  # a new one is created at head in one go (headddl.py)
    assert _revision(path) == migrate.HEAD_REVISION


SQLITE_RUN = """\
import sys
import journalsync.engine
from journalsync.journal import Journal
from journalsync.journal.schema import remote_objects
with Journal(sys.argv[1]) as j:
    j.bind_job("/src", "s3://b/p", None)
    run_id = j.start_run("/src", "s3://b/p", None, False)
    j.finish_run(run_id, "done", j.plan_counts(run_id), None)
    j._upsert(remote_objects).on_conflict_do_nothing()  # the upsert of every upload's result
print(sorted(m for m in sys.modules if m.startswith("sqlalchemy.dialects.")))
"""


def test_a_sqlite_journal_never_imports_the_postgresql_dialect(tmp_path):
    """The engine and a SQLite journal's writes (its upserts included) load SQLite's
    dialect only: PostgreSQL's is about 6% of the engine's imports (valgrind's count of
    instructions), and is imported when a PostgreSQL journal is opened."""
    def run() -> str:
        proc = subprocess.run([sys.executable, "-c", SQLITE_RUN, str(tmp_path / "j.sqlite")],
                              cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip()

    run()  # a new journal: Alembic creates it (and loads every dialect it knows)
    loaded = run()  # a journal at head, as every run after the first opens it
    assert "sqlalchemy.dialects.sqlite" in loaded  # the probe did open the journal
    assert "postgresql" not in loaded, loaded


GC_PROBE = """\
import gc, sys
from journalsync.cli import main
sys.argv = ["journalsync", *sys.argv[1:]]
try:
    main()
except SystemExit:
    pass
print("\\nGC", gc.isenabled(), gc.get_freeze_count() > 0)
"""


@pytest.mark.parametrize("command", ["run", "status"])
def test_collector_is_back_on_once_start_up_is_over(tmp_path, command):
    """main() turns the garbage collector off for the imports; a run's engine (once its
    clients exist) and every other command turn it back on, with start-up's objects frozen,
    so a long run still collects its cycles."""
    (tmp_path / "src").mkdir()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path / "state"),
           "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_MAX_ATTEMPTS": "1"}
    args = [command, str(tmp_path / "src"), "s3://jst-gc/p", "--endpoint-url", "http://127.0.0.1:9"]
    if command == "run":
        args += ["--retry-timeout", "1s"]
    proc = subprocess.run([sys.executable, "-c", GC_PROBE, *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    last = proc.stdout.rstrip().splitlines()[-1]
    assert last == "GC True True", (proc.stdout, proc.stderr)
    if command == "run":
        assert "has not answered" in proc.stderr  # the run reached its engine (and clients)


MMAP_PROBE = """\
import ctypes, sys

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "set":
    from journalsync.process import release_large_buffers
    release_large_buffers()
libc.free(libc.malloc(8 << 20))  # glibc raises its threshold after freeing a mapped block
before = libc.mallinfo2().hblks
second = libc.malloc(8 << 20)
print(libc.mallinfo2().hblks - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_large_buffers_are_mapped_and_given_back_after_the_first(tmp_path):
    """release_large_buffers() (every run) keeps an 8 MiB part buffer mapped on its own, so
    freeing it returns the memory, where glibc's default would keep it in an arena."""
    def mapped(mode):
        proc = subprocess.run([sys.executable, "-c", MMAP_PROBE, mode], capture_output=True,
                              text=True, timeout=60, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        return int(proc.stdout.split()[-1])

    assert mapped("default") == 0  # the probe does see glibc's own behaviour
    assert mapped("set") == 1


EXIT_PROBE = """\
import atexit, sys, threading, time
from journalsync.entry import end_process

class Teardown:
    def __del__(self):
        print("torn down", flush=True)

kept = Teardown()  # freed only by the interpreter's teardown
atexit.register(lambda: print("atexit ran"))
print("result line", end="")  # still in stdout's buffer (a pipe)
sys.stderr.write("note\\n")
if sys.argv[1] == "thread":
    threading.Thread(target=lambda: (time.sleep(0.3), print(" thread done", end=""))).start()
end_process(int(sys.argv[2]))
"""


@pytest.mark.parametrize("code", [0, 3])
def test_end_process_flushes_runs_atexit_and_skips_the_teardown(tmp_path, code):
    """entry.main ends every command by end_process: its output and exit code are the
    interpreter's own, its atexit handlers (logging's flush of --log-file) run, and the
    teardown that frees every object one by one does not."""
    proc = subprocess.run([sys.executable, "-c", EXIT_PROBE, "alone", str(code)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == code, proc.stderr
    assert proc.stdout == "result lineatexit ran\n"
    assert proc.stderr == "note\n"


def test_end_process_leaves_a_running_thread_to_the_interpreter(tmp_path):
    """A thread that is not a daemon still running: the interpreter's exit, which joins it
    (and tears down, as it always did)."""
    proc = subprocess.run([sys.executable, "-c", EXIT_PROBE, "thread", "4"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 4, proc.stderr
    assert proc.stdout.startswith("result line thread doneatexit ran\n")
    assert "torn down" in proc.stdout


def test_the_commands_annotations_are_objects_not_strings():
    """typer compiles and evaluates each string annotation whenever it builds the commands
    (over 200: a sixth of `--help`'s instructions); cli.py's are evaluated once, at
    import, as long as it does not use `from __future__ import annotations`."""
    from journalsync import cli

    commands = [cli.run, cli.status, cli.worker, cli.journals, cli.cleanup, cli.verify,
                cli.dev_server]
    annotations = [a for command in commands for a in command.__annotations__.values()]
    assert len(annotations) > 60
    assert not [a for a in annotations if isinstance(a, str)]


CLIENT_PROBE = """\
import os, sys
from pathlib import Path
import botocore
from journalsync.clients import ClientFactory
from journalsync.config import Config, Destination

data = os.path.join(os.path.dirname(botocore.__file__), "data")
listed = []
sys.addaudithook(lambda event, args: listed.append(str(args[0])) if event == "os.listdir" else None)
cfg = Config(source=Path("."), dest=Destination.parse("s3://bkt/p"), journal_path=Path("j"),
             endpoint_url="http://127.0.0.1:9")
factory = ClientFactory(cfg)
client = factory.get()
assert client.meta.service_model.service_name == "s3"
assert client.meta.endpoint_url == "http://127.0.0.1:9"
print(sorted({os.path.relpath(p, data) for p in listed if p.startswith(data)}))
"""


def test_the_s3_client_is_made_without_listing_every_service_botocore_knows(tmp_path):
    """botocore checks a service's name against a listing of its data directory (400-odd
    services, two listings of each: 10-20 ms of CPU, most of it system time, in every run);
    the run's clients are S3's alone, so only S3's directory is read."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "AWS_ACCESS_KEY_ID": "x",
           "AWS_SECRET_ACCESS_KEY": "y", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}
    proc = subprocess.run([sys.executable, "-c", CLIENT_PROBE], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    listed = eval(proc.stdout.strip().splitlines()[-1])  # noqa: S307 - our probe's own list
    assert listed and set(listed) <= {"s3", os.path.join("s3", "2006-03-01")}, listed
