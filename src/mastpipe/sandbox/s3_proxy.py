"""The S3 side's front: a small proxy before moto that logs every request in the sandbox's
:class:`~.log.RequestLog` (endpoint ``s3``), injects the faults of endpoint ``s3`` and has the
bucket's object uploaded the first time it is asked for (:meth:`~.s3.S3Side.ensure`)."""

from __future__ import annotations

import fnmatch
import http.client
import sys
import time
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from mastpipe.sandbox.bucket import BUCKET, uri_for_key
from mastpipe.sandbox.log import Record
from mastpipe.sandbox.respond import CHUNK
from mastpipe.sandbox.server import TrackingServer

if TYPE_CHECKING:  # pragma: no cover
    from mastpipe.sandbox.s3 import S3Side

__all__ = ["Front"]

_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
        "host"}


class Front(TrackingServer):
    """The proxy's threaded server, bound to one :class:`~.s3.S3Side`."""

    def __init__(self, address: tuple[str, int], side: S3Side) -> None:
        self.side = side
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (OSError, _Drop)):
            return
        super().handle_error(request, client_address)


class _Drop(Exception):
    """Close the client's connection now (the drop_rate fault)."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "mastpipe-sandbox-s3/0.1"
    disable_nagle_algorithm = True
    timeout = 120
    server: Front
    _upstream: http.client.HTTPConnection | None = None  # this connection's to moto

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: the RequestLog has every request."""

    def do_GET(self) -> None:
        self._request = self.server.side.sandbox.log.open_request()
        try:
            self._answer()
        finally:
            self._request.close()

    do_HEAD = do_PUT = do_POST = do_DELETE = do_GET

    def _answer(self) -> None:
        side = self.server.side
        sb = side.sandbox
        t0 = time.time()
        split = urlsplit(self.path)
        path = unquote(split.path)
        bucket, _, key = path.lstrip("/").partition("/")
        uri = uri_for_key(key) if bucket == BUCKET and key else None
        self._status, self._sent = 0, 0
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        try:
            self._serve(side, bucket, key, uri, split.query, body)
        finally:
            sb.log.add(Record(method=self.command, path=path, endpoint="s3", uri=uri,
                              range=self.headers.get("Range"), if_range=self.headers.get("If-Range"),
                              has_token=self._presents_token(), status=self._status,
                              bytes_sent=self._sent, time=t0))

    def _presents_token(self) -> bool:
        if self.headers.get("Authorization", "").lower().startswith("bearer "):
            return True
        tokens = self.server.side.sandbox.tokens
        text = "\n".join(f"{k}: {v}" for k, v in self.headers.items())
        return "mast_token" in text or any(t in text for t in tokens)

    def _serve(self, side: S3Side, bucket: str, key: str, uri: str | None, query: str, body: bytes) -> None:
        faults = side.sandbox.faults
        ep = "s3"
        fault_key = uri or self.path
        attempt = faults.next_attempt(ep, fault_key)
        if key and self.command in ("GET", "HEAD"):
            fail = faults.value(ep, "fail_first")
            code = None
            if fail and attempt <= fail[0]:
                code = fail[1]
            elif faults.hit(ep, fault_key, attempt, "error_rate"):
                code = faults.choose(ep, fault_key, attempt, "error_rate", faults.value(ep, "error_rate")[1])
            elif faults.hit(ep, fault_key, attempt, "throttle_rate"):
                code = 503
            if code is not None:
                self._sleep(ep)
                self._error(code, faults.retry_after_header(ep))
                return
            pattern = faults.value(ep, "missing")
            if not (pattern and uri and fnmatch.fnmatchcase(uri, pattern)):
                side.ensure(key)
            elif bucket == BUCKET:
                self._sleep(ep)
                self._not_found(key)
                return
        self._forward(side, faults, ep, fault_key, attempt, query, body)

    def _sleep(self, ep: str) -> None:
        delay = self.server.side.sandbox.faults.value(ep, "latency")
        if delay:
            time.sleep(delay)

    def _send(self, status: int, headers: list[tuple[str, str]], payload: bytes) -> None:
        self._status = status
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self._request.last_byte_next()
        self.end_headers()
        if self.command != "HEAD" and payload:
            self.wfile.write(payload)
            self._sent += len(payload)

    def _error(self, code: int, retry_after: str) -> None:
        name = {503: "SlowDown", 500: "InternalError"}.get(code, "ServiceUnavailable")
        message = "Please reduce your request rate." if code == 503 else "We encountered an internal error."
        payload = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{name}</Code>'
                   f"<Message>{message}</Message><RequestId>sandbox</RequestId></Error>").encode()
        self._send(code, [("Content-Type", "application/xml"), ("Retry-After", retry_after)], payload)

    def _not_found(self, key: str) -> None:
        payload = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>NoSuchKey</Code><Message>The specified '
                   f"key does not exist.</Message><Key>{key}</Key></Error>").encode()
        self._send(404, [("Content-Type", "application/xml")], payload)

    def _forward(self, side: S3Side, faults: Any, ep: str, fault_key: str, attempt: int, query: str,
                 body: bytes) -> None:
        conn: http.client.HTTPConnection | None = getattr(self, "_upstream", None)
        if conn is None:
            conn = self._upstream = http.client.HTTPConnection("127.0.0.1", side._moto.port, timeout=120)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
        headers["Host"] = f"127.0.0.1:{side._moto.port}"
        target = self.path
        try:
            conn.request(self.command, target, body=body or None, headers=headers)
            response = conn.getresponse()
        except (OSError, http.client.HTTPException):
            conn.close()
            conn = self._upstream = http.client.HTTPConnection("127.0.0.1", side._moto.port, timeout=120)
            conn.request(self.command, target, body=body or None, headers=headers)
            response = conn.getresponse()
        self._sleep(ep)
        length = response.getheader("Content-Length")
        size = int(length) if length is not None else None
        cut = None
        if size and self.command == "GET" and response.status in (200, 206) and \
                faults.hit(ep, fault_key, attempt, "drop_rate"):
            cut = int(size * faults.value(ep, "drop_at"))
            self.close_connection = True
        self._status = response.status
        self.send_response(response.status)
        for name, value in response.getheaders():
            if name.lower() not in _HOP and name.lower() not in ("server", "date"):
                self.send_header(name, value)
        if size is None and self.command != "HEAD":
            self.close_connection = True
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command == "HEAD":
            response.read()
            return
        bandwidth = faults.value(ep, "bandwidth")
        step = max(1024, int(bandwidth / 20)) if bandwidth else CHUNK
        started = time.monotonic()
        while True:
            block = response.read1(step) if hasattr(response, "read1") else response.read(step)
            if not block:
                break
            if cut is not None and self._sent + len(block) >= cut:
                block = block[:cut - self._sent]
                self.wfile.write(block)
                self._sent += len(block)
                self.wfile.flush()
                conn.close()
                self._upstream = None
                raise _Drop()
            if size is not None and self._sent + len(block) >= size:
                self._request.last_byte_next()
            self.wfile.write(block)
            self._sent += len(block)
            if bandwidth:
                ahead = self._sent / bandwidth - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)

    def finish(self) -> None:
        upstream = getattr(self, "_upstream", None)
        if upstream is not None:
            upstream.close()
        try:
            super().finish()
        except OSError:
            pass

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except (_Drop, OSError):
            self.close_connection = True
