"""Helpers every test directory shares: running the real command line, logging in, the slow marker.

* ``cli``: ``cli(*args, cwd=..., env=..., input=..., timeout=..., drop=(...), text=...)`` runs the installed
  ``mastpipe`` command in a subprocess, as a user would, with MAST_API_TOKEN, MASTPIPE_MAST_URL and
  the variables named in ``drop`` unset unless ``env`` sets them.
* ``cli_in_process``: the same call as ``cli``, run by click's ``CliRunner`` inside the test's
  process: same arguments, environment, working directory, exit code, stdout and stderr (an
  uncaught exception's traceback included), without the seconds a new interpreter spends importing
  astropy and astroquery. For tests of what a command does and says; tests of the process itself
  (the console script, signals, kill -9, two runs racing) keep ``cli`` or ``cli_spawn``.
* ``cli_spawn``: ``cli_spawn(*args, cwd=..., env=..., drop=(...), **popen)`` starts the same command
  with the same environment and returns the ``Popen`` without waiting: for the tests that need a
  separate process on purpose (signal or kill it, race it, read a server's address from it).
* ``mastpipe_argv``: the argv prefix that starts that command (for a shell line).
* ``login``: ``login(url, stdin, backend=..., **variables)`` runs ``mastpipe login --mast-url URL``
  with the token on stdin and a keyring in the test's temporary directory, never the real one.

Tests that take more than a few seconds are marked ``slow`` here, by module or by ``module::test``
(:data:`SLOW`), so ``python3 -m pytest -m "not slow"`` is the quick subset for people editing the code.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

#: Modules (or single tests) that start a subprocess (the CLI, astroquery), a Dask cluster or an S3
#: server, kill a run, or fetch whole example runs: seconds to minutes apiece on two shared cores.
#: Everything else takes about a second or less per test on an idle machine. Measured 2026-12-02 with
#: other jobs sharing the 2 cores (load ~10): the quick subset (~1000 tests) took ~3.5 min of wall time
#: of which ~35 s collection, so about a minute when the machine is idle (an estimate, not measured).
SLOW = frozenset({
    "e2e/test_cli_robustness.py", "e2e/test_error_attribution_cli.py", "e2e/test_examples.py",
    "e2e/test_init_cli.py", "e2e/test_pre_commit_hook.py", "e2e/test_readme.py", "e2e/test_run_cli.py",
    "e2e/test_tokens_cli.py", "e2e/test_validate_cli.py",
    "integration/test_dask_retrieve.py", "integration/test_full_disk.py", "integration/test_pipeline_faults.py",
    "integration/test_pipeline_recipes.py", "integration/test_pipeline_resume.py", "integration/test_reruns.py",
    "integration/test_sandbox_serve.py", "integration/test_sandbox_tutorial.py", "integration/test_transfer_kill.py",
    "integration/test_init_sandbox.py", "unit/test_import_cost.py",
    "integration/test_pipeline_missions.py", "integration/test_sandbox_missions.py",
    "e2e/test_cloud_cli.py", "integration/test_cloud_retrieve.py", "integration/test_sandbox_s3.py",
    "integration/test_sandbox_astroquery.py", "integration/test_malformed_rows.py",
    "e2e/test_html_browser.py", "e2e/test_scheduled_story.py",
    # single tests of modules that are otherwise quick: every combination of `mastpipe init`'s
    # options; status beside a run it kills -9
    "unit/test_init.py::test_every_option_combination_gives_a_valid_recipe_that_says_what_was_asked",
    "e2e/test_status_plan_cli.py::test_status_after_kill_9_mid_download_shows_the_files_and_the_stale_lock",
})
TESTS = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        try:
            where = Path(str(item.fspath)).resolve().relative_to(TESTS).as_posix()
        except ValueError:
            continue
        if where in SLOW or f"{where}::{getattr(item, 'originalname', item.name)}" in SLOW:
            item.add_marker(pytest.mark.slow)


def _argv() -> list[str]:
    """The installed console script of this interpreter, else the CLI's entry point run by it.

    The script beside ``sys.executable`` comes first: a ``mastpipe`` found on PATH may be another
    interpreter's (or a pyenv shim that costs a shell and a lookup per call).
    """
    beside = Path(sys.executable).with_name("mastpipe")
    if beside.is_file():
        return [str(beside)]
    command = shutil.which("mastpipe")
    if command:
        return [command]
    return [sys.executable, "-c", "from mastpipe.cli import main; main(prog_name='mastpipe')"]


def _environment(env: dict[str, str] | None, drop: tuple[str, ...] = ()) -> dict[str, str]:
    full = {k: v for k, v in os.environ.items() if k not in ("MASTPIPE_MAST_URL", "MAST_API_TOKEN", *drop)}
    full.update(env or {})
    return full


def mastpipe(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120,
             input: str | None = None, drop: tuple[str, ...] = (),
             text: bool = True) -> subprocess.CompletedProcess[Any]:
    """Run the installed command line exactly as a user would.

    ``drop`` names more variables to unset; ``text=False`` hands back stdout and stderr as bytes,
    for tests that compare the output byte for byte.
    """
    return subprocess.run([*_argv(), *args], cwd=cwd, env=_environment(env, drop), capture_output=True, text=text,
                          timeout=timeout, input=input)


def mastpipe_in_process(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120,
                        input: str | None = None, drop: tuple[str, ...] = (),
                        text: bool = True) -> subprocess.CompletedProcess[Any]:
    """:func:`mastpipe`, run in this process; ``timeout`` is accepted for the same call and unused."""
    import traceback
    import warnings

    from click.testing import CliRunner

    from mastpipe.cli import main

    changes: dict[str, str | None] = {name: None for name in ("MASTPIPE_MAST_URL", "MAST_API_TOKEN", *drop)}
    changes.update(env or {})
    here = os.getcwd()
    os.chdir(cwd)
    try:
        with warnings.catch_warnings(record=True) as shown:
            # the interpreter's default filters, not pytest's: a warning a user would see on stderr
            # is on stderr here too (one raised while importing a module this process has already
            # imported is not: the difference that remains)
            warnings.resetwarnings()
            warnings.simplefilter("default")
            for quiet in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
                warnings.simplefilter("ignore", quiet)
            result = CliRunner().invoke(main, list(args), input=input, env=changes, prog_name="mastpipe")
    finally:
        os.chdir(here)
    stdout, stderr, code = result.stdout_bytes, result.stderr_bytes, result.exit_code
    stderr += "".join(warnings.formatwarning(w.message, w.category, w.filename, w.lineno, w.line)
                      for w in shown).encode()
    if result.exc_info is not None and not isinstance(result.exc_info[1], SystemExit):
        # what the interpreter prints and returns for an uncaught exception
        stderr += "".join(traceback.format_exception(*result.exc_info)).encode()
        code = 1
    if text:
        return subprocess.CompletedProcess([*_argv(), *args], code, stdout.decode(), stderr.decode())
    return subprocess.CompletedProcess([*_argv(), *args], code, stdout, stderr)


def spawn(*args: str, cwd: Path, env: dict[str, str] | None = None, drop: tuple[str, ...] = (),
          **popen: Any) -> subprocess.Popen[Any]:
    """Start the command line as :func:`mastpipe` does, without waiting for it.

    ``popen`` goes to :class:`subprocess.Popen` as it is (``stdout=subprocess.PIPE``, ``text=True``,
    ``preexec_fn`` ...); the caller waits for, signals or kills the process.
    """
    return subprocess.Popen([*_argv(), *args], cwd=cwd, env=_environment(env, drop), **popen)


@pytest.fixture
def cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    """:func:`mastpipe`, as a fixture (test modules here are not a package)."""
    return mastpipe


@pytest.fixture
def cli_in_process() -> Callable[..., subprocess.CompletedProcess[str]]:
    """:func:`mastpipe_in_process`, as a fixture."""
    return mastpipe_in_process


@pytest.fixture
def cli_spawn() -> Callable[..., subprocess.Popen[Any]]:
    """:func:`spawn`, as a fixture."""
    return spawn


@pytest.fixture
def mastpipe_argv() -> list[str]:
    """The argv prefix that starts the ``mastpipe`` command."""
    return _argv()


@pytest.fixture
def login(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``mastpipe login`` with the token on stdin, storing into a keyring under ``tmp_path``."""

    def run(url: str, stdin: str, backend: str = "keyrings.alt.file.PlaintextKeyring",
            **variables: Any) -> subprocess.CompletedProcess[str]:
        env = _environment({"PYTHON_KEYRING_BACKEND": backend, "XDG_DATA_HOME": str(tmp_path / "xdg"),
                            **variables}, drop=("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE"))
        return subprocess.run([*_argv(), "login", "--mast-url", url], input=stdin, text=True,
                              capture_output=True, env=env, timeout=60)

    return run


@pytest.fixture(autouse=True)
def _private_column_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Mission column lists are cached in the user's cache directory (mastpipe.recipe.columns):
    each test gets its own, so none reads another's and none writes to the real one."""
    monkeypatch.setenv("MASTPIPE_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(autouse=True)
def _mastpipe_logger_restored() -> Any:
    """A command run in-process (click's CliRunner) points the ``mastpipe`` logger at its own
    handler and stops propagation; restore it so later tests' ``caplog`` still sees the records."""
    import logging

    logger = logging.getLogger("mastpipe")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved
