"""docs/recipe.md is generated from the models: current, complete, and readable as Markdown."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import mastpipe.stages.filter as filter_stage
from mastpipe.recipe.fields import OBSERVATION_FIELDS, PRODUCT_COLUMNS
from mastpipe.recipe.models import Recipe
from mastpipe.recipe.schema import REGENERATE_REFERENCE, recipe_reference_markdown, recipe_schema

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "docs" / "recipe.md"
STALE = f"docs/recipe.md is stale: regenerate it with `{REGENERATE_REFERENCE}`"


def test_the_committed_reference_is_current() -> None:
    assert REFERENCE.read_text(encoding="utf-8") == recipe_reference_markdown(), STALE


def test_the_cli_prints_the_committed_reference(cli: Callable[..., subprocess.CompletedProcess[bytes]]) -> None:
    result = cli("schema", "--markdown", cwd=ROOT, timeout=60, text=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout == REFERENCE.read_bytes(), STALE


def test_markdown_imports_nothing_heavy() -> None:
    code = ("import sys\nfrom mastpipe.cli import main\ntry:\n    main(['schema', '--markdown'])\n"
            "except SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('astropy', 'astroquery', 'numpy')),"
            " file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stderr.strip().splitlines()[-1] == "[]", result.stderr


def _rows(text: str) -> dict[str, list[str]]:
    """Table rows by their key cell (without backticks and links)."""
    rows = {}
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("| key") and not line.startswith("|---"):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            key = re.sub(r"\[`([^`]+)`\]\(#[^)]*\)", r"\1", cells[0]).strip("`")
            if len(cells) == 5:
                rows[key] = cells
    return rows


def _unescape(cell: str) -> str:
    return cell.replace("\\|", "|").replace("\\<", "<").replace("\\>", ">")


SECTIONS = {"mast": "Mast", "products": "Products", "unique": "Unique", "filter": "Filter", "retrieve": "Retrieve",
            "state": "State", "query.NAME": "Query", "query.NAME.position": "Position", "": "Range",
            "retrieve.executor": "Executor"}


def _fields() -> list[tuple[str, dict[str, Any], Any]]:
    """(dotted key, JSON-schema property, pydantic field) for every field of every section."""
    schema = recipe_schema()
    models = {"Recipe": Recipe}
    for _name, field in Recipe.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type):
            models[annotation.__name__] = annotation
    from mastpipe.recipe.models import Executor, Position, Query, Range
    models.update(Query=Query, Position=Position, Range=Range, Executor=Executor)
    found = [(key, prop, Recipe.model_fields[key]) for key, prop in schema["properties"].items()]
    for prefix, name in SECTIONS.items():
        for key, prop in schema["$defs"][name]["properties"].items():
            found.append((f"{prefix}.{key}" if prefix else key, prop, models[name].model_fields[key]))
    return found


FIELDS = _fields()


def test_every_field_of_every_section_is_documented() -> None:
    assert len(FIELDS) > 35
    rows = _rows(REFERENCE.read_text(encoding="utf-8"))
    for key, prop, field in FIELDS:
        assert key in rows, f"docs/recipe.md has no row for {key}"
        _, kind, default, allowed, description = rows[key]
        assert " ".join(_unescape(description).split()) == " ".join(prop["description"].replace("``", "`").split())
        # an optional field's constraints sit in the non-null branch of its anyOf
        for constrained in [prop, *(b for b in prop.get("anyOf", ()) if b.get("type") != "null")]:
            for value in constrained.get("enum", ()):
                assert f"`{value}`" in allowed, f"{key}: allowed value {value} missing"
            for bound in ("minimum", "maximum", "exclusiveMinimum"):
                if bound in constrained:
                    assert re.search(rf"\b{constrained[bound]:g}\b", allowed), f"{key}: {bound} missing"
            if "pattern" in constrained:
                assert constrained["pattern"] in _unescape(allowed), f"{key}: pattern missing"
        if field.is_required():
            assert default == "required"
        elif "default" in prop and prop["default"] not in (None, ""):
            shown = prop["default"]
            shown = int(shown) if isinstance(shown, float) and shown.is_integer() else shown
            shown = json.dumps(shown) if isinstance(shown, bool) else shown
            assert default == f"`{shown}`", f"{key}: default {default} is not {prop['default']!r}"
        assert kind and kind != "any", f"{key}: no type"


def test_types_read_as_words() -> None:
    rows = _rows(REFERENCE.read_text(encoding="utf-8"))
    assert rows["mast.timeout"][1] == "number" and rows["mast.timeout"][3] == "0 < x ≤ 3600"
    assert rows["filter.contains"][1] == "list of text" and rows["filter.contains"][2] == "`[]`"
    assert rows["filter.mrp_only"][1:3] == ["true/false", "`false`"]
    assert rows["query.NAME.criteria"][1] == "mapping of name → value, list of values or range `{min, max}`"
    assert rows["query"][1] == "mapping of name → search"
    assert rows["query.NAME.position.radius"][2] == "`0.2 deg`"
    assert rows["products.in_flight"][1:4] == ["integer", "none", "1 ≤ x ≤ 16"]
    assert rows["retrieve.executor.workers"][3] == "1 ≤ x ≤ 256"


def test_observation_fields_and_product_columns_are_listed() -> None:
    text = REFERENCE.read_text(encoding="utf-8")
    fields = text.split("## Observation fields", 1)[1].split("\n## ", 1)[0]
    assert set(re.findall(r"`(\w+)`", fields)) >= set(OBSERVATION_FIELDS)
    columns = text.split("## Product columns", 1)[1].split("\n## ", 1)[0]
    for name, kind in PRODUCT_COLUMNS.items():
        assert f"| `{name}` | {kind} |" in columns


def test_the_filter_semantics_are_the_filter_stages_own() -> None:
    text = REFERENCE.read_text(encoding="utf-8")
    semantics = text.split("## Filter semantics", 1)[1]
    doc = filter_stage.__doc__ or ""
    bullets = [line.strip().replace("``", "`") for line in doc.splitlines() if line.strip().startswith("* ")]
    assert len(bullets) >= 6
    for bullet in bullets:
        assert bullet in semantics


@pytest.mark.parametrize("anchor", re.findall(r"\]\(#([a-z-]+)\)", REFERENCE.read_text(encoding="utf-8")
                                              if REFERENCE.exists() else ""))
def test_internal_links_have_targets(anchor: str) -> None:
    headings = re.findall(r"^#+ (.+)$", REFERENCE.read_text(encoding="utf-8"), re.M)
    slugs = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in headings}
    assert anchor in slugs
