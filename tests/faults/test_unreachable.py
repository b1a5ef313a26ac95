"""An endpoint that cannot be reached: reported at once, and a configuration error (exit 6)
when it has never answered in this run; a link that drops after the first answer gets the
whole --retry-timeout."""

from __future__ import annotations

import time

import pytest

from tests.support.proxy import Fault, RecordingProxy

pytestmark = pytest.mark.slow


def test_port_nothing_listens_on_is_a_configuration_error(offline_sync):
    """Port 9 on 127.0.0.1: refused at once. The first stderr line says so and what comes
    next; the run ends with one line naming the endpoint, long before --retry-timeout."""
    offline_sync.write("a.txt", b"a")
    result = offline_sync.cli(*offline_sync.run_args(), timeout=60)
    lines = result.err.splitlines()
    assert result.code == 6, result.err
    assert len(lines) == 2, result.err
    assert "cannot reach http://127.0.0.1:9: connection refused; retrying until " in lines[0]
    assert "(it has not answered once in this run; giving up after 15s)" in lines[0]
    assert lines[1].startswith("journalsync: error: cannot reach http://127.0.0.1:9: "
                               "connection refused; it has not answered once in this run: "
                               "check --endpoint-url"), lines[1]
    assert "EndpointConnectionError" not in result.err
    assert result.out == ""


def test_each_retry_is_logged_with_verbose(offline_sync):
    offline_sync.write("a.txt", b"a")
    result = offline_sync.cli(*offline_sync.run_args("-v", "--retry-timeout", "3s"), timeout=60)
    assert result.code == 6, result.err
    retries = [line for line in result.err.splitlines() if " retrying in " in line]
    assert retries and all("cannot reach http://127.0.0.1:9: connection refused" in line
                           for line in retries), result.err
    first = next(i for i, line in enumerate(result.err.splitlines()) if "cannot reach" in line)
    assert "(it has not answered once in this run; giving up after 3s)" in \
        result.err.splitlines()[first]


@pytest.mark.one_server
def test_a_link_lost_after_the_first_answer_gets_the_whole_retry_timeout(sync):
    """The store answers the bucket check and the LIST, then resets every connection for
    longer than an unanswered endpoint would be given: the run waits it out and succeeds,
    having said once, at the first failure, until when it retries."""
    sync.write("a.txt", b"x" * 1000)
    outage = {"until": None}

    def hook(req):
        if outage["until"] is None and req.operation == "PutObject":
            outage["until"] = time.monotonic() + 17
        if outage["until"] and time.monotonic() < outage["until"]:
            return Fault(reset=True)
        return None

    with RecordingProxy(sync.s3.port, hook=hook) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        result = sync.cli(*sync.run_args(), timeout=170)
    assert result.code == 0, result.err
    assert result.summary["uploaded"] == "1"
    reports = [line for line in result.err.splitlines() if "cannot reach" in line]
    assert len(reports) == 1, result.err
    assert f"cannot reach {proxy.endpoint_url}: " in reports[0]
    assert reports[0].endswith("(--retry-timeout 3m)"), reports[0]
