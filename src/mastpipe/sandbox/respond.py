"""What every service of the sandbox's HTTP server shares: reading the request, logging it, and
sending the answer with the faults of its endpoint applied.

:class:`Responder` is the base of the service mixins (:mod:`.caom_api`, :mod:`.files_api`,
:mod:`.mission_api`, :mod:`.auth_api`) that :class:`~.server.Handler` is assembled from. The
attributes it declares are set per request by :meth:`~.server.Handler._answer`.
"""

from __future__ import annotations

import json
import socket
import time
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any, Iterable
from urllib.parse import parse_qs, urlsplit

from mastpipe.sandbox.faults import Faults
from mastpipe.sandbox.log import OpenRequest, Record

if TYPE_CHECKING:  # pragma: no cover
    from mastpipe.sandbox.server import SandboxHTTPServer

__all__ = ["CHUNK", "QUIET", "Drop", "Responder"]

CHUNK = 1 << 20  # streaming write size: big writes keep loopback throughput high
QUIET = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, socket.timeout, TimeoutError)


class Drop(Exception):
    """Close the connection now (a fault, or a client that went away)."""


class Responder(BaseHTTPRequestHandler):
    """Request plumbing and response helpers shared by the service mixins."""

    server: SandboxHTTPServer
    # set for each request by Handler._answer
    _request: OpenRequest
    _path: str
    _query: dict[str, list[str]]
    _body: bytes
    _token_name: "str | None"
    _presented: bool
    _rec: dict[str, Any]
    _status: int
    _sent: int
    _planned: int
    _rows: int
    _t0: float
    _committed: "Record | None"

    def _record(self, bytes_sent: int) -> Record:
        return Record(**self._rec, has_token=self._presented, status=self._status, rows=self._rows,
                      bytes_sent=bytes_sent, time=self._t0)

    def _commit(self, bytes_sent: int) -> None:
        """Log the request, with the body it is about to get, *before* its headers go out.

        A client may act on the status line alone (a retry after a 408 need not read the body)
        or read the log as soon as it has the whole response; logging any later would let a
        following request's record overtake this one.  When fewer bytes than planned go out
        (the client hung up), ``_answer`` corrects the record in place.
        """
        if self._committed is None:
            self._committed = self.server.sandbox.log.add(self._record(bytes_sent), persist=False)

    def _read_body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        try:
            n = int(length)
        except ValueError:
            return b""
        return self.rfile.read(n) if n > 0 else b""

    def _form(self) -> dict[str, list[str]]:
        try:
            return parse_qs(self._body.decode("utf-8", "replace"), keep_blank_values=True)
        except ValueError:
            return {}

    # ------------------------------------------------------------------ response helpers
    @property
    def _faults(self) -> Faults:
        return self.server.sandbox.faults

    def _start(self, status: int, headers: Iterable[tuple[str, str]], body_len: int) -> None:
        self._status = status
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self._commit(0 if self.command == "HEAD" else body_len)
        self._planned = 0 if self.command == "HEAD" else body_len
        if self._planned == 0:
            self._request.last_byte_next()
        self.end_headers()

    def _send_simple(self, status: int, body: bytes, ctype: str = "application/json",
                     extra: Iterable[tuple[str, str]] = ()) -> None:
        headers = [("Content-Type", ctype), ("Content-Length", str(len(body))), *extra]
        self._start(status, headers, len(body))
        if self.command != "HEAD" and body:
            self._write(body)

    def _send_json(self, obj, status: int = 200) -> None:
        self._send_simple(status, json.dumps(obj).encode(), "application/json")

    def _write(self, data) -> None:
        if self._planned and self._sent + len(data) >= self._planned:
            self._request.last_byte_next()
        self.wfile.write(data)
        self._sent += len(data)

    def _status_faults(self, ep: str, key: str, attempt: int) -> bool:
        """Apply redirect / fail_first / error_rate / throttle; True if a response was sent."""
        f = self._faults
        base = f.value(ep, "redirect")
        if base:
            split = urlsplit(self.path)
            target = base + self._path + (f"?{split.query}" if split.query else "")
            self._sleep_latency(ep)
            self._send_simple(302, b"", "text/plain", [("Location", target)])
            return True
        retry = [("Retry-After", f.retry_after_header(ep))]
        fail = f.value(ep, "fail_first")
        if fail and attempt <= fail[0]:
            self._sleep_latency(ep)
            self._send_error_status(fail[1], retry if fail[1] in (429, 503) else [])
            return True
        if f.hit(ep, key, attempt, "error_rate"):
            code = f.choose(ep, key, attempt, "error_rate", f.value(ep, "error_rate")[1])
            self._sleep_latency(ep)
            self._send_error_status(code, retry if code in (429, 503) else [])
            return True
        if f.hit(ep, key, attempt, "throttle_rate"):
            self._sleep_latency(ep)
            self._send_error_status(429, retry)
            return True
        return False

    def _send_error_status(self, code: int, extra=()) -> None:
        phrase = self.responses.get(code, ("Error",))[0]
        self._send_simple(code, f"{code} {phrase}\n".encode(), "text/plain", extra)

    def _sleep_latency(self, ep: str) -> None:
        delay = self._faults.value(ep, "latency")
        if delay:
            time.sleep(delay)

    def _send_body(self, ep: str, key: str, attempt: int, status: int,
                   headers: list[tuple[str, str]], length: int, pieces, *,
                   declared: int | None = None) -> None:
        """Send status, headers and a body of ``length`` bytes with the body faults applied.

        ``pieces`` is an iterable of byte chunks totalling ``length``.
        """
        f = self._faults
        self._sleep_latency(ep)
        declared = length if declared is None else declared
        head = [h for h in headers if h[0].lower() != "content-length"]
        cut = length
        close = False
        if f.value(ep, "no_length") and f.hit(ep, key, attempt, "no_length"):
            close = True
            head.append(("Connection", "close"))
        else:
            if f.hit(ep, key, attempt, "bad_length_rate"):
                # Claim more than we send, then hang up: the client sees a short body.
                declared = length + max(1, length // 10)
                close = True
            head.append(("Content-Length", str(declared)))
            if f.hit(ep, key, attempt, "drop_rate"):
                cut = int(length * f.value(ep, "drop_at"))
                close = True
        if close:
            self.close_connection = True
        # Same-length corruption: one byte flipped in the middle of what is sent. Only a
        # content check (a FITS CHECKSUM, a known sha256) can see it; the size is right.
        flip = cut // 2 if cut and f.hit(ep, key, attempt, "corrupt_rate") else None
        self._start(status, head, cut)
        if self.command == "HEAD":
            return
        bandwidth = f.value(ep, "bandwidth")
        if length <= CHUNK and not bandwidth:
            pieces = [b"".join(pieces)]  # small body: one write, one syscall
        t0 = time.monotonic()
        sent = 0
        for piece in pieces:
            if sent >= cut:
                break
            if len(piece) > cut - sent:
                piece = piece[:cut - sent]
            if flip is not None and sent <= flip < sent + len(piece):
                piece = bytearray(piece)
                piece[flip - sent] ^= 0xFF
                flip = None
            if bandwidth:
                # Send in ~20 slices per second so the rate cap is smooth, not bursty.
                step = max(1024, int(bandwidth / 20))
                for i in range(0, len(piece), step):
                    part = piece[i:i + step]
                    self._write(part)
                    sent += len(part)
                    ahead = sent / bandwidth - (time.monotonic() - t0)
                    if ahead > 0:
                        time.sleep(ahead)
            else:
                self._write(piece)
                sent += len(piece)
        if close:
            self.wfile.flush()
            raise Drop()

    def _row_cap(self, ep: str) -> int:
        cap = self._faults.value(ep, "row_cap")
        return self.server.sandbox.row_cap if cap is None else cap
