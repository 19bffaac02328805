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

MAST's mission search API (``/search/<mission>/api/v0.1/...``, astroquery's ``MastMissions``; see
``mast-missions.md``) is spoken here too, with ``requests`` directly: astroquery's ``MastMissions``
turns an answer into a table and drops ``totalResults``, the only way to tell a complete result
from a cut one, and checks column names against a column list fetched from the server it was
imported for. Its answers are translated into the pipeline's vocabulary here (see
:func:`mission_products_table`), so the stages after ``query`` and ``products`` treat a mission's
datasets and files as they treat CAOM's observations and products.

MAST's cloud copies are located here too (protocol map: ``mast-cloud.md``): which missions the
public bucket mirrors (:func:`cloud_mission`), ``path_lookup`` in batches of at most
:data:`PATH_LOOKUP_BATCH` URIs (:meth:`Archive.path_lookup`), and astroquery's rules from a path
to a bucket key (:func:`bucket_key`).
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

import numpy as np
import requests
from requests.adapters import HTTPAdapter

from mastpipe.errors import ArchiveError
from mastpipe.recipe.fields import DATASET_COLUMN
from mastpipe.retry import RetryAfterTooLong, RetryPolicy, is_transient_status
from mastpipe.tls import FIX, certificate_error, check_ca_bundle, describe, quiet_urllib3

if TYPE_CHECKING:
    from astropy.table import Table

log = logging.getLogger(__name__)
T = TypeVar("T")

_configure_lock = threading.Lock()
_CRITERIA_HINT = "check the recipe's criteria; `mastpipe validate` catches most mistakes"


__all__ = ["Archive", "TimedOut"]


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


#: The public bucket holding MAST's cloud copies, and its region.
BUCKET, BUCKET_REGION = "stpubdata", "us-east-1"
#: dataURI prefixes (lower case) of the missions the bucket mirrors; others are never looked up.
CLOUD_PREFIXES = ("mast:hst/product", "mast:tess/product", "mast:kepler", "mast:galex", "mast:ps1",
                  "mast:jwst/product")
#: Most URIs per path_lookup request: MAST answers 414 beyond it.
PATH_LOOKUP_BATCH = 50


def cloud_mission(uri: str) -> bool:
    """Whether ``uri`` belongs to a mission the public bucket mirrors (case-insensitive)."""
    return uri.lower().startswith(CLOUD_PREFIXES)


def bucket_key(path: str) -> str:
    """The bucket key for a path from ``path_lookup``, by astroquery's rules (``mast_relative_path``).

    GALEX paths lose their leading ``/mast/`` *characters* (astroquery strips a character set,
    and keys must match what it asks S3 for), PS1 paths move under ``panstarrs/ps1/public/``,
    HLSP paths under ``mast/``; any other path loses its leading ``/``.
    """
    if "galex" in path:
        return path.lstrip("/mast/")  # noqa: B005 - a character-set strip, exactly as astroquery does
    if "/ps1/" in path:
        return path.replace("/ps1/", "panstarrs/ps1/public/")
    if "hlsp" in path:
        return path.replace("/hlsp_local/public/", "mast/")
    return path.lstrip("/")


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
        self._mast_module: Any = None  # astroquery.mast, imported when a CAOM request first needs it

    # -- astroquery objects, one per thread ----------------------------------------------------

    def _observations(self) -> Any:
        obs = getattr(self._local, "observations", None)
        if obs is None:
            obs = self._local.observations = self._pointed(self._astroquery_module().ObservationsClass())
        return obs

    def _portal_client(self) -> Any:
        """A ``MastClass`` (astroquery's general Portal client) of this thread, for the services
        ``Observations`` has no method for: column values, time ranges, name look-ups."""
        client = getattr(self._local, "portal_client", None)
        if client is None:
            client = self._local.portal_client = self._pointed(self._astroquery_module().MastClass())
        return client

    def _astroquery_module(self) -> Any:
        if self._mast_module is None:  # a mission search never pays for importing astroquery
            self._mast_module = _astroquery(self.url)
        return self._mast_module

    def _pointed(self, obs: Any) -> Any:
        """``obs`` (an astroquery query object) pointed at this archive's server."""
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
        return obs

    # -- the retry loop ----------------------------------------------------------------------

    @contextmanager
    def _slot(self) -> Iterator[None]:
        with self._slots:
            with self._counter_lock:
                self.requests_made += 1
            yield

    def call(self, what: str, request: Callable[[Any], T], *, retry_timeouts: bool = True,
             hint: str = _CRITERIA_HINT, astroquery: bool = True) -> T:
        """Run ``request(observations)`` with politeness limits and retries.

        With ``retry_timeouts=False`` a timeout raises :class:`TimedOut` at once (the caller has a
        better move than asking the same thing again, such as splitting the batch). ``hint``
        goes with an error MAST answers: what the user may do about it. With
        ``astroquery=False`` the request gets None: the mission search API is asked with
        ``requests`` directly, and a run that only searches a mission never imports astroquery.

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
                    return request(self._observations() if astroquery else None)
            except ArchiveError:  # already says what MAST answered and what to do
                raise
            except Exception as exc:  # astroquery raises many kinds; classify below
                bad_certificate = certificate_error(exc)
                if bad_certificate is not None:  # not a passing fault: asking again cannot help
                    raise ArchiveError(f"{what}: {describe(self.url, bad_certificate)}", hint=FIX) from None
                transient, timed_out, retry_after, reason = _classify(exc)
                if not transient:
                    raise ArchiveError(f"{what}: MAST answered an error: {reason}", hint=hint) from None
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

    def _filtered(self, what: str, columns: str, criteria: dict[str, Any], position: Any,
                  pagesize: int | None = None, page: int | None = None) -> Table:
        """``Mast.Caom.Filtered[.Position]`` asking for ``columns`` only, filters built by
        astroquery exactly as ``query_criteria`` builds them."""
        def request(_obs: Any) -> Table:
            client = self._portal_client()
            portal = client._portal_api_connection
            filters = portal.build_filter_set("Mast.Caom.Cone", "Mast.Caom.Filtered", **criteria)
            service, params = "Mast.Caom.Filtered", {"columns": columns, "filters": filters}
            if position is not None:
                ra, dec, radius = position
                service, params["position"] = "Mast.Caom.Filtered.Position", f"{ra}, {dec}, {radius}"
            return client.service_request(service, params, pagesize=pagesize, page=page)
        return self.call(what, request)

    def values(self, field: str, criteria: dict[str, Any], position: Any = None, limit: int = 2000) -> list[Any]:
        """The values of ``field`` among (at most ``limit`` of) the observations matching
        ``criteria``: one page of one column, what an explanation of an empty search shows."""
        table = self._filtered(f"values of {field}", field, criteria, position, pagesize=limit, page=1)
        if field not in table.colnames:
            return []
        return [value for value in table[field].tolist() if value is not None and value != ""]

    def time_range(self, criteria: dict[str, Any], position: Any = None) -> tuple[float, float] | None:
        """The first and last ``t_min`` of the observations matching ``criteria`` (MJD), or None
        when the server cannot say (then callers assume every date MAST could hold)."""
        try:
            table = self._filtered("time range", "MIN(t_min),MAX(t_min)", criteria, position)
        except ArchiveError as error:
            log.debug("the server gave no time range (%s); splitting the whole span", error.message)
            return None
        try:
            low, high = float(table[0][0]), float(table[0][1])
        except (IndexError, TypeError, ValueError):
            return None
        return (low, high) if math.isfinite(low) and math.isfinite(high) and low <= high else None

    def resolve(self, name: str) -> dict[str, Any] | None:
        """Where MAST's own name look-up (``Mast.Name.Lookup`` on ``/api/v0/invoke`` of this
        server, not astroquery's hard-coded resolver host) places ``name``.

        Returns
        -------
        dict or None
            ``{"ra", "dec", "canonical_name", "resolver"}`` (degrees), or None when the look-up
            answered and knows no such name.
        """
        import json

        def request(_obs: Any) -> Any:
            responses = self._portal_client().service_request_async(
                "Mast.Name.Lookup", {"input": name, "format": "json"})
            return json.loads(responses[-1].text)
        answer = self.call(f"name look-up of {name!r}", request)
        found = (answer or {}).get("resolvedCoordinate") or [] if isinstance(answer, dict) else []
        for entry in found:
            try:
                return {"ra": float(entry["ra"]), "dec": float(entry["decl"]),
                        "canonical_name": entry.get("canonicalName") or name, "resolver": entry.get("resolver")}
            except (KeyError, TypeError, ValueError):
                continue
        return None

    def products(self, obsids: list[str]) -> Table:
        """Product list of the given observations (one request, paged by MAST), in the form
        checkpoints store (``as_stored`` of :func:`product_table`'s table).

        astroquery names the service, fetches its column configuration and builds the request;
        the answer's pages are read here: by :func:`scan_answer` when a page is in the plain
        form MAST's product lists take, else by :func:`product_table`'s row-by-row reading,
        which also names what is wrong with a malformed row. astroquery itself parses each page
        twice with ``json`` and builds its table cell by cell: for a million product rows that
        was most of a run's time.

        A request for several observations that times out raises :class:`TimedOut` without
        retrying: the same request would most likely time out again, and the caller splits it.
        """
        what = f"product list of {len(obsids)} observation(s) {obsids[0]}{'...' if len(obsids) > 1 else ''}"
        # astroquery names the service and builds the request; the pages are read here
        return self.call(what, lambda obs: self._product_pages(obs, list(obsids)),
                         retry_timeouts=len(obsids) == 1,
                         hint="the request names only observations, so MAST's answer is at fault: "
                              "rerun later, and report it to MAST if it persists")

    def _products_session(self, portal: Any) -> requests.Session:
        """This thread's session for product lists: astroquery's headers and cookies, without
        astroquery's response hook, which formats every answer's whole text for a log record
        at level 5 that nothing shows (seconds for a million product rows)."""
        session = getattr(self._local, "products_session", None)
        if session is None:
            session = requests.Session()
            session.headers.update(portal._session.headers)
            session.cookies = portal._session.cookies
            adapter = _TimeoutAdapter(self.timeout, pool_size=2, insecure=self.insecure)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            self._local.products_session = session
        return session

    def _product_pages(self, obs: Any, obsids: list[str]) -> Table:
        """Every page of ``Mast.Caom.Products`` for ``obsids``, as astroquery's
        ``get_product_list`` asks for them (service, column configuration, paging, polling while
        MAST answers ``EXECUTING``), parsed by :func:`product_table`."""
        import json

        from astroquery.exceptions import RemoteServiceError
        from astroquery.mast.discovery_portal import _prepare_service_request_string

        portal = obs._portal_api_connection
        service = obs._caom_products
        session = self._products_session(portal)
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
                scanned = scan_answer(body)
                columns, answer = (scanned[1], scanned[0]) if scanned else (None, json.loads(body) if body else None)
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
            pages.append(columns if columns is not None else _stored_columns(_page_table(answer)))
            del answer
            if not complete or paging is None:
                break
            total = int(paging["pagesFiltered"])
            page = int(paging["page"]) + 1
        return _stack_pages(pages)

    # -- the mission search API ---------------------------------------------------------------

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            adapter = _TimeoutAdapter(self.timeout, pool_size=2, insecure=self.insecure)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            session.headers["User-Agent"] = f"mastpipe ({requests.utils.default_user_agent()})"
            self._local.session = session
        return session

    def _mission_json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._session().request(method, f"{self.url}{path}", **kwargs)
        if response.status_code == 400:  # MAST's word on a bad search: say it, do not retry
            try:
                detail = response.json().get("detail") or response.text
            except ValueError:
                detail = response.text
            raise ArchiveError(f"MAST refused the search: {str(detail)[:300]}",
                               hint="check the query's conditions and select_cols; `mastpipe validate --online` "
                                    "checks them against the mission's columns")
        response.raise_for_status()
        return response.json()

    def mission_search(self, mission: str, conditions: dict[str, Any], position: tuple[float, float, float] | None,
                       select_cols: list[str], offset: int, limit: int) -> tuple[Table, int]:
        """One page of a mission search and MAST's count of all its rows (``totalResults``).

        Rows are sorted on the dataset column, so pages of the same search do not overlap.
        ``position`` is ``(ra_deg, dec_deg, radius_deg)``.
        """
        key = DATASET_COLUMN[mission]
        body: dict[str, Any] = {
            "conditions": [{name: _condition_text(value)} for name, value in conditions.items()],
            "limit": limit, "offset": offset, "sort_by": [key], "sort_desc": [False],
            "select_cols": (list(select_cols) + [key]) if select_cols else None,
        }
        if position is not None:
            ra, dec, radius = position
            body.update(target=[f"{ra} {dec}"], radius=radius * 3600.0, radius_units="arcseconds")
        answer = self.call(f"{mission} search (offset {offset})",
                           lambda _: self._mission_json("POST", f"/search/{mission}/api/v0.1/search", json=body),
                           astroquery=False)
        try:
            return _results_table(answer, mission), int(answer["totalResults"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ArchiveError(f"{mission} search: MAST's answer lacks {exc} (not a mission search answer?)",
                               hint=f"is {self.url} MAST or a server speaking its mission search API?") from None

    def mission_products(self, mission: str, datasets: list[str]) -> Table:
        """Product lists of the given datasets, in the pipeline's vocabulary (see
        :func:`mission_products_table`). Like :meth:`products`, a timed-out request for several
        datasets raises :class:`TimedOut` at once, for the caller to split."""
        what = f"{mission} product list of {len(datasets)} dataset(s) {datasets[0]}{'...' if len(datasets) > 1 else ''}"
        answer = self.call(what, lambda _: self._mission_json(
            "POST", f"/search/{mission}/api/v0.1/post_list_products", json={"dataset_ids": list(datasets)}),
            retry_timeouts=len(datasets) == 1, astroquery=False)
        products = answer.get("products", []) if isinstance(answer, dict) else []
        if products and isinstance(products[0], list):  # MAST sometimes nests the list (astroquery flattens it)
            products = [p for inner in products for p in inner]
        return mission_products_table(products, mission)

    def mission_columns(self, mission: str) -> list[dict[str, Any]]:
        """The mission's column list (MAST's ``column_list`` service), as MAST gives it."""
        answer = self.call(f"{mission} column list", lambda _: self._mission_json(
            "GET", "/search/util/api/v0.1/column_list", params={"mission": mission}), astroquery=False)
        if not isinstance(answer, list) or not all(isinstance(c, dict) and "column_name" in c for c in answer):
            raise ArchiveError(f"{mission} column list: MAST's answer is not a list of columns",
                               hint=f"is {self.url} MAST or a server speaking its mission search API?")
        return answer


    def path_lookup(self, uris: list[str]) -> dict[str, str | None]:
        """Where each product lies in the cloud bucket: uri -> bucket key, or None when MAST knows
        no path for it. One request per :data:`PATH_LOOKUP_BATCH` URIs, retried like the others.
        """
        found: dict[str, str | None] = {}
        for start in range(0, len(uris), PATH_LOOKUP_BATCH):
            batch = uris[start:start + PATH_LOOKUP_BATCH]

            def ask(_: Any, batch: list[str] = batch) -> Any:
                response = self._session().get(f"{self.url}/api/v0.1/path_lookup/", params={"uri": batch})
                response.raise_for_status()
                return response.json()

            answer = self.call(f"path_lookup of {len(batch)} product(s) {batch[0]}...", ask, astroquery=False,
                               hint="MAST could not say where these products lie in the cloud bucket; rerun "
                                    "later (what is known is kept), or set retrieve.source: mast")
            for uri in batch:
                entry = answer.get(uri) if isinstance(answer, dict) else None
                path = entry.get("path") if isinstance(entry, dict) else None
                found[uri] = bucket_key(path) if path else None
        return found

#: A column of product lists mastpipe adds: what was wrong with a row of MAST's answer (masked
#: where nothing was). The retrieve stage refuses such rows one by one; the others go on.
MALFORMED = "malformed"
#: Product fields a file cannot be made without (a null there is MAST's answer at fault).
REQUIRED = ("dataURI", "productFilename", "obs_id", "obs_collection", "size")


def product_table(responses: list[Any]) -> Table:
    """The product list in MAST's answer (one JSON page per response) as a masked Table.

    The same table astroquery's ``get_product_list`` makes (its column types, nulls masked),
    read one value at a time: a row with a value that does not fit its column (a size
    ``'abc'``, ``12.5`` or ``-5``, a null dataURI, a row that is not an object) no longer
    fails the whole list. Its bad values are masked and the :data:`MALFORMED` column says
    what they were, so that product alone is refused.
    """
    from astropy.table import Table, vstack
    from astroquery.exceptions import RemoteServiceError

    tables = []
    for response in responses:
        page = response.json()
        if page.get("status") == "ERROR":
            raise RemoteServiceError(page.get("msg", "There was an error with your request."))
        tables.append(_page_table(page))
    if not tables:
        return Table(masked=True)
    return tables[0] if len(tables) == 1 else vstack(tables, metadata_conflicts="silent")


def _page_table(page: dict[str, Any]) -> Table:
    import numpy as np
    from astropy.table import MaskedColumn, Table
    from astroquery.mast.utils import parse_type

    if not isinstance(page.get("fields"), list) or not isinstance(page.get("data"), list):
        raise ValueError("MAST's answer has no 'fields' and 'data' lists")
    rows: list[dict[str, Any] | None] = [row if isinstance(row, dict) else None for row in page["data"]]
    problems: list[list[str]] = [["a row that is not an object"] if row is None else [] for row in rows]
    table = Table(masked=True)
    for field in page["fields"]:
        name, kind = field.get("name"), str(field.get("type", "string"))
        if name == "_selected_" or name in table.colnames:
            continue
        _, atype, blank = parse_type(kind)
        values, mask = [], []
        for row, problem in zip(rows, problems):
            raw = None if row is None else row.get(name)
            value, ok = _cell(raw, atype)
            if not ok:
                problem.append(f"{name} {raw!r}")
            elif name == "size" and value is not None and value < 0:
                problem.append(f"size {raw!r}")
            elif value is None and name in REQUIRED and row is not None:
                problem.append(f"no {name}")
            missing = value is None or not ok
            values.append(blank if missing else value)
            mask.append(missing)
        try:
            data = np.array(values, dtype=atype if atype not in ("", None) else str)
        except (TypeError, ValueError):  # a type astroquery does not know: text
            data = np.array([str(v) for v in values], dtype=str)
        table.add_column(MaskedColumn(data, name=name, mask=mask))
    if any(problems):
        text = ["; ".join(p) for p in problems]
        table.add_column(MaskedColumn(text, name=MALFORMED, mask=[not p for p in problems], dtype=str))
    return table


def _cell(raw: Any, atype: Any) -> tuple[Any, bool]:
    """(value, readable) of one JSON value for a column of numpy type ``atype``; None = null."""
    import numpy as np

    if raw is None:
        return None, True
    if atype is str:
        return (raw, True) if isinstance(raw, str) else ((str(raw), True) if isinstance(raw, (int, float)) else (None, False))
    if atype is bool:
        return (raw, True) if isinstance(raw, bool) else (None, False)
    if atype is np.int64:
        if isinstance(raw, bool):
            return None, False
        if isinstance(raw, float) and raw.is_integer():
            raw = int(raw)
        elif isinstance(raw, str) and raw.strip().lstrip("-").isdigit():
            raw = int(raw)
        if isinstance(raw, int) and -2**63 <= raw < 2**63:
            return raw, True
        return None, False
    if atype is np.float64:
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            return float(raw), True
        try:
            return float(raw), True
        except (TypeError, ValueError):
            return None, False
    return raw, True


#: One page of an answer as columns in stored form: name -> (values, mask or None).
PageColumns = dict[str, tuple["np.ndarray", "np.ndarray | None"]]

_FAST_TYPES = {"str": "S", "int64": "i", "float64": "f"}


_SEPARATOR = re.compile(rb"\s*(?:,|\}\s*,\s*\{)\s*")  # between two fields, or two rows
_COLON = re.compile(rb"\s*:\s*")
_BARE = re.compile(rb"(\s*:\s*)([^\s,{}\[\]]+)(.*)", re.DOTALL)


def scan_answer(body: bytes) -> tuple[dict[str, Any], PageColumns] | None:
    """A Mashup answer parsed without a Python object per cell: the envelope (``status``,
    ``msg``, ``fields``, ``paging``) and the columns of ``data`` as :func:`product_table`'s
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


def _stored_columns(table: Table) -> PageColumns:
    """A page read by :func:`product_table`'s row-by-row reading, as stored columns."""
    from mastpipe.state import as_stored

    stored = as_stored(table)
    return {name: (np.asarray(stored[name]),
                   np.asarray(stored[name].mask) if getattr(stored[name], "mask", None) is not None
                   and np.any(stored[name].mask) else None)
            for name in stored.colnames}


def _stack_pages(pages: list[PageColumns]) -> Table:
    """The pages' columns stacked into one table in stored form. A column only some pages have
    (``malformed``) is empty text in the others."""
    from astropy.table import MaskedColumn, Table

    pages = [p for p in pages if p]
    if not pages:
        return Table()
    names = list(dict.fromkeys(name for page in pages for name in page))
    table = Table()
    for name in names:
        parts = []
        for page in pages:
            n = len(next(iter(page.values()))[0])
            parts.append(page.get(name, (np.zeros(n, dtype="S1"), None)))
        values = np.concatenate([v for v, _ in parts]) if len(parts) > 1 else parts[0][0]
        if any(m is not None for _, m in parts):
            mask = np.concatenate([np.zeros(len(v), dtype=bool) if m is None else m for v, m in parts])
            table[name] = MaskedColumn(values, mask=mask, copy=False)
        else:
            table[name] = values
    return table


def mission_download_url(mast_url: str, mission: str, uri: str) -> str:
    """The mission's download URL for a product's ``uri`` (``retrieve_product``, as astroquery's
    ``MastMissions.download_file`` builds it, the uri fully quoted)."""
    return f"{mast_url}/search/{mission}/api/v0.1/retrieve_product?product_name={quote(uri, safe='')}"


def _condition_text(value: Any) -> str:
    """A recipe condition as MAST reads it: a list is its values joined by commas (any of them)."""
    return ",".join(str(v) for v in value) if isinstance(value, list) else str(value)


_INFO_DTYPES = {"VARCHAR": "text", "DATETIME": "text", "CHAR": "text", "STRING": "text", "FLOAT": "float",
                "DOUBLE": "float", "DECIMAL": "float", "INTEGER": "int", "INT": "int", "LONG": "int",
                "BOOLEAN": "int"}


def _results_table(answer: dict[str, Any], mission: str) -> Table:
    """A search answer's rows as a table, typed by its ``info``, plus the pipeline's ``obsid``
    (the dataset), ``obs_collection`` and ``instrument_name`` columns."""
    import numpy as np
    from astropy.table import MaskedColumn, Table

    rows = answer["results"]
    kinds = {str(i["name"]): _INFO_DTYPES.get(str(i.get("type", "")).upper(), "text") for i in answer["info"]}
    for row in rows[:1]:
        for name, value in row.items():
            kinds.setdefault(name, "float" if isinstance(value, float) else "text")
    table = Table()
    for name, kind in kinds.items():
        values = [row.get(name) for row in rows]
        missing = np.array([v is None for v in values], dtype=bool)
        if kind == "text":
            data = np.array(["" if v is None else str(v) for v in values], dtype=str)
        else:
            dtype = np.int64 if kind == "int" and all(v is None or float(v).is_integer() for v in values) else np.float64
            data = np.array([0 if v is None else v for v in values], dtype=dtype)
        table[name] = MaskedColumn(data, mask=missing, name=name)
    key = DATASET_COLUMN[mission]
    if len(rows) and key not in table.colnames:
        raise KeyError(key)
    table["obsid"] = np.array([str(row.get(key, "")) for row in rows], dtype=str)
    table["obs_collection"] = np.full(len(rows), mission.upper(), dtype=f"U{len(mission)}")
    instrument = {"jwst": "instrume", "hst": "sci_instrume"}.get(mission)
    if instrument in table.colnames and "instrument_name" not in table.colnames:
        table["instrument_name"] = np.array([str(v).strip() for v in table[instrument].filled("")], dtype=str)
    return table


#: Columns a mission product list gains so the later stages read it as they read CAOM's:
#: pipeline column <- mission column (``mission`` itself marks the row as a mission product).
SHARED_PRODUCT_COLUMNS = {"productFilename": "filename", "dataURI": "uri", "dataRights": "access",
                          "obs_id": "dataset", "obsID": "dataset", "parent_obsid": "dataset"}


def mission_products_table(products: list[dict[str, Any]], mission: str) -> Table:
    """Mission product rows as a table: MAST's columns (``file_suffix``, ``category`` ...) as
    they are, plus :data:`SHARED_PRODUCT_COLUMNS`, ``obs_collection`` (``JWST``) and ``mission``
    (``jwst``), which is what makes retrieve use the mission's download URL and astroquery's
    ``mastDownload/<mission>/<dataset>/<file>`` layout."""
    import numpy as np
    from astropy.table import MaskedColumn, Table

    table = Table()
    if not products:
        return table
    names = list(dict.fromkeys(name for row in products for name in row))
    for name in names:
        values = [row.get(name) for row in products]
        missing = np.array([v is None for v in values], dtype=bool)
        if name == "size" or all(isinstance(v, int) and not isinstance(v, bool) for v in values if v is not None) \
                and any(v is not None for v in values):
            data = np.array([-1 if v is None else int(v) for v in values], dtype=np.int64)
        else:
            data = np.array(["" if v is None else str(v) for v in values], dtype=str)
        table[name] = MaskedColumn(data, mask=missing, name=name) if missing.any() else data
    for shared, own in SHARED_PRODUCT_COLUMNS.items():
        if own in table.colnames and shared not in table.colnames:
            table[shared] = np.array(table[own], copy=True)
    table["obs_collection"] = np.full(len(table), mission.upper(), dtype=f"U{len(mission)}")
    table["mission"] = np.full(len(table), mission, dtype=f"U{len(mission)}")
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
