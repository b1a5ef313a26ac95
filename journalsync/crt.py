"""Small PUTs and LIST pages through the AWS Common Runtime (awscrt): the fast paths.

Why: a small PUT through botocore costs about 3 ms of client CPU in its request pipeline
(serializing, event hooks, signing, parsing), so many small files are CPU-bound in Python
long before the network or the store is busy. awscrt's S3 client signs and sends in C on its
own event-loop threads; a request built here costs about 0.3 ms of Python. Measured against
`rclone serve s3` on 2 cores: 3,000 PUTs of 2 KiB went from 540/s (boto3, 16 threads) to
2,080/s.

What stays ours: we build every request ourselves (the same headers as botocore's PutObject:
Content-MD5 or x-amz-checksum-crc64nvme (integrity.py), Content-Type, Cache-Control, our `sha256`/`mtime` metadata, storage class, SSE),
use the DEFAULT request type (one HTTP request, no CRT multipart, which hides UploadIds), and
switch the CRT's retries off: tenacity (retry.py) stays the only retry layer. CRT errors are
turned into botocore's ClientError, so retry.py classifies them exactly as before. The URL's
scheme, host and bucket path come once per run from botocore's own endpoint resolution (a
presigned URL), so addressing style, regions and custom endpoints match the classic client.

LIST pages go the same way (GET ?list-type=2), parsed by `parse_list_page`, a few regular
expressions over the XML rather than botocore's generic parser: listing is otherwise
CPU-bound in Python (botocore took 1.0 s per 10,000 keys even with a cheap timestamp parser).

The parts of our own multipart uploads go the same way (we create, list, complete and abort
the uploads with botocore, so the UploadIds stay ours and journaled). Besides botocore's
per-request CPU this saves, over plain HTTP, a SHA-256 pass over every part: botocore signs
the payload when there is no TLS, the CRT sends UNSIGNED-PAYLOAD with our Content-MD5 or CRC.

HEAD, DELETE and the multipart bookkeeping stay on botocore clients.

A link that drops: the CRT's sockets cannot take the cap on TCP's retransmission timeout
that botocore's get (clients.py), so a small PUT caught by an outage could wait for the
kernel's next retransmission (seconds to tens of seconds later) or for the CRT's own
throughput check (about 30 s). A small PUT gets a deadline instead, the way TCP sets its own
timeout: a multiple of the smoothed time the last PUTs took (`Deadline`), never under a
few seconds, doubled each time one runs out (a store that became slow is not cancelled
forever). A stuck one is cancelled and tried again on a new connection; its body is small,
so little is sent twice.

A part gets the same kind of deadline, scaled by its size (`PartDeadline`): FACTOR times
the smoothed time per MiB of the last parts, at least 5 s. Before, a part on a silent
connection waited for the CRT's own throughput check (AWS_ERROR_HTTP_CHANNEL_THROUGHPUT_
FAILURE, about 30 s; measured) under a deadline of 90 s + the part at 64 KiB/s.
Its clock runs only while the link answers other requests (`_live_clock`): on the flaky
bench (20 s outages), a deadline on wall time cancelled the parts in flight in each
outage, though their connections would have resumed, so their bytes were sent again (wire
1.17x the payload in one run, 1.00-1.07x without it), and a part whose clock also ran
through the outage's first seconds was cancelled soon after the link's return, while its
connection was resuming. Now an outage stops a part's clock and the link's return restarts
it, and a part left behind on a dead connection while others are answered is cancelled and
tried again on a new one. A dead part with nothing else in flight is left to the CRT's
throughput check (seen at a run's end on the bench, when only one file's parts were left);
a cheap request to learn whether the link answers would let the clock run there too.

Beware rclone serve s3: when an UploadPart's connection dies mid-request (a cancelled try's
body still reaches it after the link's return), it seems to drop the upload's staged file
("Removing partially written file on error: context canceled"), and the Complete then gets
InvalidPart (the file fails this run, the next sends it again). Seen in 2 of 6 bench runs
with the earlier forms of this deadline, in none of 5 with this one or of 3 without.

A deadline on a part's silence (no byte sent for N s) would have been better still: it
does not grow with the part's size. But nothing tells a part's progress on the wire: the
CRT reads a DEFAULT request's whole body into its own buffer at once (one read of the
part's size) and reports no upload progress (on_progress never fires for one); both
measured with awscrt 0.38.1.
"""

from __future__ import annotations

import html
import logging
import re
import threading
import time
import xml.etree.ElementTree as ET
from datetime import datetime
from typing import NamedTuple
from urllib.parse import quote, unquote_plus, urlsplit

from botocore.exceptions import ClientError, NoCredentialsError

from journalsync import crtthreads
from journalsync.config import MiB
from journalsync.integrity import BodyCheck

log = logging.getLogger(__name__)

_PROBE_KEY = "journalsync-endpoint-probe"

# object_args() keys and the header each becomes.
_HEADERS = {
    "ContentType": "Content-Type",
    "CacheControl": "Cache-Control",
    "StorageClass": "x-amz-storage-class",
    "ServerSideEncryption": "x-amz-server-side-encryption",
    "SSEKMSKeyId": "x-amz-server-side-encryption-aws-kms-key-id",
}


# With its retries off, the CRT reports these error answers by name only, without the
# response's status, headers or body. They are answers, not broken connections: they get
# the status and code botocore would have parsed, so retry.py sees throttling as throttling
# (and the shared backoff hears of it) and a skewed clock as fatal.
_ANSWERED_BY_NAME = {
    "AWS_ERROR_S3_SLOW_DOWN": (503, "SlowDown"),  # any 503
    "AWS_ERROR_S3_INTERNAL_ERROR": (500, "InternalError"),  # any 500, or an error in a 200
    "AWS_ERROR_S3_REQUEST_TIME_TOO_SKEWED": (403, "RequestTimeTooSkewed"),
    "AWS_ERROR_S3_REQUEST_TIMEOUT": (400, "RequestTimeout"),
}


class CrtConnectionError(ConnectionError):
    """The CRT could not complete the exchange (refused, reset, closed, TLS). retry.py decides
    from `crt_error` (the CRT's error name) whether it is worth another attempt."""

    def __init__(self, message: str, crt_error: str = "", endpoint: str = ""):
        super().__init__(message)
        self.crt_error = crt_error
        self.endpoint = endpoint


class Deadline:
    """How long a small request may take before it counts as stuck: FACTOR times the
    smoothed duration of the last ones (as TCP's RTO follows its SRTT), at least FLOOR s.
    None until one has finished: the caller's own timeout serves until then."""

    FLOOR = 3.0
    FACTOR = 8.0

    def __init__(self) -> None:
        self.smoothed: float | None = None
        self._lock = threading.Lock()

    def observe(self, seconds: float) -> None:
        with self._lock:
            self.smoothed = seconds if self.smoothed is None else 0.875 * self.smoothed + 0.125 * seconds

    def expired(self) -> None:
        """A request ran out of its deadline: double it (as TCP backs off its RTO), so a
        store that has become slow is waited for rather than cancelled again and again."""
        with self._lock:
            if self.smoothed is not None:
                self.smoothed *= 2

    def seconds(self, size: int) -> float | None:
        """The deadline for a body of `size` bytes: the time for the body at 64 KiB/s on top."""
        if self.smoothed is None:
            return None
        return max(self.FLOOR, self.FACTOR * self.smoothed) + size / 65536


class PartDeadline(Deadline):
    """How long a part may take before it counts as stuck: FACTOR times the smoothed time
    the last parts took per MiB, times its size, at least FLOOR s; doubled each time one
    runs out (Deadline's rules). None until a part of at least a MiB has finished (a tiny
    last part's time is its latency, not the link's rate): the caller's own timeout serves
    until then."""

    FLOOR = 5.0
    FACTOR = 4.0

    def observe_part(self, size: int, seconds: float) -> None:
        if size >= MiB:
            self.observe(seconds * MiB / size)

    def part_seconds(self, size: int) -> float | None:
        if self.smoothed is None:
            return None
        return max(self.FLOOR, self.FACTOR * self.smoothed * size / MiB)


class StuckError(Exception):
    """A request waited past its deadline while the link answered others (CrtS3._wait)."""


class CrtS3:
    """Sends PutObject and ListObjectsV2 requests through one awscrt S3Client shared by every
    thread. Thread-safe: each call builds its own request and waits on its own future."""

    def __init__(self, base_url: str, region: str, credentials, connections: int,
                 timeout: float, connect_timeout: float, ca_file: str | None = None):
        from awscrt import auth, s3

        crtthreads.prepare()

        parts = urlsplit(base_url)
        self._host = parts.netloc
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._path_prefix = parts.path  # "/bucket/" (path style) or "/" (virtual host)
        self._bucket_path = parts.path.rstrip("/") or "/"
        self._timeout = timeout
        self.put_deadline = Deadline()
        self.part_deadline = PartDeadline()
        self._answered_at = 0.0  # time.monotonic() of the last answer to any request
        self._back_at = 0.0  # and of the first after LIVE s without one (an outage's end)
        self._s3 = s3
        tls = s3.S3RequestTlsMode.ENABLED if parts.scheme == "https" else s3.S3RequestTlsMode.DISABLED

        provider = crtthreads.credentials_provider(auth, credentials)
        self._client = s3.S3Client(
            region=region, tls_mode=tls, credential_provider=provider,
            tls_connection_options=_trusting(ca_file) if parts.scheme == "https" else None,
            retry_config=s3.S3RetryConfig(retry_mode=s3.S3RetryMode.NONE),
            max_active_connections_override=connections,
            connect_timeout_ms=int(connect_timeout * 1000))

    @classmethod
    def create(cls, botocore_client, bucket: str, region: str, credentials, connections: int,
               timeout: float, connect_timeout: float, ca_file: str | None = None) -> CrtS3 | None:
        """A client for `bucket` that signs for `region` and trusts exactly the CAs in
        `ca_file` (the caller passes botocore's own bundle when none is configured), or None
        when awscrt is missing (the classic
        path serves)."""
        try:
            import awscrt.s3
        except ImportError:
            log.info("awscrt is not installed: small files go through botocore")
            return None
        if not hasattr(awscrt.s3, "S3RetryMode"):  # awscrt < 0.38.1 always retries itself
            log.info("awscrt is too old to leave retries to us: small files go through botocore")
            return None
        if credentials is None:
            return None  # the classic path raises NoCredentialsError with its own words
        url = botocore_client.generate_presigned_url(
            "put_object", Params={"Bucket": bucket, "Key": _PROBE_KEY}, ExpiresIn=60)
        parts = urlsplit(url)
        if not parts.path.endswith("/" + _PROBE_KEY):
            return None  # an addressing form we do not understand: stay classic
        base = f"{parts.scheme}://{parts.netloc}{parts.path[:-len(_PROBE_KEY)]}"
        return cls(base, region, credentials, connections, timeout, connect_timeout, ca_file)

    @staticmethod
    def supports(args: dict) -> bool:
        return all(name in _HEADERS or name in ("Bucket", "Key", "Metadata") for name in args)

    def put(self, args: dict, data: bytes, check: BodyCheck) -> str:
        """PUT `data` under args["Key"] with its checksum (integrity.py) and return the ETag
        (unquoted). Raises ClientError for an error response, CrtConnectionError or
        TimeoutError when there was none."""
        headers = [("Content-Length", str(len(data))), check.header]
        for name, header in _HEADERS.items():
            if args.get(name):
                headers.append((header, args[name]))
        for name, value in (args.get("Metadata") or {}).items():
            headers.append((f"x-amz-meta-{name}", value))
        path = self._path_prefix + quote(args["Key"], safe="/~")
        # The whole exchange's deadline: a base, plus time for the body at 64 KiB/s; once
        # PUTs have been answered, a multiple of how long they take (see Deadline).
        limit = self._timeout + len(data) / 65536
        deadline = self.put_deadline.seconds(len(data))
        started = time.monotonic()
        try:
            response_headers, _ = self._send("PUT", path, headers, data, "PutObject",
                                             min(deadline or limit, limit))
        except TimeoutError:
            self.put_deadline.expired()
            raise
        self.put_deadline.observe(time.monotonic() - started)
        etag = next((v for k, v in response_headers if k.lower() == "etag"), "")
        return etag.strip('"')

    def upload_part(self, key: str, upload_id: str, number: int, data,
                    check: BodyCheck, length: int | None = None) -> str:
        """UploadPart of our own multipart upload; returns the part's ETag as sent (quoted).
        `data` is bytes, or a stream of `length` bytes the CRT reads (prehash.PartStream:
        no copy of ours; the CRT reads it whole into its own buffer as the request starts)."""
        query = f"partNumber={number}&uploadId={quote(upload_id, safe='-_.~')}"
        path = self._path_prefix + quote(key, safe="/~") + "?" + query
        size = len(data) if length is None else length
        headers = [("Content-Length", str(size)), check.header]
        # The whole exchange's deadline: a base, plus the body at 64 KiB/s (minutes for a
        # large part); once parts have been answered, a multiple of how long they take,
        # counted only while the link answers others (see the module docstring).
        deadline = self.part_deadline.part_seconds(size)
        started = time.monotonic()
        try:
            response_headers, _ = self._send("PUT", path, headers, data, "UploadPart",
                                             self._timeout + size / 65536,
                                             self._live_clock(deadline) if deadline else None)
        except TimeoutError:
            self.part_deadline.expired()
            raise
        self.part_deadline.observe_part(size, time.monotonic() - started)
        return next((v for k, v in response_headers if k.lower() == "etag"), "")

    LIVE = 5.0  # the link counts as up while some request was answered this recently
    TICK = 0.25

    def _live_clock(self, deadline: float):
        """A `stuck` test for _send: True once the request has waited `deadline` s plus LIVE
        s of the time during which the link answered other requests, counted from its
        start or from the link's last return after an outage, whichever is later. An outage
        stops its clock (after LIVE s) and the link's return starts it afresh, so a part is
        not cancelled and sent again for an outage its connection rides out; a part left
        behind on a dead connection once the link is back is."""
        live, last = 0.0, time.monotonic()
        since = last

        def stuck() -> bool:
            nonlocal live, last, since
            now = time.monotonic()
            if self._back_at > since:  # the link is back after an outage: a fresh start
                since, live = self._back_at, 0.0
            if now - self._answered_at < self.LIVE:
                live += now - last
            last = now
            return live > deadline + self.LIVE

        return stuck

    def _answered(self) -> None:
        """An answer came: the link works (and came back, after LIVE s without one)."""
        now = time.monotonic()
        if now - self._answered_at >= self.LIVE:
            self._back_at = now
        self._answered_at = now

    def list_page(self, prefix: str, token: str | None, delimiter: str | None = None) -> ListPage:
        """One ListObjectsV2 page of up to 1,000 keys under `prefix`: rows of (key, size,
        etag, last_modified seconds), the common prefixes (with a delimiter), and the
        continuation token, None on the last page."""
        query = {"list-type": "2", "prefix": prefix, "max-keys": "1000", "encoding-type": "url"}
        if token:
            query["continuation-token"] = token
        if delimiter:
            query["delimiter"] = delimiter
        path = self._bucket_path + "?" + "&".join(
            f"{k}={quote(v, safe='-_.~')}" for k, v in sorted(query.items()))
        _, body = self._send("GET", path, [], b"", "ListObjectsV2", self._timeout)
        page = parse_list_page(body)
        if page.token is None and _TRUNCATED.search(body):
            raise IncompleteListing(prefix)
        return page

    def _send(self, method: str, path: str, headers: list, data: bytes, operation: str,
              timeout: float, stuck=None) -> tuple[list, bytes]:
        """One exchange. Raises TimeoutError after `timeout` s, or once `stuck()` (asked
        every TICK s) says so; either way the request is cancelled first."""
        from awscrt.exceptions import AwsCrtError
        from awscrt.http import HttpHeaders, HttpRequest

        request = HttpRequest(method, path, HttpHeaders([("Host", self._host)] + headers),
                              (crtthreads.Body(data) if data else None)
                              if isinstance(data, (bytes, bytearray)) else data)
        got: dict = {"headers": [], "body": []}

        def on_headers(status_code, headers, **_kwargs):
            crtthreads.keep_thread_state()
            got["headers"] = headers

        def on_body(chunk, **_kwargs):
            got["body"].append(chunk)

        s3 = self._s3
        meta = self._client.make_request(type=s3.S3RequestType.DEFAULT, operation_name=operation,
                                         request=request, on_headers=on_headers,
                                         on_body=on_body if method == "GET" else None,
                                         on_done=crtthreads.on_done)
        try:
            self._wait(meta.finished_future, timeout, stuck)
        except s3.S3ResponseError as exc:
            self._answered()
            raise client_error(exc.status_code, exc.headers or [], exc.body, operation) from None
        except AwsCrtError as exc:
            if exc.name.startswith("AWS_AUTH_"):
                raise NoCredentialsError() from exc
            if exc.name in _ANSWERED_BY_NAME:
                raise answered_by_name(exc.name, exc.message, operation) from None
            raise CrtConnectionError(f"{exc.name}: {exc.message} ({self._origin})", exc.name,
                                     self._origin) from None
        except TimeoutError:
            meta.cancel()
            try:  # let the CRT let go of the body (a part's reads the file) before a retry
                meta.finished_future.exception(timeout=5)
            except Exception:  # noqa: BLE001 - cancelled either way
                pass
            raise TimeoutError(f"{operation} got no response in {timeout:.1f}s") from None
        except StuckError as exc:
            meta.cancel()
            try:  # let the CRT let go of the body (a part's reads the file) before a retry
                meta.finished_future.exception(timeout=5)
            except Exception:  # noqa: BLE001 - cancelled either way
                pass
            log.info("%s: cancelled, to be tried again on a new connection", exc)
            raise TimeoutError(f"{operation} {exc}") from None
        self._answered()
        return got["headers"], b"".join(got["body"])

    def _wait(self, future, timeout: float, stuck) -> None:
        if stuck is None:
            future.result(timeout=timeout)
            return
        started = time.monotonic()
        while True:
            left = timeout - (time.monotonic() - started)
            try:
                future.result(timeout=max(0.0, min(self.TICK, left)))
                return
            except TimeoutError:
                if left <= self.TICK:
                    raise
                if stuck():
                    raise StuckError(f"got no answer in {time.monotonic() - started:.1f}s "
                                     "while the link answered other requests") from None


def _trusting(ca_file: str | None):
    """TLS options that trust only the CAs in `ca_file`, as botocore does with its bundle;
    None keeps the CRT's default (the system's trust store)."""
    if not ca_file:
        return None
    from awscrt.io import ClientTlsContext, TlsContextOptions

    options = TlsContextOptions()
    options.override_default_trust_store_from_path(ca_dirpath=None, ca_filepath=ca_file)
    return ClientTlsContext(options).new_connection_options()


class IncompleteListing(Exception):
    """A listing page says more keys follow but not where: the listing cannot be finished,
    and a plan (or a delete) from part of it would be wrong."""

    def __init__(self, prefix: str):
        super().__init__(f"a page listing {prefix!r} says it is truncated but gives no "
                         "continuation token; refusing to plan from a partial listing")


class ListPage(NamedTuple):
    rows: list[tuple]  # (key, size, etag, last_modified seconds)
    prefixes: list[str]  # CommonPrefixes, when a delimiter was given
    token: str | None  # NextContinuationToken; None on the last page


_CONTENTS = re.compile(rb"<Contents>(.*?)</Contents>", re.S)
_PREFIX = re.compile(rb"<CommonPrefixes>\s*<Prefix>([^<]*)</Prefix>\s*</CommonPrefixes>")
_FIELD = re.compile(rb"<(Key|Size|ETag|LastModified)>([^<]*)</")
_TRUNCATED = re.compile(rb"<IsTruncated>\s*true\s*</IsTruncated>")
_NEXT = re.compile(rb"<NextContinuationToken>([^<]*)</NextContinuationToken>")
_URL_ENCODED = re.compile(rb"<EncodingType>\s*url\s*</EncodingType>")


def parse_list_page(body: bytes) -> ListPage:
    """Rows, common prefixes and the next token from a ListObjectsV2 XML body. Keys are URL-decoded only when the
    server says it encoded them (as botocore does); XML entities are unescaped."""
    url_encoded = _URL_ENCODED.search(body) is not None
    rows = []
    for block in _CONTENTS.findall(body):
        fields = {name: value for name, value in _FIELD.findall(block)}
        key = _text(fields[b"Key"])
        if url_encoded:
            key = unquote_plus(key)
        rows.append((key, int(fields[b"Size"]), _text(fields.get(b"ETag", b"")).strip('"'),
                     _timestamp(_text(fields[b"LastModified"]))))
    prefixes = [_text(p) for p in _PREFIX.findall(body)]
    if url_encoded:
        prefixes = [unquote_plus(p) for p in prefixes]
    token = None
    if _TRUNCATED.search(body):
        found = _NEXT.search(body)
        token = _text(found.group(1)) if found else None
    return ListPage(rows, prefixes, token)


def _text(raw: bytes) -> str:
    value = raw.decode("utf-8")
    return html.unescape(value) if "&" in value else value


def _timestamp(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def answered_by_name(name: str, message: str, operation: str) -> ClientError:
    """botocore's ClientError for an error answer the CRT reported only by its name."""
    status, code = _ANSWERED_BY_NAME[name]
    return ClientError({"Error": {"Code": code, "Message": message},
                        "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": {}}},
                       operation)


def client_error(status: int, headers, body: bytes | None, operation: str) -> ClientError:
    """botocore's ClientError for an S3 error response, as botocore itself would parse it."""
    error: dict = {"Code": str(status), "Message": ""}
    if body:
        try:
            root = ET.fromstring(body)
            for child in root:
                error[child.tag.rsplit("}", 1)[-1]] = child.text or ""
        except ET.ParseError:
            error["Message"] = body[:200].decode("utf-8", "replace")
    response = {"Error": error,
                "ResponseMetadata": {"HTTPStatusCode": status,
                                     "HTTPHeaders": {k.lower(): v for k, v in headers}}}
    return ClientError(response, operation)
