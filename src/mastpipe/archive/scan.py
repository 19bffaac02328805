"""The fast reading of a product list: a Mashup answer cut into columns with array arithmetic,
without a Python object per cell (see :func:`scan_answer`). For a million product rows the row
by row reading (:mod:`.rows`), like astroquery's, was most of a run's time. It reads only the
plain form MAST's product lists take; anything else goes back to :mod:`.rows`, which also names
what is wrong with a malformed row."""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from mastpipe.archive.rows import REQUIRED, PageColumns

__all__ = ["scan_answer"]

_FAST_TYPES = {"str": "S", "int64": "i", "float64": "f"}


_SEPARATOR = re.compile(rb"\s*(?:,|\}\s*,\s*\{)\s*")  # between two fields, or two rows
_COLON = re.compile(rb"\s*:\s*")
_BARE = re.compile(rb"(\s*:\s*)([^\s,{}\[\]]+)(.*)", re.DOTALL)


def scan_answer(body: bytes) -> tuple[dict[str, Any], PageColumns] | None:
    """A Mashup answer parsed without a Python object per cell: the envelope (``status``,
    ``msg``, ``fields``, ``paging``) and the columns of ``data`` as :func:`.rows.product_table`'s
    reading gives them once stored; None when the answer is not in the plain form read here,
    or has a row that reading would call malformed (the caller then reads it row by row).

    The plain form, which MAST's product lists take: no backslash anywhere (so no escaped
    character inside a string), one or more rows, each a flat object listing the fields of
    ``fields`` in that order, every row with the same layout (a field quoted in one row is
    quoted in all) and the same spacing; text fields hold strings (or ``null`` in every row),
    ``int``/``long`` fields integers or ``null``, ``float``/``double`` fields numbers or
    ``null``; no null in a field of :data:`REQUIRED`, no negative size. Anything else returns
    None.

    How: with no escapes, the quotes alone split the answer into strings and the gaps between
    them. The first row, read in Python, gives the layout (which string of a row is which
    field's key or value, and which values are bare tokens inside a gap); every other row is
    then checked against it and cut into columns with array arithmetic on the quotes'
    positions, each column gathered into one fixed-width array and converted by numpy.
    """
    import json

    if not body or b"\\" in body:
        return None
    b = np.frombuffer(body, dtype=np.uint8)
    quotes = np.flatnonzero(b == 34)
    if len(quotes) % 2:
        return None
    opens, closes = quotes[0::2] + 1, quotes[1::2]  # string k is body[opens[k]:closes[k]]
    del quotes
    n_strings = len(opens)
    found = re.search(rb'"data"\s*:\s*\[\s*\{\s*"', body)
    if found is None:
        return None
    k_data = int(np.searchsorted(opens, found.start() + 1))
    if k_data >= n_strings or opens[k_data] != found.start() + 1:
        return None  # "data" inside a string

    def gap(k: int) -> bytes:  # the bytes between string k and string k + 1
        return body[closes[k] + 1:opens[k + 1] - 1] if k + 1 < n_strings else body[closes[k] + 1:]

    # the first row's layout: (key, offset of its key string in a row, quoted?, prefix, separator)
    layout: list[tuple[bytes, int, bool, bytes, bytes]] = []
    k = k_data + 1
    while True:
        if k >= n_strings:
            return None
        key, after_key = body[opens[k]:closes[k]], gap(k)
        if _COLON.fullmatch(after_key):
            if k + 1 >= n_strings:
                return None
            quoted, prefix, separator = True, after_key, gap(k + 1)
            step = 2
        else:
            bare = _BARE.fullmatch(after_key)
            if bare is None:
                return None
            quoted, prefix, separator = False, bare.group(1), bare.group(3)
            step = 1
        layout.append((key, k - k_data - 1, quoted, prefix, separator))
        k += step
        if b"}" in separator:
            break
        if not _SEPARATOR.fullmatch(separator):
            return None
    per_row = k - k_data - 1
    row_end = layout[-1][4]
    if not _SEPARATOR.fullmatch(row_end):  # the first row is also the last
        last_row = 0
    else:
        # each row's closing gap (after its last string); the first holding ']' closes data
        n_max = (n_strings - k_data - 1) // per_row
        closing = k_data + per_row * np.arange(1, n_max + 1)
        nxt = closing + 1
        ends = np.where(nxt < n_strings, opens[np.minimum(nxt, n_strings - 1)] - 1, len(b))
        starts = closes[closing] + 1
        widths = ends - starts
        gaps = _gather(b, starts, widths)
        if gaps is None:
            return None
        has_bracket = np.strings.find(gaps, b"]") >= 0
        if not has_bracket.any():
            return None
        last_row = int(np.argmax(has_bracket))
    n_rows = last_row + 1
    last_gap = k_data + per_row * n_rows
    tail = gap(last_gap)
    cut = _BARE.fullmatch(tail) if not layout[-1][2] else None
    close_at = int(closes[last_gap]) + 1 + (cut.end(2) if cut else 0)
    bracket = body.find(b"]", close_at)
    if bracket < 0 or body[close_at:bracket].strip(b" \t\r\n}") != b"":
        return None
    opening = body.index(b"[", found.start())
    try:
        envelope = json.loads(body[:opening] + b"[]" + body[bracket + 1:])
    except ValueError:
        return None
    if not isinstance(envelope, dict) or not isinstance(envelope.get("fields"), list):
        return None
    fields = [(f["name"], f["type"]) for f in envelope["fields"]]
    if [name.encode() for name, _ in fields] != [key for key, *_ in layout]:
        return None
    # string j of row i is string k_data + 1 + i * per_row + j: the rows' quotes rearranged once
    # as (j, row), so that each field's positions are one contiguous array, neither gathered
    # nor read a row's stride apart
    first, span = k_data + 1, per_row * n_rows
    row_opens = np.ascontiguousarray(opens[first:first + span].reshape(n_rows, per_row).T)
    row_closes = np.ascontiguousarray(closes[first:first + span].reshape(n_rows, per_row).T)
    from astroquery.mast import utils

    columns: PageColumns = {}
    # Every row's keys are checked byte for byte, and every gap's length against the first
    # row's: a row laid out otherwise (a null where the first row has a string) cannot pass.
    # What the gaps hold is left to the conversions below, which refuse anything but values.
    for (name, dbtype), (key, offset, quoted, prefix, separator) in zip(fields, layout):
        if not _all_equal(b, row_opens[offset], row_closes[offset], key):
            return None
        last_field = separator is row_end
        if quoted:
            if not (row_opens[offset + 1] - row_closes[offset] == len(prefix) + 2).all():
                return None
            if not last_field and not (row_opens[offset + 2] - row_closes[offset + 1]
                                       == len(separator) + 2).all():
                return None
            starts, ends = row_opens[offset + 1], row_closes[offset + 1]
        else:
            starts = row_closes[offset] + 1 + len(prefix)
            # the value's gap ends where the next string opens: in this row, or the next row's first
            after = row_opens[offset + 1] if offset + 1 < per_row else np.append(row_opens[0, 1:], 0)
            ends = after - 1 - len(separator)
            if last_field:  # the last row's gap ends with the rest of the answer
                ends[-1] = close_at
        if name == "_selected_" or name in columns:
            continue
        _, python_type, blank = utils.parse_type(dbtype)
        kind = _FAST_TYPES.get(getattr(python_type, "__name__", ""))
        column = _scan_column(b, starts, ends, quoted, kind, blank)
        if column is None:
            return None
        if name in REQUIRED and (not quoted and kind == "S" or column[1] is not None):
            return None  # a null where a file needs a value: read row by row, which names it
        if name == "size" and (column[0] < 0).any():
            return None
        columns[name] = column
    return envelope, columns


def _all_equal(b: np.ndarray, starts: np.ndarray, ends: np.ndarray, expected: bytes) -> bool:
    """Whether every range ``b[start:end]`` holds exactly ``expected``."""
    if not (ends - starts == len(expected)).all():
        return False
    if not expected:
        return True
    got = _gather(b, starts, ends - starts, len(expected))
    return got is not None and bool((got == expected).all())


def _gather(b: np.ndarray, starts: np.ndarray, lengths: np.ndarray, width: int | None = None) -> np.ndarray | None:
    """The byte ranges as one fixed-width bytes array (``width`` wide, else the longest range).

    ``b`` seen as overlapping ``S<width>`` items, one starting at every byte, lets numpy copy
    each range as one item (a copy per value, not an index per byte).
    """
    longest = int(lengths.max()) if len(lengths) else 0
    width = max(longest, width or 0, 1)
    if (lengths < 0).any() or width > 1 << 16:
        return None
    if len(starts) and int(starts.max()) + width > len(b):
        b = np.concatenate([b, np.zeros(width, dtype=np.uint8)])
    items = np.ndarray(shape=(len(b) - width + 1,), dtype=f"S{width}", buffer=b, strides=(1,))
    out: np.ndarray = items[starts]
    if (lengths < width).any():
        out.view(np.uint8).reshape(len(out), width)[...] *= np.arange(width, dtype=np.intp) < lengths[:, None]
    return out


def _scan_column(b: np.ndarray, starts: np.ndarray, ends: np.ndarray, quoted: bool, kind: str | None,
                 blank: Any) -> tuple[np.ndarray, np.ndarray | None] | None:
    """One column from its values' byte ranges, nulls as ``blank`` and masked (as the row by
    row reading masks them; text is stored with masked cells empty); None when it is not in
    the plain form."""
    raw = _gather(b, starts, ends - starts)
    if raw is None:
        return None
    if kind == "S":
        if quoted:
            return raw, None
        if not (raw == b"null").all():  # bare text: only null, read as "" (masked)
            return None
        return np.zeros(len(raw), dtype="S1"), None
    if kind not in ("i", "f") or quoted:
        return None
    null = raw == b"null"
    if null.any():
        raw = np.where(null, b"0", raw)
    if kind == "i" and not (np.strings.isdigit(np.strings.lstrip(raw, b"-")).all()
                            and raw.dtype.itemsize <= 18):
        return None  # "1.0", "1e3", past 64 bits: let the row-by-row reading say how they read
    try:
        number = raw.astype(np.int64 if kind == "i" else np.float64)
    except (ValueError, OverflowError):
        return None
    if not null.any():
        return number, None
    number[null] = blank
    return number, null
