"""docs/editors.md: the settings it shows point at the committed schema and cover the recipes."""

from __future__ import annotations

import json
import re
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "editors.md").read_text(encoding="utf-8")


def _matches(pattern: str, path: str) -> bool:
    """VS Code glob semantics for the patterns used: ``**/`` is any directories, ``*`` one name part."""
    regex = re.escape(pattern).replace(r"\*\*/", "(?:.*/)?").replace(r"\*", "[^/]*")
    return re.fullmatch(regex, path) is not None


def test_the_vscode_setting_is_json_and_points_at_the_committed_schema() -> None:
    block = DOC.split("```json", 1)[1].split("```", 1)[0]
    settings = json.loads(block)
    ((schema, patterns),) = settings["yaml.schemas"].items()
    assert (ROOT / schema).resolve() == (ROOT / "schemas" / "recipe.schema.json").resolve()
    for recipe in sorted((ROOT / "pipelines").glob("*.yaml")):
        assert any(_matches(p, recipe.relative_to(ROOT).as_posix()) for p in patterns), recipe.name
    assert any(_matches(p, "team/nightly.mastpipe.yaml") for p in patterns)
    assert not any(_matches(p, ".pre-commit-hooks.yaml") for p in patterns)


def test_the_modeline_shown_is_the_one_the_recipes_use() -> None:
    line = re.search(r"^# yaml-language-server: \$schema=\S+$", DOC, re.M)
    assert line
    for recipe in sorted((ROOT / "pipelines").glob("*.yaml")):
        assert recipe.read_text(encoding="utf-8").splitlines()[0] == line.group(0)
    target = PurePosixPath("pipelines") / line.group(0).split("=", 1)[1]
    assert (ROOT / target).resolve() == (ROOT / "schemas" / "recipe.schema.json").resolve()


def test_links_to_the_recipe_reference() -> None:
    assert "(recipe.md)" in DOC and (ROOT / "docs" / "recipe.md").is_file()
