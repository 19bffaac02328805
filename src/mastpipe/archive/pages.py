"""A product list as MAST pages it: ``Mast.Caom.Products`` asked page by page the way
astroquery's ``get_product_list`` asks (service, column configuration, paging, polling while MAST
answers ``EXECUTING``), each page read by :func:`~.scan.scan_answer` when it is in the plain form
MAST's product lists take, else row by row (:mod:`.rows`), and the pages stacked into one table
in the form checkpoints store."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import requests

from mastpipe.archive.rows import PageColumns, page_table, stored_columns
from mastpipe.archive.scan import scan_answer
from mastpipe.archive.sessions import mounted, whole_body
from mastpipe.cores import cores

if TYPE_CHECKING:
    from astropy.table import Table

__all__ = ["product_pages", "products_session", "stack_pages"]


# Reading an answer is array work that lets go of the GIL, so answers read in several threads
# at once share the cores. Readers for half the cores at most, the rest left to receiving the
# next answers and writing batches: with 4 readers on 2 cores each answer took ~45% more CPU
# (cache thrash and time-sharing), and a whole 1M-row job 2-4% more, for no gain in wall time.
_READERS = threading.BoundedSemaphore(max(1, cores() // 2))


def products_session(portal: Any, timeout: float, insecure: bool) -> requests.Session:
    """A session for product lists: astroquery's headers and cookies (those of ``portal``, its
    Portal connection), without astroquery's response hook, which formats every answer's whole
    text for a log record at level 5 that nothing shows (seconds for a million product rows)."""
    session = requests.Session()
    session.headers.update(portal._session.headers)
    session.cookies = portal._session.cookies
    return mounted(session, timeout, insecure)


def product_pages(obs: Any, obsids: list[str], session: requests.Session, page_size: int, timeout: float) -> Table:
    """Every page of ``Mast.Caom.Products`` for ``obsids``, as astroquery's
    ``get_product_list`` asks for them (service, column configuration, paging, polling while
    MAST answers ``EXECUTING``) through ``obs`` (an astroquery ``Observations``) and
    ``session``, ``page_size`` rows a page, polling for at most ``timeout`` seconds."""
    import json

    from astroquery.exceptions import RemoteServiceError
    from astroquery.mast.discovery_portal import _prepare_service_request_string

    portal = obs._portal_api_connection
    service = obs._caom_products
    headers = {"User-Agent": session.headers["User-Agent"], "Accept": "text/plain",
               "Content-type": "application/x-www-form-urlencoded"}
    started = time.monotonic()
    pages: list[PageColumns] = []
    page, total = 1, 1
    while page <= total:
        request = {"service": service, "params": {"obsid": ",".join(obsids)}, "format": "json",
                   "pagesize": page_size, "page": page}
        while True:
            response = session.post(portal.MAST_REQUEST_URL, data=_prepare_service_request_string(request),
                                    headers=headers, stream=True)
            try:
                response.raise_for_status()
                body = whole_body(response)
            finally:
                response.close()
            del response
            with _READERS:
                scanned = scan_answer(body)
            columns, answer = (scanned[1], scanned[0]) if scanned else (None, json.loads(body) if body else None)
            del body
            if not isinstance(answer, dict):
                raise RemoteServiceError("There was an error with your request.")
            if answer.get("status") != "EXECUTING":
                break
            if time.monotonic() - started >= timeout:
                raise TimeoutError(f"Timeout limit of {timeout} exceeded.")
        if answer.get("status") == "ERROR":
            raise RemoteServiceError(answer.get("msg", "There was an error with your request."))
        paging, complete = answer.get("paging"), answer.get("status") == "COMPLETE"
        pages.append(columns if columns is not None else stored_columns(page_table(answer)))
        del answer
        if not complete or paging is None:
            break
        total = int(paging["pagesFiltered"])
        page = int(paging["page"]) + 1
    return stack_pages(pages)


def stack_pages(pages: list[PageColumns]) -> Table:
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
            column: Any = MaskedColumn(values, mask=mask, copy=False)
        else:
            column = values
        table.add_column(column, name=name, copy=False)  # table[name] = ... would copy it again
    return table
