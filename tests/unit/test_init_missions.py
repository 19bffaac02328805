"""`mastpipe init --mission`: a starting mission-search recipe that validate accepts."""

from __future__ import annotations

import pytest

from mastpipe.errors import UsageError
from mastpipe.recipe.models import parse_recipe
from mastpipe.recipe.starter import starting_recipe
from mastpipe.recipe.yamlload import load_yaml_text


def _recipe(text: str):
    return parse_recipe(load_yaml_text(text, "<init>"), environ={})


def test_a_jwst_mission_recipe_names_the_missions_columns():
    recipe = _recipe(starting_recipe(mission="jwst", programs=["1073"], instruments=["NIRCam"], filters=["F277W"],
                                     products=["uncal", "cal"]))
    assert recipe.mission == "jwst" and recipe.name == "jwst-1073-nircam-f277w-uncal-cal"
    (query,) = recipe.query.values()
    assert dict(query.conditions) == {"program": 1073, "instrume": "NIRCAM", "filter": "F277W"}
    assert query.criteria is None
    assert dict(recipe.filter.columns) == {"file_suffix": ["_uncal", "_cal"]}


def test_an_hst_mission_recipe_uses_the_sci_columns_and_mast_suffixes():
    text = starting_recipe(mission="HST", programs=["12345", "13926"], instruments=["WFC3/UVIS"], products=["flt", "drz"])
    recipe = _recipe(text)
    (query,) = recipe.query.values()
    assert dict(query.conditions) == {"sci_pep_id": [12345, 13926], "sci_instrume": "WFC3"}
    assert dict(recipe.filter.columns) == {"file_suffix": ["FLT", "DRZ"]}
    assert "--mission hst" in text


def test_a_bare_mission_recipe_is_still_valid():
    recipe = _recipe(starting_recipe(mission="jwst"))
    (query,) = recipe.query.values()
    assert query.conditions and recipe.filter.columns


@pytest.mark.parametrize("kwargs, message", [
    ({"mission": "tess"}, "mission: 'tess' is not a mission"),
    ({"mission": "jwst", "collection": "HST"}, "disagree"),
    ({}, "give collection (a CAOM search) or mission"),
    ({"mission": "jwst", "products": ["flt"]}, "not a JWST product kind"),
])
def test_bad_choices_say_which_option(kwargs, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        starting_recipe(**kwargs)
