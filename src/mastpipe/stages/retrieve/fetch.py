"""One file, start to finish: lock, GET, stream into the temporary, verify, rename, record.

:class:`FileFetcher` is the per-file half of the engine (:class:`~mastpipe.stages.retrieve.engine.Transfer`
plans and runs many of them at once). For each file it loops: ask
:func:`~mastpipe.stages.retrieve.decide.decide` what the disk calls for, act on it (hash an
adopted file, finish a complete temporary, or make one attempt), and on a failed attempt wait as
the retry policy says and decide again from the disk as it is now.

Files are written to ``.<name>.part`` beside their target, with ``.<name>.part.json`` holding the
server's validator (ETag / Last-Modified) and the expected size (see
:mod:`mastpipe.stages.retrieve.temporaries`), so a run killed with ``kill -9`` resumes with
``Range`` + ``If-Range``. The body is received into preallocated buffers, each written whole
and hashed (sha256) from the same buffer on a helper thread, so hashing overlaps the network and
the disk without a copy. A file of ``settings.segments.min_size`` bytes or more is asked in
ranged segments over the connections the in-flight bound can spare
(:mod:`mastpipe.stages.retrieve.segments`; a server that answers the first segment with 200 gets
one stream). A file appears under its final name only after its size (and sha256, when known)
has been verified, the data fsynced and the name swapped atomically.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import http.client
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import requests
import urllib3

from mastpipe.errors import IntegrityError, TransferError
from mastpipe.retry import RetryAfterTooLong, is_transient_status
from mastpipe.stages.retrieve.checksum import FitsChecksum, is_fits_name
from mastpipe.stages.retrieve.client import Http, RedirectRefused
from mastpipe.stages.retrieve.decide import (Action, Kind, LocalState, PartMeta, RemoteFacts, ResponseFacts,
                                             Verdict, decide, judge, parse_content_range)
from mastpipe.stages.retrieve.files import Event, FileResult, FileTask
from mastpipe.stages.retrieve.ledger import Ledger, LedgerRow
from mastpipe.stages.retrieve.paths import describe_filesystem, free_bytes
from mastpipe.stages.retrieve.segments import (Segment, SegmentedTemporary, SegmentMap, SegmentSink, Slots,
                                               fetch_segments)
from mastpipe.stages.retrieve.settings import DownloadSettings
from mastpipe.stages.retrieve.temporaries import (DISK_ERRORS, FetchLock, discard, hash_file, local_state,
                                                  make_parents, meta_path, part_path, read_meta, remove_empty,
                                                  size_of, stat_of, write_all, write_meta)
from mastpipe.atomic import fsync_dir
from mastpipe.tls import FIX, certificate_error, describe

__all__ = ["Budget", "Dirs", "FileFetcher", "HASH_QUEUE", "PROGRESS_CEILING", "SYNC_EVERY"]

log = logging.getLogger(__name__)

HASH_QUEUE = 4  # blocks a stream may read ahead of its hash
SYNC_EVERY = 64 << 20  # flush large files as they grow (see FileFetcher._stream)
# Attempts that keep new bytes do not count against the policy's max_attempts, but a file
# gets at most this many times max_attempts in all (and the run's budget still applies).
# A policy of one attempt (retries: 0) stays one attempt.
PROGRESS_CEILING = 10
LOCK_POLL = 0.2  # seconds between looks at a file another process is fetching
LOCK_NOTICE = 10.0  # seconds between "still waiting" lines


class _Sink(Protocol):
    def update(self, block: bytes | memoryview, /) -> None: ...


class _BufferRing:
    """Preallocated buffers that a body is received into, then checked on threads of their own.

    The stream receives into a free buffer (no allocation, no copy), writes it whole, and hands
    it to every check (the sha256, and the FITS checksum of a FITS file), each on its own thread
    at most HASH_QUEUE blocks behind; the buffer is free again once every check has read it.
    Each byte is checked from the very buffer it was written from. sha256, numpy's sum and
    write() all release the GIL, so on a large file they overlap instead of adding up.
    """

    def __init__(self, checks: list[_Sink], chunk: int) -> None:
        self._free: queue.SimpleQueue[memoryview] = queue.SimpleQueue()
        for _ in range(HASH_QUEUE + 1):
            self._free.put(memoryview(bytearray(chunk)))
        self._readers: dict[int, int] = {}  # id(buffer) -> checks still to read it
        self._lock = threading.Lock()
        self._error: BaseException | None = None
        self._queues: list[queue.SimpleQueue[tuple[memoryview, int] | None]] = []
        self._threads = []
        for check in checks:
            work: queue.SimpleQueue[tuple[memoryview, int] | None] = queue.SimpleQueue()
            thread = threading.Thread(target=self._run, args=(check, work), daemon=True, name="mastpipe-sha256")
            thread.start()
            self._queues.append(work)
            self._threads.append(thread)

    def _run(self, check: _Sink, work: queue.SimpleQueue[tuple[memoryview, int] | None]) -> None:
        while (item := work.get()) is not None:
            buffer, count = item
            if self._error is None:
                try:
                    check.update(buffer[:count])
                except BaseException as exc:  # noqa: BLE001 - raised by close(); buffers keep flowing
                    self._error = exc
            with self._lock:
                left = self._readers[id(buffer)] - 1
                if left:
                    self._readers[id(buffer)] = left
                    continue
                del self._readers[id(buffer)]
            self._free.put(buffer)

    def take(self) -> memoryview:
        """A free buffer (waits while every buffer is still being checked)."""
        return self._free.get()

    def give_back(self, buffer: memoryview) -> None:
        """Return a buffer that was not written."""
        self._free.put(buffer)

    def check(self, buffer: memoryview, count: int) -> None:
        """Check the first ``count`` bytes of a taken ``buffer`` (those written), then free it."""
        with self._lock:
            self._readers[id(buffer)] = len(self._queues)
        for work in self._queues:
            work.put((buffer, count))

    def close(self) -> None:
        """Wait until every block has been checked."""
        for work in self._queues:
            work.put(None)
        for thread in self._threads:
            thread.join()
        if self._error is not None:
            raise self._error


def _body_reader(response: requests.Response) -> Callable[[memoryview], int]:
    """``readinto(buffer) -> bytes read`` for a streamed response body, exactly as sent.

    For a body with a Content-Length, each call is one receive straight into the caller's
    buffer (``readinto1`` on the ``http.client`` response's socket file, under urllib3): no
    allocation and no copy, where urllib3's own reads allocate and copy every block. One
    receive, not a full buffer: on a slow link the bytes that arrived are written (and kept
    if the connection is lost) without waiting for a whole block. Returns 0 at the end of
    the body, or early when the connection closes; callers compare what arrived with what was
    announced. Other bodies (chunked, or ending at the connection's close) are read through
    urllib3 with ``decode_content=False``: stored exactly as sent either way.
    """
    raw = response.raw
    inner = getattr(raw, "_fp", None)
    socket_file = getattr(inner, "fp", None)
    if (isinstance(inner, http.client.HTTPResponse) and not inner.chunked and inner.length is not None
            and socket_file is not None and hasattr(socket_file, "readinto1")):
        def receive(buffer: memoryview) -> int:
            left = inner.length or 0
            got = socket_file.readinto1(buffer[:left]) if left else 0
            inner.length = left - got
            if not inner.length:
                inner.read()  # the whole body has arrived: http.client releases the connection
            return got
        return receive

    def read(buffer: memoryview) -> int:
        block = raw.read1(len(buffer), decode_content=False)
        buffer[:len(block)] = block
        return len(block)
    return read


def _release(response: requests.Response) -> None:
    """Give a fully read response's connection back to its pool, for the next segment."""
    inner = getattr(response.raw, "_fp", None)
    if isinstance(inner, http.client.HTTPResponse) and inner.isclosed():
        response.raw.release_conn()


_READ_ERRORS = (requests.RequestException, urllib3.exceptions.HTTPError, http.client.HTTPException,
                OSError, ValueError)


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


def _validators(row: LedgerRow | None, action: Action) -> tuple[str | None, str | None]:
    """ETag and Last-Modified to keep when a done file is recorded again without a request."""
    if row is not None and action.kind is not Kind.ADOPT:
        return row.etag, row.last_modified
    return None, None


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


@dataclass
class _Counters:
    attempts: int = 0
    requests: int = 0
    stalled: int = 0  # failed attempts in a row that kept no new byte (what the policy limits)


@dataclass
class Budget:
    """The per-run retry budget, shared by every worker."""

    left: int
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self) -> bool:
        with self.lock:
            if self.left <= 0:
                return False
            self.left -= 1
            return True


class Dirs:
    """Directories an engine created, so a failed file leaves none behind.

    One lock guards creating and removing them: no worker removes a directory another has just
    made for its file.
    """

    def __init__(self) -> None:
        self.made: set[Path] = set()
        self.lock = threading.Lock()

    def make_parents(self, dest: Path) -> None:
        with self.lock:
            self.made.update(make_parents(dest))


class FileFetcher:
    """The per-file work of an engine; one instance serves every worker thread of a run.

    Parameters
    ----------
    settings : DownloadSettings
    http : Http
        Sessions, redirects and the token.
    ledger : Ledger, optional
        Where completion is recorded.
    emit : callable
        Receives every :class:`Event` (from worker threads).
    cancel : threading.Event
        Set when the run is interrupted: attempts stop between blocks.
    sleep : callable
        Waits between retries.
    dirs : Dirs
        The directories the engine made.
    """

    def __init__(self, settings: DownloadSettings, http: Http, ledger: Ledger | None,
                 emit: Callable[[Event], None], cancel: threading.Event, sleep: Callable[[float], object],
                 dirs: Dirs) -> None:
        self.settings = settings
        self.http = http
        self.ledger = ledger
        self._emit = emit
        self._cancel = cancel
        self._sleep = sleep
        self._dirs = dirs
        self.budget = Budget(0)
        self.helpers: ThreadPoolExecutor | None = None  # flushes large files; set during a run
        self.to_fetch = 0  # bytes the plan had to fetch, less the files finished since
        # requests in flight: one per file, plus the extra connections of segmented files
        self.slots = Slots(settings.in_flight)

    def local_state(self, task: FileTask, row: LedgerRow | None, ignore_final: bool = False) -> LocalState:
        return local_state(task.dest, row, verify=self.settings.verify, overwrite=self.settings.overwrite,
                           ignore_final=ignore_final)

    def fetch(self, task: FileTask, row: LedgerRow | None, local: LocalState) -> FileResult:
        """Bring one file to its final name, or say why not; never raises for a failed file."""
        counters = _Counters()
        dest = Path(task.dest)
        if self._cancel.is_set():  # interrupted before this file began: leave it untouched
            return FileResult(task.key, dest, "failed", error=f"{task.key}: interrupted")
        lock = FetchLock(dest)
        result: FileResult | None = None
        slots = self.slots
        slots.acquire()  # free at once unless extra segment connections hold them all
        try:
            result = self._until_settled(task, row, local, counters, lock)
            return result
        except Exception as exc:  # noqa: BLE001 - one broken file must not stop the others
            message = self.http.clean(f"{task.key}: {exc}")
            if not isinstance(exc, (_Fail, TransferError)):
                # not an HTTP outcome (a full disk, a bug): keep the traceback for debugging;
                # tracebacks hold code and messages, and no message here carries the token
                log.debug("unexpected error for %s", task.key, exc_info=True)
            if self.ledger is not None:
                self.ledger.mark_failed(task.key, dest, message, counters.attempts)
            self._emit(Event("failed", task.key, message=message))
            return FileResult(task.key, dest, "failed", attempts=counters.attempts,
                              http_requests=counters.requests, error=message)
        finally:
            slots.release()
            with self._dirs.lock:
                lock.release()
                if result is None:  # a failed file leaves no directory made for it behind
                    self._dirs.made -= remove_empty(dest.parent, self._dirs.made)

    def _lock(self, lock: FetchLock, dest: Path) -> None:
        """Take ``lock`` before touching the temporaries of ``dest``.

        When another process holds it (a run with another state directory sharing this
        destination, a Dask worker), wait for it while it makes progress, saying so every
        LOCK_NOTICE seconds; the caller then decides again from the disk, where the holder's
        finished file is usually found and adopted (by size and hash). A holder that makes no
        progress for the stall limit (the timeout plus the longest retry wait it may be
        sitting out) fails this file instead.
        """
        with self._dirs.lock:  # no worker removes a directory another has just made
            self._dirs.made.update(make_parents(dest))  # the lock lives beside the file
            held = lock.acquire()
        if held:
            return
        policy = self.settings.policy
        stall_limit = self.settings.timeout + max(policy.max_delay, policy.retry_after_cap)
        seen = self._progress_of(dest)
        began = last_progress = last_notice = time.monotonic()
        log.warning("%s: another process is fetching this file right now; waiting for it", dest)
        while True:
            if self._cancel.wait(LOCK_POLL):
                raise _Fail("interrupted while waiting for another process fetching this file")
            with self._dirs.lock:
                self._dirs.made.update(make_parents(dest))
                if lock.acquire():
                    log.info("%s: the other process is done with it after %.0f s", dest,
                             time.monotonic() - began)
                    return
            now = time.monotonic()
            progress = self._progress_of(dest)
            if progress != seen:
                seen, last_progress = progress, now
            elif now - last_progress > stall_limit:
                raise _Fail(f"another process has held this file ({dest}) for "
                            f"{now - began:.0f} s without progress for {stall_limit:.0f} s; "
                            "rerun once it has finished or been stopped")
            if now - last_notice >= LOCK_NOTICE:
                last_notice = now
                log.warning("%s: still waiting for another process fetching it (%.0f s; its "
                            "temporary has %s bytes)", dest, now - began, progress[0])

    @staticmethod
    def _progress_of(dest: Path) -> tuple[int | None, int | None]:
        """What shows another process's progress on ``dest``: its temporary's size, the file's."""
        return size_of(part_path(dest)), size_of(dest)

    def _until_settled(self, task: FileTask, row: LedgerRow | None, local: LocalState,
                       counters: _Counters, lock: FetchLock) -> FileResult:
        dest = Path(task.dest)
        chunk_size = self.settings.chunk_size
        ignore_final = False  # set once the final file failed verification: replace it
        while True:
            action = decide(local, RemoteFacts(task.size))
            if not lock.held and action.kind in (Kind.FINISH_VERIFY, Kind.FETCH, Kind.RESTART, Kind.RESUME):
                # Temporaries are about to be written: only by the lock's holder. Files that
                # are only hashed (adopted, verified) need no lock, which keeps reruns cheap.
                self._lock(lock, dest)
                # What was seen may have changed while another process held the lock (it may
                # have finished the file): decide again from the disk as it is now.
                local = self.local_state(task, row, ignore_final=ignore_final)
                continue
            if action.kind in (Kind.VERIFY_DONE, Kind.ADOPT, Kind.SKIP_DONE):
                fits = _fits_check(dest)
                digest, size = hash_file(dest, chunk_size, also=fits)
                sha = digest.hexdigest()
                wanted = row.sha256 if action.kind is Kind.VERIFY_DONE and row else task.sha256
                try:
                    checksum, damaged = (fits.result() if fits is not None else None), None
                except ValueError as exc:  # the file's own checksums say it is damaged
                    checksum, damaged = None, str(exc)
                if damaged is None and (wanted is None or sha == wanted.lower()):
                    if self.ledger is not None:  # (again: with its stat as it is now)
                        self.ledger.mark_done(task.key, dest, size, sha, 0, *_validators(row, action),
                                              checksum, stat_of(dest))
                    self._emit(Event("skipped", task.key, total=size))
                    return FileResult(task.key, dest, "skipped", size=size, sha256=sha,
                                      attempts=counters.attempts, http_requests=counters.requests,
                                      checksum=checksum)
                why = damaged or f"sha256 {sha}, expected {wanted}"
                if (action.kind is Kind.VERIFY_DONE and not self.settings.verify
                        and self.settings.overwrite == "never"):
                    raise _Fail(f"{dest} changed after it was downloaded ({why}); overwrite is "
                                "'never', so it is left as it is: move it away (or set overwrite: "
                                "changed) and rerun to fetch MAST's copy")
                log.warning("%s: %s: %s: fetching it again", task.key, dest, why)
                ignore_final = True
            elif action.kind is Kind.KEEP_FOREIGN:
                raise _Fail(f"{action.reason}: {dest}")
            elif action.kind is Kind.FINISH_VERIFY:
                fits = _fits_check(dest)
                digest, size = hash_file(part_path(dest), chunk_size, also=fits)
                try:
                    return self._finish(task, counters, local.part_meta, digest.hexdigest(), size, fits)
                except IntegrityError as exc:
                    log.warning("%s", self.http.clean(str(exc)))
                    self._discard(task)
            else:
                if counters.attempts == 0:
                    self._emit(Event("start", task.key, total=task.size))
                    if self.ledger is not None:
                        self.ledger.mark_running(task.key, dest, task.size)
                if action.kind is Kind.RESTART:
                    self._discard(task)
                counters.attempts += 1
                kept = action.offset if action.kind is Kind.RESUME else 0
                try:
                    meta, sha, size, fits = self._attempt(task, action, local.part_meta, counters)
                    return self._finish(task, counters, meta, sha, size, fits)
                except _DiskFull as exc:
                    if not exc.keep:
                        self._discard(task)
                    raise _Fail(self._disk_message(task, exc)) from None
                except OSError as exc:  # writing the metadata, renaming: nothing half-written
                    if exc.errno not in DISK_ERRORS:
                        raise
                    raise _Fail(self._disk_message(task, _DiskFull(exc, keep=True))) from None
                except _Retry as exc:
                    if exc.discard:
                        self._discard(task)
                    # A resume that kept new bytes is progress, not a failure: on a link that
                    # drops every few minutes a large file still gets there.
                    progressed = not exc.discard and _kept(dest) > kept
                    counters.stalled = 0 if progressed else counters.stalled + 1
                    self._wait_before_retry(task, counters, exc)
                except IntegrityError as exc:
                    self._discard(task)  # scenario 6: a wrong temporary is never kept
                    counters.stalled += 1
                    self._wait_before_retry(task, counters, _Retry(str(exc)))
            local = self.local_state(task, row, ignore_final=ignore_final)

    def _disk_message(self, task: FileTask, full: _DiskFull) -> str:
        """Why a file failed on a disk error: the filesystem, what is free, what the rest needs,
        and what became of its temporary."""
        from mastpipe.stages.retrieve.progress import format_bytes  # progress imports the engine

        dest = Path(task.dest)
        code = full.error.errno
        what = {errno.ENOSPC: "no space left", errno.EDQUOT: "disk quota exceeded"}.get(
            code or 0, full.error.strerror or "I/O error")
        try:
            free = f"{format_bytes(free_bytes(dest.parent))} free"
        except OSError:
            free = "free space unknown"
        needs = []
        if task.size is not None:
            needs.append(f"this file needs {format_bytes(task.size - (full.have or 0))} more")
        if self.to_fetch:
            needs.append(f"the files of this run still to fetch need about "
                         f"{format_bytes(self.to_fetch)} in all")
        kept = ("its temporary is kept: free some space and rerun to resume" if full.keep else
                "its temporary was removed (after this error its bytes cannot be trusted)")
        return (f"{what} on the filesystem {describe_filesystem(dest.parent)} while writing "
                f"{dest}: {free}; {'; '.join(needs + [kept])}")

    def _discard(self, task: FileTask) -> None:
        """Delete the temporary of ``task``; a ``restart`` event tells progress its bytes are gone."""
        discard(Path(task.dest))
        self._emit(Event("restart", task.key))

    def _wait_before_retry(self, task: FileTask, counters: _Counters, exc: _Retry) -> None:
        """Sleep per the policy, or raise _Fail when a budget is spent or the wait is absurd."""
        if self._cancel.is_set():
            raise _Fail(f"{exc.reason} (interrupted)")
        policy = self.settings.policy
        ceiling = policy.max_attempts * (PROGRESS_CEILING if policy.max_attempts > 1 else 1)
        if not policy.should_retry(counters.stalled) or counters.attempts >= ceiling:
            raise _Fail(f"{exc.reason} (gave up after {counters.attempts} attempts)")
        if not self.budget.take():
            raise _Fail(f"{exc.reason} (the run's retry budget is spent)")
        try:
            delay = policy.delay(max(counters.stalled, 1), exc.retry_after)
        except RetryAfterTooLong as too_long:
            raise _Fail(f"{exc.reason}; {too_long}") from None
        self._emit(Event("retry", task.key, message=self.http.clean(exc.reason)))
        log.info("%s: %s; retrying in %.2f s", task.key, self.http.clean(exc.reason), delay)
        self._sleep(delay)

    def _open(self, task: FileTask, headers: dict[str, str], counters: _Counters,
              offset: int) -> requests.Response:
        """GET with ``headers``; return a 200 or 206 response, else raise _Retry / _Fail."""
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
        status = response.status_code
        if status in (200, 206):
            return response
        with response:
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

    def _attempt(self, task: FileTask, action: Action, meta: PartMeta | None,
                 counters: _Counters) -> tuple[PartMeta, str, int, FitsChecksum | None]:
        """One GET into the temporary; returns (its metadata, sha256, size, FITS checksum
        check) or raises _Retry / _Fail / _DiskFull / IntegrityError."""
        dest = Path(task.dest)
        offset = action.offset if action.kind is Kind.RESUME else 0
        if meta is not None and meta.segments is not None and action.kind is Kind.RESUME:
            return self._segmented(task, meta, counters)
        # identity: a gzipped body would not match Content-Length or the product size
        headers = {"Accept-Encoding": "identity"}
        probing = not offset and self.settings.segments.applies(task.size, self.slots.limit)
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
        ring = _BufferRing([digest] if fits is None else [digest, fits], self.settings.chunk_size)
        readinto = _body_reader(response)
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
                    except _READ_ERRORS as exc:
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
        readinto = _body_reader(response)
        while (remaining := sink.remaining) > 0:
            if self._cancel.is_set():
                raise _Fail("interrupted")
            try:
                count = readinto(buffer[:min(remaining, len(buffer))])
            except _READ_ERRORS as exc:
                raise _Retry(f"segment {sink.segment.index} cut short at byte {sink.position} "
                             f"({type(exc).__name__})") from None
            if not count:
                return  # fetch_segments asks again from sink.position
            sink.write(buffer[:count])
        _release(response)

    def _finish(self, task: FileTask, counters: _Counters, meta: PartMeta | None,
                sha: str, size: int, fits: FitsChecksum | None = None) -> FileResult:
        """Verify the complete temporary (size, sha256 when known, the FITS file's own
        checksums when it has them), rename it to its final name, record it."""
        dest = Path(task.dest)
        expected = task.size if task.size is not None else (meta.size if meta else None)
        if expected is not None and size < expected:
            raise _Retry(f"body cut short: {size} of {expected} bytes")
        if expected is not None and size != expected:
            raise IntegrityError(f"product {task.key}: size mismatch: expected {expected} bytes, "
                                 f"got {size}")
        if task.sha256 is not None and sha != task.sha256.lower():
            raise IntegrityError(f"product {task.key}: sha256 mismatch: expected {task.sha256}, "
                                 f"got {sha}")
        try:
            checksum = fits.result() if fits is not None else None
        except ValueError as exc:  # bytes changed in flight, the length kept
            raise IntegrityError(f"product {task.key}: {exc} (a corrupt transfer)") from None
        on_disk = size_of(part_path(dest))
        if on_disk != size:  # the last look before the name is published
            raise IntegrityError(f"product {task.key}: the temporary holds {on_disk} bytes on "
                                 f"disk, {size} were verified")
        os.replace(part_path(dest), dest)
        fsync_dir(dest.parent)
        try:
            meta_path(dest).unlink()
        except FileNotFoundError:
            pass
        if self.ledger is not None:  # only now: renamed, and the rename durable
            self.ledger.mark_done(task.key, dest, size, sha, counters.attempts,
                                  meta.etag if meta else None, meta.last_modified if meta else None,
                                  checksum, stat_of(dest))
        with self._dirs.lock:
            self.to_fetch = max(self.to_fetch - size, 0)
        self._emit(Event("done", task.key, total=size))
        return FileResult(task.key, dest, "fetched", size=size, sha256=sha,
                          attempts=counters.attempts, http_requests=counters.requests,
                          checksum=checksum)
