"""TLS certificates: checked by default, unchecked only when asked for, and then loudly.

Every connection mastpipe opens (astroquery's searches, downloads, the token check) verifies the
server's certificate against the system's authorities, or against the bundle named by
``REQUESTS_CA_BUNDLE``, which ``requests`` reads: that is the fix on networks that inspect TLS
with an authority of their own. ``--insecure`` (``insecure=True`` in Python) turns checking off
for one run. It is never read from a recipe, which travels between machines and networks; the
run logs one warning saying what is at stake, records it in its report, and urllib3's warning
on every request is replaced by that one message.

A certificate that fails verification is not a passing network fault: it fails at once, with
what to do, instead of being retried.
"""

from __future__ import annotations

import logging
import ssl
import warnings
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

CA_BUNDLE_ENV = "REQUESTS_CA_BUNDLE"
FIX = (f"if your network inspects TLS with its own certificate authority, set {CA_BUNDLE_ENV} to "
       "that authority's certificate (a PEM file); only on a network you trust, rerun with --insecure")


def certificate_error(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate verification failure behind ``exc`` (requests and urllib3 wrap it in
    several layers, through ``args``, ``reason`` and chained exceptions), or None."""
    stack: list[object] = [exc]
    seen: set[int] = set()
    while stack:
        item = stack.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, ssl.SSLCertVerificationError):
            return item
        stack.extend(item.args)
        stack.extend((getattr(item, "reason", None), item.__cause__, item.__context__))
    return None


def describe(url: str, error: ssl.SSLCertVerificationError) -> str:
    """One line: whose certificate failed, and why (OpenSSL's own words)."""
    why = error.verify_message or error.reason or str(error)
    return f"the TLS certificate of {urlsplit(url).netloc or url} could not be verified ({why})"


def request_options(insecure: bool) -> dict[str, bool]:
    """Keyword arguments for one ``requests`` call: ``verify=False`` when ``insecure``.

    Per request, not per session: a session's ``verify`` loses to ``REQUESTS_CA_BUNDLE``. Also
    silences urllib3's per-request warning (see :func:`quiet_urllib3`).
    """
    if not insecure:
        return {}
    quiet_urllib3()
    return {"verify": False}


def quiet_urllib3() -> None:
    """Drop urllib3's warning on every unverified request: :func:`warn_insecure` says it once."""
    import urllib3

    warnings.filterwarnings("ignore", category=urllib3.exceptions.InsecureRequestWarning)


def warn_insecure(url: str) -> None:
    """Say, once per run, what unchecked certificates of ``url`` put at stake."""
    quiet_urllib3()
    if urlsplit(url).scheme != "https":
        log.warning("--insecure has no effect on %s: it is plain HTTP, which is never encrypted", url)
        return
    log.warning("TLS certificate checking is OFF for %s (--insecure): anyone on the network path "
                "can read the MAST token and replace what is downloaded; sizes are still checked, "
                "but a forged file of the right size would not be noticed. Prefer %s=/path/to/ca.pem "
                "when your network uses its own certificate authority.", urlsplit(url).netloc, CA_BUNDLE_ENV)
