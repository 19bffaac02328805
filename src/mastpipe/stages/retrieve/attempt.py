"""One HTTP attempt at one file: GET (resuming with ``Range``), judge the response, stream the body
into the temporary while hashing it, fsync.

:class:`Attempt` is what :class:`~mastpipe.stages.retrieve.fetch.FileFetcher` calls for each try;
it raises :class:`_Retry` (worth another try, maybe keeping the bytes), :class:`_Fail` (another
try will not help), :class:`_DiskFull` or :class:`~mastpipe.errors.IntegrityError`, and the
fetcher decides what comes next. Hashing (sha256, and the FITS checksums) runs on a thread of its
own a few blocks behind the write, so it overlaps the network and the disk.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import requests
import urllib3

from mastpipe.errors import IntegrityError
from mastpipe.retry import is_transient_status
from mastpipe.stages.retrieve.checksum import FitsChecksum, is_fits_name
from mastpipe.stages.retrieve.client import Http, RedirectRefused
from mastpipe.stages.retrieve.decide import Action, ActionKind, PartMeta, ResponseFacts, Verdict, judge
from mastpipe.stages.retrieve.files import Event, FileTask
from mastpipe.stages.retrieve.settings import DownloadSettings
from mastpipe.stages.retrieve.temporaries import DISK_ERRORS, hash_file, part_path, write_all, write_meta
from mastpipe.tls import FIX, certificate_error, describe

__all__ = ["HASH_QUEUE", "SYNC_EVERY", "Attempt"]

log = logging.getLogger("mastpipe.stages.retrieve.fetch")  # one logger for a file's whole story

HASH_QUEUE = 4  # blocks a stream may read ahead of its hash
SYNC_EVERY = 64 << 20  # flush large files as they grow (see FileFetcher._stream)


class _Sink(Protocol):
    def update(self, block: bytes, /) -> None: ...


class _BackgroundHasher:
    """Feed a digest (or any ``update``-able check) from a thread of its own, at most
    HASH_QUEUE blocks behind the caller."""

    def __init__(self, digest: _Sink) -> None:
        self._queue: queue.Queue[bytes | None] = queue.Queue(HASH_QUEUE)
        self._thread = threading.Thread(target=self._run, args=(digest,), daemon=True,
                                        name="mastpipe-sha256")
        self._thread.start()

    def _run(self, digest: _Sink) -> None:
        while (block := self._queue.get()) is not None:
            digest.update(block)

    def update(self, block: bytes) -> None:
        self._queue.put(block)

    def close(self) -> None:
        """Wait until every block has been hashed."""
        self._queue.put(None)
        self._thread.join()


class _Retry(Exception):
    """A failed attempt worth repeating (transient status, network error, rejected body)."""

    def __init__(self, reason: str, retry_after: str | None = None, discard: bool = False):
        super().__init__(reason)
        self.reason, self.retry_after, self.discard = reason, retry_after, discard


class _Fail(Exception):
    """A failure that another attempt will not fix."""


class _DiskFull(Exception):
    """The disk refused bytes of the temporary (ENOSPC, EDQUOT, EIO): fail the file, keeping
    its temporary (``keep``: an exact prefix, on disk) or not."""

    def __init__(self, error: OSError, keep: bool, have: int | None = None) -> None:
        super().__init__(error.strerror or str(error))
        self.error, self.keep, self.have = error, keep, have


def _sync_quietly(fd: int) -> bool:
    """fsync ``fd``; whether that worked."""
    try:
        os.fsync(fd)
    except OSError:
        return False
    return True


def _fits_check(dest: Path) -> FitsChecksum | None:
    """A FITS checksum check for ``dest`` when it is a FITS file, else None."""
    return FitsChecksum() if is_fits_name(dest.name) else None


@dataclass
class _Counters:
    attempts: int = 0
    requests: int = 0
    stalled: int = 0  # failed attempts in a row that kept no new byte (what the policy limits)


class Attempt:
    """One try at one file, over ``http``; shared by every worker thread of a run.

    Parameters
    ----------
    settings : DownloadSettings
        ``chunk_size`` is read.
    http : Http
        Sessions, redirects and the token.
    emit : callable
        Receives ``bytes`` and ``restart`` events.
    cancel : threading.Event
        Set when the run is interrupted: the stream stops between blocks.
    """

    def __init__(self, settings: DownloadSettings, http: Http, emit: Callable[[Event], None],
                 cancel: threading.Event) -> None:
        self.settings = settings
        self.http = http
        self._emit = emit
        self._cancel = cancel
        self.helpers: ThreadPoolExecutor | None = None  # flushes large files; set during a run

    def run(self, task: FileTask, action: Action, meta: PartMeta | None,
                 counters: _Counters) -> tuple[PartMeta, str, int, FitsChecksum | None]:
        """One GET into the temporary; returns (its metadata, sha256, size, FITS checksum
        check) or raises _Retry / _Fail / _DiskFull / IntegrityError."""
        dest = Path(task.dest)
        offset = action.offset if action.kind is ActionKind.RESUME else 0
        # identity: a gzipped body would not match Content-Length or the product size
        headers = {"Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
            if meta is not None and meta.validator:
                headers["If-Range"] = meta.validator
        try:
            response = self.http.get(task.url, headers, counters)
        except RedirectRefused as exc:
            raise _Fail(str(exc)) from None
        except (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema,
                requests.exceptions.MissingSchema) as exc:
            raise _Fail(f"invalid URL: {exc}") from None
        except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
            bad_certificate = certificate_error(exc)
            if bad_certificate is not None:  # asking again cannot help
                raise _Fail(f"{describe(task.url, bad_certificate)}; {FIX}") from None
            raise _Retry(f"{type(exc).__name__}: {exc}") from None
        with response:
            status = response.status_code
            if status not in (200, 206):
                reason = f"HTTP {status} {response.reason or ''}".strip()
                if status == 416 and offset:
                    raise _Retry(f"{reason} for Range from byte {offset}", discard=True)
                if is_transient_status(status):
                    raise _Retry(reason, retry_after=response.headers.get("Retry-After"))
                if status in (401, 403):
                    reason += (": the MAST token does not grant access to this product"
                               if self.http.has_token else
                               ": exclusive-access product, and no MAST token was given")
                raise _Fail(reason)
            facts = ResponseFacts.from_response(response)
            verdict, total, why = judge(offset, meta, task.size, facts)
            if verdict is Verdict.REJECT:
                raise _Retry(why, discard=True)
            if verdict is Verdict.MISMATCH:
                raise IntegrityError(f"product {task.key}: size mismatch: expected {task.size} "
                                     f"bytes, server announces {total}")
            start = offset if verdict is Verdict.APPEND else 0
            if start == 0 and offset:
                log.info("%s: %s", task.key, why)
                self._emit(Event("restart", task.key))  # the kept bytes are about to be overwritten
            digest = hashlib.sha256()
            fits = _fits_check(dest)
            if start:  # the kept bytes are part of the file's hash: read them first
                digest, have = hash_file(part_path(dest), self.settings.chunk_size, limit=start, also=fits)
                if have != start:
                    raise _Retry("temporary shorter than recorded", discard=True)
            if self._cancel.is_set():
                raise _Fail("interrupted")
            new_meta = PartMeta(size=total, etag=facts.etag, last_modified=facts.last_modified)
            write_meta(dest, new_meta)
            received = self._stream(task, response, start, digest, fits)
        if facts.content_length is not None and received < facts.content_length:
            raise _Retry(f"body cut short: {received} of {facts.content_length} bytes")
        return new_meta, digest.hexdigest(), start + received, fits

    def _stream(self, task: FileTask, response: requests.Response, start: int,
                digest: hashlib._Hash, fits: FitsChecksum | None = None) -> int:
        """Write the body at ``start`` in the temporary, hashing (and FITS-summing) as it goes;
        fsync; return the bytes received. A connection lost mid-body raises _Retry and keeps
        what arrived; a disk that refuses bytes raises _DiskFull."""
        part = part_path(Path(task.dest))
        flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)  # no symlinked temporary
        fd = os.open(part, flags | (0 if start else os.O_TRUNC), 0o644)
        received = 0
        chunk_size = self.settings.chunk_size
        # Hashing runs on its own thread, a few blocks behind the write: sha256 and write() both
        # release the GIL, so on a large file they overlap instead of adding up (the FITS
        # checksum too, on a thread of its own: numpy's sum releases the GIL as well). A helper
        # flushes every SYNC_EVERY bytes, so dirty pages never pile up (the kernel throttles
        # writers that let them) and the final fsync has little left to do.
        hasher = _BackgroundHasher(digest)
        summer = _BackgroundHasher(fits) if fits is not None else None
        syncing: Future[None] | None = None
        unsynced = 0
        syncing_now = False  # an error while syncing leaves no byte of the temporary trusted
        try:
            try:
                os.ftruncate(fd, start)  # drop any bytes past the splice point: never overlap
                os.lseek(fd, start, os.SEEK_SET)
                # read1 returns whatever has arrived (up to a chunk): with read(), a connection
                # lost mid-chunk would throw away the bytes of that chunk instead of keeping
                # them for the resume. decode_content=False: the body is stored exactly as sent.
                read = response.raw.read1
                while True:
                    try:
                        block = read(chunk_size, decode_content=False)
                    except (requests.RequestException, urllib3.exceptions.HTTPError,
                            OSError) as exc:
                        raise _Retry(f"body cut short after {start + received} bytes "
                                     f"({type(exc).__name__})") from None
                    if not block:
                        break
                    if self._cancel.is_set():
                        raise _Fail(f"interrupted after {start + received} bytes")
                    # Written whole (or raising) before it is hashed or counted: the hash and
                    # the size describe exactly the bytes on disk.
                    write_all(fd, block)
                    hasher.update(block)
                    if summer is not None:
                        summer.update(block)
                    received += len(block)
                    unsynced += len(block)
                    if (unsynced >= SYNC_EVERY and self.helpers is not None
                            and (syncing is None or syncing.done())):
                        syncing, unsynced = self.helpers.submit(os.fdatasync, fd), 0
                    self._emit(Event("bytes", task.key, nbytes=len(block)))
            finally:
                hasher.close()
                if summer is not None:
                    summer.close()
                syncing_now = True
                if syncing is not None:
                    syncing.result()
            os.fsync(fd)
            on_disk = os.fstat(fd).st_size
        except OSError as exc:
            if exc.errno not in DISK_ERRORS:
                raise
            # After ENOSPC the file is an exact prefix: keep it for the resume, once it is on
            # disk. After EIO, or any failed sync, the page cache may not match the disk.
            keep = not syncing_now and exc.errno != errno.EIO and _sync_quietly(fd)
            raise _DiskFull(exc, keep=keep, have=start + received) from None
        except (_Retry, _Fail):
            _sync_quietly(fd)  # the bytes kept for a resume must survive a crash
            raise
        finally:
            os.close(fd)
        if on_disk != start + received:  # written bytes that are not in the file
            raise IntegrityError(f"product {task.key}: the temporary holds {on_disk} bytes on "
                                 f"disk, {start + received} were written")
        return received
