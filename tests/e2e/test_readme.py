"""The README is the front door: its commands must be the ones CI and users run."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _quick_start_commands() -> list[str]:
    readme = (REPO / "README.md").read_text()
    block = readme.split("## Quick start", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    return [line.strip() for line in block.splitlines() if line.strip() and not line.strip().startswith("#")]


def test_quick_start_is_two_commands_and_ci_runs_the_test_command_verbatim() -> None:
    commands = _quick_start_commands()
    assert len(commands) == 2
    ci = (REPO / ".ci" / "run").read_text()
    assert commands[1] in ci.splitlines(), "README's test command and .ci/run's differ"


def test_quick_start_main_job_runs_as_written(workdir: Path, cli) -> None:
    main_job = _quick_start_commands()[0]
    install, _, command = main_job.partition(" && ")
    assert install == "python3 -m pip install -e ."  # installing is what the test session already did
    argv = command.split()
    assert argv[0] == "mastpipe"
    result = cli(*argv[1:], cwd=workdir)
    assert result.returncode == 0, result.stderr
    files = list((workdir / "pipelines/data/jwst-1073/mastDownload/JWST").rglob("*_uncal.fits"))
    assert files, "the main job left no files on disk"
    assert re.search(r"retrieve: \d+ fetched", result.stdout)
