"""unique: one row per product, however many observations list it.

Level-3 products and guide-star files are listed under every observation they belong to; the
seed tutorial drops the repeats with ``unique(vstack(...), keys='productFilename')``. Here the
first row of each key is kept (stably, in key order) and a ``shared_by`` column says which
observations (``parent_obsid``) list the product, so nothing about the repeats is lost.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from astropy.table import Table

log = logging.getLogger(__name__)


def unique_products(products: Table, key: str) -> tuple[Table, list[str]]:
    """Deduplicate ``products`` on ``key``.

    Returns
    -------
    table : Table
        One row per distinct key, sorted by key (the first row of each key, as astropy's
        ``unique(table, keys=key)`` keeps), with ``shared_by`` (``;``-joined distinct obsids of
        ``parent_obsid``, or ``obsID``) and ``n_shared`` (how many of them) columns.
    warnings : list of str
        One message per key that maps to several different ``dataURI`` values (when
        deduplicating on ``productFilename``): those are different files with one name.
    """
    owner_column = "parent_obsid" if "parent_obsid" in products.colnames else "obsID"
    has_owner = owner_column in products.colnames
    if len(products) == 0:
        result = products.copy(copy_data=False)
        if has_owner:
            result["n_shared"] = np.zeros(0, dtype=np.int64)
            result["shared_by"] = np.zeros(0, dtype="S1")
        return result, []
    keys = np.asarray(products[key])
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = sorted_keys[1:] != sorted_keys[:-1]
    starts = np.flatnonzero(first)
    counts = np.diff(np.append(starts, len(order)))
    group = np.cumsum(first) - 1  # group of each sorted row
    result = products[order[starts]]

    if has_owner:
        owners = np.asarray(products[owner_column]).astype("S")
        # rows sorted by (key, owner): distinct owners of a group are adjacent
        by_owner = order[np.lexsort((owners[order], group))]
        sorted_owners = owners[by_owner]
        new_owner = np.ones(len(order), dtype=bool)
        new_owner[1:] = (sorted_owners[1:] != sorted_owners[:-1]) | first[1:]
        n_owners = np.add.reduceat(new_owner, starts)
        shared = owners[order[starts]].astype(object)
        distinct_owners = sorted_owners[new_owner]
        owner_starts = np.append(0, np.cumsum(n_owners))
        for g in np.flatnonzero(n_owners > 1):  # only shared products need a Python loop
            shared[g] = b";".join(distinct_owners[owner_starts[g]:owner_starts[g + 1]].tolist())
        result["n_shared"] = n_owners.astype(np.int64)
        result["shared_by"] = shared.astype("S")

    warnings: list[str] = []
    if key != "dataURI" and "dataURI" in products.colnames:
        uris = np.asarray(products["dataURI"])
        by_uri = order[np.lexsort((uris[order], group))]
        sorted_uris = uris[by_uri]
        new_uri = np.ones(len(order), dtype=bool)
        new_uri[1:] = (sorted_uris[1:] != sorted_uris[:-1]) | first[1:]
        n_uris = np.add.reduceat(new_uri, starts)
        for g in np.flatnonzero(n_uris > 1):
            warnings.append(f"{_text(sorted_keys[starts[g]])} is listed with {int(n_uris[g])} "
                            f"different dataURIs; only {_text(uris[order[starts[g]]])} is kept")
    for message in warnings[:20]:
        log.warning("unique: %s", message)
    if len(warnings) > 20:
        log.warning("unique: %d more products with conflicting dataURIs", len(warnings) - 20)
    return result, warnings


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
