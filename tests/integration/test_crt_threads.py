"""What runs on the CRT's own threads: credentials for signing, and the Python state of the
thread that calls back into Python. Against a real server, through CrtS3 itself."""

from __future__ import annotations

import hashlib
import sys
import threading
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from botocore.credentials import Credentials, RefreshableCredentials

from journalsync import crtthreads
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


@pytest.mark.one_server
def test_a_crt_thread_keeps_its_python_state_between_callbacks(s3, monkeypatch):
    """A thread Python did not start loses its thread state, and every thread-local with it,
    at each return from a callback unless it is kept: an mmap and an munmap (with a TLB
    flush on the other core) several times per request. Every way the CRT calls in (the
    body read, the headers, the finish) keeps it, on the CRT's threads only; and once a
    thread has kept it, its thread-local is still set at its next callback."""
    calls: list = []
    keep = crtthreads.keep_thread_state

    def recording():
        calls.append((sys._getframe(1).f_code.co_name, threading.get_ident(),
                      getattr(crtthreads._pinned, "held", False)))
        keep()

    monkeypatch.setattr(crtthreads, "keep_thread_state", recording)
    crt, bucket = _client(s3, Credentials(s3.access_key, s3.secret_key))
    for i in range(6):
        _put(crt, f"k{i}", f"body {i}".encode())
    assert {name for name, _, _ in calls} == {"readinto1", "on_headers", "on_done"}
    assert threading.get_ident() not in {ident for _, ident, _ in calls}
    first_seen: set = set()
    for _, ident, held in calls:
        # kept from its first callback on (or from an earlier client's: the CRT's threads
        # are shared by every client in a process)
        assert held or ident not in first_seen, calls
        first_seen.add(ident)
    assert len(s3.client().list_objects_v2(Bucket=bucket)["Contents"]) == 6
