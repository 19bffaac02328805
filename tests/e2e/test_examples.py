"""The CI examples in examples/ run as written: every `mastpipe` command of each workflow, against
the sandbox, in a copy of the repository's recipes; then, after MAST gains an observation, a second
scheduled run starting from exactly what the workflow caches downloads only the new file.

Only CI plumbing is skipped: steps that use an action (checkout, setup-python, cache, upload) and
`pip install` lines. Everything else in a `run:` / `script:` entry runs in bash, with the
workflow's own environment; the server comes from MASTPIPE_MAST_URL (a repository variable or
CI/CD variable in the workflows), which the test points at the sandbox.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from mastpipe.sandbox import Sandbox

REPO = Path(__file__).resolve().parents[2]
GITHUB = REPO / "examples" / "github-actions" / "mastpipe.yml"
GITLAB = REPO / "examples" / "gitlab-ci" / ".gitlab-ci.yml"
PLUMBING = re.compile(r"^\s*(python3? -m )?pip3? install\b")


@dataclass
class Step:
    """One shell script of a workflow, with the environment it runs in."""

    name: str
    script: str
    env: dict[str, str]
    always: bool = False


@dataclass
class Workflow:
    steps: list[Step]
    cache_paths: list[str]
    artifact_paths: list[str]
    extra: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------
# GitHub Actions


def _github_expression(text: str, context: dict[str, dict[str, str]], workdir: Path) -> str:
    """Evaluate the few ``${{ ... }}`` forms the example uses; anything else fails the test."""

    def one(match: re.Match[str]) -> str:
        expression = match.group(1).strip()
        hashed = re.fullmatch(r"hashFiles\((.+)\)", expression)
        if hashed:
            pattern = _github_expression("${{ " + hashed.group(1) + " }}", context, workdir) \
                if not hashed.group(1).startswith("'") else hashed.group(1).strip("'")
            files = sorted(glob.glob(str(workdir / pattern)))
            assert files, f"hashFiles({pattern}) matches no file"
            return hashlib.sha256(b"".join(Path(f).read_bytes() for f in files)).hexdigest()
        scope, _, name = expression.partition(".")
        assert scope in context and re.fullmatch(r"\w+", name), f"unsupported expression ${{{{ {expression} }}}}"
        return context[scope].get(name, "")

    return re.sub(r"\$\{\{(.*?)\}\}", one, text)


def github_workflow(path: Path, workdir: Path, variables: dict[str, str], secrets: dict[str, str]) -> Workflow:
    data = yaml.safe_load(path.read_text())
    context: dict[str, dict[str, str]] = {"vars": variables, "secrets": secrets,
                                          "github": {"run_id": "4242", "run_attempt": "1", "ref": "refs/heads/main"}, "env": {}}
    env = {k: _github_expression(str(v), context, workdir) for k, v in (data.get("env") or {}).items()}
    context["env"] = env
    ((_, job),) = data["jobs"].items()
    env = {**env, **{k: _github_expression(str(v), context, workdir) for k, v in (job.get("env") or {}).items()}}
    steps, cache_paths, artifacts, keys, restore_keys = [], [], [], [], []
    for step in job["steps"]:
        context["env"] = env
        if "uses" in step:
            action = step["uses"].split("@")[0]
            options = {k: _github_expression(str(v), context, workdir) for k, v in (step.get("with") or {}).items()}
            if action.startswith("actions/cache"):
                cache_paths.append(options["path"].split())
                keys.append(options.get("key", ""))
                restore_keys += options.get("restore-keys", "").split()
            if action == "actions/upload-artifact":
                artifacts += options["path"].split()
            continue
        step_env = {**env, **{k: _github_expression(str(v), context, workdir) for k, v in (step.get("env") or {}).items()}}
        steps.append(Step(step.get("name", step["run"]), step["run"], step_env, always="always()" in str(step.get("if", ""))))
    assert cache_paths and all(p == cache_paths[0] for p in cache_paths), "restore and save must cache the same paths"
    return Workflow(steps, cache_paths[0], artifacts, {"keys": keys, "restore_keys": restore_keys, "data": data,
                                                       "job": job})


# ------------------------------------------------------------------------------------------------
# GitLab CI


def _gitlab_expand(text: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), ""), text)


def gitlab_workflow(path: Path, job_name: str, project_variables: dict[str, str]) -> Workflow:
    data = yaml.safe_load(path.read_text())
    job = data[job_name]
    env = dict(project_variables)
    for scope in (data.get("variables") or {}, job.get("variables") or {}):
        env.update({k: _gitlab_expand(str(v), env) for k, v in scope.items()})
    default = data.get("default") or {}
    steps = []
    for part in ("before_script", "script", "after_script"):
        lines = job.get(part, default.get(part) if part != "script" else None) or []
        steps += [Step(f"{job_name}.{part}", line, env, always=part == "after_script") for line in lines]
    cache = job.get("cache") or {}
    return Workflow(steps, list(cache.get("paths", [])), list((job.get("artifacts") or {}).get("paths", [])),
                    {"cache": cache, "job": job, "data": data})


# ------------------------------------------------------------------------------------------------
# Running


def _base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("MASTPIPE_MAST_URL", "MAST_API_TOKEN", "GITHUB_STEP_SUMMARY")}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def run_steps(workflow: Workflow, workdir: Path) -> list[str]:
    """Run every non-plumbing line of every step; return the `mastpipe` commands that ran."""
    ran: list[str] = []
    failed = False
    for step in workflow.steps:
        lines = [line for line in step.script.splitlines() if line.strip() and not PLUMBING.match(line)]
        if not lines or (failed and not step.always):
            continue
        result = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", "\n".join(lines)], cwd=workdir,
                                env={**_base_env(), **step.env}, capture_output=True, text=True, timeout=300)
        assert "Traceback" not in result.stderr, result.stderr
        assert result.returncode == 0, f"step {step.name!r} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        ran += [line.strip() for line in lines if line.strip().startswith("mastpipe ")]
    return ran


def _fresh_checkout(tmp_path: Path, name: str) -> Path:
    workdir = tmp_path / name
    workdir.mkdir()
    shutil.copytree(REPO / "pipelines", workdir / "pipelines", ignore=shutil.ignore_patterns("data", ".mastpipe"))
    shutil.copytree(REPO / "schemas", workdir / "schemas")
    return workdir


def _restore_cache(paths: list[str], source: Path, target: Path) -> None:
    for entry in paths:
        found = source / entry
        assert found.exists(), f"the workflow caches {entry}, which the run did not create"
        if found.is_dir():
            shutil.copytree(found, target / entry, dirs_exist_ok=True)
        else:
            (target / entry).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(found, target / entry)


def _check_artifacts(paths: list[str], workdir: Path) -> None:
    for pattern in paths:
        assert glob.glob(str(workdir / pattern)), f"the artifact path {pattern} matches nothing after the run"


def _two_scheduled_runs(tmp_path: Path, make: Callable[[Path, str], Workflow]) -> tuple[list[str], Workflow]:
    with Sandbox(seed=0) as sb:
        first = _fresh_checkout(tmp_path, "run1")
        workflow = make(first, sb.url)
        ran = run_steps(workflow, first)
        downloads = [r for r in sb.log.records() if r.endpoint == "download"]
        assert downloads, "the first run downloaded nothing: did the workflow reach the sandbox?"
        assert all(r.status in (200, 206) for r in downloads)
        _check_artifacts(workflow.artifact_paths, first)

        # MAST gains an observation, then the next scheduled run starts: a fresh checkout plus
        # exactly what the workflow caches. It must fetch the new observation's file, and only it.
        new = sb.catalog.add_observation(n_products=2)
        wanted = [p["dataURI"] for p in sb.catalog.products(new["obsid"]) if p["productSubGroupDescription"] == "UNCAL"]
        assert len(wanted) == 1
        sb.log.clear()
        second = _fresh_checkout(tmp_path, "run2")
        _restore_cache(workflow.cache_paths, first, second)
        again = make(second, sb.url)
        assert run_steps(again, second) == ran
        assert [r for r in sb.log.records() if r.endpoint == "query"], \
            "the second run did not ask MAST again: a scheduled rerun would never see new data"
        fetched = sorted({r.uri for r in sb.log.records() if r.endpoint == "download"})
        assert fetched == wanted, "the second run should fetch the new file only (the cache misses part of the state?)"
        _check_artifacts(again.artifact_paths, second)
    return ran, workflow


def test_github_actions_example_runs_as_written(tmp_path: Path) -> None:
    def make(workdir: Path, url: str) -> Workflow:
        return github_workflow(GITHUB, workdir, variables={"MASTPIPE_MAST_URL": url}, secrets={"MAST_API_TOKEN": ""})

    ran, workflow = _two_scheduled_runs(tmp_path, make)
    assert any(c.startswith("mastpipe validate ") for c in ran)
    assert any(c.startswith("mastpipe run ") for c in ran)
    data, job = workflow.extra["data"], workflow.extra["job"]
    triggers = data.get("on", data.get(True))  # YAML 1.1 reads a bare `on` as true
    assert re.fullmatch(r"[\d*/,-]+( [\d*/,-]+){4}", triggers["schedule"][0]["cron"])
    # the cache key is the recipe's hash (plus the run, so that every run saves a new entry)
    recipe_hash = hashlib.sha256((REPO / "pipelines/jwst-1073-nircam-uncal.yaml").read_bytes()).hexdigest()
    assert all(recipe_hash in key for key in workflow.extra["keys"])
    assert len(workflow.extra["keys"]) == 2 and len(set(workflow.extra["keys"])) == 1, "restore and save keys differ"
    # an edited recipe (another hash) still restores the newest state: GitHub matches restore-keys
    # as prefixes of the saved keys, newest first
    saved = workflow.extra["keys"][0]
    edited = tmp_path / "edited"
    (edited / "pipelines").mkdir(parents=True)
    (edited / "pipelines/jwst-1073-nircam-uncal.yaml").write_text(
        (REPO / "pipelines/jwst-1073-nircam-uncal.yaml").read_text() + "# edited\n")
    after_edit = github_workflow(GITHUB, edited, variables={}, secrets={"MAST_API_TOKEN": ""})
    assert after_edit.extra["keys"][0] != saved, "the edit changes the key"
    assert any(saved.startswith(prefix) for prefix in after_edit.extra["restore_keys"]), \
        "an edited recipe would start from nothing: every file fetched again, the history lost"
    assert ".mastpipe" in workflow.cache_paths
    # the token comes from the repository's secrets, and only into the step that needs it
    run_step = next(s for s in job["steps"] if "mastpipe run" in s.get("run", ""))
    assert run_step["env"]["MAST_API_TOKEN"] == "${{ secrets.MAST_API_TOKEN }}"
    assert "MAST_API_TOKEN" not in (data.get("env") or {})


def test_gitlab_ci_example_runs_as_written(tmp_path: Path) -> None:
    def make(workdir: Path, url: str) -> Workflow:
        return gitlab_workflow(GITLAB, "mastpipe-rerun", {"MASTPIPE_MAST_URL": url, "CI_PIPELINE_SOURCE": "schedule"})

    ran, workflow = _two_scheduled_runs(tmp_path, make)
    assert any(c.startswith("mastpipe validate ") for c in ran)
    assert any(c.startswith("mastpipe run ") for c in ran)
    cache = workflow.extra["cache"]
    # one key whatever the recipe's content: an edit keeps the state (fingerprints decide)
    assert isinstance(cache["key"], str) and "$" not in cache["key"], cache["key"]
    assert ".mastpipe/" in cache["paths"] and cache.get("when") == "always"
    rules = workflow.extra["job"]["rules"]
    assert any("schedule" in rule["if"] for rule in rules)


def test_gitlab_validate_job_runs_as_written(tmp_path: Path) -> None:
    workflow = gitlab_workflow(GITLAB, "validate-recipes", {"CI_PIPELINE_SOURCE": "push"})
    workdir = _fresh_checkout(tmp_path, "push")
    assert run_steps(workflow, workdir) == ["mastpipe validate pipelines/*.yaml"]
    (workdir / "pipelines" / "broken.yaml").write_text("version: 1\nname: broken\nquery: {}\n")
    with pytest.raises(AssertionError, match="exited 2"):
        run_steps(workflow, workdir)


@pytest.mark.parametrize("path", [GITHUB, GITLAB], ids=["github", "gitlab"])
def test_every_shell_line_is_a_mastpipe_command_or_known_plumbing(path: Path) -> None:
    """So that nothing the test skips or runs differently can hide a command from it."""
    data = yaml.safe_load(path.read_text())
    lines: list[str] = []
    if path == GITHUB:
        for job in data["jobs"].values():
            lines += [line for step in job["steps"] if "run" in step for line in step["run"].splitlines()]
    else:
        for _name, job in data.items():
            if isinstance(job, dict):
                for part in ("before_script", "script", "after_script"):
                    lines += list(job.get(part) or [])
    lines = [line.strip() for line in lines if line.strip()]
    assert any(line.startswith("mastpipe run ") for line in lines)
    for line in lines:
        assert line.startswith("mastpipe ") or PLUMBING.match(line) or line.startswith("mkdir -p "), line
