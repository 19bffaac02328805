"""filter.columns speaks astroquery's filter_products syntax with astroquery's semantics, and
criteria refuse a negation MAST's search would take literally.

The reference is astroquery 0.4.11's own ``Observations.filter_products`` run on the same table
(it is purely client-side: no request is made).
"""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

from mastpipe.errors import RecipeError
from mastpipe.recipe.models import Filter, parse_recipe
from mastpipe.recipe.yamlload import load_yaml_text
from mastpipe.stages.filter import filter_products

RULES = [
    {"size": ">=70000"},
    {"size": "<20000"},
    {"size": "70000..500000"},
    {"size": "!14400"},
    {"size": ["!14400", "<20000"]},
    {"size": [100, "500..1000", ">=1500"]},
    {"size": ["!>=100000", "!<1000"]},
    {"size": "1e3..2e5"},           # not a range for astroquery: float("1e3..2e5") fails -> refused below
    {"size": " 14400"},
    {"size": "-5..20000"},
    {"size": "1...20000"},          # astroquery's pattern reads "1." .. "20000"
    {"size": ">1e4"},
    {"calib_level": [2, 3]},
    {"calib_level": "!1"},
    {"calib_level": "<=2", "size": ">14400"},
    {"productType": ["SCIENCE", "!AUXILIARY"]},
    {"productType": "!SCIENCE"},
    {"productSubGroupDescription": ["UNCAL", "CAL"], "size": "!28800"},
]


def _table() -> Table:
    rng = np.random.default_rng(7)
    n = 400
    return Table({
        "productFilename": [f"f{i}_cal.fits" for i in range(n)],
        "productGroupDescription": ["Minimum Recommended Products"] * n,
        "size": rng.choice([0, 100, 750, 1000, 1500, 14400, 14401, 20000, 28800, 70000, 500000, 900000], n),
        "calib_level": rng.integers(1, 4, n),
        "productType": rng.choice(["SCIENCE", "AUXILIARY", "PREVIEW"], n),
        "productSubGroupDescription": rng.choice(["UNCAL", "CAL", "I2D"], n),
    })


def _astroquery(table: Table, columns: dict) -> Table | None:
    from astroquery.exceptions import InvalidQueryError
    from astroquery.mast import Observations

    try:
        return Observations.filter_products(table, **columns)
    except InvalidQueryError:
        return None


@pytest.mark.parametrize("columns", RULES, ids=[str(r) for r in RULES])
def test_same_rows_as_astroquery_filter_products(columns: dict) -> None:
    table = _table()
    expected = _astroquery(table, columns)
    try:
        rules = Filter(guide_stars="keep", columns=columns)
    except ValueError:
        assert expected is None, f"mastpipe refuses {columns}, astroquery accepts it"
        return
    assert expected is not None, f"astroquery refuses {columns}, mastpipe accepts it"
    got = filter_products(table, rules)
    assert list(got["productFilename"]) == list(expected["productFilename"])


def _problems(text: str) -> list:
    with pytest.raises(RecipeError) as caught:
        parse_recipe(load_yaml_text(text, "r.yaml"), environ={})
    return caught.value.problems


HEAD = "version: 1\nname: t\nquery:\n  q:\n    criteria: {obs_collection: JWST, dataRights: PUBLIC}\n"


def test_unreadable_numeric_filter_is_a_located_validate_error() -> None:
    text = HEAD + "filter:\n  columns:\n    size: [\">=1000\", \"big\"]\n"
    (problem,) = _problems(text)
    assert (problem.line, problem.column) == (8, 22)
    assert problem.field == "filter.columns.size[1]"
    assert "'big' is not a numeric filter" in problem.message and "100..1000" in problem.message
    (problem,) = _problems(HEAD + "filter:\n  columns: {calib_level: \"2..\"}\n")
    assert problem.line == 7 and problem.field == "filter.columns.calib_level"


def test_negation_in_criteria_is_refused_with_a_hint() -> None:
    text = "version: 1\nname: t\nquery:\n  q:\n    criteria:\n      obs_collection: JWST\n" \
           "      dataRights: \"!EXCLUSIVE_ACCESS\"\n"
    (problem,) = _problems(text)
    assert (problem.line, problem.field) == (7, "query.q.criteria.dataRights")
    assert "MAST's search has no negation" in problem.message
    assert 'filter: {columns: {dataRights: "!EXCLUSIVE_ACCESS"}}' in problem.hint
    (problem,) = _problems(text.replace('"!EXCLUSIVE_ACCESS"', '[NIRCAM, "!MIRI"]').replace("dataRights", "instrument_name"))
    assert "'!MIRI'" in problem.message and "filter rule on the products" in problem.hint
