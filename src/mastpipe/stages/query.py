"""query: every named search of the recipe, complete (never silently cut), united by obsid."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mastpipe.errors import NameNotFoundError, TruncatedResultError
from mastpipe.recipe.models import Query, Range

if TYPE_CHECKING:
    from astropy.table import Table

    from mastpipe.archive import Archive

__all__ = ["MIN_SPLIT_DAYS", "NameCache", "astroquery_criteria", "fetch_complete", "position_of", "resolve_name", "run",
           "unite"]

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


class NameCache:
    """Object names already resolved, kept in the state directory (``names.json``) so a rerun
    does not ask again: a name's position does not change between nightly runs."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._names: dict[str, dict[str, Any]] = {}
        if path is not None and path.is_file():
            try:
                loaded = json.loads(path.read_text(encoding="utf-8"))
                self._names = {str(k): v for k, v in loaded.items() if isinstance(v, dict)}
            except (OSError, ValueError, AttributeError):
                log.warning("ignoring unreadable name cache %s; names are looked up again", path)

    def get(self, name: str) -> dict[str, Any] | None:
        return self._names.get(name.strip().casefold())

    def put(self, name: str, found: dict[str, Any]) -> None:
        self._names[name.strip().casefold()] = found
        if self.path is not None:
            from mastpipe.atomic import atomic_write_bytes

            atomic_write_bytes(self.path, json.dumps(self._names, indent=1, sort_keys=True).encode())


def resolve_name(name: str, archive: Archive, names: NameCache | None = None) -> tuple[float, float]:
    """(ra, dec) of an object name, from the cache or MAST's ``Mast.Name.Lookup``."""
    found = names.get(name) if names is not None else None
    if found is None:
        found = archive.resolve(name)
        if found is None:
            raise NameNotFoundError(
                f"position.object {name!r}: MAST's name look-up at {archive.url} answered and does not know this name",
                hint="check the spelling, try another name for the target (a catalogue id such as NGC 1952), "
                     "or give position.coordinates instead")
        log.info("resolved %r to %.6f %+.6f (%s)", name, found["ra"], found["dec"],
                 found.get("canonical_name") or name)
        if names is not None:
            names.put(name, found)
    return float(found["ra"]), float(found["dec"])


def position_of(query: Query, archive: Archive, names: NameCache | None = None) -> tuple[float, float, float] | None:
    """``(ra, dec, radius)`` in degrees of a search's cone, names resolved; None without one."""
    if query.position is None:
        return None
    if query.position.object is not None:
        ra, dec = resolve_name(query.position.object, archive, names)
        return (ra, dec, query.position.radius_deg)
    ra, dec = query.position.ra_dec  # type: ignore[misc]
    return (ra, dec, query.position.radius_deg)


def fetch_complete(archive: Archive, criteria: dict[str, Any], position: Any, what: str,
                   cap: int = 50_000, in_flight: int = 4) -> Table:
    """One search's full result, never silently cut, found cheaply.

    MAST cuts results at ``cap`` rows without saying so; its count request is uncapped. So the
    count comes first: a search that fits is fetched once. One that does not is split on
    ``t_min`` over the real time range of its observations (asked of MAST), into intervals
    counted (cheap, in parallel) and split again until each fits; only then are tables fetched,
    so no table is fetched to be thrown away (unless the server cuts below ``cap``: then that
    one table teaches the real cap). A search that cannot be split further fails loudly.
    """
    expected = archive.count(criteria, position)
    if expected == 0:
        return _empty()
    if expected <= cap:
        table = archive.query(criteria, position)
        if len(table) >= expected:
            return table
        log.warning("%s: MAST returned %d of %d rows: it cuts results below %d rows; splitting the search on "
                    "t_min", what, len(table), expected, cap)
        cap = max(len(table), 1)
    else:
        log.info("%s: %d observations, more than MAST returns at once (%d): splitting the search on t_min",
                 what, expected, cap)
    low, high = _span(archive, criteria, position)
    parts = _split(archive, criteria, position, what, [(low, high, expected)], cap, in_flight)
    found = sum(len(p) for p in parts)
    if found < expected:
        # observations without a t_min (or outside the range) fall in no part of the split
        raise TruncatedResultError(
            f"{what}: MAST counts {expected} rows, and splitting the search on t_min found only {found} "
            f"(the others have no t_min to split on)",
            hint="narrow the query (e.g. by proposal_id or instrument_name) so each search has fewer rows")
    from astropy.table import vstack

    return vstack(parts, metadata_conflicts="silent") if len(parts) > 1 else parts[0]


def _span(archive: Archive, criteria: dict[str, Any], position: Any) -> tuple[float, float]:
    """The t_min interval to split: the real one MAST reports, within what the criteria ask."""
    low, high = criteria.get("t_min", list(_MJD_SPAN))
    real = archive.time_range(criteria, position)
    if real is not None:
        low, high = max(low, real[0]), min(high, real[1])
    else:
        low, high = max(low, _MJD_SPAN[0]), min(high, _MJD_SPAN[1])
    return low, max(low, high)


def _pieces(low: float, high: float, count: int, cap: int) -> list[tuple[float, float]]:
    """``[low, high]`` cut into equal, disjoint, inclusive intervals, enough for ``count`` rows
    to fit ``cap`` per interval if they were spread evenly (with room to spare)."""
    n = int(min(64, max(2, -(-count * 4 // (cap * 3)))))
    edges = [low + (high - low) * i / n for i in range(n + 1)]
    return [(edges[i] if i == 0 else float(np.nextafter(edges[i], high)), edges[i + 1] if i < n - 1 else high)
            for i in range(n)]


def _split(archive: Archive, criteria: dict[str, Any], position: Any, what: str,
           todo: list[tuple[float, float, int]], cap: int, in_flight: int) -> list[Table]:
    """Tables of every interval in ``todo`` (``(low, high, count)``), split until each fits."""
    from concurrent.futures import ThreadPoolExecutor

    def narrowed(low: float, high: float) -> dict[str, Any]:
        return {**criteria, "t_min": [low, high]}

    tables: list[Table] = []
    with ThreadPoolExecutor(max(1, in_flight), thread_name_prefix="mastpipe-split") as pool:
        while todo:
            fits = [(low, high, n) for low, high, n in todo if n <= cap]
            big = [(low, high, n) for low, high, n in todo if n > cap]
            todo = []
            for low, high, n in big:
                if high - low < MIN_SPLIT_DAYS:
                    raise TruncatedResultError(
                        f"{what}: {n} observations start within {MIN_SPLIT_DAYS * 86400:g} s of MJD {low:.6f} and "
                        f"MAST returns {cap} of {n} for one search: the search cannot be split further",
                        hint="narrow the query (e.g. by proposal_id or instrument_name) so each search has fewer rows")
            pieces = [piece for low, high, n in big for piece in _pieces(low, high, n, cap)]
            counts = list(pool.map(lambda p: archive.count(narrowed(*p), position), pieces))
            todo += [(low, high, n) for (low, high), n in zip(pieces, counts) if n > 0]
            fetched = list(pool.map(lambda f: archive.query(narrowed(f[0], f[1]), position), fits))
            for (low, high, n), table in zip(fits, fetched):
                if len(table) >= n:
                    tables.append(table)
                else:  # the server cuts lower than thought: learn it, split this one too
                    log.warning("%s: MAST returned %d of %d rows for t_min %.6f..%.6f; splitting further",
                                what, len(table), n, low, high)
                    cap = max(len(table), 1)
                    todo.append((low, high, n))
    return [t for t in tables if len(t)]


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


def fetch_mission(archive: Archive, query: Query, what: str, names: NameCache | None = None) -> Table:
    """A mission search's full result, paged with ``limit``/``offset`` until MAST's
    ``totalResults`` are in hand; a server that stops serving rows before then (or serves the
    same ones again) fails loudly rather than passing a cut table off as complete."""
    from astropy.table import vstack

    assert query.mission is not None
    limit = min(archive.page_size, MISSION_PAGE)
    position = position_of(query, archive, names)
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


def run(queries: dict[str, Query], archive: Archive, names: NameCache | None = None, cap: int = 50_000,
        in_flight: int = 4) -> Table:
    """Run every named query against MAST and unite the results."""
    from astropy.table import vstack

    results = {}
    for name, query in queries.items():
        if query.mission is not None:
            results[name] = fetch_mission(archive, query, f"query {name!r}", names)
            log.info("query %r: %d %s datasets", name, len(results[name]), query.mission)
            continue
        position = position_of(query, archive, names)
        parts = [fetch_complete(archive, criteria, position, f"query {name!r}", cap, in_flight)
                 for criteria in astroquery_criteria(query.criteria or {})]
        parts = [p for p in parts if len(p)]
        results[name] = vstack(parts, metadata_conflicts="silent") if len(parts) > 1 else (parts[0] if parts else _empty())
        log.info("query %r: %d observations", name, len(results[name]))
    return unite(results)


def _empty() -> Table:
    from astropy.table import Table

    return Table()
