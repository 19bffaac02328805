"""One malformed row in MAST's product list is one refused product; the others proceed.

The sandbox serves whatever a product row holds (``Catalog.add_product(obsid, size="abc")``),
so each kind of bad value goes over the wire as MAST would send it, and unmodified astroquery
fetches the pages. The product is named in the report and the manifest, the error blames MAST's
answer (never the recipe's criteria), nothing is requested for it, and every other file arrives.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from astropy.table import Table

import mastpipe

REPO = Path(__file__).resolve().parents[2]
OBSID = "87600002"  # an observation the seed recipe selects

KINDS = {
    "unparseable size": ({"size": "abc"}, "size 'abc'"),
    "negative size": ({"size": -5}, "size -5"),
    "fractional size": ({"size": 12.5}, "size 12.5"),
    "size past 64 bits": ({"size": 10**30}, f"size {10**30}"),
    "size of the wrong type": ({"size": [1, 2]}, "size [1, 2]"),
    "null size": ({"size": None}, "no size"),
    "null dataURI": ({"dataURI": None}, "no dataURI"),
    "null productFilename": ({"productFilename": None}, "no productFilename"),
    "null obs_id": ({"obs_id": None}, "no obs_id"),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_malformed_row_is_refused_alone(sandbox, tmp_path: Path, kind: str) -> None:
    fields, said = KINDS[kind]
    recipe = tmp_path / "r.yaml"
    shutil.copy(REPO / "pipelines" / "jwst-1073-nircam-uncal.yaml", recipe)
    overrides = {"productSubGroupDescription": "UNCAL", "productFilename": "jw01073001002_bad_uncal.fits", **fields}
    row = sandbox.catalog.add_product(OBSID, **overrides)
    name = row["dataURI"] or row["productFilename"]

    outcome = mastpipe.run(recipe, mast_url=sandbox.url, environ={})

    assert outcome.exit_code == 1
    failed = outcome.report["retrieve"]["failed"]
    assert failed["files"] == 1
    [item] = failed["items"]
    assert item["dataURI"] == name
    assert f"MAST's product list for observation {OBSID} has {said} for {name}" in item["error"]
    assert "criteria" not in item["error"] and "recipe" not in item["error"]
    fetched = outcome.report["retrieve"]["fetched"]["files"]
    assert fetched > 0 and fetched == len(outcome.tables["filter"]) - 1  # every other file arrived
    manifest = Table.read(outcome.report["retrieve"]["manifest"], format="ascii.ecsv")
    [listed] = [r for r in manifest if r["dataURI"] == name]
    assert listed["status"] == "failed" and said in listed["message"]
    assert sorted(set(manifest["status"])) == ["failed", "fetched"]
    downloads = [r.uri for r in sandbox.log.records() if r.endpoint == "download"]
    assert row["dataURI"] not in downloads


def test_an_unselected_malformed_row_bothers_nobody(sandbox, tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    shutil.copy(REPO / "pipelines" / "jwst-1073-nircam-uncal.yaml", recipe)
    sandbox.catalog.add_product(OBSID, productSubGroupDescription="CAL", productFilename="x_cal.fits", size="abc")
    outcome = mastpipe.run(recipe, mast_url=sandbox.url, environ={})
    assert outcome.exit_code == 0 and outcome.report["retrieve"]["failed"]["files"] == 0
