"""``mastpipe --help`` and ``mastpipe validate`` never import astropy or astroquery.

They take about a second to import, and ``validate`` runs in pre-commit hooks. Each check runs
in a fresh interpreter, so modules imported by other tests cannot hide or fake an import.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("astropy", "astroquery")

PROBE = textwrap.dedent("""
    import json, sys
    from mastpipe.cli import main
    try:
        main(sys.argv[1:], prog_name="mastpipe")
    except SystemExit as exit:
        code = exit.code
    else:
        code = 0
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in {heavy!r})
    print("PROBE" + json.dumps({{"code": code, "heavy": heavy}}), file=sys.stderr)
""").format(heavy=set(HEAVY))


def probe(*args: str, preload: str = "") -> dict:
    """Run the CLI with ``args`` in a fresh interpreter; its exit code and the heavy modules loaded."""
    result = subprocess.run([sys.executable, "-c", preload + PROBE, *args], capture_output=True, text=True, cwd=ROOT,
                            timeout=120)
    line = [line for line in result.stderr.splitlines() if line.startswith("PROBE")]
    assert line, result.stderr
    return json.loads(line[-1][len("PROBE"):])


def test_the_probe_sees_a_heavy_import() -> None:
    """The probe is honest: when astropy is loaded, it says so."""
    pytest.importorskip("astropy")
    found = probe("--help", preload="import astropy\n")
    assert found["code"] == 0 and "astropy" in found["heavy"]


def test_importing_the_cli_imports_nothing_heavy() -> None:
    code = (f"import sys, mastpipe.cli; print([m for m in sys.modules if m.split('.')[0] in {HEAVY!r}])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr


def test_help_imports_nothing_heavy() -> None:
    found = probe("--help")
    assert found == {"code": 0, "heavy": []}


def test_validate_imports_nothing_heavy() -> None:
    pipelines = sorted(str(p) for p in (ROOT / "pipelines").glob("*.yaml"))
    found = probe("validate", *pipelines)
    assert found == {"code": 0, "heavy": []}


def test_validate_of_a_bad_recipe_imports_nothing_heavy(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nname: t\nquery:\n  q:\n    criteria:\n      t_min: 5\n    position: {object: M1}\n")
    found = probe("validate", str(bad))
    assert found == {"code": 2, "heavy": []}


def test_schema_imports_nothing_heavy() -> None:
    assert probe("schema") == {"code": 0, "heavy": []}


@pytest.mark.parametrize("preset", [None, "4"], ids=["default", "user-set"])
def test_the_command_line_keeps_openblas_to_one_thread(preset: str | None) -> None:
    """numpy's OpenBLAS starts a spinning thread per core when numpy loads (~0.1 s of CPU a
    process, on the cores parsing and downloads need); no command does linear algebra. The
    setting only works if numpy is not loaded before the command runs; a user's own wins."""
    import os

    code = textwrap.dedent("""
        import os, sys
        from mastpipe.cli import main
        before = "numpy" in sys.modules
        try:
            main(["validate", "pipelines/jwst-1073-nircam-uncal.yaml"], prog_name="mastpipe")
        except SystemExit:
            pass
        print("PROBE", before, os.environ.get("OPENBLAS_NUM_THREADS"), file=sys.stderr)
    """)
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if preset:
        env["OPENBLAS_NUM_THREADS"] = preset
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env,
                            timeout=120)
    line = [line for line in result.stderr.splitlines() if line.startswith("PROBE")]
    assert line == [f"PROBE False {preset or '1'}"], result.stderr
