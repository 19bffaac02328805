"""plan's breakdown: files and bytes per (collection, instrument, product type), largest first."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

from mastpipe.report import plan_breakdown


@pytest.mark.parametrize("as_bytes", [True, False])
def test_groups_by_the_observation_that_lists_each_product(as_bytes: bool) -> None:
    owners = ["1", "2", "1", "9", "2", "1"]  # 9: an observation the query did not return
    collections = ["JWST", "JWST", "JWST", "HST", "JWST", "JWST"]
    kinds = ["CAL", "CAL", "", "CAL", "UNCAL", "?"]
    columns = {"parent_obsid": owners, "obs_collection": collections, "productSubGroupDescription": kinds}
    products = Table({name: np.array([v.encode() for v in values]) if as_bytes else values
                      for name, values in columns.items()})
    products["size"] = [10, 20, 5, 7, -1, 3]  # a negative size counts as 0 bytes
    observations = Table({"obsid": ["1", "2"], "instrument_name": ["NIRCAM", "MIRI"]})
    assert plan_breakdown(products, observations) == [
        ("JWST", "MIRI", "CAL", 1, 20),
        ("JWST", "NIRCAM", "CAL", 1, 10),
        ("JWST", "NIRCAM", "?", 2, 8),  # no product type and "?" are one group
        ("HST", "?", "CAL", 1, 7),
        ("JWST", "MIRI", "UNCAL", 1, 0),
    ]
    products.remove_column("productSubGroupDescription")
    assert plan_breakdown(products, observations) == [
        ("JWST", "MIRI", "?", 2, 20), ("JWST", "NIRCAM", "?", 3, 18), ("HST", "?", "?", 1, 7)]
