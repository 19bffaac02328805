"""query stage, pure parts: recipe criteria -> astroquery searches, and the union of named results."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import MaskedColumn, Table

from mastpipe.recipe.models import Query
from mastpipe.stages.query import OPEN_HIGH, OPEN_LOW, astroquery_criteria, unite


def _searches(criteria: dict) -> list[dict]:
    return astroquery_criteria(Query(criteria=criteria).criteria)


def test_scalars_pass_through():
    assert _searches({"obs_collection": "JWST", "proposal_id": "1073", "calib_level": 2}) == \
        [{"obs_collection": "JWST", "proposal_id": "1073", "calib_level": 2}]


def test_a_single_wildcard_goes_last_in_its_list():
    # astroquery skips the value after a wildcard in a list, so exact values must come first
    assert _searches({"instrument_name": ["NIRCAM*", "MIRI/IMAGE", "NIRISS/IMAGE"]}) == \
        [{"instrument_name": ["MIRI/IMAGE", "NIRISS/IMAGE", "NIRCAM*"]}]
    assert _searches({"instrument_name": "NIRCAM*"}) == [{"instrument_name": "NIRCAM*"}]
    assert _searches({"instrument_name": ["NIRCAM*"]}) == [{"instrument_name": ["NIRCAM*"]}]


def test_several_wildcards_become_several_searches():
    assert _searches({"instrument_name": ["NIRCAM*", "MIRI*"]}) == \
        [{"instrument_name": ["NIRCAM*"]}, {"instrument_name": ["MIRI*"]}]
    searches = _searches({"instrument_name": ["NIRCAM*", "WFC3/IR", "MIRI%"], "obs_collection": "JWST"})
    assert searches == [
        {"instrument_name": ["WFC3/IR"], "obs_collection": "JWST"},
        {"instrument_name": ["NIRCAM*"], "obs_collection": "JWST"},
        {"instrument_name": ["MIRI%"], "obs_collection": "JWST"},
    ]
    # every search holds at most one wildcard per field, and it is the last value
    for search in searches:
        value = search["instrument_name"]
        wild = [v for v in value if "*" in v or "%" in v]
        assert len(wild) <= 1 and (not wild or value[-1] == wild[0])


def test_wildcard_lists_in_two_fields_give_the_cross_product():
    searches = _searches({"instrument_name": ["NIRCAM*", "MIRI*"], "target_name": ["NGC*", "M*"]})
    assert len(searches) == 4
    assert {(s["instrument_name"][0], s["target_name"][0]) for s in searches} == \
        {("NIRCAM*", "NGC*"), ("NIRCAM*", "M*"), ("MIRI*", "NGC*"), ("MIRI*", "M*")}


def test_ranges_and_open_ends():
    assert _searches({"t_exptime": {"min": 10, "max": 100}}) == [{"t_exptime": [10, 100]}]
    assert _searches({"t_exptime": {"min": 10}}) == [{"t_exptime": [10, OPEN_HIGH]}]
    assert _searches({"em_max": {"max": 5e-7}}) == [{"em_max": [OPEN_LOW, 5e-7]}]
    # dates become MJD
    (search,) = _searches({"t_min": {"min": "2022-07-12", "max": "2022-07-13"}})
    assert search["t_min"] == pytest.approx([59772.0, 59773.0])


def _obs(obsids: list[str], **extra) -> Table:
    table = Table({"obsid": np.array(obsids, dtype=str), "obs_collection": ["JWST"] * len(obsids)})
    for name, values in extra.items():
        table[name] = values
    return table


def test_unite_dedups_by_obsid_and_names_every_matching_query():
    united = unite({
        "a": _obs(["3", "1", "2"], t_exptime=[3.0, 1.0, 2.0]),
        "b": _obs(["2", "4"], t_exptime=[2.0, 4.0]),
        "c": _obs(["1", "2", "2"], t_exptime=[1.0, 2.0, 2.0]),  # a search may repeat a row
    })
    assert list(united["obsid"]) == ["1", "2", "3", "4"]
    assert list(united["queries"]) == ["a;c", "a;b;c", "a", "b"]
    assert list(united["t_exptime"]) == [1.0, 2.0, 3.0, 4.0]


def test_unite_keeps_recipe_order_of_query_names():
    united = unite({"zeta": _obs(["1"]), "alpha": _obs(["1"])})
    assert list(united["queries"]) == ["zeta;alpha"]


def test_unite_with_masked_columns_and_different_columns():
    a = _obs(["1", "2"])
    a["sequence_number"] = MaskedColumn([14, 0], mask=[False, True])
    b = _obs(["2", "3"], proposal_id=["x", "y"])
    united = unite({"a": a, "b": b})
    assert list(united["obsid"]) == ["1", "2", "3"]
    assert list(united["queries"]) == ["a", "a;b", "b"]


def test_unite_of_nothing():
    united = unite({"a": Table(), "b": _obs([])})
    assert len(united) == 0 and set(united.colnames) >= {"obsid", "queries"}


def test_unite_of_numeric_obsids():
    a = Table({"obsid": np.array([5, 3], dtype=np.int64)})
    b = Table({"obsid": np.array([3], dtype=np.int64)})
    united = unite({"a": a, "b": b})
    assert [str(o) for o in united["obsid"]] == ["3", "5"]
    assert list(united["queries"]) == ["a;b", "a"]
