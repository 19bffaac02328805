"""`mastpipe run --sandbox --source auto` and `mastpipe plan --source`: the cloud, from the shell."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("moto", reason="the sandbox's S3 bucket needs moto (pip install 'mastpipe[test]')")
pytest.importorskip("boto3", reason="source cloud/auto needs boto3 (pip install 'mastpipe[cloud]')")

REPO = Path(__file__).resolve().parents[2]
TUTORIAL = "jwst-1073-nircam-uncal.yaml"


def _mastpipe(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("MASTPIPE_S3_ENDPOINT", "MAST_API_TOKEN")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return subprocess.run([sys.executable, "-m", "mastpipe.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_run_sandbox_source_auto_then_a_rerun_that_asks_nothing(tmp_path: Path) -> None:
    shutil.copy(REPO / "pipelines" / TUTORIAL, tmp_path / TUTORIAL)
    before = _mastpipe("plan", "--sandbox", "--source", "auto", TUTORIAL, cwd=tmp_path)
    assert before.returncode == 0, before.stderr
    assert "source auto: of 14 file(s), 0 have a cloud copy" in before.stdout, before.stdout
    assert "14 still to be located when the run starts" in before.stdout
    first = _mastpipe("run", "--sandbox", "--source", "auto", TUTORIAL, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "serving its cloud bucket at http://127.0.0.1:" in first.stderr
    assert " from S3), 0 already present, 0 failed" in first.stdout, first.stdout
    manifest = json.loads((tmp_path / "data/jwst-1073/manifest.json").read_text())
    assert {row["source"] for row in manifest} == {"s3", "mast"}
    assert all(row["s3_url"].startswith("http://127.0.0.1:") for row in manifest if row["source"] == "s3")
    again = _mastpipe("run", "--sandbox", "--source", "auto", TUTORIAL, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    plan = _mastpipe("plan", "--sandbox", "--source", "cloud", TUTORIAL, cwd=tmp_path)
    assert plan.returncode == 0 and "0 to fetch" in plan.stdout, plan.stdout + plan.stderr
    assert "source cloud: of 0 file(s)" in plan.stdout


def test_an_unknown_source_is_a_usage_error(tmp_path: Path) -> None:
    shutil.copy(REPO / "pipelines" / TUTORIAL, tmp_path / TUTORIAL)
    bad = _mastpipe("run", "--source", "s4", TUTORIAL, cwd=tmp_path)
    assert bad.returncode == 2 and "'s4' is not one of 'mast', 'cloud', 'auto'" in bad.stderr
    recipe = tmp_path / TUTORIAL
    recipe.write_text(recipe.read_text() + "  source: clouds\n")
    invalid = _mastpipe("validate", TUTORIAL, cwd=tmp_path)
    assert invalid.returncode == 2 and "retrieve.source" in invalid.stdout + invalid.stderr
