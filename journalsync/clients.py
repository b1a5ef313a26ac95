"""S3 clients: one session built in the main thread, one client per worker thread, one
retry policy and one shared backoff for all of them, and the provider's quirks.

Sessions are not thread-safe, so the session is made once and clients are created from it
under a lock; each thread then keeps its own client. Credentials come only from the SDK's
standard chain (environment, shared profile, instance or container role).

A link that drops: every botocore connection caps TCP's retransmission timeout at one second
(TCP_RTO_MAX_MS, Linux 6.15+), where the kernel allows it. Without the cap, the kernel
doubles the wait between retransmissions while a link is down (0.2, 0.4 ... 12.8 s), so a
connection resumes seconds after the link is back, or, when its retransmissions keep falling
into the next outage, tens of seconds later. With it, a connection in the middle of a part
resumes within a second of the link's return and its bytes already sent are not sent again
(TCP_USER_TIMEOUT keeps it alive through an outage of up to a minute: see
link_socket_options).
Where the cap is available, parts go through botocore rather than the CRT, whose sockets
cannot take it (`parts_crt`).

The session is botocore's own, not boto3's wrapper: boto3 adds nothing we use (we never call
its upload_file), and importing it pulls in s3transfer, about 0.15 s of every run's start.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlsplit

import botocore.session
from botocore.config import Config as BotoConfig
from botocore.loaders import Loader
from botocore.httpsession import get_cert_path
from botocore.utils import get_environ_proxies

from journalsync.config import Config
from journalsync.errors import ConfigError
from journalsync.fastparse import install_fast_timestamps
from journalsync.ratelimit import RateLimiter
from journalsync.retry import Attempts, Reachability, RetryPolicy, SharedBackoff

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Preset:
    """What differs between S3 implementations, as far as we are concerned."""

    name: str
    addressing_style: str  # path works everywhere without wildcard DNS
    checksums: str  # when_supported (boto3 >= 1.36's CRC default) or when_required
    batch_delete: bool  # DeleteObjects exists
    # The body check the store verifies (integrity.py): crc64nvme where it is known to
    # check x-amz-checksum-crc64nvme, else md5 (Content-MD5, which every store checks).
    body_check: str = "md5"
    # R2 needs every part but the last the same size: our multipart driver always does that.


PRESETS = {
    "aws": Preset("aws", "auto", "when_supported", True, "crc64nvme"),
    # Several S3-compatible stores reject the CRC checksums boto3 >= 1.36 sends by default;
    # we send Content-MD5 ourselves, so ask for checksums only where an API requires one.
    "minio": Preset("minio", "path", "when_required", True, "crc64nvme"),
    "r2": Preset("r2", "path", "when_required", True, "crc64nvme"),
    "gcs": Preset("gcs", "path", "when_required", False),
    "other": Preset("other", "path", "when_required", True),
}


def resolve_provider(name: str, endpoint_url: str | None) -> Preset:
    """`auto` picks the preset from the endpoint's host."""
    if name != "auto":
        return PRESETS[name]
    host = (urlsplit(endpoint_url).hostname or "") if endpoint_url else ""
    if not endpoint_url or host.endswith("amazonaws.com"):
        return PRESETS["aws"]
    if host.endswith("r2.cloudflarestorage.com"):
        return PRESETS["r2"]
    if host in ("storage.googleapis.com", "storage.cloud.google.com"):
        return PRESETS["gcs"]
    return PRESETS["other"]


# socket.TCP_RTO_MAX_MS from Python 3.14; the kernel's number since Linux 6.15.
TCP_RTO_MAX_MS = getattr(socket, "TCP_RTO_MAX_MS", 44)
LINK_RTO_MAX_MS = 1000  # the kernel's lowest allowed cap
LINK_USER_TIMEOUT_MS = 60_000  # = boto_config's read_timeout


def link_socket_options() -> list[tuple[int, int, int]]:
    """The socket options that make a connection resume within a second of a dropped
    link's return (see the module docstring), or [] where the kernel does not have them."""
    if not sys.platform.startswith("linux"):
        return []
    options = [(socket.IPPROTO_TCP, TCP_RTO_MAX_MS, LINK_RTO_MAX_MS),
               # With retransmissions a second apart, the kernel's own give-up (tcp_retries2)
               # comes after ~15 s of silence, and a 20 s outage would kill the connection
               # and the part on it. Give up after as long as botocore waits on a read.
               (socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, LINK_USER_TIMEOUT_MS)]
    try:
        with socket.socket() as probe:
            for option in options:
                probe.setsockopt(*option)
    except (OSError, AttributeError):
        return []
    return options


# How long a connection attempt may take: short until the endpoint has answered (a wrong
# host is said in ~15 s, retry.Reachability), long after that, when a silent connect is an
# outage of a link known to work: with link_options its SYN is sent again every second, so
# it connects within a second of the link's return. The long one matters for bodies too:
# urllib3 sends a new connection's first request under the connect timeout, so 10 s would
# cut a part off in the middle of a 20 s outage.
CONNECT_TIMEOUT = 10
CONNECT_TIMEOUT_ANSWERED = 60


def boto_config(preset: Preset, pool_size: int, connect_timeout: float = CONNECT_TIMEOUT) -> BotoConfig:
    return BotoConfig(
        # No payload signature: over plain HTTP botocore would otherwise SHA-256 every body
        # for it (one more pass over each byte sent: 0.6 CPU-s per GiB; the awscrt path
        # sends UNSIGNED-PAYLOAD already). Every body carries its Content-MD5 or CRC,
        # which the store checks (integrity.py); over HTTPS botocore already signs none.
        s3={"addressing_style": preset.addressing_style, "payload_signing_enabled": False},
        # One retry layer only: tenacity (retry.py) owns retries and their time budget.
        retries={"total_max_attempts": 1, "mode": "standard"},
        max_pool_connections=pool_size,
        connect_timeout=connect_timeout,
        read_timeout=60,
        tcp_keepalive=True,
        user_agent_extra="journalsync",
        request_checksum_calculation=preset.checksums,
        response_checksum_validation=preset.checksums,
    )


class S3Loader(Loader):
    """botocore's loader of service models for a session that only makes S3 clients.

    Before it loads a model (S3's, then its endpoint rules), botocore checks the service's
    name against a listing of every service it has data for: over 400 directories, each
    listed, for each of the two, 10-20 ms of CPU (most of it system time) in every run. Here
    that list is S3 alone. What is loaded, and from where (AWS_DATA_PATH, ~/.aws/models,
    botocore's own data), is botocore's own doing, as create_loader sets it up."""

    @classmethod
    def for_session(cls, session) -> "S3Loader":
        found = session.get_config_variable("data_path")  # AWS_DATA_PATH, as create_loader
        paths = [os.path.expanduser(os.path.expandvars(path))
                 for path in found.split(os.pathsep)] if found else None
        return cls(extra_search_paths=paths)

    def list_available_services(self, type_name: str) -> list[str]:
        return ["s3"]


class ClientFactory:
    """Hands each thread its own S3 client, all built from one session, and runs every
    request through the run's retry policy and shared backoff."""

    def __init__(self, cfg: Config, pool_size: int | None = None):
        self.preset = resolve_provider(cfg.provider, cfg.endpoint_url)
        pool_size = pool_size or cfg.workers * 2 + 4
        self._session = botocore.session.Session(profile=cfg.profile)
        self._session.register_component("data_loader", S3Loader.for_session(self._session))
        if cfg.profile:
            self._session.get_scoped_config()  # ProfileNotFound now, not at the first request
        install_fast_timestamps(self._session)  # LIST is CPU-bound in date parsing
        self._config = boto_config(self.preset, pool_size)
        self._config_answered = boto_config(self.preset, pool_size, CONNECT_TIMEOUT_ANSWERED)
        self._endpoint_url = cfg.endpoint_url
        self._region = cfg.region or self._session.get_config_variable("region") or "us-east-1"
        self.ca_bundle = ca_bundle(self._session)
        self._lock = threading.Lock()
        self._local = threading.local()
        self._shared: dict[int, object] = {}  # id(config) -> the client made with it (get)
        self.backoff = SharedBackoff(cfg.workers * 2)
        self.reach = Reachability(cfg.endpoint_url or f"the S3 endpoint of {self._region}",
                                  cfg.retry_timeout)
        self.retry = RetryPolicy(cfg.retry_attempts, cfg.retry_timeout, self.backoff, self.reach)
        self.bandwidth = RateLimiter(cfg.bwlimit) if cfg.bwlimit else None
        # md5 | crc64nvme: what every body carries (integrity.py); --checksum overrides
        # the preset (for a store known to check CRCs behind an endpoint of its own).
        self.body_check = self.preset.body_check if cfg.checksum == "auto" else cfg.checksum
        self._cfg = cfg
        self._pool_size = pool_size
        self._crt = None
        self._crt_made = False
        self._crt_lock = threading.Lock()  # not self._lock: get() takes that one
        self.link_options = link_socket_options()

    def crt(self):
        """The run's awscrt client for small PUTs and LIST pages (crt.py), or None where
        botocore must serve: --no-crt, no awscrt, no credentials. Made once, on first use."""
        if not self._crt_made:
            with self._crt_lock:
                if not self._crt_made:
                    self._crt = self._make_crt()
                    self._crt_made = True
        return self._crt

    def _make_crt(self):
        """The CRT gets botocore's settings where it can take them (the CA bundle, the
        region botocore signed for) and steps aside where it cannot (a proxy)."""
        client = self.get()
        why_not = self._crt_off_reason(client.meta.endpoint_url)
        if why_not:
            log.info("awscrt path off: %s; bodies and listings go through botocore", why_not)
            return None
        from journalsync.crt import CrtS3

        # botocore's own trust: the configured bundle, else the one it ships with (certifi),
        # so a certificate botocore accepted at the bucket check is one the CRT accepts too.
        ca_file = self.ca_bundle or get_cert_path(True)
        try:
            crt = CrtS3.create(client, self._cfg.dest.bucket, self._region,
                               self._session.get_credentials(), self._pool_size,
                               timeout=self._config.read_timeout + 30,
                               connect_timeout=self._config.connect_timeout, ca_file=ca_file)
        except Exception as exc:  # noqa: BLE001 - the classic path still works
            log.warning("the awscrt path is unavailable (%s): using botocore only", exc)
            return None
        if crt is not None:
            log.info("awscrt path on for %s: signing for region %s, trusting %s",
                     client.meta.endpoint_url, self._region, ca_file)
        return crt

    def _crt_off_reason(self, endpoint_url: str) -> str | None:
        """Why the CRT must not serve this run, or None.

        A proxy: awscrt's S3Client takes no proxy options, but reads HTTP(S)_PROXY and
        NO_PROXY itself, by rules of its own (NO_PROXY=10.0.0.0/8 is a CIDR to it, a name
        suffix to botocore), so the two could take different routes to the same store.
        botocore decides, by its own rule; when it uses a proxy, it carries everything."""
        if not self._cfg.crt:
            return "--no-crt"
        scheme = urlsplit(endpoint_url).scheme
        if get_environ_proxies(endpoint_url).get(scheme):
            return f"{scheme.upper()}_PROXY applies to {endpoint_url} (botocore uses the proxy)"
        return None

    def _note_region(self, context=None, **_kwargs) -> None:
        """After a ListObjectsV2 (the bucket check comes first): the region botocore signed
        for, which differs from ours when botocore followed S3's region redirect. Later
        clients, and the CRT, sign for it from the start."""
        region = ((context or {}).get("signing") or {}).get("region")
        if region and region != self._region:
            log.info("bucket %s is in region %s, not %s (botocore was redirected): signing "
                     "for %s from now on", self._cfg.dest.bucket, region, self._region, region)
            self._region = region

    def get(self):
        """This thread's client: on its first use, the run's client for the connect timeout
        of the moment (short until the endpoint has answered, long after), made once and
        shared by every thread that starts then (botocore's clients are thread-safe; each
        one made cost 5-15 ms of CPU, a run of 8 workers' large files 0.1 s of them)."""
        client = getattr(self._local, "client", None)
        if client is None:
            config = self._config_answered if self.reach.answered else self._config
            with self._lock:
                client = self._shared.get(id(config))
                if client is None:
                    client = self._session.create_client(
                        "s3", endpoint_url=self._endpoint_url, region_name=self._region,
                        config=config)
                    client.meta.events.register("after-call.s3.ListObjectsV2", self._note_region)
                    self._add_socket_options(client)
                    self._shared[id(config)] = client
            self._local.client = client
        return client

    def _add_socket_options(self, client) -> None:
        """Give the client's connections `link_options`. botocore takes no socket options of
        ours, but its HTTP session hands its own list to the pool manager, which reads it
        when it makes each connection: the client has made none yet."""
        options = getattr(getattr(client._endpoint, "http_session", None), "_socket_options", None)
        if isinstance(options, list):
            options.extend(o for o in self.link_options if o not in options)

    def parts_crt(self):
        """The CRT client for multipart parts, or None when botocore should send them: with
        --bwlimit (the CRT reads bodies at its own pace), and where botocore's connections
        ride out a dropped link (link_options) and the CRT's cannot. The CRT's part deadline
        (crt.PartDeadline) does not change that: it ends a part on a dead connection in
        seconds, but sends the part again from its start, where a botocore connection with
        the 1 s retransmission cap resumes within a second of the link's return and sends
        nothing twice."""
        if self.bandwidth is not None or self.link_options:
            return None
        return self.crt()

    def call(self, fn: Callable[[], T], counter: Attempts | None = None) -> T:
        """One request, retried and throttled by the run's policy."""
        return self.retry.call(fn, counter)

    def body(self, data: bytes):
        """A request body for `data`, paced by --bwlimit when it is set. Made anew for each
        attempt, so a retry sends the same bytes from the start."""
        return self.bandwidth.wrap(data) if self.bandwidth else data


def ca_bundle(session) -> str | None:
    """The CA bundle botocore will trust (AWS_CA_BUNDLE, else the profile's ca_bundle),
    checked now: an unreadable one is the setup's error (exit 6), not every request's."""
    path = session.get_config_variable("ca_bundle")
    if not path:
        return None
    where = "AWS_CA_BUNDLE" if os.environ.get("AWS_CA_BUNDLE") else "the profile's ca_bundle"
    try:
        with open(path, "rb") as fh:
            fh.read(1)
    except OSError as exc:
        raise ConfigError(f"cannot read the CA bundle {path} ({where}): "
                          f"{exc.strerror or exc}") from None
    return path
