"""filter: which products to keep, vectorised over columns (no Python loop per row).

Semantics, rule by rule (every rule given must hold; within a list, any value):

* ``contains``: the file name (productFilename) contains any of the substrings. This is the seed
  tutorial's ``product_filter(table, prodList)``; an empty list is no constraint.
* ``guide_stars``: file names containing ``_gs-`` are dropped (``omit``, the seed's default),
  kept (``keep``) or the only ones kept (``only``).
* ``endswith``: the file name ends with any of the suffixes.
* ``exclude``: the file name contains none of the substrings.
* ``mrp_only``: productGroupDescription is "Minimum Recommended Products".
* ``columns``: per column, the value equals any of the plain values given (text is compared
  exactly, numbers numerically) and none of the ``!``-prefixed ones; ``{min, max}`` keeps
  numbers inside the inclusive range. This is astroquery's ``filter_products`` semantics.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import MastpipeError
from ..recipe import GUIDE_STAR_MARK, Filter, Range

if TYPE_CHECKING:
    from astropy.table import Table

MRP = "Minimum Recommended Products"


def _text_column(table: Table, name: str) -> np.ndarray:
    if name not in table.colnames:
        raise MastpipeError(f"filter: the product lists have no column {name!r}",
                            hint=f"columns present: {', '.join(table.colnames)}")
    column = table[name]
    values = np.asarray(column.filled("") if hasattr(column, "filled") and column.dtype.kind in "US" else column)
    return values if values.dtype.kind in "US" else values.astype(str)


def _like(values: np.ndarray, text: str) -> Any:
    """``text`` in the column's own string kind (bytes for checkpointed tables)."""
    return text.encode() if values.dtype.kind == "S" else text


def _contains_any(names: np.ndarray, needles: list[str]) -> np.ndarray:
    mask = np.zeros(len(names), dtype=bool)
    for needle in needles:
        mask |= np.strings.find(names, _like(names, needle)) >= 0
    return mask


def keep_mask(table: Table, rules: Filter) -> np.ndarray:
    """Boolean mask of the products that ``rules`` keep (see the module docstring)."""
    mask = np.ones(len(table), dtype=bool)
    if len(table) == 0:
        return mask
    names = _text_column(table, "productFilename")
    if rules.contains:
        mask &= _contains_any(names, rules.contains)
    guide = np.strings.find(names, _like(names, GUIDE_STAR_MARK)) >= 0
    if rules.guide_stars == "omit":
        mask &= ~guide
    elif rules.guide_stars == "only":
        mask &= guide
    if rules.endswith:
        ends = np.zeros(len(table), dtype=bool)
        for suffix in rules.endswith:
            ends |= np.strings.endswith(names, _like(names, suffix))
        mask &= ends
    if rules.exclude:
        mask &= ~_contains_any(names, rules.exclude)
    if rules.mrp_only:
        groups = _text_column(table, "productGroupDescription")
        mask &= groups == _like(groups, MRP)
    for name, match in rules.columns.items():
        mask &= _column_mask(table, name, match)
    return mask


def _column_mask(table: Table, name: str, match: Any) -> np.ndarray:
    if name not in table.colnames:
        raise MastpipeError(f"filter: the product lists have no column {name!r}",
                            hint=f"columns present: {', '.join(table.colnames)}")
    column = np.asarray(table[name])
    numeric = column.dtype.kind in "iuf"
    if isinstance(match, Range):
        values = column.astype(float)
        low = match.min if match.min is not None else -np.inf
        high = match.max if match.max is not None else np.inf
        return (values >= low) & (values <= high)
    wanted = match if isinstance(match, list) else [match]
    plain = [v for v in wanted if not (isinstance(v, str) and v.startswith("!"))]
    negated = [v[1:] for v in wanted if isinstance(v, str) and v.startswith("!")]
    if numeric:
        as_number = lambda v: float(v) if not isinstance(v, bool) else float(v)  # noqa: E731
        values = column.astype(float)
        keep = np.isin(values, [as_number(v) for v in plain]) if plain else np.ones(len(column), dtype=bool)
        return keep & ~np.isin(values, [as_number(v) for v in negated]) if negated else keep
    values = _text_column(table, name)
    encode = lambda v: _like(values, str(v))  # noqa: E731
    keep = np.isin(values, [encode(v) for v in plain]) if plain else np.ones(len(column), dtype=bool)
    return keep & ~np.isin(values, [encode(v) for v in negated]) if negated else keep


def filter_products(table: Table, rules: Filter) -> Table:
    """The products ``rules`` keep, in their original order."""
    return table[keep_mask(table, rules)]
