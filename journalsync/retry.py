"""The one place that decides whether an error is worth retrying, fatal, or per-item, and
the retry policy every request goes through.

botocore is configured with a single attempt (see clients.py): tenacity is the only retry
layer, so the two never multiply into a storm of 5 x 5 attempts against a struggling store.
Each request is retried with full-jitter exponential backoff, bounded by attempts and by a
total time (`--retry-timeout`). On top of that, throttling is shared: when any request
meets SlowDown, `SharedBackoff` halves how many requests all workers may have in flight,
then lets it grow back by one per round of successes (AIMD, as TCP does).

A dropped link is not throttling. Once the endpoint has answered in this run, a connection
failure (refused, reset, unreachable, timed out) is retried every LINK_RETRY_CAP seconds at
most, and without counting against the attempts (10, config.retry_attempts; no option sets
it), only --retry-timeout bounding it. The link is probed about once a second, so when it
comes back it is used within a second, not after an exponential backoff grown to 20 s
during the outage. It never touches the shared backoff either: in-flight requests stay at
full strength after an outage.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import socket
import threading
import time
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import urlsplit

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
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_any, wait_random_exponential

from journalsync.errors import ConfigError, FatalRemoteError, JournalsyncError

T = TypeVar("T")
log = logging.getLogger("journalsync.throttle")
retry_log = logging.getLogger("journalsync.retry")

# An endpoint that has not answered once in this run gets this long (seconds) before the
# run stops as misconfigured (a wrong port or host); after its first answer, a connection
# failure is a flaky link and gets the whole --retry-timeout.
UNREACHED_LIMIT = 15.0
# The longest wait between two tries of a request whose connection failed, once the
# endpoint has answered: how soon after a link comes back it is used again.
LINK_RETRY_CAP = 1.0

THROTTLE_CODES = frozenset({"SlowDown", "Throttling", "ThrottlingException",
                            "RequestLimitExceeded", "TooManyRequests", "TooManyRequestsException"})

RETRYABLE_CODES = frozenset({
    "SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded",
    "InternalError", "ServiceUnavailable", "RequestTimeout", "RequestTimeoutException",
    "BadDigest",  # the body we sent arrived damaged: resend the same bytes
})
RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})

FATAL_CODES = {
    "AccessDenied": "access denied",
    "AllAccessDisabled": "access to the bucket is disabled",
    "InvalidAccessKeyId": "the access key id is not known to this endpoint",
    "SignatureDoesNotMatch": "the secret key does not match the access key id",
    "NoSuchBucket": "the bucket does not exist",
    "InvalidBucketName": "the bucket name is not valid",
    "RequestTimeTooSkewed": "this machine's clock differs too much from the server's",
    "ExpiredToken": "the session token has expired; refresh the credentials and run again "
                    "with --resume",
    "InvalidToken": "the session token is not valid",
    "AuthorizationHeaderMalformed": "the region or credentials do not fit this endpoint",
    "PermanentRedirect": "the bucket is in another region (set --region)",
}

# The CRT's names for a TLS handshake that cannot succeed as configured: a certificate we
# cannot verify (s2n reports an unknown CA as NEGOTIATION_FAILURE), a name or date that does
# not fit, no trust store. Not READ/WRITE_FAILURE or NEGOTIATION_TIMEOUT: those are a link.
CRT_TLS_ERRORS = frozenset({
    "AWS_IO_TLS_ERROR_NEGOTIATION_FAILURE", "AWS_IO_TLS_ERROR_DEFAULT_TRUST_STORE_NOT_FOUND",
    "AWS_IO_TLS_BAD_CERTIFICATE", "AWS_IO_TLS_BAD_PEER_CERTIFICATE",
    "AWS_IO_TLS_CERTIFICATE_EXPIRED", "AWS_IO_TLS_CERTIFICATE_NOT_YET_VALID",
    "AWS_IO_TLS_PEER_CERTIFICATE_EXPIRED", "AWS_IO_TLS_PEER_CERTIFICATE_REVOKED",
    "AWS_IO_TLS_PEER_CERTIFICATE_UNKNOWN", "AWS_IO_TLS_HOST_NAME_MISMATCH",
    "AWS_IO_TLS_INVALID_CERTIFICATE_CHAIN", "AWS_IO_TLS_NO_ROOT_CERTIFICATE_FOUND",
    "AWS_IO_TLS_UNKNOWN_ROOT_CERTIFICATE", "AWS_IO_TLS_VERSION_UNSUPPORTED",
    "AWS_IO_TLS_CTX_ERROR",
})
TLS_HINT = "set AWS_CA_BUNDLE or the profile's ca_bundle to the CA file that signed its certificate"


def error_code(exc: BaseException) -> str | None:
    if isinstance(exc, ClientError):
        return exc.response.get("Error", {}).get("Code")
    return None


def http_status(exc: BaseException) -> int | None:
    if isinstance(exc, ClientError):
        return exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return None


def is_throttle(exc: BaseException) -> bool:
    """The store asks us to slow down."""
    return error_code(exc) in THROTTLE_CODES or http_status(exc) in (429, 503)


def is_retryable(exc: BaseException) -> bool:
    """Throttling, server errors, timeouts and dropped connections: yes. Everything else: no."""
    if isinstance(exc, ClientError):
        return error_code(exc) in RETRYABLE_CODES or http_status(exc) in RETRYABLE_STATUS
    if is_tls_failure(exc):
        return False  # a certificate problem does not heal by itself
    return isinstance(exc, (EndpointConnectionError, ConnectionClosedError, ReadTimeoutError,
                            ConnectTimeoutError, ConnectionError, TimeoutError)) or (
        isinstance(exc, BotoCoreError) and "Connection" in type(exc).__name__)


def is_unreachable(exc: BaseException) -> bool:
    """No HTTP answer at all: refused, reset, unresolved or timed-out connections."""
    return is_retryable(exc) and not isinstance(exc, ClientError)


def unreachable_reason(exc: BaseException) -> str:
    """`connection refused`, `name not resolved`, ...: the cause of a connection failure."""
    seen, cause = set(), exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, socket.gaierror):
            return "name not resolved"
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, ConnectionResetError):
            return "connection reset"
        if isinstance(cause, (ConnectTimeoutError, TimeoutError, ReadTimeoutError)):
            return "timed out"
        inner = getattr(cause, "kwargs", {}).get("error") if isinstance(cause, BotoCoreError) else None
        cause = inner or cause.__cause__ or cause.__context__
    if isinstance(exc, ConnectionClosedError):
        return "connection closed"
    return getattr(exc, "crt_error", "") or type(exc).__name__


def endpoint_of(exc: BaseException, default: str) -> str:
    """scheme://host:port of the endpoint a connection error names, else `default`."""
    url = getattr(exc, "kwargs", {}).get("endpoint_url") or getattr(exc, "endpoint", "")
    parts = urlsplit(str(url))
    return f"{parts.scheme}://{parts.netloc}" if parts.netloc else default


def _duration(seconds: float) -> str:
    """180 -> `3m`, 90 -> `90s`: a --retry-timeout as it may be typed."""
    return f"{seconds / 60:g}m" if seconds >= 60 and seconds % 60 == 0 else f"{seconds:g}s"


class Reachability:
    """Whether the endpoint has answered once in this run (any HTTP answer, errors too).

    Until it has, a connection failure stops after UNREACHED_LIMIT seconds with a
    ConfigError naming the endpoint (exit 6): a wrong port is not a flaky link. The first
    connection failure of the run is reported on stderr at once, with what happens next."""

    def __init__(self, endpoint: str, timeout: float, limit: float = UNREACHED_LIMIT):
        self.endpoint = endpoint
        self.timeout = timeout
        self.limit = limit
        self.answered = False
        self._reported = False
        self._lock = threading.Lock()

    def budget(self) -> float:
        """Seconds a request may spend retrying connection failures."""
        return self.timeout if self.answered else min(self.timeout, self.limit)

    def report_first(self, exc: BaseException) -> None:
        """Warn once per run: `cannot reach URL: why; retrying until HH:MM:SS (...)`."""
        with self._lock:
            if self._reported:
                return
            self._reported = True
        until = time.strftime("%H:%M:%S", time.localtime(time.time() + self.budget()))
        why = (f"--retry-timeout {_duration(self.timeout)}" if self.answered else
               f"it has not answered once in this run; giving up after {_duration(self.budget())}")
        retry_log.warning("cannot reach %s: %s; retrying until %s (%s)",
                          endpoint_of(exc, self.endpoint), unreachable_reason(exc), until, why)

    def never_answered(self, exc: BaseException) -> ConfigError:
        """The one-line error (exit 6) for an endpoint that never answered."""
        return ConfigError(
            f"cannot reach {endpoint_of(exc, self.endpoint)}: {unreachable_reason(exc)}; it "
            "has not answered once in this run: check --endpoint-url (host and port) and that "
            "the server is running")


def fatal_reason(exc: BaseException) -> str | None:
    """A one-line reason when the error dooms the whole run (credentials, bucket, clock)."""
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return "no usable credentials found (environment, profile or instance role)"
    if is_tls_failure(exc):
        return tls_reason(exc)
    code = error_code(exc)
    if code == "RequestTimeTooSkewed":
        error = exc.response.get("Error", {})
        ours = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        return (f"{FATAL_CODES[code]}: server time {error.get('ServerTime', 'unknown')}, "
                f"ours {ours} (RequestTimeTooSkewed)")
    if code in FATAL_CODES:
        return f"{FATAL_CODES[code]} ({code})"
    if code in ("403", "Forbidden"):
        return "access denied (403)"
    if code and code.startswith("KMS."):
        return f"the KMS key refused us ({code})"
    return None


# Fatal codes that may concern one object only (a bucket policy on a prefix, a KMS key one
# object was written with): the run stops only when several files in a row meet them.
OBJECT_SCOPED = frozenset({"AccessDenied", "403", "Forbidden"})
# Fatal codes whose cause passes by itself: the run is left resumable.
RESUMABLE_FATAL = frozenset({"ExpiredToken"})


def fatal_scope(exc: BaseException) -> str | None:
    """For an error fatal_reason() names: "object" (maybe only this key), "resumable" (the
    whole run, until the cause passes) or "run"; None for an error that is not fatal."""
    if fatal_reason(exc) is None:
        return None
    code = error_code(exc)
    if code in OBJECT_SCOPED or (code or "").startswith("KMS."):
        return "object"
    return "resumable" if code in RESUMABLE_FATAL else "run"


def config_reason(exc: BaseException) -> str | None:
    """A one-line reason when the local AWS configuration cannot be used (exit 6)."""
    from botocore.exceptions import InvalidConfigError, ProfileNotFound

    if isinstance(exc, ProfileNotFound):
        return (f"profile {exc.kwargs.get('profile')!r} is not in the shared config or "
                "credentials files (--profile or AWS_PROFILE)")
    if isinstance(exc, InvalidConfigError):
        return f"the AWS configuration cannot be used: {exc}"
    return None


def is_tls_failure(exc: BaseException) -> bool:
    """botocore's SSLError, or a CRT error (crt.CrtConnectionError.crt_error) that says the
    TLS handshake cannot succeed with this trust store."""
    return isinstance(exc, SSLError) or getattr(exc, "crt_error", None) in CRT_TLS_ERRORS


def tls_reason(exc: BaseException) -> str:
    """One line naming the endpoint whose certificate failed and what to set."""
    if isinstance(exc, SSLError):
        endpoint = urlsplit(str(exc.kwargs.get("endpoint_url", "")))
        where = f"{endpoint.scheme}://{endpoint.netloc}" if endpoint.netloc else "the endpoint"
        detail = str(exc.kwargs.get("error", exc))
    else:
        where, detail = getattr(exc, "endpoint", "") or "the endpoint", exc.crt_error
    return f"TLS verification failed for {where} ({detail}); {TLS_HINT}".replace("\n", " ")


def fatal_class(exc: BaseException) -> type[JournalsyncError]:
    """The error a fatal `exc` ends the run with: a TLS failure is the local setup's to fix
    (ConfigError, exit 6), the rest the store's refusal (FatalRemoteError, exit 4)."""
    return ConfigError if is_tls_failure(exc) else FatalRemoteError


def whole_run_error(what: str, exc: Exception) -> Exception | None:
    """The one-line error a failed whole-run step (the bucket check, a LIST, verify,
    cleanup) ends with: the local setup's (exit 6), else the store's (exit 4, or 6 for a
    TLS failure). None for an error that says itself: ours (JournalsyncError) and the
    journal's (exit 5, journal/health.py)."""
    from journalsync.journal.health import is_journal_failure

    if isinstance(exc, JournalsyncError) or is_journal_failure(exc):
        return None
    if config_reason(exc):
        return ConfigError(config_reason(exc))
    return fatal_class(exc)(f"{what}: {fatal_reason(exc) or describe(exc)}")


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


class SharedBackoff:
    """AIMD on the number of requests in flight, shared by every worker thread.

    A throttled request halves the limit (at most once a second: the burst of 503s from
    requests already in flight is one signal, not ten); each success adds 1/limit, so the
    limit grows back by about one per round of requests. Both are logged.
    """

    def __init__(self, max_in_flight: int, clock: Callable[[], float] = time.monotonic):
        self.max = max(1, max_in_flight)
        self.limit = float(self.max)
        self.in_flight = 0
        self.throttled = 0
        self._clock = clock
        self._last_cut = float("-inf")
        self._cond = threading.Condition()

    def acquire(self) -> None:
        with self._cond:
            while self.in_flight >= int(self.limit):
                self._cond.wait()
            self.in_flight += 1

    def release(self, throttled: bool) -> None:
        with self._cond:
            self.in_flight -= 1
            before = int(self.limit)
            if throttled:
                self.throttled += 1
                now = self._clock()
                if now - self._last_cut >= 1.0:
                    self._last_cut = now
                    self.limit = max(1.0, self.limit / 2)
                    log.warning("throttled by the store (SlowDown): requests in flight %d -> %d",
                                before, int(self.limit))
            elif self.limit < self.max:
                self.limit = min(float(self.max), self.limit + 1.0 / self.limit)
                if int(self.limit) > before:
                    log.info("throttling eases: requests in flight %d -> %d", before, int(self.limit))
            self._cond.notify_all()


class RetryPolicy:
    """How every request is made: through the shared backoff, retried by tenacity."""

    def __init__(self, attempts: int, timeout: float, backoff: SharedBackoff | None = None,
                 reach: Reachability | None = None):
        self.attempts = attempts
        self.timeout = timeout
        self.backoff = backoff
        self.reach = reach or Reachability("the endpoint", timeout)

    def call(self, fn: Callable[[], T], counter: Attempts | None = None) -> T:
        """Run fn, retrying retryable errors with full-jitter exponential backoff, bounded
        by both an attempt count and a total time (shorter for an endpoint that has never
        answered: see Reachability). Each retry is logged at info (-v)."""
        retrying = Retrying(
            retry=retry_if_exception(is_retryable),
            stop=stop_any(self._out_of_attempts, self._out_of_time),
            wait=self._wait,
            before_sleep=self._before_sleep,
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    if counter is not None:
                        counter.count += 1
                    return self._once(fn)
        except Exception as exc:
            if is_unreachable(exc) and not self.reach.answered:
                raise self.reach.never_answered(exc) from exc
            raise
        raise AssertionError("unreachable")  # pragma: no cover

    _jitter = wait_random_exponential(multiplier=0.25, max=20)

    def _limit(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        return self.reach.budget() if exc is not None and is_unreachable(exc) else self.timeout

    def _link_down(self, state: RetryCallState) -> bool:
        """The last try met a broken link to an endpoint that has answered in this run."""
        exc = state.outcome.exception() if state.outcome else None
        return exc is not None and is_unreachable(exc) and self.reach.answered

    def _out_of_attempts(self, state: RetryCallState) -> bool:
        """The attempts (10) bound the answers we get; an outage is bounded by time only
        (it is probed about once a second, so it would use up any count in seconds)."""
        return state.attempt_number >= self.attempts and not self._link_down(state)

    def _out_of_time(self, state: RetryCallState) -> bool:
        return (state.seconds_since_start or 0.0) >= self._limit(state)

    def _wait(self, state: RetryCallState) -> float:
        """Full jitter, but never past the time limit: the last try comes at the limit. A
        broken link is probed again within LINK_RETRY_CAP (see the module docstring)."""
        left = self._limit(state) - (state.seconds_since_start or 0.0)
        jitter = self._jitter(state)
        if self._link_down(state):
            jitter = random.uniform(LINK_RETRY_CAP / 4, LINK_RETRY_CAP)
        return max(0.0, min(jitter, left))

    def _before_sleep(self, state: RetryCallState) -> None:
        exc = state.outcome.exception()
        why = describe(exc)
        if is_unreachable(exc):
            self.reach.report_first(exc)
            why = f"cannot reach {endpoint_of(exc, self.reach.endpoint)}: {unreachable_reason(exc)}"
        retry_log.info("retrying in %.1fs (attempt %d failed): %s", state.next_action.sleep,
                       state.attempt_number, why)

    def _once(self, fn: Callable[[], T]) -> T:
        if self.backoff is not None:
            self.backoff.acquire()
        throttled = False
        try:
            result = fn()
        except Exception as exc:
            throttled = is_throttle(exc)
            if isinstance(exc, ClientError):
                self.reach.answered = True  # an error answer is an answer
            raise
        finally:
            if self.backoff is not None:
                self.backoff.release(throttled)
        self.reach.answered = True
        return result
