"""Helpers for end-to-end tests: the real `mastpipe` command in a subprocess."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def mastpipe(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the installed command line exactly as a user would."""
    command = shutil.which("mastpipe")
    argv = [command, *args] if command else [sys.executable, "-c", "from mastpipe.cli import main; main()", *args]
    full_env = {**os.environ, **(env or {})}
    full_env.pop("MASTPIPE_MAST_URL", None)
    full_env.pop("MAST_API_TOKEN", None)
    if env:
        full_env.update(env)
    return subprocess.run(argv, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def cli():  # type: ignore[no-untyped-def]
    """The :func:`mastpipe` runner, as a fixture (test modules here are not a package)."""
    return mastpipe


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
