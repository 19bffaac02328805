"""MAST query semantics for ``Mast.Caom.Filtered``, ``.Filtered.Position`` and ``Cone``.

Rules (protocol spec 3.3.3, "recommended server semantics"):

* AND across filter entries; OR across one entry's ``values`` and ``freeText``.
* ``paramName`` is matched case-insensitively.
* Discrete values: case-insensitive equality of the text; for ``;``-separated columns a value also
  matches any single token.  ``instrument_name`` is hierarchical (``NIRCAM/IMAGE``), so ``Nircam``
  also matches the part before the ``/``, which is what lets the seed tutorial's
  ``instrument_name='Nircam'`` find NIRCam imaging.
* ``freeText`` (and any value containing ``%``): SQL ``LIKE`` with ``%`` and ``_``,
  case-insensitive.
* Ranges ``[{"min", "max"}]``: inclusive; numbers or numeric strings.
* Positions: cone around (ra, dec) using (``s_ra``, ``s_dec``), distance in arcsec.
"""

from __future__ import annotations

import math
import re
from functools import lru_cache
from typing import Any, Iterable

from mastpipe.sandbox.columns import CONTINUOUS, FILTER_NAMES, SEPARATORS

__all__ = ["QueryError", "compile_filters", "angular_distance_arcsec", "parse_position"]


class QueryError(ValueError):
    """A request MAST would answer with ``status: ERROR``."""


@lru_cache(maxsize=512)
def _like(pattern: str) -> "re.Pattern[str]":
    out = []
    for ch in pattern:
        out.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
    return re.compile("".join(out), re.IGNORECASE | re.DOTALL)


def _as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise QueryError(f"Range bound {value!r} is not a number") from None


def _cell_texts(column: str, cell: Any, separator: str | None) -> list[str]:
    if cell is None:
        return []
    text = str(cell)
    texts = [text]
    if separator:
        texts += [t.strip() for t in text.split(separator) if t.strip()]
    if column == "instrument_name" and "/" in text:
        texts.append(text.split("/", 1)[0])
    return texts


def _discrete(column: str, values: list, free: str | None, separator: str | None):
    equals = {str(v).casefold() for v in values if "%" not in str(v)}
    likes = [_like(str(v)) for v in values if "%" in str(v)]
    if free:
        likes.append(_like(free))

    def match(row: dict) -> bool:
        texts = _cell_texts(column, row.get(column), separator)
        for t in texts:
            if t.casefold() in equals:
                return True
        # LIKE applies to the stored string and to each of its tokens
        return any(p.fullmatch(t) for p in likes for t in texts)

    return match


def _continuous(column: str, values: list):
    ranges = []
    for v in values:
        if isinstance(v, dict):
            ranges.append((_as_float(v.get("min")), _as_float(v.get("max"))))
        else:  # a bare value on a range column: equality
            x = _as_float(v)
            ranges.append((x, x))

    def match(row: dict) -> bool:
        cell = row.get(column)
        if cell is None:
            return False
        try:
            x = float(cell)
        except (TypeError, ValueError):
            return False
        return any(lo <= x <= hi for lo, hi in ranges)

    return match


def compile_filters(filters: Iterable[dict] | None):
    """Turn MAST's ``filters`` list into one predicate ``row -> bool``.

    Raises
    ------
    QueryError
        For malformed entries or unknown column names.
    """
    preds = []
    for entry in filters or []:
        if not isinstance(entry, dict) or "paramName" not in entry:
            raise QueryError(f"Malformed filter entry: {entry!r}")
        name = str(entry["paramName"])
        column = FILTER_NAMES.get(name.lower())
        if column is None:
            raise QueryError(f"Invalid column name: {name}")
        values = entry.get("values") or []
        if not isinstance(values, list):
            values = [values]
        free = entry.get("freeText")
        if column.lower() in CONTINUOUS or any(isinstance(v, dict) for v in values):
            if not values:
                continue
            preds.append(_continuous(column, values))
        else:
            if not values and not free:
                continue
            separator = entry.get("separator") or SEPARATORS.get(column.lower())
            preds.append(_discrete(column, values, free, separator))
    return lambda row: all(p(row) for p in preds)


def parse_position(text: str) -> tuple[float, float, float]:
    """Parse MAST's ``"ra, dec, radius_deg"`` position string."""
    try:
        ra, dec, radius = (float(x) for x in str(text).split(","))
    except ValueError:
        raise QueryError(f"Invalid position {text!r}: expected 'ra, dec, radius'") from None
    return ra, dec, radius


def angular_distance_arcsec(ra1: float, dec1: float, ra2: float, dec2: float) -> float:
    """Great-circle distance in arcseconds (haversine; all inputs in degrees)."""
    p1, p2 = math.radians(dec1), math.radians(dec2)
    dp, dl = p2 - p1, math.radians(ra2 - ra1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return math.degrees(2 * math.asin(min(1.0, math.sqrt(a)))) * 3600.0
