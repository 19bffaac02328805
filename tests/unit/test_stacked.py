"""state.stacked stacks tables in stored form as astropy's vstack does, a column at a time."""

from __future__ import annotations

import numpy as np
from astropy.table import MaskedColumn, Table, vstack

from mastpipe.state import as_stored, stacked, table_digest


def _batches() -> list[Table]:
    a = Table({"dataURI": [b"mast:a", b"mast:bb"], "size": [1, 2], "t": [0.5, 1.5]})
    a["n"] = MaskedColumn([7, 8], mask=[False, True])
    b = Table({"dataURI": [b"mast:ccc_long_name"], "size": [3], "extra": [b"x"]})  # no t, no n; one more
    c = Table({"dataURI": [b"mast:d"], "size": [4], "t": [2.5], "n": [9], "extra": [b"yy"]})
    return [a, b, c]


def test_same_content_as_vstack() -> None:
    expected = as_stored(vstack(_batches(), metadata_conflicts="silent"))
    got = stacked(_batches())
    assert got.colnames == expected.colnames
    assert table_digest(got) == table_digest(expected)
    assert got["t"].mask.tolist() == [False, False, True, False]  # a number some lack is masked
    assert np.asarray(got["extra"]).tolist() == [b"", b"", b"x", b"yy"]  # text some lack is empty
    assert got["dataURI"].dtype == np.dtype("S%d" % len(b"mast:ccc_long_name"))


def test_columns_are_taken_out_of_the_inputs() -> None:
    batches = _batches()
    stacked(batches)
    assert all(not table.colnames for table in batches)


def test_text_and_numbers_in_one_column_fall_back_to_astropy() -> None:
    tables = [Table({"v": [b"a"]}), Table({"v": [1]})]
    try:
        expected = vstack([t.copy() for t in tables])
    except Exception as exc:  # astropy refuses: so must stacked, the same way
        import pytest

        with pytest.raises(type(exc)):
            stacked(tables)
    else:
        assert stacked(tables)["v"].tolist() == expected["v"].tolist()
