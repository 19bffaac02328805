"""The vocabulary of a retrieve: the files to fetch, what became of them, the plan and the events.

Shared by the transfer engine (:mod:`mastpipe.stages.retrieve.engine`, which re-exports every name), the Dask
executor (:mod:`mastpipe.stages.retrieve.dask`), the retrieve stage and progress reporting.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mastpipe.typing import EventKind, FileStatus

if TYPE_CHECKING:
    from mastpipe.stages.retrieve.ledger import LedgerRow
    from mastpipe.stages.retrieve.decide import LocalState

__all__ = ["Event", "FileResult", "FileTask", "Plan", "Status"]



@dataclass(frozen=True)
class FileTask:
    """One file to fetch.

    Parameters
    ----------
    key : str
        The product's ``dataURI``: identifies the file in the ledger and in results.
    url : str
        Where to download it from.
    dest : pathlib.Path
        Final path (already checked by :mod:`mastpipe.stages.retrieve.paths`).
    size : int or None
        Expected size from the product list, or None when unknown.
    protected : bool
        Exclusive-access product (``dataRights == "EXCLUSIVE_ACCESS"``); only used to explain a
        401/403.
    sha256 : str or None
        Expected sha256 when known (MAST does not publish one; tests and mirrors may).
    version : str or None
        What the product list says identifies this version of the file besides its size
        (``prvversion=1.12.5``; :func:`mastpipe.stages.retrieve.ledger.product_version`), or None.

    fallback : str or None
        For a cloud copy under ``retrieve.source: auto``: MAST's URL, fetched instead when the
        S3 download fails for good (after its retries); None: a failed copy fails the file.

    A ``url`` of the form ``s3://stpubdata/<key>`` is fetched from MAST's cloud copy with an S3
    client (:mod:`mastpipe.stages.retrieve.s3`); :attr:`source` then says ``s3``.
    """

    key: str
    url: str
    dest: Path
    size: int | None = None
    protected: bool = False
    sha256: str | None = None
    version: str | None = None
    fallback: str | None = None

    @property
    def source(self) -> str:
        """``s3`` for a cloud copy, ``mast`` for MAST's download service."""
        return "s3" if self.url.startswith("s3://") else "mast"

    @property
    def mast_urls(self) -> tuple[str, ...]:
        """MAST's URLs this file may be fetched from: its own unless it is a cloud copy, and the
        fallback of a cloud copy (what a CA bundle must be able to check)."""
        return tuple(url for url in (self.url, self.fallback) if url and not url.startswith("s3://"))


Status = FileStatus  # the old name


@dataclass(frozen=True)
class FileResult:
    """What happened to one :class:`FileTask`.

    Attributes
    ----------
    key, dest
        As in the task.
    status : {"fetched", "skipped", "failed"}
        ``skipped`` means no download was needed (done before, or adopted).
    size : int or None
        Bytes on disk under ``dest`` when the file is complete.
    sha256 : str or None
        Hex digest of the complete file.
    attempts : int
        Download attempts this run (redirects not counted).
    http_requests : int
        HTTP requests sent this run for this file (redirect hops counted).
    error : str or None
        Why it failed; names the product; never contains the token.
    checksum : {"verified", "none"} or None
        The FITS file's own ``CHECKSUM``/``DATASUM`` were checked against its bytes and matched
        (``verified``), or it carries none / is not FITS (``none``); None when not looked at
        (a failed file, or a done file skipped without reading it: see the ledger's record).
    source : str or None
        Where the file's bytes came from, ``mast`` or ``s3`` (None: not known, e.g. a file
        adopted from the disk).
    fall_back : str or None
        Why the cloud copy failed for good, when the file is to be fetched from MAST (the
        task's ``fallback``) by the caller instead: only from an engine told to leave that to
        its caller (a Dask worker, so the cluster's bound on MAST requests holds); the
        ``status`` is then ``failed`` until MAST's download settles it.
    """

    key: str
    dest: Path
    status: Status
    size: int | None = None
    sha256: str | None = None
    attempts: int = 0
    http_requests: int = 0
    error: str | None = None
    checksum: str | None = None
    source: str | None = None
    fall_back: str | None = None


@dataclass
class Plan:
    """What :meth:`Transfer.plan` decided before any request.

    Attributes
    ----------
    tasks : list of FileTask
        The tasks, one per key, in the order first given.
    done : dict
        key -> :class:`FileResult` (``skipped``) for files needing no request at all.
    pending : list of tuple
        ``(task, ledger row or None, LocalState)`` for every other file.
    to_fetch : int
        Bytes still to download, when sizes are known.
    retry_budget : int
        Retries allowed across the run.
    """

    tasks: list[FileTask]
    done: dict[str, FileResult]
    pending: list[tuple[FileTask, LedgerRow | None, LocalState]]
    to_fetch: int
    retry_budget: int


@dataclass(frozen=True)
class Event:
    """A progress notification passed to ``Transfer(on_event=...)``, from worker threads.

    ``kind`` is one of ``"plan"`` (once per run: ``total`` = files, ``nbytes`` = bytes still to
    fetch when known, ``skipped`` = files needing nothing), ``"start"``, ``"bytes"`` (``nbytes``
    just written), ``"retry"``, ``"restart"`` (the bytes this run wrote for ``key`` were thrown
    away: the file starts again from zero), ``"fetched"``, ``"skipped"``, ``"failed"`` (``message``
    says why).
    """

    kind: EventKind
    key: str = ""
    nbytes: int = 0
    total: int | None = None
    message: str | None = None
    skipped: int = 0
