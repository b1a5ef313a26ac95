"""A small HTTP reverse proxy between journalsync and a local S3 server.

It records every request, its answer and how many were in flight over time, so tests
prove on the wire what was (not) sent and how fast, and it can
inject faults: a `hook(request)` called for each request may return a `Fault` to answer
with an error instead of forwarding, or after forwarding (the server did the work but the
client hears a failure), or to hold the request for a while.

SigV4 signs the Host header, so the proxy forwards the client's Host unchanged; `Expect`
is not signed and is dropped (the proxy has already read the body).
"""

from __future__ import annotations

import http.client
import re
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

_HOP_HEADERS = {"expect", "connection", "keep-alive", "proxy-connection", "transfer-encoding", "te"}


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    size: int
    headers: tuple[tuple[str, str], ...] = ()  # as received, for hooks that read them
    at: float = field(default=0.0, compare=False)  # time.monotonic() when its headers came

    def header(self, name: str) -> str:
        """The value of a request header (case-insensitive), or ""."""
        return next((v for k, v in self.headers if k.lower() == name.lower()), "")

    @property
    def operation(self) -> str:
        """A rough S3 operation name, enough to aim a fault."""
        q = self.query
        if self.method == "PUT" and "partNumber" in q:
            return "UploadPart"
        if self.method == "POST" and "delete" in q:
            return "DeleteObjects"
        if self.method == "POST" and "uploads" in q:
            return "CreateMultipartUpload"
        if self.method == "POST" and "uploadId" in q:
            return "CompleteMultipartUpload"
        if self.method == "DELETE" and "uploadId" in q:
            return "AbortMultipartUpload"
        if self.method == "GET" and "uploadId" in q:
            return "ListParts"
        if self.method == "GET" and "uploads" in q:
            return "ListMultipartUploads"
        if self.method == "GET" and ("list-type" in q or self.path.count("/") <= 1):
            return "ListObjects"
        return {"PUT": "PutObject", "HEAD": "HeadObject", "GET": "GetObject",
                "DELETE": "DeleteObject", "POST": "Post"}[self.method]


@dataclass(frozen=True)
class Fault:
    status: int = 500  # 200 sends an error document with a 200 status, as S3 sometimes does
    code: str = "InternalError"
    after_forward: bool = False  # forward first, then answer with the error anyway
    reset: bool = False  # read about half the body, then drop the connection with a RST
    # (with after_forward: forward the whole request, then drop the connection unanswered)
    fields: tuple[tuple[str, str], ...] = ()  # extra elements in the error document
    delay: float = 0.0  # hold the request (before reading its body), then go on; status=0
    # with a delay only delays
    rewrite: Callable[[bytes], bytes] | None = None  # with status=0: edit the server's answer
    flip: bool = False  # forward the body with one byte flipped (damage in transit); status=0
    # A connection that goes silent: read `stall_at` of the body (1.0: all of it), then read
    # and answer nothing for `stall` s (or until the proxy closes), then drop it.
    stall: float = 0.0
    stall_at: float = 0.5
    # The store takes the request, its answer never comes: forward it, then hold the answer
    # for `hold` s (or until the proxy closes) and drop the connection unanswered; status=0.
    hold: float = 0.0


@dataclass(frozen=True)
class Answer:
    request: Request
    status: int
    code: str | None  # the error document's Code, for an error
    at: float  # time.monotonic() when the answer was sent


Hook = Callable[[Request], Fault | None]


def _error_code(body: bytes) -> str | None:
    found = re.search(rb"<Code>([^<]*)</Code>", body or b"")
    return found.group(1).decode() if found else None


def _flipped(body: bytes) -> bytes:
    """The body with one bit of its middle byte inverted: same length, other bytes."""
    damaged = bytearray(body)
    damaged[len(damaged) // 2] ^= 0x01
    return bytes(damaged)


class RecordingProxy:
    def __init__(self, upstream_port: int, hook: Hook | None = None):
        self.upstream_port = upstream_port
        self.hook = hook
        self.requests: list[Request] = []
        self._active: Counter = Counter()
        self.answers: list[Answer] = []  # what each request was answered, in order
        self.timeline: list[tuple[float, int]] = []  # (monotonic time, requests in flight)
        self._in_flight = 0
        self._lock = threading.Lock()
        self._closing = threading.Event()  # ends stalled connections when the proxy closes
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _handler_class(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _forward(self):
                proxy._enter()  # the headers are in: from here until the answer, in flight
                try:
                    self._serve()
                finally:
                    proxy._leave()

            def _serve(self):
                length = int(self.headers.get("Content-Length") or 0)
                url = urlsplit(self.path)
                req = Request(self.command, url.path, parse_qs(url.query, keep_blank_values=True),
                              length, tuple(self.headers.items()), time.monotonic())
                proxy._record(req)  # as soon as the headers are in: a started request counts
                self._unfinished = True
                try:
                    self._answer(req, length)
                finally:
                    self._finish(req)

            def _finish(self, req: Request):
                if self._unfinished:
                    self._unfinished = False
                    proxy._finished(req)

            def _answer(self, req: Request, length: int):
                fault = proxy.hook(req) if proxy.hook else None
                if fault and fault.delay:
                    time.sleep(fault.delay)  # the client is still sending the body meanwhile
                if fault and fault.reset and not fault.after_forward:
                    return self._reset(length)
                if fault and fault.stall:
                    return self._stall(length, fault)
                body = self.rfile.read(length) if length else None
                if length and len(body or b"") < length:
                    self.close_connection = True
                    return  # the client went away mid-body: forward nothing, like a server
                if fault and fault.status and not fault.after_forward:
                    return self._error(req, fault)
                if fault and fault.flip and body:
                    body = _flipped(body)
                status, reason, headers, data = proxy._upstream(self.command, self.path, self.headers, body)
                if fault and fault.reset and fault.after_forward:
                    return self._reset(0)  # the server did the work; the answer is lost
                if fault and fault.hold:
                    proxy._closing.wait(fault.hold)
                    return self._reset(0)
                if fault and fault.status and fault.after_forward:
                    return self._error(req, fault)
                if fault and fault.rewrite:
                    data = fault.rewrite(data)
                proxy._answered(req, status, _error_code(data) if status >= 300 else None)
                # No longer in flight once its answer starts out: the client may act on it
                # (and send its next request) before this thread runs again.
                self._finish(req)
                self.send_response_only(status, reason)
                for name, value in headers:
                    low = name.lower()
                    if low in _HOP_HEADERS or (low == "content-length" and self.command != "HEAD"):
                        continue
                    self.send_header(name, value)
                if self.command != "HEAD":
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def _stall(self, length: int, fault: Fault):
                self.rfile.read(int(length * fault.stall_at))
                proxy._closing.wait(fault.stall)
                self.close_connection = True
                self.connection.close()

            def _reset(self, length: int):
                if length:
                    self.rfile.read(max(1, length // 2))
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                           struct.pack("ii", 1, 0))  # close => RST
                self.close_connection = True
                self.connection.close()

            def _error(self, req: Request, fault: Fault):
                proxy._answered(req, fault.status, fault.code)
                extra = "".join(f"<{k}>{v}</{k}>" for k, v in fault.fields)
                body = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{fault.code}</Code>'
                        f"<Message>injected by the test proxy</Message>{extra}</Error>").encode()
                self._finish(req)
                self.send_response_only(fault.status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body) if self.command != "HEAD" else 0))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        return Handler

    def _upstream(self, method, path, headers, body):
        conn = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=120)
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for name, value in headers.items():
                if name.lower() not in _HOP_HEADERS:
                    conn.putheader(name, value)
            try:
                conn.endheaders(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server answered before reading the whole body: relay that answer
            resp = conn.getresponse()
            return resp.status, resp.reason, resp.getheaders(), resp.read()
        finally:
            conn.close()

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _record(self, req: Request) -> None:
        with self._lock:
            self.requests.append(req)
            self._active[req.operation] += 1

    def _finished(self, req: Request) -> None:
        with self._lock:
            self._active[req.operation] -= 1

    def in_flight(self, operation: str) -> int:
        """Requests of `operation` received and not yet answered (or dropped)."""
        with self._lock:
            return self._active[operation]

    def _enter(self) -> None:
        with self._lock:
            self._in_flight += 1
            self.timeline.append((time.monotonic(), self._in_flight))

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1
            self.timeline.append((time.monotonic(), self._in_flight))

    def _answered(self, req: Request, status: int, code: str | None) -> None:
        with self._lock:
            self.answers.append(Answer(req, status, code, time.monotonic()))

    def peak_in_flight(self, since: float = float("-inf"), until: float = float("inf")) -> int:
        """The most requests in flight at once between two monotonic times."""
        with self._lock:
            return max((n for t, n in self.timeline if since <= t <= until), default=0)

    def counts(self) -> Counter:
        with self._lock:
            return Counter(r.method for r in self.requests)

    def operations(self) -> Counter:
        with self._lock:
            return Counter(r.operation for r in self.requests)

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()
            self.answers.clear()
            self.timeline.clear()

    def __enter__(self) -> RecordingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
