"""MAST's public cloud copies (AWS S3): where each product's copy is, and S3 requests the
transfer engine reads like HTTP responses.

Protocol map: ``mast-cloud.md`` (shared reference). The client is boto3 (what astroquery uses),
anonymous (unsigned) in region ``us-east-1``; the endpoint is AWS unless ``retrieve.s3_endpoint``
or ``MASTPIPE_S3_ENDPOINT`` names another (an S3-compatible mirror, or the sandbox's). boto3 is
the optional extra ``mastpipe[cloud]`` and is imported only when a run uses the cloud, never by
``--help`` or ``validate``.

Locating copies costs MAST one ``path_lookup`` request per 50 products and S3 one ``HeadObject``
per product (which says whether the bucket holds it, its size and its ETag). Both answers are
kept in ``<state>/cloud.jsonl``, one line per batch, so an interrupted lookup resumes and a rerun
asks nothing it already knows.

Retries are not botocore's: every S3 request is tried once by botocore, and the engine's own
loop (:mod:`mastpipe.stages.retrieve.engine`) backs off on ``503 SlowDown`` and dropped connections within the
run's retry budget, exactly as for MAST.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mastpipe.archive import BUCKET, BUCKET_REGION, PATH_LOOKUP_BATCH, cloud_mission
from mastpipe.errors import UsageError

if TYPE_CHECKING:
    from mastpipe.archive import Archive

__all__ = [
    "S3_ENDPOINT_ENV",
    "CloudCopy",
    "Locations",
    "S3Client",
    "S3Response",
    "effective_endpoint",
    "https_url",
    "locate",
]

log = logging.getLogger(__name__)
S3_ENDPOINT_ENV = "MASTPIPE_S3_ENDPOINT"
#: The plain-HTTPS form of the bucket (curl scripts, tools without an S3 client).
PUBLIC_HTTPS = f"https://{BUCKET}.s3.amazonaws.com"
FILENAME = "cloud.jsonl"


@dataclass(frozen=True)
class CloudCopy:
    """A product's copy in the bucket: its key, and what ``HeadObject`` said of it."""

    key: str
    size: int | None = None
    etag: str | None = None

    @property
    def s3_uri(self) -> str:
        return f"s3://{BUCKET}/{self.key}"


def effective_endpoint(recipe_endpoint: str | None, environ: dict[str, str] | None = None) -> str | None:
    """The S3 endpoint: ``MASTPIPE_S3_ENDPOINT``, then the recipe's ``retrieve.s3_endpoint``, then
    None (AWS itself)."""
    env = os.environ if environ is None else environ
    value = env.get(S3_ENDPOINT_ENV) or recipe_endpoint
    return value.rstrip("/") if value else None


def https_url(key: str, endpoint: str | None = None) -> str:
    """Where plain HTTPS (curl) fetches ``key``: ``https://stpubdata.s3.amazonaws.com/<key>``, or
    path-style on another endpoint (``<endpoint>/stpubdata/<key>``)."""
    return f"{endpoint}/{BUCKET}/{key}" if endpoint else f"{PUBLIC_HTTPS}/{key}"


def key_of_s3_uri(url: str) -> str:
    """``s3://stpubdata/<key>`` -> ``<key>``."""
    prefix = f"s3://{BUCKET}/"
    if not url.startswith(prefix):
        raise UsageError(f"{url!r} is not an object of the bucket {BUCKET}")
    return url[len(prefix):]


class S3Response:
    """An S3 ``GetObject`` answer with the parts of a ``requests.Response`` the engine reads:
    ``status_code``, ``reason``, ``headers`` (case-insensitive), ``raw.read1`` and ``close``."""

    def __init__(self, status: int, headers: dict[str, str], raw: Any = None, reason: str = "") -> None:
        from requests.structures import CaseInsensitiveDict

        self.status_code = status
        self.headers = CaseInsensitiveDict(headers)
        self.raw = raw
        self.reason = reason

    def close(self) -> None:
        raw = self.raw
        if raw is None:
            return
        if getattr(raw, "length_remaining", None) == 0 and hasattr(raw, "release_conn"):
            raw.release_conn()  # read to the end: the connection goes back to the pool
        else:
            raw.close()  # abandoned mid-body: this connection cannot be reused

    def __enter__(self) -> S3Response:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class S3Client:
    """Anonymous S3 access to the public bucket, shared by threads; picklable (Dask workers make
    their own boto3 client from the settings).

    Parameters
    ----------
    endpoint : str, optional
        Endpoint URL (default: AWS, region us-east-1).
    timeout : float
        Connect and read timeout per request.
    pool : int
        Connections kept open (the downloads in flight to S3).
    """

    def __init__(self, endpoint: str | None = None, timeout: float = 60.0, pool: int = 16) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.pool = pool
        self._client: Any = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "timeout": self.timeout, "pool": self.pool}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"S3Client(endpoint={self.endpoint!r})"

    @property
    def client(self) -> Any:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._make()
        return self._client

    def _make(self) -> Any:
        try:
            import boto3
            import botocore
            from botocore.config import Config
        except ImportError:
            raise UsageError("fetching MAST's cloud copies needs boto3",
                             hint="pip install 'mastpipe[cloud]', or set retrieve.source: mast") from None
        config = Config(signature_version=botocore.UNSIGNED, region_name=BUCKET_REGION,
                        retries={"total_max_attempts": 1}, max_pool_connections=self.pool,
                        connect_timeout=self.timeout, read_timeout=self.timeout,
                        tcp_keepalive=True)
        return boto3.session.Session().client("s3", endpoint_url=self.endpoint, config=config)

    def head(self, key: str) -> CloudCopy | None:
        """What the bucket holds under ``key`` (None when it holds nothing there).

        Raises
        ------
        botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError
            For anything but a miss (the caller retries).
        """
        from botocore.exceptions import ClientError

        try:
            answer = self.client.head_object(Bucket=BUCKET, Key=key)
        except ClientError as exc:
            if _status(exc) in (403, 404):  # S3 says 403 for a missing key without ListBucket
                return None
            raise
        return CloudCopy(key, int(answer.get("ContentLength", 0)), answer.get("ETag"))

    def get(self, key: str, headers: dict[str, str]) -> S3Response:
        """``GetObject`` of ``key`` with the HTTP ``Range`` and ``If-Range`` of ``headers``.

        ``If-Range`` becomes ``IfMatch``: an object that changed since the temporary began
        answers 412 instead of splicing new bytes onto old ones. Error answers come back as
        responses with their status (503 SlowDown, 404, 416, 412); network failures raise.
        """
        from botocore.exceptions import ClientError

        params: dict[str, Any] = {"Bucket": BUCKET, "Key": key}
        if headers.get("Range"):
            params["Range"] = headers["Range"]
            validator = headers.get("If-Range")
            if validator and validator.startswith(('"', 'W/"')):
                params["IfMatch"] = validator
        try:
            answer = self.client.get_object(**params)
        except ClientError as exc:
            meta = exc.response.get("ResponseMetadata", {})
            error = exc.response.get("Error", {})
            return S3Response(_status(exc) or 500, meta.get("HTTPHeaders", {}),
                              reason=f"{error.get('Code', '')} {error.get('Message', '')}".strip())
        headers_in = answer["ResponseMetadata"].get("HTTPHeaders", {})
        body = answer["Body"]
        return S3Response(answer["ResponseMetadata"].get("HTTPStatusCode", 200), headers_in,
                          raw=getattr(body, "_raw_stream", body))


def _status(exc: Any) -> int | None:
    try:
        return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                   or exc.response.get("Error", {}).get("Code"))
    except (TypeError, ValueError):
        return None


def network_errors() -> tuple[type[BaseException], ...]:
    """The exceptions of a failed S3 request worth retrying (botocore's, imported lazily)."""
    from botocore.exceptions import BotoCoreError

    return (BotoCoreError, OSError)


class Locations:
    """The checkpoint of :func:`locate`: ``<state>/cloud.jsonl``, one JSON line per batch.

    The first line names the MAST server and the S3 endpoint; answers from another pair are not
    reused. Each later line maps URIs to ``{"key", "size", "etag"}`` or to null (no copy). A line
    cut short by a kill is ignored (its batch is asked again).
    """

    def __init__(self, state_dir: Path, server: str, endpoint: str | None) -> None:
        self.path = Path(state_dir) / FILENAME
        self.header = {"server": server, "endpoint": endpoint or "aws"}
        self._lock = threading.Lock()

    def load(self) -> dict[str, CloudCopy | None]:
        known: dict[str, CloudCopy | None] = {}
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return known
        if not lines or _loads(lines[0]) != self.header:
            return known
        for line in lines[1:]:
            batch = _loads(line)
            if not isinstance(batch, dict):
                continue
            for uri, copy in batch.items():
                known[uri] = CloudCopy(copy["key"], copy.get("size"), copy.get("etag")) if copy else None
        return known

    def append(self, batch: dict[str, CloudCopy | None]) -> None:
        with self._lock:
            fresh = not self.path.is_file() or _first_line(self.path) != self.header
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "w" if fresh else "a", encoding="utf-8") as handle:
                if fresh:
                    handle.write(json.dumps(self.header) + "\n")
                line = {uri: (None if c is None else {"key": c.key, "size": c.size, "etag": c.etag})
                        for uri, c in batch.items()}
                handle.write(json.dumps(line) + "\n")
                handle.flush()
                os.fsync(handle.fileno())


def _loads(line: str) -> Any:
    try:
        return json.loads(line)
    except ValueError:
        return None


def _first_line(path: Path) -> Any:
    with open(path, encoding="utf-8") as handle:
        return _loads(handle.readline())


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def locate(uris: Iterable[str], archive: Archive, client: S3Client, store: Locations, *,
           in_flight: int = 16, attempts: int = 4,
           on_batch: Callable[[int], None] | None = None) -> dict[str, CloudCopy | None]:
    """The cloud copy of each URI (None: no copy), asking only what ``store`` does not know.

    URIs of missions the bucket does not mirror are never looked up (None). For the others:
    ``path_lookup`` per 50 (through ``archive``, retried there), then ``HeadObject`` per key,
    ``in_flight`` at a time; each batch is appended to ``store`` as soon as it is known.

    Raises
    ------
    ArchiveError
        MAST's path_lookup keeps failing.
    TransferError
        S3 keeps failing a HeadObject.
    """
    from mastpipe.errors import TransferError

    uris = list(dict.fromkeys(uris))
    known = store.load()
    todo = [u for u in uris if u not in known and cloud_mission(u)]
    if todo:
        log.info("locating %d product(s) in the cloud bucket (%d known from %s)", len(todo),
                 len(uris) - len(todo), store.path.name)

    def head(key: str) -> CloudCopy | None:
        import time

        for attempt in range(1, attempts + 1):
            try:
                return client.head(key)
            except Exception as exc:  # noqa: BLE001 - botocore's tree; retried, then reported
                if attempt == attempts:
                    raise TransferError(f"S3 HeadObject of {key} failed {attempts} times: {exc}",
                                        hint="rerun later (answers so far are kept), or set retrieve.source: mast") from None
                time.sleep(min(0.2 * 2 ** attempt, 5.0))
        return None  # pragma: no cover

    with ThreadPoolExecutor(max(1, in_flight), thread_name_prefix="mastpipe-s3-head") as pool:
        for batch in _chunks(todo, PATH_LOOKUP_BATCH):
            keys = archive.path_lookup(batch)
            pairs = [(uri, key) for uri, key in keys.items() if key]
            heads = dict(zip((u for u, _ in pairs), pool.map(head, (k for _, k in pairs))))
            found = {uri: heads.get(uri) for uri in batch}
            store.append(found)
            known.update(found)
            if on_batch is not None:
                on_batch(len(batch))
    return {u: known.get(u) for u in uris}
