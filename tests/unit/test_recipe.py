"""The recipe models and load_recipe on good input: values, conversions, immutability, precedence."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from mastpipe.errors import EXIT_INVALID, RecipeError, UsageError
from mastpipe.recipe.models import (DEFAULT_MAST_URL, MAST_URL_ENV, Mast, Position, Range, Recipe, effective_mast_url,
                             load_recipe, parse_recipe, warning_problems)
from mastpipe.recipe.yamlload import load_yaml, load_yaml_text

ROOT = Path(__file__).resolve().parents[2]

FULL = """\
version: 1
name: full-recipe
description: Every section, every key.
mast:
  url: http://127.0.0.1:8765/
  timeout: 30
  page_size: 1000
  max_in_flight: 8
  retries: 3
  retry_after_cap: 60
query:
  nircam:
    criteria:
      obs_collection: JWST
      proposal_id: ["1073", "1345"]
      instrument_name: "NIRCAM*"
      t_min: {min: 2022-01-01, max: "2022-07-01T12:00:00"}
      t_exptime: {min: 100}
      calib_level: 2
  crab:
    criteria:
      obs_collection: HST
    position:
      coordinates: "05h34m31.94s +22d00m52.2s"
      radius: 30 arcsec
products:
  batch_size: 10
  in_flight: 4
unique:
  key: dataURI
filter:
  contains: [_uncal.fits]
  endswith: [.fits]
  exclude: [_trapsfilled]
  guide_stars: keep
  mrp_only: true
  columns:
    productSubGroupDescription: UNCAL
    dataRights: "!EXCLUSIVE_ACCESS"
    size: {max: 1000000000}
retrieve:
  mode: manifest
  destination: ${DATA:-data}/full
  layout: "{obs_collection}/{obs_id}/{productFilename}"
  in_flight: 2
  verify: sha256
  overwrite: never
  manifest: out/manifest.ecsv
state:
  directory: .state
  query_max_age: 12h
"""


def load(text: str, environ: dict[str, str] | None = None) -> Recipe:
    return parse_recipe(load_yaml_text(text, "recipe.yaml"), environ or {})


@pytest.fixture()
def full() -> Recipe:
    return load(FULL)


def test_a_full_recipe_loads_with_every_value(full: Recipe) -> None:
    assert full.name == "full-recipe"
    assert full.mast.url == "http://127.0.0.1:8765"  # trailing slash dropped
    assert (full.mast.timeout, full.mast.page_size, full.mast.max_in_flight) == (30.0, 1000, 8)
    assert list(full.query) == ["nircam", "crab"]
    nircam = full.query["nircam"].criteria
    assert nircam["proposal_id"] == ["1073", "1345"]
    assert nircam["t_min"] == Range(min=59580.0, max=59761.5)
    assert nircam["t_exptime"] == Range(min=100)
    assert full.query["crab"].position is not None
    assert full.products.in_flight == 4 and full.unique.key == "dataURI"
    assert full.filter.columns["size"] == Range(max=1e9)
    assert full.filter.guide_stars == "keep" and full.filter.mrp_only is True
    assert full.retrieve.destination == "data/full"
    assert full.retrieve.verify == "sha256" and full.state.query_max_age == "12h"


def test_defaults_of_a_minimal_recipe() -> None:
    recipe = load("version: 1\nname: m\nquery:\n  q:\n    criteria: {obs_collection: TESS}\n")
    assert recipe.mast.url == DEFAULT_MAST_URL
    assert recipe.products.batch_size == 5 and recipe.products.in_flight is None
    assert recipe.unique.key == "productFilename"
    assert recipe.filter.guide_stars == "omit" and recipe.filter.columns == {}
    assert (recipe.retrieve.mode, recipe.retrieve.layout, recipe.retrieve.overwrite) == ("download", "astroquery",
                                                                                         "changed")


@pytest.mark.parametrize("path", sorted((ROOT / "pipelines").glob("*.yaml")), ids=lambda p: p.name)
def test_example_pipelines_load(path: Path) -> None:
    recipe = load_recipe(path, environ={})
    assert recipe.name == path.stem
    assert recipe.warnings() == []


def test_the_seed_example_is_what_the_tutorial_asks_for() -> None:
    recipe = load_recipe(ROOT / "pipelines" / "jwst-1073-nircam-uncal.yaml", environ={})
    assert recipe.query["nircam"].criteria == {"obs_collection": "JWST", "proposal_id": "1073",
                                               "instrument_name": "NIRCAM*", "filters": "F277W"}
    # the tutorial downloads with download_products(files, productSubGroupDescription='UNCAL'):
    # no file-name rule, guide-star files included
    assert recipe.filter.contains == [] and recipe.filter.guide_stars == "keep"
    assert recipe.filter.columns == {"productSubGroupDescription": "UNCAL"}
    curl = load_recipe(ROOT / "pipelines" / "jwst-1073-nircam-uncal-curl.yaml", environ={})
    assert curl.retrieve.mode == "curl" and curl.query == recipe.query and curl.filter == recipe.filter


# ---- immutability and strictness ------------------------------------------------------------


@pytest.mark.parametrize("target, attribute, value", [
    (lambda r: r, "name", "other"),
    (lambda r: r.mast, "url", "https://example.org"),
    (lambda r: r.query["nircam"], "criteria", {}),
    (lambda r: r.retrieve, "mode", "curl"),
    (lambda r: r.filter, "contains", []),
    (lambda r: r.query["crab"].position, "radius", "1 deg"),
])
def test_assignment_raises(full: Recipe, target: Any, attribute: str, value: Any) -> None:
    obj = target(full)
    before = getattr(obj, attribute)
    with pytest.raises(ValidationError, match="frozen"):
        setattr(obj, attribute, value)
    assert getattr(obj, attribute) == before


@pytest.mark.parametrize("change", [
    lambda r: r.query.__setitem__("new", r.query["nircam"]),
    lambda r: r.query.pop("nircam"),
    lambda r: r.query.update({}),
    lambda r: r.query["nircam"].criteria.__setitem__("filters", "F200W"),
    lambda r: r.query["nircam"].criteria["proposal_id"].append("9999"),
    lambda r: r.filter.contains.append("x"),
    lambda r: r.filter.columns.clear(),
    lambda r: r.filter.exclude.__iadd__(["x"]),
    lambda r: r.filter.endswith.__setitem__(0, "x"),
])
def test_the_lists_and_dicts_inside_are_immutable_too(full: Recipe, change: Any) -> None:
    before = full.model_dump()
    with pytest.raises(TypeError, match="a recipe is immutable"):
        change(full)
    assert full.model_dump() == before


def test_a_recipe_is_hashable_copyable_and_picklable(full: Recipe) -> None:
    import copy
    import pickle

    assert hash(full) == hash(load(FULL))
    assert {full: 1}[load(FULL)] == 1
    for clone in (copy.deepcopy(full), pickle.loads(pickle.dumps(full)), full.model_copy(deep=True)):
        assert clone == full
        with pytest.raises(TypeError):
            clone.filter.contains.append("x")
    changed = full.model_copy(update={"name": "other"})
    assert changed.name == "other" and full.name == "full-recipe"
    # read as plain data, it is plain lists and dicts, equal to what was written
    assert full.filter.contains == ["_uncal.fits"] and isinstance(full.filter.contains, list)
    assert type(full.model_dump()["filter"]["contains"]) is list
    assert Recipe.model_validate(full.model_dump()) == full


@pytest.mark.parametrize("model, data", [
    (Recipe, {"version": 1, "name": "t", "query": {"q": {"criteria": {"obs_collection": "JWST"}}}, "bogus": 1}),
    (Mast, {"urll": "https://example.org"}),
    (Position, {"object": "M1", "radios": "1 deg"}),
    (Range, {"min": 1, "mx": 2}),
])
def test_extra_keys_are_forbidden_in_the_models_themselves(model: Any, data: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(data)
    assert [e["type"] for e in caught.value.errors()] == ["extra_forbidden"]


# ---- conversions -----------------------------------------------------------------------------


@pytest.mark.parametrize("written, mjd", [
    ("2022-01-01", 59580.0),                     # unquoted: YAML would make it a date
    ("'2022-01-01'", 59580.0),
    ("2022-01-01T12:00:00", 59580.5),
    ("2022-01-01T12:00:00Z", 59580.5),
    ("2022-01-01T14:00:00+02:00", 59580.5),
    ("2000-01-01T12:00:00", 51544.5),            # J2000
    ("1858-11-17", 0.0),                         # the MJD epoch
    ("59580.25", 59580.25),                      # already an MJD
])
def test_dates_become_mjd(written: str, mjd: float) -> None:
    recipe = load(f"version: 1\nname: d\nquery:\n  q:\n    criteria:\n      obs_collection: JWST\n"
                  f"      t_obs_release: {{max: {written}}}\n")
    assert recipe.query["q"].criteria["t_obs_release"].max == pytest.approx(mjd, abs=1e-9)


def test_non_date_fields_keep_dates_as_text() -> None:
    recipe = load("version: 1\nname: d\ndescription: 2022-01-01\nquery:\n  q:\n"
                  "    criteria: {obs_collection: JWST, obs_id: 2022-01-01}\n")
    assert recipe.description == "2022-01-01"
    assert recipe.query["q"].criteria["obs_id"] == "2022-01-01"


@pytest.mark.parametrize("radius, degrees", [
    ("0.2 deg", 0.2), ("5 arcmin", 5 / 60), ("30 arcsec", 30 / 3600), ("1.5degrees", 1.5), ("10\"", 10 / 3600),
])
def test_radius_units(radius: str, degrees: float) -> None:
    position = Position(object="M1", radius=radius)
    assert position.radius_deg == pytest.approx(degrees)
    assert position.radius == radius


def test_sexagesimal_coordinates_of_the_crab() -> None:
    position = Position(coordinates="05h34m31.94s +22d00m52.2s")
    ra, dec = position.ra_dec
    assert ra == pytest.approx(83.633, abs=1e-3)
    assert dec == pytest.approx(22.0145, abs=1e-4)
    assert Position(coordinates="05:34:31.94 +22:00:52.2").ra_dec == pytest.approx((ra, dec))
    assert Position(coordinates=[83.633, 22.0145]).ra_dec == (83.633, 22.0145)
    assert position.radius_deg == 0.2  # the default


# ---- ${VAR} interpolation --------------------------------------------------------------------


@pytest.mark.parametrize("written, environ, result", [
    ("${ROOT}/data", {"ROOT": "/srv"}, "/srv/data"),
    ("${ROOT:-/tmp}/data", {}, "/tmp/data"),
    ("${ROOT:-/tmp}/data", {"ROOT": "/srv"}, "/srv/data"),
    ("${ROOT:-}data", {}, "data"),
    ("${A}/${B}", {"A": "x", "B": "y"}, "x/y"),
    ("cost$$5", {}, "cost$5"),
    ("$$${A}", {"A": "x"}, "$x"),
    ("$HOME/data", {"HOME": "/root"}, "$HOME/data"),  # only ${...} is interpolated
])
def test_variables(written: str, environ: dict[str, str], result: str) -> None:
    recipe = load(f"version: 1\nname: v\nquery:\n  q:\n    criteria: {{obs_collection: JWST}}\n"
                  f"retrieve:\n  destination: '{written}'\n", environ)
    assert recipe.retrieve.destination == result


def test_variables_may_fill_numbers() -> None:
    recipe = load("version: 1\nname: v\nquery:\n  q:\n    criteria: {obs_collection: JWST}\n"
                  "products:\n  batch_size: ${BATCH}\n", {"BATCH": "7"})
    assert recipe.products.batch_size == 7


def test_the_process_environment_is_the_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("version: 1\nname: v\nquery:\n  q:\n    criteria: {obs_collection: JWST}\n"
                    "retrieve:\n  destination: ${MASTPIPE_TEST_DEST}\n")
    monkeypatch.setenv("MASTPIPE_TEST_DEST", "/from/env")
    assert load_recipe(path).retrieve.destination == "/from/env"
    monkeypatch.delenv("MASTPIPE_TEST_DEST")
    with pytest.raises(RecipeError, match="environment variable MASTPIPE_TEST_DEST is not set"):
        load_recipe(path)


def test_a_token_in_the_environment_never_reaches_the_recipe() -> None:
    with pytest.raises(RecipeError) as caught:
        load("version: 1\nname: v\nquery:\n  q:\n    criteria: {obs_collection: JWST}\n"
             "retrieve:\n  destination: ${MAST_API_TOKEN}\n", {"MAST_API_TOKEN": "secret-value"})
    assert "secret-value" not in str(caught.value)
    assert caught.value.exit_code == EXIT_INVALID


# ---- the MAST URL's precedence ---------------------------------------------------------------

RECIPE_URL = "version: 1\nname: u\nmast: {url: 'http://recipe.example'}\nquery:\n  q:\n    criteria: {obs_collection: JWST}\n"
NO_URL = "version: 1\nname: u\nquery:\n  q:\n    criteria: {obs_collection: JWST}\n"


def test_mast_url_precedence() -> None:
    recipe, plain = load(RECIPE_URL), load(NO_URL)
    env = {MAST_URL_ENV: "http://env.example/"}
    assert effective_mast_url(recipe, "http://cli.example", env) == "http://cli.example"
    assert effective_mast_url(recipe, None, env) == "http://env.example"
    assert effective_mast_url(recipe, None, {}) == "http://recipe.example"
    assert effective_mast_url(plain, None, {}) == DEFAULT_MAST_URL == "https://mast.stsci.edu"
    assert effective_mast_url(plain, None, env) == "http://env.example"


def test_mast_url_from_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MAST_URL_ENV, "http://127.0.0.1:9")
    assert effective_mast_url(load(NO_URL)) == "http://127.0.0.1:9"


@pytest.mark.parametrize("cli, env, origin", [
    (None, "mast.stsci.edu", MAST_URL_ENV),
    ("ftp://mast.stsci.edu", None, "mast_url"),  # the library's parameter; the CLI says --mast-url
    ("http://cli.example", "not a url", None),  # the command line wins, the bad variable is never read
])
def test_a_bad_url_override_is_a_usage_error(cli: str | None, env: str | None, origin: str | None) -> None:
    environ = {MAST_URL_ENV: env} if env else {}
    if origin is None:
        assert effective_mast_url(load(NO_URL), cli, environ) == cli
        return
    with pytest.raises(UsageError) as caught:
        effective_mast_url(load(NO_URL), cli, environ)
    assert caught.value.message.startswith(f"{origin}: ")
    assert "is not an http(s) URL" in caught.value.message
    assert caught.value.hint and "https://mast.stsci.edu" in caught.value.hint
    assert caught.value.exit_code == EXIT_INVALID
    from mastpipe.cli import FLAGS

    caught.value.name_parameters(FLAGS)
    assert caught.value.message.startswith("--mast-url: " if origin == "mast_url" else f"{origin}: ")


# ---- warnings --------------------------------------------------------------------------------


def test_a_query_without_obs_collection_is_valid_but_warned_about(tmp_path: Path) -> None:
    path = tmp_path / "w.yaml"
    path.write_text("version: 1\nname: w\nquery:\n  named:\n    criteria: {obs_collection: JWST}\n"
                    "  unnamed:\n    criteria:\n      proposal_id: '1073'\n")
    located = load_yaml(path)
    recipe = parse_recipe(located, {})
    assert recipe.warnings() == [(("query", "unnamed", "criteria"),
                                  "no obs_collection: naming the mission (e.g. JWST) makes MAST's search much faster",
                                  "add e.g. `obs_collection: JWST` (or HST, TESS, ...) to the criteria")]
    [warning] = warning_problems(recipe, located)
    assert warning.one_line() == (f"{path}:7:5: query.unnamed.criteria: warning: no obs_collection: naming the "
                                  "mission (e.g. JWST) makes MAST's search much faster")
    assert warning.hint


_RETRIEVE_BASE = "version: 1\nname: w\nquery:\n  q:\n    criteria: {obs_collection: JWST}\nretrieve:\n"


@pytest.mark.parametrize(("retrieve", "expected"), [
    ("  script: get.sh\n",
     ["7:3: retrieve.script: warning: retrieve.script has no effect with mode download: only curl mode writes a "
      "script", "  hint: remove it, or set `mode: curl`"]),
    ("  mode: manifest\n  script: get.sh\n",
     ["8:3: retrieve.script: warning: retrieve.script has no effect with mode manifest: only curl mode writes a "
      "script", "  hint: remove it, or set `mode: curl`"]),
    ("  mode: curl\n  script: get.sh\n  in_flight: 8\n  verify: size\n  overwrite: always\n"
     "  executor: {kind: dask, scheduler: local}\n",
     [f"{line}:3: retrieve.{key}: warning: retrieve.{key} has no effect with mode curl: only download mode "
      f"fetches files itself\n  hint: remove it, or set `mode: download`"
      for line, key in ((9, "in_flight"), (10, "verify"), (11, "overwrite"), (12, "executor"))]),
    ("  mode: manifest\n  verify: sha256\n",
     ["8:3: retrieve.verify: warning: retrieve.verify has no effect with mode manifest: only download mode "
      "fetches files itself", "  hint: remove it, or set `mode: download`"]),
], ids=["script-in-download", "script-in-manifest", "download-options-in-curl", "verify-in-manifest"])
def test_retrieve_options_the_mode_ignores_are_warned_about_where_they_stand(
        tmp_path: Path, retrieve: str, expected: list[str]) -> None:
    path = tmp_path / "w.yaml"
    path.write_text(_RETRIEVE_BASE + retrieve)
    located = load_yaml(path)
    recipe = parse_recipe(located, {})  # valid: a warning is not an error
    shown = "\n".join(str(w) for w in warning_problems(recipe, located))
    assert shown == "\n".join(f"{path}:{line}" if line[0].isdigit() else line for line in expected)


def test_retrieve_options_the_mode_uses_are_not_warned_about(tmp_path: Path) -> None:
    path = tmp_path / "w.yaml"
    path.write_text(_RETRIEVE_BASE + "  mode: download\n  in_flight: 8\n  verify: sha256\n  overwrite: never\n"
                    "  executor: {kind: dask, scheduler: local}\n  manifest: m.ecsv\n  destination: d\n"
                    "  layout: flat\n")
    located = load_yaml(path)
    assert warning_problems(parse_recipe(located, {}), located) == []
    curl = tmp_path / "c.yaml"
    curl.write_text(_RETRIEVE_BASE + "  mode: curl\n  script: get.sh\n  manifest: m.ecsv\n")
    located = load_yaml(curl)
    assert warning_problems(parse_recipe(located, {}), located) == []


# ---- key order does not matter ---------------------------------------------------------------


def _shuffled(value: Any, rng: random.Random) -> Any:
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {key: _shuffled(item, rng) for key, item in items}
    if isinstance(value, list):
        return [_shuffled(item, rng) for item in value]
    return value


FULL_DATA = yaml.safe_load(FULL.replace("${DATA:-data}", "data"))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.randoms(use_true_random=False), st.sampled_from(["block", "flow", "json"]))
def test_reordering_keys_gives_an_equal_model(rng: random.Random, style: str) -> None:
    shuffled = _shuffled(FULL_DATA, rng)
    if style == "json":
        text = json.dumps(shuffled, default=str)  # JSON is YAML too
    else:
        text = yaml.safe_dump(shuffled, sort_keys=False, default_flow_style=style == "flow")
    original, reordered = load(FULL), load(text)
    assert reordered == original
    assert reordered.model_dump() == original.model_dump()
    assert json.loads(reordered.model_dump_json()) == json.loads(original.model_dump_json())
