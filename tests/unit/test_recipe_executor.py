"""retrieve.executor in recipes, and how --executor / --scheduler override it (no Dask needed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mastpipe.errors import RecipeError, UsageError
from mastpipe.recipe.models import Executor, load_recipe

HEAD = "version: 1\nname: t\nquery: {q: {criteria: {obs_collection: JWST}}}\n"


def load(tmp_path: Path, retrieve: str) -> Executor:
    path = tmp_path / "r.yaml"
    path.write_text(HEAD + "retrieve:\n  executor: " + retrieve + "\n")
    return load_recipe(path, environ={}).retrieve.executor


def test_threads_is_the_default(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(HEAD)
    assert load_recipe(path, environ={}).retrieve.executor == Executor(kind="threads")


def test_a_dask_executor_is_read(tmp_path: Path) -> None:
    assert load(tmp_path, "{kind: dask, scheduler: 'tcp://scheduler:8786'}").scheduler == "tcp://scheduler:8786"
    local = load(tmp_path, "{kind: dask, scheduler: local, workers: 3}")
    assert (local.kind, local.scheduler, local.workers) == ("dask", "local", 3)


@pytest.mark.parametrize(("text", "message"), [
    ("{kind: dask}", "needs a scheduler"),
    ("{kind: threads, scheduler: local}", "only apply to kind: dask"),
    ("{kind: dask, scheduler: 'tcp://h:8786', workers: 2}", "workers only applies to scheduler: local"),
    ("{kind: dask, scheduler: 'h:8786'}", "'h:8786' is not allowed here"),
    ("{kind: ray, scheduler: local}", "threads"),
    ("{kind: dask, scheduler: local, extra: 1}", "extra"),
])
def test_bad_executors_are_refused_with_the_reason(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(RecipeError) as caught:
        load(tmp_path, text)
    assert message in str(caught.value) and "retrieve.executor" in str(caught.value)


def test_command_line_overrides() -> None:
    threads = Executor()
    assert threads.override() is threads
    assert threads.override("dask", "local") == Executor(kind="dask", scheduler="local")
    assert threads.override(None, "tcp://h:1") == Executor(kind="dask", scheduler="tcp://h:1")
    local = Executor(kind="dask", scheduler="local", workers=2)
    assert local.override("dask") == local  # the recipe's scheduler and workers kept
    assert local.override(scheduler="tcp://h:1") == Executor(kind="dask", scheduler="tcp://h:1")
    assert local.override("threads") == Executor()


@pytest.mark.parametrize(("kind", "scheduler", "message"), [
    ("dask", None, "needs scheduler"),
    ("threads", "local", "not threads"),
    (None, "h:8786", "not a Dask scheduler address"),
])
def test_impossible_overrides_are_usage_errors(kind: str | None, scheduler: str | None, message: str) -> None:
    with pytest.raises(UsageError) as caught:
        Executor().override(kind, scheduler)
    assert message in str(caught.value)


def test_without_dask_installed_the_dask_executor_says_what_to_install(tmp_path: Path) -> None:
    """Where the extra is missing (shadowed here by packages that fail to import), choosing
    Dask is a usage error naming the extra, not a traceback."""
    for name in ("dask", "distributed"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("raise ImportError('not installed')\n")
    code = ("from mastpipe.stages.retrieve.dask import DaskTransfer\n"
            "from mastpipe.errors import UsageError\n"
            "try:\n    DaskTransfer('local')\n"
            "except UsageError as exc:\n    print(exc, '|', exc.hint)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            env={"PYTHONPATH": str(tmp_path), "PATH": ""})
    assert result.returncode == 0, result.stderr
    assert "needs Dask" in result.stdout and "pip install 'mastpipe[dask]'" in result.stdout
