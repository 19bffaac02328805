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
        One row per distinct key, sorted by key, with ``shared_by`` (``;``-joined obsids) and
        ``n_shared`` columns.
    warnings : list of str
        One message per key that maps to several different ``dataURI`` values (when
        deduplicating on ``productFilename``): those are different files with one name.
    """
    if len(products) == 0:
        return products, []
    keys = np.asarray(products[key])
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = sorted_keys[1:] != sorted_keys[:-1]
    starts = np.flatnonzero(first)
    counts = np.diff(np.append(starts, len(order)))
    owner_column = "parent_obsid" if "parent_obsid" in products.colnames else "obsID"
    owners = np.asarray(products[owner_column]).astype("S") if owner_column in products.colnames else None

    result = products[order[starts]]
    result["n_shared"] = counts
    if owners is not None:
        shared = owners[order[starts]].astype(object)
        warnings: list[str] = []
        uris = np.asarray(products["dataURI"]) if key != "dataURI" and "dataURI" in products.colnames else None
        for group in np.flatnonzero(counts > 1):  # only repeated products need a Python loop
            members = order[starts[group]:starts[group] + counts[group]]
            shared[group] = b";".join(sorted(set(owners[members].tolist())))
            if uris is not None and len(set(uris[members].tolist())) > 1:
                warnings.append(f"{_text(sorted_keys[starts[group]])} is listed with {len(set(uris[members].tolist()))} "
                                f"different dataURIs; only {_text(uris[members[0]])} is kept")
        result["shared_by"] = shared.astype("S")
    else:
        warnings = []
    for message in warnings[:20]:
        log.warning("unique: %s", message)
    if len(warnings) > 20:
        log.warning("unique: %d more products with conflicting dataURIs", len(warnings) - 20)
    return result, warnings


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
