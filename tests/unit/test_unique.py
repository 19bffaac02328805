"""unique: one row per key, who shares it, and conflicting dataURIs."""

from __future__ import annotations

import logging

import numpy as np
from astropy.table import Table, unique, vstack
from hypothesis import given, settings
from hypothesis import strategies as st

from mastpipe.stages.unique import unique_products
from mastpipe.state import as_stored


def _rows(rows: list[tuple[str, str, str]]) -> Table:
    """(productFilename, parent_obsid, dataURI) rows plus a size column."""
    names, owners, uris = zip(*rows) if rows else ((), (), ())
    return Table({"productFilename": np.array(names, dtype=str), "parent_obsid": np.array(owners, dtype=str),
                  "dataURI": np.array(uris, dtype=str), "size": np.arange(len(rows), dtype=np.int64)})


def _text(values) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def test_one_row_per_product_with_who_shares_it(caplog):
    table = _rows([
        ("b_uncal.fits", "2", "mast:JWST/product/b_uncal.fits"),
        ("a_gs-fg.fits", "2", "mast:JWST/product/a_gs-fg.fits"),
        ("a_gs-fg.fits", "1", "mast:JWST/product/a_gs-fg.fits"),
        ("c_i2d.fits", "3", "mast:JWST/product/c_i2d.fits"),
        ("a_gs-fg.fits", "3", "mast:JWST/product/a_gs-fg.fits"),
        ("c_i2d.fits", "1", "mast:JWST/product/c_i2d.fits"),
    ])
    with caplog.at_level(logging.WARNING):
        result, warnings = unique_products(table, "productFilename")
    assert warnings == [] and not caplog.records
    # in order of first appearance; the first row of each key is the one kept
    assert _text(result["productFilename"]) == ["b_uncal.fits", "a_gs-fg.fits", "c_i2d.fits"]
    assert _text(result["shared_by"]) == ["2", "1;2;3", "1;3"]
    assert list(result["n_shared"]) == [1, 3, 2]
    assert list(result["size"]) == [0, 1, 3]


def test_different_data_uris_under_one_name_are_warned(caplog):
    table = _rows([
        ("x_cal.fits", "1", "mast:JWST/product/x_cal.fits"),
        ("x_cal.fits", "2", "mast:HST/product/x_cal.fits"),
        ("y_cal.fits", "1", "mast:JWST/product/y_cal.fits"),
    ])
    with caplog.at_level(logging.WARNING, logger="mastpipe"):
        result, warnings = unique_products(table, "productFilename")
    assert len(result) == 2
    assert len(warnings) == 1 and "x_cal.fits" in warnings[0] and "2 different dataURIs" in warnings[0]
    assert "mast:JWST/product/x_cal.fits" in warnings[0]  # says which one is kept
    assert any("x_cal.fits" in r.getMessage() for r in caplog.records)
    # deduplicating on dataURI keeps both, and has nothing to warn about
    by_uri, warnings = unique_products(table, "dataURI")
    assert len(by_uri) == 3 and warnings == []


def test_conflicting_uris_are_warned_without_an_owner_column():
    table = _rows([("x.fits", "1", "mast:A/x.fits"), ("x.fits", "2", "mast:B/x.fits")])
    table.remove_column("parent_obsid")
    result, warnings = unique_products(table, "productFilename")
    assert len(result) == 1 and len(warnings) == 1


def test_obsid_column_names_the_owner_when_there_is_no_parent_obsid():
    table = _rows([("x.fits", "7", "u"), ("x.fits", "5", "u")])
    table.rename_column("parent_obsid", "obsID")
    result, _ = unique_products(table, "productFilename")
    assert _text(result["shared_by"]) == ["5;7"] and list(result["n_shared"]) == [2]


def test_n_shared_counts_observations_not_repeated_rows():
    table = _rows([("x.fits", "1", "u"), ("x.fits", "1", "u"), ("x.fits", "2", "u")])
    result, _ = unique_products(table, "productFilename")
    assert _text(result["shared_by"]) == ["1;2"] and list(result["n_shared"]) == [2]


def test_empty_table():
    result, warnings = unique_products(_rows([]), "productFilename")
    assert len(result) == 0 and warnings == []


def test_many_warnings_are_summarised(caplog):
    rows = [(f"f{i}.fits", o, f"mast:{o}/f{i}.fits") for i in range(30) for o in ("1", "2")]
    with caplog.at_level(logging.WARNING, logger="mastpipe"):
        _, warnings = unique_products(_rows(rows), "productFilename")
    assert len(warnings) == 30
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 21 and "10 more products" in messages[-1]


names = st.sampled_from([f"p{i}_{s}.fits" for i in range(8) for s in ("uncal", "cal", "gs-fg")])
row = st.tuples(names, st.sampled_from(["101", "102", "103", "104"]))


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(row, max_size=60), stored=st.booleans())
def test_same_row_set_as_astropy_unique(rows, stored):
    """The seed's ``unique(vstack(t), keys='productFilename')`` keeps the same rows (the first of
    each key); mastpipe keeps them in order of first appearance rather than sorted."""
    table = _rows([(n, o, "mast:JWST/product/" + n) for n, o in rows])
    # the seed stacks per-observation tables
    per_obs = [table[table["parent_obsid"] == o] for o in ("101", "102", "103", "104")]
    stacked = vstack([t for t in per_obs if len(t)]) if rows else table
    expected = unique(stacked, keys="productFilename") if rows else stacked
    ours, _ = unique_products(as_stored(stacked) if stored else stacked, "productFilename")
    assert len(ours) == len(expected)
    as_rows = lambda t: sorted(zip(*(_text(t[name]) for name in table.colnames)))  # noqa: E731
    assert as_rows(ours) == as_rows(expected)
    names = _text(ours["productFilename"])
    appearance = list(dict.fromkeys(_text(stacked["productFilename"])))
    assert names == appearance
    for shared, n, name in zip(ours["shared_by"], ours["n_shared"], names):
        owners = sorted({o for f, o in rows if f == name})
        assert _text([shared])[0] == ";".join(owners) and n == len(owners)


@settings(max_examples=100, deadline=None)
@given(rows=st.lists(row, max_size=40))
def test_hash_collisions_never_merge_products(rows):
    """With a hash under which every key collides, grouping falls back to the exact sort."""
    import mastpipe.stages.unique as unique_module

    table = _rows([(n, o, "mast:JWST/product/" + n) for n, o in rows])
    honest, _ = unique_products(table, "productFilename")
    original = unique_module.hash_values
    unique_module.hash_values = lambda values: np.zeros(len(values), dtype=np.uint64)
    try:
        colliding, _ = unique_products(table, "productFilename")
    finally:
        unique_module.hash_values = original
    as_rows = lambda t: sorted(zip(*(_text(t[name]) for name in t.colnames)))  # noqa: E731
    assert as_rows(colliding) == as_rows(honest)


def test_hash_values_equal_for_equal_text():
    from mastpipe.stages.unique import hash_values

    values = np.array(["a", "ab", "abcdefghi", "a", "abcdefghi", ""], dtype="S9")
    h = hash_values(values)
    assert h[0] == h[3] and h[2] == h[4] and len(set(h[[0, 1, 2, 5]].tolist())) == 4
    assert (hash_values(np.array(["x", "yy"], dtype="U2")) != hash_values(np.array(["yy", "x"], dtype="U2"))).all()


def test_no_repeats_gives_the_same_rows_and_leaves_the_input_alone():
    table = _rows([("a.fits", "1", "u1"), ("b.fits", "2", "u2")])
    result, _ = unique_products(table, "productFilename")
    assert "n_shared" not in table.colnames and "shared_by" not in table.colnames
    assert _text(result["productFilename"]) == ["a.fits", "b.fits"] and list(result["n_shared"]) == [1, 1]
    assert _text(result["shared_by"]) == ["1", "2"]


@settings(max_examples=100, deadline=None)
@given(values=st.lists(st.sampled_from(["", "a", "ab", "mast:JWST/product/x_cal.fits", "\u00e9"]), max_size=40),
       collide=st.booleans())
def test_first_rows_are_each_distinct_values_first_appearance(values, collide):
    """first_rows (what a first run's report counts new dataURIs with) agrees with numpy's
    unique, also when every value's hash collides."""
    import mastpipe.stages.unique as unique_module
    from mastpipe.stages.unique import first_rows

    array = np.array([v.encode() for v in values], dtype="S40")
    original = unique_module.hash_values
    if collide:
        unique_module.hash_values = lambda values: np.zeros(len(values), dtype=np.uint64)
    try:
        rows = first_rows(array)
    finally:
        unique_module.hash_values = original
    assert rows.tolist() == sorted(np.unique(array, return_index=True)[1].tolist())
