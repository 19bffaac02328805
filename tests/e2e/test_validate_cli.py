"""``mastpipe validate``, ``--help``, ``--version`` as a user runs them: a real process, real files.

The bad-recipe corpus is the one of ``tests/unit/test_bad_recipes.py`` (loaded from that file, so
the two never drift apart). The unit tests check each case in-process (its exact problems and
hints); here the whole corpus goes through one real ``mastpipe validate`` process, which must exit
2, print exactly every case's problems and no traceback, and execute no unsafe tag. (One process
per case cost ~30 s and checked nothing more.)
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import click
import pytest

import mastpipe
from mastpipe.cli import main

ROOT = Path(__file__).resolve().parents[2]
PIPELINES = sorted((ROOT / "pipelines").glob("*.yaml"))

_spec = importlib.util.spec_from_file_location("bad_corpus", ROOT / "tests" / "unit" / "test_bad_recipes.py")
assert _spec and _spec.loader
corpus = importlib.util.module_from_spec(_spec)
sys.modules["bad_corpus"] = corpus  # dataclasses look their module up there
_spec.loader.exec_module(corpus)

#: FILE[:LINE:COL]: field.path: message -- the field path has no ": " in it.
PROBLEM_LINE = re.compile(r"^(?P<file>.+?)(?::(?P<line>\d+):(?P<col>\d+))?: (?P<field>[^:\s][^:]*?|<recipe>): (?P<message>\S.*)$")
HINT_LINE = re.compile(r"^  hint: \S.*$")


Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def run(cli: Run) -> Run:
    """``run(*args, cwd=ROOT)``: the shared ``cli`` helper, without the corpus's unset variables."""

    def validate(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
        return cli(*args, cwd=cwd, timeout=60, drop=(*corpus.UNSET, "MASTPIPE_DATA"))

    return validate


def assert_no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stdout + result.stderr, result.stderr


def assert_problem_format(stderr: str) -> None:
    lines = stderr.splitlines()
    assert lines, "a failure must say what failed"
    for i, line in enumerate(lines):
        if line.startswith("  "):
            assert HINT_LINE.match(line), line
            assert i > 0 and not lines[i - 1].startswith("  "), "one hint per problem, after it"
        else:
            assert PROBLEM_LINE.match(line), line
            assert i + 1 < len(lines) and lines[i + 1].startswith("  hint: "), f"no hint after {line!r}"


def test_the_whole_corpus_at_once_in_one_process(run: Run, tmp_path: Path) -> None:
    paths = [case.make(tmp_path) for case in corpus.CORPUS]
    result = run("validate", *map(str, paths))
    assert_no_traceback(result)
    assert result.returncode == 2
    assert result.stdout == ""
    expected = "".join(case.output(path) + "\n" for case, path in zip(corpus.CORPUS, paths))
    deep = re.compile(r"(deeper-than-the-parser-can-go\.yaml:2:)\d+")
    assert deep.sub(r"\1{deep}", result.stderr) == expected
    assert_problem_format(result.stderr)
    assert not (tmp_path / "MARKER").exists(), "an unsafe tag executed"


def test_valid_and_invalid_together_report_only_the_invalid(run: Run, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(corpus.BASE + "bogus: 1\n")
    good = tmp_path / "good.yaml"
    good.write_text(corpus.BASE)
    result = run("validate", str(PIPELINES[0]), str(bad), str(good))
    assert_no_traceback(result)
    assert result.returncode == 2
    assert result.stderr == (f"{bad}:7:1: bogus: unknown key 'bogus'\n  hint: allowed keys here: description, "
                             "expect, filter, mast, name, products, query, retrieve, state, unique, version\n")
    assert result.stdout.splitlines() == [f"{PIPELINES[0]}: valid (1 query, retrieve mode "
                                          f"{'curl' if 'curl' in PIPELINES[0].name else 'download'})",
                                          f"{good}: valid (1 query, retrieve mode download)"]
    quiet = run("validate", "--quiet", str(good), str(bad))
    assert quiet.returncode == 2 and quiet.stdout == "" and str(good) not in quiet.stderr


def test_every_example_pipeline_is_valid(run: Run) -> None:
    assert len(PIPELINES) >= 4
    result = run("validate", *map(str, PIPELINES))
    assert_no_traceback(result)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no warnings either: every example names its mission
    assert [line.split(": valid (")[0] for line in result.stdout.splitlines()] == list(map(str, PIPELINES))


def test_the_readme_glob_from_the_repository_root(mastpipe_argv: list[str]) -> None:
    result = subprocess.run(shlex.join(mastpipe_argv) + " validate pipelines/*.yaml", shell=True,
                            capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr


def test_a_warning_does_not_fail_validation(run: Run, tmp_path: Path) -> None:
    path = tmp_path / "warn.yaml"
    path.write_text("version: 1\nname: t\nquery:\n  q:\n    criteria:\n      proposal_id: '1073'\n")
    result = run("validate", str(path))
    assert result.returncode == 0
    assert result.stderr == (f"{path}:5:5: query.q.criteria: warning: no obs_collection: naming the mission "
                             "(e.g. JWST) makes MAST's search much faster\n"
                             "  hint: add e.g. `obs_collection: JWST` (or HST, TESS, ...) to the criteria\n")


def test_validate_without_arguments_is_a_usage_error(run: Run) -> None:
    result = run("validate")
    assert_no_traceback(result)
    assert result.returncode == 2
    assert "Missing argument 'RECIPE...'" in result.stderr


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [prefix]
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            found += _commands(command, prefix + (name,))
        else:
            found.append(prefix + (name,))
    return found


def test_the_command_list_is_read_from_the_cli() -> None:
    commands = _commands(main)
    assert () in commands and ("validate",) in commands and ("schema",) in commands


@pytest.mark.parametrize("command", _commands(main), ids=lambda c: " ".join(c) or "mastpipe")
def test_every_command_has_help_with_an_example(run: Run, command: tuple[str, ...]) -> None:
    result = run(*command, "--help")
    assert_no_traceback(result)
    assert result.returncode == 0, result.stderr
    assert "Example" in result.stdout, f"`mastpipe {' '.join(command)} --help` shows no example"
    # click rewraps paragraphs: without a \b line before them, example lines are run together
    example = result.stdout.split("Example", 1)[1].split("Options:", 1)[0]
    for line in example.splitlines():
        assert line.count("mastpipe ") <= 1, f"example lines run together in `--help`: {line.strip()}"
    assert result.stdout.startswith(f"Usage: mastpipe {' '.join(command)}".rstrip())


def test_version(run: Run) -> None:
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout == f"mastpipe, version {mastpipe.__version__}\n"


def test_commands_named_in_messages_exist() -> None:
    """A hint that says "run `mastpipe X`" must name a command that exists."""
    text = "\n".join("\n".join(case.expected) for case in corpus.CORPUS)
    named = set(re.findall(r"`mastpipe (\w+)", text))
    assert named, "the corpus names at least `mastpipe login`"
    assert named <= set(main.commands), named - set(main.commands)
