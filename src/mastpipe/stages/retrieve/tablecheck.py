"""Product columns checked a column at a time: where each value is certainly a safe path
component, or plain ASCII (for :mod:`mastpipe.stages.retrieve.tableplan`).

Every function answers "certainly fine" or "look at it row by row": a False never refuses a
product by itself, :func:`mastpipe.stages.retrieve.tableplan.plan_row` does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np

if TYPE_CHECKING:
    from astropy.table import Table

__all__ = ["RunColumn", "all_distinct", "as_bytes", "by_runs", "is_ascii", "masked", "run_starts", "safe_components", "unique_by_runs"]


def masked(table: Table, name: str) -> np.ndarray:
    """Where column ``name`` is masked (missing)."""
    mask = getattr(table[name], "mask", None)
    return np.zeros(len(table), bool) if mask is None else np.asarray(mask, dtype=bool)


def as_bytes(table: Table, name: str) -> np.ndarray | None:
    """A text column as a contiguous bytes array, or None when it is not text."""
    values = np.asarray(table[name])
    if values.dtype.kind == "U":
        try:
            values = np.strings.encode(values, "utf-8")
        except UnicodeError:
            return None
    if values.dtype.kind != "S" or values.dtype.itemsize == 0:
        return None
    return np.ascontiguousarray(values)


#: Bytes a plainly safe component never holds: anything but printable ASCII, "/" and "\\"
#: (NUL too: numpy pads with it, so it is counted apart).
_UNSAFE = np.ones(256, bool)
_UNSAFE[0x20:0x7F] = False
_UNSAFE[[ord("/"), ord("\\")]] = True
_UNSAFE[0] = False
_NOT_ASCII = _UNSAFE.copy()
_NOT_ASCII[[ord("/"), ord("\\")]] = False
#: Bytes that make a value not blank.
_INK = np.ones(256, bool)
_INK[[0, 0x20]] = False


def safe_components(values: np.ndarray) -> np.ndarray:
    """Where a bytes value is certainly a safe path component: printable ASCII with no ``/`` or
    ``\\``, not blank, not ``.`` or ``..``, no ``:`` as its second character (a drive letter).
    False says "look at it row by row", not "unsafe"."""
    return _chunked(values, _safe_chunk)


def _safe_chunk(values: np.ndarray) -> np.ndarray:
    """safe_components of one chunk of values."""
    codes = _codes(values)
    if _only(values, _SAFE_BYTES):  # the usual column: no byte to look for, one C-level pass
        ok = (codes > 0x20).any(axis=1)  # not blank (nor empty): every byte is NUL, " " or ink
    else:
        ok = ~_UNSAFE[codes].any(axis=1)
        ok &= _INK[codes].any(axis=1)  # not blank (nor empty)
    ok &= np.count_nonzero(codes, axis=1) == np.strings.str_len(values)  # no NUL inside
    if codes.shape[1] > 1:
        ok &= codes[:, 1] != ord(":")
    ok &= (values != b".") & (values != b"..")
    return np.asarray(ok, dtype=bool)


def is_ascii(values: np.ndarray) -> np.ndarray:
    """Where a bytes value is printable ASCII (NULs aside)."""
    if _only(values, _ASCII_BYTES):
        return np.ones(len(values), dtype=bool)
    return _chunked(values, lambda chunk: ~_NOT_ASCII[_codes(chunk)].any(axis=1))


#: Values looked at byte by byte at a time: the byte matrices are a value's width per row (a
#: bool per byte), 500 MB for ten million file names at once at the run's memory peak.
_CHUNK = 1 << 16


def _chunked(values: np.ndarray, check: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``check`` (one bool per value) asked of _CHUNK values at a time."""
    values = np.ascontiguousarray(values)
    if len(values) <= _CHUNK:
        return np.asarray(check(values), dtype=bool)
    out = np.empty(len(values), dtype=bool)
    for start in range(0, len(values), _CHUNK):
        out[start:start + _CHUNK] = check(values[start:start + _CHUNK])
    return out


def _codes(values: np.ndarray) -> np.ndarray:
    """A bytes array's bytes, a row per value."""
    return values.view(np.uint8).reshape(len(values), values.dtype.itemsize)


#: The bytes :func:`safe_components` and :func:`is_ascii` accept (NUL: numpy's padding).
_SAFE_BYTES = bytes(code for code in range(256) if not _UNSAFE[code])
_ASCII_BYTES = bytes(code for code in range(256) if not _NOT_ASCII[code])


def _only(values: np.ndarray, allowed: bytes) -> bool:
    """Whether every byte of ``values`` is one of ``allowed`` (``bytes.translate``: a C-level
    pass over the column, several times faster than looking each byte up with numpy), _CHUNK
    values at a time: ``tobytes`` copies what it is given."""
    values = np.ascontiguousarray(values)
    return not any(values[start:start + _CHUNK].tobytes().translate(None, allowed)
                   for start in range(0, len(values), _CHUNK))


_SAMPLE = 4096  # values run_starts looks at before comparing every neighbour


def run_starts(values: np.ndarray) -> np.ndarray | None:
    """Where each run of equal neighbours in ``values`` starts, or None when runs are short
    (then working on their first values saves nothing). A product list comes grouped by
    observation: a million rows of ``obs_id`` or ``obs_collection`` hold a few hundred runs."""
    if len(values) < 2:
        return None
    head = values[:_SAMPLE]  # a column of distinct values (file names) shows it at once
    if len(values) > _SAMPLE and np.count_nonzero(head[1:] != head[:-1]) > len(head) // 8:
        return None
    starts = np.flatnonzero(np.concatenate(([True], values[1:] != values[:-1])))
    return starts if len(starts) <= len(values) // 8 else None


def _per_row(per_run: np.ndarray, starts: np.ndarray, n: int) -> np.ndarray:
    """A value per run (runs starting at ``starts`` in ``n`` rows) as a value per row."""
    return np.repeat(per_run, np.diff(np.append(starts, n)))


def by_runs(values: np.ndarray, check: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``check(values)`` (a value-by-value answer), asked only of each run's first value."""
    starts = run_starts(values)
    if starts is None:
        return check(values)
    return _per_row(check(values[starts]), starts, len(values))


def unique_by_runs(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``numpy.unique(values, return_inverse=True)`` (inverse flat), sorting only each run's
    first value: sorting a million strings was most of a plan's breakdown."""
    values = np.asarray(values)
    starts = run_starts(values)
    if starts is None:
        unique, inverse = np.unique(values, return_inverse=True)
        return unique, inverse.ravel()
    unique, inverse = np.unique(values[starts], return_inverse=True)
    return unique, _per_row(inverse.ravel(), starts, len(values))


class RunColumn:
    """A bytes column held as its runs: ``values[i]`` on every row from ``starts[i]`` up to the
    next start (``starts`` None: one value per row). A product list comes grouped by
    observation: ten million rows of ``mastDownload/JWST/<obs_id>`` are a few thousand runs,
    which written out row by row were 450 MB at a run's memory peak."""

    def __init__(self, values: np.ndarray, starts: np.ndarray | None, n: int) -> None:
        self.values, self.starts, self.n = values, starts, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, rows: np.ndarray) -> np.ndarray:
        """The values at ``rows`` (an index array)."""
        if self.starts is None:
            return np.asarray(self.values[rows])
        return np.asarray(self.values[np.searchsorted(self.starts, rows, side="right") - 1])

    def equal(self, value: bytes) -> np.ndarray:
        """Where a row holds ``value``."""
        same = self.values == value
        return same if self.starts is None else _per_row(same, self.starts, self.n)

    def distinct_where(self, where: np.ndarray) -> list[bytes]:
        """The distinct values of the rows where ``where`` is true, in order."""
        if self.starts is None:
            return sorted(set(self.values[where].tolist()))
        return sorted(set(self.values[np.logical_or.reduceat(where, self.starts)].tolist()))


def all_distinct(values: np.ndarray) -> bool:
    """Whether no two of ``values`` (a bytes array) are equal: each hashed to an integer by numpy
    (the unique stage's :func:`~mastpipe.stages.unique.hash_values`) and the integers sorted; only when two hashes meet are the values compared exactly. A set of
    a million Python bytes objects took half a second."""
    from mastpipe.stages.unique import hash_values

    if len(values) < 2:
        return True
    hashes = hash_values(values)
    hashes.sort()
    if not (hashes[1:] == hashes[:-1]).any():
        return True
    return len(set(values.tolist())) == len(values)
