"""Product columns checked a column at a time: where each value is certainly a safe path
component, or plain ASCII (for :mod:`mastpipe.stages.retrieve.tableplan`).

Every function answers "certainly fine" or "look at it row by row": a False never refuses a
product by itself, :func:`mastpipe.stages.retrieve.tableplan.plan_row` does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from astropy.table import Table

__all__ = ["as_bytes", "is_ascii", "masked", "safe_components"]


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
    codes = values.view(np.uint8).reshape(len(values), values.dtype.itemsize)
    ok = ~_UNSAFE[codes].any(axis=1)
    ok &= _INK[codes].any(axis=1)  # not blank (nor empty)
    ok &= np.count_nonzero(codes, axis=1) == np.strings.str_len(values)  # no NUL inside
    if codes.shape[1] > 1:
        ok &= codes[:, 1] != ord(":")
    ok &= (values != b".") & (values != b"..")
    return np.asarray(ok, dtype=bool)


def is_ascii(values: np.ndarray) -> np.ndarray:
    """Where a bytes value is printable ASCII (NULs aside)."""
    codes = values.view(np.uint8).reshape(len(values), values.dtype.itemsize)
    return np.asarray(~_NOT_ASCII[codes].any(axis=1), dtype=bool)
