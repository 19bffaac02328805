"""One HTTP attempt at one file: GET (resuming with ``Range``), judge the response, stream the body
into the temporary while hashing it, fsync.

:class:`Attempt` is what :class:`~mastpipe.stages.retrieve.fetch.FileFetcher` calls for each try;
it raises :class:`_Retry` (worth another try, maybe keeping the bytes), :class:`_Fail` (another
try will not help), :class:`_DiskFull` or :class:`~mastpipe.errors.IntegrityError`, and the
fetcher decides what comes next (:mod:`~mastpipe.stages.retrieve.outcomes`). The body is received
into reused buffers (no allocation, no copy per block), each written whole, then checked (sha256,
and the FITS checksums) from the same buffer on a thread of its own a few blocks behind the write,
so checking overlaps the network and the disk (:mod:`~mastpipe.stages.retrieve.body`). A file of ``settings.segments.min_size`` bytes or more is asked in ranged segments over
the connections the in-flight bound (:attr:`Attempt.slots`) can spare
(:mod:`mastpipe.stages.retrieve.segments`); a server that answers the first segment with 200 gets
one stream.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import http.client
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3

from mastpipe.errors import IntegrityError
from mastpipe.retry import is_transient_status
from mastpipe.stages.retrieve.body import HASH_QUEUE, BufferRing, body_reader, release
from mastpipe.stages.retrieve.checksum import Checksum, FitsChecksum, is_fits_name
from mastpipe.stages.retrieve.client import Http, RedirectRefused
from mastpipe.stages.retrieve.decide import (Action, ActionKind, PartMeta, ResponseFacts, Verdict, judge,
                                             parse_content_range)
from mastpipe.stages.retrieve.files import Event, FileTask
from mastpipe.stages.retrieve.outcomes import _Counters, _DiskFull, _Fail, _Retry
from mastpipe.stages.retrieve.segments import (Segment, SegmentedTemporary, SegmentMap, SegmentSink, Slots,
                                               fetch_segments)
from mastpipe.stages.retrieve.settings import DownloadSettings
from mastpipe.stages.retrieve.temporaries import (DISK_ERRORS, hash_file, part_path, read_meta, size_of, write_all,
                                                  write_meta)
from mastpipe.tls import FIX, certificate_error, describe

# _Retry, _Fail, _DiskFull, _Counters: re-exported from outcomes for the modules that import them here
__all__ = ["HASH_QUEUE", "SYNC_EVERY", "Attempt", "_Counters", "_DiskFull", "_Fail", "_Retry", "hash_existing"]

log = logging.getLogger("mastpipe.stages.retrieve.fetch")  # one logger for a file's whole story

SYNC_EVERY = 64 << 20  # flush large files as they grow (see Attempt._stream)
#: What receiving a body may raise when the connection or the server fails mid-body.
READ_ERRORS = (requests.RequestException, urllib3.exceptions.HTTPError, http.client.HTTPException, OSError, ValueError)


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


def _judged(task: FileTask, offset: int, meta: PartMeta | None,
            facts: ResponseFacts) -> tuple[Verdict, int | None, str]:
    """:func:`judge` a 200/206 response; raise for a body that must not be written."""
    verdict, total, why = judge(offset, meta, task.size, facts)
    if verdict is Verdict.REJECT:
        raise _Retry(why, discard=True)
    if verdict is Verdict.MISMATCH:
        raise IntegrityError(f"product {task.key}: size mismatch: expected {task.size} "
                             f"bytes, server announces {total}")
    return verdict, total, why


def _kept(dest: Path) -> int:
    """Bytes of a temporary that a resume keeps: its length, or its complete segments."""
    meta = read_meta(dest)
    if meta is not None and meta.segments is not None and meta.size is not None:
        return meta.segments.done_bytes(meta.size)
    return size_of(part_path(dest)) or 0


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
        # requests in flight: one per file, plus the extra connections of segmented files (the
        # engine sets it for each run; the fetcher takes a file's own slot)
        self.slots = Slots(settings.in_flight)

    def _s3_get(self, task: FileTask, headers: dict[str, str], counters: _Counters) -> Any:
        """GetObject of a cloud copy (anonymous: no token can travel there); network failures
        become _Retry as requests' do. See :mod:`mastpipe.stages.retrieve.s3`."""
        from mastpipe.stages.retrieve.s3 import key_of_s3_uri, network_errors

        if self.settings.s3 is None:
            raise _Fail("a cloud copy, but these download settings have no S3 client")
        counters.requests += 1
        try:
            return self.settings.s3.get(key_of_s3_uri(task.url), headers)
        except network_errors() as exc:
            raise _Retry(f"S3: {type(exc).__name__}: {exc}") from None

    def _open(self, task: FileTask, headers: dict[str, str], counters: _Counters,
              offset: int) -> Any:
        """GET with ``headers`` (an S3 GetObject for a cloud copy); return a 200 or 206 response
        (``requests``' or :class:`~mastpipe.stages.retrieve.s3.S3Response`), else raise _Retry / _Fail."""
        try:
            response: Any = (self._s3_get(task, headers, counters) if task.source == "s3"
                             else self.http.get(task.url, headers, counters))
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
        status = response.status_code
        if status in (200, 206):
            return response
        with response:
            reason = f"HTTP {status} {response.reason or ''}".strip()
            if status == 416 and offset:
                raise _Retry(f"{reason} for Range from byte {offset}", discard=True)
            if status == 412 and offset:  # S3: the object changed since the temporary began
                raise _Retry(f"{reason}: the object changed since byte {offset} was kept", discard=True)
            if is_transient_status(status):
                raise _Retry(reason, retry_after=response.headers.get("Retry-After"))
            if status in (401, 403) and counters.token_withheld:
                reason += (f": the download was redirected to {urlsplit(response.url).netloc}, and "
                           "the MAST token was withheld from that host on purpose: it goes only "
                           f"to {', '.join(self.settings.token_hosts)} (where the recipe's MAST "
                           "is), never to a host a redirect names")
            elif status in (401, 403):
                reason += (": the MAST token does not grant access to this product"
                           if self.http.has_token else
                           ": exclusive-access product, and no MAST token was given")
            raise _Fail(reason)

    def run(self, task: FileTask, action: Action, meta: PartMeta | None,
            counters: _Counters) -> tuple[PartMeta, str, int, FitsChecksum | None]:
        """One GET into the temporary; returns (its metadata, sha256, size, FITS checksum
        check) or raises _Retry / _Fail / _DiskFull / IntegrityError."""
        dest = Path(task.dest)
        offset = action.offset if action.kind is ActionKind.RESUME else 0
        if meta is not None and meta.segments is not None and action.kind is ActionKind.RESUME:
            return self._segmented(task, meta, counters)
        # identity: a gzipped body would not match Content-Length or the product size
        headers = {"Accept-Encoding": "identity"}
        # Segments share MAST's in-flight bound; large cloud copies come in parts (parts.py).
        probing = not offset and task.source == "mast" and self.settings.segments.applies(task.size, self.slots.limit)
        segment_size = self.settings.segments.segment_size(task.size or 0, self.slots.limit)
        if probing:  # the first segment: a 206 says the server honours Range, a 200 it does not
            headers["Range"] = f"bytes=0-{segment_size - 1}"
        if offset:
            headers["Range"] = f"bytes={offset}-"
            if meta is not None and meta.validator:
                headers["If-Range"] = meta.validator
        response = self._open(task, headers, counters, offset)
        with response:
            facts = ResponseFacts.from_response(response)
            verdict, total, why = _judged(task, offset, meta, facts)
            if probing and facts.status == 206:
                parsed = parse_content_range(facts.content_range)
                if parsed is None or parsed[2] != task.size:
                    raise _Retry(f"206 with unusable Content-Range {facts.content_range!r} "
                                 "for the first segment", discard=True)
                segmented = PartMeta(size=task.size, etag=facts.etag, last_modified=facts.last_modified,
                                     segments=SegmentMap(segment_size))
                return self._segmented(task, segmented, counters, first=response)
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
        # Each block is received into a buffer of the ring, written whole from it, and checked
        # (sha256, FITS checksum) from it on the ring's threads, a few blocks behind. A helper
        # flushes every SYNC_EVERY bytes, so dirty pages never pile up (the kernel throttles
        # writers that let them) and the final fsync has little left to do.
        ring = BufferRing([digest] if fits is None else [digest, fits], self.settings.chunk_size)
        readinto = body_reader(response)
        syncing: Future[None] | None = None
        unsynced = 0
        syncing_now = False  # an error while syncing leaves no byte of the temporary trusted
        try:
            try:
                os.ftruncate(fd, start)  # drop any bytes past the splice point: never overlap
                os.lseek(fd, start, os.SEEK_SET)
                while True:
                    buffer = ring.take()
                    try:
                        count = readinto(buffer)
                    except READ_ERRORS as exc:
                        ring.give_back(buffer)
                        raise _Retry(f"body cut short after {start + received} bytes "
                                     f"({type(exc).__name__})") from None
                    if not count or self._cancel.is_set():
                        ring.give_back(buffer)
                        if count:
                            raise _Fail(f"interrupted after {start + received} bytes")
                        break
                    # Written whole (or raising) before it is checked or counted: the hash and
                    # the size describe exactly the bytes on disk.
                    try:
                        write_all(fd, buffer[:count])
                    except BaseException:
                        ring.give_back(buffer)
                        raise
                    ring.check(buffer, count)
                    received += count
                    unsynced += count
                    if (unsynced >= SYNC_EVERY and self.helpers is not None
                            and (syncing is None or syncing.done())):
                        syncing, unsynced = self.helpers.submit(os.fdatasync, fd), 0
                    self._emit(Event("bytes", task.key, nbytes=count))
            finally:
                ring.close()
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

    # -- segments ---------------------------------------------------------------------------------

    def _segmented(self, task: FileTask, meta: PartMeta, counters: _Counters,
                   first: requests.Response | None = None) -> tuple[PartMeta, str, int, FitsChecksum | None]:
        """Fetch the segments of ``task`` not yet complete over one or more connections (see
        :mod:`mastpipe.stages.retrieve.segments`); ``first`` is the open response to the first
        segment. Returns (metadata, sha256 of the whole file, size, FITS checksum check), both
        checks computed in order from the temporary as its segments complete."""
        dest = Path(task.dest)
        assert meta.segments is not None and meta.size is not None
        if first is not None:  # the map goes to disk before the preallocated temporary
            write_meta(dest, meta)
        if self._cancel.is_set():
            raise _Fail("interrupted")

        def persist(segments: SegmentMap) -> None:
            write_meta(dest, dataclasses.replace(meta, segments=segments))

        fits = _fits_check(dest)
        temporary = SegmentedTemporary(part_path(dest), meta.size, meta.segments, persist, self.settings.chunk_size,
                                       also=[fits] if fits is not None else [])
        try:
            leading = ([(temporary.segments[0], lambda sink: self._read_into(first, sink, task))]
                       if first is not None else [])
            try:
                fetch_segments(
                    temporary, lambda segment, sink: self._fetch_range(task, meta, segment, sink, counters),
                    self.slots, first=leading, cancelled=self._cancel.is_set, connection=self.http.drop_session,
                    on_bytes=lambda n: self._emit(Event("bytes", task.key, nbytes=n)))
            except InterruptedError:
                raise _Fail("interrupted") from None
            except (ConnectionError, TimeoutError) as exc:
                raise _Retry(f"segment cut short ({exc})") from None
            sha = temporary.sha256()
            os.fsync(temporary.fd)
            on_disk = os.fstat(temporary.fd).st_size
        finally:
            temporary.close()
        if on_disk != meta.size:
            raise IntegrityError(f"product {task.key}: the temporary holds {on_disk} bytes on "
                                 f"disk, {meta.size} were written")
        return dataclasses.replace(meta, segments=temporary.map), sha, meta.size, fits

    def _fetch_range(self, task: FileTask, meta: PartMeta, segment: Segment, sink: SegmentSink,
                     counters: _Counters) -> None:
        """One ranged GET for the rest of ``segment``, written through ``sink`` (the HTTP source
        of :func:`~mastpipe.stages.retrieve.segments.fetch_segments`)."""
        position = sink.position
        headers = {"Accept-Encoding": "identity", "Range": f"bytes={position}-{segment.end - 1}"}
        if meta.validator:
            headers["If-Range"] = meta.validator
        response = self._open(task, headers, counters, position)
        with response:
            facts = ResponseFacts.from_response(response)
            if facts.status != 206:
                changed = (meta.etag and facts.etag and facts.etag != meta.etag) or (
                    not (meta.etag and facts.etag) and meta.last_modified and facts.last_modified
                    and facts.last_modified != meta.last_modified)
                if changed:
                    raise _Retry("remote file changed (validator differs): restarting it", discard=True)
                raise _Retry(f"HTTP {facts.status} instead of 206 for segment {segment.index}")
            _judged(task, position, meta, facts)
            self._read_into(response, sink, task)

    _buffers = threading.local()

    def _read_into(self, response: requests.Response, sink: SegmentSink, task: FileTask) -> None:
        """Receive a 206 body into this thread's buffer and write it through ``sink``, stopping
        at the segment's end; a cut connection keeps what arrived."""
        buffer = getattr(self._buffers, "buffer", None)
        if buffer is None or len(buffer) != self.settings.chunk_size:
            buffer = self._buffers.buffer = memoryview(bytearray(self.settings.chunk_size))
        readinto = body_reader(response)
        while (remaining := sink.remaining) > 0:
            if self._cancel.is_set():
                raise _Fail("interrupted")
            try:
                count = readinto(buffer[:min(remaining, len(buffer))])
            except READ_ERRORS as exc:
                raise _Retry(f"segment {sink.segment.index} cut short at byte {sink.position} "
                             f"({type(exc).__name__})") from None
            if not count:
                return  # fetch_segments asks again from sink.position
            sink.write(buffer[:count])
        release(response)


def hash_existing(path: Path, chunk_size: int) -> tuple[str, int, Checksum | None, str | None]:
    """Hash a file already on disk and check its FITS checksums where it has them: its sha256,
    size, checksum verdict (None if it carries none), and what is damaged (None if nothing)."""
    fits = _fits_check(path)
    digest, size = hash_file(path, chunk_size, also=fits)
    try:
        return digest.hexdigest(), size, (fits.result() if fits is not None else None), None
    except ValueError as exc:  # the file's own checksums say it is damaged
        return digest.hexdigest(), size, None, str(exc)
