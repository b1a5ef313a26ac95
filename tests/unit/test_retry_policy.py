"""retry.py: which errors are retried, throttling, fatal reasons word for word, the retry
loop's bounds and backoff schedule, and the shared backoff's gate. No server: the errors
are botocore's own exception objects, the clock is tenacity's sleep made instant."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import types

import pytest
import tenacity
from botocore.exceptions import (ClientError, EndpointConnectionError, NoCredentialsError,
                                 ProxyConnectionError, ReadTimeoutError, SSLError)

from journalsync.errors import ConfigError
from journalsync.retry import (LINK_RETRY_CAP, Attempts, RetryPolicy, SharedBackoff, describe, error_code,
                               fatal_reason, http_status, is_retryable, is_throttle)


def client_error(code, status=400, message="m", **error):
    return ClientError({"Error": {"Code": code, "Message": message, **error},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject")


@pytest.mark.parametrize("exc, retryable", [
    (ReadTimeoutError(endpoint_url="http://x"), True),  # in the list, no "Connection" in its name
    (TimeoutError(), True),
    (ConnectionResetError(), True),
    (ProxyConnectionError(proxy_url="http://p", error="e"), True),  # by its name alone
    (SSLError(endpoint_url="http://x", error="bad cert"), False),
    (NoCredentialsError(), False),
    (ValueError("x"), False),
    (client_error("BadDigest", 400), True),
    (client_error("NoSuchKey", 404), False),
])
def test_is_retryable(exc, retryable):
    assert is_retryable(exc) is retryable


@pytest.mark.parametrize("exc, throttled", [
    (client_error("SlowDown", 503), True),
    (client_error("Throttling", 400), True),  # the code alone
    (client_error("Whatever", 429), True),  # the status alone
    (client_error("Whatever", 503), True),
    (client_error("Whatever", 504), False),
    (client_error("InternalError", 500), False),
    (TimeoutError(), False),
])
def test_is_throttle(exc, throttled):
    assert is_throttle(exc) is throttled


def test_code_and_status_of_a_bare_client_error():
    bare = ClientError({}, "PutObject")
    assert (error_code(bare), http_status(bare)) == (None, None)
    assert (error_code(ValueError()), http_status(ValueError())) == (None, None)
    assert (error_code(client_error("X", 418)), http_status(client_error("X", 418))) == ("X", 418)


@pytest.mark.parametrize("exc, reason", [
    (NoCredentialsError(), "no usable credentials found (environment, profile or instance role)"),
    (client_error("AccessDenied", 403), "access denied (AccessDenied)"),
    (client_error("403", 403), "access denied (403)"),
    (client_error("Forbidden", 403), "access denied (403)"),
    (client_error("NoSuchBucket", 404), "the bucket does not exist (NoSuchBucket)"),
    (client_error("forbidden", 403), None),
    (client_error("InternalError", 500), None),
])
def test_fatal_reason_words(exc, reason):
    assert fatal_reason(exc) == reason


def test_fatal_reason_for_a_skewed_clock_gives_both_times_in_utc(monkeypatch):
    monkeypatch.setenv("TZ", "Asia/Kathmandu")  # +05:45: local time is not UTC here
    time.tzset()
    try:
        with_time = fatal_reason(client_error("RequestTimeTooSkewed", 403,
                                              ServerTime="2026-01-02T03:04:05Z"))
        without = fatal_reason(client_error("RequestTimeTooSkewed", 403))
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    head = "this machine's clock differs too much from the server's: server time "
    assert with_time.startswith(head + "2026-01-02T03:04:05Z, ours ")
    assert without.startswith(head + "unknown, ours ")
    assert without.endswith(" (RequestTimeTooSkewed)")
    ours = dt.datetime.strptime(without[len(head + "unknown, ours "):].split()[0],
                                "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
    assert abs(ours - dt.datetime.now(dt.timezone.utc)) < dt.timedelta(minutes=5)


@pytest.mark.parametrize("exc, text", [
    (client_error("SlowDown", 503, "Please\nreduce"), "SlowDown: Please reduce"),
    (client_error("SlowDown", 503, ""), "SlowDown"),
    (ClientError({"Error": {"Code": "X"}}, "Op"), "X"),
    (ValueError("two\nlines"), "ValueError: two lines"),
])
def test_describe(exc, text):
    assert describe(exc) == text


class Flaky:
    """A request that fails with `exc` `failures` times, then returns "ok"."""

    def __init__(self, exc, failures):
        self.exc, self.failures, self.calls = exc, failures, 0

    def __call__(self):
        self.calls += 1
        if self.calls <= self.failures:
            raise self.exc
        return "ok"


@pytest.fixture
def sleeps(monkeypatch):
    """tenacity's sleeps, recorded instead of slept; the jitter pinned to its upper bound."""
    slept: list[float] = []
    # tenacity's own references to the time and random modules, not the modules: nothing
    # else in the process (a server thread) is affected.
    monkeypatch.setattr(tenacity.nap, "time", types.SimpleNamespace(sleep=slept.append))
    monkeypatch.setattr(tenacity.wait, "random", types.SimpleNamespace(uniform=lambda lo, hi: hi))
    return slept


def test_retries_retryable_errors_and_counts_attempts(sleeps):
    counter = Attempts()
    assert counter.count == 0
    fn = Flaky(client_error("SlowDown", 503), 2)
    assert RetryPolicy(5, 60).call(fn, counter) == "ok"
    assert (fn.calls, counter.count) == (3, 3)


def test_backoff_schedule_is_exponential_from_a_quarter_second_capped_at_20(sleeps):
    fn = Flaky(client_error("InternalError", 500), 10)
    with pytest.raises(ClientError):
        RetryPolicy(10, 3600).call(fn)
    assert fn.calls == 10
    assert sleeps == [0.25, 0.5, 1, 2, 4, 8, 16, 20, 20]


def test_a_non_retryable_error_is_raised_at_once(sleeps):
    fn = Flaky(client_error("NoSuchKey", 404), 1)
    counter = Attempts()
    with pytest.raises(ClientError) as info:
        RetryPolicy(5, 60).call(fn, counter)
    assert error_code(info.value) == "NoSuchKey"  # the error itself, not tenacity's RetryError
    assert (fn.calls, counter.count, sleeps) == (1, 1, [])


def test_the_total_time_bounds_the_retries(sleeps):
    def slow():
        slow.calls += 1
        threading.Event().wait(0.03)
        raise client_error("InternalError", 500)

    slow.calls = 0
    with pytest.raises(ClientError):
        RetryPolicy(100, 0.05).call(slow)
    assert slow.calls < 100  # stopped by the time budget, not by the attempt count


def test_calls_go_through_the_shared_backoff_and_report_throttling(sleeps):
    clock = [0.0]
    backoff = SharedBackoff(8, clock=lambda: clock[0])
    policy = RetryPolicy(3, 60, backoff)
    assert policy.call(Flaky(client_error("SlowDown", 503), 1)) == "ok"
    assert (backoff.throttled, backoff.limit, backoff.in_flight) == (1, 4.25, 0)  # halved, then +1/4
    with pytest.raises(ClientError):
        policy.call(Flaky(client_error("NoSuchKey", 404), 1))
    assert (backoff.throttled, backoff.in_flight) == (1, 0)  # not a throttle; the slot is back


def test_without_a_backoff_the_call_still_runs(sleeps):
    assert RetryPolicy(1, 1).call(lambda: 42) == 42


def test_acquire_blocks_at_the_limit_until_a_release():
    backoff = SharedBackoff(2)
    backoff.acquire()
    backoff.acquire()
    assert backoff.in_flight == 2
    third = threading.Thread(target=backoff.acquire, daemon=True)
    third.start()
    third.join(0.3)
    assert third.is_alive()  # a third request waits: the limit is 2
    backoff.release(throttled=False)
    third.join(10)
    assert not third.is_alive() and backoff.in_flight == 2


def test_limits_are_at_least_one():
    assert (SharedBackoff(1).max, SharedBackoff(0).max, SharedBackoff(0).limit) == (1, 1, 1.0)


def test_cuts_and_growth_are_logged_when_the_whole_limit_moves(caplog):
    clock = [0.0]
    backoff = SharedBackoff(4, clock=lambda: clock[0])
    caplog.set_level(logging.INFO, logger="journalsync.throttle")
    backoff.acquire()
    backoff.release(throttled=True)
    for _ in range(3):
        backoff.acquire()
        backoff.release(throttled=False)
    assert [r.getMessage() for r in caplog.records] == [
        "throttled by the store (SlowDown): requests in flight 4 -> 2",
        "throttling eases: requests in flight 2 -> 3",
    ]  # 2 -> 2.5 -> 2.9 -> 3.23: one line, when the whole number moves


def test_a_dropped_link_is_probed_about_once_a_second_and_not_counted_against_attempts(sleeps):
    """Once the endpoint has answered, connection failures are an outage, not a store that
    refuses us: tried again within LINK_RETRY_CAP, as often as the time budget allows, so a
    link that comes back is used within a second (not after a backoff grown to 20 s). The
    store's answers (SlowDown, 5xx) back off exponentially and stop at the attempt count as
    before, and so do connection failures before the endpoint's first answer (a wrong port:
    exit 6)."""
    policy = RetryPolicy(3, 3600)
    policy.reach.answered = True
    fn = Flaky(EndpointConnectionError(endpoint_url="http://x"), 12)
    counter = Attempts()
    assert policy.call(fn, counter) == "ok"
    assert (fn.calls, counter.count, len(sleeps)) == (13, 13, 12)
    assert all(LINK_RETRY_CAP / 4 <= s <= LINK_RETRY_CAP for s in sleeps), sleeps

    sleeps.clear()
    throttled = Flaky(client_error("SlowDown", 503), 10)
    with pytest.raises(ClientError):
        RetryPolicy(6, 3600, reach=policy.reach).call(throttled)
    assert throttled.calls == 6 and sleeps == [0.25, 0.5, 1, 2, 4]

    sleeps.clear()
    unknown = Flaky(EndpointConnectionError(endpoint_url="http://x"), 10)
    with pytest.raises(ConfigError):
        RetryPolicy(5, 3600).call(unknown)
    assert unknown.calls == 5 and sleeps == [0.25, 0.5, 1, 2]


def test_an_outage_is_still_bounded_by_the_retry_timeout(sleeps):
    def down():
        down.calls += 1
        threading.Event().wait(0.02)
        raise EndpointConnectionError(endpoint_url="http://x")

    down.calls = 0
    policy = RetryPolicy(3, 0.3)
    policy.reach.answered = True
    with pytest.raises(EndpointConnectionError):
        policy.call(down)
    assert 3 < down.calls < 100  # past the attempt count, stopped by the time budget
