"""The recipe's ``expect``: what a run must find, checked after each stage.

A check compares a count (observations after query, product rows after products, files and
bytes kept after filter) with the recipe's bounds, for the whole recipe and for each named
search. The checks of a stage run on its table whether it was computed or reused, so a rerun
over a checkpoint that broke an expectation breaks it again rather than passing silently.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from mastpipe.stages.retrieve.progress import format_bytes
from mastpipe.state import decoded_column

if TYPE_CHECKING:
    from astropy.table import Table

    from mastpipe.recipe.models import Recipe
    from mastpipe.recipe.sections import Bounds

__all__ = ["CHECKED_AFTER", "check_stage", "describe", "failed", "hint_for"]

#: Which stage's table each expectation is checked on.
CHECKED_AFTER = {"observations": "query", "products": "products", "files": "filter", "bytes": "filter"}


def _texts(column: Any) -> np.ndarray:
    return np.array(decoded_column(column), dtype=object)


def query_obsids(observations: Table, name: str) -> set[str]:
    if "queries" not in observations.colnames or not len(observations):
        return set()
    names = _texts(observations["queries"])
    obsids = _texts(observations["obsid"])
    return {obsid for obsid, found in zip(obsids, names) if name in str(found).split(";")}


def _owned(table: Table, obsids: set[str]) -> np.ndarray:
    """Rows of a product table listed by one of ``obsids`` (its parent, or any sharing one)."""
    owned = np.zeros(len(table), dtype=bool)
    for column in ("parent_obsid", "obsID"):
        if column in table.colnames:
            owned |= np.isin(_texts(table[column]).astype(str), list(obsids))
            break
    if "shared_by" in table.colnames:
        owned |= np.array([bool(obsids.intersection(str(s).split(";"))) for s in _texts(table["shared_by"])],
                          dtype=bool)
    return owned


def _sizes(table: Table) -> np.ndarray:
    if "size" not in table.colnames or not len(table):
        return np.zeros(len(table), dtype=np.int64)
    return np.asarray(table["size"]).astype(np.int64).clip(0)


def _measure(what: str, table: Table, rows: np.ndarray | None) -> int:
    selected = table if rows is None else table[rows]
    if what == "bytes":
        return int(_sizes(selected).sum())
    return len(selected)


def _one(where: str, what: str, bounds: Bounds | None, found: int, stage: str) -> dict[str, Any] | None:
    if bounds is None:
        return None
    return {"where": where, "what": what, "min": bounds.min, "max": bounds.max, "found": found, "stage": stage,
            "ok": not bounds.broken_by(found)}


def check_stage(recipe: Recipe, stage: str, table: Table, observations: Table | None) -> list[dict[str, Any]]:
    """Every expectation checked after ``stage``, as dicts with ``ok`` saying whether it held.

    Parameters
    ----------
    recipe : Recipe
    stage : str
        The stage just run (or reused).
    table : astropy.table.Table
        Its result.
    observations : astropy.table.Table or None
        The query stage's result, to attribute products and files to the named searches.
    """
    checks: list[dict[str, Any] | None] = []
    for what, after in CHECKED_AFTER.items():
        if after != stage:
            continue
        checks.append(_one("recipe", what, getattr(recipe.expect, what), _measure(what, table, None), stage))
        for name, query in recipe.query.items():
            bounds = getattr(query.expect, what)
            if bounds is None:
                continue
            if stage == "query":
                found = len(query_obsids(table, name))
            else:
                obsids = query_obsids(observations, name) if observations is not None else set()
                found = _measure(what, table, _owned(table, obsids))
            checks.append(_one(f"query {name!r}", what, bounds, found, stage))
    return [check for check in checks if check is not None]


def describe(check: dict[str, Any]) -> str:
    """One line: ``query 'nircam' found 0 observations, expected at least 1``."""
    what = check["what"]
    show = (lambda n: f"{n} bytes ({format_bytes(n)})") if what == "bytes" else str
    found = f"{show(check['found'])}" + ("" if what == "bytes" else f" {what}")
    low, high = check["min"], check["max"]
    if low is not None and high is not None:
        wanted = f"between {show(low)} and {show(high)}"
    elif low is not None:
        wanted = f"at least {show(low)}"
    else:
        wanted = f"at most {show(high)}"
    subject = "the recipe" if check["where"] == "recipe" else check["where"]
    verb = {"observations": "found", "products": "listed", "files": "kept", "bytes": "kept"}[what]
    return f"{subject} {verb} {found}, expected {wanted}" + (" (expect." + what + ")" if check["where"] == "recipe"
                                                            else "")


def failed(checks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [check for check in checks if not check["ok"]]


def hint_for(broken: list[dict[str, Any]]) -> str:
    """What to do about failed checks."""
    if all(check["min"] and check["found"] < check["min"] for check in broken):
        return ("nothing was downloaded; the lines above say why the result is empty where mastpipe could tell. "
                "Fix the recipe, or write e.g. `expect: {observations: {min: 0}, files: {min: 0}}` if an empty "
                "result is fine")
    return "nothing was downloaded; narrow the recipe, or widen its `expect` if this much is intended"
