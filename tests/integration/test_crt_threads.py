"""What runs on the CRT's own threads: credentials for signing, and the Python state of the
thread that calls back into Python. Against a real server, through CrtS3 itself."""

from __future__ import annotations

import hashlib
import io
import threading
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from botocore.credentials import Credentials, RefreshableCredentials

from journalsync import crt as crt_module
from journalsync.crt import CrtS3
from journalsync.integrity import of_md5


def _client(s3, credentials) -> tuple[CrtS3, str]:
    bucket = f"jst-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(bucket)
    crt = CrtS3.create(s3.client(), bucket, "us-east-1", credentials, 4,
                       timeout=30, connect_timeout=10)
    assert crt is not None
    return crt, bucket


def _put(crt: CrtS3, key: str, data: bytes) -> str:
    return crt.put({"Key": key}, data, of_md5(hashlib.md5(data).digest()))


class CountingCredentials(Credentials):
    asked = 0

    def get_frozen_credentials(self):
        type(self).asked += 1
        return super().get_frozen_credentials()


@pytest.mark.one_server
def test_static_keys_are_handed_to_the_crt_once(s3):
    """Keys that cannot change are given to the CRT once, not asked of Python at each
    signing (a GIL handover on the CRT's event-loop thread per request)."""
    CountingCredentials.asked = 0
    crt, bucket = _client(s3, CountingCredentials(s3.access_key, s3.secret_key))
    for i in range(5):
        _put(crt, f"k{i}", b"x" * i)
    assert CountingCredentials.asked == 1
    assert len(s3.client().list_objects_v2(Bucket=bucket)["Contents"]) == 5


@pytest.mark.one_server
def test_refreshable_credentials_are_refreshed_as_they_near_expiry(s3):
    """Assumed-role, SSO and instance credentials are asked of botocore at every signing,
    so they are refreshed mid-run: here each is near expiry, and every PUT refreshes."""
    refreshed = []

    def refresh():
        refreshed.append(1)
        return {"access_key": s3.access_key, "secret_key": s3.secret_key, "token": None,
                "expiry_time": (datetime.now(timezone.utc) + timedelta(minutes=1)).isoformat()}

    credentials = RefreshableCredentials.create_from_metadata(refresh(), refresh, "test")
    refreshed.clear()
    crt, bucket = _client(s3, credentials)
    for i in range(3):
        _put(crt, f"k{i}", b"y" * i)
    assert len(refreshed) >= 3  # within the 15-minute window botocore refreshes at each ask
    assert len(s3.client().list_objects_v2(Bucket=bucket)["Contents"]) == 3


class Body(io.BytesIO):
    """A request body that records, on the CRT thread that reads it, whether that thread
    still holds the Python state an earlier callback pinned there."""

    def __init__(self, data: bytes, seen: list):
        super().__init__(data)
        self.seen = seen

    def readinto1(self, buffer):
        self.seen.append((threading.get_ident(), getattr(crt_module._pinned, "held", False)))
        return super().readinto1(buffer)


@pytest.mark.one_server
def test_a_crt_thread_keeps_its_python_state_between_callbacks(s3):
    """A thread Python did not start loses its thread state, and every thread-local with it,
    at each return from a callback unless it is kept: an mmap and an munmap (with a TLB
    flush on the other core) several times per request. After the first answer's headers
    the reading thread's state survives: its thread-local is still set when it reads the
    next bodies."""
    crt, bucket = _client(s3, Credentials(s3.access_key, s3.secret_key))
    _put(crt, "first", b"first")
    seen: list = []
    for i in range(4):
        data = f"body {i}".encode()
        headers = [("Content-Length", str(len(data))), of_md5(hashlib.md5(data).digest()).header]
        crt._send("PUT", crt._path_prefix + f"k{i}", headers, Body(data, seen), "PutObject", 30)
    assert seen and all(ident != threading.get_ident() for ident, _ in seen)
    assert all(held for _, held in seen), seen
    assert len(s3.client().list_objects_v2(Bucket=bucket)["Contents"]) == 5
