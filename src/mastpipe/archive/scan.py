"""The fast reading of a product list: a Mashup answer cut into columns with array arithmetic,
without a Python object per cell (see :func:`scan_answer`). For a million product rows the row
by row reading (:mod:`.rows`), like astroquery's, was most of a run's time. It reads only the
plain form MAST's product lists take; anything else goes back to :mod:`.rows`, which also names
what is wrong with a malformed row."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from mastpipe.archive.rows import REQUIRED, PageColumns

__all__ = ["scan_answer"]

_BLOCK_BYTES = 1 << 19  # of the answer read at a time: what a core's L2 cache holds here
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
    positions, each column gathered into one fixed-width array (a block of rows at a time,
    while they are in the cache) and converted with array arithmetic.
    """
    import json

    if not body or b"\\" in body:
        return None
    b = np.frombuffer(body, dtype=np.uint8)
    quotes = np.flatnonzero(b == 34)
    if len(quotes) % 2:
        return None
    # string k is body[open_quotes[k] + 1:closes[k]]
    open_quotes, closes = quotes[0::2], quotes[1::2]
    n_strings = len(open_quotes)
    found = re.search(rb'"data"\s*:\s*\[\s*\{\s*"', body)
    if found is None:
        return None
    k_data = int(np.searchsorted(open_quotes, found.start()))
    if k_data >= n_strings or open_quotes[k_data] != found.start():
        return None  # "data" inside a string

    def gap(k: int) -> bytes:  # the bytes between string k and string k + 1
        return body[closes[k] + 1:open_quotes[k + 1]] if k + 1 < n_strings else body[closes[k] + 1:]

    # the first row's layout: (key, offset of its key string in a row, quoted?, prefix, separator)
    layout: list[tuple[bytes, int, bool, bytes, bytes]] = []
    k = k_data + 1
    while True:
        if k >= n_strings:
            return None
        key, after_key = body[open_quotes[k] + 1:closes[k]], gap(k)
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
        ends = np.where(nxt < n_strings, open_quotes[np.minimum(nxt, n_strings - 1)], len(b))
        starts = closes[closing] + 1
        widths = ends - starts
        gathered = _gather(b, [(starts, widths, 1)])
        if gathered is None:
            return None
        gaps = gathered[0]
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
    row_quotes = np.ascontiguousarray(quotes[2 * first:2 * (first + span)].reshape(n_rows, 2 * per_row).T)
    row_open_quotes, row_closes = row_quotes[0::2], row_quotes[1::2]
    from astroquery.mast import utils

    # Each field of every row is read as one range: its key, what follows up to the value (its
    # head), and the value. Every row's head is checked byte for byte against the first row's,
    # and every separator's length: a row laid out otherwise (a null where the first row has a
    # string) cannot pass. As no string holds a quote, the head also fixes where the key ends
    # and the value starts. What the gaps after bare values hold is left to the conversions
    # below, which refuse anything but values.
    heads: list[tuple[np.ndarray, bytes]] = []
    values: list[tuple[np.ndarray, np.ndarray, int]] = []
    for key, offset, quoted, prefix, separator in layout:
        last_field = separator is row_end
        if quoted:
            if not last_field and not (row_open_quotes[offset + 2] - row_closes[offset + 1]
                                       == len(separator) + 1).all():
                return None
            ends = row_closes[offset + 1]
        else:
            # the value's gap ends where the next string opens: in this row, or the next row's first
            after = row_open_quotes[offset + 1] if offset + 1 < per_row else np.append(row_open_quotes[0, 1:], 0)
            ends = after - len(separator)
            if last_field:  # the last row's gap ends with the rest of the answer
                ends[-1] = close_at
        head = key + b'"' + prefix + (b'"' if quoted else b"")
        key_starts = row_open_quotes[offset] + 1
        starts = key_starts + len(head)
        heads.append((key_starts, head))
        values.append((starts, ends - starts, 1))
    gathered = _gather(b, values, fixed=heads)
    if gathered is None:
        return None
    columns: PageColumns = {}
    for (name, dbtype), (_, _, quoted, _, _), raw in zip(fields, layout, gathered):
        if name == "_selected_" or name in columns:
            continue
        _, python_type, blank = utils.parse_type(dbtype)
        kind = _FAST_TYPES.get(getattr(python_type, "__name__", ""))
        column = _scan_column(raw, quoted, kind, blank)
        if column is None:
            return None
        if name in REQUIRED and (not quoted and kind == "S" or column[1] is not None):
            return None  # a null where a file needs a value: read row by row, which names it
        if name == "size" and (column[0] < 0).any():
            return None
        columns[name] = column
    return envelope, columns


def _gather(b: np.ndarray, ranges: Sequence[tuple[np.ndarray, np.ndarray, int]],
            fixed: Sequence[tuple[np.ndarray, bytes]] = ()) -> list[np.ndarray] | None:
    """Each set of byte ranges ``(starts, lengths, width)`` as one fixed-width bytes array, at
    least ``width`` wide and as wide as its longest range, each value padded with NULs; None
    when a length is negative or past 64 KiB, or when a range of ``fixed`` (``starts``,
    ``text``: each ``b[start:start + len(text)]``) does not hold ``text``. All sets cover the
    same rows.

    ``b`` seen as overlapping ``S<width>`` items, one starting at every byte, lets numpy copy
    each range as one item (a copy per value, not an index per byte). The sets are read a block
    of rows at a time: one set alone reads a few bytes of every ~600-byte row across the whole
    answer, and waiting for memory was most of the cost (each block is read through in order
    first: ~15% less again). ``fixed`` is compared a block at a time too, as one comparison of
    bytes (numpy's elementwise one is ~10x slower), and kept nowhere.
    """
    n = len(ranges[0][0]) if ranges else len(fixed[0][0]) if fixed else 0
    widths = [max(int(lengths.max()) if n else 0, width, 1) for _, lengths, width in ranges]
    if n and any(int(lengths.min()) < 0 for _, lengths, _ in ranges) or max(widths, default=0) > 1 << 16:
        return None
    longest = max([*widths, *(len(text) for _, text in fixed)], default=0)
    if longest > len(b):
        b = np.concatenate([b, np.zeros(longest, dtype=np.uint8)])
    if any(n and int(starts.max()) > len(b) - len(text) for starts, text in fixed):
        return None
    items = [_items(b, width) for width in widths]
    # an item may not run past the end of b: those starts are read from a padded copy after
    past_end = [n > 0 and int(starts.max()) > len(b) - width for (starts, _, _), width in zip(ranges, widths)]
    starts_in = [np.minimum(starts, len(b) - width) if past else starts
                 for (starts, _, _), width, past in zip(ranges, widths, past_end)]
    outs = [np.empty(n, dtype=f"S{width}") for width in widths]
    block = max(64, n * _BLOCK_BYTES // max(len(b), 1))
    checks = [(starts, _items(b, len(text)), text) for starts, text in fixed]
    # where each block of rows begins in b: its bytes are read through in order first, which
    # the hardware prefetches, so that the scattered reads below find them in the cache
    begins = fixed[0][0] if fixed else ranges[0][0] if ranges else None
    for low in range(0, n, block):
        rows = min(block, n - low)
        if begins is not None:
            np.count_nonzero(b[int(begins[low]):int(begins[low + rows]) if low + rows < n else len(b)])
        for starts, view, text in checks:
            if view[starts[low:low + rows]].tobytes() != text * rows:
                return None
        for starts, view, out in zip(starts_in, items, outs):
            out[low:low + rows] = view[starts[low:low + rows]]
    for (starts, lengths, _), width, past, out in zip(ranges, widths, past_end, outs):
        if past:
            _reread_past_end(b, starts, width, out)
        if (lengths < width).any():
            out.view(np.uint8).reshape(n, width)[...] *= np.arange(width, dtype=np.intp) < lengths[:, None]
    return outs


def _items(b: np.ndarray, width: int) -> np.ndarray:
    """``b`` as overlapping ``S<width>`` items, one starting at every byte."""
    items: np.ndarray = np.ndarray(shape=(len(b) - width + 1,), dtype=f"S{width}", buffer=b, strides=(1,))
    return items


def _reread_past_end(b: np.ndarray, starts: np.ndarray, width: int, out: np.ndarray) -> None:
    """Reread the items that run past the end of ``b`` from a copy of its end, NUL padded."""
    late = starts > len(b) - width
    base = len(b) - width
    end = np.concatenate([b[base:], np.zeros(width, dtype=np.uint8)])
    out[late] = _items(end, width)[starts[late] - base]


def _scan_column(raw: np.ndarray, quoted: bool, kind: str | None,
                 blank: Any) -> tuple[np.ndarray, np.ndarray | None] | None:
    """One column from its values' bytes, nulls as ``blank`` and masked (as the row by row
    reading masks them; text is stored with masked cells empty); None when it is not in the
    plain form."""
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
    if kind == "i":
        number = _integers(raw)
        if number is None:
            return None  # "1.0", "1e3", past 64 bits: let the row-by-row reading say how they read
    else:
        try:
            number = raw.astype(np.float64)
        except (ValueError, OverflowError):
            return None
    if not null.any():
        return number, None
    number[null] = blank
    return number, null


def _integers(raw: np.ndarray) -> np.ndarray | None:
    """Decimal integers (an optional ``-``, then digits) as int64; None when any value is
    anything else or could pass 64 bits.

    Digit by digit over the columns of the values' bytes: numpy's own cast from bytes makes a
    Python int of each value, ~20x slower.
    """
    width = raw.dtype.itemsize
    if width > 18:
        return None
    byte = raw.view(np.uint8).reshape(len(raw), width)
    digit = byte - np.uint8(ord("0"))  # wraps past 9 for anything but a digit
    is_digit = digit < 10
    negative = byte[:, 0] == ord("-")
    allowed = is_digit.copy()
    allowed[:, 0] |= negative
    filled = byte != 0  # the gather pads each value with NULs
    if not ((allowed == filled).all() and (filled[:, :-1] >= filled[:, 1:]).all()):
        return None  # a byte that is no digit, a sign not first, or a value with a gap in it
    if not (is_digit[:, 0] | negative & is_digit[:, min(1, width - 1)]).all():
        return None  # no digit at all: "" or "-"
    number = np.zeros(len(raw), dtype=np.int64)
    for j in range(width):
        number = np.where(is_digit[:, j], number * 10 + digit[:, j], number)
    return np.where(negative, -number, number)
