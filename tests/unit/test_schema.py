"""The committed JSON Schema is exactly what ``mastpipe schema`` prints, and is written for humans."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from mastpipe.recipe.models import load_recipe
from mastpipe.recipe.schema import recipe_schema, recipe_schema_text

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_FILE = ROOT / "schemas" / "recipe.schema.json"
PIPELINES = sorted((ROOT / "pipelines").glob("*.yaml"))
SCHEMA_LINE = "# yaml-language-server: $schema=../schemas/recipe.schema.json"
REGENERATE = "schemas/recipe.schema.json is stale: regenerate it with `mastpipe schema > schemas/recipe.schema.json`"


def test_library_output_equals_the_committed_schema() -> None:
    assert recipe_schema_text().encode("utf-8") == SCHEMA_FILE.read_bytes(), REGENERATE


def test_cli_output_equals_the_committed_schema(cli: Callable[..., subprocess.CompletedProcess[bytes]]) -> None:
    result = cli("schema", cwd=ROOT, timeout=60, text=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout == SCHEMA_FILE.read_bytes(), REGENERATE


def test_the_schema_is_json_schema_2020_12_with_an_id() -> None:
    schema = json.loads(SCHEMA_FILE.read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"].endswith("recipe.schema.json")
    assert schema == recipe_schema()


def _properties(node: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        for name, prop in (node.get("properties") or {}).items():
            yield f"{path}.{name}", prop
        for key, value in node.items():
            yield from _properties(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _properties(value, f"{path}[{i}]")


def test_every_property_has_a_human_description() -> None:
    schema = recipe_schema()
    properties = list(_properties(schema))
    assert len(properties) > 40
    for path, prop in properties:
        description = prop.get("description", "")
        # a sentence, not a restated name: several words, more than the field's own title
        assert len(description.split()) >= 4, f"{path} needs a description editors can show: {description!r}"
    for name, definition in schema["$defs"].items():
        assert len(definition.get("description", "").split()) >= 4, f"$defs.{name} has no description"


def test_editors_can_complete_criteria_and_column_names() -> None:
    schema = recipe_schema()
    criteria = schema["$defs"]["Query"]["properties"]["criteria"]
    assert "obs_collection" in criteria["propertyNames"]["enum"]
    columns = schema["$defs"]["Filter"]["properties"]["columns"]
    assert "productSubGroupDescription" in columns["propertyNames"]["enum"]


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.name)
def test_example_pipeline_validates(path: Path) -> None:
    load_recipe(path, environ={})


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.name)
def test_example_pipeline_points_editors_at_the_schema_and_explains_itself(path: Path) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == SCHEMA_LINE, f"{path.name}: the first line must be {SCHEMA_LINE!r}"
    assert (path.parent / "../schemas/recipe.schema.json").resolve() == SCHEMA_FILE
    header = []
    for line in lines[1:]:
        if not line.startswith("#"):
            break
        header.append(line.lstrip("# "))
    words = " ".join(header).split()
    assert len(words) >= 15, f"{path.name}: start with a comment that explains what the recipe fetches and why"


def test_there_are_the_example_pipelines_the_issue_asks_for() -> None:
    names = {p.stem for p in PIPELINES}
    assert {"jwst-1073-nircam-uncal", "jwst-1073-nircam-uncal-curl"} <= names
    assert len(PIPELINES) >= 5


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.name)
def test_editors_accept_every_example_pipeline(path: Path) -> None:
    """What an editor does with the schema: validate the YAML against it (no false alarms)."""
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(yaml.safe_load(path.read_text()), json.loads(SCHEMA_FILE.read_text()))


def test_editors_flag_what_mastpipe_rejects() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA_FILE.read_text())
    good = {"version": 1, "name": "t", "query": {"q": {"criteria": {"obs_collection": "JWST",
                                                                      "t_min": {"min": "2022-01-01"}}}}}
    jsonschema.validate(good, schema)
    for bad in ({**good, "bogus": 1}, {**good, "version": 2},
                {**good, "query": {"q": {"criteria": {"instrument": "NIRCAM"}}}},
                {**good, "query": {"bad name": {"criteria": {"obs_collection": "JWST"}}}},
                {**good, "retrieve": {"mode": "wget"}}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)
