"""Why a result is empty: which criterion of a search, or which filter rule, keeps nothing.

A search that matches nothing is asked again, once per criterion, without that criterion: only
counts (MAST's ``COUNT_BIG(*)``, uncapped and cheap), in parallel within ``mast.max_in_flight``.
A criterion whose removal brings observations back is the culprit; the values MAST has for its
field among those observations are listed, nearest to what was asked first (``NIRCAM/IMAGE``
for ``NIRCAN*``). A filter that keeps nothing is replayed rule by rule on the products it was
given; the first rule after which nothing is left is named with the values its column holds.

Each explanation is a dict ``{"where", "message", ...}``: logged as a warning (so ``-q`` shows
it), kept in the run report under ``empty`` and shown in the Markdown summary.
"""

from __future__ import annotations

import difflib
import logging
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from mastpipe.state import decoded

if TYPE_CHECKING:
    from astropy.table import Table

    from mastpipe.archive import Archive
    from mastpipe.recipe.models import Filter, Query, Recipe
    from mastpipe.stages.query import NameCache

__all__ = ["explain_filter", "explain_query", "explain_stage", "nearest"]

log = logging.getLogger(__name__)
#: Values shown for a field or column.
SHOWN = 6
#: Observations read (one page of one column) to list a field's values.
VALUES_READ = 2000


def _bare(value: Any) -> str:
    return str(value).replace("*", "").replace("%", "").casefold()


def nearest(asked: list[Any], present: Counter[str], shown: int = SHOWN) -> list[tuple[str, int]]:
    """The values in ``present`` (value -> count) closest to any of ``asked``, closest first.

    Closeness ignores case and wildcards: a value equal to what was asked but for case comes
    first, then values that start like it, then the ones difflib finds similar; ties go to
    the more frequent value.
    """
    wanted = [_bare(a) for a in asked if _bare(a)]

    def score(value: str) -> float:
        text = value.casefold()
        best = 0.0
        for want in wanted:
            parts = [text] + text.replace(";", "/").split("/")
            ratio = max(difflib.SequenceMatcher(None, want, part).ratio() for part in parts)
            prefix = max(len(_common_prefix(want, part)) for part in parts) / max(len(want), 1)
            best = max(best, 2.0 if want in parts else ratio + prefix)
        return best

    ranked = sorted(present.items(), key=lambda item: (-score(item[0]), -item[1], item[0]))
    return ranked[:shown]


def _common_prefix(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


def _shown(values: list[tuple[str, int]]) -> str:
    return ", ".join(f"{value} ({count})" for value, count in values)


def _asked(value: Any) -> list[Any]:
    from mastpipe.recipe.models import Range

    if isinstance(value, Range):
        return [f"{value.min}..{value.max}"]
    return list(value) if isinstance(value, list) else [value]


def explain_query(name: str, query: Query, archive: Archive, in_flight: int, names: Any = None) -> dict[str, Any]:
    """Why search ``name`` matches nothing, found with count requests (see the module docstring)."""
    from mastpipe.recipe.models import Range
    from mastpipe.stages.query import astroquery_criteria, position_of

    position = position_of(query, archive, names)
    criteria = dict(query.criteria or {})  # a CAOM search (mission searches are not explained this way)
    searches = astroquery_criteria(criteria)
    fields = list(criteria)
    entry: dict[str, Any] = {"where": f"query {name!r}", "stage": "query", "culprits": []}
    droppable = [f for f in fields if len(fields) > 1 or position is not None]

    def without(field: str) -> int:
        return sum(archive.count({k: v for k, v in search.items() if k != field}, position) for search in searches)

    with ThreadPoolExecutor(max(1, min(in_flight, len(droppable) or 1)), thread_name_prefix="mastpipe-explain") as pool:
        counts = dict(zip(droppable, pool.map(without, droppable)))
    entry["count_without"] = counts
    culprits = [f for f in droppable if counts[f] > 0]
    lines = []
    for field in culprits[:3]:
        asked = criteria[field]
        culprit: dict[str, Any] = {"field": field, "asked": _asked(asked), "count_without": counts[field]}
        others = {k: v for k, v in searches[0].items() if k != field}
        try:
            present = [decoded(v) if isinstance(v, bytes) else v for v in
                       archive.values(field, others, position, limit=VALUES_READ)]
        except Exception as error:  # noqa: BLE001 - an explanation must never fail the run
            log.debug("could not list the values of %s: %s", field, error)
            present = []
        if isinstance(asked, Range):
            numbers = [float(v) for v in present if _number(v)]
            if numbers:
                culprit["range_present"] = [min(numbers), max(numbers)]
                lines.append(f"without {field} it matches {counts[field]}; their {field} spans "
                             f"{min(numbers):g} .. {max(numbers):g}, asked {culprit['asked'][0]}")
        else:
            near = nearest(culprit["asked"], Counter(str(v) for v in present))
            culprit["near"] = [{"value": value, "count": count} for value, count in near]
            shown = f"; MAST's values nearest to what was asked: {_shown(near)}" if near else ""
            lines.append(f"{field}: {', '.join(map(repr, culprit['asked']))} matches nothing among the "
                         f"{counts[field]} observations the other criteria find{shown}")
        entry["culprits"].append(culprit)
    if not lines:
        if droppable:
            lines.append("no single criterion explains it: without any one of them it still matches nothing "
                         "(check them together, or the program may have no such observations)")
        else:
            lines.append(f"its only criterion, {fields[0]}, matches nothing")
    entry["message"] = f"query {name!r} matches no observation: " + "; ".join(lines)
    return entry


def _number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def explain_filter(table: Table, rules: Filter) -> dict[str, Any] | None:
    """Which rule of ``rules`` leaves nothing of ``table`` (the products filter was given)."""
    from mastpipe.recipe.models import Filter
    from mastpipe.stages.filter import keep_mask

    if not len(table):
        return None
    steps: list[tuple[str, dict[str, Any], str | None]] = []
    for key in ("contains", "endswith", "exclude"):
        if getattr(rules, key):
            steps.append((f"filter.{key}", {key: getattr(rules, key)}, "productFilename"))
    if rules.guide_stars != "keep":
        steps.append(("filter.guide_stars", {"guide_stars": rules.guide_stars}, None))
    if rules.mrp_only:
        steps.append(("filter.mrp_only", {"mrp_only": True}, "productGroupDescription"))
    for name, match in rules.columns.items():
        steps.append((f"filter.columns.{name}", {"columns": {name: match}}, name))
    rows = np.ones(len(table), dtype=bool)
    for where, partial, column in steps:
        alone = keep_mask(table, Filter(**{"guide_stars": "keep", **partial}))
        if (rows & alone).any():
            rows &= alone
            continue
        before = int(rows.sum())
        entry: dict[str, Any] = {"where": where, "stage": "filter", "kept_of": before}
        present = ""
        if column is not None and column in table.colnames:
            values = [decoded(v) for v in np.asarray(table[column])[rows]]
            if column == "productFilename":
                values = ["_" + v.rsplit("_", 1)[-1] if "_" in v else v for v in values]
            asked = _asked(partial.get("columns", {}).get(column, partial.get(where.rsplit(".", 1)[-1], [])))
            near = nearest(asked, Counter(values)) if asked else Counter(values).most_common(SHOWN)
            entry["values_present"] = [{"value": value, "count": count} for value, count in near]
            what = "file name endings" if column == "productFilename" else f"values of {column}"
            present = f"; {what} present: {_shown(near)}"
        entry["message"] = f"{where} keeps 0 of the {before} products left by the rules before it{present}"
        return entry
    return None


def explain_stage(recipe: Recipe, stage: str, table: Table, tables: dict[str, Table], *,
                  archive: Callable[[], Archive], names: Callable[[], NameCache]) -> list[dict[str, Any]]:
    """Why ``stage``'s result ``table`` is empty, if it is: each search of the query stage that
    matched nothing (:func:`explain_query`), or the filter rule that kept nothing
    (:func:`explain_filter`, given the unique stage's table in ``tables``). Each explanation is
    logged as a warning (``-q`` shows warnings) and returned for the report."""
    from mastpipe.errors import MastpipeError
    from mastpipe.expectations import query_obsids

    found = []
    if stage == "query":
        for name, query in recipe.query.items():
            if query_obsids(table, name):
                continue
            if query.mission is not None or not query.criteria:  # a mission search: no CAOM counts to ask
                found.append({"where": f"query {name!r}", "stage": "query",
                              "message": f"query {name!r} matches no {query.mission or ''} dataset".replace("  ", " ")})
                continue
            try:
                found.append(explain_query(name, query, archive(), recipe.mast.max_in_flight, names()))
            except MastpipeError as error:  # the search itself worked: explaining must not fail the run
                found.append({"where": f"query {name!r}", "stage": "query",
                              "message": f"query {name!r} matches no observation (could not find out why: "
                                         f"{error.message})"})
    elif stage == "filter" and not len(table) and len(tables.get("unique", [])):
        entry = explain_filter(tables["unique"], recipe.filter)
        if entry is not None:
            found.append(entry)
    for entry in found:
        log.warning("%s", entry["message"])
    return found
