"""HTTP server speaking MAST's API (protocol spec ``mast-protocol.md``), with fault injection.

One ``ThreadingHTTPServer`` (a thread per connection, HTTP/1.1 keep-alive) serves:

* ``POST /portal/Mashup/Mashup.asmx/columnsconfig``
* ``POST /api/v0/invoke`` (Mast.Caom.Filtered[.Position], Cone, Products, All, COUNT_BIG(*))
* ``HEAD|GET /api/v0.1/Download/file?uri=...`` (Range, If-Range, ETag, Last-Modified)
* ``POST /api/v0.1/Download/bundle.sh`` (a bash curl script)
* ``GET /whoami`` (cookie ``mast_token`` or ``Authorization: Bearer``)
* ``GET /api/v0.1/path_lookup/?uri=...&uri=...`` (where each product lies in the cloud bucket;
  more than 50 URIs answer 414, as on MAST)
* the mission search API (``mast-missions.md``; :mod:`.missions`), for ``jwst`` and ``hst``:
  ``POST /search/{mission}/api/v0.1/search`` and ``.../post_list_products``,
  ``HEAD|GET /search/{mission}/api/v0.1/retrieve_product?product_name=...`` and
  ``GET /search/util/api/v0.1/column_list?mission=...``. They share the fault endpoints of their
  CAOM counterparts: ``query``, ``products``, ``download`` and ``columnsconfig``.
"""

from __future__ import annotations

import json
import math
import re
import socket
import ssl
import threading
import time
from email.utils import formatdate
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Iterable
from urllib.parse import parse_qs, urlsplit

from mastpipe.sandbox import columns, missions
from mastpipe.sandbox.bundle import bundle_name, bundle_script
from mastpipe.sandbox.faults import Faults
from mastpipe.sandbox.log import Record
from mastpipe.sandbox.query import QueryError, angular_distance_arcsec, compile_filters, parse_position

if TYPE_CHECKING:  # pragma: no cover
    from mastpipe.sandbox import Sandbox

__all__ = ["SandboxHTTPServer", "Handler"]

_CHUNK = 1 << 20  # streaming write size: big writes keep loopback throughput high
_DEFAULT_PAGESIZE = 50_000
_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)
_QUIET = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, socket.timeout, TimeoutError)

_PATHS = {
    "/portal/mashup/mashup.asmx/columnsconfig": "columnsconfig",
    "/api/v0/invoke": "invoke",
    "/api/v0.1/download/file": "download",
    "/api/v0.1/download/bundle.sh": "bundle",
    "/api/v0.1/download/bundle": "bundle",
    "/whoami": "whoami",
    "/api/v0.1/path_lookup": "path_lookup",
    "/search/util/api/v0.1/column_list": "column_list",
}
_PATH_LOOKUP_MAX = 50  # MAST answers 414 Request-URI Too Large past this
_MISSION_PATH = re.compile(r"^/search/([A-Za-z0-9_]+)/api/v0\.1/(search|post_list_products|retrieve_product)/?$")


class _Drop(Exception):
    """Close the connection now (a fault, or a client that went away)."""


class SandboxHTTPServer(ThreadingHTTPServer):
    """Threaded server bound to one :class:`Sandbox`; silent about disconnecting clients."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address, sandbox: "Sandbox", ssl_context: "ssl.SSLContext | None" = None) -> None:
        self.sandbox = sandbox
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        self.connections_accepted = 0
        super().__init__(address, Handler)
        if ssl_context is not None:
            # The handshake waits for the first read, in the connection's own thread: a client
            # that stalls or rejects the certificate never holds up the accept loop.
            self.socket = ssl_context.wrap_socket(self.socket, server_side=True,
                                                  do_handshake_on_connect=False)

    def process_request(self, request, client_address) -> None:  # noqa: D102
        with self._open_lock:
            self._open.add(request)
            self.connections_accepted += 1
        super().process_request(request, client_address)

    def shutdown_request(self, request) -> None:  # noqa: D102
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Hang up on every open connection (idle keep-alive ones included).

        Without this, a client's pooled connection would still be served by a stopped sandbox.
        """
        with self._open_lock:
            conns = list(self._open)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request, client_address) -> None:  # noqa: D102
        import sys

        exc = sys.exc_info()[1]
        if isinstance(exc, _QUIET + (_Drop, ssl.SSLError)):  # incl. a client refusing our certificate
            return  # a client hanging up is normal, not worth a traceback
        super().handle_error(request, client_address)


class Handler(BaseHTTPRequestHandler):
    """Per-connection request handler."""

    protocol_version = "HTTP/1.1"
    server_version = "mastpipe-sandbox/0.1"
    sys_version = ""
    timeout = 120  # idle keep-alive connections are closed after this
    disable_nagle_algorithm = True  # headers then body: no 40 ms Nagle/delayed-ACK stalls

    server: SandboxHTTPServer

    # ------------------------------------------------------------------ plumbing
    def version_string(self) -> str:  # noqa: D102
        return self.server_version

    def log_message(self, format, *args) -> None:  # noqa: A002
        """Silence http.server's per-request stderr lines (the RequestLog has them)."""

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except _QUIET:
            self.close_connection = True
        except _Drop:
            self.close_connection = True

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_GET

    def _dispatch(self) -> None:
        self._planned = 0
        self._request = self.server.sandbox.log.open_request()
        try:
            self._answer()
        finally:
            self._request.close()

    def _answer(self) -> None:
        sb = self.server.sandbox
        self._t0 = time.time()
        split = urlsplit(self.path)
        path = re.sub(r"/{2,}", "/", split.path) or "/"
        self._path = path
        self._query = parse_qs(split.query, keep_blank_values=True)
        self._status = 0
        self._sent = 0
        self._committed: Record | None = None
        self._presented = False
        self._rows = 0
        self._rec = dict(method=self.command, path=path, endpoint="unknown", service=None,
                         obsids=[], uri=None, range=self.headers.get("Range"),
                         if_range=self.headers.get("If-Range"))
        self._body = self._read_body()
        self._token_name = self._token()
        try:
            route = _PATHS.get(path.lower().rstrip("/") or "/")
            mission = _MISSION_PATH.match(path)
            if mission is not None and mission.group(1).lower() != "util":
                self._mission(mission.group(1).lower(), mission.group(2))
            elif route == "column_list":
                self._rec["endpoint"] = "columnsconfig"
                self._column_list()
            elif route == "invoke":
                self._invoke()
            elif route == "columnsconfig":
                self._rec["endpoint"] = "columnsconfig"
                self._columnsconfig()
            elif route == "download":
                self._rec["endpoint"] = "download"
                self._download()
            elif route == "bundle":
                self._rec["endpoint"] = "bundle"
                self._bundle()
            elif route == "whoami":
                self._rec["endpoint"] = "whoami"
                self._whoami()
            elif route == "path_lookup":
                self._rec["endpoint"] = "path_lookup"
                self._path_lookup()
            else:
                self._send_simple(404, b"Not Found\n", "text/plain")
        except (_Drop,) + _QUIET:
            raise
        except Exception as exc:
            # A sandbox bug: answer 500 so the client is not left hanging, then let
            # handle_error print the traceback (bugs should be loud, disconnects quiet).
            if self._status == 0:
                self.close_connection = True
                body = json.dumps({"status": "ERROR", "msg": f"sandbox internal error: {exc!r}"})
                self._send_simple(500, body.encode())
            raise
        finally:
            final = self._record(self._sent)
            if self._committed is None:
                sb.log.add(final)
            else:
                if final != self._committed:
                    sb.log.replace(self._committed, final)
                sb.log.persist(final)

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

    def _token(self) -> "str | None":
        """The display name of a valid token sent with the request, or None.

        Also records in ``self._presented`` whether any token (valid or not) came along, which is
        what the request log's ``has_token`` reports (tests check where tokens travel).
        """
        tokens = self.server.sandbox.tokens
        candidates = []
        auth = self.headers.get("Authorization", "")
        if auth.lower().startswith("bearer "):
            candidates.append(auth[7:].strip())
        for header in self.headers.get_all("Cookie") or []:
            try:
                jar = SimpleCookie()
                jar.load(header)
            except CookieError:
                continue
            if "mast_token" in jar:
                candidates.append(jar["mast_token"].value)
        self._presented = bool(candidates)
        for c in candidates:
            if c in tokens:
                return tokens[c]
        return None

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
        if length <= _CHUNK and not bandwidth:
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
            raise _Drop()

    # ------------------------------------------------------------------ columnsconfig
    def _columnsconfig(self) -> None:
        ep = "columnsconfig"
        form = self._form()
        cid = (form.get("colConfigId") or self._query.get("colConfigId") or [""])[0]
        key = cid
        attempt = self._faults.next_attempt(ep, key)
        if self._status_faults(ep, key, attempt):
            return
        body = json.dumps(columns.column_config(cid)).encode()
        self._send_body(ep, key, attempt, 200, [("Content-Type", "application/json")],
                        len(body), [body])

    # ------------------------------------------------------------------ whoami
    def _whoami(self) -> None:
        ep = "whoami"
        attempt = self._faults.next_attempt(ep, "whoami")
        if self._status_faults(ep, "whoami", attempt):
            return
        name = self._token_name
        if name is None:
            info = {"eppn": "", "ezid": "anonymous", "attrib": {}, "anon": True, "scopes": [],
                    "session": None, "token": None}
        else:
            first, _, last = name.partition(" ")
            ezid = re.sub(r"[^a-z0-9]", "", name.lower()) or "user"
            info = {"eppn": f"{ezid}@stsci.edu", "ezid": ezid,
                    "attrib": {"uuid": "00000000-0000-4000-8000-000000000000", "first_name": first,
                               "last_name": last, "display_name": name, "internal": "0",
                               "email": f"{ezid}@example.org", "Jwstcalengdataaccess": "false"},
                    "anon": False, "scopes": ["mast:user:info", "mast:exclusive_access"],
                    "session": None, "token": "<redacted>"}
        body = json.dumps(info).encode()
        self._send_body(ep, "whoami", attempt, 200, [("Content-Type", "application/json")],
                        len(body), [body])

    # ------------------------------------------------------------------ path_lookup
    def _path_lookup(self) -> None:
        from .s3 import mast_path

        ep = "path_lookup"
        uris = self._query.get("uri") or self._form().get("uri") or []
        self._rec["uris"] = list(uris)
        key = "\n".join(uris)
        attempt = self._faults.next_attempt(ep, key)
        if self._status_faults(ep, key, attempt):
            return
        if len(uris) > _PATH_LOOKUP_MAX:
            self._sleep_latency(ep)
            self._send_error_status(414)
            return
        cat = self.server.sandbox.catalog
        answer = {}
        for uri in uris:
            info = cat.file_info(uri)
            answer[uri] = ({"status_code": 200, "path": mast_path(info)} if info is not None
                           else {"status_code": 404, "path": None})
        body = json.dumps(answer).encode()
        self._send_body(ep, key, attempt, 200, [("Content-Type", "application/json")], len(body), [body])

    # ------------------------------------------------------------------ invoke
    def _invoke(self) -> None:
        form = self._form()
        raw = (form.get("request") or [""])[0]
        try:
            req = json.loads(raw)
            if not isinstance(req, dict):
                raise ValueError
        except ValueError:
            self._rec["endpoint"] = "query"
            self._send_simple(400, b'{"status": "ERROR", "msg": "Bad request: no JSON request"}')
            return
        service = str(req.get("service", ""))
        self._rec["service"] = service
        self._rec["columns"] = str((req.get("params") or {}).get("columns")) if isinstance(req.get("params"), dict) else None
        params = req.get("params") or {}
        svc = service.lower()
        is_products = svc == "mast.caom.products"
        ep = "products" if is_products else "query"
        self._rec["endpoint"] = ep
        try:
            page = int(req.get("page", 1) or 1)
            pagesize = int(req.get("pagesize", _DEFAULT_PAGESIZE) or _DEFAULT_PAGESIZE)
        except (TypeError, ValueError):
            page, pagesize = 1, _DEFAULT_PAGESIZE
        obsids: list[str] = []
        if is_products:
            obsids = [o.strip() for o in str(params.get("obsid", "")).split(",") if o.strip()]
            self._rec["obsids"] = obsids
            key = ",".join(obsids) + f"#p{page}"
        else:
            # Retries of the same query (new cacheBreaker) count as later attempts of one key.
            key = json.dumps({"s": service, "p": params, "page": page}, sort_keys=True)
        f = self._faults
        attempt = f.next_attempt(ep, key)
        if self._status_faults(ep, key, attempt):
            return
        if is_products:
            k = f.value(ep, "max_obsids")
            if k is not None and len(obsids) > k:
                time.sleep(f.value(ep, "timeout_delay"))
                self._send_error_status(504)
                return
        executing = f.value(ep, "executing")
        if executing:
            poll_key = f"{req.get('cacheBreaker')}#{page}#{key}"
            if f.next_attempt(ep + ".executing", poll_key) <= executing:
                body = json.dumps({"status": "EXECUTING", "msg": "", "data": [], "fields": []}).encode()
                self._send_body(ep, key, attempt, 200, [("Content-Type", "application/json")],
                                len(body), [body])
                return
        try:
            result = self._run_service(svc, params, page, pagesize, req.get("format", "json"),
                                       obsids, ep)
        except QueryError as exc:
            result = {"status": "ERROR", "msg": str(exc)}
        if isinstance(result.get("data"), list):
            self._rows = len(result["data"])
        body = json.dumps(result).encode()
        self._send_body(ep, key, attempt, 200, [("Content-Type", "application/json")],
                        len(body), [body])

    def _row_cap(self, ep: str) -> int:
        cap = self._faults.value(ep, "row_cap")
        return self.server.sandbox.row_cap if cap is None else cap

    @staticmethod
    def _envelope(fields, rows, page: int, pagesize: int, total: int) -> dict:
        pages = math.ceil(total / pagesize) if pagesize > 0 else 1
        names = [n for n, _ in fields]
        data = [{n: r.get(n) for n in names} for r in rows]
        return {"status": "COMPLETE", "msg": "",
                "fields": [{"name": n, "type": t} for n, t in fields], "data": data,
                "paging": {"page": page, "pageSize": pagesize, "pagesFiltered": pages,
                           "rows": len(data), "rowsFiltered": total, "rowsTotal": total}}

    def _run_service(self, svc: str, params: dict, page: int, pagesize: int, fmt: str,
                     obsids: list[str], ep: str) -> dict:
        cat = self.server.sandbox.catalog
        if pagesize <= 0:
            pagesize = _DEFAULT_PAGESIZE
        page = max(page, 1)
        lo, hi = (page - 1) * pagesize, page * pagesize
        cap = self._row_cap(ep)
        if svc == "mast.caom.products":
            counts = [cat.product_count(o) for o in obsids]
            total = min(sum(counts), cap)
            hi = min(hi, total)
            rows, pos = [], 0
            for o, n in zip(obsids, counts):
                if pos >= hi:
                    break
                if pos + n > lo:
                    rows.extend(cat.iter_products(o, max(lo - pos, 0), min(hi - pos, n)))
                pos += n
            return self._envelope(columns.PRODUCT_FIELDS, rows, page, pagesize, total)
        if svc == "mast.caom.all":
            return self._missions(cat)
        if svc == "mast.name.lookup":
            # MAST's own name resolver, as the API answers it: no fields/data envelope
            found = cat.resolve(str(params.get("input", "")))
            return {"resolvedCoordinate": [found] if found else [], "status": ""}
        if svc in ("mast.caom.filtered", "mast.caom.filtered.position", "mast.caom.cone"):
            if svc == "mast.caom.cone":
                try:
                    ra, dec, radius = (float(params[k]) for k in ("ra", "dec", "radius"))
                except (KeyError, TypeError, ValueError):
                    raise QueryError("Mast.Caom.Cone needs numeric ra, dec and radius") from None
                pred, fields = (lambda r: True), columns.OBS_FIELDS_CONE
                position = (ra, dec, radius)
            else:
                pred = compile_filters(params.get("filters"))
                position = parse_position(params["position"]) if params.get("position") else None
                fields = columns.OBS_FIELDS_POSITION if position else columns.OBS_FIELDS_FILTERED
            matched = []
            for row in cat.iter_obs():
                if position:
                    d = angular_distance_arcsec(position[0], position[1], row["s_ra"], row["s_dec"])
                    if d > position[2] * 3600.0:
                        continue
                    if not pred(row):
                        continue
                    row = dict(row, distance=d)
                elif not pred(row):
                    continue
                matched.append(row)
            if position:
                matched.sort(key=lambda r: r["distance"])
            wanted = str(params.get("columns", "*")).strip()
            if wanted.upper().startswith("COUNT_BIG"):
                # The count is the truth: the row cap does not apply to it.
                return self._envelope([("Column1", "string")], [{"Column1": len(matched)}],
                                      1, pagesize, 1)
            if wanted != "*":
                aggregates = _aggregates(wanted, fields, matched)
                if aggregates is not None:
                    return aggregates
                fields = _select(wanted, fields)
            matched = matched[:cap]
            return self._envelope(fields, matched[lo:hi], page, pagesize, len(matched))
        raise QueryError(f"Unknown service: {svc}")

    @staticmethod
    def _missions(cat) -> dict:
        counts: dict[str, int] = {}
        for row in cat.iter_obs():
            counts[row["obs_collection"]] = counts.get(row["obs_collection"], 0) + 1
        hist = {"hist": [{"count": c, "key": k} for k, c in counts.items()]}
        hist.update({k: {"count": c, "key": k} for k, c in counts.items()})
        paging = {"page": 0, "pageSize": 0, "pagesFiltered": 0, "rows": 0, "rowsFiltered": 0, "rowsTotal": 0}
        column = {"text": "obs_collection", "dataIndex": "obs_collection",
                  "ExtendedProperties": {"histObj": hist, "vot.datatype": "char"}}
        return {"status": "COMPLETE", "msg": "",
                "data": {"name": "NewDataSet",
                         "Tables": [{"name": "Table", "ExtendedProperties": {"Paging": paging},
                                     "Columns": [column], "Fields": [], "Rows": []}],
                         "ExtendedProperties": {}}}

    # ------------------------------------------------------------------ mission search API
    def _column_list(self) -> None:
        ep = "columnsconfig"
        mission = (self._query.get("mission") or [""])[0].lower()
        attempt = self._faults.next_attempt(ep, "column_list:" + mission)
        if self._status_faults(ep, "column_list:" + mission, attempt):
            return
        if mission not in missions.MISSIONS:
            self._send_json({"detail": f"Unknown mission {mission!r}"}, 400)
            return
        body = json.dumps(missions.column_list(mission)).encode()
        self._send_body(ep, "column_list:" + mission, attempt, 200, [("Content-Type", "application/json")],
                        len(body), [body])

    def _mission(self, mission: str, service: str) -> None:
        if service == "retrieve_product":
            self._rec["endpoint"] = "download"
            name = (self._query.get("product_name") or [""])[0]
            if mission not in missions.MISSIONS or not name:
                self._send_error_status(404)
                return
            self._download(missions.MissionView(self.server.sandbox.catalog, mission).data_uri(name))
            return
        ep = "query" if service == "search" else "products"
        self._rec["endpoint"] = ep
        self._rec["service"] = f"{mission}.{service}"
        if self.command != "POST":
            self._send_error_status(405, [("Allow", "POST")])
            return
        try:
            params = json.loads(self._body or b"{}")
            if not isinstance(params, dict):
                raise ValueError
        except ValueError:
            self._send_json({"detail": "the body is not a JSON object"}, 400)
            return
        if service == "post_list_products":
            ids = params.get("dataset_ids") or []
            ids = [ids] if isinstance(ids, str) else [str(i) for i in ids]
            self._rec["obsids"] = ids
            key = f"{mission}:" + ",".join(ids)
        else:
            key = f"{mission}:" + json.dumps(params, sort_keys=True)
        attempt = self._faults.next_attempt(ep, key)
        if self._status_faults(ep, key, attempt):
            return
        if ep == "products":
            k = self._faults.value(ep, "max_obsids")
            if k is not None and len(ids) > k:
                time.sleep(self._faults.value(ep, "timeout_delay"))
                self._send_error_status(504)
                return
        try:
            view = missions.MissionView(self.server.sandbox.catalog, mission)
            if ep == "products":
                result: dict = {"products": view.products(ids)[: self._row_cap(ep)]}
            else:
                result = missions.search_answer(view, params, self._row_cap(ep))
        except QueryError as exc:
            self._send_json({"detail": str(exc)}, 400)
            return
        body = json.dumps(result).encode()
        self._send_body(ep, key, attempt, 200, [("Content-Type", "application/json")], len(body), [body])

    # ------------------------------------------------------------------ downloads
    def _download(self, mapped: "str | None" = None) -> None:
        ep = "download"
        uri = mapped or (self._query.get("uri") or [""])[0]
        self._rec["uri"] = uri
        f, cat = self._faults, self.server.sandbox.catalog
        attempt = f.next_attempt(ep, uri)
        if self.command not in ("GET", "HEAD"):
            self._send_error_status(405, [("Allow", "GET, HEAD")])
            return
        if f.value(ep, "redirect"):
            self._status_faults(ep, uri, attempt)
            return
        info = cat.file_info(uri) if uri else None
        if info is None or f.is_missing(uri):
            self._sleep_latency(ep)
            self._send_error_status(404)
            return
        if info.rights == "EXCLUSIVE_ACCESS" and self._token_name is None:
            self._sleep_latency(ep)
            self._send_error_status(401)
            return
        if self._status_faults(ep, uri, attempt):
            return
        size = info.size
        last_modified = formatdate(info.last_modified, usegmt=True)
        headers = [("Content-Type", "application/octet-stream"), ("Accept-Ranges", "bytes"),
                   ("ETag", info.etag), ("Last-Modified", last_modified),
                   ("Content-Disposition", f'attachment; filename="{info.filename}"')]
        start, end = 0, size  # end exclusive
        status = 200
        rng = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        if rng and self.command == "GET":
            if if_range and if_range.strip() not in (info.etag, last_modified):
                rng = None  # the client's copy is stale: send the whole new body
            elif f.hit(ep, uri, attempt, "ignore_range"):
                rng = None
        if rng and self.command == "GET":
            m = _RANGE.match(rng)
            if m and (m.group(1) or m.group(2)):
                a, b = m.group(1), m.group(2)
                if a:
                    start, end = int(a), (min(int(b) + 1, size) if b else size)
                else:  # suffix range: the last N bytes
                    start, end = max(size - int(b), 0), size
                if start >= size or start >= end:
                    self._sleep_latency(ep)
                    self._send_simple(416, b"", "text/plain",
                                      [("Content-Range", f"bytes */{size}"), ("Accept-Ranges", "bytes")])
                    return
                if f.hit(ep, uri, attempt, "bad_range_rate"):
                    # A well-formed 206 for the wrong place: starts elsewhere than asked.
                    start = start // 2 if start > 0 else min(1, end - 1)
                status = 206
                headers.append(("Content-Range", f"bytes {start}-{end - 1}/{size}"))
        length = end - start
        pieces = cat.bodies.iter_body(uri, size, info.version, start, end, _CHUNK)
        self._send_body(ep, uri, attempt, status, headers, length, pieces)

    # ------------------------------------------------------------------ bundle
    def _bundle(self) -> None:
        ep = "bundle"
        form = self._form()
        uris = form.get("uri") or self._query.get("uri") or []
        key = "\n".join(uris)
        attempt = self._faults.next_attempt(ep, key)
        if self._status_faults(ep, key, attempt):
            return
        host = self.headers.get("Host") or "%s:%d" % self.server.server_address[:2]
        base = f"http://{host}"
        cat = self.server.sandbox.catalog
        entries = []
        for uri in uris:
            info = cat.file_info(uri)
            if info is not None:
                entries.append((uri, info.obs_collection, info.obs_id, info.filename))
            else:
                entries.append((uri, "unknown", "unknown", uri.rsplit("/", 1)[-1]))
        script = bundle_script(base, entries, bundle_name()).encode()
        # No Accept-Ranges here: astroquery would try to resume onto an older script.
        self._send_body(ep, key, attempt, 200, [("Content-Type", "text/x-sh")], len(script), [script])


_AGGREGATE = re.compile(r"^(MIN|MAX)\(\s*(\w+)\s*\)$", re.IGNORECASE)


def _select(wanted: str, fields: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The fields named by a ``columns`` list (``"obs_id, t_min"``), as MAST's SQL select."""
    known = {name.lower(): (name, kind) for name, kind in fields}
    chosen = []
    for part in (p.strip() for p in wanted.split(",")):
        if part.lower() not in known:
            raise QueryError(f"Invalid column name: {part}")
        chosen.append(known[part.lower()])
    return chosen


def _aggregates(wanted: str, fields: list[tuple[str, str]], matched: list[dict[str, Any]]) -> "dict[str, Any] | None":
    """``MIN(col),MAX(col)`` over the rows matched (uncapped, as SQL computes it), one row of
    ``Column1``, ``Column2``...; None when ``wanted`` holds no aggregate."""
    parts = [p.strip() for p in wanted.split(",")]
    found = [_AGGREGATE.match(p) for p in parts]
    if not any(found):
        return None
    matches = [m for m in found if m is not None]
    if len(matches) != len(found):
        raise QueryError(f"Column list mixes aggregates and columns: {wanted}")
    known = {name.lower(): name for name, _ in fields}
    row: dict[str, Any] = {}
    out_fields: list[tuple[str, str]] = []
    for i, match in enumerate(matches, 1):
        func, column = match.group(1).upper(), known.get(match.group(2).lower())
        if column is None:
            raise QueryError(f"Invalid column name: {match.group(2)}")
        values = [r.get(column) for r in matched if isinstance(r.get(column), (int, float))]
        row[f"Column{i}"] = (min(values) if func == "MIN" else max(values)) if values else None
        out_fields.append((f"Column{i}", "float"))
    return Handler._envelope(out_fields, [row], 1, 1, 1)
