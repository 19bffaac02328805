"""The outlook of the retrieve stage: what a run would do with the files, judged without doing it.

What ``mastpipe plan`` and ``mastpipe status`` show for the retrieve stage, whose state is the
ledger and the disk rather than a checkpoint. Reads only; contacts no server.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from astropy.table import Table

    from mastpipe.recipe.models import Retrieve

__all__ = ["RetrieveOutlook", "retrieve_outlook"]

log = logging.getLogger(__name__)


@dataclass
class RetrieveOutlook:
    """What the retrieve stage would do with the files of a filter result, judged from the
    ledger and the disk alone (see :func:`retrieve_outlook`).

    Attributes
    ----------
    mode : str
        The recipe's ``retrieve.mode``; only ``download`` keeps a ledger, so for the other modes
        every count but ``files`` is 0.
    files : int
        Files the filter result names.
    present : int
        Files needing no download: recorded as done with their size on disk, or complete on disk
        (adopted, or a finished temporary) and only to be hashed.
    to_fetch : int
        Files a run would request.
    bytes_to_fetch : int
        Bytes those requests would bring, when sizes are known (a resumed file counts only what
        it lacks).
    partial : int
        Of ``to_fetch``, files a run resumes from a temporary an earlier run left.
    failed : int
        Of ``to_fetch``, files the ledger records as failed.
    blocked : int
        Files a run would fail without a request: another file is in the way and
        ``retrieve.overwrite`` is ``never``, or the product's name or ids are unsafe.
    remaining : dict
        ``dataURI`` -> bytes still to fetch, for each file in ``to_fetch``.
    ledger : bool
        Whether a ledger exists (False: no download has started yet in this state directory).
    """

    mode: str
    files: int
    present: int = 0
    to_fetch: int = 0
    bytes_to_fetch: int = 0
    partial: int = 0
    failed: int = 0
    blocked: int = 0
    remaining: dict[str, int] = field(default_factory=dict)
    ledger: bool = False


def retrieve_outlook(table: Table, section: Retrieve, *, base: Path, state_dir: Path,
                     mast_url: str) -> RetrieveOutlook:
    """What the retrieve stage would do with ``table`` (a filter result), without doing it.

    Each file is judged by :func:`mastpipe.stages.retrieve.decide.decide` from the ledger row and the disk,
    exactly as :meth:`mastpipe.stages.retrieve.engine.Transfer.plan` judges it at the start of a run, but
    nothing is touched: no request, no sweep of stale temporaries, no ledger written (the
    ledger is only opened when it exists, and only read). Contacts no server.

    Parameters
    ----------
    table : astropy.table.Table
        The products to retrieve, normally the filter stage's result.
    section : Retrieve
        The recipe's ``retrieve`` section.
    base : Path
        Directory the recipe's relative paths are relative to.
    state_dir : Path
        The state directory whose ledger is read.
    mast_url : str
        The server the download URLs point at.

    Returns
    -------
    RetrieveOutlook

    Raises
    ------
    TransferError
        As the retrieve stage, when two products map to one path.
    StateError
        When the ledger cannot be read.
    """
    from mastpipe.errors import LedgerError
    from mastpipe.stages.retrieve.ledger import FAILED, Ledger, LedgerRow
    from mastpipe.state import StateDir
    from mastpipe.stages.retrieve.decide import ActionKind
    from mastpipe.stages.retrieve.stage import plan_files
    from mastpipe.stages.retrieve.engine import Transfer
    from mastpipe.stages.retrieve.settings import DownloadSettings

    destination = (base / section.destination).resolve()
    planned, refused = plan_files(table, destination, section.layout, mast_url)
    tasks = list({task.key: task for task in planned}.values())
    outlook = RetrieveOutlook(section.mode, len(tasks) + len(refused), blocked=len(refused))
    if section.mode != "download":
        return outlook
    path = StateDir(state_dir).ledger
    outlook.ledger = path.is_file()
    rows: dict[str, LedgerRow] = {}
    if outlook.ledger:  # Ledger() would create a missing one
        try:
            with Ledger(path, recover=False, journal=None) as ledger:  # status and plan only read
                rows = ledger.rows()
        except LedgerError as error:
            log.warning("%s; the next run sets it aside and adopts the files on disk by size",
                        error.message)
    # The settings a run's Transfer gets from the recipe (run --verify is not known here).
    transfer = Transfer(DownloadSettings(verify=section.verify == "sha256", overwrite=section.overwrite,
                                         check_space=False))
    for task, row, action in transfer.decisions(tasks, rows):
        if action.kind is ActionKind.KEEP_FOREIGN:
            outlook.blocked += 1
        elif action.kind in (ActionKind.FETCH, ActionKind.RESTART, ActionKind.RESUME):
            outlook.to_fetch += 1
            remaining = max((task.size or 0) - action.offset, 0)
            outlook.remaining[task.key] = remaining
            outlook.bytes_to_fetch += remaining
            outlook.partial += action.kind is ActionKind.RESUME
            outlook.failed += row is not None and row.status == FAILED
        else:  # SKIP_DONE, VERIFY_DONE, ADOPT, FINISH_VERIFY: on disk, no request
            outlook.present += 1
    return outlook
