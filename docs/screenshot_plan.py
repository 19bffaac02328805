"""Regenerate docs/plan-picture.png: the page `mastpipe plan --html` writes, as headless Chromium shows it.

    python3 docs/screenshot_plan.py [RECIPE]      (default pipelines/hst-crab-calibrated.yaml)

Runs `mastpipe plan --sandbox RECIPE --html` in a scratch copy of pipelines/ (nothing in the
checkout is touched but the PNG), then takes a screenshot with Chromium from the distribution's
packages (apt-get install -y chromium). Needs mastpipe[html].
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "docs" / "plan-picture.png"


def main() -> int:
    recipe = sys.argv[1] if len(sys.argv) > 1 else "pipelines/hst-crab-calibrated.yaml"
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("needs chromium: apt-get install -y chromium", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        shutil.copytree(ROOT / "pipelines", work / "pipelines", ignore=shutil.ignore_patterns(".mastpipe", "data"))
        shutil.copytree(ROOT / "schemas", work / "schemas")
        page = work / "plan.html"
        subprocess.run([sys.executable, "-c", "from mastpipe.cli import main; main()", "plan", "--sandbox", "-q",
                        recipe, "--html", str(page)], cwd=work, check=True)
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
                        f"--user-data-dir={work / 'profile'}", "--window-size=1300,1150",
                        f"--screenshot={OUTPUT}", page.as_uri()], check=True, capture_output=True)
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
