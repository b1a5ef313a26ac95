"""Helpers for the in-process S3 unit tests (deleter, multipart): moto's threaded server
from tests/conftest.py's `s3` fixture (pinned to moto: in this process, seconds per test),
optionally behind the recording fault proxy, and a ClientFactory wired to it the way a
run wires one: credentials from the environment, botocore only unless a test asks
for awscrt."""

from __future__ import annotations

from pathlib import Path

from botocore.exceptions import ClientError

from journalsync.clients import ClientFactory
from journalsync.config import Config, Destination


def use_server_env(monkeypatch, tmp_path: Path, server) -> None:
    """The environment a run would see: the server's keys, no developer config."""
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_PROFILE", raising=False)


def make_config(endpoint_url: str, bucket: str, tmp_path: Path, **kw) -> Config:
    kw.setdefault("provider", "other")
    kw.setdefault("retry_attempts", 1)  # a fault is seen once, not retried into a pass
    kw.setdefault("crt", False)
    return Config(tmp_path / "src", Destination.parse(f"s3://{bucket}/pre"),
                  tmp_path / "j.sqlite", endpoint_url=endpoint_url, **kw)


def keys(client, bucket: str) -> list[str]:
    """Every key in the bucket, in order."""
    resp = client.list_objects_v2(Bucket=bucket)
    return [o["Key"] for o in resp.get("Contents", ())]


def code_of(exc: ClientError) -> str:
    return exc.response["Error"]["Code"]


__all__ = ["ClientFactory", "code_of", "keys", "make_config", "use_server_env"]
