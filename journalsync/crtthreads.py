"""What runs on the AWS Common Runtime's own threads when they call into Python (crt.py):
they keep their Python thread state, and keys that cannot change are handed over once
instead of asked of Python at every signing."""

from __future__ import annotations

import io
import threading


def prepare() -> None:
    """Look up PyGILState_Ensure on a Python thread, before any CRT thread needs it (an
    import inside a CRT callback could run during the interpreter's shutdown)."""
    global _ensure
    import ctypes

    _ensure = ctypes.pythonapi.PyGILState_Ensure


_pinned = threading.local()
_ensure = None  # ctypes.pythonapi.PyGILState_Ensure, looked up by prepare()


def keep_thread_state() -> None:
    """Called on a CRT thread (from a callback): keep its Python thread state for the
    thread's life. A thread that Python did not start gets a new thread state at each entry
    into Python and loses it at each exit, unless it holds one more reference: on 5,000
    small PUTs that was about 5 creations per request (body read, headers, done), each an
    mmap of 16 KiB for its frame stack and an munmap that interrupts the other core to
    flush its TLB. One PyGILState_Ensure never released is that reference; the GIL itself
    is still taken and released by each callback as before. Three CRT threads call in: the
    one reading bodies (Body), the one giving headers, the one finishing requests."""
    if getattr(_pinned, "held", False):
        return
    _ensure()
    _pinned.held = True


def on_done(**_kwargs) -> None:
    keep_thread_state()  # the thread that finishes requests (and sets their futures)


class Body(io.BytesIO):
    """A request body in memory, read by a CRT thread that keeps its Python state."""

    def readinto1(self, buffer) -> int:
        keep_thread_state()
        return super().readinto1(buffer)


def credentials_provider(auth, credentials):
    """The CRT's source of credentials for signing. Keys that never change (environment,
    config file, static profile) are handed over once; refreshable ones (assumed roles, SSO,
    instance metadata) are asked of botocore at every signing, which refreshes them as they
    near expiry. That ask runs Python on the CRT's event-loop thread, which must first take
    the GIL from the workers: on 5,000 small PUTs it was a thread switch per request."""
    from botocore.credentials import RefreshableCredentials

    if not isinstance(credentials, RefreshableCredentials):
        frozen = credentials.get_frozen_credentials()
        return auth.AwsCredentialsProvider.new_static(frozen.access_key, frozen.secret_key,
                                                      frozen.token)

    def current():
        frozen = credentials.get_frozen_credentials()
        return auth.AwsCredentials(frozen.access_key, frozen.secret_key, frozen.token)

    return auth.AwsCredentialsProvider.new_delegate(current)
