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


def _hanging(tmp_path) -> tuple[list[str], dict, object]:
    """A `run` that waits for a store that never answers: a child that stays until killed."""
    import socket

    silent = socket.create_server(("127.0.0.1", 0))  # takes connections, never answers
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state"),
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{silent.getsockname()[1]}",
           "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y"}
    (tmp_path / "src").mkdir(exist_ok=True)
    (tmp_path / "src" / "a").write_bytes(b"a")
    return ["run", str(tmp_path / "src"), "s3://bucket/p"], env, silent


def test_a_child_given_an_earlier_childs_pid_has_a_status_of_its_own(tmp_path):
    """pid_max is 32768 on many machines (this one), and a suite's processes and threads
    wrap it: a new child can be given the pid of one that ended before it. The zygote
    reaped its children at once and the tests kept every exit by pid, so such a child
    read as ended, with the other's status, while it ran (a kill then skipped it)."""
    from pathlib import Path

    last_pid = Path("/proc/sys/kernel/ns_last_pid")
    if not os.access(last_pid, os.W_OK):
        pytest.skip("cannot choose the next pid here (/proc/sys/kernel/ns_last_pid)")
    args, env, silent = _hanging(tmp_path)
    first = zygote.Child(["--version"], env)
    first.communicate(60)
    assert first.returncode == 0
    for _ in range(50):
        last_pid.write_text(str(first.pid - 1))
        child = zygote.Child(args, env)
        if child.pid == first.pid:
            break
        child.kill()
        child.communicate(60)
    else:
        pytest.skip("another process took the pid each time")
    try:
        assert child.poll() is None  # running, not the earlier child's exit 0
        child.send_signal(signal.SIGKILL)
        assert child.wait(30) == -signal.SIGKILL
    finally:
        child.kill()
        child.communicate(60)
        silent.close()


def test_communicate_while_another_process_holds_the_pipes_times_out_as_popens(tmp_path):
    """A process the CLI left behind holding its stdout and stderr (a helper it started)
    keeps the pipes open after the CLI ends: Popen.communicate(timeout) raises
    TimeoutExpired. The zygote's Child returned empty output after 10 s more, or hung
    while closing a pipe a reader thread was still blocked on."""
    args, env, silent = _hanging(tmp_path)
    child = zygote.Child(args, env)
    holder = None
    try:
        # A stand-in for the CLI's own helper: a process with the child's very pipes (once
        # the child has them: it takes them as it starts).
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(
                os.stat(f"/proc/{child.pid}/fd/{fd}").st_ino != os.fstat(ours.fileno()).st_ino
                for fd, ours in ((1, child.stdout), (2, child.stderr))):
            time.sleep(0.05)
        holder = subprocess.Popen(["sleep", "60"], stdout=open(f"/proc/{child.pid}/fd/1", "wb"),
                                  stderr=open(f"/proc/{child.pid}/fd/2", "wb"))
        child.kill()
        assert child.wait(30) == -signal.SIGKILL
        started = time.monotonic()
        with pytest.raises(subprocess.TimeoutExpired):
            child.communicate(timeout=2)
        assert time.monotonic() - started < 30  # not the holder's 60 s
    finally:
        if holder is not None:
            holder.kill()
            holder.wait()
        child.communicate(60)
        silent.close()


def test_the_requests_time_zone_is_the_childs(tmp_path):
    """TZ is read as the interpreter starts (time.tzset): a child takes the request's, as
    an exec'd CLI would, not the zygote's (`journals` shows a run's start in local time)."""
    from journalsync.journal import Journal

    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state"), "TZ": "Asia/Kathmandu"}
    if os.environ.get("TZ") == env["TZ"]:
        env["TZ"] = "America/St_Johns"
    (tmp_path / "state" / "journalsync").mkdir(parents=True)
    with Journal(tmp_path / "state" / "journalsync" / "j.sqlite") as journal:
        journal.start_run("/src", "s3://b/p", None, False)
    assert zygote.enabled(env)
    forked = zygote.run(["journals"], env, 60)
    assert "run 1, " in forked[1], forked
    assert forked == _exec(["journals"], env)


def test_no_fault_handler_unless_the_request_sets_one(tmp_path):
    """The zygote runs with PYTHONFAULTHANDLER=1; a child whose environment has none must
    not print Python's fatal-error traceback on SIGABRT, as an exec'd one would not."""
    args, env, silent = _hanging(tmp_path)
    env.pop("PYTHONFAULTHANDLER", None)
    child = zygote.Child(args, env)
    try:
        silent.settimeout(60)
        silent.accept()[0].close()  # well into its run: it asks the store
        child.send_signal(signal.SIGABRT)
        err = child.communicate(60)[1]
        assert child.returncode == -signal.SIGABRT
        assert "Fatal Python error" not in err, err
    finally:
        child.kill()
        silent.close()


def test_a_setting_read_at_import_is_compared_with_the_zygotes_own(monkeypatch):
    """The zygote takes the environment of the test that first needs it, and its imports
    read some of it once (botocore: BOTO_DISABLE_CRT; typer: TYPER_USE_RICH...): a later
    request without that setting must be exec'd, not forked with it."""
    monkeypatch.setattr(zygote, "_zygote", None)
    monkeypatch.setenv("BOTO_DISABLE_CRT", "true")
    own = zygote._get()
    try:
        monkeypatch.delenv("BOTO_DISABLE_CRT")
        assert not zygote.enabled(dict(os.environ))
        assert zygote.enabled({**os.environ, "BOTO_DISABLE_CRT": "true"})
    finally:
        import socket

        own.sock.shutdown(socket.SHUT_RDWR)
        own.proc.wait(30)


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


def test_a_child_dropped_without_a_wait_does_not_stay_a_zombie(tmp_path):
    """A Child the test never waited for (it failed first) is reaped by the zygote once it
    ends, as a dropped Popen's is: the zygote keeps the others as zombies till their
    status is read, and a session must not pile them up."""
    import gc

    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    child = zygote.Child(["--version"], env)
    pid = child.pid
    child.stdout.close()
    child.stderr.close()
    del child
    gc.collect()
    zygote.run(["--version"], env, 60)  # the next spawn tells the zygote
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}") and \
            "Z" in open(f"/proc/{pid}/stat").read().split(")")[-1].split()[0]:
        time.sleep(0.1)
    assert not os.path.exists(f"/proc/{pid}") or "Z" not in \
        open(f"/proc/{pid}/stat").read().split(")")[-1].split()[0]
