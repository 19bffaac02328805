"""products: product lists of the observations found, a few observations per request.

Batches are fetched with a bounded number of requests in flight; each finished batch is written
to the state directory at once, so a run killed mid-stage resumes with only the batches not yet
done. A batch that times out is split in two and retried, down to single observations.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mastpipe.archive import TimedOut
from mastpipe.errors import TruncatedResultError

if TYPE_CHECKING:
    from astropy.table import Table

    from mastpipe.archive import Archive

__all__ = ["ROW_CAP", "BatchStore", "batch_id", "batches", "fetch_batch", "fetch_stacked", "run"]

log = logging.getLogger(__name__)


def batches(obsids: list[str] | np.ndarray, size: int) -> list[tuple[str, ...]]:
    """Sorted, de-duplicated obsids in batches of ``size``: the same input gives the same batches,
    which is what lets a resumed run recognise the batches it already has."""
    as_text = (o.decode() if isinstance(o, bytes) else str(o) for o in obsids)
    unique = sorted({o for o in as_text if o})
    return [tuple(unique[i:i + size]) for i in range(0, len(unique), size)]


def _obsids(observations: Table) -> np.ndarray | list[str]:
    return np.asarray(observations["obsid"]) if len(observations) else []


def batch_id(batch: tuple[str, ...]) -> str:
    return hashlib.sha256(",".join(batch).encode()).hexdigest()[:20]


class BatchStore:
    """Finished batches on disk (``<stage dir>/<batch id>.fits``), written atomically."""

    def __init__(self, directory: Path, write: Callable[[Path, Table], None], read: Callable[[Path], Table]) -> None:
        self.directory = directory
        self._write, self._read = write, read

    def path(self, batch: tuple[str, ...]) -> Path:
        return self.directory / f"{batch_id(batch)}.fits"

    def load(self, batch: tuple[str, ...]) -> Table | None:
        path = self.path(batch)
        if not path.exists():
            return None
        try:
            return self._read(path)
        except Exception as exc:  # a batch cut short by a crash is simply fetched again
            log.warning("products: discarding unreadable batch file %s (%s)", path.name, exc)
            path.unlink(missing_ok=True)
            return None

    def save(self, batch: tuple[str, ...], table: Table) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._write(self.path(batch), table)

    def files(self, observations: Table, batch_size: int) -> list[Path]:
        """The file of every batch of ``observations``, in the order :func:`run` stacks them:
        once it has returned, its table is these files' tables stacked (empty ones left out)."""
        return [self.path(batch) for batch in batches(_obsids(observations), batch_size)]


#: MAST silently cuts a result at this many rows; a product list this long may be cut.
ROW_CAP = 50_000


def fetch_batch(archive: Archive, batch: tuple[str, ...], row_cap: int = ROW_CAP,
                mission: str | None = None) -> list[Table]:
    """One batch's products; a batch that times out, or whose answer reaches MAST's row cap (and
    so may have been cut), is halved and each half tried again. One observation whose product
    list reaches the cap fails loudly rather than passing a cut list off as complete.

    With ``mission`` the batch holds that mission's datasets, listed by its product-list service."""
    try:
        table = archive.mission_products(mission, list(batch)) if mission else archive.products(list(batch))
    except TimedOut:
        if len(batch) == 1:
            raise
        log.warning("products: batch of %d timed out; splitting it in two", len(batch))
    else:
        if len(table) < row_cap:
            return [table]
        if len(batch) == 1:
            raise TruncatedResultError(
                f"products: MAST returned {len(table)} products for observation {batch[0]}, its row cap; "
                "the list may be cut", hint="report this observation; mastpipe cannot split one observation's list")
        log.warning("products: batch of %d returned %d rows, MAST's row cap; splitting it in two", len(batch), len(table))
    half = len(batch) // 2
    return fetch_batch(archive, batch[:half], row_cap, mission) + fetch_batch(archive, batch[half:], row_cap, mission)


def fetch_stacked(archive: Archive, batch: tuple[str, ...], row_cap: int = ROW_CAP, mission: str | None = None) -> Table:
    """One batch's products as one table (the halves of a split batch stacked), in the form
    checkpoints store: text as UTF-8 bytes, a quarter of the memory of astroquery's str columns,
    which is what keeps a run over a million product rows well under 2 GB."""
    from mastpipe.state import as_stored, stacked

    return stacked([as_stored(t) for t in fetch_batch(archive, batch, row_cap, mission)])


def run(observations: Table, archive: Archive, batch_size: int, in_flight: int, store: BatchStore,
        row_cap: int = ROW_CAP, mission: str | None = None) -> Table:
    """Product lists for every observation, stacked in batch order (sorted obsids), whatever order
    the requests finish in: the same answers give the same table, so later stages are reused.
    Batches already on disk are not refetched."""

    from mastpipe.state import stacked

    todo = batches(_obsids(observations), batch_size)
    done: dict[tuple[str, ...], Table] = {}
    missing = []
    for batch in todo:
        table = store.load(batch)
        if table is None:
            missing.append(batch)
        else:
            done[batch] = table
    if done:
        log.info("products: %d of %d batches already fetched", len(done), len(todo))
    # Requests run in `in_flight` threads; finished batches are written by a thread of their own,
    # so a request slot is never held up by a disk write.
    with ThreadPoolExecutor(max_workers=in_flight, thread_name_prefix="products") as pool, \
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="products-save") as writer:
        pending: dict[Future[Table], tuple[str, ...]] = {}
        saving: list[Future[None]] = []
        queue = list(missing)
        try:
            while queue or pending:
                while queue and len(pending) < in_flight:
                    batch = queue.pop(0)
                    pending[pool.submit(fetch_stacked, archive, batch, row_cap, mission)] = batch
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    batch = pending.pop(future)
                    done[batch] = future.result()
                    saving.append(writer.submit(store.save, batch, done[batch]))
        finally:
            for future in pending:  # a failed batch stops the stage: do not start the queued ones
                future.cancel()
            for saved in saving:  # finished batches are kept even when another one failed
                saved.result()
    return stacked([done.pop(batch) for batch in todo])
