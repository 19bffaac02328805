"""The recipe's JSON Schema, generated from the models (``schemas/recipe.schema.json``)."""

from __future__ import annotations

import json
import re
from typing import Any

from mastpipe.recipe.models import Recipe

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


__all__ = [
    "REFERENCE_FILE", "REGENERATE_REFERENCE", "SCHEMA_DIALECT", "recipe_reference_markdown",
    "recipe_schema", "recipe_schema_text"
]


def recipe_schema() -> dict[str, Any]:
    """The JSON Schema of a recipe, for editors (hover text, completion) and other tools."""
    schema = Recipe.model_json_schema(mode="validation")
    return {"$schema": SCHEMA_DIALECT, **schema}


def recipe_schema_text() -> str:
    """:func:`recipe_schema` as the exact text committed in ``schemas/recipe.schema.json``."""
    return json.dumps(recipe_schema(), indent=2, ensure_ascii=False) + "\n"


# --------------------------------------------------------------------------------------------
# The recipe reference (docs/recipe.md), generated from the same models and schema.

REFERENCE_FILE = "docs/recipe.md"
REGENERATE_REFERENCE = "mastpipe schema --markdown > docs/recipe.md"

#: Sections in the order a recipe is written and the stages run, with the $defs that document them.
_SECTIONS = (("mast", "Mast"), ("query", "Query"), ("products", "Products"), ("unique", "Unique"),
             ("filter", "Filter"), ("retrieve", "Retrieve"), ("state", "State"))
#: How a $ref reads in a "type" cell.
_REF_WORDS = {"Range": "range `{min, max}`", "Position": "position", "Query": "search", "Mast": "section",
              "Products": "section", "Unique": "section", "Filter": "section", "Retrieve": "section",
              "State": "section", "Executor": "section", "Segments": "section"}
#: Models nested in a section, documented in subsections of their own: section -> ((field, model), ...).
_SUBSECTIONS = {"retrieve": (("executor", "Executor"), ("segments", "Segments"))}


def recipe_reference_markdown() -> str:
    """The recipe reference in Markdown, exactly as committed in ``docs/recipe.md``.

    Every section and field of the recipe with its type, default, allowed values and
    description, generated from the pydantic models (through :func:`recipe_schema`), plus the
    observation fields and product columns recipes may name and the filter's semantics (the
    docstring of :mod:`mastpipe.stages.filter`). ``mastpipe schema --markdown`` prints it.
    """
    from mastpipe.recipe.fields import CONTINUOUS_FIELDS, DATE_FIELDS, PRODUCT_COLUMNS

    schema = recipe_schema()
    defs = schema["$defs"]
    models = _models_by_name()
    out: list[str] = [
        f"<!-- Generated from mastpipe's models by `{REGENERATE_REFERENCE}`; do not edit by hand. -->",
        "",
        "# Recipe reference",
        "",
        "A recipe is one YAML document. Its sections are named after the stages they configure, which run",
        "in this order: **query → products → unique → filter → retrieve**, with a checkpoint after each.",
        "Only `version`, `name` and `query` are required; every other section has defaults. Unknown keys",
        "are errors. Strings may use `${VAR}` or `${VAR:-default}` (an unset variable without a default is",
        "an error; `$$` is a literal `$`). Recipes never hold tokens: set `MAST_API_TOKEN` instead.",
        "",
        "`mastpipe init` writes a commented starting recipe from a few options (collection, program,",
        "instrument, filters, product kinds). `mastpipe validate RECIPE` checks a recipe without",
        "contacting MAST. The same information as a JSON Schema, for editors, is",
        "`schemas/recipe.schema.json` (`mastpipe schema`); see [editors.md](editors.md).",
        "",
        "```yaml",
        "version: 1",
        "name: jwst-1073-nircam-uncal",
        "query:",
        "  nircam:",
        "    criteria: {obs_collection: JWST, proposal_id: \"1073\", instrument_name: \"NIRCAM*\", filters: F277W}",
        "filter:",
        "  contains: [_uncal.fits]",
        "  columns: {productSubGroupDescription: UNCAL}",
        "retrieve:",
        "  destination: data/jwst-1073",
        "```",
        "",
        "Contents: [top level](#top-level) · " + " · ".join(f"[{s}](#{s})" for s, _ in _SECTIONS)
        + " · [ranges](#ranges) · [observation fields](#observation-fields) · [product columns](#product-columns)"
        + " · [filter semantics](#filter-semantics)",
        "",
        "## Top level",
        "",
        _text(schema["description"]),
        "",
    ]
    out += _table(schema, models["Recipe"], defs, links=True)
    for section, name in _SECTIONS:
        node = schema["properties"][section]
        out += ["", f"## {section}", ""]
        if section == "query":
            out += [
                _text(node["description"]) + " Each entry is `NAME: {criteria, position}`; the name "
                f"(pattern `{next(iter(node['patternProperties']))}`) is recorded in the `queries` column "
                "of the results. At least one search is required.",
                "",
                "```yaml",
                "query:",
                "  nircam:",
                "    criteria: {obs_collection: JWST, proposal_id: [\"1073\", \"1345\"], t_min: {min: 2022-07-01}}",
                "    position: {object: M1, radius: 5 arcmin}",
                "```",
                "",
                "### query.NAME: a search",
                "",
                _paragraphs(defs["Query"]["description"]),
                "",
            ]
            out += _table(defs["Query"], models["Query"], defs, prefix="query.NAME.")
            out += ["", "### query.NAME.position", "", _paragraphs(defs["Position"]["description"]), ""]
            out += _table(defs["Position"], models["Position"], defs, prefix="query.NAME.position.")
            continue
        out += [_paragraphs(defs[name]["description"]), ""]
        out += _table(defs[name], models[name], defs, prefix=f"{section}.")
        for key, sub in _SUBSECTIONS.get(section, ()):
            out += ["", f"### {section}.{key}", "", _paragraphs(defs[sub]["description"]), ""]
            out += _table(defs[sub], models[sub], defs, prefix=f"{section}.{key}.")
        if section == "filter":
            out += ["", "Keys of `filter.columns` are [product columns](#product-columns)."]
    out += ["", "## Ranges", "", _text(defs["Range"]["description"]) + " Used by continuous criteria and "
            "numeric `filter.columns`.", ""]
    out += _table(defs["Range"], models["Range"], defs, prefix="")
    observation = defs["Query"]["properties"]["criteria"]["propertyNames"]["enum"]
    continuous = [f for f in observation if f in CONTINUOUS_FIELDS]
    discrete = [f for f in observation if f not in CONTINUOUS_FIELDS]
    out += [
        "", "## Observation fields", "",
        "The keys `query.NAME.criteria` accepts: MAST's CAOM observation fields. A value matches exactly "
        "(case-insensitive), a list matches any of its values, `*` is a wildcard.",
        "",
        "Continuous fields take a [range](#ranges) `{min, max}`"
        + f" (on {', '.join(f'`{f}`' for f in sorted(DATE_FIELDS))} an MJD or an ISO date, UTC): "
        + ", ".join(f"`{f}`" for f in continuous) + ".",
        "",
        "Other fields take a value or a list: " + ", ".join(f"`{f}`" for f in discrete) + ".",
    ]
    columns = defs["Filter"]["properties"]["columns"]["propertyNames"]["enum"]
    out += [
        "", "## Product columns", "",
        "The keys `filter.columns` accepts, and the fields a `retrieve.layout` template may use. "
        "Numeric columns also take a [range](#ranges).",
        "",
        "| column | kind |",
        "|---|---|",
    ]
    out += [f"| `{c}` | {PRODUCT_COLUMNS[c]} |" for c in columns]
    out += ["", "## Filter semantics", "", *_filter_semantics()]
    return "\n".join(out).rstrip("\n") + "\n"


def _models_by_name() -> dict[str, type]:
    """Recipe and every model reachable from its fields, by class name (the schema's $defs keys)."""
    from pydantic import BaseModel

    found: dict[str, type] = {}
    todo: list[Any] = [Recipe]
    while todo:
        item = todo.pop()
        if isinstance(item, type) and issubclass(item, BaseModel):
            if item.__name__ in found:
                continue
            found[item.__name__] = item
            todo += [field.annotation for field in item.model_fields.values()]
        else:
            todo += list(getattr(item, "__args__", ()))
    return found


def _escape(text: str) -> str:
    """Markdown-safe prose: RST ``literals`` become `literals`; ``<x>`` outside them is not HTML."""
    parts = text.replace("``", "`").split("`")
    return "`".join(p.replace("<", "\\<").replace(">", "\\>") if i % 2 == 0 else p for i, p in enumerate(parts))


def _paragraphs(description: str) -> str:
    """A model's description (its docstring) as Markdown paragraphs."""
    return "\n\n".join(" ".join(p.split()) for p in _escape(description).split("\n\n"))


def _text(description: str) -> str:
    """A description as one Markdown table cell."""
    return " ".join(_escape(description).replace("|", "\\|").split())


def _table(node: dict[str, Any], model: type, defs: dict[str, Any], prefix: str = "",
           links: bool = False) -> list[str]:
    required = set(node.get("required", ()))
    rows = ["| key | type | default | allowed values | description |", "|---|---|---|---|---|"]
    for key, prop in node["properties"].items():
        field = model.model_fields[key]  # type: ignore[attr-defined]
        ref = prop.get("$ref", "").rsplit("/", 1)[-1]
        if links and ref or key == "query" and links:
            shown = f"[`{key}`](#{key})"
            default = "required" if key in required else "see below"
        elif ref in _REF_WORDS and prefix:  # a model inside a section: its subsection follows
            anchor = re.sub(r"[^a-z0-9 -]", "", f"{prefix}{key}".lower()).replace(" ", "-")
            shown = f"[`{prefix}{key}`](#{anchor})"
            default = "see below"
        else:
            shown = f"`{prefix}{key}`"
            default = "required" if key in required else _default(field)
        rows.append(f"| {shown} | {_type(prop)} | {default} | {_allowed(prop, defs)} | "
                    f"{_text(prop.get('description', ''))} |")
    return rows


def _default(field: Any) -> str:
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "none"
    if isinstance(value, str):
        return f'`"{value}"`' if value == "" or value != value.strip() else f"`{value}`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float) and value.is_integer():
        return f"`{int(value)}`"
    return f"`{json.dumps(value)}`"


def _type(node: dict[str, Any]) -> str:
    if "$ref" in node:
        name = str(node["$ref"]).rsplit("/", 1)[-1]
        return _REF_WORDS.get(name, name)
    if "const" in node:
        return "integer" if isinstance(node["const"], int) else "string"
    if "enum" in node:
        return "string"
    if "anyOf" in node:
        branches = [b for b in node["anyOf"] if b.get("type") != "null"]
        scalar = {"string", "integer", "number", "boolean"}
        kinds = [b.get("type") for b in branches]
        if len(branches) >= 4 and scalar <= set(kinds):
            rest = [_type(b) for b in branches if b.get("type") not in scalar]
            return ", ".join(["value", *sorted(rest, key=lambda w: not w.startswith("list"))[:-1]]) + \
                " or " + sorted(rest, key=lambda w: not w.startswith("list"))[-1] if rest else "value"
        words: list[str] = []
        for branch in branches:
            word = _type(branch)
            if word not in words:
                words.append(word)
        return " or ".join(words)
    kind = node.get("type")
    if kind == "array":
        items = node.get("items", {})
        if {b.get("type") for b in items.get("anyOf", ())} >= {"string", "integer", "number", "boolean"}:
            return "list of values"
        return "list of " + _plural(_type(items))
    if kind == "object":
        values = node.get("additionalProperties")
        if isinstance(values, dict):
            return "mapping of name → " + _type(values)
        pattern = node.get("patternProperties")
        if pattern:
            return "mapping of name → " + _type(next(iter(pattern.values())))
        return "mapping"
    if kind == "string" and node.get("format") in ("date", "date-time"):
        return "ISO date"
    return {"string": "text", "integer": "integer", "number": "number", "boolean": "true/false"}.get(kind or "", "any")


def _plural(word: str) -> str:
    return {"text": "text", "number": "numbers", "integer": "integers", "true/false": "true/false"}.get(word, word)


def _allowed(node: dict[str, Any], defs: dict[str, Any]) -> str:
    """The "allowed values" cell: enums, bounds, patterns and key sets, also of an optional
    field's non-null branch (``int | None`` with bounds is ``anyOf: [{integer, min, max}, null]``)."""
    parts: list[str] = []
    for branch in [node, *(b for b in node.get("anyOf", ()) if b.get("type") != "null")]:
        for part in _constraints(branch):
            if part not in parts:
                parts.append(part)
    return "; ".join(parts) or "—"


def _constraints(node: dict[str, Any]) -> list[str]:
    parts: list[str] = []
    if "const" in node:
        parts.append(f"`{node['const']}`")
    if "enum" in node:
        parts.append(", ".join(f"`{v}`" for v in node["enum"]))
    low = node.get("minimum")
    low_open = node.get("exclusiveMinimum")
    high = node.get("maximum")
    if low is not None or low_open is not None or high is not None:
        left = f"{_number(low)} ≤ " if low is not None else f"{_number(low_open)} < " if low_open is not None else ""
        right = f" ≤ {_number(high)}" if high is not None else ""
        parts.append(f"{left}x{right}")
    if "pattern" in node:
        parts.append("pattern `" + node["pattern"].replace("|", "\\|") + "`")  # a bare | would end the cell
    if "minProperties" in node:
        parts.append(f"at least {node['minProperties']}")
    if "propertyNames" in node:
        names = node["propertyNames"].get("enum", ())
        target = "observation-fields" if "obs_collection" in names and "productFilename" not in names else "product-columns"
        parts.append(f"keys: [{target.replace('-', ' ')}](#{target})")
    return parts


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _filter_semantics() -> list[str]:
    """The rules of :mod:`mastpipe.stages.filter`, from its docstring (read, not imported: no numpy)."""
    import ast
    from pathlib import Path

    source = Path(__file__).parents[1] / "stages" / "filter.py"  # recipe/ and stages/ are siblings
    doc = ast.get_docstring(ast.parse(source.read_text(encoding="utf-8"))) or ""
    body = doc.split("\n\n", 1)[1] if "\n\n" in doc else doc
    return [line.replace("``", "`") for line in body.strip().splitlines()]
