"""``mastpipe.recipe.starter.starting_recipe``: every combination of valid options gives a recipe that loads
(the same code path as ``mastpipe validate``) and says what the options asked for; bad options are
UsageErrors (exit 2) naming the option."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from mastpipe.errors import EXIT_INVALID, RecipeError, UsageError
from mastpipe.recipe.starter import (DEFAULT_SCHEMA_PATH, PRODUCT_KINDS, default_name, schema_path_for, starting_recipe,
                           write_new_recipe)
from mastpipe.recipe.models import parse_recipe
from mastpipe.recipe.yamlload import load_yaml_text

ROOT = Path(__file__).resolve().parents[2]

COLLECTIONS = ["JWST", "jwst", "HST", "TESS", "K2", "GALEX", "Kepler"]
_value_chars = st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 _./+;:*-")
values = st.builds(lambda first, rest: (first + rest).rstrip(),
                   st.sampled_from("ABCFGNWXZacn019*"), st.text(_value_chars, max_size=20)).filter(
    lambda v: "," not in v)
programs = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_-]{0,12}\Z")
modes = st.sampled_from(["download", "curl", "manifest"])
names = st.one_of(st.none(), st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,30}\Z"))


@st.composite
def option_sets(draw):  # type: ignore[no-untyped-def]
    collection = draw(st.sampled_from(COLLECTIONS))
    known = PRODUCT_KINDS.get(collection.upper(), {})
    kinds = st.sampled_from(sorted(known)) if known else st.from_regex(r"\A[a-z0-9]{1,8}\Z")
    return dict(collection=collection,
                programs=draw(st.lists(programs, max_size=3)),
                instruments=draw(st.lists(values, max_size=2)),
                filters=draw(st.lists(values, max_size=3)),
                products=draw(st.lists(kinds, max_size=3)),
                mode=draw(modes), name=draw(names))


def load(text: str):  # type: ignore[no-untyped-def]
    return parse_recipe(load_yaml_text(text, "init.yaml"), environ={})


def _as_list(value) -> list:  # type: ignore[no-untyped-def]
    return value if isinstance(value, list) else [value]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(option_sets())
def test_every_option_combination_gives_a_valid_recipe_that_says_what_was_asked(options) -> None:
    try:
        text = starting_recipe(**options)
    except UsageError as error:
        # the one documented refusal for well-formed values: a value that looks like a secret
        assume("looks like an access token" not in str(error))
        raise
    recipe = load(text)
    assert recipe.retrieve.mode == options["mode"]
    if options["name"]:
        assert recipe.name == options["name"]
    (query,) = recipe.query.values()
    criteria = query.criteria
    assert str(criteria["obs_collection"]).upper() == options["collection"].upper()
    if options["programs"]:
        assert _as_list(criteria["proposal_id"]) == list(dict.fromkeys(options["programs"]))
    else:
        assert "proposal_id" not in criteria
    if options["filters"]:
        assert _as_list(criteria["filters"]) == list(dict.fromkeys(options["filters"]))
    if options["instruments"]:
        wanted = [i.rstrip("*").upper() for i in dict.fromkeys(options["instruments"])]
        assert [i.rstrip("*").upper() for i in _as_list(criteria["instrument_name"])] == wanted
    kinds = list(dict.fromkeys(options["products"]))
    assert len(recipe.filter.endswith) == len(kinds)
    for kind, suffix in zip(kinds, recipe.filter.endswith):
        assert re.fullmatch(rf"_{kind}\.(fits|ecsv|json)", suffix)
    if kinds:
        assert _as_list(recipe.filter.columns["productSubGroupDescription"]) == [k.upper() for k in kinds]
    else:
        assert recipe.filter.columns == {}
    # the header: editors' schema line first, and the command that reproduces the recipe
    lines = text.splitlines()
    assert lines[0] == f"# yaml-language-server: $schema={DEFAULT_SCHEMA_PATH}"
    assert any(line.startswith("#   mastpipe init ") for line in lines)


@settings(max_examples=100, deadline=None)
@given(option_sets())
def test_the_recorded_command_reproduces_the_recipe(options) -> None:
    """The header's `mastpipe init ...` line, parsed back into options, writes the same text."""
    import shlex

    try:
        text = starting_recipe(**options)
    except UsageError:
        assume(False)
    command = next(line[4:] for line in text.splitlines() if line.startswith("#   mastpipe init "))
    argv = shlex.split(command)[2:]
    again: dict = {"programs": [], "instruments": [], "filters": [], "products": []}
    keys = {"--program": "programs", "--instrument": "instruments", "--filters": "filters", "--product": "products"}
    for flag, value in zip(argv[::2], argv[1::2]):
        if flag in keys:
            again[keys[flag]].append(value)
        else:
            again[flag[2:]] = value
    assert starting_recipe(**again) == text


def test_the_tutorial_choices_give_the_tutorial_recipe_sections() -> None:
    text = starting_recipe(collection="JWST", programs=["1073"], instruments=["NIRCam"], filters=["F277W"],
                           products=["uncal"])
    recipe = load(text)
    tutorial = parse_recipe(load_yaml_text((ROOT / "pipelines/jwst-1073-nircam-uncal.yaml").read_text(), "t"), {})
    assert recipe.name == "jwst-1073-nircam-f277w-uncal"
    assert recipe.query["jwst"] == tutorial.query["nircam"]
    assert recipe.filter.columns == tutorial.filter.columns
    assert recipe.filter.endswith == ["_uncal.fits"]
    # init omits guide-star files by default; the tutorial's download call keeps them
    assert recipe.filter.guide_stars == "omit" and tutorial.filter.guide_stars == "keep"
    assert recipe.products == tutorial.products and recipe.unique == tutorial.unique


def test_comments_explain_every_section() -> None:
    text = starting_recipe(collection="HST", products=["flt", "drz"], mode="curl")
    data = yaml.safe_load(text)
    for section in ("query", "products", "unique", "filter", "retrieve"):
        assert re.search(rf"^# {section}: \w", text, re.M), f"no comment explains {section}"
        assert section in data
    assert "# state:" in text  # the commented-out scheduled-rerun setting
    assert "- _flt.fits" in text and "flat-fielded exposures" in text


def test_several_values_become_lists_and_duplicates_go() -> None:
    recipe = load(starting_recipe(collection="JWST", programs=["1073,1345", "1073"], filters=["F090W", "F150W"],
                                  products=["cal", "CAL", "_i2d.fits"]))
    criteria = recipe.query["jwst"].criteria
    assert criteria["proposal_id"] == ["1073", "1345"]
    assert criteria["filters"] == ["F090W", "F150W"]
    assert recipe.filter.endswith == ["_cal.fits", "_i2d.fits"]
    assert recipe.filter.columns["productSubGroupDescription"] == ["CAL", "I2D"]


def test_program_ids_stay_text_and_bare_instruments_match_every_mode() -> None:
    text = starting_recipe(collection="HST", programs=["012345"], instruments=["wfc3", "ACS/WFC"])
    criteria = load(text).query["hst"].criteria
    assert criteria["proposal_id"] == "012345"  # not the number 12345
    assert criteria["instrument_name"] == ["WFC3*", "ACS/WFC"]


def test_kinds_of_unlisted_collections_are_fits_suffixes() -> None:
    recipe = load(starting_recipe(collection="GALEX", products=["int"]))
    assert recipe.filter.endswith == ["_int.fits"]
    assert recipe.filter.columns["productSubGroupDescription"] == "INT"


def test_default_name() -> None:
    assert default_name("JWST", ["1073"], ["NIRCAM*"], ["F277W"], ["uncal"]) == "jwst-1073-nircam-f277w-uncal"
    assert default_name("hst", [], ["WFC3/UVIS"], [], []) == "hst-wfc3"


@pytest.mark.parametrize("options, option, words", [
    (dict(collection=""), "--collection", "not a valid value"),
    (dict(collection="JWST MAST"), "--collection", "not a valid value"),
    (dict(collection="JWST", programs=["10 73"]), "--program", "not a valid value"),
    (dict(collection="JWST", programs=["1073,"]), "--program", "an empty value"),
    (dict(collection="JWST", instruments=["NIRCAM#x"]), "--instrument", "not a valid value"),
    (dict(collection="JWST", filters=["${HOME}"]), "--filters", "not a valid value"),
    (dict(collection="JWST", filters=["F277W\nname: x"]), "--filters", "not a valid value"),
    (dict(collection="JWST", products=["uncl"]), "--product", "did you mean 'uncal'?"),
    (dict(collection="JWST", products=["flt"]), "--product", "JWST kinds: uncal"),
    (dict(collection="TESS", products=["_lc.fits.gz"]), "--product", "not a product kind"),
    (dict(collection="JWST", mode="wget"), "--mode", "download, curl, manifest"),
    (dict(collection="JWST", name="my recipe"), "--name", "not a valid recipe name"),
    (dict(collection="JWST", name="-x"), "--name", "not a valid recipe name"),
])
def test_bad_options_are_usage_errors_that_name_the_option(options, option: str, words: str) -> None:
    from mastpipe.cli import FLAGS

    with pytest.raises(UsageError) as caught:
        starting_recipe(**options)
    error = caught.value
    assert error.exit_code == EXIT_INVALID
    # the library names its parameter; the command line (FLAGS) the option
    [parameter] = error.parameters
    assert FLAGS[parameter] == option and parameter in options or parameter == "mode"
    assert str(error).startswith(f"{parameter}: ") and "--" not in str(error)
    assert words in str(error)
    error.name_parameters(FLAGS)
    assert str(error).startswith(f"{option}: ")
    assert words in str(error)


def test_a_secret_looking_value_is_refused_as_validate_would() -> None:
    secret = "aB3" * 11  # 33 letters and digits of mixed case: the shape of a token
    by_hand = ("version: 1\nname: t\nquery:\n  q:\n    criteria:\n      obs_collection: JWST\n"
               f"      filters: {secret}\n")
    with pytest.raises(RecipeError, match="looks like an access token"):
        load(by_hand)
    with pytest.raises(UsageError, match="looks like an access token"):
        starting_recipe(collection="JWST", filters=[secret])


def test_schema_path_is_relative_to_the_recipe(tmp_path: Path) -> None:
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "recipe.schema.json").write_text("{}")
    assert schema_path_for(tmp_path / "pipelines" / "a.yaml") == "../schemas/recipe.schema.json"
    assert schema_path_for(tmp_path / "a.yaml") == "schemas/recipe.schema.json"
    assert schema_path_for(tmp_path / "x" / "y" / "a.yaml") == "../../schemas/recipe.schema.json"
    assert schema_path_for(None) == DEFAULT_SCHEMA_PATH
    text = starting_recipe(collection="TESS", schema_path=schema_path_for(tmp_path / "x" / "y" / "a.yaml"))
    assert text.splitlines()[0] == "# yaml-language-server: $schema=../../schemas/recipe.schema.json"


def test_write_new_recipe_never_overwrites_without_force(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "er" / "r.yaml"
    write_new_recipe(target, "first\n")
    assert target.read_text() == "first\n"
    with pytest.raises(UsageError, match="already exists") as caught:
        write_new_recipe(target, "second\n")
    assert "pass force=True" in str(caught.value) and "--" not in str(caught.value)
    caught.value.name_parameters({"force": "--force", "path": "--output"})  # as the command line says it
    assert "pass --force to replace it, or choose another --output" in str(caught.value)
    assert target.read_text() == "first\n"
    write_new_recipe(target, "second\n", force=True)
    assert target.read_text() == "second\n"
    with pytest.raises(UsageError, match="is a directory"):
        write_new_recipe(tmp_path, "x\n")
