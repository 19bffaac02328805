"""`mastpipe status` and `mastpipe plan` as a user runs them after real runs against the sandbox."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mastpipe.stages.retrieve.progress import format_bytes

SEED = "pipelines/jwst-1073-nircam-uncal.yaml"
STAGES = ("query", "products", "unique", "filter")


@pytest.fixture
def cli(cli_in_process):  # type: ignore[no-untyped-def]
    """What the commands print and leave on disk is the point here, not their process: run them in
    this one (the console script itself is tested in test_run_cli.py and test_cli_robustness.py)."""
    return cli_in_process


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
    assert all(" current " in _stage_lines(status.stdout)[stage] for stage in STAGES), status.stdout
    again = cli("run", "--sandbox", SEED, cwd=workdir)
    assert again.returncode == 0, again.stderr
    assert all(f"{stage}: reused checkpoint" in again.stderr for stage in STAGES), again.stderr


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def test_plan_after_a_complete_run_has_nothing_to_fetch(workdir: Path, cli) -> None:
    fresh = cli("plan", "--sandbox", SEED, cwd=workdir)
    assert fresh.returncode == 0, fresh.stderr
    assert "14 files (466.9 KiB): 14 to fetch (466.9 KiB), 0 already present" in fresh.stdout, fresh.stdout
    assert "JWST" in fresh.stdout and "UNCAL" in fresh.stdout  # the breakdown of what is to fetch

    run = cli("run", "--sandbox", SEED, cwd=workdir)
    assert run.returncode == 0, run.stderr
    state = workdir / "pipelines/.mastpipe/jwst-1073-nircam-uncal"
    data = workdir / "pipelines/data"
    before = (_tree(data), (state / "ledger.sqlite").read_bytes())
    plan = cli("plan", "--sandbox", SEED, cwd=workdir)
    assert plan.returncode == 0, plan.stderr
    assert plan.stdout.splitlines() == [
        "6 observations, 14 files (466.9 KiB): 0 to fetch (0 B), 14 already present"]
    assert (_tree(data), (state / "ledger.sqlite").read_bytes()) == before  # plan changed nothing

    # one file gone: plan and the next run agree on it
    gone = sorted(data.rglob("*_uncal.fits"))[0]
    size = gone.stat().st_size
    gone.unlink()
    plan = cli("plan", "--sandbox", SEED, cwd=workdir)
    assert f": 1 to fetch ({format_bytes(size)}), 13 already present" in plan.stdout, plan.stdout
    run = cli("run", "--sandbox", SEED, cwd=workdir)
    assert f"1 fetched ({format_bytes(size)}), 13 already present" in run.stdout, run.stdout


def test_status_after_kill_9_mid_download_shows_the_files_and_the_stale_lock(workdir: Path, cli,
                                                                            cli_spawn) -> None:
    import os
    import signal
    import subprocess
    import time

    from mastpipe.sandbox import Faults, Sandbox
    from mastpipe.stages.retrieve.temporaries import size_of

    data = workdir / "pipelines/data/jwst-1073/mastDownload"
    with Sandbox(seed=0) as sb:
        # ~3.4 s per file of ~33 KiB: the run is surely still going after `status` has answered
        sb.faults = Faults.parse("download.bandwidth=10000")
        proc = cli_spawn("run", "-q", SEED, "--mast-url", sb.url, cwd=workdir,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                complete = list(data.rglob("*_uncal.fits")) if data.exists() else []
                # size_of, not stat(): a temporary listed a moment ago may be renamed by now
                parts = [p for p in data.rglob(".*.part") if (size_of(p) or 0) > 0] if data.exists() else []
                if len(complete) >= 2 and parts:
                    break
                time.sleep(0.02)
            else:
                raise AssertionError("the run never reached a mid-download state")
            live = cli("status", SEED, "--mast-url", sb.url, cwd=workdir)
            assert f"lock: held by a run in progress (pid {proc.pid} on" in live.stdout, live.stdout
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.wait(timeout=10)
        assert proc.returncode == -signal.SIGKILL

        present = len(list(data.rglob("*_uncal.fits")))
        partial = [p for p in data.rglob(".*.part") if p.stat().st_size > 0 and Path(f"{p}.json").exists()]
        assert 2 <= present < 14 and partial
        status = cli("status", SEED, "--mast-url", sb.url, cwd=workdir)
        assert status.returncode == 0, status.stderr
        lines = _stage_lines(status.stdout)
        assert all(" current " in lines[stage] for stage in STAGES), status.stdout
        retrieve = lines["retrieve"]
        assert " partial " in retrieve and " 14 files " in retrieve, status.stdout
        assert f"{present} of 14 files present, {14 - present} to fetch (" in retrieve, status.stdout
        assert f"{len(partial)} partly downloaded, to resume" in retrieve, status.stdout
        assert f"lock: stale, left by a run that no longer runs (pid {proc.pid} on" in status.stdout, status.stdout
        # status only reads: the rerun resumes the partial files and finishes the rest
        sb.faults = Faults.parse("")
        rerun = cli("run", SEED, "--mast-url", sb.url, cwd=workdir)
        assert rerun.returncode == 0, rerun.stderr
        assert f"{14 - present} fetched" in rerun.stdout and f"{present} already present" in rerun.stdout, rerun.stdout
        done = cli("status", SEED, "--mast-url", sb.url, cwd=workdir)
    assert "(14 of 14 files present, 0 to fetch (0 B))" in _stage_lines(done.stdout)["retrieve"], done.stdout
    assert " done " in _stage_lines(done.stdout)["retrieve"] and "lock:" not in done.stdout


def test_plan_and_status_json_are_the_library_data(workdir: Path, cli) -> None:
    import json

    plan = cli("plan", "--sandbox", "--json", SEED, cwd=workdir)
    assert plan.returncode == 0, plan.stderr
    data = json.loads(plan.stdout)  # stdout holds the JSON object and nothing else
    assert data["kind"] == "plan" and data["recipe"] == "jwst-1073-nircam-uncal"
    assert (data["files"], data["to_fetch"], data["present"], data["bytes_to_fetch"]) == (14, 14, 0, 478080)
    assert [(g["collection"], g["product"]) for g in data["breakdown"]] == [("JWST", "UNCAL")]

    refreshed = cli("plan", "--sandbox", "--json", "--refresh", SEED, cwd=workdir)
    assert refreshed.returncode == 0, refreshed.stderr
    assert [s["reasons"] for s in json.loads(refreshed.stdout)["stages"][:2]] == [["--refresh"], ["--refresh"]]

    status = cli("status", "--sandbox", "--json", SEED, cwd=workdir)
    assert status.returncode == 0, status.stderr
    data = json.loads(status.stdout)
    assert [(s["stage"], s["state"]) for s in data["stages"]] == [(s, "current") for s in STAGES]
    assert data["retrieve"]["state"] == "missing" and data["retrieve"]["to_fetch"] == 14
    assert data["lock"] is None

    broken = cli("status", "--json", "nope.yaml", cwd=workdir)
    assert broken.returncode == 2 and json.loads(broken.stdout)["event"] == "error"
