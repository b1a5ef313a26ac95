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
import selectors
import subprocess
import sys
import threading
import time
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
    # Children that have not ended, as far as the tests were told. One that ends is reported
    # but left a zombie (waitid WNOWAIT) until the tests have its status and say "reap", as
    # a Popen's child is until its wait(): till then its pid is not given to another
    # process, so a signal the tests send it cannot reach a stranger, and a later child
    # cannot get its pid (pid_max is 32768 on many machines: a suite wraps it).
    live: set[int] = set()
    detached: set[int] = set()  # children no test will wait for: reaped as they end
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
                if "reap" in request or "detach" in request:
                    pid = request.get("reap", request.get("detach"))
                    if pid in live:  # detached, not ended yet
                        detached.add(pid)
                        continue
                    try:
                        os.waitpid(pid, 0)  # ended and reported: a zombie till now
                    except ChildProcessError:
                        pass
                    continue
                pid = os.fork()
                if pid == 0:
                    _child(request, fds, sock, wake_r, wake_w, sel)
                live.add(pid)
                for fd in fds:
                    os.close(fd)
                sock.send(json.dumps({"id": request["id"], "pid": pid}).encode())
            else:
                os.read(wake_r, 4096)
                for pid in sorted(live):
                    try:
                        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
                    except ChildProcessError:
                        info = None
                        live.discard(pid)
                    if info is None:
                        continue
                    live.discard(pid)
                    if pid in detached:
                        detached.discard(pid)
                        os.waitpid(pid, 0)
                        continue
                    # as a wait status (waitpid's), which the tests' side decodes
                    status = info.si_status << 8 if info.si_code == os.CLD_EXITED else \
                        info.si_status | (0x80 if info.si_code == os.CLD_DUMPED else 0)
                    sock.send(json.dumps({"exit": pid, "status": status}).encode())


def _child(request: dict, fds: list[int], *inherited) -> None:
    """In the forked child: become `python -m journalsync ARGS` with the request's stdio,
    environment and directory, run it, and end as the interpreter would."""
    code = 70
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for thing in inherited:  # the zygote's socket, wake-up pipe and selector
            thing.close() if hasattr(thing, "close") else os.close(thing)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        for fd in fds:
            if fd > 2:
                os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        import time

        time.tzset()  # TZ: the interpreter reads it as it starts; this child starts now
        sys.argv = [_MAIN, *request["args"]]
        import faulthandler  # the zygote's own is on (PYTHONFAULTHANDLER): the request's

        if os.environ.get("PYTHONFAULTHANDLER"):
            faulthandler.enable()
        else:
            faulthandler.disable()
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
        self.env = _start_env()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "import socket, sys; from tests.support.zygote import _serve;"
             f" _serve(socket.socket(fileno={theirs.fileno()}))"],
            pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL,
            cwd=str(Path(__file__).resolve().parents[2]), env=self.env)
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
                    # A pid given again (its former child reaped): not that one's exit.
                    self.exits.pop(data["pid"], None)
                    self.replies[data["id"]] = [data["pid"]]
                else:
                    self.exits[data["exit"]] = os.waitstatus_to_exitcode(data["status"])
                self.cond.notify_all()
        with self.cond:
            self.dead = True
            self.cond.notify_all()

    dead = False

    def _send(self, request: dict, fds: list[int] = ()) -> None:
        with self.lock:
            socket.send_fds(self.sock, [json.dumps(request).encode()], list(fds))

    def spawn(self, args: list[str], env: dict, fds: list[int]) -> int:
        while _unwaited:  # Children dropped without a wait (a test that failed): as Popen's
            self._send({"detach": _unwaited.pop()})
        with self.lock:
            self.next_id += 1
            ident = self.next_id
        self._send({"id": ident, "args": args, "env": env, "cwd": os.getcwd()}, fds)
        with self.cond:
            if not self.cond.wait_for(lambda: ident in self.replies or self.dead, 60):
                raise RuntimeError("the test zygote did not answer")
            if self.dead:
                raise RuntimeError(f"the test zygote ended ({self.proc.poll()})")
            return self.replies.pop(ident)[0]

    def wait(self, pid: int, timeout: float | None) -> int | None:
        """The exit code of child `pid` once it has ended (None: not within `timeout`)."""
        with self.cond:
            self.cond.wait_for(lambda: pid in self.exits or self.dead, timeout)
            code = self.exits.get(pid)
            if code is None and self.dead:
                raise RuntimeError(f"the test zygote ended ({self.proc.poll()})")
            return code

    def reap(self, pid: int) -> None:
        """The tests have child `pid`'s status: the zygote reaps it (its pid may then be
        anyone's). Once per child."""
        try:
            self._send({"reap": pid})
        except OSError:
            pass  # the zygote is gone: init reaps its children


_zygote: _Zygote | None = None
_zygote_lock = threading.Lock()
_unwaited: list[int] = []  # pids of Children collected before their status was read


def _start_env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1"}


def _get() -> _Zygote:
    global _zygote
    with _zygote_lock:
        if _zygote is None or _zygote.dead:
            _zygote = _Zygote()
        return _zygote


# What the interpreter reads as it starts, which a fork cannot take from a request: where
# one differs from the zygote's (a test's sitecustomize on PYTHONPATH, a locale), the CLI
# is exec'd as usual. PYTHONFAULTHANDLER and TZ are applied in the child.
_AT_START = ("PYTHONPATH", "PYTHONSTARTUP", "PYTHONHOME", "PYTHONHASHSEED", "PYTHONIOENCODING",
             "PYTHONUTF8", "PYTHONWARNINGS", "PYTHONMALLOC", "PYTHONSAFEPATH", "PYTHONNODEBUGRANGES",
             "PYTHONDEVMODE", "PYTHONOPTIMIZE", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE",
             "LANG", "LC_ALL", "LC_CTYPE",
             # read by modules as the zygote imports them (botocore.compat, typer, psycopg)
             "BOTO_DISABLE_CRT", "TYPER_USE_RICH", "TERMINAL_WIDTH", "FORCE_COLOR", "PY_COLORS",
             "GITHUB_ACTIONS", "_TYPER_FORCE_DISABLE_TERMINAL", "PSYCOPG_IMPL")


def enabled(env: dict[str, str]) -> bool:
    """Whether a CLI process with environment `env` may be forked by the zygote."""
    if os.environ.get("JOURNALSYNC_TEST_EXEC"):
        return False
    with _zygote_lock:  # the zygote's own start, else what one started now would have
        start = _zygote.env if _zygote is not None and not _zygote.dead else _start_env()
    return all(env.get(name) == start.get(name) for name in _AT_START)


class Child:
    """What the tests use of subprocess.Popen, for a CLI process forked by the zygote: pid,
    args, stdout and stderr (text pipes), poll, wait, communicate, send_signal, terminate,
    kill and returncode (negative: the signal that ended it)."""

    def __init__(self, args: list[str], env: dict) -> None:
        self.args = [sys.executable, "-m", "journalsync", *args]
        self.returncode: int | None = None
        self._lock = threading.Lock()
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
        self._got: tuple[list[bytes], list[bytes]] = ([], [])  # communicate's so far

    def _ended(self, code: int) -> int:
        with self._lock:
            if self.returncode is None:
                self.returncode = code
                self._zygote.reap(self.pid)
        return self.returncode

    def poll(self) -> int | None:
        if self.returncode is None:
            code = self._zygote.wait(self.pid, 0)
            if code is not None:
                self._ended(code)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            code = self._zygote.wait(self.pid, timeout)
            if code is None:
                raise subprocess.TimeoutExpired(self.args, timeout)
            self._ended(code)
        return self.returncode

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        """As Popen.communicate: both pipes read to their end and the child waited for,
        within `timeout` in all, else TimeoutExpired (what was read is kept for the next
        call); the pipes are closed at their end; text decoded as Popen's (universal
        newlines)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            for stream, got in ((self.stdout, self._got[0]), (self.stderr, self._got[1])):
                if not stream.closed:
                    sel.register(stream, selectors.EVENT_READ, got)
            while sel.get_map():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise subprocess.TimeoutExpired(self.args, timeout)
                for key, _ in sel.select(left):
                    data = os.read(key.fd, 1 << 15)
                    if data:
                        key.data.append(data)
                    else:
                        sel.unregister(key.fileobj)
                        key.fileobj.close()
        # Both pipes ended: the child has as a rule, and its status is a message away (a
        # second at most, not `timeout`'s rest, which may be nothing by now).
        self.wait(None if deadline is None else max(1.0, deadline - time.monotonic()))
        return tuple(b"".join(got).decode("utf-8", "strict").replace("\r\n", "\n")
                     .replace("\r", "\n") for got in self._got)

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

    def __del__(self) -> None:
        # Not reaped (no status read): the zygote reaps it once it ends. Told at the next
        # spawn, not from here: a collection may run while this thread sends to the zygote.
        if getattr(self, "returncode", 0) is None and getattr(self, "_zygote", None) is _zygote:
            _unwaited.append(self.pid)

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc) -> None:
        for stream in (self.stdout, self.stderr):
            stream.close()
        self.wait()


def run(args: list[str], env: dict, timeout: float) -> tuple[int, str, str]:
    """As subprocess.run(capture_output=True, text=True, timeout=...): (code, out, err).
    On a timeout the child is killed and waited for (not its pipes: a process it started
    may hold them), and TimeoutExpired raised."""
    with Child(args, env) as child:
        try:
            out, err = child.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
            raise
        return child.returncode, out, err
