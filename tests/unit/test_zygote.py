"""The test zygote (tests/support/zygote.py) gives a test what `python -m journalsync` would:
the same output, exit codes, signals, environment and directory; and it steps aside where
the interpreter's start would differ."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.support import zygote

pytestmark = pytest.mark.skipif(not zygote.enabled(dict(os.environ)),
                                reason="JOURNALSYNC_TEST_EXEC=1: no zygote")


def _exec(args: list[str], env: dict) -> tuple[int, str, str]:
    proc = subprocess.run([sys.executable, "-m", "journalsync", *args], env=env,
                          capture_output=True, text=True, timeout=60)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.mark.parametrize("args", [["--version"], ["status", "/nonexistent/src", "s3://b/p"],
                                  ["run", "/nonexistent/src", "s3://b/p"], ["no-such-command"]])
def test_a_forked_cli_answers_as_an_execd_one(args, tmp_path):
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state"),
           "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}
    assert zygote.run(args, env, 60) == _exec(args, env)


def test_environment_and_directory_are_the_requests(tmp_path, monkeypatch):
    state = tmp_path / "elsewhere"
    env = {**os.environ, "XDG_STATE_HOME": str(state)}
    monkeypatch.chdir(tmp_path)
    (tmp_path / "src").mkdir()
    args = ["status", "src", "s3://bucket/p"]
    code, out, err = zygote.run(args, env, 60)
    assert (code, out, err) == _exec(args, env)
    assert code == 2 and str(state) in err, err  # XDG_STATE_HOME: the request's
    (tmp_path / "src").rmdir()
    gone = zygote.run(["run", "src", "s3://bucket/p"], env, 60)
    assert gone == _exec(["run", "src", "s3://bucket/p"], env)
    assert gone[0] == 2 and str(tmp_path / "src") in gone[2], gone  # cwd: the request's


def test_a_signal_reaches_the_child_alone_and_shows_as_popen_shows_it(tmp_path):
    import socket

    silent = socket.create_server(("127.0.0.1", 0))  # takes connections, never answers
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state"),
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{silent.getsockname()[1]}",
           "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y"}
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a").write_bytes(b"a")
    child = zygote.Child(["run", str(tmp_path / "src"), "s3://bucket/p"], env)
    time.sleep(0.5)
    assert child.poll() is None
    child.send_signal(signal.SIGKILL)
    assert child.wait(30) == -signal.SIGKILL
    silent.close()
    keep = zygote.Child(["--version"], env)
    assert keep.communicate(30)[0].startswith("journalsync")  # the zygote lives on


def test_an_interpreter_start_setting_is_not_forked():
    assert zygote.enabled(dict(os.environ))
    assert not zygote.enabled({**os.environ, "PYTHONPATH": "/tmp/hooks"})
    assert not zygote.enabled({**os.environ, "LC_ALL": "C" if os.environ.get("LC_ALL") != "C"
                               else "C.UTF-8"})


def test_an_earlier_childs_exit_under_a_reused_pid_is_not_the_new_ones():
    """pids come round again (pid_max is 32,768 here, and threads take pids too): a child
    must not be reported gone because an earlier one under its pid exited. Seen in CI: a
    test's run "exited 0" before it began."""
    import json
    import socket
    import threading

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    fake = zygote._Zygote.__new__(zygote._Zygote)  # its reader, fed by this test as zygote
    fake.sock, fake.cond, fake.replies, fake.exits = ours, threading.Condition(), {}, {}
    threading.Thread(target=fake._read, daemon=True).start()
    theirs.send(json.dumps({"exit": 4321, "status": 0}).encode())  # an earlier child
    theirs.send(json.dumps({"id": 1, "pid": 4321}).encode())  # a new one, same pid
    with fake.cond:
        assert fake.cond.wait_for(lambda: 1 in fake.replies, 10)
    assert fake.wait(4321, 0) is None  # still running
    theirs.send(json.dumps({"exit": 4321, "status": 9}).encode())  # SIGKILL
    assert fake.wait(4321, 10) == -9
    theirs.close()
