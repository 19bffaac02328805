"""Planning the files of a whole product table at once: paths, refusals and collisions by column.

:func:`plan_table` gives what the retrieve stage's per-row planning gives (one
:class:`~mastpipe.stages.retrieve.files.FileTask` per product, or a :class:`Refused` naming
what is wrong with it), but decides the rows that are certainly safe a column at a time with
numpy: their layout values are printable ASCII, not blank, not ``.`` or ``..``, with no ``/``,
``\\`` or drive letter, their directories resolve (each once) inside the destination and no
symlink sits under their file name. Every other row -- anything unusual, refused or not -- goes
through :func:`plan_row`, the one home of the per-row rules, so both halves answer alike. At a
million products the per-row path took minutes; ``plan`` and ``status`` need seconds.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import numpy as np

from mastpipe.archive import MALFORMED, mission_download_url
from mastpipe.errors import UnsafePathError, UsageError
from mastpipe.memory import no_cycle_collection
from mastpipe.stages.retrieve.files import FileResult, FileTask
from mastpipe.stages.retrieve.ledger import VERSION_COLUMNS, product_version
from mastpipe.stages.retrieve.tablecheck import RunColumn, as_bytes, by_runs, is_ascii, masked, safe_components
from mastpipe.stages.retrieve.paths import (MAX_NAME_BYTES, _LAYOUTS, _resolved_dir,
                                            _template_fields, check_collisions, product_path)
from mastpipe.state import decoded, decoded_column

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from astropy.table import Table

__all__ = ["EXCLUSIVE", "Judged", "Refused", "TablePlan", "download_url", "judge_table", "plan_row", "plan_table",
           "table_rows"]

log = logging.getLogger(__name__)

EXCLUSIVE = "EXCLUSIVE_ACCESS"


def download_url(mast_url: str, uri: str) -> str:
    """MAST's download URL for a ``dataURI`` (``:`` and ``/`` kept literal, as astroquery sends it)."""
    return f"{mast_url}/api/v0.1/Download/file?uri={quote(uri, safe=':/')}"


@dataclass(frozen=True)
class Refused:
    """A product row no file is made for: its name or ids are unsafe, or it lacks a dataURI."""

    key: str
    url: str
    size: int | None
    reason: str

    def result(self) -> FileResult:
        return FileResult(self.key, Path(), "failed", error=self.reason)


def _text(value: Any) -> Any:
    """A cell as a plain Python value: text decoded (see :func:`mastpipe.state.decoded`), a
    masked (missing) cell as None."""
    if value is np.ma.masked:
        return None
    if isinstance(value, bytes):
        return decoded(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def table_rows(table: Table) -> Iterator[dict[str, Any]]:
    """Each row as a dict of plain values (:func:`_text`'s), read a column at a time: an astropy
    Row costs microseconds per cell, which at a million products was minutes."""
    columns = []
    for name in table.colnames:
        column = table[name]
        values = np.asarray(column)
        plain = (np.strings.decode(values, "utf-8") if values.dtype.kind == "S"
                 else values).tolist()
        mask = getattr(column, "mask", None)
        if mask is not None and np.any(mask):
            plain = [None if m else v for v, m in zip(plain, np.asarray(mask).tolist())]
        columns.append(plain)
    names = table.colnames
    for cells in zip(*columns):
        yield dict(zip(names, cells))


def _bad_size(size: Any) -> str | None:
    """What is wrong with a product row's size (from a checkpoint written before the products
    stage read MAST's answer row by row), or None."""
    if size is None:
        return None
    try:
        ok = int(size) == size and int(size) >= 0
    except (TypeError, ValueError, OverflowError):
        ok = False
    return None if ok else f"size {size!r}"


def plan_row(values: dict[str, Any], destination: Path, layout: str, mast_url: str,
             resolved: dict[str, str]) -> FileTask | Refused:
    """The file for one product row (plain values, as :func:`table_rows` gives them), or why none."""
    uri = values.get("dataURI")
    malformed = values.get(MALFORMED) or _bad_size(values.get("size"))
    if malformed:  # MAST's answer is at fault, not the recipe: this row alone is refused
        name = uri or values.get("productFilename") or "a product"
        observation = values.get("parent_obsid") or values.get("obsID") or "?"
        log.error("refused product %s: MAST's product list has %s for it", name, malformed)
        return Refused(str(uri or name), download_url(mast_url, uri) if uri else "", None,
                       f"MAST's product list for observation {observation} has {malformed} "
                       f"for {name}: this product is refused, the others go on")
    raw_size = values.get("size")
    size = int(raw_size) if raw_size is not None else None
    if not uri:
        return Refused(str(values.get("productFilename") or "?"), "", size,
                       "the product list gives no dataURI for this product")
    mission = values.get("mission")
    url = mission_download_url(mast_url, mission, uri) if mission else download_url(mast_url, uri)
    try:
        dest = product_path(values, destination, layout, resolved=resolved)
    except UnsafePathError as exc:
        log.error("refused product %s: %s", uri, exc)
        return Refused(uri, url, size, f"refused: {exc}")
    return FileTask(key=uri, url=url, dest=dest, size=size, protected=values.get("dataRights") == EXCLUSIVE,
                    version=product_version(values))


@dataclass
class TablePlan:
    """The files of a product table (see :func:`plan_table`).

    Attributes
    ----------
    rows : numpy.ndarray
        For each file, in table order, the row of the table it comes from.
    keys, dests : list of str
        Each file's ``dataURI`` and absolute destination path.
    sizes : numpy.ndarray
        Each file's expected size; -1 where the product list gives none.
    refused : list of Refused
        The rows no file is made for, in table order.
    """

    rows: np.ndarray
    keys: list[str]
    dests: list[str]
    sizes: np.ndarray
    refused: list[Refused] = field(default_factory=list)
    #: the rows planned one at a time, by table row
    by_row: dict[int, FileTask] = field(default_factory=dict, repr=False)
    #: each directory the paths went through -> where it resolved
    resolved: dict[str, str] = field(default_factory=dict, repr=False)

    def tasks(self, table: Table, mast_url: str, which: Sequence[int] | None = None) -> list[FileTask]:
        """The :class:`FileTask` of every file (or of the files at indices ``which``), in table
        order, as :func:`plan_row` makes them."""
        picked = range(len(self.rows)) if which is None else which
        rows = self.rows[np.asarray(picked, dtype=np.int64)]
        columns = {name: _plain(table, name, rows) for name in ("dataRights", *VERSION_COLUMNS)
                   if name in table.colnames}
        rights = columns.get("dataRights", [None] * len(rows))
        versioned = [name for name in VERSION_COLUMNS if name in columns]
        tasks = []
        with no_cycle_collection():
            for j, (i, row) in enumerate(zip(picked, rows.tolist())):
                task = self.by_row.get(row)
                if task is None:
                    size = int(self.sizes[i])
                    key = self.keys[i]
                    version = product_version({name: columns[name][j] for name in versioned}) if versioned else None
                    task = FileTask(key=key, url=download_url(mast_url, key), dest=Path(self.dests[i]),
                                    size=None if size < 0 else size, protected=rights[j] == EXCLUSIVE,
                                    version=version)
                tasks.append(task)
        return tasks


def _plain(table: Table, name: str, rows: np.ndarray) -> list[Any]:
    """Column ``name`` at ``rows`` as plain values (:func:`_text`'s)."""
    column = table[name]
    values = np.asarray(column)[rows]
    plain: list[Any] = (np.strings.decode(values, "utf-8") if values.dtype.kind == "S" else values).tolist()
    mask = getattr(column, "mask", None)
    if mask is not None:
        plain = [None if m else v for v, m in zip(plain, np.asarray(mask)[rows].tolist())]
    return plain


def _fast_columns(table: Table, template: str,
                  n: int) -> tuple[np.ndarray, np.ndarray, RunColumn, np.ndarray, np.ndarray] | None:
    """For the rows that may skip :func:`plan_row`: (eligible, key bytes, the relative path's
    directory and its name as bytes, sizes); None when the table's columns do not allow it (then
    every row goes row by row)."""
    names = table.colnames
    if "dataURI" not in names:
        return None
    try:
        fields = _template_fields(template)
    except UsageError:
        return None
    if any(name not in names for name in fields):
        return None
    eligible = ~masked(table, "dataURI")
    uris = as_bytes(table, "dataURI")
    if uris is None:
        return None
    eligible &= (uris != b"") & is_ascii(uris)
    if MALFORMED in names:
        flagged = as_bytes(table, MALFORMED)
        if flagged is None:
            return None
        eligible &= (flagged == b"") | masked(table, MALFORMED)
    if "mission" in names:
        missions = as_bytes(table, "mission")
        if missions is None:
            return None
        # "" only: " " is a mission to plan_row's URL, and a missing one picks the mission layout
        eligible &= (missions == b"") & ~masked(table, "mission")
    sizes = np.full(n, -1, dtype=np.int64)
    if "size" in names:
        raw = np.asarray(table["size"])
        if raw.dtype.kind in "iu":
            eligible &= ~masked(table, "size") & (raw >= 0)
            sizes = np.where(eligible, raw, -1).astype(np.int64)
        elif raw.dtype.kind == "f":
            with np.errstate(invalid="ignore"):
                whole = np.isfinite(raw) & (raw >= 0) & (raw == np.floor(raw)) & (raw < 2.0**62)
            eligible &= ~masked(table, "size") & whole
            sizes = np.where(eligible, raw, -1).astype(np.int64)
        else:
            return None
    paths = _formatted(table, template, fields, eligible)
    if paths is None:
        return None
    return eligible, uris, paths[0], paths[1], sizes


def _formatted(table: Table, template: str, fields: list[str],
               eligible: np.ndarray) -> tuple[RunColumn, np.ndarray] | None:
    """The template filled in for every row (bytes): the directory (b"" for none) and the file
    name, every value and every part of the path checked by :func:`safe_components`; rows that
    fail are taken out of ``eligible`` (in place)."""
    import string

    pieces: list[np.ndarray | bytes] = []
    for literal, name, _, _ in string.Formatter().parse(template):
        if literal:
            pieces.append(literal.encode("utf-8"))
        if name is not None:
            values = as_bytes(table, name)
            if values is None:
                return None
            eligible &= ~masked(table, name) & by_runs(values, safe_components)
            pieces.append(values)
    parts: list[list[np.ndarray | bytes]] = [[]]
    for piece in pieces:  # split on the template's own "/" (values have none where eligible)
        if isinstance(piece, bytes):
            first, *rest = piece.split(b"/")
            parts[-1].append(first)
            parts.extend([[text] if text else [] for text in rest])
        else:
            parts[-1].append(piece)
    joined: list[np.ndarray | bytes] = []
    for index, part in enumerate(parts):
        if not part:  # "a//b": an empty component, refused row by row
            eligible[:] = False
            return None
        if len(part) == 1 and not isinstance(part[0], bytes):  # one value, checked above
            joined.append(part[0])
            continue
        if index < len(parts) - 1 and all(isinstance(piece, bytes) for piece in part):
            # a directory of the template's own text ("mastDownload"): checked and kept once,
            # not repeated for every row (120 MB at ten million)
            own = b"".join(piece for piece in part if isinstance(piece, bytes))
            eligible &= bool(own) and bool(safe_components(np.array([own]))[0])
            joined.append(own)
            continue
        value: np.ndarray = np.full(len(eligible), b"", dtype="S1")
        for piece in part:
            value = np.strings.add(value, piece)
        if all(isinstance(piece, bytes) for piece in part):  # the template's own text: once
            own = b"".join(piece for piece in part if isinstance(piece, bytes))
            eligible &= bool(own) and bool(safe_components(np.array([own]))[0])
        else:
            eligible &= by_runs(np.ascontiguousarray(value), safe_components)
        joined.append(value)
    names = joined[-1]
    assert not isinstance(names, bytes)  # the last part is never taken as the template's own text
    if len(names) and np.strings.str_len(names).max() > MAX_NAME_BYTES:
        eligible &= np.strings.str_len(names) <= MAX_NAME_BYTES
    return _directories(joined[:-1], len(eligible)), names


def _directories(parts: list[np.ndarray | bytes], n: int) -> RunColumn:
    """``parts`` (a value per row, or the template's own text) joined by "/" for every row
    (b"" without parts), built and kept once per run of rows sharing them: a product list comes
    grouped by observation, so a million rows of ``mastDownload/JWST/<obs_id>`` are a few
    hundred runs."""
    if not parts or not n:
        return RunColumn(np.full(min(n, 1), b"", dtype="S1"), np.zeros(min(n, 1), dtype=np.intp), n)
    change = np.zeros(n, bool)
    change[0] = True
    for part in parts:
        if not isinstance(part, bytes):
            change[1:] |= part[1:] != part[:-1]
    starts = np.flatnonzero(change)
    few = len(starts) <= n // 8
    count = len(starts) if few else n
    picked = [np.full(count, part, dtype=f"S{max(len(part), 1)}") if isinstance(part, bytes)
              else part[starts] if few else part for part in parts]
    joined = picked[0]
    for part in picked[1:]:
        joined = np.strings.add(np.strings.add(joined, b"/"), part)
    return RunColumn(joined, starts if few else None, n)


@dataclass
class Judged:
    """What :func:`judge_table` found: the rows planned by columns (``eligible``, with their key,
    directory and file name as bytes), and the others, planned one at a time."""

    eligible: np.ndarray
    uris: np.ndarray | None
    parents: RunColumn | None
    names: np.ndarray | None
    sizes: np.ndarray
    prefix: str
    by_row: dict[int, FileTask]
    refused: list[Refused]
    resolved: dict[str, str]

    def relative(self, rows: np.ndarray) -> np.ndarray:
        """The relative paths (bytes) of the files at ``rows`` (rows planned by columns)."""
        assert self.parents is not None and self.names is not None
        parents = self.parents[rows]
        nested = np.strings.add(np.strings.add(parents, b"/"), self.names[rows])
        return np.where(parents == b"", self.names[rows], nested)


def judge_table(table: Table, destination: Path, layout: str, mast_url: str) -> Judged:
    """Which rows of ``table`` are planned a column at a time (their key, directory and name as
    bytes), and the others planned one by one with :func:`plan_row`: what :func:`plan_table`
    and :mod:`mastpipe.stages.retrieve.tablecount` stand on."""
    n = len(table)
    template = _LAYOUTS.get(layout, layout)
    fast = _fast_columns(table, template, n) if n else None
    resolved: dict[str, str] = {}
    root = os.path.abspath(destination)
    parents: RunColumn | None = None
    uris: np.ndarray | None = None
    names: np.ndarray | None = None
    if fast is not None:
        eligible, uris, parents, names, sizes = fast
        _outside_or_linked(root, parents, names, eligible, resolved)
    else:
        eligible, sizes = np.zeros(n, bool), np.full(n, -1, np.int64)
    slow = np.flatnonzero(~eligible)
    by_row: dict[int, FileTask] = {}
    refused: list[Refused] = []
    if len(slow):
        for row, values in zip(slow.tolist(), table_rows(table[slow] if len(slow) < n else table)):
            planned = plan_row(values, destination, layout, mast_url, resolved)
            if isinstance(planned, Refused):
                refused.append(planned)
            else:
                by_row[row] = planned
    return Judged(eligible, uris, parents, names, sizes, os.path.join(root, ""), by_row, refused, resolved)


def plan_table(table: Table, destination: Path, layout: str, mast_url: str) -> TablePlan:
    """The files of ``table``'s products: what :func:`plan_row` gives for each row, in table order.

    Raises
    ------
    TransferError
        Two products map to the same path.
    UsageError
        The layout names a column the products lack (as the per-row path raises it).
    """
    judged = judge_table(table, destination, layout, mast_url)
    by_row, prefix = judged.by_row, judged.prefix
    rows = np.flatnonzero(judged.eligible)
    keys = decoded_column(judged.uris[rows]) if judged.uris is not None else []
    dests = [prefix + rel for rel in decoded_column(judged.relative(rows))] if judged.names is not None else []
    task_sizes = judged.sizes[rows]
    if by_row:  # put the rows planned one at a time back in their places
        extra = np.fromiter(by_row, dtype=np.int64, count=len(by_row))
        order = np.argsort(np.concatenate([rows, extra]), kind="stable")
        slow_tasks = list(by_row.values())
        all_keys = keys + [t.key for t in slow_tasks]
        all_dests = dests + [os.fspath(t.dest) for t in slow_tasks]
        keys = [all_keys[i] for i in order.tolist()]
        dests = [all_dests[i] for i in order.tolist()]
        task_sizes = np.concatenate([task_sizes, [-1 if t.size is None else t.size for t in slow_tasks]])[order]
        rows = np.concatenate([rows, extra])[order]
    if len(set(dests)) < len(dests):  # some path is shared: the exact check names them
        check_collisions((key, Path(dest)) for key, dest in zip(keys, dests))
    return TablePlan(rows, keys, dests, task_sizes.astype(np.int64), judged.refused, by_row, judged.resolved)


def _outside_or_linked(root: str, parents: RunColumn, names: np.ndarray, eligible: np.ndarray,
                       resolved: dict[str, str]) -> None:
    """Take out of ``eligible`` the rows whose directory resolves outside the destination, or
    whose file name is a symlink: :func:`plan_row` judges those (each directory resolved once,
    each existing directory listed once, instead of a look at every file)."""
    real_root = _resolved_dir(root, resolved)
    inside = real_root.rstrip(os.sep) + os.sep
    for parent in parents.distinct_where(eligible):
        text = parent.decode("ascii")
        directory = os.path.join(root, text) if text else root
        real = _resolved_dir(directory, resolved)
        if real != real_root and not real.startswith(inside):
            eligible &= ~parents.equal(parent)
            continue
        try:
            with os.scandir(directory) as entries:
                links = [entry.name.encode("utf-8", "surrogateescape") for entry in entries if entry.is_symlink()]
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError:
            eligible &= ~parents.equal(parent)
            continue
        if links:  # compared without case: a case-insensitive filesystem finds either
            eligible &= ~(parents.equal(parent) & np.isin(np.strings.lower(names), [link.lower() for link in links]))
