"""The engine's HTTP side: one session per thread, redirects followed by hand, the token kept home.

The MAST token is sent as the ``mast_token`` cookie and only to hosts in
``DownloadSettings.token_hosts``; redirects are followed here rather than by requests, so the
token is dropped as soon as a redirect changes host or leaves HTTPS, and stays dropped for the
rest of the chain. Sessions keep no cookie jar: a cookie set by one host never travels to another.
"""

from __future__ import annotations

import http.cookiejar
import threading
from typing import Protocol
from urllib.parse import urljoin, urlsplit

import requests

from mastpipe.auth import redact, require_cookie_safe
from mastpipe.stages.retrieve.settings import DownloadSettings
from mastpipe.tls import request_options

__all__ = ["MAX_REDIRECTS", "Http", "RedirectRefused", "host_key"]

MAX_REDIRECTS = 10
_REDIRECTS = {301, 302, 303, 307, 308}


class RedirectRefused(Exception):
    """A redirect chain this client will not follow (too long, or to a scheme not HTTP)."""


class _CountsRequests(Protocol):
    requests: int


def host_key(url_or_host: str) -> str:
    """``host[:port]`` lower-cased, default ports dropped, for comparing token hosts."""
    text = url_or_host if "//" in url_or_host else f"//{url_or_host}"
    parts = urlsplit(text)
    host = (parts.hostname or "").lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None or (port, parts.scheme) in ((80, "http"), (443, "https")) or (
        not parts.scheme and port in (80, 443)
    ):
        return host
    return f"{host}:{port}"


class Http:
    """GET requests for one engine, safe to call from many threads.

    Parameters
    ----------
    settings : DownloadSettings
        ``timeout``, ``token_hosts`` and ``insecure`` are read.
    token : str, optional
        MAST token; checked for characters a cookie cannot carry before any request (requests'
        own error would quote it).
    """

    def __init__(self, settings: DownloadSettings, token: str | None = None) -> None:
        if token:
            require_cookie_safe(token)
        self._token = token or None
        self.token_hosts = frozenset(host_key(h) for h in settings.token_hosts)
        self.timeout = settings.timeout
        self.tls = request_options(settings.insecure)
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()

    @property
    def has_token(self) -> bool:
        return self._token is not None

    def clean(self, text: str) -> str:
        """``text`` with the token redacted."""
        return redact(text, self._token)

    def get(self, url: str, headers: dict[str, str], counters: _CountsRequests) -> requests.Response:
        """GET ``url`` (streamed) following redirects by hand, so the token stays on its hosts.

        ``counters.requests`` counts every request made, redirects included.

        Raises
        ------
        RedirectRefused
            More than ``MAX_REDIRECTS`` redirects, or one to a scheme other than HTTP(S).
        requests.RequestException
            As ``requests`` raises it.
        """
        session = self._session()
        send_token = self._token is not None and host_key(url) in self.token_hosts
        for _ in range(MAX_REDIRECTS + 1):
            request_headers = dict(headers)
            if send_token:
                request_headers["Cookie"] = f"mast_token={self._token}"
            counters.requests += 1
            response = session.get(url, headers=request_headers, stream=True,
                                   timeout=(self.timeout, self.timeout), allow_redirects=False,
                                   **self.tls)
            location = response.headers.get("Location")
            if response.status_code not in _REDIRECTS or not location:
                return response
            response.close()
            target = urljoin(url, location)
            downgrade = urlsplit(url).scheme == "https" and urlsplit(target).scheme != "https"
            if (downgrade or host_key(target) != host_key(url)
                    or host_key(target) not in self.token_hosts):
                send_token = False  # and it stays dropped for the rest of the chain
            if urlsplit(target).scheme not in ("http", "https"):
                raise RedirectRefused(f"redirected to an unsupported URL scheme: {target}")
            url = target
        raise RedirectRefused(f"more than {MAX_REDIRECTS} redirects")

    def close(self) -> None:
        """Close every thread's session (and its connections) once a run is over."""
        with self._sessions_lock:
            for session in self._sessions:
                session.close()
            self._sessions.clear()
        self._local = threading.local()

    def drop_session(self) -> None:
        """Close this thread's session (a segment connection's thread is about to end)."""
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is not None:
            session.close()
            with self._sessions_lock:
                if session in self._sessions:
                    self._sessions.remove(session)
            del self._local.session

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            # No cookie jar: cookies set by one host must never travel to another, and the token
            # is added per request only where it belongs.
            session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
            adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=1,
                                                    max_retries=0)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            session.headers["User-Agent"] = "mastpipe (python-requests)"
            self._local.session = session
            with self._sessions_lock:
                self._sessions.append(session)
        return session
