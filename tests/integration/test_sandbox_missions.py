"""The sandbox's mission search API (``jwst``, ``hst``): shapes and field types as astroquery's
recorded MAST answers, the same files and bytes as the CAOM side, and unmodified astroquery
``MastMissions`` (in a subprocess, pointed at the sandbox by its config file) working against it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import requests

import astroquery.mast

FIXTURES = Path(astroquery.mast.__file__).parent / "tests" / "data"


def fixture(name: str):
    return json.loads((FIXTURES / name).read_text())


def post(sandbox, mission: str, service: str, body: dict) -> requests.Response:
    return requests.post(f"{sandbox.url}/search/{mission}/api/v0.1/{service}", json=body, timeout=30)


def json_kind(value) -> str:
    """A JSON value's type as MAST's answers use them (whole and fractional numbers are both
    "number": MAST writes 2100 for a float column, see sci_actual_duration)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return type(value).__name__


def test_search_answer_has_the_shape_and_field_types_of_mast(sandbox):
    recorded = fixture("mission_results.json")
    params = {**recorded["search_params"], "target": ["83.63308 22.0145"], "radius": 3,
              "radius_units": "arcminutes", "conditions": [{"sci_aec": "S"}]}
    params["select_cols"] = [c for c in params["select_cols"]]  # every column the recording asked for
    answer = post(sandbox, "hst", "search", params).json()
    assert set(answer) == set(recorded)
    for key in recorded:
        assert type(answer[key]) is type(recorded[key]), key
    assert answer["totalResults"] == len(answer["results"]) == 4  # the four Crab datasets
    assert {i["name"]: i["type"] for i in answer["info"]} == {i["name"]: i["type"] for i in recorded["info"]}
    assert set(answer["search_params"]) >= set(recorded["search_params"]) - {"conditions"}
    for row in answer["results"]:
        assert set(row) == set(recorded["results"][0])
        for column, value in row.items():
            allowed = {json_kind(r[column]) for r in recorded["results"]}
            # a column MAST left empty in the recording may hold a value here, and vice versa
            assert json_kind(value) in allowed | {"null"} or allowed == {"null"}, (column, value)
    assert [r["ang_sep"] for r in answer["results"]] == sorted(r["ang_sep"] for r in answer["results"])


def test_products_and_columns_have_the_shape_of_mast(sandbox):
    recorded = fixture("mission_products.json")["products"]
    answer = post(sandbox, "hst", "post_list_products", {"dataset_ids": ["IB5E01010", "U2AB0101T"]}).json()
    assert list(answer) == ["products"] and answer["products"]
    for row in answer["products"]:
        assert set(row) == set(recorded[0])
        assert {k: json_kind(v) for k, v in row.items()} == {k: json_kind(v) for k, v in recorded[0].items()}
    jwst = post(sandbox, "jwst", "post_list_products", {"dataset_ids": ["jw01073001001_02101_00001_nrcalong"]}).json()
    assert {k: json_kind(v) for k, v in jwst["products"][0].items()} == {k: json_kind(v) for k, v in recorded[0].items()}
    assert sorted(p["file_suffix"] for p in jwst["products"]) == ["_cal", "_rate", "_rateints", "_uncal"]
    columns_recorded = fixture("mission_columns.json")
    for mission in ("hst", "jwst"):
        columns = requests.get(f"{sandbox.url}/search/util/api/v0.1/column_list", params={"mission": mission},
                               timeout=30).json()
        for entry in columns:
            assert set(entry) == set(columns_recorded[0])
            assert all(isinstance(v, str) for v in entry.values())
            assert entry["qual_type"] in {c["qual_type"] for c in columns_recorded} | {"integer"}
    hst_recorded = {c["column_name"]: (c["qual_type"], c["datatype"]) for c in columns_recorded}
    hst = requests.get(f"{sandbox.url}/search/util/api/v0.1/column_list", params={"mission": "hst"}, timeout=30).json()
    for entry in hst:  # a column MAST has keeps MAST's type
        if entry["column_name"] in hst_recorded:
            assert (entry["qual_type"], entry["datatype"]) == hst_recorded[entry["column_name"]], entry


def test_paging_counts_everything_and_the_row_cap_shows_in_total_results(sandbox_factory):
    sandbox = sandbox_factory(seed=0, scale="30x2")
    body = {"conditions": [{"program": "9999"}], "select_cols": ["exposure"], "limit": 7, "offset": 0}
    seen = []
    while True:
        page = post(sandbox, "jwst", "search", body).json()
        assert page["totalResults"] == 30
        seen += [r["fileSetName"] for r in page["results"]]
        if len(page["results"]) < 7:
            break
        body["offset"] += 7
    assert len(seen) == len(set(seen)) == 30
    sandbox.faults = "query.row_cap=20"
    capped = post(sandbox, "jwst", "search", {**body, "limit": 100, "offset": 0}).json()
    assert capped["totalResults"] == 30 and len(capped["results"]) == 20
    bad = post(sandbox, "jwst", "search", {"conditions": [{"exp_typ": "NRC_IMAGE"}]})
    assert bad.status_code == 400 and "exp_typ" in bad.json()["detail"]


def test_mission_downloads_serve_the_caom_files_byte_for_byte(sandbox):
    products = post(sandbox, "jwst", "post_list_products",
                    {"dataset_ids": ["jw01073001001_02101_00001_nrcalong", "jw04242001001_02101_00001_nrcb1"]}).json()
    public = next(p for p in products["products"] if p["access"] == "PUBLIC" and p["file_suffix"] == "_uncal")
    url = f"{sandbox.url}/search/jwst/api/v0.1/retrieve_product"
    body = requests.get(url, params={"product_name": public["uri"]}, timeout=30).content
    caom = requests.get(sandbox.download_url(f"mast:JWST/product/{public['filename']}"), timeout=30).content
    assert len(body) == public["size"] and body == caom
    hidden = next(p for p in products["products"] if p["access"] == "EXCLUSIVE_ACCESS")
    assert requests.get(url, params={"product_name": hidden["uri"]}, timeout=30).status_code == 401
    with_token = requests.get(url, params={"product_name": hidden["uri"]}, timeout=30,
                              headers={"Authorization": "Bearer good-token"})
    assert with_token.status_code == 200
    assert hashlib.sha256(with_token.content).hexdigest() == sandbox.catalog.sha256(f"mast:JWST/product/{hidden['filename']}")


def test_unmodified_astroquery_mastmissions_works_against_the_sandbox(sandbox, run_astroquery, tmp_path):
    proc = run_astroquery(sandbox.url, """
        import json, warnings
        from astroquery.mast import MastMissions
        warnings.simplefilter("ignore")
        out = {}
        jwst = MastMissions(mission="jwst")
        out["columns"] = sorted(jwst.get_column_list()["name"])
        found = jwst.query_criteria(program=1073, exp_type="NRC_IMAGE", filter="F277W", select_cols=["exp_type"])
        out["datasets"] = sorted(found["fileSetName"])
        products = jwst.get_product_list(found)
        out["products"] = sorted(products["filename"])
        uncal = jwst.filter_products(products, file_suffix="_uncal")
        manifest = jwst.download_products(uncal[:1], download_dir="dl")
        out["manifest"] = [str(manifest["Status"][0]), str(manifest["Local Path"][0])]
        try:
            jwst.query_criteria(program=1073, exp_typ="NRC_IMAGE")
        except Exception as exc:
            out["typo"] = str(exc)
        hst = MastMissions(mission="hst")
        crab = hst.query_region("83.63308 22.0145", radius=3, sci_aec="S")
        out["crab"] = sorted(crab["sci_data_set_name"])
        out["hst_products"] = len(hst.get_product_list(crab))
        print("REPORT " + json.dumps(out))
    """)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("REPORT ")][-1]
    rep = json.loads(line[len("REPORT "):])
    assert "exp_type" in rep["columns"] and "fileSetName" in rep["columns"]
    assert rep["datasets"] == ["jw01073001001_02101_00001_nrcalong", "jw01073001001_02101_00002_nrcalong",
                               "jw01073002001_02101_00001_nrcalong", "jw01073002001_02101_00002_nrcalong"]
    assert len(rep["products"]) == 16 and all("_gs-" not in p for p in rep["products"])
    assert rep["manifest"][0] == "COMPLETE"
    local = tmp_path / rep["manifest"][1]
    name = local.name
    assert local.parts[-4:-2] == ("mastDownload", "jwst")
    assert local.parent.name in rep["datasets"] and name.startswith(local.parent.name)
    assert local.read_bytes() == sandbox.catalog.body(f"mast:JWST/product/{name}")
    assert "Did you mean 'exp_type'?" in rep["typo"]
    assert rep["crab"] == ["IB5E01010", "IB5E02010", "JB1F01010", "JB1F02010"]
    crab_files = sum(len([p for p in sandbox.catalog.products(o["obsid"]) if p["obsID"] == o["obsid"]])
                     for o in sandbox.catalog.observations() if o["obs_id"] in rep["crab"])
    assert rep["hst_products"] == crab_files


@pytest.mark.parametrize("mission", ["jwst", "hst"])
def test_every_mission_file_is_a_caom_file(sandbox, mission):
    from mastpipe.sandbox.missions import DATASET_COLUMN, MissionView

    view = MissionView(sandbox.catalog, mission)
    names = [row[DATASET_COLUMN[mission]] for row in view.datasets()]
    assert len(names) == len(set(names))
    products = view.products(names)
    assert len({p["uri"] for p in products}) == len(products)
    for product in products:
        info = sandbox.catalog.file_info(view.data_uri(product["uri"]))
        assert info is not None and info.size == product["size"] and info.filename == product["filename"]
