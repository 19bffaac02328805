"""Stage checkpoints: a table and its sidecar, written table first and sidecar last; the products
table is the batches its stage wrote as they arrived (parts checkpoints); the stages after
products keep only which of its rows and the columns they add (rows checkpoints)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mastpipe.atomic import atomic_write_bytes
from mastpipe.state.layout import StateDir
from mastpipe.state.tables import as_stored, read_table, table_digest, write_table

if TYPE_CHECKING:
    from astropy.table import Table

__all__ = ["CHECKPOINT_SCHEMA", "ROW", "Checkpoints", "Sidecar", "take_rows"]

log = logging.getLogger("mastpipe.state")

CHECKPOINT_SCHEMA = 1


@dataclass(frozen=True)
class Sidecar:
    """What a checkpoint's ``.json`` records about its table."""

    stage: str
    fingerprint: str
    rows: int
    digest: str
    started: float
    finished: float
    schema: int = CHECKPOINT_SCHEMA
    reasons: tuple[str, ...] = ()
    #: For a checkpoint of rows of another stage's table (see :meth:`Checkpoints.save_rows`):
    #: that stage, and the digest its table had.
    base: str | None = None
    base_digest: str | None = None
    #: For a checkpoint kept as the files its stage wrote (see :meth:`Checkpoints.save_parts`):
    #: those files, relative to the state directory, in the table's order.
    parts: tuple[str, ...] | None = None


#: The column of a rows checkpoint naming, for each of its rows, the row of the base table.
ROW = "_row"


def _rows_digest(base_digest: str, stored: Table) -> str:
    """The digest of a rows checkpoint: its base's content, and which rows and added columns."""
    return hashlib.sha256(f"rows of {base_digest}:{table_digest(stored)}".encode()).hexdigest()


def _stamp(path: Path) -> tuple[int, int, int]:
    """What tells a file rewritten since it was read (size, change time, inode)."""
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns, st.st_ino


def take_rows(base: Table, rows: np.ndarray, added: Table) -> Table:
    """``base``'s rows ``rows`` (in that order) with ``added``'s columns after its own.

    What a rows checkpoint stands for; every row kept in order shares ``base``'s data.
    """
    if len(rows) == len(base) and (len(rows) == 0 or (rows == np.arange(len(rows))).all()):
        table = base.copy(copy_data=False)
    else:
        table = base[rows]
    for name in added.colnames:
        table[name] = added[name]
    return table


class Checkpoints:
    """Stage checkpoints in a state directory.

    A stage's checkpoint is a whole table (``<stage>.fits``); or, for products, the batch files
    its stage wrote as the product lists arrived (:meth:`save_parts`), so that its table, ~250 MB
    for a million rows, is not written a second time; or, for the stages that keep some rows of
    the products table and add columns (``unique``, ``filter``), only which rows and the added
    columns (:meth:`save_rows`): ~10 MB instead of ~250 MB at each stage. All are FITS tables
    astropy reads; the one function that turns a parts or rows checkpoint back into its table is
    :meth:`load`: the parts stacked (:func:`~mastpipe.state.tables.stacked`), or
    :func:`take_rows` of the base stage's table on the ``_row`` column.
    """

    def __init__(self, directory: Path | StateDir) -> None:
        self.state = directory if isinstance(directory, StateDir) else StateDir(directory)
        self.directory = self.state.path
        #: stage -> rows of its base table, for the rows checkpoints loaded or saved here
        self.rows: dict[str, np.ndarray] = {}
        # whole tables read here, by stage: (digest, its files' stamps, table), so that a base
        # read for one rows checkpoint is not read again for the next
        self._loaded: dict[str, tuple[str, list[tuple[int, int, int]], Table]] = {}

    def table_path(self, stage: str) -> Path:
        return self.state.table(stage)

    def sidecar_path(self, stage: str) -> Path:
        return self.state.sidecar(stage)

    def files(self, stage: str, sidecar: Sidecar) -> list[Path]:
        """The files the stage's checkpoint is read from (its base stage's not included)."""
        if sidecar.parts is not None:
            return [self.state.path / part for part in sidecar.parts]
        return [self.table_path(stage)]

    def sidecar(self, stage: str) -> Sidecar | None:
        """The stage's sidecar, or None when missing or unreadable (then named in a warning)."""
        path = self.sidecar_path(stage)
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text())
            if not isinstance(data, dict):
                raise ValueError(f"expected a JSON object, found {type(data).__name__}")
            data["reasons"] = tuple(data.get("reasons", ()))
            if data.get("parts") is not None:
                data["parts"] = tuple(str(part) for part in data["parts"])
            sidecar = Sidecar(**data)
        except (OSError, ValueError, TypeError) as exc:
            log.warning("checkpoint %s is corrupt (%s); the %s stage will be recomputed", path, exc, stage)
            return None
        if sidecar.schema != CHECKPOINT_SCHEMA:
            log.warning("checkpoint %s has schema %s, not %s; recomputing", path, sidecar.schema, CHECKPOINT_SCHEMA)
            return None
        return sidecar

    def load(self, stage: str, sidecar: Sidecar, base: tuple[Table, str] | None = None) -> Table | None:
        """The stage's table, or None (with a warning) when it is missing, cut short or altered.

        A rows checkpoint needs its base stage's table: ``base`` (a table and its digest) when
        it is the one the checkpoint was made from, else that stage's checkpoint, read here.
        """
        if sidecar.base is not None:
            return self._load_rows(stage, sidecar, base)
        self.rows.pop(stage, None)
        paths = self.files(stage, sidecar)
        try:
            stamps = [_stamp(path) for path in paths]
        except OSError:
            stamps = None
        cached = self._loaded.get(stage)
        if cached is not None and stamps is not None and cached[0] == sidecar.digest and cached[1] == stamps:
            return cached[2].copy(copy_data=False)
        table = _read_checkpoint(paths[0], stage) if sidecar.parts is None else self._read_parts(stage, paths)
        if table is None:
            return None
        if len(table) != sidecar.rows or table_digest(table) != sidecar.digest:
            where = paths[0] if sidecar.parts is None else paths[0].parent
            log.warning("checkpoint %s does not match its sidecar (rows or content changed); "
                        "the %s stage will be recomputed", where, stage)
            return None
        if stamps is not None:
            self._loaded[stage] = (sidecar.digest, stamps, table)
        return table.copy(copy_data=False)

    def _read_parts(self, stage: str, paths: list[Path]) -> Table | None:
        """A parts checkpoint's table: its files read and stacked as the stage stacked them, or
        None when one is missing or unreadable."""
        from mastpipe.state.tables import stacked

        tables = []
        for path in paths:
            table = _read_checkpoint(path, stage)
            if table is None:
                return None
            tables.append(table)
        return stacked(tables)

    def save(self, stage: str, table: Table, fp: str, started: float, reasons: tuple[str, ...] = ()) -> Table:
        """Write the stage's table then its sidecar; returns the table as stored."""
        self.rows.pop(stage, None)
        stored = as_stored(table)
        write_table(self.table_path(stage), stored)
        sidecar = Sidecar(stage, fp, len(stored), table_digest(stored), started, time.time(), reasons=reasons)
        self._write_sidecar(sidecar)
        return stored

    def save_parts(self, stage: str, table: Table, parts: list[Path], fp: str, started: float,
                   reasons: tuple[str, ...] = ()) -> Table:
        """Checkpoint ``table`` (in stored form), which is the tables already written to
        ``parts`` (durably, inside the state directory) stacked in that order: only its sidecar
        is written. A whole-table file an earlier checkpoint of the stage left is removed."""
        self.rows.pop(stage, None)
        stored = as_stored(table)
        names = tuple(path.relative_to(self.state.path).as_posix() for path in parts)
        sidecar = Sidecar(stage, fp, len(stored), table_digest(stored), started, time.time(), reasons=reasons,
                          parts=names)
        self._write_sidecar(sidecar)
        self.table_path(stage).unlink(missing_ok=True)
        return stored

    def save_rows(self, stage: str, table: Table, base_stage: str, base: Table, base_digest: str,
                  rows: np.ndarray, fp: str, started: float, reasons: tuple[str, ...] = ()) -> Table:
        """Checkpoint ``table``, which is ``base``'s rows ``rows`` plus columns of its own, as
        those rows and columns only; returns the table as :meth:`load` will give it back."""
        from astropy.table import Table

        added = as_stored(Table([table[name] for name in table.colnames if name not in base.colnames], copy=False))
        stored = Table({ROW: np.asarray(rows, dtype=np.int64)}, copy=False)
        for name in added.colnames:
            stored[name] = added[name]
        write_table(self.table_path(stage), stored)
        sidecar = Sidecar(stage, fp, len(stored), _rows_digest(base_digest, stored), started, time.time(),
                          reasons=reasons, base=base_stage, base_digest=base_digest)
        self._write_sidecar(sidecar)
        self.rows[stage] = np.asarray(stored[ROW])
        return take_rows(base, self.rows[stage], added)

    def _load_rows(self, stage: str, sidecar: Sidecar, given: tuple[Table, str] | None) -> Table | None:
        path = self.table_path(stage)
        assert sidecar.base is not None
        base = given[0] if given is not None and given[1] == sidecar.base_digest else None
        if base is None:
            base_sidecar = self.sidecar(sidecar.base)
            if base_sidecar is None or base_sidecar.digest != sidecar.base_digest:
                log.warning("checkpoint %s holds rows of a %s table that has changed; the %s stage will be "
                            "recomputed", path, sidecar.base, stage)
                return None
            base = self.load(sidecar.base, base_sidecar)
            if base is None:
                return None
        stored = _read_checkpoint(path, stage)
        if stored is None:
            return None
        if len(stored) != sidecar.rows or ROW not in stored.colnames or \
                _rows_digest(str(sidecar.base_digest), stored) != sidecar.digest:
            log.warning("checkpoint %s does not match its sidecar (rows or content changed); "
                        "the %s stage will be recomputed", path, stage)
            return None
        rows = np.asarray(stored[ROW])
        if len(rows) and (rows.min() < 0 or rows.max() >= len(base)):
            log.warning("checkpoint %s names rows its %s table does not have; the %s stage will be recomputed",
                        path, sidecar.base, stage)
            return None
        stored.remove_column(ROW)
        self.rows[stage] = rows
        return take_rows(base, rows, stored)

    def _write_sidecar(self, sidecar: Sidecar) -> None:
        """Write ``sidecar`` atomically, after its table: it always describes a complete one."""
        atomic_write_bytes(self.sidecar_path(sidecar.stage), json.dumps(asdict(sidecar), indent=2).encode())

    def invalidate(self, stage: str) -> None:
        self.sidecar_path(stage).unlink(missing_ok=True)


def _read_checkpoint(path: Path, stage: str) -> Table | None:
    """The checkpoint table at ``path``, or None (with a warning saying why) when it is missing or
    unreadable: the stage is then recomputed."""
    try:
        return read_table(path)
    except FileNotFoundError:
        log.warning("checkpoint table %s is missing; the %s stage will be recomputed", path, stage)
    except Exception as exc:  # astropy raises many kinds for a truncated or garbled FITS file
        log.warning("checkpoint %s is corrupt (%s); the %s stage will be recomputed", path, exc, stage)
    return None
