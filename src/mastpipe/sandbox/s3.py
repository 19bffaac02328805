"""The sandbox's cloud side: MAST's public S3 bucket ``stpubdata``, on loopback.

Protocol map: ``mast-cloud.md`` (shared reference). Two pieces:

* :func:`mast_path` gives the path MAST's ``path_lookup`` answers for a product (the HTTP
  server serves it), and :func:`in_bucket` says whether the bucket holds a copy: public
  products of HST, JWST and TESS, except a deterministic ~15 % that are "not in the cloud"
  (as on AWS, where not every product is mirrored). Exclusive-access products never are.
* :class:`S3Side` runs a **real S3 implementation** (moto's standalone server, in a child
  process so its state belongs to this sandbox alone and its work does not compete with the
  client under test for one interpreter) behind a small proxy of our own. The proxy logs every
  request in the sandbox's :class:`~.log.RequestLog` (endpoint ``s3``), injects the faults of
  endpoint ``s3`` (``latency``, ``bandwidth``, ``fail_first``/``error_rate`` answered as S3's
  ``503 SlowDown``, ``drop_rate``/``drop_at``, ``missing``), and uploads an object to moto the
  first time it is asked for (so lazily generated products cost nothing until used). Object
  bodies are the catalogue's bytes, the same as the HTTPS downloads.

Clients (boto3, astroquery, curl) talk to :attr:`S3Side.endpoint` exactly as they would to
``https://s3.amazonaws.com``: path-style ``/stpubdata/<key>``, anonymous requests.
"""

from __future__ import annotations

import fnmatch
import hashlib
import http.client
import re
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from .log import Record

if TYPE_CHECKING:  # pragma: no cover
    from . import Sandbox
    from .catalog import FileInfo

__all__ = ["BUCKET", "MISSING_FRACTION", "S3Side", "in_bucket", "mast_path", "uri_for_key"]

BUCKET = "stpubdata"
#: Share of public products of a cloud mission that the bucket lacks (decided per URI).
MISSING_FRACTION = 0.15
_CLOUD = ("mast:hst/product", "mast:tess/product", "mast:kepler", "mast:galex", "mast:ps1",
          "mast:jwst/product")
_CHUNK = 1 << 20
_PART = 64 << 20  # multipart upload part size for large objects
_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
        "host"}


def mast_path(info: FileInfo) -> str:
    """The path MAST's ``path_lookup`` gives for a product (``/jwst/public/...``)."""
    name = info.filename
    coll = info.obs_collection.lower()
    if coll == "jwst":
        return f"/jwst/public/{name[:7]}/{info.obs_id}/{name}"
    if coll == "hst":
        return f"/hst/public/{name[:4]}/{name[:9]}/{name}"
    return f"/{coll}/public/{info.obs_id}/{name}"


def uri_for_key(key: str) -> str:
    """The ``dataURI`` a bucket key of :func:`mast_path`'s shape belongs to (checked by callers)."""
    parts = key.split("/")
    return f"mast:{parts[0].upper()}/product/{parts[-1]}"


def in_bucket(info: FileInfo, seed: int = 0) -> bool:
    """Whether the bucket holds a copy of this product (public, cloud mission, not left out)."""
    if info.rights != "PUBLIC" or not info.uri.lower().startswith(_CLOUD):
        return False
    text = f"{seed}\0s3\0{info.uri}".encode()
    draw = int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big") / 2.0**64
    return draw >= MISSING_FRACTION


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Moto:
    """moto's standalone S3 server in a child process."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", "0"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        assert self.proc.stderr is not None
        deadline = time.monotonic() + 60
        port = None
        for line in self.proc.stderr:
            match = re.search(r"Running on http://127\.0\.0\.1:(\d+)", line)
            if match:
                port = int(match.group(1))
                break
            if time.monotonic() > deadline:
                break
        if port is None:
            self.proc.kill()
            raise RuntimeError("moto's S3 server did not start (is the test extra installed? "
                               "pip install 'mastpipe[test]')")
        self.port = port
        # moto logs each request to stderr: drain it so the pipe never fills and blocks moto
        threading.Thread(target=self._drain, daemon=True, name="moto-stderr").start()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for _ in self.proc.stderr:
            pass

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class _Front(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], side: S3Side) -> None:
        self.side = side
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._open_lock:
            conns = list(self._open)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (OSError, _Drop)):
            return
        super().handle_error(request, client_address)


class _Drop(Exception):
    """Close the client's connection now (the drop_rate fault)."""


class S3Side:
    """The bucket ``stpubdata`` of one :class:`~mastpipe.sandbox.Sandbox`, served on loopback.

    Started by ``Sandbox(s3=True)``; :attr:`endpoint` is what ``endpoint_url`` (boto3),
    ``AWS_ENDPOINT_URL_S3`` (astroquery through boto3) or ``MASTPIPE_S3_ENDPOINT`` (mastpipe)
    take. Requests are logged in ``sandbox.log`` with ``endpoint == "s3"``, the product's ``uri``
    and ``has_token`` (a MAST token presented as cookie or bearer: must never happen).
    """

    def __init__(self, sandbox: Sandbox, host: str = "127.0.0.1", port: int = 0) -> None:
        self.sandbox = sandbox
        self._moto = _Moto()
        self._uploaded: dict[str, int] = {}  # key -> catalogue version uploaded
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()
        self._local = threading.local()
        self._admin = self._client()
        self._admin.create_bucket(Bucket=BUCKET, ACL="public-read")
        self._server = _Front((host, port), self)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="mastpipe-sandbox-s3", daemon=True)
        self._thread.start()

    def _client(self) -> Any:
        import boto3
        from botocore.config import Config

        # moto accepts any credentials; these only sign the sandbox's own uploads
        return boto3.client("s3", endpoint_url=f"http://127.0.0.1:{self._moto.port}", region_name="us-east-1",
                            aws_access_key_id="sandbox", aws_secret_access_key="sandbox",
                            config=Config(retries={"max_attempts": 3}))

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:PORT``: the S3 endpoint URL (path-style, no bucket)."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def key_of(self, uri: str) -> str | None:
        """The bucket key of ``uri`` when the bucket holds it (else None)."""
        info = self.sandbox.catalog.file_info(uri)
        if info is None or not in_bucket(info, self.sandbox.seed):
            return None
        return mast_path(info).lstrip("/")

    def https_url(self, key: str) -> str:
        """Where curl fetches ``key`` here (the stand-in for https://stpubdata.s3.amazonaws.com/KEY)."""
        return f"{self.endpoint}/{BUCKET}/{key}"

    def ensure(self, key: str) -> bool:
        """Upload the object for ``key`` if the bucket should hold it and it is not there yet (or
        is stale after :meth:`Catalog.touch`). Returns whether the bucket holds it."""
        catalog = self.sandbox.catalog
        info = catalog.file_info(uri_for_key(key))
        if info is None or not in_bucket(info, self.sandbox.seed) or mast_path(info).lstrip("/") != key:
            return False
        with self._locks_lock:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if self._uploaded.get(key) == info.version:
                return True
            self._upload(key, info)
            self._uploaded[key] = info.version
        return True

    def preload(self, uris: Any) -> int:
        """Upload the bucket's copies of ``uris`` now (benchmarks: no upload inside the timing)."""
        n = 0
        for uri in uris:
            key = self.key_of(uri)
            if key is not None and self.ensure(key):
                n += 1
        return n

    def _upload(self, key: str, info: FileInfo) -> None:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self._client()
        body = self.sandbox.catalog.bodies
        if info.size <= _PART:
            data = b"".join(body.iter_body(info.uri, info.size, info.version, 0, info.size, _CHUNK))
            client.put_object(Bucket=BUCKET, Key=key, Body=data, ACL="public-read")
            return
        upload = client.create_multipart_upload(Bucket=BUCKET, Key=key, ACL="public-read")
        parts = []
        for number, start in enumerate(range(0, info.size, _PART), start=1):
            end = min(start + _PART, info.size)
            data = b"".join(body.iter_body(info.uri, info.size, info.version, start, end, _CHUNK))
            answer = client.upload_part(Bucket=BUCKET, Key=key, UploadId=upload["UploadId"],
                                        PartNumber=number, Body=data)
            parts.append({"PartNumber": number, "ETag": answer["ETag"]})
        client.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload["UploadId"],
                                         MultipartUpload={"Parts": parts})

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._server.close_connections()
        self._thread.join(timeout=5)
        self._moto.stop()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "mastpipe-sandbox-s3/0.1"
    disable_nagle_algorithm = True
    timeout = 120
    server: _Front
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
        step = max(1024, int(bandwidth / 20)) if bandwidth else _CHUNK
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
