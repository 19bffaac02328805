"""One file, start to finish: lock, GET, stream into the temporary, verify, rename, record.

:class:`FileFetcher` is the per-file half of the engine (:class:`~mastpipe.stages.retrieve.engine.Transfer`
plans and runs many of them at once). For each file it loops: ask
:func:`~mastpipe.stages.retrieve.decide.decide` what the disk calls for, act on it (hash an
adopted file, finish a complete temporary, or make one attempt), and on a failed attempt wait as
the retry policy says and decide again from the disk as it is now.

Files are written to ``.<name>.part`` beside their target, with ``.<name>.part.json`` holding the
server's validator (ETag / Last-Modified) and the expected size (see
:mod:`mastpipe.stages.retrieve.temporaries`), so a run killed with ``kill -9`` resumes with
``Range`` + ``If-Range``. The sha256 is computed while the body streams (on a helper thread, so
hashing overlaps the network and the disk). A file appears under its final name only after its
size (and sha256, when known) has been verified, the data fsynced and the name swapped
atomically.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path


from mastpipe.errors import IntegrityError, TransferError
from mastpipe.retry import RetryAfterTooLong
from mastpipe.stages.retrieve.checksum import FitsChecksum
from mastpipe.stages.retrieve.attempt import HASH_QUEUE, SYNC_EVERY, Attempt, _fits_check, _kept, hash_existing
from mastpipe.stages.retrieve.outcomes import (PROGRESS_CEILING, _Counters, _DiskFull, _Fail, _Local, _Retry,
                                               disk_message, gave_up)
from mastpipe.stages.retrieve.segments import Slots
from mastpipe.stages.retrieve.client import Http
from mastpipe.stages.retrieve.decide import (Action, ActionKind, LocalState, PartMeta, RemoteFacts, decide)
from mastpipe.stages.retrieve import parts
from mastpipe.stages.retrieve.files import Event, FileResult, FileTask
from mastpipe.stages.retrieve.ledger import Ledger, LedgerRow
from mastpipe.stages.retrieve.settings import DownloadSettings
from mastpipe.stages.retrieve.temporaries import (DISK_ERRORS, FetchLock, discard, hash_file, local_state,
                                                  make_parents, meta_path, part_path, progress_of, remove_empty,
                                                  size_of, stat_of)
from mastpipe.atomic import fsync_dir

__all__ = ["Budget", "Dirs", "FileFetcher", "HASH_QUEUE", "PROGRESS_CEILING", "SYNC_EVERY", "from_mast"]

log = logging.getLogger(__name__)

LOCK_POLL = 0.2  # seconds between looks at a file another process is fetching
LOCK_NOTICE = 10.0  # seconds between "still waiting" lines


def _validators(row: LedgerRow | None, action: Action) -> tuple[str | None, str | None]:
    """ETag and Last-Modified to keep when a done file is recorded again without a request."""
    if row is not None and action.kind is not ActionKind.ADOPT:
        return row.etag, row.last_modified
    return None, None


def from_mast(task: FileTask, why: str, emit: Callable[[Event], None]) -> FileTask:
    """``task`` to fetch from MAST (its ``fallback``) once its cloud copy failed for good
    (``why``); said at warning level and as a ``retry`` event."""
    log.warning("%s: its cloud copy failed (%s); fetching it from MAST instead", task.key, why)
    emit(Event("retry", task.key, message=f"cloud copy failed ({why}); fetching it from MAST"))
    return replace(task, url=task.fallback or task.url, fallback=None)


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
        self.attempt = Attempt(settings, http, emit, cancel)
        self.to_fetch = 0  # bytes the plan had to fetch, less the files finished since
        #: fetch a failed cloud copy's ``fallback`` from MAST here; off on a Dask worker, whose
        #: driver queues it under the cluster's bound on MAST requests instead
        self.fall_back_here = True

    @property
    def helpers(self) -> ThreadPoolExecutor | None:
        """Threads that flush large files as they grow; set by the engine for a run."""
        return self.attempt.helpers

    @helpers.setter
    def helpers(self, pool: ThreadPoolExecutor | None) -> None:
        self.attempt.helpers = pool

    @property
    def slots(self) -> Slots:
        """The run's bound on requests in flight: each file holds one slot while it is worked on,
        and a file fetched in segments takes spare ones for its extra connections; set by the
        engine for a run."""
        return self.attempt.slots

    @slots.setter
    def slots(self, slots: Slots) -> None:
        self.attempt.slots = slots

    def local_state(self, task: FileTask, row: LedgerRow | None, ignore_final: bool = False,
                    done_decides: bool = False) -> LocalState:
        return local_state(task.dest, row, verify=self.settings.verify, overwrite=self.settings.overwrite,
                           ignore_final=ignore_final, version=task.version, expected=task.size,
                           done_decides=done_decides)

    def fetch(self, task: FileTask, row: LedgerRow | None, local: LocalState) -> FileResult:
        """Bring one file to its final name, or say why not; never raises for a failed file.

        A cloud copy with a ``fallback`` (``retrieve.source: auto``) whose S3 download fails for
        good is fetched from MAST instead, once, from byte zero (its temporary is discarded: S3's
        and MAST's validators differ, so its bytes cannot be proven the same object's); unless
        :attr:`fall_back_here` is off, when the result says so (``fall_back``) for the caller.
        """
        result = self._fetch(task, row, local)
        if result.fall_back is None or not self.fall_back_here or task.fallback is None:
            return result
        mast = from_mast(task, result.fall_back, self._emit)
        again = self._fetch(mast, row, self.local_state(mast, row))
        return replace(again, attempts=again.attempts + result.attempts,
                       http_requests=again.http_requests + result.http_requests)

    def _fetch(self, task: FileTask, row: LedgerRow | None, local: LocalState) -> FileResult:
        counters = _Counters()
        dest = Path(task.dest)
        if self._cancel.is_set():  # interrupted before this file began: leave it untouched
            return FileResult(task.key, dest, "failed", error=f"{task.key}: interrupted")
        lock = FetchLock(dest)
        result: FileResult | None = None
        # MAST's in-flight bound; a cloud copy is bounded by the S3 pool instead (engine.py)
        slots = self.slots if task.source == "mast" else None
        if slots is not None:
            slots.acquire()  # free at once unless extra segment connections hold them all
        try:
            result = self._until_settled(task, row, local, counters, lock)
            return result
        except Exception as exc:  # noqa: BLE001 - one broken file must not stop the others
            if isinstance(exc, OSError) and exc.errno in DISK_ERRORS:  # making its directory, its lock
                exc = _Local(disk_message(task, _DiskFull(exc, keep=True), self.to_fetch))
            message = self.http.clean(f"{task.key}: {exc}")
            if task.fallback is not None and not isinstance(exc, _Local) and not self._cancel.is_set():
                self._discard(task)  # MAST's download starts from zero (see fetch)
                result = FileResult(task.key, dest, "failed", attempts=counters.attempts,
                                    http_requests=counters.requests, error=message, source=task.source,
                                    fall_back=self.http.clean(str(exc)))
                return result
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
            if slots is not None:
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
        seen = progress_of(dest)
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
            progress = progress_of(dest)
            if progress != seen:
                seen, last_progress = progress, now
            elif now - last_progress > stall_limit:
                raise _Local(f"another process has held this file ({dest}) for "
                            f"{now - began:.0f} s without progress for {stall_limit:.0f} s; "
                            "rerun once it has finished or been stopped")
            if now - last_notice >= LOCK_NOTICE:
                last_notice = now
                log.warning("%s: still waiting for another process fetching it (%.0f s; its "
                            "temporary has %s bytes)", dest, now - began, progress[0])

    def _until_settled(self, task: FileTask, row: LedgerRow | None, local: LocalState,
                       counters: _Counters, lock: FetchLock) -> FileResult:
        dest = Path(task.dest)
        chunk_size = self.settings.chunk_size
        ignore_final = False  # set once the final file failed verification: replace it
        # Found by the plan alone (--revalidate asked the server): the disk cannot say it again.
        changed = local.reprocessed
        while True:
            if changed is not None and local.reprocessed is None:
                local = replace(local, reprocessed=changed)
            action = decide(local, RemoteFacts(task.size))
            if not lock.held and action.kind in (ActionKind.FINISH_VERIFY, ActionKind.FETCH, ActionKind.RESTART, ActionKind.RESUME):
                # Temporaries are about to be written: only by the lock's holder. Files that
                # are only hashed (adopted, verified) need no lock, which keeps reruns cheap.
                self._lock(lock, dest)
                # What was seen may have changed while another process held the lock (it may
                # have finished the file): decide again from the disk as it is now.
                local = self.local_state(task, row, ignore_final=ignore_final)
                continue
            if action.kind in (ActionKind.VERIFY_DONE, ActionKind.ADOPT, ActionKind.SKIP_DONE):
                sha, size, checksum, damaged = hash_existing(dest, chunk_size)
                wanted = row.sha256 if action.kind is ActionKind.VERIFY_DONE and row else task.sha256
                if damaged is None and (wanted is None or sha == wanted.lower()):
                    if self.ledger is not None:  # (again: with its stat as it is now)
                        self.ledger.mark_done(task.key, dest, size, sha, 0, *_validators(row, action),
                                              checksum, stat_of(dest), version=task.version)
                    self._emit(Event("skipped", task.key, total=size))
                    return FileResult(task.key, dest, "skipped", size=size, sha256=sha,
                                      attempts=counters.attempts, http_requests=counters.requests,
                                      checksum=checksum, source=row.source if row else None)
                why = damaged or f"sha256 {sha}, expected {wanted}"
                if (action.kind is ActionKind.VERIFY_DONE and not self.settings.verify
                        and self.settings.overwrite == "never"):
                    raise _Local(f"{dest} changed after it was downloaded ({why}); overwrite is "
                                "'never', so it is left as it is: move it away (or set overwrite: "
                                "changed) and rerun to fetch MAST's copy")
                log.warning("%s: %s: %s: fetching it again", task.key, dest, why)
                ignore_final = True
            elif action.kind is ActionKind.KEEP_FOREIGN:
                raise _Local(f"{action.reason}: {dest}")
            elif action.kind is ActionKind.FINISH_VERIFY:
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
                if action.kind is ActionKind.RESTART:
                    self._discard(task)
                if action.kind is ActionKind.FETCH and parts.wanted(task, self.settings.s3_part_size,
                                                                    self.settings.s3_parts):
                    counters.attempts += 1  # a large cloud copy: parallel ranged parts (parts.py)
                    try:
                        return self._finish(task, counters, *parts.fetch_parts(self, task, counters, _Retry, _Fail))
                    except _Retry as exc:
                        counters.stalled += 1
                        self._wait_before_retry(task, counters, exc)
                    except IntegrityError as exc:
                        self._discard(task)
                        counters.stalled += 1
                        self._wait_before_retry(task, counters, _Retry(str(exc)))
                    local = self.local_state(task, row, ignore_final=ignore_final)
                    continue
                counters.attempts += 1
                kept = action.offset if action.kind is ActionKind.RESUME else 0
                try:
                    meta, sha, size, fits = self.attempt.run(task, action, local.part_meta, counters)
                    return self._finish(task, counters, meta, sha, size, fits)
                except _DiskFull as exc:
                    if not exc.keep:
                        self._discard(task)
                    raise _Local(disk_message(task, exc, self.to_fetch)) from None
                except OSError as exc:  # writing the metadata, renaming: nothing half-written
                    if exc.errno not in DISK_ERRORS:
                        raise
                    raise _Local(disk_message(task, _DiskFull(exc, keep=True), self.to_fetch)) from None
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
            raise _Fail(f"{exc.reason} ({gave_up(counters, policy.max_attempts, ceiling)})")
        if not self.budget.take():
            raise _Fail(f"{exc.reason} (the run's retry budget is spent)")
        try:
            delay = policy.delay(max(counters.stalled, 1), exc.retry_after)
        except RetryAfterTooLong as too_long:
            raise _Fail(f"{exc.reason}; {too_long}") from None
        self._emit(Event("retry", task.key, message=self.http.clean(exc.reason)))
        log.info("%s: %s; retrying in %.2f s", task.key, self.http.clean(exc.reason), delay)
        self._sleep(delay)

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
                                  checksum, stat_of(dest), source=task.source, version=task.version)
        with self._dirs.lock:
            self.to_fetch = max(self.to_fetch - size, 0)
        self._emit(Event("fetched", task.key, total=size))
        return FileResult(task.key, dest, "fetched", size=size, sha256=sha,
                          attempts=counters.attempts, http_requests=counters.requests,
                          checksum=checksum, source=task.source)
