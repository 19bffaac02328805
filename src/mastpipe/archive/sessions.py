"""HTTP sessions to MAST, and how a failed request reads.

astroquery builds its URLs when ``astroquery.mast`` is first imported (see the protocol notes,
§1), so :func:`import_astroquery` sets the server in astropy's configuration before that import,
and :func:`point` points a fresh astroquery query object's Portal connection at the configured
server. Nothing in astroquery is patched: we only configure it, and give its ``requests`` session
a :class:`TimeoutAdapter`, which applies a timeout (astroquery sends none, so a hanging server
would block forever), a pool sized for our politeness limit and, only under ``--insecure``, no
certificate check (see :mod:`mastpipe.tls`). :func:`classify` tells the retry loop
(:meth:`Archive.call <mastpipe.archive.Archive.call>`) which failures are worth another try.
"""

from __future__ import annotations

import threading
import warnings
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from mastpipe.retry import is_transient_status

__all__ = ["TimeoutAdapter", "classify", "import_astroquery", "mounted", "point", "whole_body"]

_configure_lock = threading.Lock()


class TimeoutAdapter(HTTPAdapter):
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


def mounted(session: requests.Session, timeout: float, insecure: bool) -> requests.Session:
    """``session`` sending through a :class:`TimeoutAdapter` (a pool of two: one thread's)."""
    adapter = TimeoutAdapter(timeout, pool_size=2, insecure=insecure)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def import_astroquery(server: str) -> Any:
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


def point(obs: Any, url: str, page_size: int, timeout: float, insecure: bool) -> Any:
    """``obs`` (an astroquery query object) pointed at the server at ``url``."""
    portal = obs._portal_api_connection
    portal.MAST_REQUEST_URL = url + "/api/v0/invoke"
    portal.COLUMNS_CONFIG_URL = url + "/portal/Mashup/Mashup.asmx/columnsconfig"
    portal.MAST_DOWNLOAD_URL = url + "/api/v0.1/Download/file"
    portal.MAST_BUNDLE_URL = url + "/api/v0.1/Download/bundle"
    portal.PAGESIZE = page_size
    portal.TIMEOUT = timeout
    mounted(portal._session, timeout, insecure)
    return obs


def whole_body(response: requests.Response) -> bytes:
    """The body of a response asked for with ``stream=True``, read in one call.

    ``Response.content`` gathers a body 10 KB at a time through several Python frames: for the
    ~600 MB of JSON a million product rows take, a second or two of CPU. One read fills one
    buffer, and returns the connection to the pool as ``content`` does. A broken body raises
    what ``content`` would raise, so :func:`classify` reads it the same way.
    """
    from urllib3.exceptions import DecodeError, ProtocolError, ReadTimeoutError, SSLError

    try:
        return bytes(response.raw.read(decode_content=True) or b"")
    except ProtocolError as exc:
        raise requests.exceptions.ChunkedEncodingError(exc) from exc
    except DecodeError as exc:
        raise requests.exceptions.ContentDecodingError(exc) from exc
    except ReadTimeoutError as exc:
        raise requests.ConnectionError(exc) from exc
    except SSLError as exc:
        raise requests.exceptions.SSLError(exc) from exc


def classify(exc: BaseException) -> tuple[bool, bool, str | None, str]:
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
