"""`mastpipe status` and `mastpipe plan` as a user runs them after real runs against the sandbox."""

from __future__ import annotations

import re
from pathlib import Path

SEED = "pipelines/jwst-1073-nircam-uncal.yaml"
STAGES = ("query", "products", "unique", "filter")


def _stage_lines(stdout: str) -> dict[str, str]:
    """``status`` output by stage: the line of each stage, keyed by its first word."""
    return {line.split()[0]: line for line in stdout.splitlines()[1:] if line.startswith("  ")}


def test_status_without_sandbox_names_the_server_not_the_recipe(workdir: Path, cli) -> None:
    run = cli("run", "--sandbox", SEED, cwd=workdir)
    assert run.returncode == 0, run.stderr
    sandbox_url = re.search(r"serving a local MAST stand-in at (\S+)", run.stderr).group(1)  # type: ignore[union-attr]

    status = cli("status", SEED, cwd=workdir)  # no --sandbox: the checkpoints are the sandbox's
    assert status.returncode == 0, status.stderr
    lines = _stage_lines(status.stdout)
    changed = f"MAST server changed (mastpipe-sandbox:seed=0 at {sandbox_url} → https://mast.stsci.edu)"
    for stage in ("query", "products"):
        assert " stale " in lines[stage] and changed in lines[stage], status.stdout
    assert "recipe section" not in status.stdout

    # with --sandbox they match, although the next sandbox listens on another port
    status = cli("status", "--sandbox", SEED, cwd=workdir)
    assert all(" done " in _stage_lines(status.stdout)[stage] for stage in STAGES), status.stdout
    again = cli("run", "--sandbox", SEED, cwd=workdir)
    assert again.returncode == 0, again.stderr
    assert all(f"{stage}: reused checkpoint" in again.stderr for stage in STAGES), again.stderr
