"""Files done under an earlier layout or destination, moved to their new paths.

A changed ``retrieve.layout`` or ``retrieve.destination`` gives files already fetched new paths;
:func:`relocate` renames them there (recording the move in the ledger) instead of fetching them
again, and :func:`movable` says which ones qualify, for :meth:`Transfer.plan
<mastpipe.stages.retrieve.engine.Transfer.plan>` (which moves them) and
:meth:`~mastpipe.stages.retrieve.engine.Transfer.decisions` (which only counts them).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from mastpipe.atomic import fsync_dir
from mastpipe.stages.retrieve.files import FileTask
from mastpipe.stages.retrieve.ledger import DONE, Ledger, LedgerRow
from mastpipe.stages.retrieve.temporaries import size_of, stat_of

if TYPE_CHECKING:
    from mastpipe.stages.retrieve.fetch import Dirs

__all__ = ["movable", "relocate"]

log = logging.getLogger(__name__)


def movable(tasks: Iterable[FileTask], rows: dict[str, LedgerRow]) -> list[tuple[FileTask, LedgerRow]]:
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


def relocate(tasks: Iterable[FileTask], rows: dict[str, LedgerRow], ledger: Ledger | None, dirs: Dirs) -> int:
    """Move files done under an earlier layout or destination to their new paths, so a
    changed ``retrieve.layout`` costs renames, not downloads. Updates ``ledger`` and ``rows``
    alike (nothing moves without a ledger); ``dirs`` makes the new parents. Returns how many
    moved."""
    if ledger is None:
        return 0
    moved = 0
    for task, row in movable(tasks, rows):
        dest = Path(task.dest)
        try:
            dirs.make_parents(dest)
            os.rename(row.dest, dest)  # same filesystem only: never a copy that could tear
        except OSError as exc:
            log.info("%s: could not move %s to %s (%s): fetching it again", task.key, row.dest, dest,
                     exc.strerror or exc)
            continue
        fsync_dir(dest.parent)
        ledger.mark_done(task.key, dest, row.size or 0, row.sha256 or "", 0, row.etag, row.last_modified,
                         row.checksum, stat_of(dest), source=row.source, version=row.version)
        rows[task.key] = dataclasses.replace(row, dest=os.fspath(dest))
        moved += 1
    return moved
