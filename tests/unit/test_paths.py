"""Destination paths and the security scenarios on hostile product names (field notes)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from astropy.table import Table

from mastpipe.errors import TransferError, UnsafePathError, UsageError
from mastpipe.stages.retrieve.paths import (
    MAX_NAME_BYTES,
    check_collisions,
    check_component,
    check_free_space,
    product_path,
    relative_product_path,
)


def row(**overrides: object) -> dict:
    base = {
        "dataURI": "mast:JWST/product/jw01073_cal.fits",
        "obs_collection": "JWST",
        "obs_id": "jw01073-o001_t001_nircam_clear-f277w",
        "productFilename": "jw01073_cal.fits",
        "proposal_id": "1073",
    }
    base.update(overrides)
    return base


def test_astroquery_layout_matches_download_products(tmp_path: Path) -> None:
    # astroquery: os.path.join(download_dir, "mastDownload", obs_collection, obs_id, filename)
    expected = tmp_path / "mastDownload" / "JWST" / "jw01073-o001_t001_nircam_clear-f277w" / "jw01073_cal.fits"
    assert product_path(row(), tmp_path) == expected
    # no case change: an upper-case obs_id stays upper-case (HST's U9O40504M)
    assert product_path(row(obs_id="U9O40504M"), tmp_path).parent.name == "U9O40504M"


def test_flat_and_template_layouts(tmp_path: Path) -> None:
    assert product_path(row(), tmp_path, "flat") == tmp_path / "jw01073_cal.fits"
    path = product_path(row(), tmp_path, "{obs_collection}/{proposal_id}/{productFilename}")
    assert path == tmp_path / "JWST" / "1073" / "jw01073_cal.fits"


def test_astropy_row_and_numeric_column(tmp_path: Path) -> None:
    table = Table(rows=[row(proposal_id=1073)])
    path = product_path(table[0], tmp_path, "{proposal_id}/{productFilename}")
    assert path == tmp_path / "1073" / "jw01073_cal.fits"


@pytest.mark.parametrize(
    "field, value",
    [
        ("productFilename", "../../x"),
        ("productFilename", "/etc/passwd"),
        ("productFilename", "a/../../b"),
        ("productFilename", "C:\\x"),
        ("productFilename", "C:x"),
        ("productFilename", "dir\\file.fits"),
        ("productFilename", "bad\x00name.fits"),
        ("productFilename", "bad\nname.fits"),
        ("productFilename", "esc\x1b[31m.fits"),
        ("productFilename", "del\x7f.fits"),
        ("productFilename", ".."),
        ("productFilename", ""),
        ("obs_id", ".."),
        ("obs_id", "../etc"),
        ("obs_collection", "/abs"),
        ("obs_collection", "A\\B"),
    ],
)
def test_hostile_values_refused_naming_product_and_field(tmp_path: Path, field: str, value: str) -> None:
    with pytest.raises(UnsafePathError) as info:
        product_path(row(**{field: value}), tmp_path)
    message = str(info.value)
    assert field in message
    assert "jw01073_cal.fits" in message or "mast:JWST" in message
    assert not list(tmp_path.iterdir())  # nothing created


def test_template_literal_cannot_escape(tmp_path: Path) -> None:
    with pytest.raises(UnsafePathError):
        product_path(row(), tmp_path, "../{productFilename}")
    with pytest.raises(UnsafePathError):
        product_path(row(), tmp_path, "/tmp/{productFilename}")


def test_bad_templates(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no_such_column"):
        product_path(row(), tmp_path, "{no_such_column}/{productFilename}")
    with pytest.raises(UsageError):
        relative_product_path(row(), "{obs_id!r}")
    with pytest.raises(UsageError):
        relative_product_path(row(), "{0}")


def test_missing_value_refused(tmp_path: Path) -> None:
    with pytest.raises(UnsafePathError, match="obs_id is missing"):
        product_path(row(obs_id=None), tmp_path)


def test_masked_cell_refused(tmp_path: Path) -> None:
    table = Table(rows=[row(), row(dataURI="mast:JWST/product/b.fits", productFilename="b.fits")],
                  masked=True)
    table["obs_id"].mask[1] = True
    assert product_path(table[0], tmp_path).name == "jw01073_cal.fits"
    with pytest.raises(UnsafePathError, match="obs_id is missing"):
        product_path(table[1], tmp_path)


def test_symlink_out_of_destination_is_refused(tmp_path: Path) -> None:
    dest, outside = tmp_path / "dest", tmp_path / "outside"
    (dest / "mastDownload").mkdir(parents=True)
    outside.mkdir()
    os.symlink(outside, dest / "mastDownload" / "JWST")
    with pytest.raises(UnsafePathError, match="outside the destination"):
        product_path(row(), dest)


def test_symlinked_file_out_of_destination_is_refused(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    os.symlink("/etc/passwd", dest / "jw01073_cal.fits")
    with pytest.raises(UnsafePathError):
        product_path(row(), dest, "flat")


def test_symlink_inside_destination_is_fine(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    (dest / "real").mkdir(parents=True)
    os.symlink(dest / "real", dest / "mastDownload")
    assert product_path(row(), dest).name == "jw01073_cal.fits"


def test_destination_itself_behind_symlink(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")
    assert product_path(row(), tmp_path / "link", "flat") == tmp_path / "link" / "jw01073_cal.fits"


def test_check_component_passes_ordinary_names() -> None:
    for name in ("jw01073_cal.fits", "hst_13926_09_wfc3 uvis.fits", "ÅNGSTRÖM.fits", "a..b.fits"):
        assert check_component(name, product="p", field="f") == name


def test_collisions_detected_before_fetch(tmp_path: Path) -> None:
    a, b = tmp_path / "x.fits", tmp_path / "y.fits"
    check_collisions({"mast:a": a, "mast:b": b})
    check_collisions([("mast:a", a), ("mast:a", a)])  # same product twice is not a collision
    with pytest.raises(UnsafePathError) as info:
        check_collisions([("mast:a", a), ("mast:b", a), ("mast:c", b)])
    assert "mast:a" in str(info.value) and "mast:b" in str(info.value)
    assert "mast:c" not in str(info.value)


def test_collisions_in_flat_layout(tmp_path: Path) -> None:
    rows = [row(dataURI="mast:JWST/product/1/f.fits", productFilename="f.fits", obs_id="o1"),
            row(dataURI="mast:JWST/product/2/f.fits", productFilename="f.fits", obs_id="o2")]
    check_collisions([(r["dataURI"], product_path(r, tmp_path)) for r in rows])
    with pytest.raises(UnsafePathError):
        check_collisions([(r["dataURI"], product_path(r, tmp_path, "flat")) for r in rows])


def test_free_space(tmp_path: Path) -> None:
    assert check_free_space(tmp_path / "not" / "yet", 1) > 0
    with pytest.raises(TransferError, match="not enough free space"):
        check_free_space(tmp_path, 2**62)


def test_a_name_too_long_for_its_temporaries_is_refused(tmp_path: Path) -> None:
    assert MAX_NAME_BYTES == 224
    longest = "x" * (MAX_NAME_BYTES - len("_cal.fits")) + "_cal.fits"
    path = product_path(row(productFilename=longest), tmp_path, "flat")
    # the longest temporary of the longest name accepted (the atomic write of its .part.json,
    # with the largest pid Linux hands out) can be created here
    (path.parent / f"..{path.name}.part.json.4194304.ffffff.tmp").write_bytes(b"")
    with pytest.raises(UnsafePathError, match="225 bytes long"):
        product_path(row(productFilename="y" + longest), tmp_path, "flat")
    with pytest.raises(UnsafePathError, match="bytes long"):  # counted in bytes, not characters
        product_path(row(productFilename="é" * 121 + ".fits"), tmp_path, "flat")
