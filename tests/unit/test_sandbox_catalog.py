"""The sandbox catalogue, file bodies and query semantics, without any HTTP."""

from __future__ import annotations

import hashlib
import io
import tracemalloc

import pytest
from astropy.io import fits
from hypothesis import given, settings, strategies as st

from mastpipe.sandbox import Catalog
from mastpipe.sandbox.catalog import MRP
from mastpipe.sandbox.query import QueryError, angular_distance_arcsec, compile_filters, parse_position


@pytest.fixture(scope="module")
def cat():
    return Catalog(seed=0)


def by(cat, **kw):
    return [o for o in cat.observations() if all(o[k] == v for k, v in kw.items())]


# ---------------------------------------------------------------------------- contents
def test_deterministic_from_seed():
    a, b, c = Catalog(seed=3), Catalog(seed=3), Catalog(seed=4)
    assert a.observations() == b.observations()
    uri = a.products(a.observations()[0]["obsid"])[0]["dataURI"]
    assert a.body(uri) == b.body(uri)
    assert a.body(uri) != c.body(uri) or a.file_size(uri) != c.file_size(uri)


def test_jwst_1073_nircam_with_pipeline_names(cat):
    obs = by(cat, proposal_id="1073")
    assert obs and all(o["instrument_name"] == "NIRCAM/IMAGE" for o in obs)
    assert any("F277W" in o["filters"].split(";") for o in obs)
    names = {p["productFilename"] for o in obs for p in cat.products(o["obsid"])}
    for name in ("jw01073001001_02101_00001_nrca1_uncal.fits", "jw01073001001_02101_00001_nrca1_rate.fits",
                 "jw01073001001_02101_00001_nrca1_rateints.fits", "jw01073001001_02101_00001_nrca1_cal.fits",
                 "jw01073-o001_t001_nircam_clear-f277w_i2d.fits", "jw01073-o001_t001_nircam_clear-f277w_segm.fits",
                 "jw01073-o001_t001_nircam_clear-f277w_cat.ecsv",
                 "jw01073-o001_20230101t000000_image3_00002_asn.json"):
        assert name in names
    assert any("_gs-fg_" in n for n in names) and any("_gs-acq1_" in n for n in names)
    assert any("_gs-track_" in n for n in names)
    rows = [p for o in obs for p in cat.products(o["obsid"])]
    subs = {p["productSubGroupDescription"] for p in rows}
    assert {"UNCAL", "RATE", "RATEINTS", "CAL", "I2D", "SEGM", "CAT", "ASN"} <= subs
    assert {p["productType"] for p in rows} == {"SCIENCE", "AUXILIARY", "INFO"}
    assert {p["calib_level"] for p in rows} == {1, 2, 3}
    mrp = {p["productSubGroupDescription"] for p in rows if p["productGroupDescription"] == MRP}
    assert mrp and "UNCAL" not in mrp and "I2D" in mrp


def test_shared_products_across_parents(cat):
    parents: dict[str, set] = {}
    for o in by(cat, proposal_id="1073"):
        for p in cat.products(o["obsid"]):
            parents.setdefault(p["dataURI"], set()).add(p["parent_obsid"])
            assert p["parent_obsid"] == o["obsid"]
    shared = [u for u, ps in parents.items() if len(ps) > 1]
    assert any("_gs-" in u for u in shared) and any("_uncal" in u and "_gs-" not in u for u in shared)
    assert any(u.endswith("_i2d.fits") for u in shared)  # level-3 products too


def test_hst_tess_msa_exclusive(cat):
    hst = by(cat, obs_collection="HST")
    assert {o["instrument_name"].split("/")[0] for o in hst} >= {"WFC3", "ACS"}
    hst_names = {p["productFilename"] for o in hst for p in cat.products(o["obsid"])}
    assert any(n.endswith("_flt.fits") for n in hst_names) and any(n.endswith("_drz.fits") for n in hst_names)
    assert any(n.endswith("_raw.fits") for n in hst_names)
    assert {n[0] for n in hst_names} >= {"i", "j", "u"}
    tess = by(cat, obs_collection="TESS")
    assert tess and all(o["provenance_name"] == "SPOC" and o["sequence_number"] == 14 for o in tess)
    lcs = [p["productFilename"] for o in tess for p in cat.products(o["obsid"])]
    assert all("-s0014-" in n for n in lcs) and any(n.endswith("_lc.fits") for n in lcs)
    (msa,) = by(cat, instrument_name="NIRSPEC/MSA")
    assert cat.product_count(msa["obsid"]) > 10_000
    excl = by(cat, dataRights="EXCLUSIVE_ACCESS")
    assert excl and all(p["dataRights"] == "EXCLUSIVE_ACCESS"
                        for o in excl for p in cat.products(o["obsid"]))


def test_product_rows_resolve_to_files(cat):
    for o in cat.observations():
        for p in list(cat.iter_products(o["obsid"], 0, 30)):
            info = cat.file_info(p["dataURI"])
            assert info is not None and info.size == p["size"], p["dataURI"]
            assert info.filename == p["productFilename"] and info.obs_id == p["obs_id"]
    assert cat.file_info("mast:JWST/product/nothing.fits") is None
    with pytest.raises(KeyError):
        cat.file_size("mast:JWST/product/nothing.fits")


def test_iter_products_slices(cat):
    (msa,) = by(cat, instrument_name="NIRSPEC/MSA")
    allp = cat.products(msa["obsid"])
    assert list(cat.iter_products(msa["obsid"], 9_990, 10_010)) == allp[9_990:10_010]
    assert cat.product_count("nope") == 0 and cat.products("nope") == []


def test_scale_is_lazy():
    tracemalloc.start()
    c = Catalog(seed=1, scale=(200, 5_000))
    ids = [o["obsid"] for o in c.observations() if o["proposal_id"] == "9999"]
    assert len(ids) == 200 and sum(c.product_count(i) for i in ids) == 1_000_000
    last = list(c.iter_products(ids[-1], 4_999, 5_000))[0]
    assert c.file_info(last["dataURI"]).size == last["size"]
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 60 * 2**20  # a million materialised rows would need ~1 GB


# ---------------------------------------------------------------------------- bodies
def test_fits_bodies_are_valid_and_sized(cat):
    for o in cat.observations()[:12]:
        for p in cat.products(o["obsid"]):
            if p["productFilename"].endswith(".fits"):
                body = cat.body(p["dataURI"])
                assert len(body) == p["size"] and len(body) % 2880 == 0
    body = cat.body("mast:HST/product/ib5e01010_drz.fits")
    with fits.open(io.BytesIO(body)) as hdul:
        assert hdul[0].header["BITPIX"] == 8 and hdul[0].data.size == len(body) - 2880


def test_text_products_are_text(cat):
    uri = "mast:JWST/product/jw01073-o001_t001_nircam_clear-f277w_cat.ecsv"
    assert cat.body(uri).decode("ascii").startswith("# mastpipe sandbox file")


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 3_000_000), st.integers(0, 3_000_000))
def test_body_slices_agree_with_whole(a, b):
    c = _big_catalog()
    uri = _BIG
    whole = _big_body()
    lo, hi = min(a, b), max(a, b)
    assert c.body(uri, lo, hi) == whole[lo:hi]


_BIG = "mast:JWST/product/big_test.fits"
_cache: dict = {}


def _big_catalog():
    if "c" not in _cache:
        c = Catalog(seed=9)
        c.add_product(c.observations()[0]["obsid"], productFilename="big_test.fits", size=2_500_000)
        _cache["c"] = c
    return _cache["c"]


def _big_body():
    if "b" not in _cache:
        _cache["b"] = _big_catalog().body(_BIG)
    return _cache["b"]


def test_sha256_and_touch():
    c = Catalog(seed=0)
    uri = "mast:JWST/product/jw01073001001_02101_00001_nrca1_cal.fits"
    before = c.file_info(uri)
    assert c.sha256(uri) == hashlib.sha256(c.body(uri)).hexdigest()
    old = c.sha256(uri)
    after = c.touch(uri)
    assert after.size == before.size + 2880 and after.etag != before.etag
    assert after.last_modified > before.last_modified and c.sha256(uri) != old
    with fits.open(io.BytesIO(c.body(uri))) as hdul:
        assert hdul[0].header["SBXVERS"] == 1


def test_add_observation_and_product():
    c = Catalog(seed=0)
    o = c.add_observation(n_products=3, filters="CLEAR;F277W", dataRights="EXCLUSIVE_ACCESS")
    assert c.observation(o["obsid"])["filters"] == "CLEAR;F277W"
    prods = c.products(o["obsid"])
    assert len(prods) == 3 and all(p["dataRights"] == "EXCLUSIVE_ACCESS" for p in prods)
    assert len({p["dataURI"] for p in prods}) == 3
    p = c.add_product(o["obsid"], productFilename="new_i2d.fits", size=2880 * 3,
                      productSubGroupDescription="I2D")
    assert p["dataURI"] == "mast:JWST/product/new_i2d.fits" and c.file_size(p["dataURI"]) == 8640
    assert c.products(o["obsid"])[-1]["productFilename"] == "new_i2d.fits"
    with pytest.raises(KeyError):
        c.add_product("nope")


# ---------------------------------------------------------------------------- query semantics
ROWS = [
    {"obs_collection": "JWST", "filters": "CLEAR;F277W", "instrument_name": "NIRCAM/IMAGE",
     "target_name": "NGC-104", "calib_level": 3, "s_ra": 10.0, "mtFlag": False, "proposal_id": "1073"},
    {"obs_collection": "HST", "filters": "F170LP;G235M", "instrument_name": "ACS/WFC",
     "target_name": "M31", "calib_level": 2, "s_ra": 20.0, "mtFlag": True, "proposal_id": None},
]


def match(filters):
    pred = compile_filters(filters)
    return [r["obs_collection"] for r in ROWS if pred(r)]


@pytest.mark.parametrize("filters, expected", [
    ([{"paramName": "OBS_Collection", "values": ["jwst"]}], ["JWST"]),
    ([{"paramName": "obs_collection", "values": ["JWST", "HST"]}], ["JWST", "HST"]),
    ([{"paramName": "filters", "separator": ";", "values": ["F277W"]}], ["JWST"]),
    ([{"paramName": "filters", "values": ["F170LP;G235M"]}], ["HST"]),
    ([{"paramName": "filters", "values": ["g235m"]}], ["HST"]),
    ([{"paramName": "instrument_name", "values": ["Nircam"]}], ["JWST"]),
    ([{"paramName": "instrument_name", "values": [], "freeText": "NIRCAM%"}], ["JWST"]),
    ([{"paramName": "instrument_name", "values": ["ACS/WFC"], "freeText": "NIRC%"}], ["JWST", "HST"]),
    ([{"paramName": "target_name", "values": [], "freeText": "m3_"}], ["HST"]),
    ([{"paramName": "target_name", "values": ["M3_"]}], []),
    ([{"paramName": "target_name", "values": ["NGC%"]}], ["JWST"]),
    ([{"paramName": "target_name", "values": ["M3"]}], []),
    ([{"paramName": "calib_level", "values": ["3"]}], ["JWST"]),
    ([{"paramName": "mtFlag", "values": ["True"]}], ["HST"]),
    ([{"paramName": "s_ra", "values": [{"min": 5, "max": 10}]}], ["JWST"]),
    ([{"paramName": "s_ra", "values": [{"min": "10.0", "max": "20"}]}], ["JWST", "HST"]),
    ([{"paramName": "obs_collection", "values": ["JWST"]}, {"paramName": "calib_level", "values": ["2"]}], []),
    ([{"paramName": "proposal_id", "values": ["1073"]}], ["JWST"]),
    ([], ["JWST", "HST"]),
])
def test_filter_semantics(filters, expected):
    assert match(filters) == expected


def test_filter_errors():
    with pytest.raises(QueryError, match="obs_colection"):
        compile_filters([{"paramName": "obs_colection", "values": ["x"]}])
    with pytest.raises(QueryError):
        compile_filters([{"values": ["x"]}])
    with pytest.raises(QueryError):
        compile_filters([{"paramName": "s_ra", "values": [{"min": "a", "max": 1}]}])


def test_position_helpers():
    assert parse_position("83.63308, 22.0145, 0.2") == (83.63308, 22.0145, 0.2)
    with pytest.raises(QueryError):
        parse_position("1, 2")
    assert angular_distance_arcsec(10, 20, 10, 20) == 0
    assert abs(angular_distance_arcsec(0, 0, 0, 1) - 3600) < 1e-6
    assert abs(angular_distance_arcsec(359.9, 0, 0.1, 0) - 720) < 1e-6
