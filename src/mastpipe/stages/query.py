"""query: every named search of the recipe, complete (never silently cut), united by obsid."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from mastpipe.errors import TruncatedResultError
from mastpipe.recipe.models import Query, Range

if TYPE_CHECKING:
    from astropy.table import Table

    from mastpipe.archive import Archive

__all__ = ["MIN_SPLIT_DAYS", "astroquery_criteria", "fetch_complete", "run", "unite"]

log = logging.getLogger(__name__)

#: Searches are split on t_min down to this width (days) before giving up on completeness.
MIN_SPLIT_DAYS = 1e-3
#: Bounds standing in for an open end of a range (MAST needs both).
OPEN_LOW, OPEN_HIGH = -1e9, 1e9
_MJD_SPAN = (0.0, 100_000.0)  # MJD 0 (1858) to 2132: every observation MAST holds


def astroquery_criteria(criteria: dict[str, Any]) -> list[dict[str, Any]]:
    """Recipe criteria -> astroquery ``query_criteria`` keywords (one dict per search needed).

    astroquery keeps one wildcard per field and skips the value after a wildcard in a list, so
    exact values go first, and a list with several wildcards becomes several searches.
    """
    searches: list[dict[str, Any]] = [{}]
    for name, value in criteria.items():
        if isinstance(value, Range):
            converted: list[Any] = [[value.min if value.min is not None else OPEN_LOW,
                                     value.max if value.max is not None else OPEN_HIGH]]
        elif isinstance(value, list):
            exact = [v for v in value if not _wild(v)]
            wild = [v for v in value if _wild(v)]
            converted = [exact + [w] for w in wild] if wild else [exact]
            if len(wild) > 1 and exact:
                converted = [exact] + [[w] for w in wild]
        else:
            converted = [value]
        searches = [{**search, name: option} for search in searches for option in converted]
    return searches


def _wild(value: Any) -> bool:
    return isinstance(value, str) and ("*" in value or "%" in value)


def _position(query: Query) -> Any:
    if query.position is None:
        return None
    if query.position.object is not None:
        return (query.position.object, query.position.radius_deg)
    ra, dec = query.position.ra_dec  # type: ignore[misc]
    return (ra, dec, query.position.radius_deg)


def fetch_complete(archive: Archive, criteria: dict[str, Any], position: Any, what: str) -> Table:
    """One search's full result: when MAST returns fewer rows than it counts, split on t_min.

    MAST cuts results at 50,000 rows without saying so; comparing with the (uncapped) count
    request is the only way to notice. A cut search is bisected on ``t_min`` until each part is
    complete; one that cannot be split further fails loudly rather than returning a cut table.
    """
    from astropy.table import vstack

    table = archive.query(criteria, position)
    expected = archive.count(criteria, position)
    if len(table) >= expected:
        return table
    log.warning("%s: MAST returned %d of %d rows; splitting the search on t_min", what, len(table), expected)
    low, high = criteria.get("t_min", list(_MJD_SPAN))
    low, high = max(low, _MJD_SPAN[0]), min(high, _MJD_SPAN[1])
    if high - low < MIN_SPLIT_DAYS:
        raise TruncatedResultError(
            f"{what}: MAST returned {len(table)} of {expected} rows and the search cannot be split further",
            hint="narrow the query (e.g. by proposal_id or instrument_name) so each search has fewer rows")
    middle = (low + high) / 2
    parts = [fetch_complete(archive, {**criteria, "t_min": [low, middle]}, position, what),
             fetch_complete(archive, {**criteria, "t_min": [np.nextafter(middle, high), high]}, position, what)]
    found = sum(len(p) for p in parts)
    if found < expected:
        # observations without a t_min (or outside MJD 0..100000) fall in no part of the split
        raise TruncatedResultError(
            f"{what}: MAST returned {len(table)} of {expected} rows, and splitting the search on t_min "
            f"found only {found} (the others have no t_min to split on)",
            hint="narrow the query (e.g. by proposal_id or instrument_name) so each search has fewer rows")
    return vstack([p for p in parts if len(p)], metadata_conflicts="silent") if found else table[:0]


def unite(results: dict[str, Table]) -> Table:
    """Union of named results, one row per ``obsid``, with a ``queries`` column naming the
    searches that found it (``;``-separated, in recipe order)."""
    from astropy.table import Table, vstack

    tables = []
    for name, table in results.items():
        if len(table):
            table = Table(table, masked=False, copy=False)
            table["queries"] = np.full(len(table), name, dtype=object)
            tables.append(table)
    if not tables:
        return Table({"obsid": np.array([], dtype=str), "queries": np.array([], dtype=str)})
    allrows = vstack(tables, metadata_conflicts="silent") if len(tables) > 1 else tables[0]
    obsid = np.asarray(allrows["obsid"]).astype(str)
    order = np.argsort(obsid, kind="stable")
    obsid_sorted = obsid[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = obsid_sorted[1:] != obsid_sorted[:-1]
    group = np.cumsum(first) - 1
    names: list[list[str]] = [[] for _ in range(int(first.sum()))]
    for g, q in zip(group, np.asarray(allrows["queries"])[order]):
        if q not in names[g]:
            names[g].append(q)
    united = allrows[order[first]]
    united["queries"] = [";".join(n) for n in names]
    united["obsid"] = obsid_sorted[first]
    return united


#: Rows per page of a mission search (astroquery's MastMissions default ``limit``).
MISSION_PAGE = 5_000


def fetch_mission(archive: Archive, query: Query, what: str) -> Table:
    """A mission search's full result, paged with ``limit``/``offset`` until MAST's
    ``totalResults`` are in hand; a server that stops serving rows before then (or serves the
    same ones again) fails loudly rather than passing a cut table off as complete."""
    from astropy.table import vstack

    assert query.mission is not None
    limit = min(archive.page_size, MISSION_PAGE)
    position = _position(query)
    parts: list[Table] = []
    seen: set[str] = set()
    offset, total = 0, 0
    while True:
        page, total = archive.mission_search(query.mission, dict(query.conditions), position,
                                             list(query.select_cols), offset, limit)
        ids = [str(d) for d in page["obsid"]] if len(page) else []
        fresh = [i for i, d in enumerate(ids) if d not in seen]
        if fresh:
            parts.append(page[fresh])
            seen.update(ids[i] for i in fresh)
        if not fresh or len(seen) >= total or len(page) < limit:
            break
        offset += len(page)
    if len(seen) < total:
        raise TruncatedResultError(
            f"{what}: MAST counts {total} {query.mission} datasets but served {len(seen)} (paging stopped at offset "
            f"{offset})", hint="narrow the query's conditions (e.g. by program, observtn or exp_type) so MAST serves "
                              "every row, or rerun later if MAST was failing")
    if not parts:
        return _empty()
    return vstack(parts, metadata_conflicts="silent") if len(parts) > 1 else parts[0]


def run(queries: dict[str, Query], archive: Archive) -> Table:
    """Run every named query against MAST and unite the results."""
    from astropy.table import vstack

    results = {}
    for name, query in queries.items():
        if query.mission is not None:
            results[name] = fetch_mission(archive, query, f"query {name!r}")
            log.info("query %r: %d %s datasets", name, len(results[name]), query.mission)
            continue
        parts = [fetch_complete(archive, criteria, _position(query), f"query {name!r}")
                 for criteria in astroquery_criteria(query.criteria or {})]
        parts = [p for p in parts if len(p)]
        results[name] = vstack(parts, metadata_conflicts="silent") if len(parts) > 1 else (parts[0] if parts else _empty())
        log.info("query %r: %d observations", name, len(results[name]))
    return unite(results)


def _empty() -> Table:
    from astropy.table import Table

    return Table()
