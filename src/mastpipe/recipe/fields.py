"""What MAST's observation and product tables contain, as far as recipes need to know.

Observation fields are those of MAST's ``Mast.Caom.Cone`` column configuration (the fields
astroquery's ``query_criteria`` accepts) plus the live extras astroquery's docs show. A field is
*continuous* when MAST filters it by a ``{min, max}`` range and *discrete* otherwise; astroquery
decides this from the column configuration's data type, and so do we.
"""

from __future__ import annotations

import difflib
import math
import re

#: Fields filtered by ranges; MAST stores them as double precision numbers.
CONTINUOUS_FIELDS = frozenset({
    "s_ra", "s_dec", "t_min", "t_max", "t_obs_release", "t_exptime", "em_min", "em_max",
    "distance", "srcDen",
})

#: Continuous fields that hold dates as Modified Julian Dates: recipes may write ISO dates.
DATE_FIELDS = frozenset({"t_min", "t_max", "t_obs_release"})

DISCRETE_FIELDS = frozenset({
    "intentType", "obs_collection", "provenance_name", "instrument_name", "project", "filters",
    "wavelength_region", "target_name", "target_classification", "obs_id", "obs_title",
    "proposal_pi", "dataproduct_type", "calib_level", "objID", "s_region", "jpegURL", "obsid",
    "proposal_id", "proposal_type", "sequence_number", "dataRights", "mtFlag", "dataURL",
    # hidden from get_metadata by MAST (`remove: true`) but still accepted as filters
    "obs_creator_name", "obs_publisher_id", "access_estsize", "obsStartTime", "obsStopTime",
    "em_res_power", "o_ucd", "target_class", "obs_creation_date", "publisher_id",
    "bib_reference", "data_rights", "obs_release_date", "s_ucd", "s_fov", "s_resolution",
    "t_resolution", "em_resolution", "objID1",
})

OBSERVATION_FIELDS = CONTINUOUS_FIELDS | DISCRETE_FIELDS

#: Observation fields that hold true/false (MAST's column type "boolean"); only these take a
#: boolean in a recipe's criteria, everywhere else one is a YAML 1.1 accident (`target_name: NO`).
BOOLEAN_FIELDS = frozenset({"mtFlag"})

#: Product-list columns and their kinds ("text" or "number").
PRODUCT_COLUMNS: dict[str, str] = {
    "obsID": "text", "obs_collection": "text", "dataproduct_type": "text", "obs_id": "text",
    "description": "text", "type": "text", "dataURI": "text", "productType": "text",
    "productGroupDescription": "text", "productSubGroupDescription": "text",
    "productDocumentationURL": "text", "project": "text", "prvversion": "text",
    "productFilename": "text", "size": "number", "parent_obsid": "text", "dataRights": "text",
    "calib_level": "number", "proposal_id": "text",
}


__all__ = [
    "BOOLEAN_FIELDS", "CONTINUOUS_FIELDS", "DATE_FIELDS", "DISCRETE_FIELDS", "OBSERVATION_FIELDS",
    "PRODUCT_COLUMNS", "suggest"
]


def suggest(name: str, candidates: frozenset[str] | set[str] | dict[str, str] | list[str]) -> str | None:
    """``"Did you mean 'x'?"`` for the closest candidate, matching case-insensitively first."""
    names = list(candidates)
    for candidate in names:
        if candidate.lower() == name.lower():
            return f"did you mean {candidate!r}?"
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    if not close:
        lowered = {candidate.lower(): candidate for candidate in names}
        close = [lowered[m] for m in difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)]
    return f"did you mean {close[0]!r}?" if close else None


#: astroquery's ``a..b`` range in ``filter_products`` (``astroquery.mast.utils.parse_numeric_product_filter``).
_NUMERIC_RANGE = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)\.\.[+-]?(\d+(\.\d*)?|\.\d+)")
_COMPARISONS = (">=", "<=", ">", "<")
NUMERIC_SYNTAX = ('a number (1000), a comparison (">=1000", "<20000", also > and <=), a range ("100..1000", '
                  "inclusive), each optionally after ! to exclude it")


def numeric_condition(value: object) -> tuple[bool, str, float, float]:
    """One value of a numeric ``filter.columns`` rule as astroquery's ``filter_products`` reads it.

    Returns ``(negated, op, a, b)``: ``op`` is ``==``, ``>=``, ``<=``, ``>``, ``<`` (against
    ``a``) or ``..`` (``a <= x <= b``). The rules are astroquery 0.4.11's, exactly: a leading
    ``!`` negates; a comparison is read from the start of the text; a range must match its
    pattern whole; anything else must be a number Python's ``float`` reads (``"1e3"``, ``" 5"``).

    Raises
    ------
    ValueError
        Where astroquery would fail (``InvalidQueryError: Could not parse numeric filter``).
    """
    negated = isinstance(value, str) and value.startswith("!")
    rest = value[1:] if negated else value  # type: ignore[index]
    if isinstance(rest, (int, float)):
        return negated, "==", float(rest), math.nan
    text = str(rest)
    for op in _COMPARISONS:
        if text.startswith(op):
            return negated, op, float(text[len(op):]), math.nan
    if _NUMERIC_RANGE.fullmatch(text):
        low, high = map(float, text.split(".."))
        return negated, "..", low, high
    return negated, "==", float(text), math.nan


def numeric_problem(value: object) -> str | None:
    """Why ``value`` is no numeric ``filter.columns`` value, or None when astroquery reads it."""
    try:
        numeric_condition(value)
    except ValueError:
        return f"{value!r} is not a numeric filter: write {NUMERIC_SYNTAX}"
    return None


#: Missions whose own search API (astroquery's ``MastMissions``) a recipe's query may use.
MISSIONS = ("jwst", "hst")

#: The column naming a mission's datasets: what product lists are asked for, and what the
#: pipeline calls an observation (astroquery's ``MastMissions.dataset_kwds``).
DATASET_COLUMN = {"jwst": "fileSetName", "hst": "sci_data_set_name"}

#: Product-list columns of the mission search API (``post_list_products``) and their kinds.
MISSION_PRODUCT_COLUMNS: dict[str, str] = {
    "product_key": "text", "access": "text", "dataset": "text", "instrument_name": "text", "filters": "text",
    "filename": "text", "uri": "text", "authz_primary_identifier": "text", "authz_secondary_identifier": "text",
    "file_suffix": "text", "category": "text", "size": "number", "type": "text",
}

#: A mission condition's column name as MAST spells them (its searchable columns are per mission,
#: served by its ``column_list`` service; see :mod:`mastpipe.recipe.columns`).
COLUMN_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
