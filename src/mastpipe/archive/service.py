"""The :class:`Archive`: MAST's search services, polite and retried, for the stages to call.

Every request mastpipe makes to MAST's search APIs goes through :meth:`Archive.call`: at most
``max_in_flight`` at once, retried (timeouts, connection errors, 429, 5xx, honouring
``Retry-After``) in one loop. Each thread gets its own astroquery objects, pointed at the
configured server (:mod:`.sessions`). The requests and their answers are written and read by
the neighbouring modules: CAOM searches (:mod:`.caom`), product lists (:mod:`.pages`), the
mission search API (:mod:`.missions`) and the cloud's ``path_lookup`` (:mod:`.cloud`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import requests

from mastpipe.archive import caom, missions
from mastpipe.archive.cloud import PATH_LOOKUP_BATCH, path_keys
from mastpipe.archive.pages import product_pages, products_session
from mastpipe.archive.sessions import classify, import_astroquery, mounted, point
from mastpipe.errors import ArchiveError
from mastpipe.retry import RetryAfterTooLong, RetryPolicy
from mastpipe.tls import FIX, certificate_error, check_ca_bundle, describe, quiet_urllib3

if TYPE_CHECKING:
    from astropy.table import Table

log = logging.getLogger("mastpipe.archive")  # one logger for the wire layer, whichever module speaks
T = TypeVar("T")

__all__ = ["Archive", "TimedOut"]


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
            self._mast_module = import_astroquery(self.url)
        return self._mast_module

    def _pointed(self, obs: Any) -> Any:
        """``obs`` (an astroquery query object) pointed at this archive's server."""
        return point(obs, self.url, self.page_size, self.timeout, self.insecure)

    # -- the retry loop ----------------------------------------------------------------------

    @contextmanager
    def _slot(self) -> Iterator[None]:
        with self._slots:
            with self._counter_lock:
                self.requests_made += 1
            yield

    def call(self, what: str, request: Callable[[Any], T], *, retry_timeouts: bool = True,
             hint: str = caom.CRITERIA_HINT, astroquery: bool = True) -> T:
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
                transient, timed_out, retry_after, reason = classify(exc)
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
        return self.call("query", lambda obs: obs.query_criteria(**criteria, **caom.position_keywords(position)))

    def count(self, criteria: dict[str, Any], position: Any = None) -> int:
        """How many observations match; unlike :meth:`query`, MAST does not cap this."""
        return int(self.call("count", lambda obs: obs.query_criteria_count(**criteria,
                                                                           **caom.position_keywords(position))))

    def _filtered(self, what: str, columns: str, criteria: dict[str, Any], position: Any,
                  pagesize: int | None = None, page: int | None = None) -> Table:
        """``Mast.Caom.Filtered[.Position]`` asking for ``columns`` only (see :func:`.caom.filtered`)."""
        return self.call(what, lambda _obs: caom.filtered(self._portal_client(), columns, criteria, position,
                                                          pagesize=pagesize, page=page))

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
        return caom.time_span(table)

    def resolve(self, name: str) -> dict[str, Any] | None:
        """Where MAST's own name look-up (``Mast.Name.Lookup`` on ``/api/v0/invoke`` of this
        server, not astroquery's hard-coded resolver host) places ``name``.

        Returns
        -------
        dict or None
            ``{"ra", "dec", "canonical_name", "resolver"}`` (degrees), or None when the look-up
            answered and knows no such name.
        """
        answer = self.call(f"name look-up of {name!r}", lambda _obs: caom.name_lookup(self._portal_client(), name))
        return caom.resolved(answer, name)

    def products(self, obsids: list[str]) -> Table:
        """Product list of the given observations (one request, paged by MAST), in the form
        checkpoints store (``as_stored`` of :func:`.rows.product_table`'s table).

        astroquery names the service, fetches its column configuration and builds the request;
        the answer's pages are read by :mod:`.pages`: by :func:`.scan.scan_answer` when a page is in
        the plain form MAST's product lists take, else by :mod:`.rows`' row-by-row reading,
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

    def _product_pages(self, obs: Any, obsids: list[str]) -> Table:
        """Every page of ``Mast.Caom.Products`` for ``obsids`` (see :func:`.pages.product_pages`),
        through this thread's session for product lists (see :func:`.pages.products_session`)."""
        session = getattr(self._local, "products_session", None)
        if session is None:
            session = self._local.products_session = products_session(obs._portal_api_connection, self.timeout,
                                                                      self.insecure)
        return product_pages(obs, obsids, session, self.page_size, self.timeout)

    # -- the mission search API ---------------------------------------------------------------

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = mounted(requests.Session(), self.timeout, self.insecure)
            session.headers["User-Agent"] = f"mastpipe ({requests.utils.default_user_agent()})"
            self._local.session = session
        return session

    def _mission_json(self, method: str, path: str, **kwargs: Any) -> Any:
        return missions.mission_json(self._session(), self.url, method, path, **kwargs)

    def mission_search(self, mission: str, conditions: dict[str, Any], position: tuple[float, float, float] | None,
                       select_cols: list[str], offset: int, limit: int) -> tuple[Table, int]:
        """One page of a mission search and MAST's count of all its rows (``totalResults``).

        Rows are sorted on the dataset column, so pages of the same search do not overlap.
        ``position`` is ``(ra_deg, dec_deg, radius_deg)``.
        """
        body = missions.search_request(mission, conditions, position, select_cols, offset, limit)
        answer = self.call(f"{mission} search (offset {offset})",
                           lambda _: self._mission_json("POST", f"/search/{mission}/api/v0.1/search", json=body),
                           astroquery=False)
        return missions.search_page(answer, mission, self.url)

    def mission_products(self, mission: str, datasets: list[str]) -> Table:
        """Product lists of the given datasets, in the pipeline's vocabulary (see
        :func:`.missions.mission_products_table`). Like :meth:`products`, a timed-out request for several
        datasets raises :class:`TimedOut` at once, for the caller to split."""
        what = f"{mission} product list of {len(datasets)} dataset(s) {datasets[0]}{'...' if len(datasets) > 1 else ''}"
        answer = self.call(what, lambda _: self._mission_json(
            "POST", f"/search/{mission}/api/v0.1/post_list_products", json={"dataset_ids": list(datasets)}),
            retry_timeouts=len(datasets) == 1, astroquery=False)
        return missions.mission_products_table(missions.listed_products(answer), mission)

    def mission_columns(self, mission: str) -> list[dict[str, Any]]:
        """The mission's column list (MAST's ``column_list`` service), as MAST gives it."""
        answer = self.call(f"{mission} column list", lambda _: self._mission_json(
            "GET", "/search/util/api/v0.1/column_list", params={"mission": mission}), astroquery=False)
        return missions.column_list(answer, mission, self.url)

    # -- the cloud ----------------------------------------------------------------------------

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
            found.update(path_keys(answer, batch))
        return found
