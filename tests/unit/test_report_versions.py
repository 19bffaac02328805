"""The run report's product changes, computed with arrays, agree with the plain definition
(dataURI -> size and prvversion, compared as Python dicts) on random tables."""

from __future__ import annotations

import heapq

import numpy as np
import pytest
from astropy.table import MaskedColumn, Table

from mastpipe.report import MAX_LISTED, Versions, _all_new, _product_changes


def _table(rng: np.random.Generator, n: int, with_version: bool, as_str: bool) -> Table:
    names = [f"mast:JWST/product/f{rng.integers(0, 3 * n)}_\u00e9{'x' * int(rng.integers(0, 3))}.fits"
             for _ in range(n)]  # repeats on purpose: a dataURI listed twice counts once, last row
    columns = {"dataURI": names if as_str else [s.encode() for s in names],
               "size": rng.integers(1, 4, n)}
    if with_version:
        versions = [str(v) for v in rng.integers(1, 3, n)]
        columns["prvversion"] = versions if as_str else [v.encode() for v in versions]
    table = Table(columns)
    if as_str:
        table["dataURI"] = MaskedColumn(table["dataURI"], mask=np.zeros(n, dtype=bool))
    return table


def _plain(table: Table) -> dict[str, object]:
    def text(v: object) -> str:
        return v.decode() if isinstance(v, bytes) else str(v)
    sizes = [int(s) for s in table["size"]]
    if "prvversion" not in table.colnames:
        return {text(u): s for u, s in zip(table["dataURI"], sizes)}
    return {text(u): (s, text(v)) for u, s, v in zip(table["dataURI"], sizes, table["prvversion"])}


def _listed(values: set[str]) -> dict[str, object]:
    return {"count": len(values), "items": heapq.nsmallest(MAX_LISTED, values), "truncated": len(values) > MAX_LISTED}


@pytest.mark.parametrize("seed", range(6))
def test_array_changes_agree_with_dicts(seed: int) -> None:
    rng = np.random.default_rng(seed)
    before_version, after_version = bool(seed % 2), bool(seed % 3)
    before = _table(rng, 400, before_version, as_str=seed < 3)
    after = _table(rng, 400, after_version, as_str=seed >= 3)
    old, new = _plain(before), _plain(after)
    expected = {"new": _listed(set(new) - set(old)),
                "changed": _listed({u for u, v in new.items() if u in old and old[u] != v}),
                "dropped": _listed(set(old) - set(new))}
    assert _product_changes(Versions.of(before), Versions.of(after)) == expected
    assert expected["new"]["count"] and expected["dropped"]["count"]  # the data exercises each case


def test_empty_tables_and_long_lists() -> None:
    empty = Versions.of(Table())
    many = Table({"dataURI": [f"u{i:05d}".encode() for i in range(2500)], "size": np.ones(2500, dtype=int)})
    changes = _product_changes(empty, Versions.of(many))
    assert changes["new"]["count"] == 2500 and changes["new"]["truncated"]
    assert changes["new"]["items"] == [f"u{i:05d}" for i in range(MAX_LISTED)]
    assert _product_changes(Versions.of(many), empty)["dropped"]["count"] == 2500


@pytest.mark.parametrize("seed", range(4))
def test_a_first_run_lists_every_product_as_new(seed: int) -> None:
    """A first run's changes (no earlier products) are computed without sorting the column
    whole; they agree with the plain definition, with repeated dataURIs and more than
    MAX_LISTED of them."""
    rng = np.random.default_rng(seed)
    table = _table(rng, 70_000 if seed == 0 else 300, with_version=bool(seed % 2), as_str=seed >= 2)
    none = {"count": 0, "items": [], "truncated": False}
    expected = {"new": _listed(set(_plain(table))), "changed": none, "dropped": none}
    assert _all_new(table) == expected
    assert _all_new(Table()) == {"new": none, "changed": none, "dropped": none}
