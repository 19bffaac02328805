"""Checks of the values a recipe's criteria, mission conditions, filter columns and layout take, as located problems.

Each check returns ``(where, message, hint)`` (or ``(message, hint)``) rather than raising, so the
recipe loader can place the problem on the key or on the value in the YAML it came from. Used
by the sections' validators (:mod:`mastpipe.recipe.sections`) and by the loader
(:mod:`mastpipe.recipe.models`).
"""

from __future__ import annotations

import re
import string
from typing import Any

from pydantic import ValidationError

from mastpipe.recipe.base import Range
from mastpipe.recipe.fields import (BOOLEAN_FIELDS, COLUMN_NAME, CONTINUOUS_FIELDS, DATE_FIELDS, MISSION_PRODUCT_COLUMNS,
                                    OBSERVATION_FIELDS, PRODUCT_COLUMNS, numeric_problem, suggest)
from mastpipe.recipe.problems import error_message
from mastpipe.recipe.quantities import to_mjd
from mastpipe.stages.retrieve.paths import component_problem

__all__ = ["check_column", "check_condition", "check_criterion", "check_url", "layout_problem"]


def check_criterion(name: str, criterion: Any) -> tuple[Any, tuple[str, str, str | None] | None]:
    """Check one query criterion; return it (dates converted to MJD) and a problem or None.

    A problem is ``(where, message, hint)`` with ``where`` "key" when the field name is wrong and
    "value" when its value is.
    """
    if name not in OBSERVATION_FIELDS:
        return criterion, ("key", f"unknown observation field {name!r}",
                           suggest(name, OBSERVATION_FIELDS) or _FIELDS_HINT)
    shape = _shape_problem(name, criterion, "field")
    if shape:
        return criterion, shape
    if name not in BOOLEAN_FIELDS and _booleans(criterion):
        return criterion, ("value", f"{name}: {_booleans(criterion)[0][1]} is a boolean, not text", _QUOTE_HINT)
    if name in CONTINUOUS_FIELDS:
        if not isinstance(criterion, dict):
            return criterion, ("value", f"{name} is continuous: give a range {{min: ..., max: ...}}, not {criterion!r}",
                               f"e.g. {name}: {{min: 1, max: 2}}")
        if name in DATE_FIELDS:
            try:
                criterion = {k: (to_mjd(v) if k in ("min", "max") and v is not None else v)
                             for k, v in criterion.items()}
            except ValueError as exc:
                bad = next(k for k, v in criterion.items() if k in ("min", "max") and _not_a_date(v))
                return criterion, ("value", f"{bad}: {exc}", "dates are taken as UTC and compared as MJD")
    elif isinstance(criterion, dict):
        return criterion, ("value", f"{name} is not a continuous field, so it takes a value or a list, not a range",
                           "ranges work only on " + ", ".join(sorted(CONTINUOUS_FIELDS)))
    elif isinstance(criterion, list) and not criterion:
        return criterion, ("value", f"{name}: an empty list matches nothing", "remove the field or give values")
    negated = [v for v in (criterion if isinstance(criterion, list) else [criterion])
               if isinstance(v, str) and v.startswith("!")]
    if negated:
        where = "filter.columns" if name in PRODUCT_COLUMNS else "a filter rule on the products"
        return criterion, ("value", f"{name}: MAST's search has no negation: {negated[0]!r} would be sent as the "
                                    f"text {negated[0]!r} and match nothing",
                           f"list the values you want instead, or drop the criterion and exclude in {where}"
                           + (f' (filter: {{columns: {{{name}: "{negated[0]}"}}}})' if name in PRODUCT_COLUMNS else ""))
    return criterion, _range_problem(criterion)


_QUOTE_HINT = "quote it if you mean the text; YAML reads unquoted yes/no, on/off and true/false as booleans"


def _booleans(value: Any) -> list[tuple[tuple[int, ...], str]]:
    """The booleans in a criterion or column match: ``[((), "false")]`` or ``[((1,), "true"), ...]``."""
    if isinstance(value, bool):
        return [((), str(value).lower())]
    if isinstance(value, list):
        return [((i,), str(item).lower()) for i, item in enumerate(value) if isinstance(item, bool)]
    return []


def _not_a_date(value: Any) -> bool:
    try:
        to_mjd(value)
    except ValueError:
        return value is not None
    return False


_FIELDS_HINT = "criteria take MAST's CAOM observation fields, e.g. obs_collection, proposal_id, instrument_name"


def _shape_problem(name: str, value: Any, what: str) -> tuple[str, str, str | None] | None:
    """A criterion or column match is a scalar, a list of scalars or a {min, max} mapping."""
    if value is None:
        return ("value", f"{name} has no value", f"give a value or a list of values, or remove the {what}")
    if isinstance(value, list):
        for item in value:
            if item is None or isinstance(item, (list, dict)):
                shown = "nothing (null)" if item is None else ("a list" if isinstance(item, list) else "a mapping")
                return ("value", f"{name}: a list holds values (text or numbers), not {shown}",
                        f"write {name}: [a, b] for any of several values")
    return None


def _range_problem(value: Any) -> tuple[str, str, str | None] | None:
    if not isinstance(value, dict):
        return None
    try:
        Range.model_validate(value)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        if first["type"] == "extra_forbidden":
            return ("value", f"a range takes only min and max, not {where!r}", "write {min: ..., max: ...}")
        message = error_message(first)
        return ("value", f"{where}: {message}" if where else message,
                "a range is {min: ..., max: ...}; either end may be left out")
    return None


_COLUMN_KINDS = {"text": "text", "number": "a number"}


def _column_kinds(mission: bool | None) -> dict[str, str]:
    """Product columns a filter may name: CAOM's (False), the mission search's (True), either (None)."""
    if mission is None:
        return {**PRODUCT_COLUMNS, **MISSION_PRODUCT_COLUMNS}
    return MISSION_PRODUCT_COLUMNS if mission else PRODUCT_COLUMNS


def check_column(name: str, match: Any, mission: bool | None = False) -> tuple[str, str, str | None] | None:
    """Check one ``filter.columns`` entry; return ``(where, message, hint)`` or None.

    ``mission`` says whose product lists the recipe filters: CAOM's (False), a mission search's
    (True), or not known yet (None: either kind's columns pass).
    """
    kinds = _column_kinds(mission)
    if name not in kinds:
        other = _column_kinds(not mission) if mission is not None else {}
        if name in other:
            return ("key", f"{name!r} is a column of {'CAOM' if mission else 'mission search'} product lists, "
                    f"and this recipe's queries are {'a mission search' if mission else 'CAOM searches'}",
                    "its product columns are " + ", ".join(sorted(kinds)))
        return ("key", f"unknown product column {name!r}",
                suggest(name, kinds) or "columns are " + ", ".join(sorted(kinds)))
    shape = _shape_problem(name, match, "column")
    if shape:
        return shape
    if _booleans(match):  # no product column holds true/false
        return ("value", f"{name}: {_booleans(match)[0][1]} is a boolean, not {_COLUMN_KINDS[kinds[name]]}",
                _QUOTE_HINT if kinds[name] == "text" else "write a number here")
    if isinstance(match, dict) and kinds[name] != "number":
        return ("value", f"{name} is a text column, so it takes a value or a list, not a range",
                "ranges work only on numeric columns: size, calib_level")
    if isinstance(match, list) and not match:
        return ("value", f"{name}: an empty list matches nothing", "remove the column or give values")
    if kinds[name] == "number" and not isinstance(match, (dict, Range)):
        for index, item in enumerate(match if isinstance(match, list) else [match]):
            why = numeric_problem(item)
            if why:
                return (f"value:{index}" if isinstance(match, list) else "value", f"{name}: {why}",
                        "astroquery's filter_products syntax; a list keeps any of its values and drops every !value")
    return _range_problem(match)


def check_condition(name: str, value: Any) -> tuple[str, str, str | None] | None:
    """Check one mission-search condition's shape (its column is checked against the mission's
    searchable columns by :mod:`mastpipe.recipe.columns`, which needs MAST or a cached list)."""
    if not isinstance(name, str) or not re.match(COLUMN_NAME, name):
        return ("key", f"{name!r} is not a column name", "MAST's mission columns are names such as exp_type or sci_instrume")
    shape = _shape_problem(name, value, "condition")
    if shape:
        return shape
    if _booleans(value):
        return ("value", f"{name}: {_booleans(value)[0][1]} is a boolean, not text", _QUOTE_HINT)
    if isinstance(value, dict):
        return ("value", f"{name}: a condition takes a value or a list of values, not a mapping",
                f"write {name}: value, or {name}: [a, b] for any of several; `*` is a wildcard")
    if isinstance(value, list) and not value:
        return ("value", f"{name}: an empty list matches nothing", "remove the condition or give values")
    if any(isinstance(v, str) and "," in v for v in (value if isinstance(value, list) else [value])):
        return ("value", f"{name}: MAST reads a comma as 'or' in a condition's value",
                f"write {name}: [a, b] for any of several values")
    return None


_PLACEHOLDERS = ("placeholders are product columns in braces: " + ", ".join(f"{{{c}}}" for c in sorted(PRODUCT_COLUMNS))
                 + "; write {{ or }} for a literal brace")


def layout_problem(template: str) -> tuple[str, str | None] | None:
    """What is wrong with a ``retrieve.layout`` template, as ``(message, hint)``, or None.

    The template is read as the download code reads it (:meth:`string.Formatter.parse`), so
    whatever passes here also builds paths; a hint of None means the field's own description.
    """
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError:
        return _brace_problem(template), _PLACEHOLDERS
    names = []
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        written = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
        if not name:
            return "an empty placeholder {} in layout", _PLACEHOLDERS
        if conversion or spec or not name.isidentifier() and re.search(r"[.\[]", name):
            plain = re.split(r"[.\[]", name)[0]
            return (f"placeholder {written} in layout: a placeholder is a plain column name, without "
                    "formatting (:...), conversion (!...), attributes or indexes",
                    f"write {{{plain}}}" if plain in PRODUCT_COLUMNS else _PLACEHOLDERS)
        if name not in PRODUCT_COLUMNS:
            return f"unknown product column {{{name}}} in layout", suggest(name, PRODUCT_COLUMNS) or _PLACEHOLDERS
        names.append(name)
    if "productFilename" not in names:
        return "a layout template must contain {productFilename}, e.g. \"{obs_collection}/{productFilename}\"", None
    parts = re.sub(r"{[^{}]*}", "x", template).split("/")
    if template.startswith("/") or ".." in parts:
        return "a layout template is relative to the destination and may not contain `..`", None
    if "" in parts or "." in parts:
        return "a layout template has an empty directory name (`//`, `/.`, or a `/` at the end)", None
    for part in template.format(**{name: "x" for name in names}).split("/"):
        why = component_problem(part)
        if why is not None:
            return f"a layout template's path component {part!r} cannot be a file or directory name: {why}", None
    return None


def _brace_problem(template: str) -> str:
    """Which brace of a template that :meth:`string.Formatter.parse` refuses is unbalanced."""
    i = 0
    while i < len(template):
        if template[i:i + 2] in ("{{", "}}"):
            i += 2
            continue
        if template[i] == "}":
            return f"a }} at character {i + 1} of the layout closes no placeholder"
        if template[i] == "{":
            end = template.find("}", i)
            start = template.find("{", i + 1)
            if end < 0 or 0 <= start < end:
                opened = template[i:start if 0 <= start < end else len(template)]
                return f"the placeholder {opened!r} in layout is not closed: a }} is missing"
            i = end
        i += 1
    return "the braces in the layout do not balance"  # pragma: no cover - parse refused it for a reason


def check_url(value: str) -> str:
    """``value`` without its trailing ``/``; a ValueError unless it is an http(s) URL."""
    if not re.match(r"^https?://[^/\s]+(/[^\s]*)?$", value):
        raise ValueError(f"{value!r} is not an http(s) URL like https://mast.stsci.edu")
    return value.rstrip("/")
