"""The FITS standard's own checksums (``CHECKSUM``/``DATASUM``), verified while a file streams.

MAST's FITS products carry, in each HDU's header, ``DATASUM`` (the 32-bit ones'-complement sum
of the HDU's data records, as decimal text) and ``CHECKSUM`` (16 characters chosen so that the
sum of the whole HDU, header included, is -0). Unlike the product list's size, they describe the
*content*: a byte flipped in flight, with the length intact, shows here on the first download.

:class:`FitsChecksum` takes the body block by block, in whatever sizes it arrives (it keeps the
0-3 bytes of an unfinished word and the unfinished header between blocks), walks the HDUs
(header until ``END``, then the data size from ``BITPIX``, ``NAXISn``, ``PCOUNT``, ``GCOUNT``)
and sums the data with numpy at memory speed. It has ``update`` like a ``hashlib`` object, so
the engine feeds it from the same background thread pattern as the sha256.

The algorithm: FITS Checksum Proposal (Seaman, Pence, Rots), as in the FITS standard 4.0,
appendix J. :func:`encode_checksum` is its ASCII encoding (used by the sandbox to write
correct headers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = ["Checksum", "FitsChecksum", "encode_checksum", "is_fits_name", "ones_complement_sum"]

BLOCK = 2880
_MASK = 0xFFFFFFFF
#: What a file's checksum check found: every HDU that carries checksums matched
#: (``verified``), or the file carries none / is not FITS (``none``).
Checksum = Literal["verified", "none"]
_FITS_SUFFIXES = (".fits", ".fit", ".fts")


def is_fits_name(name: str) -> bool:
    """Whether a file of this name is a plain (uncompressed) FITS file."""
    return name.lower().endswith(_FITS_SUFFIXES)


def _fold(total: int) -> int:
    """Fold carries back in: the 32-bit ones'-complement value of ``total``."""
    while total > _MASK:
        total = (total & _MASK) + (total >> 32)
    return total


def ones_complement_sum(data: bytes | bytearray | memoryview, start: int = 0) -> int:
    """The 32-bit ones'-complement sum of ``data`` read as big-endian words (a last partial word
    padded with zeros), folded to 32 bits, plus ``start``."""
    view = memoryview(data).cast("B")
    whole = len(view) // 4 * 4
    total = start + int(np.frombuffer(view[:whole], dtype=">u4").sum(dtype=np.uint64))
    if whole < len(view):
        total += int.from_bytes(bytes(view[whole:]).ljust(4, b"\0"), "big")
    return _fold(total)


def encode_checksum(value: int) -> str:
    """The 16-character ``CHECKSUM`` text for the ones'-complement sum ``value`` of an HDU
    written with ``CHECKSUM = '0000000000000000'`` (appendix J: the complement, spread over
    printable characters avoiding punctuation, rotated by one)."""
    value = ~value & _MASK
    excluded = set(range(0x3A, 0x41)) | set(range(0x5B, 0x61))
    chars = [0] * 16
    for i in range(4):
        byte = (value >> (24 - 8 * i)) & 0xFF
        quotient, remainder = byte // 4 + ord("0"), byte % 4
        ch = [quotient + remainder, quotient, quotient, quotient]
        again = True
        while again:
            again = False
            for j in (0, 2):
                if ch[j] in excluded or ch[j + 1] in excluded:
                    ch[j] += 1
                    ch[j + 1] -= 1
                    again = True
        for j in range(4):
            chars[4 * j + i] = ch[j]
    return bytes(chars[(i + 15) % 16] for i in range(16)).decode("ascii")


@dataclass
class _Hdu:
    header_sum: int
    data_left: int  # data bytes still to come, padding to the 2880-byte record included
    padding: int  # of which fill (absent fill at the end of the file counts as zeros)
    datasum: str | None
    checksum: str | None


def _value(card: bytes) -> str | None:
    """The value of a ``KEY = value / comment`` card as text (quotes removed), or None."""
    if card[8:10] != b"= ":
        return None
    text = card[10:].decode("ascii", "replace").strip()
    if text.startswith("'"):
        end = text.find("'", 1)
        while end != -1 and text[end + 1:end + 2] == "'":  # '' is an escaped quote
            end = text.find("'", end + 2)
        return text[1:end if end != -1 else None].replace("''", "'").rstrip()
    return text.split("/", 1)[0].strip()


class FitsChecksum:
    """Verify ``CHECKSUM``/``DATASUM`` of every HDU of a FITS body fed block by block.

    Call :meth:`update` with each block, in order, then :meth:`result`. A body that does not
    start with ``SIMPLE`` is not FITS: nothing is checked (``none``).
    """

    def __init__(self) -> None:
        self._header = bytearray()
        self._hdu: _Hdu | None = None
        self._carry = b""  # 0-3 bytes of an unfinished data word
        self._sum = 0
        self._off = False  # not FITS, or a problem already found: stop looking
        self.hdus = 0
        self.verified = 0  # HDUs whose checksums were present and matched
        self.problem: str | None = None

    def update(self, block: bytes | bytearray | memoryview) -> None:
        view = memoryview(block).cast("B")
        while len(view) and not self._off:
            hdu = self._hdu
            if hdu is None:
                need = BLOCK - len(self._header) % BLOCK
                self._header += view[:need]
                view = view[need:]
                if len(self._header) % BLOCK == 0:
                    self._header_record()
            else:
                take = view[:hdu.data_left]
                view = view[len(take):]
                self._add(take)
                hdu.data_left -= len(take)
                if hdu.data_left == 0:
                    self._end_hdu()

    def _add(self, data: memoryview) -> None:
        if self._carry:
            need = 4 - len(self._carry)
            self._carry += bytes(data[:need])
            data = data[need:]
            if len(self._carry) < 4:
                return
            self._sum += int.from_bytes(self._carry, "big")
            self._carry = b""
        whole = len(data) // 4 * 4
        if whole:
            self._sum = _fold(self._sum + int(np.frombuffer(data[:whole], dtype=">u4").sum(dtype=np.uint64)))
        self._carry = bytes(data[whole:])

    def _header_record(self) -> None:
        """A 2880-byte header record has arrived: parse the header when it holds ``END``."""
        record = self._header[-BLOCK:]
        if self.hdus == 0 and len(self._header) == BLOCK and not record.startswith(b"SIMPLE  ="):
            self._off = True  # not FITS: nothing to verify
            return
        cards = [bytes(record[i:i + 80]) for i in range(0, BLOCK, 80)]
        if not any(card[:8] == b"END     " for card in cards):
            return
        keys: dict[str, str | None] = {}
        for i in range(0, len(self._header), 80):
            card = bytes(self._header[i:i + 80])
            key = card[:8].decode("ascii", "replace").strip()
            if key == "END":
                break
            keys.setdefault(key, _value(card))
        try:
            bitpix = abs(int(keys.get("BITPIX") or 0))
            naxis = int(keys.get("NAXIS") or 0)
            axes = [int(keys.get(f"NAXIS{i}") or 0) for i in range(1, naxis + 1)]
            if axes and axes[0] == 0 and (keys.get("GROUPS") or "").upper() == "T":
                axes = axes[1:]  # random groups: NAXIS1 = 0 is a marker
            count = int(np.prod(axes, dtype=np.int64)) if axes else 0
            pcount, gcount = int(keys.get("PCOUNT") or 0), int(keys.get("GCOUNT") or 1)
            size = bitpix // 8 * gcount * (pcount + count) if (axes or pcount) else 0
        except ValueError as exc:
            self._fail(f"HDU {self.hdus + 1} has a header mastpipe cannot read ({exc})")
            return
        padded = -(-size // BLOCK) * BLOCK
        self._hdu = _Hdu(ones_complement_sum(self._header), padded, padded - size,
                         keys.get("DATASUM"), keys.get("CHECKSUM"))
        self._header = bytearray()
        self._sum, self._carry = 0, b""
        if padded == 0:
            self._end_hdu()

    def _end_hdu(self) -> None:
        hdu = self._hdu
        assert hdu is not None
        if self._carry:
            self._sum = _fold(self._sum + int.from_bytes(self._carry.ljust(4, b"\0"), "big"))
            self._carry = b""
        datasum = self._sum
        self.hdus += 1
        checked = False
        if hdu.datasum is not None and hdu.datasum != "":
            checked = True
            if hdu.datasum.strip() != str(datasum):
                return self._fail(f"HDU {self.hdus}: DATASUM says {hdu.datasum.strip()}, the data "
                                  f"received sums to {datasum}")
        if hdu.checksum is not None and hdu.checksum != "":
            checked = True
            total = _fold(hdu.header_sum + datasum)
            if total != _MASK:
                return self._fail(f"HDU {self.hdus}: CHECKSUM does not match (the HDU sums to "
                                  f"{total:#010x}, not -0)")
        self.verified += checked
        self._hdu = None

    def _fail(self, problem: str) -> None:
        self.problem = problem
        self._off = True

    def result(self) -> Checksum:
        """What the whole body showed; raises ValueError (saying where) when a checksum did not
        match.

        A body that ends inside an HDU (a product whose listed size cuts it, or a FITS file
        without its final fill) is judged on what it holds: missing fill counts as zeros, as
        the standard's sum would; missing data leaves that HDU unverified, not failed (the
        size checks say whether the file is complete).
        """
        if self.problem is None and not self._off:
            hdu = self._hdu
            if hdu is not None and hdu.data_left <= hdu.padding:
                hdu.data_left = 0
                self._end_hdu()
        if self.problem is not None:
            raise ValueError(f"FITS checksum mismatch: {self.problem}")
        return "verified" if self.verified else "none"
