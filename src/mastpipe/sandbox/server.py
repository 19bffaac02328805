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

The services live in mixins, one module per family, assembled into :class:`Handler`:
:mod:`.caom_api` (invoke, columnsconfig), :mod:`.files_api` (downloads, bundles, path_lookup),
:mod:`.mission_api` (mission search), :mod:`.auth_api` (tokens, whoami); :mod:`.respond` holds
what they share (request log, faults on responses).
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import threading
import time
from http.server import ThreadingHTTPServer
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from mastpipe.sandbox.auth_api import AuthApi
from mastpipe.sandbox.caom_api import CaomApi
from mastpipe.sandbox.log import Record
from mastpipe.sandbox.mission_api import MissionApi
from mastpipe.sandbox.respond import QUIET, Drop

if TYPE_CHECKING:  # pragma: no cover
    from mastpipe.sandbox import Sandbox

__all__ = ["SandboxHTTPServer", "Handler"]

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
_MISSION_PATH = re.compile(r"^/search/([A-Za-z0-9_]+)/api/v0\.1/(search|post_list_products|retrieve_product)/?$")


class TrackingServer(ThreadingHTTPServer):
    """A threaded server that knows its open connections, so that stopping it can hang up on
    them (the sandbox's HTTP server and its S3 proxy alike)."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address, handler) -> None:
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        self.connections_accepted = 0
        super().__init__(address, handler)

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


class SandboxHTTPServer(TrackingServer):
    """Threaded server bound to one :class:`Sandbox`; silent about disconnecting clients."""

    def __init__(self, address, sandbox: "Sandbox", ssl_context: "ssl.SSLContext | None" = None) -> None:
        self.sandbox = sandbox
        super().__init__(address, Handler)
        if ssl_context is not None:
            # The handshake waits for the first read, in the connection's own thread: a client
            # that stalls or rejects the certificate never holds up the accept loop.
            self.socket = ssl_context.wrap_socket(self.socket, server_side=True,
                                                  do_handshake_on_connect=False)

    def handle_error(self, request, client_address) -> None:  # noqa: D102
        import sys

        exc = sys.exc_info()[1]
        if isinstance(exc, QUIET + (Drop, ssl.SSLError)):  # incl. a client refusing our certificate
            return  # a client hanging up is normal, not worth a traceback
        super().handle_error(request, client_address)


class Handler(CaomApi, MissionApi, AuthApi):
    """Per-connection request handler: routes each request to its service."""

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
        except QUIET:
            self.close_connection = True
        except Drop:
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
        except (Drop,) + QUIET:
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
