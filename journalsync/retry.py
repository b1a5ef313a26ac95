"""The one place that decides whether an error is worth retrying, fatal, or per-item.

botocore is configured with a single attempt (see clients.py): tenacity is the only retry
layer, so the two never multiply into a storm of 5 x 5 attempts against a struggling store.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
    SSLError,
)
from tenacity import Retrying, retry_if_exception, stop_after_attempt, stop_after_delay, wait_random_exponential

T = TypeVar("T")

RETRYABLE_CODES = frozenset({
    "SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded",
    "InternalError", "ServiceUnavailable", "RequestTimeout", "RequestTimeoutException",
    "BadDigest",  # the body we sent arrived damaged: resend the same bytes
})
RETRYABLE_STATUS = frozenset({500, 502, 503, 504})

FATAL_CODES = {
    "AccessDenied": "access denied",
    "AllAccessDisabled": "access to the bucket is disabled",
    "InvalidAccessKeyId": "the access key id is not known to this endpoint",
    "SignatureDoesNotMatch": "the secret key does not match the access key id",
    "NoSuchBucket": "the bucket does not exist",
    "InvalidBucketName": "the bucket name is not valid",
    "RequestTimeTooSkewed": "this machine's clock differs too much from the server's",
    "ExpiredToken": "the session token has expired",
    "InvalidToken": "the session token is not valid",
    "AuthorizationHeaderMalformed": "the region or credentials do not fit this endpoint",
    "PermanentRedirect": "the bucket is in another region (set --region)",
}


def error_code(exc: BaseException) -> str | None:
    if isinstance(exc, ClientError):
        return exc.response.get("Error", {}).get("Code")
    return None


def http_status(exc: BaseException) -> int | None:
    if isinstance(exc, ClientError):
        return exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return None


def is_retryable(exc: BaseException) -> bool:
    """Throttling, server errors, timeouts and dropped connections: yes. Everything else: no."""
    if isinstance(exc, ClientError):
        return error_code(exc) in RETRYABLE_CODES or http_status(exc) in RETRYABLE_STATUS
    if isinstance(exc, SSLError):
        return False  # a certificate problem does not heal by itself
    return isinstance(exc, (EndpointConnectionError, ConnectionClosedError, ReadTimeoutError,
                            ConnectTimeoutError, ConnectionError, TimeoutError)) or (
        isinstance(exc, BotoCoreError) and "Connection" in type(exc).__name__)


def fatal_reason(exc: BaseException) -> str | None:
    """A one-line reason when the error dooms the whole run (credentials, bucket, clock)."""
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return "no usable credentials found (environment, profile or instance role)"
    if isinstance(exc, SSLError):
        return f"TLS error talking to the endpoint: {exc}"
    code = error_code(exc)
    if code in FATAL_CODES:
        return f"{FATAL_CODES[code]} ({code})"
    if code in ("403", "Forbidden"):
        return "access denied (403)"
    return None


def describe(exc: BaseException) -> str:
    """A short, single-line description of an error for the journal and the log."""
    code = error_code(exc)
    if code:
        message = exc.response.get("Error", {}).get("Message") or ""
        return f"{code}: {message}".strip(": ").replace("\n", " ")
    return f"{type(exc).__name__}: {exc}".replace("\n", " ")


class Attempts:
    """Counts the attempts a call took, so the journal can show them."""

    def __init__(self) -> None:
        self.count = 0


def call_with_retry(fn: Callable[[], T], *, attempts: int, timeout: float,
                    counter: Attempts | None = None) -> T:
    """Run fn, retrying retryable errors with full-jitter exponential backoff, bounded by
    both an attempt count and a total time."""
    retrying = Retrying(
        retry=retry_if_exception(is_retryable),
        stop=stop_after_attempt(attempts) | stop_after_delay(timeout),
        wait=wait_random_exponential(multiplier=0.25, max=20),
        reraise=True,
    )
    for attempt in retrying:
        with attempt:
            if counter is not None:
                counter.count += 1
            return fn()
    raise AssertionError("unreachable")  # pragma: no cover
