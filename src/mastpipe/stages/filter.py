"""filter: which products to keep, vectorised over columns (no Python loop per row).

Semantics, rule by rule (every rule given must hold; within a list, any value):

* ``contains``: the file name (productFilename) contains any of the substrings. This is the seed
  tutorial's ``product_filter(table, prodList)``; an empty list is no constraint.
* ``guide_stars``: file names containing ``_gs-`` are dropped (``omit``, the seed's default),
  kept (``keep``) or the only ones kept (``only``).
* ``endswith``: the file name ends with any of the suffixes.
* ``exclude``: the file name contains none of the substrings.
* ``mrp_only``: productGroupDescription is "Minimum Recommended Products".
* ``columns``: per column, the value equals any of the plain values given and none of the
  ``!``-prefixed ones (text is compared exactly, case-sensitive). On numeric columns (size,
  calib_level) a value may also be a comparison (``">=1000"``, ``"<20000"``, ``>``, ``<=``) or an
  inclusive range (``"100..1000"``), again ``!`` to exclude, and ``{min, max}`` keeps numbers
  inside the inclusive range. This is astroquery 0.4.11's ``filter_products``, exactly: the
  values of a list that are not negated are OR-ed, the negated ones AND-ed with them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from mastpipe.errors import MastpipeError
from mastpipe.recipe.models import GUIDE_STAR_MARK, Filter, Range

if TYPE_CHECKING:
    from astropy.table import Table

__all__ = ["MRP", "filter_products", "keep_mask"]

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
    """Whether each name contains any needle; each needle is only looked for in the names no
    earlier needle was found in."""
    found = np.zeros(len(names), dtype=bool)
    rest = np.arange(len(names))
    for needle in needles:
        if not len(rest):
            break
        hit = np.strings.find(names if len(rest) == len(names) else names[rest], _like(names, needle)) >= 0
        found[rest[hit]] = True
        rest = rest[~hit]
    return found


def keep_mask(table: Table, rules: Filter) -> np.ndarray:
    """Boolean mask of the products that ``rules`` keep (see the module docstring).

    Rules are applied one after the other to the rows still kept, so later rules look at fewer
    rows; every rule is a vectorised test over a column.
    """
    n = len(table)
    mask = np.zeros(n, dtype=bool)
    if n == 0:
        return np.ones(0, dtype=bool)
    names = _text_column(table, "productFilename")
    if rules.mrp_only:
        groups = _text_column(table, "productGroupDescription")
    for name in rules.columns:  # a missing column is an error whatever the other rules keep
        if name not in table.colnames:
            _text_column(table, name)
    rows = np.arange(n)

    def narrow(test: Any) -> None:
        nonlocal rows
        if len(rows):
            rows = rows[test(rows)]

    def in_rows(values: np.ndarray) -> np.ndarray:
        return values if len(rows) == n else values[rows]

    if rules.contains:
        narrow(lambda r: _contains_any(in_rows(names), rules.contains))
    if rules.guide_stars != "keep":
        only = rules.guide_stars == "only"
        narrow(lambda r: (np.strings.find(in_rows(names), _like(names, GUIDE_STAR_MARK)) >= 0) == only)
    if rules.endswith:
        def ends(r: np.ndarray) -> np.ndarray:
            subset, hit = in_rows(names), np.zeros(len(r), dtype=bool)
            for suffix in rules.endswith:
                hit |= np.strings.endswith(subset, _like(subset, suffix))
            return hit
        narrow(ends)
    if rules.exclude:
        narrow(lambda r: ~_contains_any(in_rows(names), rules.exclude))
    if rules.mrp_only:
        narrow(lambda r: in_rows(groups) == _like(groups, MRP))
    for name, match in rules.columns.items():
        narrow(lambda r, name=name, match=match: _column_mask(table, name, match, r if len(r) < n else None))
    mask[rows] = True
    return mask


def _column_mask(table: Table, name: str, match: Any, rows: np.ndarray | None = None) -> np.ndarray:
    """Whether each row (of ``rows``, or of the table) matches one ``columns`` rule."""
    if name not in table.colnames:
        raise MastpipeError(f"filter: the product lists have no column {name!r}",
                            hint=f"columns present: {', '.join(table.colnames)}")
    column = table[name] if rows is None else table[name][rows]
    if rows is not None:
        from astropy.table import Table as _Table

        table = _Table({name: column}, copy=False)
    column = np.asarray(column)
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
        return _numeric_mask(name, column, wanted)
    values = _text_column(table, name)
    encode = lambda v: _like(values, str(v))  # noqa: E731
    keep = np.isin(values, [encode(v) for v in plain]) if plain else np.ones(len(column), dtype=bool)
    return keep & ~np.isin(values, [encode(v) for v in negated]) if negated else keep


def _numeric_mask(name: str, column: np.ndarray, wanted: list[Any]) -> np.ndarray:
    """astroquery's numeric ``filter_products`` rule: positives OR-ed, negations AND-ed."""
    from mastpipe.recipe.fields import NUMERIC_SYNTAX, numeric_condition

    keep_any = np.zeros(len(column), dtype=bool)
    keep_all = np.ones(len(column), dtype=bool)
    positives = False
    for value in wanted:
        try:
            negated, op, low, high = numeric_condition(value)
        except ValueError:  # validate refuses these; a hand-built Filter may not have been validated
            raise MastpipeError(f"filter.columns.{name}: {value!r} is not a numeric filter",
                                hint=f"write {NUMERIC_SYNTAX}") from None
        hit = _compare(column, op, low, high)
        if negated:
            keep_all &= ~hit
        else:
            keep_any |= hit
            positives = True
    return (keep_any if positives else np.ones(len(column), dtype=bool)) & keep_all


def _compare(column: np.ndarray, op: str, low: float, high: float) -> np.ndarray:
    if op == "..":
        return (column >= low) & (column <= high)
    compare = {"==": np.equal, ">=": np.greater_equal, "<=": np.less_equal, ">": np.greater, "<": np.less}[op]
    hit: np.ndarray = compare(column, low)
    return hit


def filter_products(table: Table, rules: Filter) -> Table:
    """The products ``rules`` keep, in their original order."""
    mask = keep_mask(table, rules)
    return table.copy(copy_data=False) if mask.all() else table[mask]
