"""User mistakes and interruptions end `mastpipe run` with one clear line and a documented exit
code, never a traceback: the real command in a subprocess, against the sandbox."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _examples import edit

from mastpipe.sandbox import Sandbox

SEED = "pipelines/jwst-1073-nircam-uncal.yaml"
NAME = "jwst-1073-nircam-uncal"


def _assert_clean(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    assert "Aborted!" not in result.stderr, result.stderr


# -- H2: a destination that cannot be written fails before MAST is asked anything ------------


@pytest.mark.parametrize("blocker", ["pipelines/data/jwst-1073", "pipelines/data"],
                         ids=["destination-is-a-file", "parent-is-a-file"])
def test_unwritable_destination_fails_before_any_request(workdir: Path, cli, blocker: str) -> None:
    (workdir / blocker).parent.mkdir(parents=True, exist_ok=True)
    (workdir / blocker).write_text("not a directory\n")
    with Sandbox(seed=0) as sb:
        result = cli("run", SEED, "--mast-url", sb.url, cwd=workdir)
        requests = sb.log.records()
    _assert_clean(result)
    assert result.returncode == 2, result.stderr
    destination = workdir / "pipelines/data/jwst-1073"
    assert f"mastpipe: error: cannot write to {destination}" in result.stderr
    assert "retrieve.destination" in result.stderr and "hint:" in result.stderr
    if blocker == "pipelines/data":
        assert f"{workdir / 'pipelines/data'} is a file" in result.stderr
    assert requests == []  # nothing asked of MAST
    history = cli("history", SEED, "--json", cwd=workdir)
    [entry] = json.loads(history.stdout)
    assert entry["exit_code"] == 2 and "cannot write to" in entry["error"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a mode-555 directory regardless")
def test_read_only_destination_fails_before_any_request(workdir: Path, cli) -> None:
    data = workdir / "pipelines/data"
    data.mkdir()
    data.chmod(0o555)
    try:
        with Sandbox(seed=0) as sb:
            result = cli("run", SEED, "--mast-url", sb.url, cwd=workdir)
            requests = sb.log.records()
    finally:
        data.chmod(0o755)
    _assert_clean(result)
    assert result.returncode == 2 and "permission denied" in result.stderr and requests == []


# -- H3: a state directory that cannot be created -----------------------------------------------


def test_state_dir_that_cannot_be_created_names_it_and_suggests_state_dir(workdir: Path, cli) -> None:
    # the default state directory is .mastpipe/<name> beside the recipe: make .mastpipe a file
    (workdir / "pipelines/.mastpipe").write_text("")
    with Sandbox(seed=0) as sb:
        default = cli("run", SEED, "--mast-url", sb.url, cwd=workdir)
        explicit = cli("run", SEED, "--mast-url", sb.url, "--state-dir", "pipelines/.mastpipe/elsewhere",
                       cwd=workdir)
        requests = sb.log.records()
    for result in (default, explicit):
        _assert_clean(result)
        assert result.returncode == 2, result.stderr
        assert "cannot write to the state directory" in result.stderr
        assert f"{workdir / 'pipelines/.mastpipe'} is a file" in result.stderr
        assert "--state-dir" in result.stderr
    assert f"{workdir / 'pipelines/.mastpipe' / NAME}" in default.stderr
    assert requests == []


# -- H4: Ctrl-C and SIGTERM stop cleanly, are recorded, and a rerun resumes ---------------------


def _files_done(data: Path) -> list[Path]:
    return [p for p in data.rglob("*.fits") if not p.name.startswith(".")]


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
                         ids=["SIGINT", "SIGTERM"])
def test_interrupted_run_says_how_far_it_got_and_a_rerun_resumes(workdir: Path, cli, cli_spawn, signum: int,
                                                                 code: int) -> None:
    data = workdir / "pipelines/data/jwst-1073"
    # ~14 files of ~33 KiB at 20 kB/s per connection, 4 at a time: retrieve takes several seconds
    with Sandbox(seed=0, faults="download.bandwidth=20000") as sb:
        process = cli_spawn(
            "run", SEED, "--mast-url", sb.url, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            # as in a terminal: whatever this test runner inherited, the child gets SIGINT's default
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        try:
            deadline = time.monotonic() + 60
            while not _files_done(data) and time.monotonic() < deadline and process.poll() is None:
                time.sleep(0.05)
            assert process.poll() is None, "the run ended before it could be interrupted"
            assert _files_done(data), "no file was finished within 60 s"
            process.send_signal(signum)
            stdout, stderr = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
        assert process.returncode == code, stderr
        assert "Traceback" not in stderr and "Aborted!" not in stderr
        line = next(line for line in stderr.splitlines() if line.startswith("mastpipe: interrupted:"))
        done, total = (int(n) for n in line.split(": ")[-1].split(" files done")[0].split(" of "))
        assert 1 <= done < total == 14 and line.endswith("; rerun to resume")
        # a file renamed into place just as the signal came may not have been counted yet
        present = len(_files_done(data))
        assert present >= done

        sb.log.clear()
        sb.faults = None  # the rerun's speed is not under test
        rerun = cli("run", SEED, "--mast-url", sb.url, cwd=workdir)
        downloads = [r for r in sb.log.records() if r.endpoint == "download"]
    assert rerun.returncode == 0, rerun.stderr
    assert len(_files_done(data)) == 14
    assert len({r.uri for r in downloads}) == 14 - present  # only what was missing
    history = json.loads(cli("history", SEED, "--json", cwd=workdir).stdout)
    assert [entry["exit_code"] for entry in history] == [code, 0]
    assert history[0]["error"] == "interrupted during retrieve"


# -- M4, M5, L11: what a run prints ----------------------------------------------------------


def test_until_after_a_full_run_shows_its_stages_not_nothing_new(workdir: Path, cli) -> None:
    with Sandbox(seed=0) as sb:
        assert cli("run", SEED, "--mast-url", sb.url, "-q", cwd=workdir).returncode == 0
        partial = cli("run", SEED, "--mast-url", sb.url, "--until", "unique", cwd=workdir)
    assert partial.returncode == 0, partial.stderr
    assert "nothing new" not in partial.stdout and "all present" not in partial.stdout
    stages = [line.split()[0] for line in partial.stdout.splitlines()[1:]]
    assert stages == ["query", "products", "unique"]


def test_json_events_carry_the_plan_counts_and_fatal_errors(workdir: Path, cli) -> None:
    with Sandbox(seed=0) as sb:
        result = cli("run", SEED, "--mast-url", sb.url, "--json", cwd=workdir)
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    [plan] = [e for e in events if e.get("kind") == "plan"]
    fetched = [e for e in events if e.get("kind") == "fetched"]
    assert plan["files"] == 14 == len(fetched) and plan["skipped"] == 0
    assert plan["bytes"] == sum(e["bytes"] for e in fetched) > 14  # bytes, not the file count

    (workdir / "a-file").write_text("")
    failed = cli("run", SEED, "--mast-url", "http://127.0.0.1:9", "--json", "--state-dir", "a-file/state",
                 cwd=workdir)
    assert failed.returncode == 2
    [error] = [json.loads(line) for line in failed.stdout.splitlines()]
    assert error["event"] == "error" and error["exit_code"] == 2 and "state directory" in error["message"]
    assert error["hint"] and "--state-dir" in error["hint"]
    assert "mastpipe: error: cannot write to the state directory" in failed.stderr


def test_quiet_sandbox_run_prints_no_sandbox_banner(workdir: Path, cli) -> None:
    result = cli("run", SEED, "--sandbox", "-q", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert "sandbox: serving" not in result.stderr
    assert cli("plan", SEED, "--sandbox", "-q", cwd=workdir).stderr == ""


# -- M8: a missing optional Dask fails before MAST is asked anything ----------------------------


@pytest.mark.parametrize("how", [["--executor", "dask", "--scheduler", "local"], ["--scheduler", "local"], []],
                         ids=["--executor", "--scheduler", "recipe"])
def test_missing_dask_fails_before_any_request(workdir: Path, how: list[str]) -> None:
    recipe = workdir / SEED
    if not how:
        recipe.write_text(edit(recipe.read_text(), retrieve={"executor": {"kind": "dask", "scheduler": "local"}}))
    # Dask is installed here; a None entry in sys.modules is how Python marks a module that
    # cannot be imported, so `import distributed` fails in this process as if it were absent.
    hide = "import sys; sys.modules['distributed'] = None; from mastpipe.cli import main; main()"
    env = {k: v for k, v in os.environ.items() if k not in ("MASTPIPE_MAST_URL", "MAST_API_TOKEN")}
    with Sandbox(seed=0) as sb:
        result = subprocess.run([sys.executable, "-c", hide, "run", SEED, "--mast-url", sb.url, *how],
                                cwd=workdir, env=env, capture_output=True, text=True, timeout=120)
        requests = sb.log.records()
    _assert_clean(result)
    assert result.returncode == 2, result.stderr
    assert "needs Dask's distributed scheduler" in result.stderr and "mastpipe[dask]" in result.stderr
    assert requests == []


# -- L1, L2: sandbox serve blames the option at fault -------------------------------------------


def test_sandbox_serve_rejects_an_impossible_port(tmp_path: Path, cli) -> None:
    result = cli("sandbox", "serve", "--port", "99999", cwd=tmp_path, timeout=30)
    _assert_clean(result)
    assert result.returncode == 2 and "--port" in result.stderr and "65535" in result.stderr


def test_sandbox_serve_blames_an_unwritable_log(tmp_path: Path, cli) -> None:
    (tmp_path / "a-file").write_text("")
    result = cli("sandbox", "serve", "--log", "a-file/requests.jsonl", cwd=tmp_path, timeout=30)
    _assert_clean(result)
    assert result.returncode == 2, result.stderr
    assert "--log" in result.stderr and "cannot write to a-file/requests.jsonl" in result.stderr
    assert "cannot serve" not in result.stderr


# -- L3: mastpipe login without a terminal, and its exit codes ----------------------------------


def test_login_without_a_terminal_reads_stdin_and_exits_with_documented_codes(login) -> None:
    with Sandbox(seed=0, tokens={"good-token-0123456789": "A. User"}) as sb:
        refused = login(sb.url, "not-a-valid-token\n")
        empty = login(sb.url, "")
        no_keyring = login(sb.url, "good-token-0123456789\n", backend="keyring.backends.fail.Keyring")
    down = login("http://127.0.0.1:9", "good-token-0123456789\n")
    for result in (refused, empty, no_keyring, down):
        _assert_clean(result)
        assert "GetPassWarning" not in result.stderr
        assert "reading the token from stdin (no terminal)" in result.stderr
    assert refused.returncode == 2 and "not accepted" in refused.stderr  # bad input, not "MAST unreachable"
    assert empty.returncode == 2 and "mastpipe: error: no token given" in empty.stderr
    assert no_keyring.returncode == 2 and "cannot store the token" in no_keyring.stderr
    assert "MAST_API_TOKEN" in no_keyring.stderr
    assert down.returncode == 3 and "could not check the MAST token" in down.stderr
