"""mastpipe's transfer engine: parallel, resumable, verified HTTP downloads.

Three parts, each in a module of its own:

* **Decisions** (pure, unit-tested without a network) live in :mod:`mastpipe.stages.retrieve.decide`:
  :func:`~mastpipe.stages.retrieve.decide.decide` says what to do with one file before any request and
  :func:`~mastpipe.stages.retrieve.decide.judge` whether a response's body may be appended.
* **One file** is fetched by :class:`~mastpipe.stages.retrieve.fetch.FileFetcher` (lock, GET,
  stream into ``.<name>.part``, verify, rename, record), over the sessions of
  :class:`~mastpipe.stages.retrieve.client.Http` (redirects by hand, the token only to its hosts).
* **Many files**: :class:`Transfer`, here, plans a run (ledger + disk, moves, sweep, free space)
  and runs the fetches with a bounded number of downloads in flight.

How it downloads (in flight, timeouts, retries, ``--verify`` ...) is one
:class:`~mastpipe.stages.retrieve.settings.DownloadSettings`. The token is redacted from every
error text these modules produce.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mastpipe.stages.retrieve.client import MAX_REDIRECTS, Http
from mastpipe.stages.retrieve.decide import (Action, ActionKind, Kind, LocalState, PartMeta, RemoteFacts, ResponseFacts,
                                             Verdict, decide, judge, parse_content_range)
from mastpipe.stages.retrieve.fetch import HASH_QUEUE, PROGRESS_CEILING, SYNC_EVERY, Budget, Dirs, FileFetcher
from mastpipe.stages.retrieve.files import Event, FileResult, FileTask, Plan
from mastpipe.stages.retrieve.ledger import DONE, Ledger, LedgerRow
from mastpipe.stages.retrieve.paths import check_collisions, check_free_space
from mastpipe.stages.retrieve.relocate import movable, relocate
from mastpipe.stages.retrieve.segments import Segmenting, Slots
from mastpipe.stages.retrieve.settings import CHUNK, DownloadSettings, settings_from
from mastpipe.stages.retrieve.temporaries import meta_path, part_path, remove_stale_temporaries, stale_temporaries
from mastpipe.errors import UsageError
from mastpipe.tls import check_ca_bundle

# The vocabulary is re-exported for callers that import it from here (files, decide and
# temporaries are its homes).
__all__ = [
    "CHUNK",
    "HASH_QUEUE",
    "MAX_REDIRECTS",
    "PROGRESS_CEILING",
    "SYNC_EVERY",
    "Action",
    "DownloadSettings",
    "Event",
    "FileResult",
    "FileTask",
    "ActionKind",
    "Kind",
    "LocalState",
    "PartMeta",
    "Plan",
    "RemoteFacts",
    "ResponseFacts",
    "Segmenting",
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


class Transfer:
    """Download many files in parallel, resumably and verified.

    Parameters
    ----------
    settings : DownloadSettings, optional
        How to download (default ``DownloadSettings()``: 4 in flight, 60 s timeout ...).
    ledger : Ledger, optional
        Where completion is recorded; without it reruns rely on the disk alone (adoption by size).
    on_event : callable, optional
        Called with each :class:`Event`, from worker threads (must be thread-safe and fast).
    token : str, optional
        MAST token, sent as cookie ``mast_token`` to ``settings.token_hosts`` only.
    sleep : callable, optional
        Used to wait between retries; injectable for tests. By default the wait ends early when
        the run is interrupted.
    **options
        Fields of :class:`DownloadSettings` to change (``Transfer(policy=p)`` is
        ``Transfer(DownloadSettings(policy=p))``); ``workers`` is the old name of ``in_flight``.
    """

    def __init__(self, settings: DownloadSettings | None = None, *, ledger: Ledger | None = None,
                 on_event: Callable[[Event], None] | None = None, token: str | None = None,
                 sleep: Callable[[float], object] | None = None, **options: Any) -> None:
        self.settings = settings_from(settings, options)
        self.ledger = ledger
        self.on_event = on_event
        self._http = Http(self.settings, token)
        self._cancel = threading.Event()  # set when run() is interrupted (Ctrl-C)
        self._dirs = Dirs()
        self._fetcher = FileFetcher(self.settings, self._http, ledger, self._emit, self._cancel,
                                    sleep or self._cancel.wait, self._dirs)
        #: Files :meth:`plan` found reprocessed since they were fetched: key -> why.
        self.reprocessed: dict[str, str] = {}

    @property
    def workers(self) -> int:
        """Downloads in flight at once (``settings.in_flight``)."""
        return self.settings.in_flight

    def __repr__(self) -> str:  # never show the token, even in a debugger
        return f"Transfer(in_flight={self.settings.in_flight}, token={'***' if self._http.has_token else None})"

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
        web = [url for task, _, _ in pending for url in task.mast_urls]
        if web:  # a bad CA bundle would fail every file as if MAST were down
            check_ca_bundle(*web, insecure=self.settings.insecure)
        self._cancel.clear()
        try:
            if pending:
                in_flight = self.settings.in_flight
                # Two pools: MAST's downloads stay within in_flight (its politeness limit) while
                # cloud copies, which have no per-client limit, go s3_in_flight at a time.
                cloud = sum(1 for task, _, _ in pending if task.source == "s3")
                s3_threads = min(self.settings.s3_in_flight, cloud) or 1
                with ThreadPoolExecutor(in_flight, thread_name_prefix="mastpipe-transfer") as pool, \
                        ThreadPoolExecutor(s3_threads, thread_name_prefix="mastpipe-s3") as s3_pool, \
                        ThreadPoolExecutor(in_flight + s3_threads, thread_name_prefix="mastpipe-sync") as helpers:
                    # one helper per worker: each stream has at most one flush pending
                    self._fetcher.helpers = helpers
                    self._fetcher.slots = Slots(in_flight)
                    futures = [(s3_pool if p[0].source == "s3" else pool).submit(self._fetcher.fetch, *p)
                               for p in pending]
                    try:
                        for future in futures:
                            result = future.result()
                            done[result.key] = result
                    except BaseException:
                        # Ctrl-C (or a failing callback): stop between blocks rather than
                        # finishing every download first; temporaries stay for the next run.
                        self._cancel.set()
                        for executor in (pool, s3_pool):
                            executor.shutdown(wait=False, cancel_futures=True)
                        for executor in (pool, s3_pool):
                            executor.shutdown(wait=True)
                        raise
        finally:
            self._fetcher.helpers = None
            self._http.close()
        return [done[task.key] for task in tasks]

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
        budget = self.settings.run_retry_budget
        self._fetcher.budget = Budget(budget if budget is not None else 10 + 2 * len(unique))
        rows = self.ledger.rows() if self.ledger else {}
        moved = relocate(unique.values(), rows, self.ledger, self._dirs)
        if moved:
            log.info("moved %d file(s) already downloaded to their new paths (the layout or "
                     "destination changed)", moved)
        done: dict[str, FileResult] = {}
        pending: list[tuple[FileTask, LedgerRow | None, LocalState]] = []
        to_fetch = 0
        self.reprocessed = {}
        decided = []
        for task in unique.values():
            row = rows.get(task.key)
            # --revalidate may mark a done file reprocessed below: then its temporary decides
            local = self._fetcher.local_state(task, row, done_decides=not self.settings.revalidate)
            decided.append((task, row, local, decide(local, RemoteFacts(task.size))))
        self._versions_learnt(decided)
        if self.settings.revalidate:
            decided = self._revalidated(decided)
        for task, row, local, action in decided:
            if local.reprocessed is not None or (row is not None and row.status == DONE and task.size is not None
                                                 and row.size is not None and row.size != task.size):
                self.reprocessed[task.key] = (local.reprocessed
                                              or f"MAST reprocessed it (size {row.size} -> {task.size})")  # type: ignore[union-attr]
            if action.kind is ActionKind.SKIP_DONE:
                done[task.key] = FileResult(task.key, task.dest, "skipped",
                                            size=local.final_size, sha256=row.sha256 if row else None,
                                            checksum=row.checksum if row else None,
                                            source=row.source if row else None)
            else:
                pending.append((task, row, local))
                if task.size is not None and action.kind in (ActionKind.FETCH, ActionKind.RESTART, ActionKind.RESUME):
                    to_fetch += task.size - action.offset
        # Temporaries of files already done (left by an interrupted repair, or a kill between
        # the rename and the metadata's removal) are as stale as those of unwanted files.
        self._remove_stale(unique.values(), keep=[task for task, _, _ in pending])
        if pending and self.settings.check_space and to_fetch:
            check_free_space(Path(pending[0][0].dest).parent, to_fetch)
        self._fetcher.to_fetch = to_fetch  # what a full disk's message says the rest needs
        self._emit(Event("plan", total=len(unique), nbytes=to_fetch, skipped=len(done)))
        for result in done.values():
            self._emit(Event("skipped", result.key, total=result.size))
        return Plan(list(unique.values()), done, pending, to_fetch, self._fetcher.budget.left)

    def _versions_learnt(self, decided: list[tuple[FileTask, LedgerRow | None, LocalState, Action]]) -> None:
        """Record the product-list version of files done before the ledger kept versions, so a
        later reprocessing is noticed (a file that was skipped is the version listed now)."""
        if self.ledger is None:
            return
        learnt = {task.key: task.version for task, row, _, action in decided
                  if action.kind is ActionKind.SKIP_DONE and row is not None and row.version is None and task.version}
        self.ledger.set_versions(learnt)

    def _revalidated(self, decided: list[tuple[FileTask, LedgerRow | None, LocalState, Action]]
                     ) -> list[tuple[FileTask, LedgerRow | None, LocalState, Action]]:
        """``--revalidate``: HEAD every file about to be skipped (``in_flight`` at a time); one
        whose ETag, Last-Modified or length changed since it was fetched is fetched again."""
        from concurrent.futures import ThreadPoolExecutor

        skipped = [(i, task, row) for i, (task, row, _, action) in enumerate(decided)
                   if action.kind is ActionKind.SKIP_DONE and row is not None]
        if not skipped:
            return decided

        def changed(item: tuple[int, FileTask, LedgerRow]) -> str | None:
            _, task, row = item
            return self._fetcher.http.changed_since(task.url, row)

        with ThreadPoolExecutor(self.settings.in_flight, thread_name_prefix="mastpipe-revalidate") as pool:
            answers = list(pool.map(changed, skipped))
        decided = list(decided)
        for (i, task, row), why in zip(skipped, answers):
            if why is not None:
                local = dataclasses.replace(decided[i][2], reprocessed=f"the server's copy changed ({why})")
                decided[i] = (task, row, local, decide(local, RemoteFacts(task.size)))
        log.info("revalidated %d file(s) with the server: %d changed", len(skipped), sum(a is not None for a in answers))
        return decided

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
        moves = {task.key for task, _ in movable(tasks, rows)}
        decided: list[tuple[FileTask, LedgerRow | None, Action]] = []
        for task in tasks:
            row = rows.get(task.key)
            if row is not None and task.key in moves:  # plan moves it, no request: as good as done
                decided.append((task, row, Action(ActionKind.SKIP_DONE, reason="moved from " + row.dest)))
                continue
            local = self._fetcher.local_state(task, row, done_decides=True)
            decided.append((task, row, decide(local, RemoteFacts(task.size))))
        return decided

    def unfinished(self, tasks: Iterable[FileTask]) -> list[FileTask]:
        """The tasks whose files are not known done: :meth:`decisions` other than SKIP_DONE.

        The retrieve stage asks it whether any exclusive-access file may need the token, so a
        rerun over files already present neither checks a token nor fails for the lack of one.
        """
        return [task for task, _, action in self.decisions(tasks) if action.kind is not ActionKind.SKIP_DONE]

    def fetch_one(self, task: FileTask, row: LedgerRow | None = None, *, fall_back: bool = True) -> FileResult:
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
        fall_back : bool
            Fetch a failed cloud copy's ``fallback`` from MAST in this call; False leaves it to
            the caller (the result is ``failed`` with ``fall_back`` saying why).

        Returns
        -------
        FileResult
            Never raises for a failed download: the result says ``failed`` and why.

        Notes
        -----
        The retry budget is ``run_retry_budget`` for this one file (default: the policy's
        ``max_attempts`` alone bounds the retries); the caller shares a run-wide budget out.
        """
        budget = self.settings.run_retry_budget
        self._fetcher.budget = Budget(budget if budget is not None else self.settings.policy.max_attempts)
        self._fetcher.slots = Slots(1)  # the caller places one file per call: no slot to spare
        self._fetcher.fall_back_here = fall_back
        self._cancel.clear()
        try:
            with ThreadPoolExecutor(1, thread_name_prefix="mastpipe-sync") as helpers:
                self._fetcher.helpers = helpers
                return self._fetcher.fetch(task, row, self._fetcher.local_state(task, row))
        finally:
            self._fetcher.helpers = None
            self._http.close()

    # -- planning helpers -----------------------------------------------------------------------

    def _remove_stale(self, tasks: Iterable[FileTask], keep: Iterable[FileTask]) -> None:
        directories = {os.path.dirname(os.fspath(t.dest)) for t in tasks}
        for path in remove_stale_temporaries(directories, (t.dest for t in keep)):
            log.info("removed stale temporary %s", path)

    def _emit(self, event: Event) -> None:
        if self.on_event is not None:
            self.on_event(event)
