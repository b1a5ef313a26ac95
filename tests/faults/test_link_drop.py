"""A link that drops in the middle of an upload (issue 14). Once the endpoint has answered,
a connection failure is an outage, not a store that refuses us: it is tried again about
once a second for as long as --retry-timeout allows (not on a backoff grown to 20 s, and
not stopped by --retry-attempts), so the upload goes on within a second of the link's
return. And botocore's connections carry the 1 s cap on TCP's retransmission timeout, so a
connection in the middle of a part resumes on its own rather than seconds later."""

from __future__ import annotations

import hashlib
import random
import socket
import threading
import time
from pathlib import Path

import pytest

from journalsync.clients import TCP_RTO_MAX_MS, ClientFactory, link_socket_options
from journalsync.config import Config, Destination, MiB
from tests.faults.test_multipart_crash import incomplete, object_sha
from tests.support.proxy import Fault, RecordingProxy

pytestmark = pytest.mark.slow

OUTAGE = 10.0  # seconds


@pytest.mark.one_server
def test_an_outage_is_probed_every_second_and_the_upload_goes_on(sync, s3, s3client):
    """From the first UploadPart on, every request is dropped with a reset for 10 s. The
    first part is tried at least once a second all through the outage (an exponential
    backoff to 20 s tries it about 6 times, and --retry-attempts 10 would end it), and the
    file is complete once the link is back."""
    data = random.Random(31).randbytes(12 * MiB + 5)
    sync.write("big.img", data)
    window: dict[str, float] = {}
    lock = threading.Lock()

    def hook(req):
        with lock:
            if "until" not in window and req.operation == "UploadPart":
                window["until"] = time.monotonic() + OUTAGE
            if "until" in window and time.monotonic() < window["until"]:
                return Fault(reset=True)
        return None

    with RecordingProxy(s3.port, hook=hook) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        result = sync.run("--multipart-threshold", "5MiB", "--part-size", "5MiB",
                          "--workers", "1", "-v")
    assert result.code == 0, result.err[-3000:]
    first_part = [r for r in proxy.requests
                  if r.operation == "UploadPart" and r.query["partNumber"] == ["1"]]
    during = [r for r in first_part if r.at < window["until"]]
    after = [r for r in first_part if r.at >= window["until"]]
    print(f"part 1 tried {len(during)} times during the {OUTAGE:g} s outage, {len(after)} after")
    assert len(during) >= OUTAGE, len(during)
    assert len(after) == 1  # the first try after the outage went through
    assert object_sha(s3client, sync.bucket, sync.object_key("big.img")) == hashlib.sha256(data).hexdigest()
    assert incomplete(s3client, sync.bucket) == []


@pytest.mark.one_server
@pytest.mark.skipif(not link_socket_options(), reason="the kernel has no TCP_RTO_MAX_MS (Linux 6.15+)")
def test_botocore_connections_cap_tcp_retransmission_at_a_second(s3, bucket, tmp_path, monkeypatch):
    for name, value in s3.env().items():
        monkeypatch.setenv(name, value)
    cfg = Config(Path(tmp_path), Destination.parse(f"s3://{bucket}"), tmp_path / "j.sqlite",
                 endpoint_url=s3.endpoint_url)
    factory = ClientFactory(cfg)
    clients = [factory.get()]
    other = threading.Thread(target=lambda: clients.append(factory.get()))
    other.start()
    other.join()
    for client in clients:  # each thread's own client
        client.list_objects_v2(Bucket=bucket)
        # A new connection from the client's own pool (a server that closes each
        # connection after its answer, as moto's does, leaves none idle to look at).
        pool = client._endpoint.http_session._manager.connection_from_url(s3.endpoint_url)
        conn = pool._new_conn()
        conn.connect()
        try:
            assert conn.sock.getsockopt(socket.IPPROTO_TCP, TCP_RTO_MAX_MS) == 1000
            # and it outlives an outage longer than the ~15 s those retransmissions last
            assert conn.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 60_000
        finally:
            conn.close()
    assert factory.parts_crt() is None  # parts go where the cap holds


def test_link_socket_options_are_empty_where_the_kernel_refuses_them(monkeypatch):
    """On a kernel without TCP_RTO_MAX_MS (or another OS) nothing is set and the CRT keeps
    the parts."""
    monkeypatch.setattr("journalsync.clients.TCP_RTO_MAX_MS", 9999)  # no such option
    assert link_socket_options() == []


@pytest.mark.one_server
def test_a_small_put_stuck_on_a_dead_connection_is_sent_again(sync, s3, s3client):
    """The CRT's sockets cannot take the retransmission cap, so a small PUT that gets no
    answer within several times the usual time is cancelled and sent again on a new
    connection, rather than waiting on its connection for tens of seconds. Here the proxy
    holds one PUT for 30 s (a connection the link dropped under it): the same key is sent a
    second time, long before that, and the run ends with every file in place."""
    files = {f"f{i:03d}.txt": f"file {i}\n".encode() * 100 for i in range(60)}
    for rel, data in files.items():
        sync.write(rel, data)
    held: list = []

    def hook(req):
        if req.operation == "PutObject" and req.path.endswith("/f050.txt") and not held:
            held.append(req)
            return Fault(status=0, delay=30)
        return None

    with RecordingProxy(s3.port, hook=hook) as proxy:
        sync.endpoint_url = proxy.endpoint_url
        result = sync.run("--crt", "--workers", "4", "-v")
    assert result.code == 0, result.err[-3000:]
    sent = [r for r in proxy.requests if r.path.endswith("/f050.txt")]
    assert len(sent) == 2, sent
    answered = [a for a in proxy.answers if a.request.path.endswith("/f050.txt")]
    assert answered and answered[0].request is sent[1]  # the second one was answered first
    for rel, data in files.items():
        body = s3client.get_object(Bucket=sync.bucket, Key=sync.object_key(rel))["Body"].read()
        assert body == data, rel
