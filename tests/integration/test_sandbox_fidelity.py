"""Field names and types of sandbox responses equal astroquery's recorded MAST fixtures (+ extras)."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import pytest
import requests

OBS_EXTRAS = {"provenance_name": "string", "proposal_type": "string", "sequence_number": "int",
              "dataRights": "string"}
PRODUCT_EXTRAS = {"parent_obsid": "string", "dataRights": "string", "calib_level": "int",
                  "proposal_id": "string"}
ASTROQUERY_TYPES = {"string", "char", "date", "datetime", "float", "double", "decimal", "int",
                    "short", "long", "number", "boolean", "binary"}


def fixture(name: str) -> dict:
    import astroquery.mast

    return json.loads((Path(astroquery.mast.__file__).parent / "tests" / "data" / name).read_text())


def invoke(sb, service, params):
    req = {"service": service, "params": params, "format": "json", "pagesize": 50000, "page": 1,
           "cacheBreaker": "fid"}
    r = requests.post(sb.url + "/api/v0/invoke", data="request=" + quote(json.dumps(req)),
                      headers={"Content-type": "application/x-www-form-urlencoded"})
    r.raise_for_status()
    return r.json()


def fields(resp) -> dict[str, str]:
    return {f["name"]: f["type"] for f in resp["fields"]}


def check(ours: dict, theirs: dict, extras: dict) -> None:
    assert ours == {**theirs, **extras}
    assert set(ours.values()) <= ASTROQUERY_TYPES


@pytest.mark.parametrize("fixture_name, service, params", [
    ("advSearch.json", "Mast.Caom.Filtered",
     {"columns": "*", "filters": [{"paramName": "obs_collection", "values": ["HST"]}]}),
    ("advSearchPos.json", "Mast.Caom.Filtered.Position",
     {"columns": "*", "filters": [{"paramName": "obs_collection", "values": ["HST"]}],
      "position": "83.63308, 22.0145, 0.2"}),
    ("caom.json", "Mast.Caom.Cone", {"ra": 83.63308, "dec": 22.0145, "radius": 0.2}),
])
def test_observation_fields_equal_fixture_plus_extras(sandbox, fixture_name, service, params):
    resp = invoke(sandbox, service, params)
    ref = fixture(fixture_name)
    check(fields(resp), fields(ref), OBS_EXTRAS)
    assert [f["name"] for f in resp["fields"]][:len(ref["fields"]) - ("_selected_" in fields(ref))] == \
        [f["name"] for f in ref["fields"] if f["name"] != "_selected_"]
    assert set(resp) == set(ref) and set(resp["paging"]) == set(ref["paging"])
    assert resp["data"], "the query should find HST observations around the Crab"
    for row in resp["data"]:
        assert set(row) == set(fields(resp))
        assert isinstance(row["obsid"], str)
        assert isinstance(row["calib_level"], int)


def test_product_fields_equal_fixture_plus_extras(sandbox):
    obsid = sandbox.catalog.observations()[0]["obsid"]
    resp = invoke(sandbox, "Mast.Caom.Products", {"obsid": obsid})
    ref = fixture("products.json")
    check(fields(resp), fields(ref), PRODUCT_EXTRAS)
    assert set(resp) == set(ref)
    for row in resp["data"]:
        assert isinstance(row["size"], int) and isinstance(row["calib_level"], int)
        assert row["parent_obsid"] == obsid


def test_count_shape_equals_fixture(sandbox):
    resp = invoke(sandbox, "Mast.Caom.Filtered",
                  {"columns": "COUNT_BIG(*)", "filters": [{"paramName": "obs_collection", "values": ["TESS"]}]})
    ref = fixture("countsResp.json")
    assert resp["fields"] == ref["fields"] and list(resp["data"][0]) == ["Column1"]
    assert resp["data"][0]["Column1"] == 8


def test_value_types_match_fixture_values(sandbox):
    """JSON value kinds per column agree with the fixture's (numbers stay numbers etc.)."""
    resp = invoke(sandbox, "Mast.Caom.Filtered",
                  {"columns": "*", "filters": [{"paramName": "obs_collection", "values": ["HST"]}]})
    ref = fixture("advSearch.json")
    for name in ("s_ra", "s_dec", "t_min", "t_exptime", "em_min"):
        assert all(isinstance(r[name], (int, float)) for r in resp["data"])
        assert all(isinstance(r[name], (int, float)) for r in ref["data"])
    for name in ("obs_collection", "obs_id", "instrument_name", "filters", "s_region"):
        assert all(isinstance(r[name], str) for r in resp["data"])
