"""Mission searches in recipes: the query kind, how it may (not) mix with CAOM searches, and the
checks on its conditions and on the filter columns of its product lists, each located."""

from __future__ import annotations

from pathlib import Path

import pytest

from mastpipe.errors import RecipeError
from mastpipe.recipe.models import load_recipe
from mastpipe.runner import Pipeline

HEAD = "version: 1\nname: t\nquery:\n"


def _load(tmp_path: Path, text: str):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return load_recipe(path, environ={})


def _problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(RecipeError) as caught:
        _load(tmp_path, text)
    return [f"{p.line}:{p.column}: {p.field}: {p.message}" for p in caught.value.problems]


def test_a_mission_search_loads(tmp_path):
    recipe = _load(tmp_path, HEAD + "  a:\n    mission: jwst\n    conditions: {program: 1073, exp_type: [NRC_IMAGE, NRC_TACQ]}\n"
                   "    select_cols: [exp_type]\n    position: {coordinates: \"6.02 -72.08\", radius: 5 arcmin}\n"
                   "  b:\n    mission: jwst\n    conditions: {program: 1073}\n"
                   "filter:\n  columns: {file_suffix: [_uncal, _cal], category: \"!AUX\", size: {min: 1}}\n")
    assert recipe.mission == "jwst"
    assert dict(recipe.query["a"].conditions) == {"program": 1073, "exp_type": ["NRC_IMAGE", "NRC_TACQ"]}
    assert recipe.query["a"].criteria is None and list(recipe.query["a"].select_cols) == ["exp_type"]
    assert not recipe.warnings()  # no "name the obs_collection" advice for a mission search


def test_caom_and_mission_searches_do_not_mix(tmp_path):
    text = HEAD + "  caom:\n    criteria: {obs_collection: JWST}\n  mine:\n    mission: jwst\n    conditions: {program: 1}\n"
    assert _problems(tmp_path, text) == [
        "7:5: query.mine: query 'mine' is a jwst mission search and query 'caom' is a CAOM search: "
        "a recipe's queries all search CAOM, or all the same mission"]
    two = HEAD + "  j:\n    mission: jwst\n    conditions: {program: 1}\n  h:\n    mission: hst\n    conditions: {sci_pep_id: 1}\n"
    assert "query 'h' is a hst mission search and query 'j' is a jwst mission search" in _problems(tmp_path, two)[0]


@pytest.mark.parametrize("body, expected", [
    ("  q:\n    mission: jwst\n    criteria: {obs_collection: JWST}\n",
     "6:15: query.q.criteria: criteria are CAOM observation fields; a jwst mission search takes `conditions`"),
    ("  q:\n    conditions: {program: 1}\n", "5:5: query.q.mission: conditions belong to a mission search"),
    ("  q:\n    select_cols: [program]\n    criteria: {obs_collection: JWST}\n",
     "5:5: query.q.mission: select_cols belong to a mission search"),
    ("  q:\n    mission: jwst\n", "5:14: query.q.mission: a mission search needs conditions or a position"),
    ("  q:\n    mission: tess\n    conditions: {a: 1}\n", "5:14: query.q.mission: must be 'jwst' or 'hst'"),
    ("  q:\n    mission: jwst\n    conditions: {program: 1}\n    position: {object: M1}\n",
     "7:24: query.q.position.object: a mission search takes a position as coordinates, not an object name"),
    ("  q:\n    mission: jwst\n    conditions: {exp_type: [a, on]}\n",
     "6:32: query.q.conditions.exp_type[1]: on was read as the boolean true, not text"),
    ("  q:\n    mission: jwst\n    conditions: {exp_type: {min: 1}}\n",
     "6:28: query.q.conditions.exp_type: exp_type: a condition takes a value or a list of values, not a mapping"),
    ("  q:\n    mission: jwst\n    conditions: {exp_type: []}\n",
     "6:28: query.q.conditions.exp_type: exp_type: an empty list matches nothing"),
    ("  q:\n    mission: jwst\n    conditions: {exp-type: x}\n",
     "6:18: query.q.conditions.exp-type: 'exp-type' is not a column name"),
])
def test_each_mistake_in_a_mission_search_is_located(tmp_path, body, expected):
    problems = _problems(tmp_path, HEAD + body)
    assert any(p.startswith(expected) for p in problems), problems


def test_filter_columns_follow_the_kind_of_search(tmp_path):
    mission = HEAD + "  q:\n    mission: hst\n    conditions: {sci_pep_id: 1}\nfilter:\n  columns: {productType: SCIENCE}\n"
    assert _problems(tmp_path, mission) == [
        "8:13: filter.columns.productType: 'productType' is a column of CAOM product lists, and this recipe's "
        "queries are a mission search"]
    caom = HEAD + "  q:\n    criteria: {obs_collection: HST}\nfilter:\n  columns: {file_suffix: FLT}\n"
    assert _problems(tmp_path, caom) == [
        "7:13: filter.columns.file_suffix: 'file_suffix' is a column of mission search product lists, and this "
        "recipe's queries are CAOM searches"]
    typo = HEAD + "  q:\n    mission: hst\n    conditions: {sci_pep_id: 1}\nfilter:\n  columns: {file_sufix: FLT}\n"
    assert _problems(tmp_path, typo) == ["8:13: filter.columns.file_sufix: unknown product column 'file_sufix'"]
    mrp = HEAD + "  q:\n    mission: hst\n    conditions: {sci_pep_id: 1}\nfilter:\n  mrp_only: true\n"
    assert _problems(tmp_path, mrp)[0].startswith("8:13: filter.mrp_only: mrp_only needs CAOM's productGroupDescription")


def test_caom_fingerprints_do_not_see_the_mission_keys(tmp_path):
    caom = tmp_path / "caom.yaml"
    caom.write_text(HEAD + "  q:\n    criteria: {obs_collection: JWST}\n")
    assert Pipeline(caom, environ={}).section("query")["query"] == {"q": {"criteria": {"obs_collection": "JWST"},
                                                                         "position": None}}
    mission = tmp_path / "mission.yaml"
    mission.write_text(HEAD + "  q:\n    mission: jwst\n    conditions: {program: 1}\n")
    assert Pipeline(mission, environ={}).section("query")["query"] == {
        "q": {"mission": "jwst", "conditions": {"program": 1}, "select_cols": [], "position": None}}
