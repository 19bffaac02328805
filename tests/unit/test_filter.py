"""filter: vectorised rules, and equality with the seed tutorial's per-row ``product_filter``."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import MaskedColumn, Table
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mastpipe.errors import MastpipeError
from mastpipe.recipe.models import Filter
from mastpipe.stages.filter import MRP, filter_products, keep_mask
from mastpipe.state import as_stored


# The seed tutorial's function, verbatim, from the one copy the tests and benchmarks share.
from mastpipe.sandbox.tutorial import product_filter  # noqa: E402


# -- the property test against the seed ---------------------------------------------------------

PIECES = ["jw01073", "001001", "_02101", "_00001", "_nrca1", "_nrcalong", "_gs-", "_gs-fg", "_gs-acq1",
          "_uncal", "_uncal.fits", "_cal", "_cal.fits", "_i2d", "_i2d.fits", "_rate.fits", "_x1d.fits",
          ".fits", ".jpg", "_lc.fits", "_drz.fits", "_flt.fits", "gs", "-", "_", ".", "uncal", "cal",
          "fits", "é", "ß"]
NEEDLES = ["_uncal.fits", "_cal.fits", "_uncal", "_cal", "_i2d", "_gs-", ".fits", "cal", "_", "fits",
           "_rate", "_x1d.fits", ".jpg", "é"]

piece = st.sampled_from(PIECES)
free_text = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00",
                                           exclude_categories=("Cs",)), min_size=1, max_size=6)
filename = st.lists(st.one_of(piece, piece, piece, free_text), min_size=0, max_size=7).map("".join)
needle = st.one_of(st.sampled_from(NEEDLES), free_text, st.lists(piece, min_size=1, max_size=2).map("".join))
prod_list = st.lists(needle, min_size=1, max_size=4)


def _products(names: list[str]) -> Table:
    return Table({"productFilename": np.array(names, dtype=str) if names else np.array([], dtype="U1"),
                  "size": np.arange(len(names), dtype=np.int64)})


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(names=st.lists(filename, max_size=40), prods=prod_list, gs_omit=st.booleans())
def test_contains_and_guide_stars_select_exactly_what_the_seed_selects(names, prods, gs_omit):
    # numpy text arrays drop trailing NULs; file names never have them, and `free_text` has none.
    table = _products(names)
    rules = Filter(contains=prods, guide_stars="omit" if gs_omit else "keep")
    expected = product_filter(table, prods, gs_omit=gs_omit)
    assert keep_mask(table, rules).tolist() == expected.tolist()
    # As checkpoints store the table: text as UTF-8 bytes.
    stored = as_stored(table)
    assert stored["productFilename"].dtype.kind == "S"
    assert keep_mask(stored, rules).tolist() == expected.tolist()
    # The filtered table is the seed's selection, in order.
    assert list(filter_products(table, rules)["productFilename"]) == list(table[expected]["productFilename"])


@settings(max_examples=200, deadline=None)
@given(names=st.lists(filename, max_size=30), prods=prod_list)
def test_masked_filename_column_counts_masked_cells_as_empty(names, prods):
    table = _products(names)
    mask = np.array([i % 3 == 0 for i in range(len(names))], dtype=bool)
    table["productFilename"] = MaskedColumn(table["productFilename"], mask=mask)
    expected = product_filter(_products([("" if m else n) for n, m in zip(names, mask)]), prods, gs_omit=True)
    assert keep_mask(table, Filter(contains=prods)).tolist() == expected.tolist()


def test_seed_keeps_a_guide_star_file_with_gs_omit_false_only_if_it_matched():
    table = _products(["a_gs-fg_uncal.fits", "a_gs-fg_cal.fits", "b_uncal.fits", "b_cal.fits"])
    seed = product_filter(table, ["_uncal.fits"], gs_omit=False)
    assert seed.tolist() == [True, False, True, False]
    assert keep_mask(table, Filter(contains=["_uncal.fits"], guide_stars="keep")).tolist() == seed.tolist()
    assert keep_mask(table, Filter(contains=["_uncal.fits"], guide_stars="omit")).tolist() == \
        product_filter(table, ["_uncal.fits"], gs_omit=True).tolist() == [False, False, True, False]


# -- each rule -----------------------------------------------------------------------------------

NAMES = ["x_uncal.fits", "x_cal.fits", "x_gs-fg_cal.fits", "x_i2d.fits", "x_cal.fits.gz", "x_rate.jpg"]


def _rich() -> Table:
    n = len(NAMES)
    return Table({
        "productFilename": NAMES,
        "productGroupDescription": MaskedColumn([MRP, "", MRP, MRP, "", ""], mask=[0, 1, 0, 0, 1, 1]),
        "productType": ["SCIENCE", "SCIENCE", "AUXILIARY", "SCIENCE", "SCIENCE", "PREVIEW"],
        "calib_level": np.array([1, 2, 2, 3, 2, 2], dtype=np.int64),
        "size": np.array([10.0, 200.0, 5.0, 3000.0, 200.0, 1.0]),
        "dataRights": ["PUBLIC", "EXCLUSIVE_ACCESS", "PUBLIC", "PUBLIC", "PUBLIC", "PUBLIC"],
        "obsID": [str(i) for i in range(n)],
    })


def _kept(rules: Filter, table: Table | None = None) -> list[str]:
    table = _rich() if table is None else table
    names = filter_products(table, rules)["productFilename"]
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


@pytest.fixture(params=["str", "stored"])
def variant(request):
    """Every rule gives the same answer on a fresh table and on a checkpointed one."""
    return (lambda t: t) if request.param == "str" else as_stored


def test_no_rules_keep_everything_but_guide_stars(variant):
    assert _kept(Filter(), variant(_rich())) == [n for n in NAMES if "_gs-" not in n]
    assert _kept(Filter(guide_stars="keep"), variant(_rich())) == NAMES


def test_endswith(variant):
    assert _kept(Filter(endswith=["_cal.fits"], guide_stars="keep"), variant(_rich())) == ["x_cal.fits", "x_gs-fg_cal.fits"]
    assert _kept(Filter(endswith=["_cal.fits", ".jpg"]), variant(_rich())) == ["x_cal.fits", "x_rate.jpg"]


def test_exclude(variant):
    assert _kept(Filter(exclude=["_cal", ".jpg"], guide_stars="keep"), variant(_rich())) == ["x_uncal.fits", "x_i2d.fits"]
    # contains and exclude together: contained AND not excluded
    assert _kept(Filter(contains=["cal"], exclude=["uncal"]), variant(_rich())) == ["x_cal.fits", "x_cal.fits.gz"]


def test_only_guide_stars(variant):
    assert _kept(Filter(guide_stars="only"), variant(_rich())) == ["x_gs-fg_cal.fits"]
    assert _kept(Filter(guide_stars="only", contains=["_uncal"]), variant(_rich())) == []


def test_mrp_only_with_masked_group_column(variant):
    assert _kept(Filter(mrp_only=True, guide_stars="keep"), variant(_rich())) == ["x_uncal.fits", "x_gs-fg_cal.fits", "x_i2d.fits"]


def test_columns_exact_text_and_list(variant):
    assert _kept(Filter(columns={"productType": "SCIENCE"}), variant(_rich())) == \
        ["x_uncal.fits", "x_cal.fits", "x_i2d.fits", "x_cal.fits.gz"]
    assert _kept(Filter(columns={"productType": ["PREVIEW", "AUXILIARY"]}, guide_stars="keep"), variant(_rich())) == \
        ["x_gs-fg_cal.fits", "x_rate.jpg"]
    # exact, not substring and case-sensitive
    assert _kept(Filter(columns={"productType": "SCIENCE"[:3]}), variant(_rich())) == []
    assert _kept(Filter(columns={"productType": "science"}), variant(_rich())) == []


def test_columns_negation(variant):
    assert _kept(Filter(columns={"dataRights": "!EXCLUSIVE_ACCESS"}), variant(_rich())) == \
        ["x_uncal.fits", "x_i2d.fits", "x_cal.fits.gz", "x_rate.jpg"]
    # several exclusions all apply; plain values and exclusions combine
    assert _kept(Filter(columns={"productType": ["!PREVIEW", "!AUXILIARY"]}, guide_stars="keep"), variant(_rich())) == \
        ["x_uncal.fits", "x_cal.fits", "x_i2d.fits", "x_cal.fits.gz"]
    assert _kept(Filter(columns={"calib_level": [2, 3, "!3"]}), variant(_rich())) == ["x_cal.fits", "x_cal.fits.gz", "x_rate.jpg"]


def test_columns_numeric_values_and_ranges(variant):
    assert _kept(Filter(columns={"calib_level": 2}), variant(_rich())) == ["x_cal.fits", "x_cal.fits.gz", "x_rate.jpg"]
    assert _kept(Filter(columns={"calib_level": [1, 3]}), variant(_rich())) == ["x_uncal.fits", "x_i2d.fits"]
    assert _kept(Filter(columns={"calib_level": "2"}), variant(_rich())) == ["x_cal.fits", "x_cal.fits.gz", "x_rate.jpg"]
    assert _kept(Filter(columns={"size": {"min": 10, "max": 200}}), variant(_rich())) == \
        ["x_uncal.fits", "x_cal.fits", "x_cal.fits.gz"]
    assert _kept(Filter(columns={"size": {"min": 201}}), variant(_rich())) == ["x_i2d.fits"]
    assert _kept(Filter(columns={"size": {"max": 5}}, guide_stars="keep"), variant(_rich())) == ["x_gs-fg_cal.fits", "x_rate.jpg"]


def test_rules_combine_with_and(variant):
    rules = Filter(endswith=["_cal.fits"], columns={"calib_level": 2, "dataRights": "!EXCLUSIVE_ACCESS"})
    assert _kept(rules, variant(_rich())) == []
    rules = Filter(endswith=["_cal.fits", ".gz"], columns={"calib_level": 2, "dataRights": "!EXCLUSIVE_ACCESS"})
    assert _kept(rules, variant(_rich())) == ["x_cal.fits.gz"]


def test_missing_column_is_a_clear_error():
    with pytest.raises(MastpipeError, match="no column 'productType'"):
        keep_mask(_rich()[["productFilename"]], Filter(columns={"productType": "SCIENCE"}))
    with pytest.raises(MastpipeError, match="productGroupDescription"):
        keep_mask(_rich()[["productFilename"]], Filter(mrp_only=True))
    with pytest.raises(MastpipeError, match="productFilename"):
        keep_mask(_rich()[["size"]], Filter())


def test_empty_table():
    table = _rich()[:0]
    assert len(filter_products(table, Filter(contains=["x"], columns={"size": {"min": 1}}))) == 0


def test_text_needles_match_bytes_exactly():
    # "é" in UTF-8 is two bytes; a needle must not match half of a character
    table = _products(["aé.fits", "ab.fits"])
    assert keep_mask(as_stored(table), Filter(contains=["é"])).tolist() == [True, False]
    assert keep_mask(as_stored(table), Filter(endswith=["é.fits"])).tolist() == [True, False]


def test_keeping_everything_gives_a_new_table():
    table = _rich()
    kept = filter_products(table, Filter(guide_stars="keep"))
    assert kept is not table and len(kept) == len(table)
    kept["extra"] = 1
    assert "extra" not in table.colnames
