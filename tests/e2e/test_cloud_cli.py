"""`mastpipe run --sandbox --source auto` and `mastpipe plan --source`: the cloud, from the shell."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from _examples import example_recipe

pytest.importorskip("moto", reason="the sandbox's S3 bucket needs moto (pip install 'mastpipe[test]')")
pytest.importorskip("boto3", reason="source cloud/auto needs boto3 (pip install 'mastpipe[cloud]')")

REPO = Path(__file__).resolve().parents[2]
TUTORIAL = "jwst-1073-nircam-uncal.yaml"
DROP = ("MASTPIPE_S3_ENDPOINT",)  # the runs start their own bucket


@pytest.fixture
def cli(cli_in_process):  # type: ignore[no-untyped-def]
    """What the commands print and leave on disk is the point here, not their process: run them in
    this one (the console script itself is tested in test_run_cli.py and test_cli_robustness.py)."""
    return cli_in_process


def test_run_sandbox_source_auto_then_a_rerun_that_asks_nothing(cli, tmp_path: Path) -> None:
    shutil.copy(REPO / "pipelines" / TUTORIAL, tmp_path / TUTORIAL)
    before = cli("plan", "--sandbox", "--source", "auto", TUTORIAL, cwd=tmp_path, drop=DROP, timeout=600)
    assert before.returncode == 0, before.stderr
    assert "source auto: of 14 file(s), 0 have a cloud copy" in before.stdout, before.stdout
    assert "14 still to be located when the run starts" in before.stdout
    first = cli("run", "--sandbox", "--source", "auto", TUTORIAL, cwd=tmp_path, drop=DROP, timeout=600)
    assert first.returncode == 0, first.stderr
    assert "serving its cloud bucket at http://127.0.0.1:" in first.stderr
    assert " from S3), 0 already present, 0 failed" in first.stdout, first.stdout
    manifest = json.loads((tmp_path / "data/jwst-1073/manifest.json").read_text())
    assert {row["source"] for row in manifest} == {"s3", "mast"}
    assert all(row["s3_url"].startswith("http://127.0.0.1:") for row in manifest if row["source"] == "s3")
    again = cli("run", "--sandbox", "--source", "auto", TUTORIAL, cwd=tmp_path, drop=DROP, timeout=600)
    assert again.returncode == 0, again.stderr
    plan = cli("plan", "--sandbox", "--source", "cloud", TUTORIAL, cwd=tmp_path, drop=DROP, timeout=600)
    assert plan.returncode == 0 and "0 to fetch" in plan.stdout, plan.stdout + plan.stderr
    assert "source cloud: of 0 file(s)" in plan.stdout


def test_an_unknown_source_is_a_usage_error(cli, tmp_path: Path) -> None:
    shutil.copy(REPO / "pipelines" / TUTORIAL, tmp_path / TUTORIAL)
    bad = cli("run", "--source", "s4", TUTORIAL, cwd=tmp_path, drop=DROP, timeout=600)
    assert bad.returncode == 2 and "'s4' is not one of 'mast', 'cloud', 'auto'" in bad.stderr
    example_recipe(tmp_path, filename=TUTORIAL, retrieve={"source": "clouds"})
    invalid = cli("validate", TUTORIAL, cwd=tmp_path, drop=DROP, timeout=600)
    assert invalid.returncode == 2 and "retrieve.source" in invalid.stdout + invalid.stderr
