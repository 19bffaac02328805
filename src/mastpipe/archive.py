"""The only module that talks to MAST's search API, and the only one that imports astroquery.

astroquery builds its URLs when ``astroquery.mast`` is first imported (see the protocol notes, §1),
so :func:`_astroquery` sets the server in astropy's configuration before that import, and every
:class:`Archive` gives each of its threads a fresh ``ObservationsClass`` whose Portal connection
is pointed at the configured server. Nothing in astroquery is patched: we only configure it, and
give its ``requests`` session an adapter that applies a timeout (astroquery sends none, so a
hanging server would block forever), a pool sized for our politeness limit and, only under
``--insecure``, no certificate check (see :mod:`mastpipe.tls`).

Retries (timeouts, connection errors, 429, 5xx, honouring ``Retry-After``) happen here, in one
loop, for every request mastpipe makes through astroquery.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import requests
from requests.adapters import HTTPAdapter

from mastpipe.errors import ArchiveError
from mastpipe.retry import RetryAfterTooLong, RetryPolicy, is_transient_status
from mastpipe.tls import FIX, certificate_error, check_ca_bundle, describe, quiet_urllib3

if TYPE_CHECKING:
    from astropy.table import Table

log = logging.getLogger(__name__)
T = TypeVar("T")

_configure_lock = threading.Lock()


class _TimeoutAdapter(HTTPAdapter):
    """An HTTP adapter that applies a default timeout to requests sent without one, and turns
    certificate checks off when told to (here, because a session's ``verify`` loses to
    ``REQUESTS_CA_BUNDLE``, and astroquery passes ``verify=True`` with every request)."""

    def __init__(self, timeout: float, pool_size: int, insecure: bool = False) -> None:
        super().__init__(pool_connections=pool_size, pool_maxsize=pool_size)
        self.timeout = timeout
        self.insecure = insecure

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.timeout
        if self.insecure:
            kwargs["verify"] = False
        return super().send(request, **kwargs)


def _astroquery(server: str) -> Any:
    """Import ``astroquery.mast`` with ``server`` configured before its first import."""
    with _configure_lock:
        import sys

        if "astroquery.mast" not in sys.modules:
            from astropy.config.configuration import get_config

            get_config("astroquery.mast")["server"] = server
        import astroquery.mast as mast
        from astroquery.exceptions import NoResultsWarning

        warnings.filterwarnings("ignore", category=NoResultsWarning)
        return mast


class TimedOut(ArchiveError):
    """A request to MAST timed out (after retries); product-list callers split the batch."""


class Archive:
    """MAST's observation and product search, polite and retried.

    Parameters
    ----------
    url : str
        Base URL of MAST or of a server speaking its API (such as the sandbox).
    timeout : float
        Seconds to wait for one HTTP response.
    policy : RetryPolicy
        Attempts and backoff per request.
    max_in_flight : int
        Most requests in flight at once from this object, whatever the number of threads.
    page_size : int
        Rows per page of results.
    insecure : bool
        Do not check the server's TLS certificate (``--insecure``; the caller warns).

    Raises
    ------
    CABundleError
        When ``REQUESTS_CA_BUNDLE`` (or ``CURL_CA_BUNDLE``) names no usable PEM bundle and
        ``url`` is HTTPS (see :func:`mastpipe.tls.check_ca_bundle`).
    """

    def __init__(self, url: str, *, timeout: float = 600.0, policy: RetryPolicy | None = None,
                 max_in_flight: int = 4, page_size: int = 50_000, insecure: bool = False) -> None:
        self.url = url.rstrip("/")
        self.insecure = insecure
        if insecure:
            quiet_urllib3()
        # a REQUESTS_CA_BUNDLE naming no bundle would fail every request as if MAST had answered
        # an error (or, for a file with no certificate, as a network fault to retry): say so now
        check_ca_bundle(self.url, insecure=insecure)
        self.timeout = timeout
        self.policy = policy or RetryPolicy()
        self.page_size = page_size
        self.requests_made = 0
        self._slots = threading.BoundedSemaphore(max_in_flight)
        self._local = threading.local()
        self._counter_lock = threading.Lock()
        self._mast = _astroquery(self.url)

    # -- astroquery objects, one per thread ----------------------------------------------------

    def _observations(self) -> Any:
        obs = getattr(self._local, "observations", None)
        if obs is None:
            obs = self._mast.ObservationsClass()
            portal = obs._portal_api_connection
            portal.MAST_REQUEST_URL = self.url + "/api/v0/invoke"
            portal.COLUMNS_CONFIG_URL = self.url + "/portal/Mashup/Mashup.asmx/columnsconfig"
            portal.MAST_DOWNLOAD_URL = self.url + "/api/v0.1/Download/file"
            portal.MAST_BUNDLE_URL = self.url + "/api/v0.1/Download/bundle"
            portal.PAGESIZE = self.page_size
            portal.TIMEOUT = self.timeout
            adapter = _TimeoutAdapter(self.timeout, pool_size=2, insecure=self.insecure)
            portal._session.mount("http://", adapter)
            portal._session.mount("https://", adapter)
            self._local.observations = obs
        return obs

    # -- the retry loop ----------------------------------------------------------------------

    @contextmanager
    def _slot(self) -> Iterator[None]:
        with self._slots:
            with self._counter_lock:
                self.requests_made += 1
            yield

    def call(self, what: str, request: Callable[[Any], T], *, retry_timeouts: bool = True) -> T:
        """Run ``request(observations)`` with politeness limits and retries.

        With ``retry_timeouts=False`` a timeout raises :class:`TimedOut` at once (the caller has a
        better move than asking the same thing again, such as splitting the batch).

        Raises
        ------
        TimedOut
            When every attempt timed out (callers may split the work and try again).
        ArchiveError
            When MAST answers an error that retrying will not fix, or keeps failing.
        """
        attempt = 0
        while True:
            attempt += 1
            try:
                with self._slot():
                    return request(self._observations())
            except Exception as exc:  # astroquery raises many kinds; classify below
                bad_certificate = certificate_error(exc)
                if bad_certificate is not None:  # not a passing fault: asking again cannot help
                    raise ArchiveError(f"{what}: {describe(self.url, bad_certificate)}", hint=FIX) from None
                transient, timed_out, retry_after, reason = _classify(exc)
                if not transient:
                    raise ArchiveError(f"{what}: MAST answered an error: {reason}",
                                       hint="check the recipe's criteria; `mastpipe validate` catches most mistakes") from None
                if timed_out and not retry_timeouts:
                    raise TimedOut(f"{what}: {reason}") from None
                if not self.policy.should_retry(attempt):
                    error = TimedOut if timed_out else ArchiveError
                    raise error(f"{what}: failed after {attempt} attempts: {reason}",
                                hint=f"MAST at {self.url} may be down or overloaded; rerun later, the run resumes") from None
                try:
                    delay = self.policy.delay(attempt, retry_after)
                except RetryAfterTooLong as too_long:
                    raise ArchiveError(f"{what}: {too_long}",
                                       hint="MAST asks clients to back off for long; rerun later") from None
                log.warning("%s: %s; retrying in %.1f s (attempt %d of %d)", what, reason, delay,
                            attempt + 1, self.policy.max_attempts)
                time.sleep(delay)

    # -- services --------------------------------------------------------------------------

    def query(self, criteria: dict[str, Any], position: tuple[float, float, float] | str | None = None) -> Table:
        """Observations matching ``criteria`` (astroquery ``query_criteria`` keywords).

        ``position`` is ``(ra_deg, dec_deg, radius_deg)`` or ``(object_name, radius_deg)``.
        """
        return self.call("query", lambda obs: obs.query_criteria(**criteria, **_position(position)))

    def count(self, criteria: dict[str, Any], position: Any = None) -> int:
        """How many observations match; unlike :meth:`query`, MAST does not cap this."""
        return int(self.call("count", lambda obs: obs.query_criteria_count(**criteria, **_position(position))))

    def products(self, obsids: list[str]) -> Table:
        """Product list of the given observations (one request, paged by MAST), as checkpoints
        store it (see :func:`product_table`).

        astroquery names the service, fetches its column configuration and builds the request;
        the answer's pages are parsed here (:func:`product_table`) rather than by astroquery,
        which parses each page twice with ``json`` and builds its table cell by cell: for a
        million product rows that was most of a run's time.

        A request for several observations that times out raises :class:`TimedOut` without
        retrying: the same request would most likely time out again, and the caller splits it.
        """
        what = f"product list of {len(obsids)} observation(s) {obsids[0]}{'...' if len(obsids) > 1 else ''}"
        return self.call(what, lambda obs: self._product_pages(obs, list(obsids)), retry_timeouts=len(obsids) == 1)

    def _session(self, portal: Any) -> requests.Session:
        """This thread's session for product lists: astroquery's headers and cookies, without
        astroquery's response hook, which formats every answer's whole text for a log record
        at level 5 that nothing shows (seconds for a million product rows)."""
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers.update(portal._session.headers)
            session.cookies = portal._session.cookies
            adapter = _TimeoutAdapter(self.timeout, pool_size=2, insecure=self.insecure)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            self._local.session = session
        return session

    def _product_pages(self, obs: Any, obsids: list[str]) -> Table:
        """Every page of ``Mast.Caom.Products`` for ``obsids``, as astroquery's
        ``get_product_list`` asks for them (service, column configuration, paging, polling while
        MAST answers ``EXECUTING``), parsed by :func:`product_table`."""
        import orjson
        from astroquery.exceptions import RemoteServiceError
        from astroquery.mast.discovery_portal import _prepare_service_request_string

        portal = obs._portal_api_connection
        service = obs._caom_products
        if service not in portal._column_configs:
            portal._get_col_config(service)
        col_config = portal._column_configs.get(service)
        session = self._session(portal)
        headers = {"User-Agent": session.headers["User-Agent"], "Accept": "text/plain",
                   "Content-type": "application/x-www-form-urlencoded"}
        started = time.monotonic()
        pages: list[PageColumns] = []
        page, total = 1, 1
        while page <= total:
            request = {"service": service, "params": {"obsid": ",".join(obsids)}, "format": "json",
                       "pagesize": self.page_size, "page": page}
            while True:
                response = session.post(portal.MAST_REQUEST_URL, data=_prepare_service_request_string(request),
                                        headers=headers)
                response.raise_for_status()
                body = response.content
                del response
                scanned = scan_answer(body, col_config)
                columns, answer = (scanned[1], scanned[0]) if scanned else (None, orjson.loads(body) if body else None)
                del body
                if not isinstance(answer, dict):
                    raise RemoteServiceError("There was an error with your request.")
                if answer.get("status") != "EXECUTING":
                    break
                if time.monotonic() - started >= self.timeout:
                    raise TimeoutError(f"Timeout limit of {self.timeout} exceeded.")
            if answer.get("status") == "ERROR":
                raise RemoteServiceError(answer.get("msg", "There was an error with your request."))
            paging, complete = answer.get("paging"), answer.get("status") == "COMPLETE"
            pages.append(columns if columns is not None else page_columns(answer, col_config))
            del answer
            if not complete or paging is None:
                break
            total = int(paging["pagesFiltered"])
            page = int(paging["page"]) + 1
        return product_table(pages)


#: One page of an answer as columns: name -> (values, mask or None); text as UTF-8 bytes.
PageColumns = dict[str, tuple[np.ndarray, "np.ndarray | None"]]

_FAST_TYPES = {"str": "S", "int64": "i", "float64": "f"}


def page_columns(answer: dict[str, Any], col_config: dict[str, Any] | None = None) -> PageColumns:
    """The columns of one page of a Mashup answer (``{"fields": [...], "data": [{...}, ...]}``),
    with the values and masks astroquery's ``_json_to_table`` gives them, in the form
    checkpoints store (:func:`mastpipe.state.as_stored`): text as UTF-8 bytes as wide as its
    longest value, masked text as ``b""`` (astroquery masks exactly the empty strings), and a
    mask only on the other columns.

    A column at a time, each in one C-level conversion where the values allow it (every MAST
    product list: text, integers, floats with ``null`` for missing values); any other column is
    built by astroquery's own ``_json_to_table``, so its values are astroquery's whatever they
    hold.
    """
    from operator import itemgetter

    from astroquery.mast import utils

    if not all(key in answer for key in ("fields", "data")):
        raise KeyError("Missing required key(s) 'data' and/or 'fields.'")
    data = answer["data"]
    columns: PageColumns = {}
    for field in answer["fields"]:
        name, dbtype = field["name"], field["type"]
        if name == "_selected_" or name in columns:
            continue
        _, python_type, ignore = utils.parse_type(dbtype)
        configured = (col_config or {}).get(name, {}).get("ignoreValue")
        ignore = ignore if configured is None else configured
        kind = _FAST_TYPES.get(getattr(python_type, "__name__", ""))
        try:
            values = list(map(itemgetter(name), data))
        except KeyError:  # astroquery reads a missing key as the column's ignore value
            values = [row.get(name, ignore) for row in data]
        column = _fast_column(values, kind, ignore) if kind else None
        columns[name] = column if column is not None else _astroquery_column(name, dbtype, values, col_config)
    return columns


_SEPARATOR = re.compile(rb"\s*(?:,|\}\s*,\s*\{)\s*")  # between two fields, or two rows
_COLON = re.compile(rb"\s*:\s*")
_BARE = re.compile(rb"(\s*:\s*)([^\s,{}\[\]]+)(.*)", re.DOTALL)


def scan_answer(body: bytes, col_config: dict[str, Any] | None = None) -> tuple[dict[str, Any], PageColumns] | None:
    """A Mashup answer parsed without a Python object per cell: the envelope (``status``,
    ``msg``, ``fields``, ``paging``) and the columns of ``data`` as :func:`page_columns` gives
    them; None when the answer is not in the plain form read here (the caller then parses it
    the ordinary way, with the same result).

    The plain form, which MAST's product lists take: no backslash anywhere (so no escaped
    character inside a string), one or more rows, each a flat object listing the fields of
    ``fields`` in that order, every row with the same layout (a field quoted in one row is
    quoted in all) and the same spacing; text fields hold strings (or ``null`` in every row),
    ``int``/``long`` fields integers or ``null``, ``float``/``double`` fields numbers or
    ``null``. Anything else returns None.

    How: with no escapes, the quotes alone split the answer into strings and the gaps between
    them. The first row, read in Python, gives the layout (which string of a row is which
    field's key or value, and which values are bare tokens inside a gap); every other row is
    then checked against it and cut into columns with array arithmetic on the quotes'
    positions, each column gathered into one fixed-width array and converted by numpy.
    """
    import orjson

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
        envelope = orjson.loads(body[:opening] + b"[]" + body[bracket + 1:])
    except orjson.JSONDecodeError:
        return None
    if not isinstance(envelope, dict) or not isinstance(envelope.get("fields"), list):
        return None
    fields = [(f["name"], f["type"]) for f in envelope["fields"]]
    if [name.encode() for name, _ in fields] != [key for key, *_ in layout]:
        return None
    rows = k_data + 1 + per_row * np.arange(n_rows)  # each row's first string
    from astroquery.mast import utils

    columns: PageColumns = {}
    # Every row's keys are checked byte for byte, and every gap's length against the first
    # row's: a row laid out otherwise (a null where the first row has a string) cannot pass.
    # What the gaps hold is left to the conversions below, which refuse anything but values.
    for (name, dbtype), (key, offset, quoted, prefix, separator) in zip(fields, layout):
        k_key = rows + offset
        if not _all_equal(b, opens[k_key], closes[k_key], key):
            return None
        last_field = separator is row_end
        if quoted:
            k_value = k_key + 1
            if not (opens[k_value] - closes[k_key] == len(prefix) + 2).all():
                return None
            if not last_field and not (opens[k_value + 1] - closes[k_value] == len(separator) + 2).all():
                return None
            starts, ends = opens[k_value], closes[k_value]
        else:
            starts = closes[k_key] + 1 + len(prefix)
            ends = opens[np.minimum(k_key + 1, n_strings - 1)] - 1 - len(separator)
            if last_field:  # the last row's gap ends with the rest of the answer
                ends[-1] = close_at
        if name == "_selected_" or name in columns:
            continue
        _, python_type, ignore = utils.parse_type(dbtype)
        configured = (col_config or {}).get(name, {}).get("ignoreValue")
        ignore = ignore if configured is None else configured
        kind = _FAST_TYPES.get(getattr(python_type, "__name__", ""))
        column = _scan_column(b, starts, ends, quoted, kind, ignore)
        if column is None:
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
    out = items[starts]
    if (lengths < width).any():
        out.view(np.uint8).reshape(len(out), width)[...] *= np.arange(width, dtype=np.intp) < lengths[:, None]
    return out


def _scan_column(b: np.ndarray, starts: np.ndarray, ends: np.ndarray, quoted: bool, kind: str | None,
                 ignore: Any) -> tuple[np.ndarray, np.ndarray | None] | None:
    """One column from its values' byte ranges; None when it is not in the plain form."""
    raw = _gather(b, starts, ends - starts)
    if raw is None:
        return None
    if kind == "S":
        if ignore != "":
            return None
        if quoted:
            return raw, None
        if not (raw == b"null").all():  # bare text: only null, read as "" (masked)
            return None
        return np.zeros(len(raw), dtype="S1"), None
    if kind not in ("i", "f") or quoted:
        return None
    null = raw == b"null"
    if null.any():
        if ignore is None:
            return None
        raw = np.where(null, b"0", raw)
    if kind == "i" and not np.strings.isdigit(np.strings.lstrip(raw, b"-")).all():
        return None  # "1.0", "1e3": astroquery's conversion may read them otherwise
    try:
        number = raw.astype(np.int64 if kind == "i" else np.float64)
    except (ValueError, OverflowError):
        return None
    if null.any():
        number[null] = ignore
    is_nan = isinstance(ignore, float) and np.isnan(ignore)
    mask = None if ignore is None or is_nan else np.equal(number, ignore)
    return number, (mask if mask is not None and mask.any() else None)


def _fast_column(values: list[Any], kind: str, ignore: Any) -> tuple[np.ndarray, np.ndarray | None] | None:
    """``values`` converted in one C-level pass, or None when only astroquery's way gives its
    result (then :func:`_astroquery_column` builds it)."""
    if kind == "S":
        if ignore != "":
            return None
        try:
            text = np.array(values, dtype="S") if values else np.zeros(0, dtype="S1")
        except UnicodeEncodeError:  # not ASCII: encode one by one
            if not all(isinstance(v, str) or v is None for v in values):
                return None
            text = np.array([b"" if v is None else v.encode("utf-8") for v in values], dtype="S")
        except (TypeError, ValueError):
            return None
        if text.ndim != 1:  # lists in a text column
            return None
        if text.dtype.itemsize >= 4:  # null became b"None": astroquery reads it as "", masked
            nones = [i for i in np.flatnonzero(text == b"None").tolist() if values[i] is None]
            if nones:
                text[nones] = b""
                text = text.astype(f"S{max(int(np.strings.str_len(text).max()), 1)}")
        return (text if text.dtype.itemsize else text.astype("S1")), None
    is_nan = isinstance(ignore, float) and np.isnan(ignore)
    if ignore is not None and not is_nan and None in values:  # null reads as the ignore value
        values = [ignore if v is None else v for v in values]
    try:
        number = np.array(values, dtype=np.int64 if kind == "i" else np.float64)
    except (TypeError, ValueError, OverflowError):
        return None
    if number.ndim != 1:
        return None
    mask = None if ignore is None or is_nan else np.equal(number, ignore)
    return number, (mask if mask is not None and mask.any() else None)


def _astroquery_column(name: str, dbtype: str, values: list[Any],
                       col_config: dict[str, Any] | None) -> tuple[np.ndarray, np.ndarray | None]:
    """One column as astroquery's ``_json_to_table`` builds it, in stored form."""
    from astroquery.mast.discovery_portal import _json_to_table

    column = _json_to_table({"fields": [{"name": name, "type": dbtype}],
                             "data": [{name: v} for v in values]}, col_config)[name]
    mask = np.asarray(column.mask) if np.any(column.mask) else None
    values_ = np.asarray(column)
    if values_.dtype.kind in "UO":
        text = np.asarray(column.filled("") if mask is not None else values_, dtype=str)
        encoded = np.char.encode(text, "utf-8") if len(text) else np.zeros(0, dtype="S1")
        return (encoded if encoded.dtype.itemsize else encoded.astype("S1")), None
    return values_, mask


def product_table(pages: list[PageColumns]) -> Table:
    """The pages' columns stacked into one table in stored form (what
    ``as_stored(get_product_list(...))`` gives: astroquery's columns in its order and dtypes,
    text as UTF-8 bytes, a ``MaskedColumn`` where a number is missing)."""
    from astropy.table import MaskedColumn, Table

    pages = [p for p in pages if p]
    if not pages:
        return Table()
    table = Table()
    for name in pages[0]:
        parts = [p[name] for p in pages]
        values = np.concatenate([v for v, _ in parts]) if len(parts) > 1 else parts[0][0]
        if any(m is not None for _, m in parts):
            mask = np.concatenate([np.zeros(len(v), dtype=bool) if m is None else m for v, m in parts])
            table[name] = MaskedColumn(values, mask=mask, copy=False)
        else:
            table[name] = values
    return table


def _position(position: Any) -> dict[str, Any]:
    if position is None:
        return {}
    if isinstance(position[0], str):
        return {"objectname": position[0], "radius": f"{position[1]} deg"}
    from astropy.coordinates import SkyCoord

    ra, dec, radius = position
    return {"coordinates": SkyCoord(ra, dec, unit="deg"), "radius": f"{radius} deg"}


def _classify(exc: BaseException) -> tuple[bool, bool, str | None, str]:
    """(transient?, timed out?, Retry-After header, reason) for an exception from astroquery."""
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        status = exc.response.status_code
        reason = f"HTTP {status} {exc.response.reason or ''}".strip()
        return is_transient_status(status), status in (504, 408), exc.response.headers.get("Retry-After"), reason
    if isinstance(exc, (requests.Timeout, TimeoutError)):
        return True, True, None, "timed out"
    if isinstance(exc, requests.ConnectionError):
        return True, False, None, f"connection failed ({type(exc).__name__})"
    if isinstance(exc, ValueError) and "JSON" in type(exc).__name__ + str(exc):
        return True, False, None, "answer was not JSON (a proxy error page?)"
    return False, False, None, f"{type(exc).__name__}: {exc}"
