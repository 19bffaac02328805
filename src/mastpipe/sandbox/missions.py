"""MAST's mission search API (astroquery ``MastMissions``) for ``jwst`` and ``hst``, over the CAOM
catalogue: the same observations seen as each mission's datasets, the same files, the same bytes.

What the API looks like is in ``mast-missions.md``; the answers have the shapes and field types of
astroquery's recorded ones (``mission_results.json``, ``mission_products.json``,
``mission_columns.json``), which ``tests/integration/test_sandbox_missions.py`` compares.

How the catalogue maps onto datasets:

* **jwst**: every exposure-level (``calib_level`` 2) JWST observation is a dataset named by its
  ``obs_id`` (``fileSetName``, e.g. ``jw01073001001_02101_00001_nrcalong``) listing the files it
  owns; each visit's guide-star files form datasets of their own (``jw01073001001_gs-id_...``,
  ``exp_type`` ``FGS_ID-IMAGE``, ``FGS_ACQ1`` ...), as MAST files them.
* **hst**: every HST observation is a dataset (``sci_data_set_name`` = its ``obs_id``) listing
  all its files.

A product's ``uri`` is ``<dataset>/<filename>``; ``retrieve_product?product_name=<uri>`` serves the
body of the CAOM file ``mast:<COLLECTION>/product/<filename>``.
"""

from __future__ import annotations

import fnmatch
import re
from datetime import datetime, timedelta, timezone
from typing import Any

from mastpipe.recipe.fields import DATASET_COLUMN, MISSIONS
from mastpipe.sandbox.query import QueryError, angular_distance_arcsec

__all__ = ["MISSIONS", "DATASET_COLUMN", "column_list", "MissionView", "search_answer"]
_COLLECTION = {"jwst": "JWST", "hst": "HST"}
_POSITION = {"jwst": ("targ_ra", "targ_dec"), "hst": ("sci_ra", "sci_dec")}

# (column_name, field_name, qual_type, datatype, default_output, description)
_JWST = [
    ("search_pos", "Search Position", "string", "char", "no", "Search Position (RA and Dec)"),
    ("fileSetName", "Dataset", "string", "char", "yes", "Name of the exposure's file set, e.g. jw01073001001_02101_00001_nrca1"),
    ("program", "Program", "integer", "long", "yes", "Program (proposal) number, e.g. 1073"),
    ("observtn", "Observation", "integer", "long", "yes", "Observation number within the program"),
    ("visit", "Visit", "integer", "long", "yes", "Visit number within the observation"),
    ("visitgrp", "Visit Group", "string", "char", "no", "Visit group identifier"),
    ("seq_id", "Sequence", "string", "char", "no", "Parallel sequence identifier"),
    ("act_id", "Activity", "string", "char", "no", "Activity identifier"),
    ("exposure", "Exposure", "integer", "long", "yes", "Exposure number within the activity"),
    ("targprop", "Target Name", "string", "char", "yes", "Target name from the proposal, e.g. NGC-104"),
    ("targ_ra", "RA", "ra", "double", "yes", "Target right ascension (degrees)"),
    ("targ_dec", "Dec", "dec", "double", "yes", "Target declination (degrees)"),
    ("instrume", "Instrument", "string", "char", "yes", "Instrument: NIRCAM, NIRSPEC, NIRISS, MIRI, FGS"),
    ("exp_type", "Exposure Type", "string", "char", "yes", "Exposure type, e.g. NRC_IMAGE, MIR_LRS-FIXEDSLIT, FGS_ID-IMAGE"),
    ("detector", "Detector", "string", "char", "yes", "Detector, e.g. NRCA1, NRCALONG, GUIDER1"),
    ("filter", "Filter", "string", "char", "yes", "Filter wheel element, e.g. F277W"),
    ("pupil", "Pupil", "string", "char", "yes", "Pupil wheel element, e.g. CLEAR"),
    ("readpatt", "Readout Pattern", "string", "char", "yes", "Readout pattern, e.g. BRIGHT2"),
    ("subarray", "Subarray", "string", "char", "no", "Subarray, e.g. FULL"),
    ("nints", "Integrations", "integer", "long", "no", "Number of integrations"),
    ("ngroups", "Groups", "integer", "long", "no", "Groups per integration"),
    ("effexptm", "Exposure Time", "float", "float", "yes", "Effective exposure time (seconds)"),
    ("expstart", "Start Time (MJD)", "float", "float", "no", "Exposure start (MJD)"),
    ("expend", "End Time (MJD)", "float", "float", "no", "Exposure end (MJD)"),
    ("date_obs", "Observation Date", "datetime", "char", "yes", "UTC date and time the exposure started"),
    ("publicReleaseDate", "Release Date", "datetime", "char", "yes", "Date the data become public"),
    ("access", "Access", "string", "char", "yes", "PUBLIC or EXCLUSIVE_ACCESS"),
    ("category", "Proposal Category", "string", "char", "no", "Proposal category, e.g. GO, GTO, ERO"),
    ("pi_name", "PI", "string", "char", "no", "Principal investigator"),
    ("title", "Title", "string", "char", "no", "Proposal title"),
    ("ang_sep", "Separation", "float", "float", "yes", "Angular separation from the search position (arcmin)"),
    ("search_key", "Search Key", "string", "char", "no", "Search key"),
]
_HST = [
    ("search_pos", "Search Position", "string", "char", "no", "Search Position (RA and Dec)"),
    ("sci_data_set_name", "Dataset", "string", "char", "yes", "Data set name, e.g. IB5E01010"),
    ("sci_targname", "Target Name", "string", "char", "yes", "Target name designated by the observer"),
    ("sci_instrume", "Instrument", "string", "char", "yes", "Instrument used (e.g. ACS, WFC3, WFPC2)"),
    ("sci_aper_1234", "Apertures", "string", "char", "yes", "Aperture configuration (e.g. UVIS, IR, WFC)"),
    ("sci_spec_1234", "Filters/Gratings", "string", "char", "yes", "The filter(s) or grating(s) used"),
    ("sci_actual_duration", "Exp. Time", "float", "float", "yes", "Exposure time (seconds)"),
    ("sci_start_time", "Start Time", "datetime", "char", "yes", "Observation start time"),
    ("sci_pep_id", "Proposal ID", "integer", "long", "yes", "Proposal (PEP) id"),
    ("sci_pi_last_name", "PI Last Name", "string", "char", "yes", "Principal investigator's last name"),
    ("sci_ra", "RA", "ra", "double", "yes", "Right ascension (degrees)"),
    ("sci_dec", "Dec", "dec", "double", "yes", "Declination (degrees)"),
    ("sci_program_id", "Program ID", "string", "char", "no", "Program id (characters 2-4 of the dataset)"),
    ("sci_obset_id", "Obset ID", "string", "char", "no", "Observation set id"),
    ("sci_refnum", "Ref. Number", "integer", "long", "yes", "Reference number"),
    ("sci_central_wavelength", "Central Wavelength", "float", "float", "yes", "Central wavelength (Angstrom)"),
    ("sci_release_date", "Release Date", "datetime", "char", "yes", "Release date"),
    ("sci_stop_time", "Stop Time", "datetime", "char", "yes", "Observation stop time"),
    ("sci_preview_name", "Preview Name", "string", "char", "yes", "Preview name"),
    ("sci_obs_type", "Observation Type", "string", "char", "no", "IMAGE or SPECTRUM"),
    ("sci_aec", "Science/Calibration", "string", "char", "no", "S for science, C for calibration"),
    ("scp_scan_type", "Scan Type", "string", "char", "yes", "Spatial scan type"),
    ("sci_hlsp", "HLSP", "integer", "long", "yes", "Number of high-level science products"),
    ("ang_sep", "Separation", "float", "float", "yes", "Angular separation from the search position (arcmin)"),
    ("sci_status", "Status", "string", "char", "no", "PUBLIC or PROPRIETARY"),
    ("search_key", "Search Key", "string", "char", "no", "Search key"),
]
_DEFINITIONS = {"jwst": _JWST, "hst": _HST}
_NOT_QUERYABLE = {"search_pos", "search_key"}
_INFO_TYPE = {"string": "VARCHAR", "float": "FLOAT", "ra": "FLOAT", "dec": "FLOAT", "integer": "INTEGER",
              "datetime": "DATETIME", "boolean": "INTEGER"}
_NUMERIC = {"float", "ra", "dec", "integer"}


def column_list(mission: str) -> list[dict[str, str]]:
    """The ``column_list`` answer for ``mission`` (the shape of ``mission_columns.json``)."""
    return [{"field_name": field, "description": f"{description}    ", "column_name": name,
             "queryable": "no" if name in _NOT_QUERYABLE else "yes", "qual_type": qual,
             "default_output": default, "indexed": "yes" if name == DATASET_COLUMN[mission] else "no",
             "datatype": datatype}
            for name, field, qual, datatype, default, description in _DEFINITIONS[mission]]


def _iso(mjd: float | None, date_only: bool = False) -> str | None:
    if mjd is None:
        return None
    when = datetime(1858, 11, 17, tzinfo=timezone.utc) + timedelta(days=float(mjd))
    return when.strftime("%Y-%m-%d") if date_only else when.strftime("%Y-%m-%dT%H:%M:%S.%f")


_EXPOSURE = re.compile(r"jw(\d{5})(\d{3})(\d{3})_(\d{2})(\d)(\d{2})_(\d{5})_([a-z0-9]+)")
_GUIDE_STAR = re.compile(r"(jw(\d{5})(\d{3})(\d{3})_(gs-[a-z0-9]+)_\d+)_(uncal|cal)\.fits")
_GS_EXP_TYPE = {"gs-id": "FGS_ID-IMAGE", "gs-acq1": "FGS_ACQ1", "gs-acq2": "FGS_ACQ2",
                "gs-track": "FGS_TRACK", "gs-fg": "FGS_FINEGUIDE"}
_HST_CATEGORY = {"RAW": "UNCALIBRATED", "ASN": "AUX", "FLT": "CALIBRATED", "FLC": "CALIBRATED",
                 "DRZ": "CALIBRATED", "DRC": "CALIBRATED"}


def _filter_pupil(filters: str | None) -> tuple[str | None, str | None]:
    tokens = [t for t in (filters or "").split(";") if t]
    elements = [t for t in tokens if t.upper() != "CLEAR"]
    return (elements[0] if elements else ("CLEAR" if tokens else None)), ("CLEAR" if tokens else None)


class MissionView:
    """The CAOM catalogue seen through one mission's search API (rebuilt per request: the
    catalogue may change between requests, and it is small except for its lazy products)."""

    def __init__(self, catalog: Any, mission: str) -> None:
        if mission not in MISSIONS:
            raise QueryError(f"mission {mission!r} is not served; the sandbox serves {', '.join(MISSIONS)}")
        self.catalog, self.mission = catalog, mission
        self._rows: list[dict[str, Any]] | None = None
        self._files: dict[str, list[dict[str, Any]]] = {}

    # -- datasets --------------------------------------------------------------------------------

    def datasets(self) -> list[dict[str, Any]]:
        """Every dataset row of the mission, all columns (internal keys start with ``_``)."""
        if self._rows is None:
            self._rows = self._jwst() if self.mission == "jwst" else self._hst()
        return self._rows

    def _owned(self, obsid: str, lazy: bool = True) -> list[dict[str, Any]]:
        """The product rows observation ``obsid`` owns (not those it lists from others)."""
        if not lazy:
            rows = [r for fam in self.catalog._plans.get(obsid, ()) for r in getattr(fam, "rows", ())]
            return [r for r in rows if r["obsID"] == obsid]
        return [r for r in self.catalog.iter_products(obsid) if r["obsID"] == obsid]

    def _jwst(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for obs in self.catalog.iter_obs():
            if obs["obs_collection"] != "JWST" or obs["calib_level"] != 2:
                continue
            obs_id = obs["obs_id"]
            m = _EXPOSURE.fullmatch(obs_id)
            program, observtn, visit = int(obs_id[2:7]), int(obs_id[7:10]), int(obs_id[10:13])
            filt, pupil = _filter_pupil(obs["filters"])
            inst = (obs["instrument_name"] or "").split("/")[0]
            row = {
                "fileSetName": obs_id, "program": program, "observtn": observtn, "visit": visit,
                "visitgrp": m.group(4) if m else "02", "seq_id": m.group(5) if m else "1",
                "act_id": m.group(6) if m else "01", "exposure": int(m.group(7)) if m else 1,
                "targprop": obs["target_name"], "targ_ra": obs["s_ra"], "targ_dec": obs["s_dec"],
                "instrume": inst, "exp_type": {"NIRCAM": "NRC_IMAGE"}.get(inst, f"{inst[:3]}_IMAGE"),
                "detector": (m.group(8) if m else "nrca1").upper(), "filter": filt, "pupil": pupil,
                "readpatt": "BRIGHT2" if program == 1073 else "MEDIUM8", "subarray": "FULL",
                "nints": 1, "ngroups": 6, "effexptm": obs["t_exptime"], "expstart": obs["t_min"],
                "expend": obs["t_max"], "date_obs": _iso(obs["t_min"]),
                "publicReleaseDate": _iso(obs["t_obs_release"]), "access": obs["dataRights"],
                "category": obs["proposal_type"], "pi_name": obs["proposal_pi"], "title": obs["obs_title"],
                "_obsid": obs["obsid"], "_name_filter": None,
            }
            rows.append(row)
            guide_stars: dict[str, dict[str, Any]] = {}
            for product in self._owned(obs["obsid"], lazy=False):
                g = _GUIDE_STAR.fullmatch(product["productFilename"])
                if g and g.group(1) not in guide_stars:
                    guide_stars[g.group(1)] = {
                        **row, "fileSetName": g.group(1), "exposure": 1, "instrume": "FGS",
                        "exp_type": _GS_EXP_TYPE.get(g.group(5), "FGS_ID-IMAGE"), "detector": "GUIDER1",
                        "filter": None, "pupil": None, "readpatt": "FGS", "_name_filter": g.group(1) + "_"}
            for gs in guide_stars.values():
                rows.append(gs)
            row["_name_filter"] = "!_gs-"
        return rows

    def _hst(self) -> list[dict[str, Any]]:
        rows = []
        for refnum, obs in enumerate(self.catalog.iter_obs()):
            if obs["obs_collection"] != "HST":
                continue
            name = obs["obs_id"]
            inst, _, aperture = (obs["instrument_name"] or "").partition("/")
            rows.append({
                "sci_data_set_name": name, "sci_targname": obs["target_name"], "sci_instrume": f"{inst:<6}",
                "sci_aper_1234": aperture or "PC1", "sci_spec_1234": obs["filters"],
                "sci_actual_duration": obs["t_exptime"], "sci_start_time": _iso(obs["t_min"]),
                "sci_pep_id": int(obs["proposal_id"]), "sci_pi_last_name": (obs["proposal_pi"] or "").split(",")[0].upper(),
                "sci_ra": obs["s_ra"], "sci_dec": obs["s_dec"], "sci_program_id": name[1:4],
                "sci_obset_id": name[4:6], "sci_refnum": refnum,
                "sci_central_wavelength": 10.0 * (obs["em_min"] + obs["em_max"]) / 2,
                "sci_release_date": _iso(obs["t_obs_release"]), "sci_stop_time": _iso(obs["t_max"]),
                "sci_preview_name": name, "sci_obs_type": "IMAGE", "sci_aec": "S", "scp_scan_type": None,
                "sci_hlsp": None, "sci_status": "PUBLIC" if obs["dataRights"] == "PUBLIC" else "PROPRIETARY",
                "_obsid": obs["obsid"], "_name_filter": None,
            })
        return rows

    # -- products --------------------------------------------------------------------------------

    def products(self, dataset_ids: list[str]) -> list[dict[str, Any]]:
        """Product rows of the named datasets (unknown names list nothing), in request order."""
        by_name = {row[DATASET_COLUMN[self.mission]].upper(): row for row in self.datasets()}
        out: list[dict[str, Any]] = []
        for wanted in dataset_ids:
            row = by_name.get(str(wanted).strip().upper())
            if row is None:
                continue
            name = row[DATASET_COLUMN[self.mission]]
            for product in self._owned(row["_obsid"]):
                filename = product["productFilename"]
                rule = row["_name_filter"]
                if rule == "!_gs-" and "_gs-" in filename or rule and rule != "!_gs-" and not filename.startswith(rule):
                    continue
                out.append(self._product(name, row, product))
        return out

    def _product(self, dataset: str, row: dict[str, Any], product: dict[str, Any]) -> dict[str, Any]:
        filename = product["productFilename"]
        stem = filename.rsplit(".", 1)[0]
        suffix = stem.rsplit("_", 1)[-1]
        if self.mission == "hst":
            file_suffix = suffix.upper()
            category = _HST_CATEGORY.get(file_suffix, "OTHER")
            instrument, filters = row["sci_instrume"], row["sci_spec_1234"]
            secondary = "ASN" if file_suffix == "ASN" else "CAL"
        else:
            file_suffix = f"_{suffix}"
            category = "UNCALIBRATED" if product["calib_level"] == 1 else "CALIBRATED"
            instrument = row["instrume"]
            filters = ";".join(x for x in (row["filter"], row["pupil"]) if x) or None
            secondary = product["productSubGroupDescription"]
        return {
            "product_key": f"{dataset}_{filename}", "access": product["dataRights"] or "PUBLIC",
            "dataset": dataset, "instrument_name": instrument, "filters": filters, "filename": filename,
            "uri": f"{dataset}/{filename}", "authz_primary_identifier": dataset,
            "authz_secondary_identifier": secondary, "file_suffix": file_suffix, "category": category,
            "size": int(product["size"]),
            "type": "auxiliary" if product["productType"] == "AUXILIARY" else "science",
        }

    def data_uri(self, product_name: str) -> str:
        """The CAOM ``dataURI`` whose bytes ``retrieve_product?product_name=`` serves."""
        return f"mast:{_COLLECTION[self.mission]}/product/{product_name.rsplit('/', 1)[-1]}"


# ---------------------------------------------------------------------------------------------
# search


def _condition(mission: str, column: str, value: Any) -> Any:
    """A predicate for one condition: a comma-separated value is any of its parts; ``*`` is a
    wildcard; text compares case-insensitively, ignoring MAST's padding; numbers numerically."""
    kinds = {name: qual for name, _, qual, *_ in _DEFINITIONS[mission]}
    if column not in kinds or column in _NOT_QUERYABLE:
        raise QueryError(f"Unknown or non-queryable column {column!r} for mission {mission!r}")
    options = [p.strip() for p in str(value).split(",") if p.strip()] if not isinstance(value, list) \
        else [str(v).strip() for v in value]
    numeric = kinds[column] in _NUMERIC

    def match(row: dict[str, Any]) -> bool:
        cell = row.get(column)
        if cell is None:
            return False
        for option in options:
            if numeric and not any(c in option for c in "*%"):
                try:
                    if float(cell) == float(option):
                        return True
                except ValueError:
                    raise QueryError(f"{column} is numeric; {option!r} is not a number") from None
            elif fnmatch.fnmatchcase(str(cell).strip().casefold(), option.replace("%", "*").casefold()):
                return True
        return False

    return match


def search_answer(view: MissionView, params: dict[str, Any], row_cap: int) -> dict[str, Any]:
    """The ``search`` answer for ``params`` (the JSON body astroquery sends).

    At most ``row_cap`` rows are ever served, paged or not, while ``totalResults`` counts them
    all: what a client sees of a server that will not page past a limit.
    """
    mission = view.mission
    key_column = DATASET_COLUMN[mission]
    defs = {name: qual for name, _, qual, *_ in _DEFINITIONS[mission]}
    conditions = params.get("conditions") or []
    if not isinstance(conditions, list):
        raise QueryError("conditions must be a list of {column: value} objects")
    predicates = [_condition(mission, column, value)
                  for condition in conditions for column, value in dict(condition).items()]
    target = params.get("target")
    position = None
    if target:
        try:
            ra, dec = (float(x) for x in str(target[0] if isinstance(target, list) else target).split()[:2])
            radius = float(params.get("radius", 3))
        except (TypeError, ValueError):
            raise QueryError(f"target {target!r} is not 'RA DEC' in degrees") from None
        units = str(params.get("radius_units", "arcminutes")).lower()
        scale = {"arcseconds": 1 / 60, "arcsec": 1 / 60, "arcminutes": 1.0, "arcmin": 1.0,
                 "degrees": 60.0, "deg": 60.0}.get(units)
        if scale is None:
            raise QueryError(f"radius_units {units!r} is not arcseconds, arcminutes or degrees")
        position = (ra, dec, radius * scale)
    matched = []
    ra_col, dec_col = _POSITION[mission]
    for row in view.datasets():
        if not all(p(row) for p in predicates):
            continue
        if position is not None:
            separation = angular_distance_arcsec(position[0], position[1], row[ra_col], row[dec_col]) / 60.0
            if separation > position[2]:
                continue
            row = dict(row, ang_sep=separation, search_pos=f"{position[0]} {position[1]}")
        matched.append(row)
    sort_by = params.get("sort_by") or (["ang_sep", key_column] if position else [key_column])
    sort_desc = params.get("sort_desc") or [False] * len(sort_by)
    for column, desc in reversed(list(zip(sort_by, sort_desc))):
        if column not in defs:
            raise QueryError(f"cannot sort by unknown column {column!r}")
        matched.sort(key=lambda r: (r.get(column) is None, r.get(column) if r.get(column) is not None else 0),
                     reverse=bool(desc))
    try:
        limit, offset = int(params.get("limit", 5000)), int(params.get("offset", 0))
    except (TypeError, ValueError):
        raise QueryError("limit and offset must be integers") from None
    if limit < 0 or offset < 0:
        raise QueryError("limit and offset must not be negative")
    served = matched[:row_cap][offset:offset + limit]
    select = params.get("select_cols") or [n for n, _, _, _, default, _ in _DEFINITIONS[mission]
                                           if default == "yes" and n != "ang_sep"]
    select = [c for c in dict.fromkeys(c for c in select if c)]
    unknown = [c for c in select if c not in defs]
    if unknown:
        raise QueryError(f"Unknown column(s) in select_cols for mission {mission!r}: {', '.join(unknown)}")
    if key_column not in select:
        select.insert(0, key_column)
    results = []
    for row in served:
        out = {c: row.get(c) for c in select}
        prefix = row.get("search_pos") or ""
        out["search_key"] = f"{prefix}{row[key_column]}"
        if position is not None:
            out["search_pos"], out["ang_sep"] = row["search_pos"], row["ang_sep"]
        results.append(out)
    info = [{"name": c, "type": _INFO_TYPE[defs[c]]} for c in select] + [{"name": "search_key", "type": "VARCHAR"}]
    echo = {"target": target or [], "radius": params.get("radius", 3),
            "radius_units": params.get("radius_units", "arcminutes"), "offset": offset, "limit": limit,
            "sort_by": list(sort_by), "sort_desc": list(sort_desc), "skip_count": bool(params.get("skip_count", False)),
            "select_cols": select, "search_key": params.get("search_key") or [],
            "user_fields": params.get("user_fields") or [], "conditions": conditions}
    return {"messages": [], "info": info, "search_params": echo, "totalResults": len(matched),
            "results": results}
