"""``mastpipe init``: a starting recipe, with comments, from a few choices.

:func:`starting_recipe` is a pure function: options in, YAML text out. The text is a complete
recipe that ``mastpipe validate`` accepts, annotated so that a newcomer can read what each
section does and edit it (the text is written by :mod:`mastpipe.recipe.starter_text`). Options are checked first and a bad one raises
:class:`~mastpipe.errors.UsageError` (exit code 2) saying which option and how to fix it.

Product kinds (``uncal``, ``cal``, ``i2d``, ``flt``, ``lc`` ...) are the last part of MAST's file
names; each becomes a ``filter.endswith`` suffix (``_cal.fits``) and a
``filter.columns.productSubGroupDescription`` value (``CAL``), so both the name and MAST's own
classification must agree.

Examples
--------
>>> text = starting_recipe(collection="JWST", programs=["1073"], instruments=["NIRCam"],
...                        filters=["F277W"], products=["uncal"])
>>> "proposal_id: \\"1073\\"" in text and "- _uncal.fits" in text
True
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from mastpipe.errors import RecipeError, UsageError, literal
from mastpipe.recipe.starter_text import MISSION_COLUMNS, render, render_mission, slug

__all__ = ["PRODUCT_KINDS", "MODES", "DEFAULT_SCHEMA_PATH", "Kind", "ProductKind", "starting_recipe", "default_name",
           "schema_path_for", "write_new_recipe"]

#: Where recipes in a repository's ``pipelines/`` find the schema committed in ``schemas/``.
DEFAULT_SCHEMA_PATH = "../schemas/recipe.schema.json"
MODES = ("download", "curl", "manifest")


class ProductKind(NamedTuple):
    """A product kind: the file name's suffix, MAST's productSubGroupDescription and what it is."""

    suffix: str
    subgroup: str
    what: str


Kind = ProductKind  # the old name


def _kinds(*rows: tuple[str, str, str]) -> dict[str, ProductKind]:
    return {kind: ProductKind(f"_{kind}{extension}", kind.upper(), what) for kind, extension, what in rows}


#: Product kinds per collection. Collections not listed take any kind as ``_<kind>.fits``.
PRODUCT_KINDS: dict[str, dict[str, ProductKind]] = {
    "JWST": _kinds(
        ("uncal", ".fits", "raw ramps (level 1b)"),
        ("rate", ".fits", "count-rate images (level 2a)"),
        ("rateints", ".fits", "count rates per integration (level 2a)"),
        ("cal", ".fits", "calibrated exposures (level 2b)"),
        ("calints", ".fits", "calibrated integrations (level 2b)"),
        ("crf", ".fits", "outlier-flagged exposures (level 3)"),
        ("i2d", ".fits", "resampled (drizzled) mosaics (level 3)"),
        ("s2d", ".fits", "resampled 2-D spectra"),
        ("s3d", ".fits", "IFU cubes (level 3)"),
        ("x1d", ".fits", "extracted 1-D spectra"),
        ("x1dints", ".fits", "extracted spectra per integration"),
        ("segm", ".fits", "segmentation maps (level 3)"),
        ("cat", ".ecsv", "source catalogues (level 3)"),
        ("asn", ".json", "association files"),
    ),
    "HST": _kinds(
        ("raw", ".fits", "raw exposures"),
        ("flt", ".fits", "flat-fielded exposures"),
        ("flc", ".fits", "flat-fielded, CTE-corrected exposures"),
        ("crj", ".fits", "cosmic-ray rejected exposures"),
        ("drz", ".fits", "drizzled images"),
        ("drc", ".fits", "drizzled, CTE-corrected images"),
        ("x1d", ".fits", "extracted 1-D spectra"),
        ("asn", ".fits", "association tables"),
        ("spt", ".fits", "support files"),
    ),
    "TESS": _kinds(
        ("lc", ".fits", "light curves"),
        ("tp", ".fits", "target pixel files"),
        ("dvt", ".fits", "data-validation time series"),
    ),
}

#: Canonical spelling of well-known collections (MAST matches case-insensitively anyway).
_COLLECTIONS = {c.upper(): c for c in ("JWST", "HST", "TESS", "Kepler", "K2", "GALEX", "PS1", "SWIFT",
                                        "IUE", "FUSE", "HLSP", "SPITZER_SHA")}

#: Instruments whose observations MAST splits into modes (NIRCAM/IMAGE, WFC3/UVIS ...): a bare
#: name becomes a wildcard so that every mode matches.
_MODAL_INSTRUMENTS = {
    "JWST": {"NIRCAM", "NIRSPEC", "NIRISS", "MIRI", "FGS"},
    "HST": {"WFC3", "ACS", "STIS", "COS", "NICMOS", "FOS", "GHRS"},
}

_VALUE = re.compile(r"^[A-Za-z0-9*][A-Za-z0-9 _./+;:*-]{0,63}$")
_PROGRAM = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,19}$")
_COLLECTION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")
_KIND = re.compile(r"^[a-z0-9]{1,20}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def _split(values: Iterable[str]) -> list[str]:
    """Repeatable options also take comma-separated lists: ``--program 1073,1345``."""
    out: list[str] = []
    for value in values:
        out += [part.strip() for part in str(value).split(",")]
    return out


def _check(parameter: str, values: list[str], pattern: re.Pattern[str], example: str) -> list[str]:
    seen: list[str] = []
    for value in values:
        if not pattern.match(value) or value != value.strip():
            shown = "an empty value" if not value else literal(repr(value))
            raise UsageError(f"{{{parameter}}}: {shown} is not a valid value", hint=example, parameters=[parameter])
        if value not in seen:
            seen.append(value)
    return seen


def _collection(value: str) -> str:
    _check("collection", [value], _COLLECTION, "give a MAST collection such as JWST, HST or TESS")
    return _COLLECTIONS.get(value.upper(), value)


def _instrument(collection: str, value: str) -> str:
    if value.upper() in _MODAL_INSTRUMENTS.get(collection, ()):
        return value.upper() + "*"
    return value


def _kind(collection: str, value: str) -> ProductKind:
    kind = value.lower()
    if kind.startswith("_"):
        kind = kind[1:]
    for extension in (".fits", ".ecsv", ".json"):
        kind = kind.removesuffix(extension)
    if not _KIND.match(kind):
        raise UsageError(f"{{products}}: {literal(repr(value))} is not a product kind",
                         hint="give the last part of the file names, e.g. uncal, cal, i2d (JWST), flt, drz (HST), lc (TESS)",
                         parameters=["products"])
    known = PRODUCT_KINDS.get(collection)
    if known is None:
        return ProductKind(f"_{kind}.fits", kind.upper(), "products")
    if kind not in known:
        close = difflib.get_close_matches(kind, list(known), n=1, cutoff=0.6)
        did_you_mean = f"did you mean {close[0]!r}? " if close else ""
        raise UsageError(f"{{products}}: {literal(repr(value))} is not a {literal(collection)} product kind",
                         hint=literal(f"{did_you_mean}{collection} kinds: {', '.join(known)}"), parameters=["products"])
    return known[kind]


def default_name(collection: str, programs: Iterable[str] = (), instruments: Iterable[str] = (),
                 filters: Iterable[str] = (), products: Iterable[str] = ()) -> str:
    """A recipe name from the choices, e.g. ``jwst-1073-nircam-f277w-uncal``."""
    coll = _collection(collection)
    instruments_ = [i.split("/")[0].replace("*", "") for i in _split(instruments)]
    products_ = [p.lower().lstrip("_").split(".")[0] for p in _split(products)]
    return slug([coll, *_split(programs), *instruments_, *_split(filters), *products_]) or "recipe"


def starting_recipe(*, collection: str | None = None, programs: Iterable[str] = (), instruments: Iterable[str] = (),
                    filters: Iterable[str] = (), products: Iterable[str] = (), mode: str = "download",
                    name: str | None = None, schema_path: str = DEFAULT_SCHEMA_PATH, mission: str | None = None) -> str:
    """The text of a commented starting recipe that ``mastpipe validate`` accepts.

    Parameters
    ----------
    collection : str
        MAST collection (``obs_collection``), e.g. ``JWST``, ``HST``, ``TESS``.
    programs : iterable of str
        Program / proposal ids (``proposal_id``); several are "any of". Comma-separated lists
        are split.
    instruments : iterable of str
        Instrument names (``instrument_name``). A bare modal instrument (``NIRCam``, ``WFC3``)
        becomes a wildcard (``NIRCAM*``) matching all its modes.
    filters : iterable of str
        Optical elements (``filters``), e.g. ``F277W``.
    products : iterable of str
        Product kinds (``uncal``, ``cal``, ``i2d``, ``flt``, ``lc``); see :data:`PRODUCT_KINDS`.
    mode : {"download", "curl", "manifest"}
        What ``retrieve`` does.
    name : str, optional
        The recipe's name (default: made from the other choices, see :func:`default_name`).
    schema_path : str
        Path or URL of ``recipe.schema.json`` for the ``# yaml-language-server: $schema=`` line,
        relative to the recipe file.
    mission : {"jwst", "hst"}, optional
        Search this mission's own catalogue (MAST's mission search API) instead of CAOM: the
        choices become ``conditions`` over its columns (``program``, ``instrume``, ``filter`` for
        JWST; ``sci_pep_id``, ``sci_instrume``, ``sci_spec_1234`` for HST) and the product kinds
        ``file_suffix`` values. ``collection`` is then the mission's, and may be left out.

    Returns
    -------
    str
        The recipe, ending with a newline.

    Raises
    ------
    UsageError
        When an option's value cannot make a valid recipe; the message names the option.
    """
    if mission is not None:
        mission = mission.lower()
        if mission not in MISSION_COLUMNS:
            raise UsageError(f"{{mission}}: {literal(repr(mission))} is not a mission mastpipe searches",
                             hint="give " + " or ".join(MISSION_COLUMNS), parameters=["mission"])
        if collection is not None and collection.upper() != mission.upper():
            raise UsageError(f"{{collection}} {literal(collection)} and {{mission}} {literal(mission)} disagree",
                             hint="give only {mission}", parameters=["collection", "mission"])
        collection = mission.upper()
    if collection is None:
        raise UsageError("give {collection} (a CAOM search) or {mission} (a mission search)",
                         hint="e.g. {collection} JWST, or {mission} jwst", parameters=["collection", "mission"])
    coll = _collection(collection)
    programs_ = _check("programs", _split(programs), _PROGRAM,
                       "give a program (proposal) id such as 1073, or several: 1073,1345")
    instruments_ = [_instrument(coll, v) for v in _check(
        "instruments", _split(instruments), _VALUE, "give an instrument name such as NIRCAM, NIRCAM/IMAGE or WFC3/UVIS")]
    filters_ = _check("filters", _split(filters), _VALUE, "give optical elements such as F277W or F090W,F150W")
    kinds = [_kind(coll, v) for v in _split(products)]
    kinds = list(dict.fromkeys(kinds))
    if mode not in MODES:
        raise UsageError(f"{{mode}}: {literal(repr(mode))} is not one of {', '.join(MODES)}",
                         hint="download fetches the files, curl writes a script, manifest only lists them",
                         parameters=["mode"])
    if name is None:
        name = default_name(coll, programs_, instruments_, filters_, [k.suffix for k in kinds])
    elif not _NAME.match(name):
        raise UsageError(f"{{name}}: {literal(repr(name))} is not a valid recipe name",
                         hint="use 1 to 100 letters, digits, '.', '_' or '-', starting with a letter or digit",
                         parameters=["name"])
    if not schema_path or any(c in schema_path for c in "\n\r"):
        raise UsageError("the schema path must be one non-empty line")

    if mission is not None:
        instruments_ = [i.split("/")[0].rstrip("*").upper() for i in instruments_]
        text = render_mission(mission, programs_, list(dict.fromkeys(instruments_)), filters_, kinds, mode, name,
                               schema_path)
    else:
        text = render(coll, programs_, instruments_, filters_, kinds, mode, name, schema_path)
    _self_check(text)
    return text


def _self_check(text: str) -> None:
    """Refuse to hand out a recipe ``mastpipe validate`` would reject (e.g. a secret-looking value)."""
    from mastpipe.recipe.models import parse_recipe
    from mastpipe.recipe.yamlload import load_yaml_text

    try:
        parse_recipe(load_yaml_text(text, "<init>"), environ={})
    except RecipeError as error:
        first = error.problems[0]
        raise UsageError(f"these options do not make a valid recipe: {first.field}: {first.message}",
                         hint=first.hint) from None


def schema_path_for(output: str | os.PathLike[str] | None, start: str | os.PathLike[str] = ".") -> str:
    """The ``$schema`` path for a recipe written to ``output``.

    The nearest ``schemas/recipe.schema.json`` in the recipe's directory or above it, relative to
    the recipe; :data:`DEFAULT_SCHEMA_PATH` (the repository layout ``pipelines/`` +
    ``schemas/``) when there is none or the recipe goes to standard output.
    """
    if output is None:
        return DEFAULT_SCHEMA_PATH
    folder = (Path(start) / Path(output)).resolve().parent
    for directory in (folder, *folder.parents):
        candidate = directory / "schemas" / "recipe.schema.json"
        if candidate.is_file():
            return Path(os.path.relpath(candidate, folder)).as_posix()
    return DEFAULT_SCHEMA_PATH


def write_new_recipe(path: str | os.PathLike[str], text: str, *, force: bool = False) -> Path:
    """Write ``text`` to ``path``, creating its directory; refuse to overwrite unless ``force``.

    Raises
    ------
    UsageError
        When the file exists (and ``force`` is false), or is a directory, or cannot be written.
    """
    target = Path(path)
    if target.is_dir():
        raise UsageError(f"{{path}}: {literal(repr(str(target)))} is a directory",
                         hint="give a file name, e.g. pipelines/my-recipe.yaml", parameters=["path"])
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "w" if force else "x", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
    except FileExistsError:
        raise UsageError(f"{literal(target)} already exists; not overwriting it",
                         hint="pass {force} to replace it, or choose another {path}",
                         parameters={"force": "force=True", "path": "path"}) from None
    except OSError as error:
        raise UsageError(f"cannot write {target}: {error.strerror or error}") from None
    return target
