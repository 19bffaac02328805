"""Deterministic file bodies generated from a URI on the fly.

A file body is a header (a FITS primary header for ``.fits`` files, a short text line otherwise)
followed by bytes taken from one 1 MiB pseudo-random block, rotated by an offset derived from the
URI and its version.  Any slice ``[start, end)`` is therefore produced in O(length) with plain
memory copies, and nothing is stored per file: a 1 GB file costs no memory at all.
"""

from __future__ import annotations

import hashlib
from typing import Iterator

import numpy as np

from mastpipe.stages.retrieve.checksum import _fold, encode_checksum, ones_complement_sum

__all__ = ["BodyMaker", "FITS_BLOCK", "fits_header"]

FITS_BLOCK = 2880
_BLOCK = 1 << 20  # the repeated pseudo-random block


def _card(key: str, value: str | int | bool | None = None, comment: str = "") -> bytes:
    """One 80-character FITS header card."""
    if value is None:
        text = key.ljust(80)
    else:
        if isinstance(value, bool):
            val = ("T" if value else "F").rjust(20)
        elif isinstance(value, int):
            val = str(value).rjust(20)
        else:
            # as astropy formats it (its checksum check re-serializes the CHECKSUM card)
            val = ("'" + str(value).replace("'", "''").ljust(8) + "'").ljust(20)
        text = f"{key:<8}= {val}"
        if comment:
            text += " / " + comment
    return text[:80].ljust(80).encode("ascii", "replace")


def fits_header(uri: str, data_len: int, version: int, datasum: int | None = None) -> bytes:
    """A minimal valid FITS primary header (one 2880-byte block) for a BITPIX=8 data array.

    With ``datasum`` (the ones'-complement sum of the data that follows), the header carries
    ``DATASUM`` and a ``CHECKSUM`` making the whole HDU sum to -0, as MAST's files do.

    Parameters
    ----------
    uri : str
        Recorded in the header so a file says where it came from.
    data_len : int
        Number of data bytes that follow (NAXIS1).
    version : int
        Content version (changes on :meth:`Catalog.touch`).
    """
    name = uri.rsplit("/", 1)[-1]
    cards = [
        _card("SIMPLE", True, "conforms to FITS standard"),
        _card("BITPIX", 8, "array data type"),
        _card("NAXIS", 1 if data_len else 0, "number of array dimensions"),
    ]
    if data_len:
        cards.append(_card("NAXIS1", data_len))
    cards += [
        _card("EXTEND", True),
        _card("ORIGIN", "mastpipe sandbox", "generated test data, not real"),
        _card("FILENAME", name[:60]),
        _card("SBXVERS", version, "sandbox content version"),
    ]
    if datasum is None:
        return b"".join(cards + [_card("END")]).ljust(FITS_BLOCK, b" ")
    cards += [_card("CHECKSUM", "0" * 16, "HDU checksum"), _card("DATASUM", str(datasum), "data unit checksum"),
              _card("END")]
    header = b"".join(cards).ljust(FITS_BLOCK, b" ")
    checksum = encode_checksum(ones_complement_sum(header, datasum))
    return header.replace(b"0" * 16, checksum.encode(), 1)


class BodyMaker:
    """Produce file bodies for (uri, size, version) deterministically from a seed.

    Parameters
    ----------
    seed : int
        Catalogue seed; different seeds give different bytes.
    """

    def __init__(self, seed: int = 0) -> None:
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x5A4D])
        block = rng.integers(0, 256, _BLOCK, dtype=np.uint8)
        # Doubling the block means any window of up to _BLOCK bytes at any offset is one slice.
        self._binary = memoryview(np.concatenate([block, block]).tobytes())
        text = (block % 26 + ord("a")).astype(np.uint8)
        text[63::64] = ord("\n")  # text-ish files (json, ecsv) get short lines
        self._text = memoryview(np.concatenate([text, text]).tobytes())
        self._datasums: dict[tuple[str, int, int], int] = {}

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _offset(uri: str, version: int) -> int:
        digest = hashlib.blake2b(f"{uri}\0{version}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") % _BLOCK

    @staticmethod
    def is_fits(uri: str) -> bool:
        return uri.lower().endswith(".fits")

    def header(self, uri: str, size: int, version: int) -> bytes:
        """The file's leading bytes (possibly longer than ``size``; callers clip)."""
        if self.is_fits(uri):
            return fits_header(uri, max(size - FITS_BLOCK, 0), version, self.datasum(uri, size, version))
        return f"# mastpipe sandbox file {uri} version {version}\n".encode()

    def datasum(self, uri: str, size: int, version: int) -> int:
        """The ones'-complement sum of a FITS file's data (the bytes after its header).

        O(1 MiB) whatever the size: the data is the same 1 MiB window over and over (whole
        windows start word-aligned, since the header is 2880 bytes and the block 2**20), so
        one window's sum times their count, plus the last partial window.
        """
        key = (uri, size, version)
        found = self._datasums.get(key)
        if found is None:
            data = max(size - FITS_BLOCK, 0)
            at = (self._offset(uri, version) + FITS_BLOCK) % _BLOCK
            whole, rest = divmod(data, _BLOCK)
            total = whole * ones_complement_sum(self._binary[at:at + _BLOCK]) if whole else 0
            found = _fold(total + ones_complement_sum(self._binary[at:at + rest]))
            self._datasums[key] = found
        return found

    # ------------------------------------------------------------------ bodies
    def iter_body(
        self, uri: str, size: int, version: int, start: int = 0, end: int | None = None,
        chunk: int = _BLOCK,
    ) -> Iterator[memoryview | bytes]:
        """Yield the bytes ``[start, end)`` of the file in pieces of at most ``chunk`` bytes.

        Pieces are memoryviews into the shared block (no copy), so streaming is as cheap as the
        socket allows.
        """
        end = size if end is None else min(end, size)
        start = max(0, start)
        if start >= end:
            return
        chunk = max(1, min(chunk, _BLOCK))
        head = self.header(uri, size, version)
        pos = start
        if pos < len(head):
            stop = min(end, len(head))
            yield head[pos:stop]
            pos = stop
        source = self._text if not self.is_fits(uri) and uri.lower().endswith(
            (".json", ".ecsv", ".txt", ".csv", ".xml")) else self._binary
        offset = self._offset(uri, version)
        while pos < end:
            n = min(chunk, end - pos)
            at = (offset + pos) % _BLOCK
            yield source[at:at + n]
            pos += n

    def body(self, uri: str, size: int, version: int, start: int = 0, end: int | None = None) -> bytes:
        """The bytes ``[start, end)`` (end exclusive, clipped to ``size``) as one bytes object."""
        return b"".join(self.iter_body(uri, size, version, start, end))

    def sha256(self, uri: str, size: int, version: int) -> str:
        """Hex sha256 of the whole body (computed by streaming it)."""
        h = hashlib.sha256()
        for piece in self.iter_body(uri, size, version):
            h.update(piece)
        return h.hexdigest()
