"""A recipe from ``mastpipe init`` selects the right files: with the tutorial's choices, exactly the
files of the tutorial's own recipe; with several kinds, exactly the files of those kinds."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from mastpipe.recipe.starter import starting_recipe
from mastpipe.runner import Pipeline

PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"


def _kept(path: Path, url: str, state: Path) -> set[str]:
    result = Pipeline(path, mast_url=url, state_dir=state, environ={}).run(until="filter")
    return {v.decode() if isinstance(v, bytes) else str(v) for v in np.asarray(result.tables["filter"]["productFilename"])}


def test_the_tutorial_choices_select_the_tutorial_recipes_files(sandbox, tmp_path: Path) -> None:
    generated = tmp_path / "init.yaml"
    generated.write_text(starting_recipe(collection="JWST", programs=["1073"], instruments=["NIRCam"],
                                         filters=["F277W"], products=["uncal"]))
    tutorial = tmp_path / "tutorial.yaml"
    shutil.copy(PIPELINES / "jwst-1073-nircam-uncal.yaml", tutorial)
    kept = _kept(generated, sandbox.url, tmp_path / "s1")
    # init omits guide-star files by default; the tutorial's own download call keeps them
    tutorial_kept = _kept(tutorial, sandbox.url, tmp_path / "s2")
    assert kept and kept == {name for name in tutorial_kept if "_gs-" not in name}
    assert tutorial_kept - kept and all("_gs-" in name for name in tutorial_kept - kept)
    assert all(name.endswith("_uncal.fits") and "_gs-" not in name for name in kept)


def test_several_kinds_keep_exactly_those_kinds(sandbox, tmp_path: Path) -> None:
    generated = tmp_path / "init.yaml"
    generated.write_text(starting_recipe(collection="JWST", programs=["1073"], products=["cal", "i2d", "cat"]))
    kept = _kept(generated, sandbox.url, tmp_path / "s")
    suffixes = {name.rsplit("_", 1)[1] for name in kept}
    assert suffixes == {"cal.fits", "i2d.fits", "cat.ecsv"}
    expected = {p["productFilename"] for o in sandbox.catalog.observations() if o["proposal_id"] == "1073"
                for p in sandbox.catalog.products(o["obsid"])
                if p["productSubGroupDescription"] in ("CAL", "I2D", "CAT") and "_gs-" not in p["productFilename"]}
    assert kept == expected
