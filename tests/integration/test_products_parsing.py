"""Product lists read by mastpipe (archive.scan_answer, or row by row by product_table) against
astroquery's own ``get_product_list`` on the sandbox: the same columns, in the same order, with
the same dtypes, values and masked cells, once brought to the form checkpoints store
(``as_stored``); and scan_answer against the row-by-row reading on generated answers written in
every way a server may write them.

astroquery is real and unmodified, and the answers come from the sandbox over loopback.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mastpipe.archive import Archive, scan_answer
from mastpipe.archive.rows import page_table, stored_columns
from mastpipe.state import as_stored


def assert_same_table(ours, theirs) -> None:
    """``ours`` (mastpipe's products) equals ``as_stored(theirs)`` (astroquery's), masks included."""
    stored = as_stored(theirs)
    assert ours.colnames == stored.colnames
    assert len(ours) == len(stored)
    for name in stored.colnames:
        a, b = ours[name], stored[name]
        assert a.dtype == b.dtype, (name, a.dtype, b.dtype)
        assert np.array_equal(np.asarray(a), np.asarray(b), equal_nan=a.dtype.kind == "f"), name
        assert np.array_equal(np.asarray(getattr(a, "mask", np.zeros(len(a), bool))),
                              np.asarray(getattr(b, "mask", np.zeros(len(b), bool)))), name
        column = theirs[name]
        if column.dtype.kind == "U":  # astroquery masks exactly the empty strings
            assert np.array_equal(np.asarray(column.mask), np.asarray(a) == b""), name


def _batches(archive: Archive, sizes=(1, 3, 7)) -> list[list[str]]:
    obsids = sorted(str(o) for o in archive.query({"obs_collection": ["JWST", "HST", "TESS"]})["obsid"])
    assert len(obsids) > 10
    out, i = [], 0
    for size in sizes * 4:
        if i >= len(obsids):
            break
        out.append(obsids[i:i + size])
        i += size
    return out


def test_product_lists_match_astroquery(sandbox_factory):
    sb = sandbox_factory(seed=0, scale=(4, 30))
    archive = Archive(sb.url, timeout=30)
    batches = _batches(archive) + [[str(o["obsid"]) for o in sb.catalog.observations()
                                    if o["proposal_id"] == "9999"]]
    for batch in batches:
        ours = archive.products(batch)
        theirs = archive.call("astroquery", lambda obs, batch=batch: obs.get_product_list(batch))
        if theirs is None:  # astroquery's answer to observations without products
            assert len(ours) == 0
            continue
        assert_same_table(ours, theirs)


def test_paged_product_lists_match_astroquery(sandbox_factory):
    """Several pages per request (MAST pages at ``page_size`` rows): stacked as astroquery stacks them."""
    sb = sandbox_factory(seed=0, scale=(3, 25))
    archive = Archive(sb.url, timeout=30, page_size=10)
    batch = [str(o["obsid"]) for o in sb.catalog.observations() if o["proposal_id"] == "9999"]
    before = archive.requests_made
    ours = archive.products(batch)
    assert len(ours) == 75
    theirs = archive.call("astroquery", lambda obs: obs.get_product_list(batch))
    assert_same_table(ours, theirs)
    assert archive.requests_made - before == 2  # one call each; the pages are inside it


def test_the_fast_reader_reads_the_sandbox_answers(sandbox_factory):
    """The scale program's answers are in the plain form: scan_answer reads them (no fallback),
    and gives what the ordinary parse gives."""
    from urllib.parse import quote

    import requests

    sb = sandbox_factory(seed=0, scale=(2, 40))
    obsids = ",".join(str(o["obsid"]) for o in sb.catalog.observations() if o["proposal_id"] == "9999")
    request = {"service": "Mast.Caom.Products", "params": {"obsid": obsids}, "format": "json",
               "pagesize": 50, "page": 1}
    body = requests.post(sb.url + "/api/v0/invoke", data="request=" + quote(json.dumps(request)),
                         headers={"Content-type": "application/x-www-form-urlencoded"}, timeout=30).content
    scanned = scan_answer(body)
    assert scanned is not None
    envelope, columns = scanned
    assert envelope["paging"]["pagesFiltered"] == 2 and "data" in envelope
    expected = page_columns(json.loads(body))
    assert_columns_equal(columns, expected)
    assert len(columns["productFilename"][0]) == 50


def page_columns(answer):
    """The row-by-row reading of one page (what mastpipe falls back to), as stored columns."""
    return stored_columns(page_table(answer))


def assert_columns_equal(got, expected) -> None:
    assert list(got) == list(expected)
    for name, (values, mask) in expected.items():
        assert got[name][0].dtype == values.dtype, name
        assert np.array_equal(got[name][0], values, equal_nan=values.dtype.kind == "f"), name
        if mask is None:
            assert got[name][1] is None, name
        else:
            assert np.array_equal(got[name][1], mask), name


# -- any answer, any encoding: the fast reader gives the row-by-row reading's result or declines -----

FIELDS = [("obsID", "string"), ("dataURI", "string"), ("description", "string"), ("size", "int"),
          ("calib_level", "int"), ("t_exptime", "float"), ("productDocumentationURL", "string"),
          ("_selected_", "boolean")]
# NUL excluded: numpy's fixed-width text drops trailing NULs, astroquery's columns and ours alike
text = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)
row = st.fixed_dictionaries({
    "obsID": st.from_regex(r"[0-9]{1,9}", fullmatch=True),
    "dataURI": st.one_of(text, st.none()),
    "description": st.one_of(text, st.none()),
    "size": st.one_of(st.integers(-2**62, 2**62), st.none(), st.just(-999), st.just("12"), st.just(1.5)),
    "calib_level": st.integers(-5, 5),
    "t_exptime": st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.none()),
    "productDocumentationURL": st.none(),
    "_selected_": st.one_of(st.none(), st.booleans()),
})
encodings = {
    "json": lambda doc: json.dumps(doc).encode(),  # escapes non-ASCII: \uXXXX
    "json-utf8": lambda doc: json.dumps(doc, ensure_ascii=False).encode(),
    "json-indent": lambda doc: json.dumps(doc, ensure_ascii=False, indent=2).encode(),
    "json-compact": lambda doc: json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode(),
}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(row, min_size=1, max_size=12), encoding=st.sampled_from(sorted(encodings)))
def test_fast_reader_agrees_with_the_row_by_row_reading(rows, encoding):
    answer = {"status": "COMPLETE", "msg": "", "fields": [{"name": n, "type": t} for n, t in FIELDS],
              "data": rows, "paging": {"page": 1, "pageSize": 50, "pagesFiltered": 1}}
    body = encodings[encoding](answer)
    ordinary = page_columns(json.loads(body))
    scanned = scan_answer(body)
    if "malformed" in ordinary:  # a row the reading refuses: only it may say why
        assert scanned is None
    if scanned is not None:
        envelope, columns = scanned
        assert envelope["paging"] == answer["paging"] and envelope["status"] == "COMPLETE"
        assert_columns_equal(columns, ordinary)


@pytest.mark.parametrize("encoding", sorted(encodings))
def test_a_long_answer_is_read_whole(encoding):
    """An answer of several MiB in the plain form, read a block of rows at a time, and ending in
    ``data`` with a short last row, so that the widest value's bytes would run past the end of
    the answer."""
    rng = np.random.default_rng(7)
    n = 16_000
    words = ["", "x", "a" * 40, "preview", "science", "ü" if encoding != "json" else "u"]
    rows = [{"obsID": str(rng.integers(1, 10**9)), "dataURI": words[rng.integers(len(words))],
             "description": words[rng.integers(len(words))],
             "size": int(rng.integers(0, 10**17)),
             "calib_level": None if i % 11 == 0 else int(rng.integers(-5, 6)), "t_exptime": float(rng.normal()),
             "productDocumentationURL": None, "_selected_": bool(i % 2)} for i in range(n)]
    rows[-1] = {**rows[-1], "dataURI": "", "description": "", "size": 1, "calib_level": 0,
                "_selected_": None}
    fields = [{"name": name, "type": kind} for name, kind in FIELDS]
    body = encodings[encoding]({"status": "COMPLETE", "msg": "", "fields": fields, "data": rows})
    assert len(body) > 2 << 20  # three blocks and more
    scanned = scan_answer(body)
    assert scanned is not None
    assert_columns_equal(scanned[1], page_columns(json.loads(body)))
    assert len(scanned[1]["obsID"][0]) == n


@pytest.mark.parametrize("body", [
    b'{"status": "COMPLETE", "data": [{"a": "x"}], "fields": [{"name": "a", "type": "string"}]}',
    b'{"fields": [{"name": "a", "type": "int"}], "data": [{"a": 1}, {"a": 2}], "status": "COMPLETE"}',
])
def test_key_order_of_the_envelope_does_not_matter(body):
    """Envelopes in any key order; fields not named ``size`` or REQUIRED may be null."""
    scanned = scan_answer(body)
    assert scanned is not None
    assert_columns_equal(scanned[1], page_columns(json.loads(body)))


@pytest.mark.parametrize("body", [
    b'{"status": "COMPLETE", "fields": [{"name": "a", "type": "int"}], "data": [{"a": 1}, {"a": [2]}]}',
    b'{"status": "COMPLETE", "fields": [{"name": "a", "type": "int"}], "data": [{"a": 1}, {"b": 2}]}',
    (b'{"status": "COMPLETE", "fields": [{"name": "a", "type": "int"}, {"name": "b", "type": "int"}], '
     b'"data": [{"a": 1, "b": 2}, {"b": 2, "a": 1}]}'),
    b'{"status": "COMPLETE", "fields": [{"name": "a", "type": "string"}], "data": [{"a": "x"}, {"a": null}]}',
    b'{"status": "COMPLETE", "fields": [{"name": "a", "type": "int"}], "data": [{"a": 1.5}]}',
    b'{"status": "COMPLETE", "fields": [{"name": "a", "type": "string"}], "data": [{"a": 15}]}',
    b'{"status": "COMPLETE", "fields": [{"name": "a", "type": "string"}], "data": [{"a": "x\\"y"}]}',
    b'{"status": "COMPLETE", "fields": [{"name": "a", "type": "string"}], "data": []}',
    b'{"status": "ERROR", "msg": "no"}',
    b'{"status": "COMPLETE", "fields": [{"name": "size", "type": "int"}], "data": [{"size": -1}]}',
    b'{"status": "COMPLETE", "fields": [{"name": "size", "type": "int"}], "data": [{"size": 1}, {"size": null}]}',
    b'{"status": "COMPLETE", "fields": [{"name": "dataURI", "type": "string"}], "data": [{"dataURI": null}]}',
])
def test_answers_out_of_the_plain_form_are_left_to_the_ordinary_parse(body):
    assert scan_answer(body) is None
