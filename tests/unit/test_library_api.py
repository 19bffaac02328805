"""The library speaks as a library: its errors name parameters, the command line names flags;
every public exception is importable from ``mastpipe``; every module declares ``__all__``."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

import mastpipe
import mastpipe.errors
from mastpipe.errors import MastpipeError, UsageError
from mastpipe.recipe.models import Executor

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "pipelines" / "jwst-1073-nircam-uncal.yaml"


def test_every_public_exception_is_importable_from_the_package() -> None:
    for name, value in vars(mastpipe.errors).items():
        if inspect.isclass(value) and issubclass(value, BaseException) and not name.startswith("_"):
            assert getattr(mastpipe, name) is value, name
            assert name in mastpipe.__all__ and name in mastpipe.errors.__doc__, name


def test_every_module_declares_all_and_its_names_exist() -> None:
    for info in pkgutil.walk_packages(mastpipe.__path__, "mastpipe."):
        if info.name.endswith("__main__"):
            continue
        try:
            module = importlib.import_module(info.name)
        except ImportError as missing:  # an optional extra (distributed) not installed
            pytest.skip(f"{info.name}: {missing}")
        assert hasattr(module, "__all__"), f"{info.name} has no __all__"
        for name in module.__all__:
            assert hasattr(module, name), f"{info.name}.__all__ names {name}, which it lacks"


def test_run_says_the_parameter_not_the_flag(tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.yaml"
    shutil.copy(RECIPE, recipe)
    with pytest.raises(UsageError) as caught:
        mastpipe.run(recipe, until="x", state_dir=tmp_path / "state", mast_url="http://127.0.0.1:9",
                     environ={"MAST_API_TOKEN": ""})
    assert str(caught.value).startswith("until 'x' is not a stage") and "--" not in str(caught.value)
    with pytest.raises(UsageError, match="^from_stage filter comes after until query$"):
        mastpipe.Pipeline(recipe, state_dir=tmp_path / "state").run(until="query", from_stage="filter")


def test_executor_errors_name_parameters_and_the_cli_names_flags() -> None:
    with pytest.raises(UsageError) as caught:
        Executor().override("threads", "local")
    error = caught.value
    assert error.message == "scheduler applies to executor dask, not threads"
    error.name_parameters({"scheduler": "--scheduler", "executor": "--executor"})
    assert str(error) == "--scheduler applies to --executor dask, not threads"


def test_values_with_braces_are_quoted_not_formatted() -> None:
    with pytest.raises(UsageError) as caught:
        Executor().override("dask", "{host}:8786")
    assert "'{host}:8786' is not a Dask scheduler address" in str(caught.value)


def test_the_command_line_says_flags(tmp_path: Path) -> None:
    from mastpipe.cli import main

    recipe = tmp_path / "recipe.yaml"
    shutil.copy(RECIPE, recipe)
    result = CliRunner().invoke(main, ["run", str(recipe), "--mast-url", "http://127.0.0.1:9", "--state-dir",
                                       str(tmp_path / "state"), "--executor", "threads", "--scheduler", "local"])
    assert result.exit_code == 2
    assert "--scheduler applies to --executor dask, not threads" in result.output


def test_an_error_without_parameters_keeps_its_braces() -> None:
    error = MastpipeError("a range is {min: ..., max: ...}", hint="write {min: 1}")
    error.name_parameters({"until": "--until"})
    assert str(error) == "a range is {min: ..., max: ...}\n  hint: write {min: 1}"
