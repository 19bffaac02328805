"""A product list read row by row, one value at a time: slower than :mod:`.scan`, but it reads
any answer, and a row with a value that does not fit (a size ``'abc'``, a null dataURI) is kept
with its bad values masked and the :data:`MALFORMED` column saying what they were, so that
product alone is refused. Also what the product lists' columns are called for (:data:`REQUIRED`)
and the form a page is stored in (:data:`PageColumns`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from astropy.table import Table

__all__ = ["MALFORMED", "REQUIRED", "PageColumns", "page_table", "product_table", "stored_columns"]

#: A column of product lists mastpipe adds: what was wrong with a row of MAST's answer (masked
#: where nothing was). The retrieve stage refuses such rows one by one; the others go on.
MALFORMED = "malformed"
#: Product fields a file cannot be made without (a null there is MAST's answer at fault).
REQUIRED = ("dataURI", "productFilename", "obs_id", "obs_collection", "size")


def product_table(responses: list[Any]) -> Table:
    """The product list in MAST's answer (one JSON page per response) as a masked Table.

    The same table astroquery's ``get_product_list`` makes (its column types, nulls masked),
    read one value at a time: a row with a value that does not fit its column (a size
    ``'abc'``, ``12.5`` or ``-5``, a null dataURI, a row that is not an object) no longer
    fails the whole list. Its bad values are masked and the :data:`MALFORMED` column says
    what they were, so that product alone is refused.
    """
    from astropy.table import Table, vstack
    from astroquery.exceptions import RemoteServiceError

    tables = []
    for response in responses:
        page = response.json()
        if page.get("status") == "ERROR":
            raise RemoteServiceError(page.get("msg", "There was an error with your request."))
        tables.append(page_table(page))
    if not tables:
        return Table(masked=True)
    return tables[0] if len(tables) == 1 else vstack(tables, metadata_conflicts="silent")


def page_table(page: dict[str, Any]) -> Table:
    """One page of MAST's answer (its JSON) as a masked Table, read row by row."""
    import numpy as np
    from astropy.table import MaskedColumn, Table
    from astroquery.mast.utils import parse_type

    if not isinstance(page.get("fields"), list) or not isinstance(page.get("data"), list):
        raise ValueError("MAST's answer has no 'fields' and 'data' lists")
    rows: list[dict[str, Any] | None] = [row if isinstance(row, dict) else None for row in page["data"]]
    problems: list[list[str]] = [["a row that is not an object"] if row is None else [] for row in rows]
    table = Table(masked=True)
    for field in page["fields"]:
        name, kind = field.get("name"), str(field.get("type", "string"))
        if name == "_selected_" or name in table.colnames:
            continue
        _, atype, blank = parse_type(kind)
        values, mask = [], []
        for row, problem in zip(rows, problems):
            raw = None if row is None else row.get(name)
            value, ok = _cell(raw, atype)
            if not ok:
                problem.append(f"{name} {raw!r}")
            elif name == "size" and value is not None and value < 0:
                problem.append(f"size {raw!r}")
            elif value is None and name in REQUIRED and row is not None:
                problem.append(f"no {name}")
            missing = value is None or not ok
            values.append(blank if missing else value)
            mask.append(missing)
        try:
            data = np.array(values, dtype=atype if atype not in ("", None) else str)
        except (TypeError, ValueError):  # a type astroquery does not know: text
            data = np.array([str(v) for v in values], dtype=str)
        table.add_column(MaskedColumn(data, name=name, mask=mask))
    if any(problems):
        text = ["; ".join(p) for p in problems]
        table.add_column(MaskedColumn(text, name=MALFORMED, mask=[not p for p in problems], dtype=str))
    return table


def _cell(raw: Any, atype: Any) -> tuple[Any, bool]:
    """(value, readable) of one JSON value for a column of numpy type ``atype``; None = null."""
    import numpy as np

    if raw is None:
        return None, True
    if atype is str:
        return (raw, True) if isinstance(raw, str) else ((str(raw), True) if isinstance(raw, (int, float)) else (None, False))
    if atype is bool:
        return (raw, True) if isinstance(raw, bool) else (None, False)
    if atype is np.int64:
        if isinstance(raw, bool):
            return None, False
        if isinstance(raw, float) and raw.is_integer():
            raw = int(raw)
        elif isinstance(raw, str) and raw.strip().lstrip("-").isdigit():
            raw = int(raw)
        if isinstance(raw, int) and -2**63 <= raw < 2**63:
            return raw, True
        return None, False
    if atype is np.float64:
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            return float(raw), True
        try:
            return float(raw), True
        except (TypeError, ValueError):
            return None, False
    return raw, True


#: One page of an answer as columns in stored form: name -> (values, mask or None).
PageColumns = dict[str, tuple["np.ndarray", "np.ndarray | None"]]


def stored_columns(table: Table) -> PageColumns:
    """A page read by :func:`product_table`'s row-by-row reading, as stored columns."""
    from mastpipe.state import as_stored

    stored = as_stored(table)
    return {name: (np.asarray(stored[name]),
                   np.asarray(stored[name].mask) if getattr(stored[name], "mask", None) is not None
                   and np.any(stored[name].mask) else None)
            for name in stored.colnames}
