"""Retrieve on a Dask cluster: the driver decides and records, workers fetch one file each.

With :mod:`~mastpipe.stages.retrieve.dask_worker` (what a worker runs), the only modules that
import ``dask``/``distributed`` (the optional extra ``mastpipe[dask]``); the retrieve stage imports
them only when ``retrieve.executor.kind`` is ``dask``.

Division of labour
------------------
* The **driver** (the ``mastpipe run`` process) keeps everything with state: the run lock, the
  checkpoints and the SQLite ledger. It plans exactly as the threads engine does
  (:meth:`mastpipe.stages.retrieve.engine.Transfer.plan`: ledger + disk, so files already done are skipped
  with no request at all), then submits one Dask task per remaining file and records each
  result in the ledger as it completes.
* A **worker** runs :func:`~mastpipe.stages.retrieve.dask_worker.fetch_on_worker`: one :meth:`Transfer.fetch_one` call, i.e. the very
  code path of a local run (temporary beside the target, ``Range`` resume, sha256 while
  streaming, fsync, atomic rename, retries, token only to its hosts). It writes no ledger: the
  ledger calls that ``Transfer`` would have made are captured and returned as facts with the
  :class:`~mastpipe.stages.retrieve.engine.FileResult`, and the driver replays them.

Politeness across the cluster
-----------------------------
At most ``in_flight`` downloads run at once cluster-wide because the driver never has more
than ``in_flight`` tasks submitted and unfinished: a new file is submitted only when one
completes. This was chosen over a ``distributed.Semaphore``: the bound is exact whatever the
number of workers or threads per worker; it needs no lease, whereas a semaphore lease held by a
worker that dies stays taken until the scheduler's lease timeout (30 s by default) and stalls
the run; tasks never sit on worker threads waiting for a lease; and the scheduler only ever
holds ``in_flight`` tasks, not a million. The cost is one driver round trip per file
(milliseconds), negligible next to a download.

A worker that dies mid-file
---------------------------
Its temporary stays on the shared filesystem. The scheduler reschedules the task on another
worker (Dask's own recovery); if Dask gives up on it (``KilledWorker``) or the future is lost
otherwise, the driver resubmits it under a new key. Either way the next attempt decides from the
disk again and resumes with ``Range``.

The token travels to the workers in memory only, wrapped in a :class:`Secret`
(:mod:`mastpipe.stages.retrieve.dask_worker`, the worker side, says how it stays hidden).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import threading
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from mastpipe.errors import TransferError, UsageError
from mastpipe.stages.retrieve.dask_worker import FileFacts, Secret, WorkerConfig, fetch_on_worker
from mastpipe.stages.retrieve.engine import Transfer
from mastpipe.stages.retrieve.fetch import from_mast
from mastpipe.stages.retrieve.files import Event, FileResult, FileTask
from mastpipe.stages.retrieve.settings import DownloadSettings, settings_from
from mastpipe.tls import check_ca_bundle

if TYPE_CHECKING:
    from distributed import Client, Future

    from mastpipe.stages.retrieve.ledger import Ledger, LedgerRow
    from mastpipe.typing import EventKind

__all__ = ["DaskTransfer", "FileFacts", "Secret", "WorkerConfig", "fetch_on_worker"]

log = logging.getLogger(__name__)

#: Driver-side resubmissions of one file after Dask itself gave up on it (KilledWorker ...).
RESUBMITS = 3
_LEDGER_METHODS = frozenset({"mark_running", "mark_done", "mark_failed"})


class DaskTransfer:
    """Download many files through a Dask cluster with the guarantees of :class:`Transfer`.

    Parameters
    ----------
    scheduler : str
        ``"local"`` (start a :class:`distributed.LocalCluster` of worker processes for this run)
        or a scheduler address such as ``"tcp://host:8786"``. Ignored when ``client`` is given.
    settings : DownloadSettings, optional
        How to download; ``in_flight`` bounds the downloads running across the whole cluster.
    workers : int, optional
        Worker processes of a local cluster (default: ``in_flight``).
    client : distributed.Client, optional
        An existing client to use (it is left open).
    resubmits : int
        Times the driver submits a file again after Dask gave up on its task.
    ledger, on_event, token, **options
        As in :class:`~mastpipe.stages.retrieve.engine.Transfer`. ``on_event`` is called from the
        driver (from Dask's event-loop thread for live ``start``/``bytes``/``retry`` events).

    Notes
    -----
    The destination must be on a filesystem every worker mounts at the same path: :meth:`run`
    checks that with a marker file before submitting anything.

    ``scheduler="local"`` starts worker processes with the ``spawn`` method, which imports the
    calling script again in each: a script using it must guard its work with
    ``if __name__ == "__main__":`` (``mastpipe run`` does).
    """

    def __init__(self, scheduler: str = "local", *, settings: DownloadSettings | None = None,
                 workers: int | None = None, client: Client | None = None, resubmits: int = RESUBMITS,
                 ledger: Ledger | None = None, on_event: Callable[[Event], None] | None = None,
                 token: str | None = None, **options: Any) -> None:
        try:
            import distributed  # noqa: F401 - fail here, before any stage output is used
        except ImportError:
            raise UsageError("retrieve.executor kind dask needs Dask's distributed scheduler",
                             hint="pip install 'mastpipe[dask]'") from None
        if workers is not None and workers < 1:
            raise UsageError("workers must be at least 1")
        self.settings = settings_from(settings, options)
        self.scheduler = scheduler
        self.workers = workers
        self.in_flight = self.settings.in_flight
        self.client = client
        self.resubmits = resubmits
        self.ledger = ledger
        self.on_event = on_event
        self.policy = self.settings.policy
        # The driver's engine plans (and validates the token's characters, as a local run does).
        self._planner = Transfer(self.settings.replace(in_flight=1), ledger=ledger, on_event=on_event,
                                 token=token)
        self._config = WorkerConfig(self.settings, token=Secret(token) if token else None)
        self._lock = threading.Lock()
        # Live events and results travel by different routes, so a result may overtake the last
        # events of its execution: per execution, count what arrived live; when the result comes,
        # emit the rest and drop any straggler (_on_topic). Events leave the driver exactly once.
        self._received: dict[str, int] = {}  # execution -> bytes delivered live
        self._noticed: dict[str, int] = {}  # execution -> start/retry events delivered live
        self._settled: set[str] = set()
        self._started: set[str] = set()  # files whose start was emitted (once per file)

    def __repr__(self) -> str:  # never show the token
        return (f"DaskTransfer(scheduler={self.scheduler!r}, in_flight={self.in_flight}, "
                f"token={'***' if self._config.token else None})")

    # -- public ---------------------------------------------------------------------------------

    def run(self, tasks: Sequence[FileTask]) -> list[FileResult]:
        """Fetch every task through the cluster; one result per task, in the same order.

        Raises
        ------
        UnsafePathError, UsageError, TransferError, StateError
            As :meth:`Transfer.run`; also TransferError when the workers do not see the
            destination's filesystem.
        """
        plan = self._planner.plan(tasks)
        done = dict(plan.done)
        web = [url for task, _, _ in plan.pending for url in task.mast_urls]
        if web:  # the driver checks what every worker's requests would read
            check_ca_bundle(*web, insecure=self.settings.insecure)
        if plan.pending:
            client, close = self._connect()
            try:
                self._check_shared(client, plan.pending[0][0].dest.parent)
                done.update(self._submit_all(client, plan.pending, plan.retry_budget))
            finally:
                close()
        return [done[task.key] for task in tasks]

    @property
    def reprocessed(self) -> dict[str, str]:
        """Files the driver's plan found reprocessed (see :attr:`Transfer.reprocessed`)."""
        return self._planner.reprocessed

    # -- cluster --------------------------------------------------------------------------------

    def _connect(self) -> tuple[Client, Callable[[], None]]:
        """The client to use, and how to let go of it (and of a local cluster) afterwards."""
        from distributed import Client, LocalCluster

        if self.client is not None:
            return self.client, lambda: None
        if self.scheduler == "local":
            # Worker processes, one thread each: downloads hash and write in their own process,
            # as they would on separate nodes. No dashboard: nothing to bind, nothing to show.
            cluster = LocalCluster(n_workers=self.workers or self.in_flight, threads_per_worker=1,
                                   processes=True, dashboard_address=None)
            client = Client(cluster, set_as_default=False)

            def close() -> None:
                client.close()
                cluster.close()

            return client, close
        try:
            client = Client(self.scheduler, set_as_default=False, timeout=30)
        except OSError as exc:
            raise TransferError(f"cannot reach the Dask scheduler {self.scheduler}: {exc}") from None
        return client, client.close

    def _check_shared(self, client: Client, directory: Path) -> None:
        """Refuse to start unless every worker sees the driver's destination filesystem."""
        directory.mkdir(parents=True, exist_ok=True)
        secret = uuid.uuid4().hex
        marker = directory / f".mastpipe-shared-{secret}"
        marker.write_text(secret)
        try:
            seen = client.run(_read_marker, os.fspath(marker))
        finally:
            marker.unlink(missing_ok=True)
        blind = sorted(address for address, text in seen.items() if text != secret)
        if blind:
            raise TransferError(
                f"Dask worker(s) {', '.join(blind)} cannot see {directory}: the destination must be "
                "on a filesystem the driver and every worker mount at the same path")

    def _submit_all(self, client: Client, pending: list[tuple[FileTask, LedgerRow | None, Any]],
                    budget: int) -> dict[str, FileResult]:
        from distributed import as_completed

        run_id = uuid.uuid4().hex[:12]
        topic = f"mastpipe-transfer-{run_id}"
        config = dataclasses.replace(self._config, topic=topic)
        # One window per source: cloud copies (S3, no per-client limit) do not wait for MAST's
        # politeness bound, and never use it up: at most in_flight from MAST, s3_in_flight from S3.
        queues: dict[str, deque[tuple[FileTask, LedgerRow | None, int]]] = {"mast": deque(), "s3": deque()}
        for task, row, _ in pending:
            queues[task.source].append((task, row, 0))
        limits = {"mast": self.in_flight, "s3": self.settings.s3_in_flight}
        running = {"mast": 0, "s3": 0}
        owners: dict[Any, tuple[FileTask, LedgerRow | None, int]] = {}  # dask key -> file
        results: dict[str, FileResult] = {}
        serial = 0
        client.subscribe_topic(topic, self._on_topic)
        completed = as_completed(loop=client.loop)

        def fill() -> None:
            for source, queue in queues.items():
                while queue and running[source] < limits[source]:
                    submit_next(queue.popleft())

        def submit_next(item: tuple[FileTask, LedgerRow | None, int]) -> None:
            nonlocal serial
            task, row, tries = item
            running[task.source] += 1
            serial += 1
            # A readable key without secrets: dashboards show it, logs print it.
            key = f"mastpipe-fetch-{_safe(task.dest.name)}-{run_id}-{serial}"
            share = min(budget_left[0], self.policy.max_attempts)
            future = client.submit(fetch_on_worker, task, row, config, share, key=key, pure=False)
            owners[future.key] = (task, row, tries)
            completed.add(future)

        budget_left = [budget]
        try:
            fill()
            for future in completed:
                task, row, tries = owners.pop(future.key)
                running[task.source] -= 1
                facts = self._outcome(future, task, tries)
                if facts is None:  # lost with its worker(s): decide from the disk again
                    queues[task.source].appendleft((task, row, tries + 1))
                else:
                    budget_left[0] -= max(facts.result.attempts - 1, 0)
                    if facts.result.fall_back is not None and task.fallback is not None:
                        # its cloud copy failed for good (source: auto): MAST's turn, in MAST's window
                        self._record(facts, final=False)
                        queues["mast"].append((from_mast(task, facts.result.fall_back, self._emit), row, 0))
                    else:
                        results[task.key] = self._record(facts)
                future.release()
                fill()
        except BaseException:
            # Ctrl-C: forget what is queued; running downloads end on their workers (Dask cannot
            # interrupt them), their temporaries or adopted files serve the next run.
            _quietly(client.cancel, list(completed.futures))
            raise
        finally:
            _quietly(client.unsubscribe_topic, topic)  # never hide the error being raised
        return results

    def _outcome(self, future: Future[Any], task: FileTask, tries: int) -> FileFacts | None:
        """The facts of a finished task; None to resubmit; a failed-result fact when out of tries."""
        try:
            return cast(FileFacts, future.result())
        except Exception as exc:  # noqa: BLE001 - KilledWorker, a lost future, a comm error
            reason = f"{type(exc).__name__}: {exc}"
            if tries < self.resubmits:
                log.warning("%s: its Dask task was lost (%s); submitting it again", task.key, reason)
                return None
            message = f"{task.key}: lost on the Dask cluster {tries + 1} times ({reason})"
            return FileFacts(FileResult(task.key, task.dest, "failed", error=message),
                             (("mark_failed", (task.key, os.fspath(task.dest), message, 0)),),
                             "", 0)

    # -- driver-side recording --------------------------------------------------------------------

    def _record(self, facts: FileFacts, final: bool = True) -> FileResult:
        """Replay the worker's ledger writes, settle its byte count, emit the final event
        (unless not ``final``: the file goes on from another source)."""
        if self.ledger is not None:
            for method, args in facts.ledger_calls:
                if method in _LEDGER_METHODS:
                    getattr(self.ledger, method)(*args)
        result = facts.result
        with self._lock:
            self._settled.add(facts.execution)
            rest = facts.bytes_written - self._received.pop(facts.execution, 0)
            late = []
            for kind, total, message in facts.notices[self._noticed.pop(facts.execution, 0):]:
                if kind == "start":
                    if result.key in self._started:
                        continue
                    self._started.add(result.key)
                late.append(Event(cast("EventKind", kind), result.key, total=total, message=message))
        for event in late:
            self._emit(event)
        if rest > 0:
            self._emit(Event("bytes", result.key, nbytes=rest))
        if not final:
            return result
        if result.status == "fetched":
            self._emit(Event("fetched", result.key, total=result.size))
        elif result.status == "skipped":
            self._emit(Event("skipped", result.key, total=result.size))
        else:
            self._emit(Event("failed", result.key, message=result.error))
        return result

    def _on_topic(self, event: tuple[float, dict[str, Any]]) -> None:
        """A worker's live event (runs on the client's event-loop thread)."""
        message = event[1]
        execution, kind = message["x"], message["kind"]
        with self._lock:
            if execution in self._settled:
                return  # arrived after the result: its bytes were already counted
            if kind == "bytes":
                self._received[execution] = self._received.get(execution, 0) + message["n"]
            else:
                self._noticed[execution] = self._noticed.get(execution, 0) + 1
                if kind == "start":
                    if message["key"] in self._started:
                        return  # a resumed file starts once, as in a local run
                    self._started.add(message["key"])
        self._emit(Event(kind, message["key"], nbytes=message["n"], total=message["t"],
                         message=message["m"]))

    def _emit(self, event: Event) -> None:
        if self.on_event is not None:
            self.on_event(event)


def _quietly(action: Callable[..., Any], *args: Any) -> None:
    """Clean-up that must not replace the exception in flight (e.g. a client already closed)."""
    try:
        action(*args)
    except Exception as exc:  # noqa: BLE001
        log.debug("Dask clean-up failed: %s", exc)


def _read_marker(path: str) -> str | None:
    """Run on each worker by :meth:`DaskTransfer._check_shared`."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError:
        return None


def _safe(name: str) -> str:
    """A file name fit for a Dask key (keys are shown in dashboards and split on ``-``)."""
    return re.sub(r"[^A-Za-z0-9_.]+", "_", name)[:80]
