"""Helpers for end-to-end tests (the `cli` and `login` fixtures are in tests/conftest.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A copy of the example recipes, so runs write their state and data under tmp_path.

    Only the recipes are copied: the README's main job, run in this checkout first, leaves its
    state (.mastpipe/) and files (data/) under pipelines/, and a test must not start from them.
    """
    (tmp_path / "pipelines").mkdir()
    for recipe in (REPO / "pipelines").glob("*.yaml"):
        shutil.copy(recipe, tmp_path / "pipelines" / recipe.name)
    shutil.copytree(REPO / "schemas", tmp_path / "schemas")
    return tmp_path
