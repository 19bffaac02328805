"""Types for annotating code that uses mastpipe: the words it accepts and the engines it drives.

Modelled on pooch's ``typing`` module: the fixed vocabularies as ``Literal`` types (so a type
checker catches ``until="filtre"``) and the roles other code may fill as ``Protocol`` types (so
an engine or a progress display need not inherit from anything).

>>> from mastpipe.typing import EventKind, EventHandler
>>> def count_fetched(event) -> None: ...                    # doctest: +SKIP
>>> handler: EventHandler = count_fetched                   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from mastpipe.stages.retrieve.files import Event, FileResult, FileTask

__all__ = ["Engine", "EventHandler", "EventKind", "ExecutorKind", "FileStatus", "Mode", "Overwrite",
           "StageName", "StageState"]

#: The stages, in the order a run meets them (``until`` / ``from_stage`` take one).
StageName = Literal["query", "products", "unique", "filter", "retrieve"]
#: ``retrieve.mode``: download the files, write a curl script, or only list them.
Mode = Literal["download", "curl", "manifest"]
#: ``retrieve.overwrite``: what to do with a file found without a ledger record.
Overwrite = Literal["changed", "never", "always"]
#: ``retrieve.executor.kind``: threads of this process, or a Dask cluster.
ExecutorKind = Literal["threads", "dask"]
#: What became of one file (:attr:`mastpipe.stages.retrieve.files.FileResult.status`).
FileStatus = Literal["fetched", "skipped", "failed"]
#: A checkpoint's state as ``status`` reports it: ``current`` (a run would reuse it), ``stale``
#: (a run would recompute it; the reasons say why) or ``missing``.
StageState = Literal["current", "stale", "missing"]
#: :attr:`mastpipe.stages.retrieve.files.Event.kind`: ``plan`` once per run, then per file
#: ``start``, ``bytes``, ``retry``, ``restart`` and one of ``fetched`` (just fetched and
#: verified), ``skipped``, ``failed``: the file statuses of :data:`FileStatus`.
EventKind = Literal["plan", "start", "bytes", "retry", "restart", "fetched", "skipped", "failed"]


class EventHandler(Protocol):
    """Receives the retrieve stage's events (``on_event=``); called from worker threads, so it
    must be thread-safe and quick."""

    def __call__(self, event: Event, /) -> None: ...


class Engine(Protocol):
    """What the retrieve stage asks of a download engine
    (:class:`~mastpipe.stages.retrieve.engine.Transfer`,
    :class:`~mastpipe.stages.retrieve.dask.DaskTransfer`): one result per task, in order, never
    raising for a file that failed."""

    def run(self, tasks: Sequence[FileTask], /) -> list[FileResult]: ...
