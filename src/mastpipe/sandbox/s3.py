"""The sandbox's cloud side: MAST's public S3 bucket ``stpubdata``, on loopback.

Protocol map: ``mast-cloud.md`` (shared reference). Three pieces:

* :mod:`.bucket`: :func:`mast_path` gives the path MAST's ``path_lookup`` answers for a product
  (the HTTP server serves it), and :func:`in_bucket` says whether the bucket holds a copy: public
  products of HST, JWST and TESS, except a deterministic ~15 % that are "not in the cloud"
  (as on AWS, where not every product is mirrored). Exclusive-access products never are.
* :class:`S3Side` (here) runs a **real S3 implementation** (moto's standalone server, in a child
  process so its state belongs to this sandbox alone and its work does not compete with the
  client under test for one interpreter; a ranged GET reads only its range there, as on S3)
  behind a small proxy of our own,
* :mod:`.s3_proxy`, which logs every request in the sandbox's :class:`~.log.RequestLog` (endpoint
  ``s3``), injects the faults of endpoint ``s3`` (``latency``, ``bandwidth``,
  ``fail_first``/``error_rate`` answered as S3's ``503 SlowDown``, ``drop_rate``/``drop_at``,
  ``missing``), and uploads an object to moto the first time it is asked for (so lazily generated
  products cost nothing until used). Object bodies are the catalogue's bytes, the same as the
  HTTPS downloads.

Clients (boto3, astroquery, curl) talk to :attr:`S3Side.endpoint` exactly as they would to
``https://s3.amazonaws.com``: path-style ``/stpubdata/<key>``, anonymous requests.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from mastpipe.sandbox.bucket import BUCKET, MISSING_FRACTION, in_bucket, mast_path, uri_for_key
from mastpipe.sandbox.respond import CHUNK
from mastpipe.sandbox.s3_proxy import Front

if TYPE_CHECKING:  # pragma: no cover
    from . import Sandbox
    from .catalog import FileInfo

__all__ = ["BUCKET", "MISSING_FRACTION", "S3Side", "in_bucket", "mast_path", "uri_for_key"]

_PART = 64 << 20  # multipart upload part size for large objects


# moto's server with one change of cost, none of behaviour: moto answers a ranged GetObject by
# reading the whole object (under the object's lock) and slicing it, so n ranged requests of an
# object of size s cost n * s, one at a time: a 1 GB object fetched in 8 MB ranges took minutes,
# and clients that send more ranges looked slower than they would against S3. Here a GetObject with
# one plain Range reads just that slice; its answer (status, headers, bytes) is moto's own.
_LAUNCH = """
import re, sys, threading
from moto.s3 import models, responses
_plain, _local = re.compile(r"^bytes=[0-9]+-[0-9]*$"), threading.local()
_value = models.FakeKey.value

class _Slices:
    def __init__(self, key):
        self.key = key
    def __len__(self):
        return self.key.size
    def __getitem__(self, part):
        start, stop, _ = part.indices(self.key.size)
        with self.key.lock:
            self.key._value_buffer.seek(start)
            return self.key._value_buffer.read(max(stop - start, 0))

def _whole(body):
    return body[0:len(body)] if isinstance(body, _Slices) else body

def value(key):
    return _Slices(key) if getattr(_local, "ranged", False) else _value.fget(key)

def get_object(self, _get=responses.S3Response.get_object):
    _local.ranged = bool(_plain.match(self.headers.get("range") or ""))
    try:
        status, headers, body = _get(self)
    finally:
        _local.ranged = False
    return status, headers, (body if status == 200 else _whole(body))

def handle_range(self, *args, _handle=responses.S3Response._handle_range_header):
    status, headers, body = _handle(self, *args)
    return status, headers, _whole(body)

models.FakeKey.value = property(value, _value.fset)
responses.S3Response.get_object = get_object
responses.S3Response._handle_range_header = handle_range
from moto.server import main
main()
"""


class _Moto:
    """moto's standalone S3 server in a child process (ranged reads made O(range): _LAUNCH)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", _LAUNCH, "-H", "127.0.0.1", "-p", "0"],
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
        self._server = Front((host, port), self)
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
            data = b"".join(body.iter_body(info.uri, info.size, info.version, 0, info.size, CHUNK))
            client.put_object(Bucket=BUCKET, Key=key, Body=data, ACL="public-read")
            return
        upload = client.create_multipart_upload(Bucket=BUCKET, Key=key, ACL="public-read")
        parts = []
        for number, start in enumerate(range(0, info.size, _PART), start=1):
            end = min(start + _PART, info.size)
            data = b"".join(body.iter_body(info.uri, info.size, info.version, start, end, CHUNK))
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
