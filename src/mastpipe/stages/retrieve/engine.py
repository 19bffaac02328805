"""mastpipe's transfer engine: parallel, resumable, verified HTTP downloads.

Two layers:

* **Decisions** (pure, unit-tested without a network) live in :mod:`mastpipe.stages.retrieve.decide`:
  :func:`~mastpipe.stages.retrieve.decide.decide` says what to do with one file before any request and
  :func:`~mastpipe.stages.retrieve.decide.judge` whether a response's body may be appended; both are re-exported
  here.
* **Actions**: :class:`Transfer` runs those decisions for many files with a bounded number of
  downloads in flight, one ``requests.Session`` per worker thread, and a single retry loop.

Files are written to ``.<name>.part`` beside their target, with ``.<name>.part.json`` holding the
server's validator (ETag / Last-Modified) and the expected size (see :mod:`mastpipe.stages.retrieve.temporaries`),
so a run killed with ``kill -9`` resumes with ``Range`` + ``If-Range``. The sha256 is computed while the body streams (on a helper
thread, so hashing overlaps the network and the disk). A file appears under its final name only
after its size (and sha256, when known) has been verified, the data fsynced and the name swapped
atomically.

The MAST token is sent as the ``mast_token`` cookie and only to hosts in ``token_hosts``;
redirects are followed by hand so the token is dropped as soon as the host changes. It is
redacted from every error text this module produces.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.cookiejar
import logging
import os
import queue
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import requests
import urllib3

from mastpipe.auth import redact, require_cookie_safe
from mastpipe.errors import IntegrityError, TransferError, UsageError
from mastpipe.stages.retrieve.files import Event, FileResult, FileTask, Plan
from mastpipe.stages.retrieve.ledger import DONE, Ledger, LedgerRow
from mastpipe.stages.retrieve.paths import check_collisions, check_free_space
from mastpipe.stages.retrieve.decide import (Action, Kind, LocalState, PartMeta, RemoteFacts, ResponseFacts, Verdict,
                             decide, judge, parse_content_range)
from mastpipe.state import fsync_dir
from mastpipe.stages.retrieve.temporaries import (FetchLock, discard, hash_file, make_parents, meta_path, part_path,
                                  read_meta, remove_empty, remove_stale_temporaries, size_of,
                                  stale_temporaries, write_meta)
from mastpipe.retry import RetryAfterTooLong, RetryPolicy, is_transient_status
from mastpipe.tls import FIX, certificate_error, check_ca_bundle, describe, request_options

__all__ = [
    "Action",
    "Event",
    "FileResult",
    "FileTask",
    "Kind",
    "LocalState",
    "PartMeta",
    "Plan",
    "RemoteFacts",
    "ResponseFacts",
    "Transfer",
    "Verdict",
    "decide",
    "judge",
    "meta_path",
    "parse_content_range",
    "part_path",
    "stale_temporaries",
]

log = logging.getLogger(__name__)

# 256 KiB reads: measured on the 1 GB benchmark, 256-512 KiB beat 1 MiB by ~30% (1.28 s vs 1.8 s
# median; curl 1.14 s): a buffer that stays in the CPU cache is received, hashed and written
# without three trips to main memory, and syscalls per byte are already negligible.
CHUNK = 256 << 10
HASH_QUEUE = 4  # blocks a stream may read ahead of its hash
SYNC_EVERY = 64 << 20  # flush large files as they grow (see Transfer._stream)
# Attempts that keep new bytes do not count against the policy's max_attempts, but a file
# gets at most this many times max_attempts in all (and the run's budget still applies).
# A policy of one attempt (retries: 0) stays one attempt.
PROGRESS_CEILING = 10
MAX_REDIRECTS = 10
_REDIRECTS = {301, 302, 303, 307, 308}

def _host_key(url_or_host: str) -> str:
    """``host[:port]`` lower-cased, default ports dropped, for comparing token hosts."""
    text = url_or_host if "//" in url_or_host else f"//{url_or_host}"
    parts = urlsplit(text)
    host = (parts.hostname or "").lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None or (port, parts.scheme) in ((80, "http"), (443, "https")) or (
        not parts.scheme and port in (80, 443)
    ):
        return host
    return f"{host}:{port}"


# ---------------------------------------------------------------------------------------------
# The engine
# ---------------------------------------------------------------------------------------------


class _BackgroundHasher:
    """Feed a digest from a thread of its own, at most HASH_QUEUE blocks behind the caller."""

    def __init__(self, digest: hashlib._Hash) -> None:
        self._queue: queue.Queue[bytes | None] = queue.Queue(HASH_QUEUE)
        self._thread = threading.Thread(target=self._run, args=(digest,), daemon=True,
                                        name="mastpipe-sha256")
        self._thread.start()

    def _run(self, digest: hashlib._Hash) -> None:
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


@dataclass
class _Counters:
    attempts: int = 0
    requests: int = 0
    stalled: int = 0  # failed attempts in a row that kept no new byte (what the policy limits)


@dataclass
class _Budget:
    """The per-run retry budget, shared by every worker."""

    left: int
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self) -> bool:
        with self.lock:
            if self.left <= 0:
                return False
            self.left -= 1
            return True


class Transfer:
    """Download many files in parallel, resumably and verified.

    Parameters
    ----------
    workers : int
        Downloads in flight at once (default 4; MAST asks clients to stay polite).
    timeout : float
        Seconds to wait to connect and between bytes before an attempt counts as failed.
    policy : RetryPolicy, optional
        Attempts per file and backoff (default ``RetryPolicy()``).
    run_retry_budget : int, optional
        Retries allowed across the whole run (default ``10 + 2 * number of files``); once spent,
        files fail on their next transient error instead of hammering a failing server.
    token : str, optional
        MAST token, sent as cookie ``mast_token`` to ``token_hosts`` only.
    token_hosts : iterable of str
        ``host`` or ``host:port`` entries the token may go to (default ``{"mast.stsci.edu"}``).
    ledger : Ledger, optional
        Where completion is recorded; without it reruns rely on the disk alone (adoption by size).
    verify : bool
        Re-hash files recorded as done and refetch those whose hash changed.
    on_event : callable, optional
        Called with each :class:`Event`, from worker threads (must be thread-safe and fast).
    check_space : bool
        Refuse to start when the destination lacks room for the bytes still to fetch.
    overwrite : {"changed", "never", "always"}
        Files found under their final name without a ledger record (see :class:`LocalState`).
    chunk_size : int
        Largest read/write/hash step (default 256 KiB, see ``CHUNK``).
    sleep : callable, optional
        Used to wait between retries; injectable for tests. By default the wait ends early when
        the run is interrupted.
    insecure : bool
        Do not check servers' TLS certificates (``--insecure``; the caller warns, see
        :mod:`mastpipe.tls`). A certificate that fails the check fails its file at once.
    """

    def __init__(
        self,
        workers: int = 4,
        timeout: float = 60.0,
        policy: RetryPolicy | None = None,
        run_retry_budget: int | None = None,
        token: str | None = None,
        token_hosts: Iterable[str] = ("mast.stsci.edu",),
        ledger: Ledger | None = None,
        verify: bool = False,
        on_event: Callable[[Event], None] | None = None,
        check_space: bool = True,
        overwrite: str = "changed",
        chunk_size: int = CHUNK,
        sleep: Callable[[float], None] | None = None,
        insecure: bool = False,
    ) -> None:
        if workers < 1:
            raise UsageError("workers must be at least 1")
        if token:
            require_cookie_safe(token)  # before requests, whose header error would quote it
        self.workers = workers
        self.timeout = timeout
        self.policy = policy or RetryPolicy()
        self.run_retry_budget = run_retry_budget
        self._token = token or None
        self.token_hosts = frozenset(_host_key(h) for h in token_hosts)
        self.ledger = ledger
        self.verify = verify
        self.on_event = on_event
        self.check_space = check_space
        if overwrite not in ("changed", "never", "always"):
            raise UsageError(f"overwrite must be changed, never or always, not {overwrite!r}")
        self.overwrite = overwrite
        self.chunk_size = chunk_size
        self._tls = request_options(insecure)
        self._cancel = threading.Event()  # set when run() is interrupted (Ctrl-C)
        self._sleep = sleep or self._cancel.wait
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()
        self._budget = _Budget(0)
        self._helpers: ThreadPoolExecutor | None = None  # set for the duration of run()
        self._made: set[Path] = set()  # directories this instance created
        self._dirs_lock = threading.Lock()

    def __repr__(self) -> str:  # never show the token, even in a debugger
        return f"Transfer(workers={self.workers}, token={'***' if self._token else None})"

    # -- public ---------------------------------------------------------------------------------

    def run(self, tasks: Sequence[FileTask]) -> list[FileResult]:
        """Fetch every task; return one result per task, in the same order.

        A failing file never stops the others. Files recorded as done whose size on disk still
        matches are skipped without any request.

        Parameters
        ----------
        tasks : sequence of FileTask

        Returns
        -------
        list of FileResult

        Raises
        ------
        UnsafePathError
            Before anything is fetched, when two products map to one path.
        UsageError
            When one key is given two different destinations.
        TransferError
            Before anything is fetched, when free space is insufficient.
        StateError
            When the ledger cannot be read or written.
        """
        plan = self.plan(tasks)
        done = plan.done
        pending = plan.pending
        if pending:  # a bad CA bundle would fail every file as if MAST were down
            check_ca_bundle(*(task.url for task, _, _ in pending), insecure=bool(self._tls))
        self._cancel.clear()
        try:
            if pending:
                with ThreadPoolExecutor(self.workers, thread_name_prefix="mastpipe-transfer") as pool, \
                        ThreadPoolExecutor(self.workers, thread_name_prefix="mastpipe-sync") as helpers:
                    # one helper per worker: each stream has at most one flush pending
                    self._helpers = helpers
                    futures = [pool.submit(self._one, *p) for p in pending]
                    try:
                        for future in futures:
                            result = future.result()
                            done[result.key] = result
                    except BaseException:
                        # Ctrl-C (or a failing callback): stop between blocks rather than
                        # finishing every download first; temporaries stay for the next run.
                        self._cancel.set()
                        pool.shutdown(wait=True, cancel_futures=True)
                        raise
        finally:
            self._helpers = None
            self._close_sessions()
        return [done[task.key] for task in tasks]

    def _close_sessions(self) -> None:
        """Close every worker's HTTP session (and its connections) once a run is over."""
        with self._sessions_lock:
            for session in self._sessions:
                session.close()
            self._sessions.clear()

    def plan(self, tasks: Sequence[FileTask]) -> Plan:
        """Decide, before any request, what every file needs: the first half of :meth:`run`.

        Reads the ledger once, runs :func:`decide` on each file, removes stale temporaries,
        checks free space, resets the run's retry budget and emits the ``plan`` event and one
        ``skipped`` event per file needing nothing. An executor that places the downloads itself
        (:mod:`mastpipe.stages.retrieve.dask`) calls this in its driver, then :meth:`fetch_one` elsewhere
        for each pending file, so both executors decide exactly alike.

        Parameters
        ----------
        tasks : sequence of FileTask

        Returns
        -------
        Plan

        Raises
        ------
        UnsafePathError, UsageError, TransferError, StateError
            As :meth:`run`.
        """
        unique: dict[str, FileTask] = {}
        for task in tasks:
            seen = unique.setdefault(task.key, task)
            if os.fspath(seen.dest) != os.fspath(task.dest):
                raise UsageError(f"product {task.key} is given two destinations: "
                                 f"{seen.dest} and {task.dest}")
        check_collisions((t.key, t.dest) for t in unique.values())
        self._budget = _Budget(
            self.run_retry_budget if self.run_retry_budget is not None else 10 + 2 * len(unique)
        )
        rows = self.ledger.rows() if self.ledger else {}
        moved = self._relocate(unique.values(), rows)
        if moved:
            log.info("moved %d file(s) already downloaded to their new paths (the layout or "
                     "destination changed)", moved)
        done: dict[str, FileResult] = {}
        pending: list[tuple[FileTask, LedgerRow | None, LocalState]] = []
        to_fetch = 0
        for task in unique.values():
            row = rows.get(task.key)
            local = self._local_state(task, row)
            action = decide(local, RemoteFacts(task.size))
            if action.kind is Kind.SKIP_DONE:
                done[task.key] = FileResult(task.key, task.dest, "skipped",
                                            size=local.final_size, sha256=row.sha256 if row else None)
            else:
                pending.append((task, row, local))
                if task.size is not None and action.kind in (Kind.FETCH, Kind.RESTART, Kind.RESUME):
                    to_fetch += task.size - action.offset
        # Temporaries of files already done (left by an interrupted repair, or a kill between
        # the rename and the metadata's removal) are as stale as those of unwanted files.
        self._remove_stale(unique.values(), keep=[task for task, _, _ in pending])
        if pending and self.check_space and to_fetch:
            check_free_space(Path(pending[0][0].dest).parent, to_fetch)
        self._emit(Event("plan", total=len(unique), nbytes=to_fetch, skipped=len(done)))
        for result in done.values():
            self._emit(Event("skipped", result.key, total=result.size))
        return Plan(list(unique.values()), done, pending, to_fetch, self._budget.left)

    def decisions(self, tasks: Iterable[FileTask],
                  rows: dict[str, LedgerRow] | None = None) -> list[tuple[FileTask, LedgerRow | None, Action]]:
        """What :meth:`plan` would decide for each task, from the ledger and the disk alone.

        Unlike :meth:`plan` it touches nothing (no sweep, no events, no space check, no request).

        Parameters
        ----------
        tasks : iterable of FileTask
        rows : dict, optional
            Ledger rows by key; read from this instance's ledger when not given.

        Returns
        -------
        list of (FileTask, LedgerRow or None, Action)
        """
        if rows is None:
            rows = self.ledger.rows() if self.ledger else {}
        tasks = list(tasks)
        movable = {task.key for task, _ in self._movable(tasks, rows)}
        decided = []
        for task in tasks:
            row = rows.get(task.key)
            if task.key in movable:  # plan moves it, no request: as good as done
                decided.append((task, row, Action(Kind.SKIP_DONE, reason="moved from " + row.dest)))
                continue
            decided.append((task, row, decide(self._local_state(task, row), RemoteFacts(task.size))))
        return decided

    def unfinished(self, tasks: Iterable[FileTask]) -> list[FileTask]:
        """The tasks whose files are not known done: :meth:`decisions` other than SKIP_DONE.

        The retrieve stage asks it whether any exclusive-access file may need the token, so a
        rerun over files already present neither checks a token nor fails for the lack of one.
        """
        return [task for task, _, action in self.decisions(tasks) if action.kind is not Kind.SKIP_DONE]

    def fetch_one(self, task: FileTask, row: LedgerRow | None = None) -> FileResult:
        """Fetch one file now, in the calling thread: the per-file half of :meth:`run`.

        The same path as a file of :meth:`run` (decide from the disk and ``row``, resume with
        ``Range``, verify, fsync, rename, record in the ledger if there is one, emit events),
        without run's planning: no sweep of stale temporaries (other files of the directory
        may be in flight on other machines), no free-space check, no ``plan`` event. It is
        what a Dask worker runs for each file (:mod:`mastpipe.stages.retrieve.dask`). One call at a
        time per instance.

        Parameters
        ----------
        task : FileTask
        row : LedgerRow, optional
            The ledger's row for the file, read by the caller (the ledger may live elsewhere).

        Returns
        -------
        FileResult
            Never raises for a failed download: the result says ``failed`` and why.

        Notes
        -----
        The retry budget is ``run_retry_budget`` for this one file (default: the policy's
        ``max_attempts`` alone bounds the retries); the caller shares a run-wide budget out.
        """
        self._budget = _Budget(self.run_retry_budget if self.run_retry_budget is not None
                               else self.policy.max_attempts)
        self._cancel.clear()
        try:
            with ThreadPoolExecutor(1, thread_name_prefix="mastpipe-sync") as helpers:
                self._helpers = helpers
                return self._one(task, row, self._local_state(task, row))
        finally:
            self._helpers = None
            self._close_sessions()
            self._local = threading.local()

    # -- planning helpers -----------------------------------------------------------------------

    @staticmethod
    def _movable(tasks: Iterable[FileTask], rows: dict[str, LedgerRow]) -> list[tuple[FileTask, LedgerRow]]:
        """Files the ledger records as done at another path, still there with their recorded
        size, whose new path is free and whose old path no file of this run wants."""
        tasks = list(tasks)
        elsewhere = [(task, row) for task in tasks
                     if (row := rows.get(task.key)) is not None and row.status == DONE
                     and row.dest != os.fspath(task.dest)]
        if not elsewhere:  # the usual rerun: no set of every path to build
            return []
        wanted = {os.fspath(t.dest) for t in tasks}
        return [(task, row) for task, row in elsewhere
                if row.dest not in wanted and size_of(task.dest) is None and row.size is not None
                and size_of(row.dest) == row.size and not os.path.islink(row.dest)]

    def _relocate(self, tasks: Iterable[FileTask], rows: dict[str, LedgerRow]) -> int:
        """Move files done under an earlier layout or destination to their new paths, so a
        changed ``retrieve.layout`` costs renames, not downloads. Updates the ledger and
        ``rows`` alike; returns how many moved."""
        if self.ledger is None:
            return 0
        moved = 0
        for task, row in self._movable(tasks, rows):
            dest = Path(task.dest)
            try:
                self._made.update(make_parents(dest))
                os.rename(row.dest, dest)  # same filesystem only: never a copy that could tear
            except OSError as exc:
                log.info("%s: could not move %s to %s (%s): fetching it again", task.key, row.dest, dest,
                         exc.strerror or exc)
                continue
            fsync_dir(dest.parent)
            self.ledger.mark_done(task.key, dest, row.size or 0, row.sha256 or "", 0, row.etag, row.last_modified)
            rows[task.key] = dataclasses.replace(row, dest=os.fspath(dest))
            moved += 1
        return moved

    def _local_state(self, task: FileTask, row: LedgerRow | None,
                     ignore_final: bool = False) -> LocalState:
        dest = os.fspath(task.dest)  # strings: pathlib costs more than the stat on a rerun
        if row is not None and row.dest != dest:
            row = None  # it speaks of a file at another path: judge this one afresh
        head, name = os.path.split(dest)
        part = size_of(os.path.join(head, f".{name}.part"))
        return LocalState(
            final_size=None if ignore_final else size_of(dest),
            ledger_status=row.status if row else None,
            ledger_size=row.size if row else None,
            part_size=part,
            part_meta=read_meta(Path(dest)) if part is not None else None,
            verify=self.verify,
            overwrite=self.overwrite,
        )

    def _remove_stale(self, tasks: Iterable[FileTask], keep: Iterable[FileTask]) -> None:
        directories = {os.path.dirname(os.fspath(t.dest)) for t in tasks}
        for path in remove_stale_temporaries(directories, (t.dest for t in keep)):
            log.info("removed stale temporary %s", path)

    def _emit(self, event: Event) -> None:
        if self.on_event is not None:
            self.on_event(event)

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            # No cookie jar: cookies set by one host must never travel to another, and the token
            # is added per request only where it belongs.
            session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
            adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=1,
                                                    max_retries=0)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            session.headers["User-Agent"] = "mastpipe (python-requests)"
            self._local.session = session
            with self._sessions_lock:
                self._sessions.append(session)
        return session

    # -- one file -------------------------------------------------------------------------------

    def _one(self, task: FileTask, row: LedgerRow | None, local: LocalState) -> FileResult:
        counters = _Counters()
        dest = Path(task.dest)
        if self._cancel.is_set():  # interrupted before this file began: leave it untouched
            return FileResult(task.key, dest, "failed", error=f"{task.key}: interrupted")
        lock = FetchLock(dest)
        result: FileResult | None = None
        try:
            result = self._one_inner(task, row, local, counters, lock)
            return result
        except Exception as exc:  # noqa: BLE001 - one broken file must not stop the others
            message = self._clean(f"{task.key}: {exc}")
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
            with self._dirs_lock:
                lock.release()
                if result is None:  # a failed file leaves no directory made for it behind
                    self._made -= remove_empty(dest.parent, self._made)

    def _lock(self, lock: FetchLock, dest: Path) -> None:
        """Take ``lock`` before touching the temporaries of ``dest``, or fail the file."""
        with self._dirs_lock:  # no worker removes a directory another has just made
            self._made.update(make_parents(dest))  # the lock lives beside the file
            held = lock.acquire()
        if not held:
            raise _Fail(f"another process is fetching this file into {dest} right now "
                        "(its temporary is locked); rerun once it has finished")

    def _one_inner(self, task: FileTask, row: LedgerRow | None, local: LocalState,
                   counters: _Counters, lock: FetchLock) -> FileResult:
        dest = Path(task.dest)
        ignore_final = False  # set once the final file failed verification: replace it
        while True:
            action = decide(local, RemoteFacts(task.size))
            if not lock.held and action.kind in (Kind.FINISH_VERIFY, Kind.FETCH, Kind.RESTART, Kind.RESUME):
                # Temporaries are about to be written: only by the lock's holder. Files that
                # are only hashed (adopted, verified) need no lock, which keeps reruns cheap.
                self._lock(lock, dest)
                # What was seen may have changed while another process held the lock (it may
                # have finished the file): decide again from the disk as it is now.
                local = self._local_state(task, row, ignore_final=ignore_final)
                continue
            if action.kind in (Kind.VERIFY_DONE, Kind.ADOPT, Kind.SKIP_DONE):
                digest, size = hash_file(dest, self.chunk_size)
                sha = digest.hexdigest()
                wanted = row.sha256 if action.kind is Kind.VERIFY_DONE and row else task.sha256
                if wanted is None or sha == wanted.lower():
                    if self.ledger is not None and action.kind is not Kind.VERIFY_DONE:
                        self.ledger.mark_done(task.key, dest, size, sha, 0)
                    self._emit(Event("skipped", task.key, total=size))
                    return FileResult(task.key, dest, "skipped", size=size, sha256=sha,
                                      attempts=counters.attempts, http_requests=counters.requests)
                log.warning("%s: %s has sha256 %s, expected %s: fetching it again",
                            task.key, dest, sha, wanted)
                ignore_final = True
            elif action.kind is Kind.KEEP_FOREIGN:
                raise _Fail(f"{action.reason}: {dest}")
            elif action.kind is Kind.FINISH_VERIFY:
                digest, size = hash_file(part_path(dest), self.chunk_size)
                try:
                    return self._finish(task, counters, local.part_meta, digest.hexdigest(), size)
                except IntegrityError as exc:
                    log.warning("%s", self._clean(str(exc)))
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
                    meta, sha, size = self._attempt(task, action, local.part_meta, counters)
                    return self._finish(task, counters, meta, sha, size)
                except _Retry as exc:
                    if exc.discard:
                        self._discard(task)
                    # A resume that kept new bytes is progress, not a failure: on a link that
                    # drops every few minutes a large file still gets there.
                    progressed = not exc.discard and (size_of(part_path(dest)) or 0) > kept
                    counters.stalled = 0 if progressed else counters.stalled + 1
                    self._wait_before_retry(task, counters, exc)
                except IntegrityError as exc:
                    self._discard(task)  # scenario 6: a wrong temporary is never kept
                    counters.stalled += 1
                    self._wait_before_retry(task, counters, _Retry(str(exc)))
            local = self._local_state(task, row, ignore_final=ignore_final)

    def _discard(self, task: FileTask) -> None:
        """Delete the temporary of ``task``; a ``restart`` event tells progress its bytes are gone."""
        discard(Path(task.dest))
        self._emit(Event("restart", task.key))

    def _wait_before_retry(self, task: FileTask, counters: _Counters, exc: _Retry) -> None:
        """Sleep per the policy, or raise _Fail when a budget is spent or the wait is absurd."""
        if self._cancel.is_set():
            raise _Fail(f"{exc.reason} (interrupted)")
        ceiling = self.policy.max_attempts * (PROGRESS_CEILING if self.policy.max_attempts > 1 else 1)
        if not self.policy.should_retry(counters.stalled) or counters.attempts >= ceiling:
            raise _Fail(f"{exc.reason} (gave up after {counters.attempts} attempts)")
        if not self._budget.take():
            raise _Fail(f"{exc.reason} (the run's retry budget is spent)")
        try:
            delay = self.policy.delay(max(counters.stalled, 1), exc.retry_after)
        except RetryAfterTooLong as too_long:
            raise _Fail(f"{exc.reason}; {too_long}") from None
        self._emit(Event("retry", task.key, message=self._clean(exc.reason)))
        log.info("%s: %s; retrying in %.2f s", task.key, self._clean(exc.reason), delay)
        self._sleep(delay)

    def _clean(self, text: str) -> str:
        return redact(text, self._token)

    # -- HTTP ----------------------------------------------------------------------------------

    def _get(self, task: FileTask, headers: dict[str, str],
             counters: _Counters) -> requests.Response:
        """GET ``task.url`` following redirects by hand, so the token stays on its hosts."""
        session = self._session()
        url = task.url
        send_token = self._token is not None and _host_key(url) in self.token_hosts
        for _ in range(MAX_REDIRECTS + 1):
            request_headers = dict(headers)
            if send_token:
                request_headers["Cookie"] = f"mast_token={self._token}"
            counters.requests += 1
            response = session.get(url, headers=request_headers, stream=True,
                                   timeout=(self.timeout, self.timeout), allow_redirects=False,
                                   **self._tls)
            location = response.headers.get("Location")
            if response.status_code not in _REDIRECTS or not location:
                return response
            response.close()
            target = urljoin(url, location)
            downgrade = urlsplit(url).scheme == "https" and urlsplit(target).scheme != "https"
            if (downgrade or _host_key(target) != _host_key(url)
                    or _host_key(target) not in self.token_hosts):
                send_token = False  # and it stays dropped for the rest of the chain
            if urlsplit(target).scheme not in ("http", "https"):
                raise _Fail(f"redirected to an unsupported URL scheme: {target}")
            url = target
        raise _Fail(f"more than {MAX_REDIRECTS} redirects")

    def _attempt(self, task: FileTask, action: Action, meta: PartMeta | None,
                 counters: _Counters) -> tuple[PartMeta, str, int]:
        """One GET into the temporary; returns (its metadata, sha256, size) or raises
        _Retry / _Fail / IntegrityError."""
        dest = Path(task.dest)
        offset = action.offset if action.kind is Kind.RESUME else 0
        # identity: a gzipped body would not match Content-Length or the product size
        headers = {"Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
            if meta is not None and meta.validator:
                headers["If-Range"] = meta.validator
        try:
            response = self._get(task, headers, counters)
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
                    reason += (": exclusive-access product, and no MAST token was given"
                               if self._token is None else
                               ": the MAST token does not grant access to this product")
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
            if start:  # the kept bytes are part of the file's hash: read them first
                digest, have = hash_file(part_path(dest), self.chunk_size, limit=start)
                if have != start:
                    raise _Retry("temporary shorter than recorded", discard=True)
            if self._cancel.is_set():
                raise _Fail("interrupted")
            new_meta = PartMeta(size=total, etag=facts.etag, last_modified=facts.last_modified)
            write_meta(dest, new_meta)
            received = self._stream(task, response, start, digest)
        if facts.content_length is not None and received < facts.content_length:
            raise _Retry(f"body cut short: {received} of {facts.content_length} bytes")
        return new_meta, digest.hexdigest(), start + received

    def _stream(self, task: FileTask, response: requests.Response, start: int,
                digest: hashlib._Hash) -> int:
        """Write the body at ``start`` in the temporary, hashing as it goes; fsync; return the
        bytes received. A connection lost mid-body raises _Retry and keeps what arrived."""
        part = part_path(Path(task.dest))
        flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)  # no symlinked temporary
        fd = os.open(part, flags | (0 if start else os.O_TRUNC), 0o644)
        received = 0
        # Hashing runs on its own thread, a few blocks behind the write: sha256 and write() both
        # release the GIL, so on a large file they overlap instead of adding up. A helper
        # flushes every SYNC_EVERY bytes, so dirty pages never pile up (the kernel throttles
        # writers that let them) and the final fsync has little left to do.
        hasher = _BackgroundHasher(digest)
        syncing: Future[None] | None = None
        unsynced = 0
        with os.fdopen(fd, "wb", buffering=0) as handle:
            handle.truncate(start)  # drop any bytes past the splice point: never overlap
            handle.seek(start)
            # read1 returns whatever has arrived (up to a chunk): with read(), a connection lost
            # mid-chunk would throw away the bytes of that chunk instead of keeping them for
            # the resume. decode_content=False: the body is stored exactly as sent.
            read = response.raw.read1
            try:
                while True:
                    try:
                        block = read(self.chunk_size, decode_content=False)
                    except (requests.RequestException, urllib3.exceptions.HTTPError,
                            OSError) as exc:
                        raise _Retry(f"body cut short after {start + received} bytes "
                                     f"({type(exc).__name__})") from None
                    if not block:
                        break
                    if self._cancel.is_set():
                        raise _Fail(f"interrupted after {start + received} bytes")
                    hasher.update(block)
                    handle.write(block)
                    received += len(block)
                    unsynced += len(block)
                    if unsynced >= SYNC_EVERY and (syncing is None or syncing.done()):
                        syncing, unsynced = self._helpers.submit(os.fdatasync, fd), 0
                    self._emit(Event("bytes", task.key, nbytes=len(block)))
            finally:
                hasher.close()
                if syncing is not None:
                    syncing.result()
                os.fsync(handle.fileno())
        return received

    def _finish(self, task: FileTask, counters: _Counters, meta: PartMeta | None,
                sha: str, size: int) -> FileResult:
        """Verify the complete temporary, rename it to its final name, record it."""
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
        os.replace(part_path(dest), dest)
        fsync_dir(dest.parent)
        try:
            meta_path(dest).unlink()
        except FileNotFoundError:
            pass
        if self.ledger is not None:
            self.ledger.mark_done(task.key, dest, size, sha, counters.attempts,
                                  meta.etag if meta else None, meta.last_modified if meta else None)
        self._emit(Event("done", task.key, total=size))
        return FileResult(task.key, dest, "fetched", size=size, sha256=sha,
                          attempts=counters.attempts, http_requests=counters.requests)
