"""The picture of a selection: footprints read from s_region, and a page that stays
self-contained and readable at 10,000 observations."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest

pytest.importorskip("matplotlib", reason="the HTML picture needs matplotlib (pip install 'mastpipe[html]')")

from astropy.table import Table  # noqa: E402

from mastpipe.api import PlanGroup, PlanReport  # noqa: E402
from mastpipe.picture import footprints, plan_html  # noqa: E402


def test_footprints_reads_polygons_circles_and_several_shapes() -> None:
    polygon, = footprints("POLYGON ICRS 10.0 20.0 10.1 20.0 10.1 20.1 10.0 20.1")
    assert polygon.shape == (4, 2) and polygon[2].tolist() == [10.1, 20.1]
    circle, = footprints("CIRCLE ICRS 150.0 60.0 0.5")
    assert circle.shape == (33, 2)
    assert np.allclose(circle[:, 1].max(), 60.5) and np.allclose(circle[:, 0].max(), 151.0, atol=1e-6)  # 0.5/cos 60
    two = footprints("POLYGON J2000 1 1 2 1 2 2 POLYGON 5 5 6 5 6 6 6 5")
    assert [len(s) for s in two] == [3, 4]
    assert footprints("") == [] and footprints("POLYGON 1 2 3") == [] and footprints("garbage") == []
    assert footprints("POLYGON ICRS 1 1 nan 1 2 2") == []


def _selection(n: int, seed: int = 1) -> tuple[Table, Table]:
    """n observations over the whole sky from two instruments and three queries, 2 products each."""
    rng = np.random.default_rng(seed)
    ra, dec = rng.uniform(0, 360, n), np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
    regions = [f"POLYGON ICRS {r:.4f} {d:.4f} {r + 0.2:.4f} {d:.4f} {r + 0.2:.4f} {d + 0.2:.4f} {r:.4f} {d + 0.2:.4f}"
               if i % 2 else f"CIRCLE ICRS {r:.4f} {d:.4f} 0.1" for i, (r, d) in enumerate(zip(ra, dec))]
    obsid = [str(100000 + i) for i in range(n)]
    observations = Table({"obsid": obsid, "s_region": regions, "s_ra": ra, "s_dec": dec,
                          "instrument_name": np.where(np.arange(n) % 3 == 0, "WFC3/UVIS", "ACS/WFC"),
                          "queries": [f"q{i % 3}" for i in range(n)],
                          "t_min": 55000 + rng.uniform(0, 3000, n), "t_max": 55001 + rng.uniform(0, 3000, n)})
    products = Table({"parent_obsid": obsid * 2, "obs_collection": ["HST"] * (2 * n),
                      "productSubGroupDescription": ["FLT"] * n + ["DRZ"] * n,
                      "dataURI": [f"mast:HST/product/{i}.fits" for i in range(2 * n)],
                      "size": np.full(2 * n, 1000, dtype=np.int64)})
    return observations, products


def _images(page: str) -> list[np.ndarray]:
    from matplotlib.image import imread

    return [imread(io.BytesIO(base64.b64decode(data)), format="png")
            for data in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def test_a_page_of_ten_thousand_observations_is_self_contained_and_drawn() -> None:
    observations, products = _selection(10_000)
    plan = PlanReport(recipe="big", recipe_path="big.yaml", state_dir="s", mast_url="https://mast.stsci.edu",
                      mode="download", observations=10_000, files=20_000, bytes=20_000_000, to_fetch=20_000,
                      bytes_to_fetch=20_000_000, present=0, partial=0, failed=0, blocked=0,
                      breakdown=[PlanGroup("HST", "ACS/WFC", "FLT", 10_000, 10_000_000),
                                 PlanGroup("HST", "ACS/WFC", "DRZ", 10_000, 10_000_000)],
                      tables={"query": observations, "filter": products})
    page = plan_html(plan)
    # self-contained: no script, nothing fetched from anywhere
    assert "<script" not in page
    assert not re.search(r'(src|href)\s*=\s*"(?!data:)', page)
    assert len(page) < 2_000_000
    sky, timeline, products_png = _images(page)
    # every figure has something drawn: many distinct colours, not a blank canvas
    for image in (sky, timeline, products_png):
        assert image.std() > 0.05 and len(np.unique(image.reshape(-1, image.shape[-1]), axis=0)) > 20
    # the table beside the figures lists what would be fetched
    assert "<td>FLT</td>" in page and "<td>DRZ</td>" in page


def test_one_instrument_and_several_queries_colours_by_query() -> None:
    from mastpipe.picture.figures import groups_of

    observations, _ = _selection(30)
    observations["instrument_name"] = "ACS/WFC"
    assert groups_of(observations)[0] == "query"
    observations["queries"] = "q0"
    assert groups_of(observations)[0] == "instrument"
