"""The MAST token: where it comes from, how it is checked, and how it is kept out of every text.

The token is read from ``MAST_API_TOKEN`` or from the keyring entry astroquery uses
(service ``astroquery:mast.stsci.edu.token``, username ``masttoken``) -- never from a recipe or
a command-line argument, which end up in files and process lists. Everything that turns a token
into text goes through :func:`redact`; :class:`RedactingFilter` does the same for log records.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

import requests

from mastpipe.errors import AuthError, TokenCheckError, TokenRefusedError
from mastpipe.tls import FIX, certificate_error, check_ca_bundle, describe, request_options

__all__ = [
    "ENV_VAR",
    "KEYRING_SERVICE",
    "KEYRING_USERNAME",
    "RedactingFilter",
    "check_token",
    "discover_token",
    "redact",
    "require_cookie_safe",
    "store_token",
]

ENV_VAR = "MAST_API_TOKEN"
KEYRING_SERVICE = "astroquery:mast.stsci.edu.token"
KEYRING_USERNAME = "masttoken"
TOKEN_PAGE = "https://auth.mast.stsci.edu/token?suggested_name=mastpipe&suggested_scope=mast:exclusive_access"
_MASK = "***"
_COOKIE_SAFE = re.compile(r"[!#-+\--:<-\[\]-~]+")  # RFC 6265 cookie-octet
# Every token this process has read: RedactingFilter removes them from any log record, so a
# handler set up before the token was known (the command line's) still keeps logs clean.
_KNOWN: set[str] = set()


def _remember(token: str | None) -> str | None:
    if token:
        _KNOWN.add(token)
    return token


def require_cookie_safe(token: str) -> str:
    """Return ``token`` if a cookie can carry it, else raise :class:`TokenRefusedError`.

    Checked before the token goes anywhere: requests' own error for a bad header quotes the
    value with ``repr``, which :func:`redact` would not recognise (``\\n`` for a newline).

    Raises
    ------
    TokenRefusedError
        (an :class:`AuthError`, exit 2) When the token holds whitespace, control characters,
        ``;``, ``,``, ``\\`` or ``"`` (the message does not contain the token).
    """
    if not _COOKIE_SAFE.fullmatch(token):
        raise TokenRefusedError("the MAST token contains characters a cookie cannot carry "
                                "(whitespace, control characters, ';', ',', '\\' or '\"')",
                                hint="copy the token again from https://auth.mast.stsci.edu/token")
    return token


def redact(text: str, *tokens: str | None) -> str:
    """``text`` with every occurrence of each token replaced by ``***``.

    Parameters
    ----------
    text : str
        Any text that may have met a token (an error message, a URL, a header dump).
    *tokens : str or None
        Secrets to remove; None and empty strings are ignored.

    Returns
    -------
    str
    """
    for token in tokens:
        if token:
            text = text.replace(token, _MASK)
    return text


class RedactingFilter(logging.Filter):
    """A logging filter that removes tokens from records before any handler formats them.

    Besides the ``tokens`` given, it removes every token this process has read through
    :func:`discover_token` or checked with :func:`check_token`.

    Attach it to handlers (``handler.addFilter(RedactingFilter(token))``); it rewrites the
    record's message and drops its args, so even a ``%r`` of an object holding the token is clean.

    Parameters
    ----------
    *tokens : str or None
        Secrets to remove.
    """

    def __init__(self, *tokens: str | None) -> None:
        super().__init__()
        self.tokens = tuple(t for t in tokens if t)

    def filter(self, record: logging.LogRecord) -> bool:  # noqa: A003 - logging's API
        tokens = (*self.tokens, *_KNOWN)
        if tokens:
            message = record.getMessage()
            record.msg = redact(message, *tokens)
            record.args = None
            if record.exc_info and not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            if record.exc_text:
                record.exc_text = redact(record.exc_text, *tokens)
        return True


def _keyring() -> Any | None:
    """The keyring module, or None when it is not installed."""
    try:
        import keyring  # imported lazily: optional, and slow to import
    except Exception:  # noqa: BLE001 - a broken keyring install must not stop a public download
        return None
    return keyring


def discover_token(environ: dict[str, str] | None = None) -> str | None:
    """The token from ``MAST_API_TOKEN``, else the keyring, else None.

    Parameters
    ----------
    environ : mapping, optional
        Environment to read (default ``os.environ``), injectable for tests.

    Returns
    -------
    str or None
        The token, stripped of surrounding whitespace, or None when none is configured. A
        keyring with no usable backend counts as "none configured".
    """
    env = os.environ if environ is None else environ
    token = (env.get(ENV_VAR) or "").strip()
    if token:
        return _remember(token)
    keyring = _keyring()
    if keyring is None:
        return None
    try:
        stored = keyring.get_password(KEYRING_SERVICE, KEYRING_USERNAME)
    except Exception:  # noqa: BLE001 - NoKeyringError, locked or absent backends
        return None
    return _remember(stored.strip()) if stored and stored.strip() else None


def store_token(token: str) -> None:
    """Keep ``token`` in the keyring where astroquery also looks (for ``mastpipe login``).

    Parameters
    ----------
    token : str
        The MAST API token.

    Raises
    ------
    AuthError
        When keyring is not installed or has no usable backend (message never contains the token).
    """
    keyring = _keyring()
    if keyring is None:
        raise AuthError(
            "cannot store the token: the 'keyring' package is not installed",
            hint=f"pip install keyring, or set {ENV_VAR} in the environment instead",
        )
    try:
        keyring.set_password(KEYRING_SERVICE, KEYRING_USERNAME, token)
    except Exception as exc:  # noqa: BLE001
        raise AuthError(
            f"cannot store the token in the keyring: {redact(str(exc), token)}",
            hint=f"set {ENV_VAR} in the environment instead",
        ) from None


def check_token(base_url: str, token: str, session: requests.Session | None = None,
                timeout: float = 30.0, insecure: bool = False) -> dict[str, Any]:
    """Ask MAST's ``/whoami`` whether ``token`` is valid, once.

    Parameters
    ----------
    base_url : str
        The MAST server, e.g. ``"https://mast.stsci.edu"`` (no trailing slash needed).
    token : str
        The token, sent only as the ``mast_token`` cookie of this one request.
    session : requests.Session, optional
        Session to use; a fresh one by default. Its cookie jar is not modified.
    timeout : float
        Seconds before giving up.
    insecure : bool
        Do not check the server's TLS certificate (``--insecure``; the caller warns).

    Returns
    -------
    dict
        The ``/whoami`` answer (``ezid``, ``attrib.display_name``, ``scopes`` ...) with its
        ``token`` field removed.

    Raises
    ------
    TokenRefusedError
        When the server answers ``anon: true`` (invalid or expired token), or the token holds
        characters no cookie can carry (exit 2).
    TokenCheckError
        When the server is unreachable, its certificate fails the check, or it answers
        something that is not JSON (exit 3).
    CABundleError
        When ``REQUESTS_CA_BUNDLE`` (or ``CURL_CA_BUNDLE``) names no usable PEM bundle (exit 2;
        not an :class:`AuthError`: the token is not at fault, and no request is made).

    Both token errors are :class:`AuthError`; no message contains the token.
    """
    require_cookie_safe(_remember(token) or "")
    url = base_url.rstrip("/") + "/whoami"
    check_ca_bundle(url, insecure=insecure)
    own = session is None
    session = session or requests.Session()
    try:
        response = session.get(
            url,
            headers={"Accept": "application/json", "Cookie": f"mast_token={token}"},
            timeout=timeout,
            allow_redirects=False,  # a redirect could carry the cookie to another host
            **request_options(insecure),
        )
        info = response.json()
    except (requests.RequestException, ValueError) as exc:
        bad_certificate = certificate_error(exc)
        if bad_certificate is not None:
            raise TokenCheckError(f"could not check the MAST token: {describe(url, bad_certificate)}",
                                  hint=FIX) from None
        raise TokenCheckError(
            f"could not check the MAST token at {url}: {redact(str(exc), token)}"
        ) from None
    finally:
        if own:
            session.close()
    if not isinstance(info, dict) or info.get("anon", True):
        raise TokenRefusedError(
            "the MAST token was not accepted (MAST answers anonymous): it is invalid or expired",
            hint=f"create a new token at {TOKEN_PAGE} and put it in {ENV_VAR} "
            "or in the keyring with 'mastpipe login'",
        )
    info.pop("token", None)  # /whoami may echo a token; nothing downstream needs it
    return info
