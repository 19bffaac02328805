"""Fixtures that run a real local MAST (``mastpipe.sandbox``) for integration tests.

* ``sandbox``: a running :class:`~mastpipe.sandbox.Sandbox` (seed 0, token ``good-token``).
* ``sandbox_factory``: ``sandbox_factory(seed=..., faults=..., tokens=..., row_cap=..., scale=...)``
  starts more sandboxes; all are stopped at teardown.
* ``astroquery_env``: ``astroquery_env(url) -> env`` writes ``<tmp>/xdg/astropy/astroquery.cfg``
  pointing ``[mast] server`` at ``url`` and returns an environment for subprocesses that run
  unmodified astroquery (recipe A of the protocol spec: astroquery fixes its URLs at import).
* ``run_astroquery``: ``run_astroquery(url, code, cwd=...) -> CompletedProcess`` runs a Python
  snippet with that environment; on failure the assertion shows stdout and stderr.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mastpipe.sandbox import Sandbox

GOOD_TOKEN = "good-token"
GOOD_NAME = "A. User"


@pytest.fixture
def sandbox_factory():
    """Start sandboxes with custom settings; stops them all at teardown."""
    started: list[Sandbox] = []

    def make(**kwargs) -> Sandbox:
        kwargs.setdefault("tokens", {GOOD_TOKEN: GOOD_NAME})
        sb = Sandbox(**kwargs).start()
        started.append(sb)
        return sb

    yield make
    for sb in started:
        sb.stop()


@pytest.fixture
def sandbox(sandbox_factory) -> Sandbox:
    """A running sandbox with the default catalogue (seed 0) and token ``good-token``."""
    return sandbox_factory(seed=0)


@pytest.fixture(scope="module")
def cloud_sandbox():
    """A sandbox with its S3 bucket (moto), shared by a module's tests: moto takes seconds to start."""
    pytest.importorskip("moto", reason="the sandbox's S3 bucket needs moto (pip install 'mastpipe[test]')")
    with Sandbox(seed=0, tokens={GOOD_TOKEN: GOOD_NAME}, s3=True) as sandbox:
        yield sandbox


@pytest.fixture
def sb(cloud_sandbox):
    """:func:`cloud_sandbox` with no faults and an empty request log, for each test."""
    cloud_sandbox.faults = None
    cloud_sandbox.log.clear()
    return cloud_sandbox


def make_astroquery_env(url: str, root: Path, base_env: "dict | None" = None) -> dict:
    """Write ``root/xdg/astropy/astroquery.cfg`` for ``url`` and return a subprocess env."""
    xdg = Path(root) / "xdg"
    (xdg / "astropy").mkdir(parents=True, exist_ok=True)
    (xdg / "astropy" / "astroquery.cfg").write_text(f"[mast]\nserver = {url}\n")
    cache = Path(root) / "xdg-cache"
    (cache / "astropy").mkdir(parents=True, exist_ok=True)
    env = dict(os.environ if base_env is None else base_env)
    env.update({
        "XDG_CONFIG_HOME": str(xdg),
        "XDG_CACHE_HOME": str(cache),
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        "PYTHONUNBUFFERED": "1",
    })
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "MAST_API_TOKEN"):
        env.pop(var, None)
    return env


@pytest.fixture
def astroquery_env(tmp_path):
    """``astroquery_env(url) -> env`` for subprocesses running unmodified astroquery."""

    def make(url: str) -> dict:
        return make_astroquery_env(url, tmp_path)

    return make


@pytest.fixture
def run_astroquery(astroquery_env, tmp_path):
    """``run_astroquery(url, code, cwd=None, timeout=120, env_extra=None)``: run astroquery code."""

    def run(url: str, code: str, cwd: "Path | None" = None, timeout: float = 120,
            env_extra: "dict | None" = None, check: bool = True) -> subprocess.CompletedProcess:
        env = astroquery_env(url)
        env.update(env_extra or {})
        script = tmp_path / "aq_script.py"
        script.write_text(textwrap.dedent(code))
        proc = subprocess.run([sys.executable, str(script)], cwd=str(cwd or tmp_path), env=env,
                              capture_output=True, text=True, timeout=timeout)
        if check:
            assert proc.returncode == 0, f"astroquery script failed\nSTDOUT:\n{proc.stdout}\nSTDERR:\n{proc.stderr}"
        return proc

    return run
