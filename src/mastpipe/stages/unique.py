"""unique: one row per product, however many observations list it.

Level-3 products and guide-star files are listed under every observation they belong to; the
seed tutorial drops the repeats with ``unique(vstack(...), keys='productFilename')``. Here the
first row of each key is kept (the row astropy's ``unique`` keeps too), in order of first
appearance, and ``shared_by``/``n_shared`` columns say which observations (``parent_obsid``) list
the product, so nothing about the repeats is lost.

Rows are grouped by a hash of the key (one integer sort instead of a sort of a million strings),
and every group of more than one row is then checked byte for byte, so a hash collision can never
merge two products: the runs where one occurs are split by an exact sort of their keys.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from mastpipe.state import decoded

if TYPE_CHECKING:
    from astropy.table import Table

__all__ = ["first_rows", "hash_values", "unique_products"]

log = logging.getLogger(__name__)

_PRIME = np.uint64(0x100000001B3)
_OFFSET = np.uint64(0xCBF29CE484222325)
_CHUNK = 1 << 16  # rows hashed at a time


def hash_values(values: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each element of a fixed-width array (text or numbers), vectorised.

    Equal elements (as numpy compares them: trailing NULs of bytes do not count) hash equal.
    Hashed _CHUNK rows at a time: a width that is not a multiple of 8 needs a padded copy,
    which for a whole column of a million file names was 100 MB at the run's memory peak.
    """
    values = np.ascontiguousarray(values)
    if values.dtype.kind == "O":
        values = np.ascontiguousarray(values.astype(str))
    n, width = len(values), values.dtype.itemsize
    if n == 0 or width == 0:
        return np.zeros(n, dtype=np.uint64)
    h = np.full(n, _OFFSET, dtype=np.uint64)
    raw = values.view(np.uint8).reshape(n, width)
    words = -(-width // 8)
    padded = np.zeros((min(n, _CHUNK), words * 8), dtype=np.uint8) if width % 8 else None
    for start in range(0, n, _CHUNK):
        part = raw[start:start + _CHUNK]
        if padded is not None:
            padded[:len(part), :width] = part
            part = padded[:len(part)]
        blocks = part.view(np.uint64)
        out = h[start:start + len(part)]
        for k in range(words):
            out ^= blocks[:, k]
            out *= _PRIME
            out ^= out >> np.uint64(29)
    return h


def _groups(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(order, starts, group): row numbers arranged so that equal keys are adjacent, each run in
    original row order (so a run's first row is the key's first appearance); where each run
    starts; and the run number of each arranged row."""
    n = len(keys)
    index_bits = max(int(n - 1).bit_length(), 1)
    # one sort of (hash, row number) packed into a uint64: the row number breaks ties
    packed = (hash_values(keys) >> np.uint64(index_bits)) << np.uint64(index_bits)
    packed |= np.arange(n, dtype=np.uint64)
    packed.sort()
    order = (packed & np.uint64((1 << index_bits) - 1)).astype(np.intp)
    hs = packed >> np.uint64(index_bits)
    first = np.ones(n, dtype=bool)
    first[1:] = hs[1:] != hs[:-1]
    del packed, hs
    starts = np.flatnonzero(first)
    group = np.cumsum(first) - 1
    counts = np.diff(np.append(starts, n))
    several = counts[group] > 1  # only rows of a run of several can hide a collision
    rows = order[several]
    if len(rows):
        differs = keys[rows] != keys[order[starts[group[several]]]]
        if differs.any():
            # different keys with the same (shortened) hash: split those runs exactly
            positions = np.flatnonzero(several)
            bad = np.isin(group[positions], group[positions[differs]])
            positions = positions[bad]
            sub = np.lexsort((order[positions], keys[order[positions]], group[positions]))
            order[positions] = order[positions][sub]
            ks, gs = keys[order[positions]], group[positions]
            first[positions[1:]] = (ks[1:] != ks[:-1]) | (gs[1:] != gs[:-1])
            starts = np.flatnonzero(first)
            group = np.cumsum(first) - 1
    return order, starts, group


def first_rows(values: np.ndarray) -> np.ndarray:
    """The row of each distinct value's first appearance, in row order: equal values found by
    their hashes (one integer sort), each group checked byte for byte."""
    order, starts, _ = _groups(np.asarray(values))
    return _in_row_order(order[starts], len(order))


def _in_row_order(rows: np.ndarray, n: int) -> np.ndarray:
    """Distinct row numbers (of ``n`` rows) in row order, without another sort."""
    picked = np.zeros(n, dtype=bool)
    picked[rows] = True
    return np.flatnonzero(picked)


def unique_products(products: Table, key: str) -> tuple[Table, list[str]]:
    """Deduplicate ``products`` on ``key``: :func:`unique_rows` without the rows."""
    table, warnings, _ = unique_rows(products, key)
    return table, warnings


def unique_rows(products: Table, key: str) -> tuple[Table, list[str], np.ndarray]:
    """Deduplicate ``products`` on ``key``; also say which rows of ``products`` are kept.

    Returns
    -------
    table : Table
        One row per distinct key (its first row, as astropy's ``unique(table, keys=key)`` keeps),
        in order of first appearance, with ``shared_by`` (``;``-joined sorted distinct obsids of
        ``parent_obsid``, or of ``obsID``) and ``n_shared`` (how many) columns.
    warnings : list of str
        One message per key that maps to several different ``dataURI`` values (when
        deduplicating on ``productFilename``): those are different files with one name.
    rows : ndarray
        The rows of ``products`` the table holds, in its order (what a checkpoint of it stores).
    """
    owner_column = "parent_obsid" if "parent_obsid" in products.colnames else "obsID"
    has_owner = owner_column in products.colnames
    if len(products) == 0:
        result = products.copy(copy_data=False)
        if has_owner:
            result["n_shared"] = np.zeros(0, dtype=np.int64)
            result["shared_by"] = np.zeros(0, dtype="S1")
        return result, [], np.zeros(0, dtype=np.intp)
    keys = np.asarray(products[key])
    order, starts, group = _groups(keys)
    counts = np.diff(np.append(starts, len(order)))
    firsts = order[starts]                     # first row of each group
    kept_rows = _in_row_order(firsts, len(order))  # groups in order of first appearance
    group_of_row = np.empty(len(order), dtype=np.intp)
    group_of_row[firsts] = np.arange(len(starts))
    by_appearance = group_of_row[kept_rows]
    # nothing repeated: the same rows in a new table sharing their data (no copy of a million rows)
    result = products.copy(copy_data=False) if len(kept_rows) == len(order) else products[kept_rows]

    # rows of groups with several rows: the only ones with anything to join or compare
    in_multi = counts[group] > 1
    multi_rows = order[in_multi]
    multi_group = group[in_multi]

    if has_owner:
        owners = np.asarray(products[owner_column])
        owners = owners if owners.dtype.kind == "S" else np.char.encode(owners.astype(str), "utf-8")
        n_owners = np.ones(len(starts), dtype=np.int64)
        joined: dict[int, bytes] = {}
        if len(multi_rows):
            sub = np.lexsort((owners[multi_rows], multi_group))
            g_sorted, o_sorted = multi_group[sub], owners[multi_rows][sub]
            new = np.ones(len(sub), dtype=bool)
            new[1:] = (g_sorted[1:] != g_sorted[:-1]) | (o_sorted[1:] != o_sorted[:-1])
            g_new, o_new = g_sorted[new], o_sorted[new]
            bounds = np.flatnonzero(np.append(True, g_new[1:] != g_new[:-1]))
            sizes = np.diff(np.append(bounds, len(g_new)))
            n_owners[g_new[bounds]] = sizes
            for b, size in zip(bounds[sizes > 1].tolist(), sizes[sizes > 1].tolist()):
                joined[int(g_new[b])] = b";".join(o_new[b:b + size].tolist())
        width = max([owners.dtype.itemsize] + [len(v) for v in joined.values()])
        shared = owners[firsts].astype(f"S{max(width, 1)}")
        if joined:
            shared[np.fromiter(joined, dtype=np.intp, count=len(joined))] = list(joined.values())
        result["n_shared"] = n_owners[by_appearance]
        result["shared_by"] = shared[by_appearance]

    warnings: list[str] = []
    if key != "dataURI" and "dataURI" in products.colnames and len(multi_rows):
        uris = np.asarray(products["dataURI"])
        differs = uris[multi_rows] != uris[firsts[multi_group]]
        for g in np.unique(multi_group[differs]).tolist():
            members = order[starts[g]:starts[g] + counts[g]]
            n_uris = len(set(uris[members].tolist()))
            warnings.append(f"{decoded(keys[firsts[g]])} is listed with {n_uris} different dataURIs; "
                            f"only {decoded(uris[firsts[g]])} is kept")
    for message in warnings[:20]:
        log.warning("unique: %s", message)
    if len(warnings) > 20:
        log.warning("unique: %d more products with conflicting dataURIs", len(warnings) - 20)
    return result, warnings, kept_rows
