"""The worker side of a Dask retrieve: what one submitted task runs, and what it reports back.

:func:`fetch_on_worker` is the task: one :meth:`~mastpipe.stages.retrieve.engine.Transfer.fetch_one`
call with a :class:`WorkerConfig`, the very code path of a local run. The worker writes no ledger:
the ledger calls ``Transfer`` would have made are captured (:class:`_LedgerCalls`) and returned as
:class:`FileFacts`, which the driver (:class:`~mastpipe.stages.retrieve.dask.DaskTransfer`)
replays; live progress travels on a Dask event topic (:class:`_Forwarder`).

The token
---------
It travels in memory only, as an argument wrapped in :class:`Secret`, whose ``repr`` and ``str``
show ``***``: Dask prints task arguments in its "Compute Failed" log lines and dashboards show
task keys, so neither the key (built from the file name and a run id) nor any printed argument
contains it. It is never written to a file, a log or an event. Across untrusted networks use a
``tls://`` scheduler, since task arguments cross the wire like any other data.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from mastpipe.stages.retrieve.engine import Transfer
from mastpipe.stages.retrieve.files import Event, FileResult, FileTask
from mastpipe.stages.retrieve.settings import DownloadSettings

if TYPE_CHECKING:
    from mastpipe.stages.retrieve.ledger import Ledger, LedgerRow

__all__ = ["FileFacts", "Secret", "WorkerConfig", "fetch_on_worker"]

#: Forward byte counts from a worker at most this often (seconds): progress stays live without
#: one scheduler message per 256 KiB block.
FORWARD_EVERY = 0.25


class Secret:
    """A string that never shows itself: ``repr``/``str`` give ``Secret('***')``.

    Pickles (in memory, to the workers) with its value; :meth:`reveal` returns it.

    Parameters
    ----------
    value : str
        The secret.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself, for the one place that needs it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __reduce__(self) -> tuple[Any, ...]:
        return (Secret, (self._value,))


@dataclass(frozen=True)
class WorkerConfig:
    """What a worker needs to build its one-file :class:`Transfer` (the same for every file).

    Attributes
    ----------
    settings : DownloadSettings
        The run's settings, as the driver's engine has them.
    token : Secret or None
        MAST token, only ever sent to ``settings.token_hosts``.
    topic : str or None
        Dask event topic the worker forwards progress to (None: no forwarding).
    """

    settings: DownloadSettings = field(default_factory=DownloadSettings)
    token: Secret | None = None
    topic: str | None = None


@dataclass(frozen=True)
class FileFacts:
    """What a worker reports about one file; the driver turns it into ledger rows and events.

    Attributes
    ----------
    result : FileResult
        The outcome, exactly as a local run would have produced it.
    ledger_calls : tuple
        ``(method, args)`` pairs: the ledger writes the local engine would have made, in order.
    execution : str
        Identifies this execution of the task (a task rescheduled after a worker died runs again
        under the same Dask key, with a new execution id).
    bytes_written : int
        Body bytes this execution wrote; the driver forwards whatever the live events did not.
    notices : tuple
        ``(kind, total, message)`` of every ``start`` and ``retry`` event of this execution, in
        order; the driver emits those its live feed has not delivered yet.
    worker : str
        Address of the worker that ran it (for logs and tests).
    """

    result: FileResult
    ledger_calls: tuple[tuple[str, tuple[Any, ...]], ...]
    execution: str
    bytes_written: int
    notices: tuple[tuple[str, int | None, str | None], ...] = ()
    worker: str = ""


class _LedgerCalls:
    """Stands in for the ledger on a worker: records the writes so the driver can replay them.

    The worker has no ledger (SQLite stays in the driver, where the lock is); capturing the calls
    instead of re-deriving them from the result keeps one source of truth for what gets recorded.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def rows(self, keys: Iterable[str] | None = None) -> dict[str, LedgerRow]:
        return {}

    def mark_running(self, key: str, dest: Path | str, size: int | None) -> None:
        self.calls.append(("mark_running", (key, str(dest), size)))

    def mark_done(self, key: str, dest: Path | str, size: int, sha256: str, attempts: int,
                  etag: str | None = None, last_modified: str | None = None,
                  checksum: str | None = None, stat: os.stat_result | None = None,
                  source: str | None = None, version: str | None = None) -> None:
        self.calls.append(("mark_done", (key, str(dest), size, sha256, attempts, etag,
                                         last_modified, checksum, stat, source, version)))

    def mark_failed(self, key: str, dest: Path | str, error: str, attempts: int) -> None:
        self.calls.append(("mark_failed", (key, str(dest), error, attempts)))


class _Forwarder:
    """The worker-side ``on_event``: sends start/retry/restart at once and byte counts in batches."""

    def __init__(self, send: Callable[[dict[str, Any]], None] | None, execution: str,
                 key: str) -> None:
        self._send = send
        self.execution = execution
        self.key = key
        self.sent = 0  # bytes already forwarded
        self.pending = 0  # bytes written but not forwarded yet
        self.notices: list[tuple[str, int | None, str | None]] = []  # start/retry, in order
        self._last = time.monotonic()

    def __call__(self, event: Event) -> None:
        if event.kind == "bytes":
            self.pending += event.nbytes
            if time.monotonic() - self._last >= FORWARD_EVERY:
                self.flush()
        elif event.kind in ("start", "retry", "restart"):
            self.flush()
            self.notices.append((event.kind, event.total, event.message))
            self._post(event.kind, event.key, 0, event.total, event.message)
        # done / skipped / failed: the driver emits those from the returned facts

    def flush(self) -> None:
        if self.pending and self._send is not None:
            self._post("bytes", self.key, self.pending, None, None)
            self.sent += self.pending
            self.pending = 0
        self._last = time.monotonic()

    def _post(self, kind: str, key: str, nbytes: int, total: int | None,
              message: str | None) -> None:
        if self._send is not None:
            self._send({"x": self.execution, "kind": kind, "key": key, "n": nbytes, "t": total,
                        "m": message})


def fetch_on_worker(task: FileTask, row: LedgerRow | None, config: WorkerConfig,
                    retry_budget: int) -> FileFacts:
    """Fetch one file on a Dask worker (or anywhere): the task every submission runs.

    Parameters
    ----------
    task : FileTask
        The file; its ``dest`` must be on a filesystem the driver and every worker share.
    row : LedgerRow or None
        The driver's ledger row for the file.
    config : WorkerConfig
        Engine settings and the token (hidden in a :class:`Secret`).
    retry_budget : int
        Retries this file may spend (the driver's share of the run's budget).

    Returns
    -------
    FileFacts
        Never raises for a failed download (the result says ``failed``); the task only fails
        when its worker dies.
    """
    execution = uuid.uuid4().hex
    send = None
    address = ""
    try:
        from distributed import get_worker

        worker = get_worker()
        address = worker.address
        topic = config.topic
        if topic is not None:
            def send(message: dict[str, Any]) -> None:
                worker.log_event(topic, message)
    except (ImportError, ValueError):  # not on a worker (a direct call): no forwarding
        pass
    forward = _Forwarder(send, execution, task.key)
    ledger = _LedgerCalls()
    settings = config.settings.replace(in_flight=1, run_retry_budget=retry_budget, check_space=False)
    engine = Transfer(settings, token=config.token.reveal() if config.token is not None else None,
                      # duck-typed: the engine only calls mark_* on it (see _LedgerCalls)
                      ledger=cast("Ledger", ledger), on_event=forward)
    # a cloud copy that fails for good comes back to the driver, which queues its MAST download
    # under the cluster's bound on MAST requests (not this worker's S3 window)
    result = engine.fetch_one(task, row, fall_back=False)
    return FileFacts(result, tuple(ledger.calls), execution, forward.sent + forward.pending,
                     tuple(forward.notices), address)
