"""Column configuration and response field lists, mirroring MAST's.

Field names, order and type names follow astroquery's recorded fixtures (``caom.json``,
``advSearch.json``, ``advSearchPos.json``, ``products.json``, ``columnsconfig.json``) plus the
columns live MAST also returns.  Only the type names astroquery understands are used (protocol
spec 5.6): ``string``, ``float``, ``int``, ``boolean``.
"""

from __future__ import annotations

__all__ = [
    "CONE_CONFIG", "column_config", "OBS_FIELDS_FILTERED", "OBS_FIELDS_POSITION", "OBS_FIELDS_CONE",
    "PRODUCT_FIELDS", "SEPARATORS", "CONTINUOUS",
]

# (name, text, datatype, separator, description, unit)
_OBS_COLUMNS = [
    ("intentType", "Observation Type", "char", None, "Whether observation is for science or calibration.", None),
    ("obs_collection", "Mission", "char", ";", "Collection", None),
    ("provenance_name", "Provenance Name", "char", None, "Provenance name, or source of data", None),
    ("instrument_name", "Instrument", "char", None, "Instrument Name", None),
    ("project", "Project", "char", ";", "Processing project", None),
    ("filters", "Filters", "char", ";", "Instrument filters", None),
    ("wavelength_region", "Waveband", "char", ";", "Energy Band", None),
    ("target_name", "Target Name", "char", None, "Target Name", None),
    ("target_classification", "Target Classification", "char", ";", "Type of target", None),
    ("obs_id", "Observation ID", "char", None, "Observation identifier, given by mission", None),
    ("s_ra", "RA", "double", None, "Observation Right Ascension", "deg"),
    ("s_dec", "Dec", "double", None, "Observation Declination", "deg"),
    ("obs_title", "Observation Title", "char", None, "Observation description from proposal", None),
    ("proposal_pi", "Principal Investigator", "char", None, "Principal investigator's last name", None),
    ("dataproduct_type", "Product Type", "char", None, "Type of product", None),
    ("calib_level", "Calibration Level", "int", None, "Calibration level", None),
    ("t_min", "Start Time", "double", None, "Observation start datetime", "MJD"),
    ("t_max", "End Time", "double", None, "Observation end datetime", "MJD"),
    ("t_obs_release", "Release Date", "double", None, "Dataset release date", "MJD"),
    ("t_exptime", "Exposure Length", "double", None, "Exposure time", "sec"),
    ("em_min", "Min. Wavelength", "double", None, "Minimum wavelength", "nm"),
    ("em_max", "Max. Wavelength", "double", None, "Maximum wavelength", "nm"),
    ("objID", "Object ID", "long", None, "Plane ID of observation at given calibration level", None),
    ("s_region", None, "char", None, "ICRS Shape STC-S", None),
    ("jpegURL", None, "char", None, "Preview Image URL", None),
    ("distance", 'Distance (")', "float", None, "Angular separation between searched coordinates and center of obsevation", None),
    ("obsid", "Product Group ID", "long", None, "Database identifier for obs_id", None),
    ("proposal_id", "Proposal ID", "char", None, "Proposal ID", None),
    ("proposal_type", "Proposal Type", "char", None, "Type of telescope proposal", None),
    ("sequence_number", "Sequence Number", "int", None, "Sequence number, e.g. Kepler quarter or TESS sector", None),
]

# Columns the fixture marks remove: true (hidden from get_metadata, still valid filter names).
_REMOVED = [
    ("obs_creator_name", "Creator", None), ("obs_publisher_id", "Observation Publisher", None),
    ("access_estsize", None, None), ("s_fov", "FOV", 0), ("s_resolution", "S Resolution", 0),
    ("obsStartTime", "Obs Start Time", None), ("obsStopTime", "Obs End Time", None),
    ("t_resolution", None, 0), ("em_res_power", None, None), ("o_ucd", None, None),
    ("target_class", "Target Class", None), ("obs_creation_date", "Observation Creation Date", None),
    ("publisher_id", "Publisher", None), ("bib_reference", "Bib. Reference", None),
    ("data_rights", None, None), ("obs_release_date", "Release Date", None), ("s_ucd", None, None),
    ("em_resolution", None, -9999), ("objID1", "Object ID1", None),
]


def _build_cone_config() -> dict:
    config: dict = {"_selected_": {"text": "selected", "add": True, "type": "boolean", "hidden": True}}
    for order, (name, text, dtype, sep, desc, unit) in enumerate(_OBS_COLUMNS, start=1):
        entry: dict = {}
        if text:
            entry["text"] = text
        entry["order"] = order
        if sep:
            entry["separator"] = sep
        entry.update({"vot.datatype": dtype, "vot.ID": name, "vot.name": name, "vot.description": desc})
        if unit:
            entry["vot.unit"] = unit
        config[name] = entry
    config["dataRights"] = {"text": "Data Rights", "hidden": True, "type": "string",
                            "vot.description": "Data access rights"}
    config["mtFlag"] = {"text": "Moving Target", "type": "boolean",
                        "vot.description": "Moving target flag"}
    config["srcDen"] = {"text": "Associated Catalogs", "vot.datatype": "float",
                        "vot.description": "Number of associated catalogs"}
    config["dataURL"] = {"text": "Data URL", "vot.datatype": "string", "vot.description": "Data URL"}
    for name, text, ignore in _REMOVED:
        entry = {"remove": True}
        if text:
            entry["text"] = text
        if ignore is not None:
            entry["ignoreValue"] = ignore
        config[name] = entry
    return config


#: The ``Mast.Caom.Cone`` column configuration (a bare dict, as MAST answers it).
CONE_CONFIG: dict = _build_cone_config()

#: Columns that hold ``;``-separated lists.
SEPARATORS: dict[str, str] = {
    name.lower(): entry["separator"] for name, entry in CONE_CONFIG.items() if "separator" in entry
}

#: Columns filtered as [min, max] ranges (lower-cased names).
CONTINUOUS = frozenset(
    name.lower() for name, entry in CONE_CONFIG.items()
    if entry.get("vot.datatype", entry.get("type")) in ("double", "float", "numeric")
)

#: All accepted filter names, lower-cased -> canonical spelling.
FILTER_NAMES: dict[str, str] = {name.lower(): name for name in CONE_CONFIG if name != "_selected_"}


def column_config(col_config_id: str) -> dict:
    """The answer to ``columnsconfig`` for one ``colConfigId``.

    The Cone config for the Cone/Filtered ids (the same dict, never a partial one: astroquery
    validates criteria against whatever non-empty config it holds) and ``{}`` for anything else.
    """
    if col_config_id.strip() in ("Mast.Caom.Cone", "Mast.Caom.Filtered", "Mast.Caom.Filtered.Position"):
        return CONE_CONFIG
    return {}


_EXTRAS = [("provenance_name", "string"), ("proposal_type", "string"),
           ("sequence_number", "int"), ("dataRights", "string")]

#: ``Mast.Caom.Filtered`` fields (advSearch.json order) plus live extras.
OBS_FIELDS_FILTERED = [
    ("dataproduct_type", "string"), ("calib_level", "int"), ("obs_collection", "string"),
    ("obs_id", "string"), ("target_name", "string"), ("s_ra", "float"), ("s_dec", "float"),
    ("t_min", "float"), ("t_max", "float"), ("t_exptime", "float"), ("wavelength_region", "string"),
    ("filters", "string"), ("em_min", "float"), ("em_max", "float"),
    ("target_classification", "string"), ("obs_title", "string"), ("t_obs_release", "float"),
    ("instrument_name", "string"), ("proposal_pi", "string"), ("proposal_id", "string"),
    ("project", "string"), ("s_region", "string"), ("jpegURL", "string"), ("dataURL", "string"),
    ("obsid", "string"), ("objID", "string"),
] + _EXTRAS

#: ``Mast.Caom.Filtered.Position`` fields (advSearchPos.json order) plus live extras.
OBS_FIELDS_POSITION = OBS_FIELDS_FILTERED[:26] + [("objID1", "string"), ("distance", "float")] + _EXTRAS

#: ``Mast.Caom.Cone`` fields (caom.json order) plus live extras.
OBS_FIELDS_CONE = [
    ("dataproduct_type", "string"), ("obs_collection", "string"), ("instrument_name", "string"),
    ("project", "string"), ("filters", "string"), ("wavelength_region", "string"),
    ("target_name", "string"), ("target_classification", "string"), ("obs_id", "string"),
    ("s_ra", "float"), ("s_dec", "float"), ("proposal_id", "string"), ("proposal_pi", "string"),
    ("calib_level", "int"), ("t_min", "float"), ("t_max", "float"), ("t_exptime", "float"),
    ("em_min", "float"), ("em_max", "float"), ("obs_title", "string"), ("t_obs_release", "float"),
    ("s_region", "string"), ("jpegURL", "string"), ("dataURL", "string"), ("obsid", "string"),
    ("objID", "string"), ("distance", "float"),
] + _EXTRAS + [("_selected_", "boolean")]

#: ``Mast.Caom.Products`` fields (products.json order) plus live extras.
PRODUCT_FIELDS = [
    ("obsID", "string"), ("obs_collection", "string"), ("dataproduct_type", "string"),
    ("obs_id", "string"), ("description", "string"), ("type", "string"), ("dataURI", "string"),
    ("productType", "string"), ("productGroupDescription", "string"),
    ("productSubGroupDescription", "string"), ("productDocumentationURL", "string"),
    ("project", "string"), ("prvversion", "string"), ("productFilename", "string"),
    ("size", "int"), ("parent_obsid", "string"), ("dataRights", "string"), ("calib_level", "int"),
    ("proposal_id", "string"), ("_selected_", "boolean"),
]
