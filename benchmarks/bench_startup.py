"""Start-up time of the commands that must feel instant: ``mastpipe --help`` and ``mastpipe validate``.

They run in pre-commit hooks and editors, so they must not import astropy or astroquery (see
tests/unit/test_import_cost.py). This script measures their wall time, side by side with
``python -c "import astroquery.mast"`` (what they avoid) and ``python -c pass`` (the floor: the
interpreter's own start-up).

Usage, from the repository root::

    python benchmarks/bench_startup.py            # median of 10 runs each
    python benchmarks/bench_startup.py --runs 30
"""

from __future__ import annotations

import argparse
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def mastpipe_script() -> list[str]:
    """This interpreter's console script (not a pyenv shim, whose own start-up would be counted)."""
    script = Path(sys.executable).with_name("mastpipe")
    if script.is_file():
        return [str(script)]
    found = shutil.which("mastpipe")
    if found:
        return [found]
    return [sys.executable, "-c", "from mastpipe.cli import main; main(prog_name='mastpipe')"]


def timed(command: list[str], runs: int) -> list[float]:
    subprocess.run(command, cwd=ROOT, capture_output=True)  # warm the file cache
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        result = subprocess.run(command, cwd=ROOT, capture_output=True)
        times.append(time.perf_counter() - started)
        if result.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr.decode()}")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="runs per command (default 10)")
    args = parser.parse_args()

    script = mastpipe_script()
    pipelines = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "pipelines").glob("*.yaml"))
    rows = [
        ("mastpipe --help", script + ["--help"]),
        (f"mastpipe validate pipelines/*.yaml ({len(pipelines)} files)", script + ["validate", *pipelines]),
        ('python -c "import astroquery.mast"  (avoided)', [sys.executable, "-c", "import astroquery.mast"]),
        ('python -c "pass"  (interpreter floor)', [sys.executable, "-c", "pass"]),
    ]
    print(f"Python {platform.python_version()} on {platform.system()} {platform.machine()}, "
          f"{args.runs} runs each, wall time in ms")
    print(f"{'command':<52} {'median':>8} {'min':>8} {'max':>8}")
    print("-" * 79)
    for label, command in rows:
        times = [t * 1000 for t in timed(command, args.runs)]
        print(f"{label:<52} {statistics.median(times):8.0f} {min(times):8.0f} {max(times):8.0f}")


if __name__ == "__main__":
    main()
