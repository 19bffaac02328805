"""The text of a starting recipe (``mastpipe init``): YAML with aligned comments, for a CAOM
search (:func:`render`) or a mission search (:func:`render_mission`), from choices that
:func:`mastpipe.recipe.starter.starting_recipe` has already checked."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mastpipe.recipe.starter import ProductKind

__all__ = ["MISSION_COLUMNS", "render", "render_mission", "slug"]


def _plain_ok(value: str) -> bool:
    """True when ``value`` reads back as the same string, unquoted, in block and flow context."""
    import yaml

    if not value or value != value.strip():
        return False
    try:
        return bool(yaml.safe_load(f"k: {value}") == {"k": value} and yaml.safe_load(f"[{value}]") == [value])
    except yaml.YAMLError:
        return False


def _scalar(value: str, *, quote: bool = False) -> str:
    """A YAML scalar for ``value``: plain when that reads back unchanged, else double-quoted."""
    return value if not quote and _plain_ok(value) else json.dumps(value)


def _one_or_list(values: list[str], *, quote: bool = False) -> str:
    if len(values) == 1:
        return _scalar(values[0], quote=quote)
    return "[" + ", ".join(_scalar(v, quote=quote) for v in values) + "]"


def slug(parts: Iterable[str]) -> str:
    text = "-".join(p for p in parts if p).lower()
    text = re.sub(r"[^a-z0-9._-]+", "-", text)
    text = re.sub(r"-{2,}", "-", text).strip("-._")
    return text[:100].rstrip("-._")


def _describe(coll: str, programs: list[str], instruments: list[str], filters: list[str], kinds: list[ProductKind]) -> str:
    what = ", ".join(k.what for k in kinds) if kinds else "all products"
    words = [f"{what[:1].upper()}{what[1:]} of {coll} observations"]
    if programs:
        words.append(("in program " if len(programs) == 1 else "in programs ") + " or ".join(programs))
    if instruments:
        words.append("with " + " or ".join(instruments))
    if filters:
        words.append("through " + " or ".join(filters))
    return " ".join(words) + "."


def _command(coll: str, programs: list[str], instruments: list[str], filters: list[str], kinds: list[ProductKind],
             mode: str, name: str) -> str:
    import shlex

    parts = ["mastpipe init", f"--name {shlex.quote(name)}", f"--collection {shlex.quote(coll)}"]
    parts += [f"--program {shlex.quote(p)}" for p in programs]
    parts += [f"--instrument {shlex.quote(i)}" for i in instruments]
    parts += [f"--filters {shlex.quote(f)}" for f in filters]
    parts += [f"--product {k.suffix[1:].rsplit('.', 1)[0]}" for k in kinds]
    if mode != "download":
        parts.append(f"--mode {mode}")
    return " ".join(parts)


def _line(code: str, comment: str = "") -> str:
    """``code`` with ``# comment`` aligned at a fixed column, as in the example recipes."""
    if not comment:
        return code
    return f"{code.ljust(_COMMENT_COLUMN - 1)} # {comment}" if len(code) < _COMMENT_COLUMN - 1 else f"{code}  # {comment}"


_COMMENT_COLUMN = 36
#: What each retrieve mode does, as the recipe's comment says it.
_MODE_NOTES = {
    "download": "mastpipe fetches, verifies and resumes the files",
    "curl": "a bash script of curl commands, to run later",
    "manifest": "only list the files: URL, path and size",
}


def _opening(schema_path: str, description: str, command: str) -> list[str]:
    """The comment a starting recipe opens with: its schema, what it selects, how it was made."""
    import textwrap

    lines = [f"# yaml-language-server: $schema={schema_path}", "#"]
    lines += ["# " + line for line in textwrap.wrap(description, 96)]
    return lines + ["#", "# A starting recipe, written by", f"#   {command}"]


def _identity(name: str, description: str) -> list[str]:
    return ["version: 1", _line(f"name: {_scalar(name)}", "names the state directory .mastpipe/<name>/"),
            f"description: {_scalar(description)}"]


def _retrieve(mode: str, name: str, layout_note: str) -> list[str]:
    """The ``retrieve`` section: the mode, a destination named after the recipe, astroquery's layout."""
    return [
        "",
        "# retrieve: what happens to the products kept.",
        "retrieve:",
        _line(f"  mode: {mode}", _MODE_NOTES[mode]),
        _line(f"  destination: {_scalar('data/' + name)}", "relative to this file"),
        _line("  layout: astroquery", layout_note),
    ]


def render(coll: str, programs: list[str], instruments: list[str], filters: list[str], kinds: list[ProductKind],
            mode: str, name: str, schema_path: str) -> str:
    search = slug([coll]).replace(".", "-") or "main"
    description = _describe(coll, programs, instruments, filters, kinds)
    command = _command(coll, programs, instruments, filters, kinds, mode, name)
    lines = _opening(schema_path, description, command) + [
        "# Edit it freely. Check it with `mastpipe validate FILE`, try it offline with",
        "# `mastpipe run FILE --sandbox`, and run it against MAST with `mastpipe run FILE`",
        "# (MASTPIPE_MAST_URL or --mast-url choose another server; MAST_API_TOKEN in the environment",
        "# gives exclusive-access data). Every field is described in docs/recipe.md.",
        *_identity(name, description),
        "",
        "# query: named searches for observations. Criteria are ANDed, a list means \"any of\" and",
        "# * is a wildcard; the names are MAST's observation fields (obs_collection, proposal_id ...).",
        "query:",
        f"  {search}:",
        "    criteria:",
        _line(f"      obs_collection: {_scalar(coll)}", "naming the mission makes MAST's search much faster"),
    ]
    if programs:
        lines.append(_line(f"      proposal_id: {_one_or_list(programs, quote=True)}", "quoted: program ids are text in MAST"))
    if instruments:
        note = "* is a wildcard: every mode of the instrument" if any("*" in i for i in instruments) else ""
        lines.append(_line(f"      instrument_name: {_one_or_list(instruments)}", note))
    if filters:
        lines.append(_line(f"      filters: {_one_or_list(filters)}", "observations whose filters include this"))
    if not (programs or instruments or filters):
        lines.append(_line("      # proposal_id: \"1073\"", "narrow the search: a whole collection is a lot"))
    lines += [
        _line("    # position:", "optionally, only a cone on the sky"),
        _line("    #   object: M1", "or coordinates: \"83.633 22.0145\""),
        "    #   radius: 5 arcmin",
        "",
        "# products: product lists are asked for a few observations at a time (MAST times out otherwise).",
        "products:",
        "  batch_size: 5",
        "",
        "# unique: the same file is often listed under several observations; it is fetched once.",
        "unique:",
        "  key: productFilename",
        "",
        "# filter: which products to keep. Every rule given must hold; within a list, any value.",
        "filter:",
    ]
    if kinds:
        lines.append(_line("  endswith:", "the file name ends with one of these"))
        lines += [_line(f"    - {_scalar(k.suffix)}", k.what) for k in kinds]
    else:
        lines.append(_line("  # endswith: [_cal.fits]", "only some kinds (mastpipe init --product cal)"))
    lines.append(_line("  guide_stars: omit", "drop guide-star files (*_gs-*)"))
    if kinds:
        lines += [
            "  columns:",
            _line(f"    productSubGroupDescription: {_one_or_list([k.subgroup for k in kinds])}",
                  "and MAST's own name for the kind"),
        ]
    else:
        lines.append("  # columns: {productType: SCIENCE, calib_level: [2, 3]}")
    lines += _retrieve(mode, name, "mastDownload/<collection>/<obs_id>/<file>")
    if mode == "curl":
        lines.append(_line("  # script: download.sh", "default: <destination>/mastpipe-download.sh"))
    lines += [
        "",
        "# state: checkpoints live in .mastpipe/<name>/ beside this file. On a schedule, ask MAST",
        "# again once the query results are older than a day:",
        "# state:",
        "#   query_max_age: 1d",
        "",
        "# expect: what every run must find, checked after each stage. A run that breaks it stops",
        "# before downloading anything, with exit code 5 and a line in its report, so a scheduled",
        "# job goes red instead of quietly finding nothing (a typo, a withdrawn program).",
        "expect:",
        _line("  observations: {min: 1}", "the default: a search that matches nothing fails"),
        _line("  files: {min: 1}", "the default: a filter that keeps nothing fails"),
        _line("  bytes: {max: 1 TB}", "stop before filling a disk; raise it if you mean it"),
    ]
    return "\n".join(lines) + "\n"


#: The columns ``init --mission`` writes conditions on: program, instrument, optical element.
MISSION_COLUMNS = {"jwst": ("program", "instrume", "filter"), "hst": ("sci_pep_id", "sci_instrume", "sci_spec_1234")}


def render_mission(mission: str, programs: list[str], instruments: list[str], filters: list[str], kinds: list[ProductKind],
                    mode: str, name: str, schema_path: str) -> str:
    """The text of a starting mission-search recipe (see :func:`~mastpipe.recipe.starter.starting_recipe`)."""
    program_col, instrument_col, filter_col = MISSION_COLUMNS[mission]
    coll = mission.upper()
    description = _describe(coll, programs, instruments, filters, kinds).replace(" observations", " datasets", 1)
    command = _command(coll, programs, instruments, filters, kinds, mode, name).replace(
        f"--collection {coll}", f"--mission {mission}")
    numbers = [p for p in programs if p.isdigit()]
    lines = _opening(schema_path, description, command) + [
        f"# It searches MAST's {coll} mission catalogue (astroquery's MastMissions) rather than CAOM: the",
        f"# columns of {coll}'s own headers, product lists with file_suffix and category, and the",
        "# mission's download service. Check it with `mastpipe validate --online FILE` (which also checks",
        "# the column names against MAST's), try it with `mastpipe run FILE --sandbox`. Every field is",
        "# described in docs/recipe.md.",
        *_identity(name, description),
        "",
        f"# query: named searches of {coll}'s datasets. Conditions are ANDed, a list means \"any of\" and",
        "# * is a wildcard; the names are the mission's columns (`mastpipe validate --online` knows them).",
        "query:",
        f"  {mission}:",
        _line(f"    mission: {mission}", "MAST's mission search API, not CAOM"),
        "    conditions:",
    ]
    if programs:
        value = (numbers[0] if len(numbers) == 1 == len(programs) else "[" + ", ".join(numbers) + "]") \
            if len(numbers) == len(programs) else _one_or_list(programs, quote=True)
        lines.append(_line(f"      {program_col}: {value}", "the program (proposal) number"))
    if instruments:
        lines.append(_line(f"      {instrument_col}: {_one_or_list(instruments)}", "the instrument"))
    if filters:
        lines.append(_line(f"      {filter_col}: {_one_or_list(filters)}", "the optical element"))
    if mission == "jwst":
        lines.append(_line("      # exp_type: NRC_IMAGE", "JWST's exposure type, e.g. MIR_LRS-FIXEDSLIT"))
    else:
        lines.append(_line("      # sci_aec: S", "science exposures only (C: calibration)"))
    if not (programs or instruments or filters):
        lines.append(_line(f"      {program_col}: {'1073' if mission == 'jwst' else '12345'}",
                           "narrow the search: a whole mission is a lot"))
    suffixes = [k.suffix.split(".")[0] if mission == "jwst" else k.subgroup for k in kinds]
    lines += [
        _line("    # position:", "optionally, only a cone on the sky (coordinates, not a name)"),
        "    #   coordinates: \"83.633 22.0145\"",
        "    #   radius: 5 arcmin",
        "",
        "# products: product lists of many datasets per request (they are cheap in the mission API).",
        "products:",
        "  batch_size: 50",
        "",
        "# filter: which products to keep. Every rule given must hold; within a list, any value.",
        "filter:",
        _line("  guide_stars: omit", "drop guide-star files (*_gs-*)"),
        "  columns:",
    ]
    if kinds:
        lines.append(_line(f"    file_suffix: {_one_or_list(suffixes)}", ", ".join(k.what for k in kinds)))
    else:
        lines.append(_line("    category: CALIBRATED", "or file_suffix: " + ("_cal" if mission == "jwst" else "FLT")))
    lines += _retrieve(mode, name, f"mastDownload/{mission}/<dataset>/<file>, as MastMissions writes it")
    return "\n".join(lines) + "\n"
