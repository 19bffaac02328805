"""The streaming FITS checksum check against files astropy writes (and damages)."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
from astropy.io import fits

from mastpipe.stages.retrieve.checksum import (
    FitsChecksum,
    encode_checksum,
    ones_complement_sum,
)


def _mef(checksum: bool = True) -> bytes:
    rng = np.random.default_rng(7)
    hdus = fits.HDUList([
        fits.PrimaryHDU(rng.integers(-300, 300, 1001).astype(np.int16)),
        fits.ImageHDU(rng.random((33, 17)), name="SCI"),
        fits.BinTableHDU.from_columns([fits.Column("a", "J", array=np.arange(10)),
                                       fits.Column("b", "PE()", array=[np.arange(i) * 1.0 for i in range(10)])]),
        fits.ImageHDU(name="EMPTY"),
    ])
    buffer = io.BytesIO()
    hdus.writeto(buffer, checksum=checksum)
    return buffer.getvalue()


def _feed(body: bytes, seed: int = 0) -> FitsChecksum:
    check, rnd, at = FitsChecksum(), random.Random(seed), 0
    while at < len(body):  # blocks of every size, words and headers split anywhere
        step = rnd.choice([1, 3, 4, 7, 80, 2879, 2881, 65536])
        check.update(body[at:at + step])
        at += step
    return check


@pytest.mark.parametrize("seed", range(4))
def test_every_hdu_astropy_wrote_is_verified_whatever_the_block_sizes(seed: int) -> None:
    check = _feed(_mef(), seed)
    assert check.result() == "verified"
    assert (check.hdus, check.verified) == (4, 4)


@pytest.mark.parametrize("where", [100, 2880 * 2 + 5, -3000, -1])
def test_one_flipped_byte_anywhere_is_a_mismatch_naming_the_hdu(where: int) -> None:
    body = bytearray(_mef())
    body[where] ^= 0x01
    with pytest.raises(ValueError, match=r"FITS checksum mismatch: HDU \d"):
        _feed(bytes(body)).result()


def test_files_without_checksums_or_not_fits_are_none() -> None:
    assert _feed(_mef(checksum=False)).result() == "none"
    assert _feed(b"# not a FITS file\n" * 400).result() == "none"


def test_the_encoding_is_the_standards() -> None:
    # astropy writes CHECKSUM from the header with sixteen zeros in its place: so must we
    hdu = fits.PrimaryHDU(np.arange(10, dtype=np.int32))
    hdu.add_checksum()
    buffer = io.BytesIO()
    hdu.writeto(buffer)
    body = buffer.getvalue()
    blank = body.replace(hdu.header["CHECKSUM"].encode(), b"0" * 16, 1)
    header = blank[:2880 * (len(hdu.header.tostring()) // 2880)]
    assert encode_checksum(ones_complement_sum(header, int(hdu.header["DATASUM"]))) == hdu.header["CHECKSUM"]
