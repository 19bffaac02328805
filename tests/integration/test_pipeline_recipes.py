"""Every example recipe runs to `filter` against the sandbox, and the seed's recipe selects what
the seed tutorial's own code selects (astroquery run unmodified in a subprocess)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mastpipe.recipe.models import load_recipe
from mastpipe.runner import Pipeline
from mastpipe.sandbox.tutorial import PRODUCT_FILTER, QUERY_AND_PRODUCTS

PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"
RECIPES = sorted(p.name for p in PIPELINES.glob("*.yaml"))
SEED_RECIPE = "jwst-1073-nircam-uncal.yaml"


def _text(values) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in np.asarray(values)]


def _copy(name: str, tmp_path: Path) -> Path:
    target = tmp_path / "recipes" / name
    target.parent.mkdir(parents=True)
    shutil.copy(PIPELINES / name, target)
    return target


def test_there_are_example_recipes():
    assert SEED_RECIPE in RECIPES and len(RECIPES) >= 4


@pytest.mark.parametrize("name", RECIPES)
def test_example_recipe_runs_to_filter(name, sandbox, tmp_path):
    path = _copy(name, tmp_path)
    recipe = load_recipe(path, environ={})
    pipeline = Pipeline(path, mast_url=sandbox.url, state_dir=tmp_path / "state", environ={})
    result = pipeline.run(until="filter")

    assert [s.stage for s in result.stages] == ["query", "products", "unique", "filter"]
    assert all(s.action == "computed" for s in result.stages)
    query, products, unique, kept = (result.tables[s] for s in ("query", "products", "unique", "filter"))
    # the sandbox catalogue holds matching observations for every example
    assert len(query) > 0, f"{name}: the sandbox has no observations for this recipe"
    assert len(products) > 0 and 0 < len(kept) <= len(unique) <= len(products)
    # query: one row per obsid, named after the recipe's searches
    obsids = _text(query["obsid"])
    assert len(set(obsids)) == len(obsids)
    assert set(";".join(_text(query["queries"])).split(";")) <= set(recipe.query)
    # products are those of the observations found, and nothing else
    if recipe.mission:  # a mission search: its datasets' product lists, as the sandbox's mission API lists them
        from mastpipe.sandbox.missions import MissionView

        catalogue = {p["filename"] for p in MissionView(sandbox.catalog, recipe.mission).products(obsids)}
    else:
        catalogue = {p["productFilename"] for o in obsids for p in sandbox.catalog.products(o)}
    assert set(_text(products["productFilename"])) == catalogue
    # unique: one row per key
    keys = _text(unique[recipe.unique.key])
    assert len(set(keys)) == len(keys) == len(set(_text(products[recipe.unique.key])))
    # filter: every kept product obeys the recipe's rules
    names = _text(kept["productFilename"])
    rules = recipe.filter
    if rules.guide_stars == "omit":
        assert not any("_gs-" in n for n in names)
    if rules.contains:
        assert all(any(c in n for c in rules.contains) for n in names)
    if rules.endswith:
        assert all(any(n.endswith(e) for e in rules.endswith) for n in names)
    for column, match in rules.columns.items():
        values = _text(kept[column])
        wanted = match if isinstance(match, list) else [match]
        plain = [str(v) for v in wanted if not str(v).startswith("!")]
        negated = [str(v)[1:] for v in wanted if str(v).startswith("!")]
        assert all((not plain or v in plain) and v not in negated for v in values), column
    # the sandbox saw only searches and product lists, all answered
    records = sandbox.log.records()
    assert records and all(r.endpoint in ("query", "products", "columnsconfig") for r in records)
    assert all(r.status == 200 for r in records)
    # checkpoints exist for the four stages
    assert all((tmp_path / "state" / f"{s}.json").exists() for s in ("query", "products", "unique", "filter"))


SEED_CODE = QUERY_AND_PRODUCTS + PRODUCT_FILTER + r'''
# What the tutorial downloads: download_products(files, productSubGroupDescription='UNCAL')
# applies exactly this filter (product_filter is defined there but not used for the download).
selected = Observations.filter_products(files, productSubGroupDescription='UNCAL')
assert len(selected[product_filter(selected, ['_uncal'], gs_omit=False)]) == len(selected)
print("REPORT " + json.dumps({
    "files": sorted(str(x) for x in files["productFilename"]),
    "selected": [[str(r["productFilename"]), str(r["dataURI"]), int(r["size"])] for r in selected],
}))
'''


def test_seed_recipe_selects_what_the_seed_tutorial_selects(sandbox, run_astroquery, tmp_path):
    proc = run_astroquery(sandbox.url, SEED_CODE)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("REPORT ")][-1]
    seed = json.loads(line[len("REPORT "):])
    assert seed["selected"], "the seed selects nothing in the sandbox: the comparison would be vacuous"

    path = _copy(SEED_RECIPE, tmp_path)
    result = Pipeline(path, mast_url=sandbox.url, state_dir=tmp_path / "state", environ={}).run(until="filter")
    kept = result.tables["filter"]
    ours = sorted(zip(_text(kept["productFilename"]), _text(kept["dataURI"]), (int(s) for s in kept["size"])))
    assert ours == sorted(tuple(r) for r in seed["selected"])
    # the unique stage holds the same products as the seed's unique(vstack(...))
    assert sorted(_text(result.tables["unique"]["productFilename"])) == seed["files"]
