"""``plan --html`` and ``run --html`` pages, loaded in a real browser: headless Chromium from the
distribution's packages (``.ci/run`` installs it) opens each page offline, logs no console
message, and its screenshot shows a plot, not a blank area."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib", reason="the HTML picture needs matplotlib (pip install 'mastpipe[html]')")

SEED = "pipelines/jwst-1073-nircam-uncal.yaml"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed "
                                    "(apt-get install -y chromium; .ci/run does it)")
WIDTH, HEIGHT = 1400, 1500


@pytest.fixture
def cli(cli_in_process):  # type: ignore[no-untyped-def]
    """The pages in a real browser are the point here, not the command's process: run it in this one."""
    return cli_in_process


def _browse(page: Path, tmp_path: Path) -> tuple[np.ndarray, list[str]]:
    """Load ``page`` in headless Chromium: (screenshot as an RGB(A) array, console lines)."""
    from matplotlib.image import imread

    shot = tmp_path / f"{page.stem}.png"
    argv = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
            f"--user-data-dir={tmp_path / ('profile-' + page.stem)}", "--enable-logging=stderr", "--v=0",
            f"--window-size={WIDTH},{HEIGHT}", f"--screenshot={shot}", page.resolve().as_uri()]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert shot.is_file(), done.stderr[-3000:]
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    return imread(shot), console


def _plot_area(image: np.ndarray) -> np.ndarray:
    """Where the page puts the sky map: the left column under the title (see picture.page._STYLE)."""
    return image[80:560, 20:730, :3]


@needs_chromium
def test_the_console_check_and_the_blank_check_can_fail(tmp_path: Path) -> None:
    """The checks below are worth something: a page with a script error is caught, and a page
    with no picture has a blank plot area."""
    broken = tmp_path / "broken.html"
    broken.write_text("<!DOCTYPE html><html><body><h1>x</h1><script>missingFunction()</script></body></html>")
    image, console = _browse(broken, tmp_path)
    assert any("missingFunction" in line for line in console), console
    assert _plot_area(image).std() < 0.01


@needs_chromium
def test_plan_and_run_pages_load_offline_without_errors_and_show_a_plot(workdir: Path, cli, tmp_path: Path) -> None:
    plan = cli("plan", "--sandbox", SEED, "--html", "plan.html", cwd=workdir)
    assert plan.returncode == 0, plan.stderr
    assert "wrote plan.html" in plan.stderr and "14 to fetch" in plan.stdout  # the text plan is printed too
    run = cli("run", "--sandbox", SEED, "--html", "run.html", cwd=workdir)
    assert run.returncode == 0, run.stderr
    for name in ("plan.html", "run.html"):
        page = workdir / name
        text = page.read_text()
        assert "<script" not in text and 'src="http' not in text and 'href="http' not in text
        image, console = _browse(page, tmp_path)
        assert console == [], console
        area = _plot_area(image)
        colours = len(np.unique((area * 255).astype(np.uint8).reshape(-1, 3), axis=0))
        assert area.std() > 0.05 and colours > 50, (name, area.std(), colours)
    assert "run 2" in (workdir / "run.html").read_text() or "fetched" in (workdir / "run.html").read_text()


def test_html_needs_the_stages_up_to_filter(workdir: Path, cli) -> None:
    run = cli("run", "--sandbox", SEED, "--until", "query", "--html", "run.html", cwd=workdir)
    assert run.returncode == 2 and "--html draws the selection" in run.stderr and "Traceback" not in run.stderr
    assert not (workdir / "run.html").exists()
