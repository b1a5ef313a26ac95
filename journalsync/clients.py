"""boto3 clients: one session built in the main thread, one client per worker thread.

boto3 sessions are not thread-safe, so the session is made once and clients are created
from it under a lock; each thread then keeps its own client. Credentials come only from
boto3's standard chain (environment, shared profile, instance or container role); the
endpoint also from AWS_ENDPOINT_URL, which boto3 reads itself.
"""

from __future__ import annotations

import threading

import boto3
from botocore.config import Config as BotoConfig

from journalsync.config import Config


def boto_config(cfg: Config, pool_size: int) -> BotoConfig:
    s3_options = {}
    checksums = {}
    if cfg.endpoint_url:
        # S3-compatible stores: path-style addressing works everywhere (no wildcard DNS),
        # and boto3 >= 1.36's default CRC checksums are rejected by several of them, so
        # send checksums only when an operation requires one (we send Content-MD5 ourselves).
        s3_options = {"addressing_style": "path"}
        checksums = {"request_checksum_calculation": "when_required",
                     "response_checksum_validation": "when_required"}
    return BotoConfig(
        s3=s3_options,
        # One retry layer only: tenacity (retry.py) owns retries and their time budget.
        retries={"total_max_attempts": 1, "mode": "standard"},
        max_pool_connections=pool_size,
        connect_timeout=10,
        read_timeout=60,
        tcp_keepalive=True,
        user_agent_extra="journalsync",
        **checksums,
    )


class ClientFactory:
    """Hands each thread its own S3 client, all built from one session."""

    def __init__(self, cfg: Config, pool_size: int | None = None):
        self._session = boto3.session.Session(profile_name=cfg.profile, region_name=cfg.region)
        self._config = boto_config(cfg, pool_size or cfg.workers * 2 + 4)
        self._endpoint_url = cfg.endpoint_url
        self._region = cfg.region or self._session.region_name or "us-east-1"
        self._lock = threading.Lock()
        self._local = threading.local()

    def get(self):
        """This thread's client, created on first use."""
        client = getattr(self._local, "client", None)
        if client is None:
            with self._lock:
                client = self._session.client(
                    "s3", endpoint_url=self._endpoint_url, region_name=self._region,
                    config=self._config)
            self._local.client = client
        return client
