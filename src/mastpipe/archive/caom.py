"""CAOM searches as MAST's Portal API (``/api/v0/invoke``) takes them, written and read for the
:class:`~mastpipe.archive.Archive` methods that send them: a position as astroquery's keywords
(:func:`position_keywords`), ``Mast.Caom.Filtered`` asking for some columns only
(:func:`filtered`), a time range read from its answer (:func:`time_span`), and MAST's own name
look-up (:func:`name_lookup`, :func:`resolved`)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from astropy.table import Table

__all__ = ["CRITERIA_HINT", "filtered", "name_lookup", "position_keywords", "resolved", "time_span"]

#: What a user may do about an error MAST answers to a search.
CRITERIA_HINT = "check the recipe's criteria; `mastpipe validate` catches most mistakes"


def position_keywords(position: Any) -> dict[str, Any]:
    """``position`` (``(ra_deg, dec_deg, radius_deg)``, ``(object_name, radius_deg)`` or None) as
    ``query_criteria`` keywords."""
    if position is None:
        return {}
    if isinstance(position[0], str):
        return {"objectname": position[0], "radius": f"{position[1]} deg"}
    from astropy.coordinates import SkyCoord

    ra, dec, radius = position
    return {"coordinates": SkyCoord(ra, dec, unit="deg"), "radius": f"{radius} deg"}


def filtered(client: Any, columns: str, criteria: dict[str, Any], position: Any,
             pagesize: int | None = None, page: int | None = None) -> Table:
    """``Mast.Caom.Filtered[.Position]`` asked through ``client`` (astroquery's ``MastClass``) for
    ``columns`` only, filters built by astroquery exactly as ``query_criteria`` builds them."""
    portal = client._portal_api_connection
    filters = portal.build_filter_set("Mast.Caom.Cone", "Mast.Caom.Filtered", **criteria)
    service, params = "Mast.Caom.Filtered", {"columns": columns, "filters": filters}
    if position is not None:
        ra, dec, radius = position
        service, params["position"] = "Mast.Caom.Filtered.Position", f"{ra}, {dec}, {radius}"
    return client.service_request(service, params, pagesize=pagesize, page=page)


def time_span(table: Table) -> tuple[float, float] | None:
    """The ``MIN(t_min),MAX(t_min)`` answer of :func:`filtered` as (first, last), or None when it
    holds no sensible range."""
    try:
        low, high = float(table[0][0]), float(table[0][1])
    except (IndexError, TypeError, ValueError):
        return None
    return (low, high) if math.isfinite(low) and math.isfinite(high) and low <= high else None


def name_lookup(client: Any, name: str) -> Any:
    """MAST's answer to ``Mast.Name.Lookup`` of ``name``, asked through ``client`` (astroquery's
    ``MastClass``), so on the configured server, not astroquery's hard-coded resolver host."""
    import json

    responses = client.service_request_async("Mast.Name.Lookup", {"input": name, "format": "json"})
    return json.loads(responses[-1].text)


def resolved(answer: Any, name: str) -> dict[str, Any] | None:
    """Where a name look-up's ``answer`` places ``name``: ``{"ra", "dec", "canonical_name",
    "resolver"}`` (degrees), or None when it knows no such name."""
    found = (answer or {}).get("resolvedCoordinate") or [] if isinstance(answer, dict) else []
    for entry in found:
        try:
            return {"ra": float(entry["ra"]), "dec": float(entry["decl"]),
                    "canonical_name": entry.get("canonicalName") or name, "resolver": entry.get("resolver")}
        except (KeyError, TypeError, ValueError):
            continue
    return None
