"""A warm parent for the CLI processes the tests start: `python -m journalsync` without the
interpreter's start-up and the imports, each time.

Measured on a no-op run of a 3-file tree: 0.63 CPU-s as `python -m journalsync`, 0.27 as a
fork of a process that has imported journalsync, SQLAlchemy and botocore already. The suite
starts about two thousand CLI processes, and they were most of its CPU: `make test` runs
on 2 cores and is bound by it.

Each child is still a process of its own, started for one command: its own pid (signals,
SIGKILL and SIGSTOP reach it and nothing else), its own stdin, stdout and stderr (pipes the
test made, handed over with SCM_RIGHTS), environment, arguments and working directory, and
an exit status as the interpreter would give it. What it skips is only what every run
repeats before cli.main: the interpreter's start and the imports, which
tests/unit/test_startup.py runs for real. JOURNALSYNC_TEST_EXEC=1 starts every CLI process
with `python -m journalsync` instead, and so does a test whose environment sets what the
interpreter reads at its start (`_AT_START`: a sitecustomize on PYTHONPATH, a locale).

The zygote runs one thread (it forks); it imports, never opens a journal or a client, and
reaps its children and reports their exit statuses on the socket the tests talk to it on.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

_WARM = ("journalsync.entry", "journalsync.cli", "journalsync.cliops", "journalsync.engine",
         "journalsync.journal.store", "journalsync.clients", "journalsync.report",
         "botocore.session", "sqlalchemy.dialects.sqlite")
_MAIN = str(Path(__file__).resolve().parents[2] / "journalsync" / "__main__.py")


# -- the zygote (a process of its own) -----------------------------------------------------

def _serve(sock: socket.socket) -> None:
    import importlib
    import selectors

    for name in _WARM:
        importlib.import_module(name)
    try:  # a PostgreSQL journal's driver, where it is installed
        importlib.import_module("psycopg")
        importlib.import_module("sqlalchemy.dialects.postgresql.psycopg")
    except ImportError:
        pass
    assert threading.active_count() == 1, threading.enumerate()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ)
    sel.register(wake_r, selectors.EVENT_READ)
    while True:
        for key, _ in sel.select():
            if key.fileobj is sock:
                try:
                    msg, fds, _, _ = socket.recv_fds(sock, 1 << 20, 3)
                except InterruptedError:
                    continue
                if not msg:
                    return  # the tests' process is gone
                request = json.loads(msg)
                pid = os.fork()
                if pid == 0:
                    _child(request, fds, sock, wake_r, wake_w)
                for fd in fds:
                    os.close(fd)
                sock.send(json.dumps({"id": request["id"], "pid": pid}).encode())
            else:
                os.read(wake_r, 4096)
                while True:
                    try:
                        pid, status = os.waitpid(-1, os.WNOHANG)
                    except ChildProcessError:
                        break
                    if pid == 0:
                        break
                    sock.send(json.dumps({"exit": pid, "status": status}).encode())


def _child(request: dict, fds: list[int], *inherited: socket.socket | int) -> None:
    """In the forked child: become `python -m journalsync ARGS` with the request's stdio,
    environment and directory, run it, and end as the interpreter would."""
    code = 70
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for thing in inherited:
            thing.close() if isinstance(thing, socket.socket) else os.close(thing)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        for fd in fds:
            if fd > 2:
                os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = [_MAIN, *request["args"]]
        if os.environ.get("PYTHONFAULTHANDLER"):
            import faulthandler

            faulthandler.enable()
        from journalsync.entry import main

        try:
            main()
            code = 0
        except SystemExit as exc:
            code = _exit_code(exc.code)
        except BaseException:  # noqa: BLE001 - as the interpreter: the traceback, exit 1
            import traceback

            traceback.print_exc()
            code = 1
        import atexit

        threading._shutdown()  # noqa: SLF001 - the interpreter's own steps at exit
        atexit._run_exitfuncs()  # noqa: SLF001
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                code = code or 120
    finally:
        os._exit(code)


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


# -- the tests' side --------------------------------------------------------------------------

class _Zygote:
    """This test process's zygote: started on first use, ended with the process."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "import socket, sys; from tests.support.zygote import _serve;"
             f" _serve(socket.socket(fileno={theirs.fileno()}))"],
            pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL,
            cwd=str(Path(__file__).resolve().parents[2]),
            env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1"})
        theirs.close()
        self.sock = ours
        self.lock = threading.Lock()
        self.next_id = 0
        self.replies: dict[int, list] = {}
        self.exits: dict[int, int] = {}
        self.cond = threading.Condition()
        threading.Thread(target=self._read, name="zygote", daemon=True).start()

    def _read(self) -> None:
        while msg := self.sock.recv(1 << 16):
            data = json.loads(msg)
            with self.cond:
                if "pid" in data:
                    # A pid comes round again in a long session: an earlier child's exit
                    # under it is not this one's.
                    self.exits.pop(data["pid"], None)
                    self.replies[data["id"]] = [data["pid"]]
                else:
                    self.exits[data["exit"]] = os.waitstatus_to_exitcode(data["status"])
                self.cond.notify_all()
        with self.cond:
            self.dead = True
            self.cond.notify_all()

    dead = False

    def spawn(self, args: list[str], env: dict, fds: list[int]) -> int:
        with self.lock:
            self.next_id += 1
            ident = self.next_id
            socket.send_fds(self.sock, [json.dumps(
                {"id": ident, "args": args, "env": env, "cwd": os.getcwd()}).encode()], fds)
        with self.cond:
            if not self.cond.wait_for(lambda: ident in self.replies or self.dead, 60):
                raise RuntimeError("the test zygote did not answer")
            if self.dead:
                raise RuntimeError(f"the test zygote ended ({self.proc.poll()})")
            return self.replies.pop(ident)[0]

    def wait(self, pid: int, timeout: float | None) -> int | None:
        with self.cond:
            self.cond.wait_for(lambda: pid in self.exits or self.dead, timeout)
            if pid in self.exits:
                return self.exits.pop(pid)
            if self.dead:
                raise RuntimeError(f"the test zygote ended ({self.proc.poll()})")
            return None


_zygote: _Zygote | None = None
_zygote_lock = threading.Lock()


def _get() -> _Zygote:
    global _zygote
    with _zygote_lock:
        if _zygote is None or _zygote.dead:
            _zygote = _Zygote()
        return _zygote


# What the interpreter reads as it starts, which a fork cannot take from a request: where
# one differs from the zygote's (a test's sitecustomize on PYTHONPATH, a locale), the CLI
# is exec'd as usual. PYTHONFAULTHANDLER is applied in the child; PYTHONUNBUFFERED is the
# zygote's own.
_AT_START = ("PYTHONPATH", "PYTHONSTARTUP", "PYTHONHOME", "PYTHONHASHSEED", "PYTHONIOENCODING",
             "PYTHONUTF8", "PYTHONWARNINGS", "PYTHONMALLOC", "PYTHONSAFEPATH", "PYTHONNODEBUGRANGES",
             "PYTHONDEVMODE", "PYTHONOPTIMIZE", "LANG", "LC_ALL", "LC_CTYPE")


def enabled(env: dict[str, str]) -> bool:
    """Whether a CLI process with environment `env` may be forked by the zygote."""
    if os.environ.get("JOURNALSYNC_TEST_EXEC"):
        return False
    return all(env.get(name) == os.environ.get(name) for name in _AT_START)


class Child:
    """What the tests use of subprocess.Popen, for a CLI process forked by the zygote: pid,
    args, stdout and stderr (text pipes), poll, wait, communicate, send_signal, terminate,
    kill and returncode (negative: the signal that ended it)."""

    def __init__(self, args: list[str], env: dict, capture: bool = True) -> None:
        self.args = [sys.executable, "-m", "journalsync", *args]
        self.returncode: int | None = None
        self._zygote = _get()
        stdin = os.open(os.devnull, os.O_RDONLY)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            self.pid = self._zygote.spawn(args, env, [stdin, out_w, err_w])
        finally:
            for fd in (stdin, out_w, err_w):
                os.close(fd)
        self.stdout = open(out_r, encoding="utf-8", errors="strict")  # noqa: SIM115
        self.stderr = open(err_r, encoding="utf-8", errors="strict")  # noqa: SIM115

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self._zygote.wait(self.pid, 0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            code = self._zygote.wait(self.pid, timeout)
            if code is None:
                raise subprocess.TimeoutExpired(self.args, timeout)
            self.returncode = code
        return self.returncode

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        got: dict[str, str] = {}

        def drain(name: str, stream) -> None:
            try:
                got[name] = stream.read()
            except (OSError, ValueError):
                got[name] = ""

        readers = [threading.Thread(target=drain, args=(n, s), daemon=True)
                   for n, s in (("out", self.stdout), ("err", self.stderr))]
        for reader in readers:
            reader.start()
        self.wait(timeout)
        for reader in readers:
            reader.join(timeout if timeout is None else max(timeout, 10))
        for stream in (self.stdout, self.stderr):
            try:
                stream.close()
            except OSError:
                pass
        return got.get("out", ""), got.get("err", "")

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc) -> None:
        for stream in (self.stdout, self.stderr):
            stream.close()
        self.wait()


def run(args: list[str], env: dict, timeout: float) -> tuple[int, str, str]:
    """As subprocess.run(capture_output=True, text=True, timeout=...): (code, out, err)."""
    child = Child(args, env)
    try:
        out, err = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        child.communicate()
        raise
    return child.returncode, out, err
