""".pre-commit-hooks.yaml: the `mastpipe-validate` hook selects exactly the recipes, and its entry,
run the way pre-commit runs it (entry + args + the selected file names, from the repository root),
passes on the example recipes and fails with exit 2 on a broken one."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
HOOKS = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())
(HOOK,) = [h for h in HOOKS if h["id"] == "mastpipe-validate"]


def _selected(path: str) -> bool:
    """pre-commit's rule: `files` is searched (re.search) in the path relative to the root."""
    return re.search(HOOK["files"], path) is not None and not re.search(HOOK.get("exclude", "^$"), path)


def _run_hook(files: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MASTPIPE_MAST_URL", "MAST_API_TOKEN")}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    argv = [*shlex.split(HOOK["entry"]), *HOOK.get("args", []), *files]
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def _repository_files() -> list[str]:
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.splitlines()
    return [path for path in listed if (REPO / path).is_file()]


def test_the_hook_is_declared_as_asked() -> None:
    assert HOOK["entry"] == "mastpipe validate"
    assert HOOK["language"] == "python"
    assert HOOK["name"] and HOOK["description"]
    assert set(HOOK.get("types", ["yaml"])) <= {"yaml", "file", "text"}


def test_the_hook_selects_exactly_the_recipes_of_this_repository() -> None:
    selected = sorted(p for p in _repository_files() if _selected(p))
    recipes = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "pipelines").glob("*.yaml"))
    assert selected == recipes
    # never the CI examples, the hook file itself or the schema: validate would reject them
    for other in (".pre-commit-hooks.yaml", "examples/github-actions/mastpipe.yml", "examples/gitlab-ci/.gitlab-ci.yml",
                  "schemas/recipe.schema.json", ".github/workflows/ci.yml"):
        assert not _selected(other), other


@pytest.mark.parametrize("path, selected", [
    ("pipelines/nightly.yaml", True),
    ("pipelines/nightly.yml", True),
    ("team/pipelines/nightly.yaml", True),
    ("recipes/nightly.mastpipe.yaml", True),
    ("nightly.mastpipe.yml", True),
    ("pipelines/data/jwst/meta.yaml", False),
    ("pipelines/.mastpipe/x/report.json", False),
    ("config/nightly.yaml", False),
    ("mypipelines/nightly.yaml", False),
])
def test_file_pattern(path: str, selected: bool) -> None:
    assert _selected(path) is selected


def test_the_entry_passes_on_the_example_recipes() -> None:
    recipes = sorted(p for p in _repository_files() if _selected(p))
    result = _run_hook(recipes, REPO)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr


def test_the_entry_fails_with_exit_2_on_a_broken_recipe(tmp_path: Path) -> None:
    broken = tmp_path / "nightly.mastpipe.yaml"
    broken.write_text("version: 1\nname: nightly\nquery:\n  main:\n    criteria:\n      instrument: NIRCAM\n")
    assert _selected(broken.relative_to(tmp_path).as_posix())
    good = tmp_path / "pipelines" / "good.yaml"
    good.parent.mkdir()
    good.write_text((REPO / "pipelines" / "jwst-1073-nircam-uncal.yaml").read_text())
    result = _run_hook(["pipelines/good.yaml", "nightly.mastpipe.yaml"], tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("nightly.mastpipe.yaml:6:7: query.main.criteria.instrument: ")
    assert "pipelines/good.yaml: valid" in result.stdout
