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

A CA bundle variable that names no usable bundle (a missing file, one that cannot be read, one
that holds no PEM certificate) is this machine's configuration, not MAST's fault:
:func:`check_ca_bundle` finds it before any request and says which variable and which file.
"""

from __future__ import annotations

from typing import Any

import logging
import os
import ssl
import warnings
from collections.abc import Mapping
from urllib.parse import urlsplit

from mastpipe.errors import CABundleError

__all__ = [
    "CA_BUNDLE_ENV", "CA_BUNDLE_ENVS", "FIX", "ca_bundle_variable", "certificate_error", "check_ca_bundle",
    "describe", "quiet_urllib3", "request_options", "warn_insecure"
]

log = logging.getLogger(__name__)

CA_BUNDLE_ENV = "REQUESTS_CA_BUNDLE"
#: The variables ``requests`` reads for a CA bundle, first non-empty one wins (as in its
#: ``Session.merge_environment_settings``). ``SSL_CERT_FILE`` is not one: ``requests`` verifies
#: against certifi's bundle unless one of these is set, so OpenSSL's variable is never consulted.
CA_BUNDLE_ENVS = (CA_BUNDLE_ENV, "CURL_CA_BUNDLE")
FIX = (f"if your network inspects TLS with its own certificate authority, set {CA_BUNDLE_ENV} to "
       "that authority's certificate (a PEM file); only on a network you trust, rerun with --insecure")


def ca_bundle_variable(environ: Mapping[str, str] | None = None) -> tuple[str, str] | None:
    """``(variable, path)`` of the CA bundle ``requests`` will use from the environment, or None
    when neither ``REQUESTS_CA_BUNDLE`` nor ``CURL_CA_BUNDLE`` is set (certifi's bundle is used)."""
    env = os.environ if environ is None else environ
    for name in CA_BUNDLE_ENVS:
        if env.get(name):
            return name, env[name]
    return None


def check_ca_bundle(*urls: str, insecure: bool = False, environ: Mapping[str, str] | None = None) -> None:
    """Raise :class:`CABundleError` when the CA bundle ``requests`` would use cannot be used.

    Call it once before the first request of a piece of work (the archive, the token check and
    the downloads each do): without it, ``requests`` fails every HTTPS request with an
    ``OSError`` (missing file) or an ``SSLError`` (no certificate in it) that reads like MAST's
    fault, and the second kind is even retried as a network error.

    Parameters
    ----------
    *urls : str
        The URLs about to be requested. The bundle only matters for HTTPS: when every URL given
        is plain HTTP (the sandbox), nothing is checked, as ``requests`` would not read it.
    insecure : bool
        ``--insecure``: certificates are not checked, the bundle is not read, nothing is checked.
    environ : mapping, optional
        Environment to read (default ``os.environ``, which ``requests`` reads), for tests.

    Raises
    ------
    CABundleError
        (exit 2) When ``REQUESTS_CA_BUNDLE`` (or, if it is unset, ``CURL_CA_BUNDLE``) names a
        path that does not exist, a file that cannot be read, or a file with no PEM
        certificate in it. A directory is accepted: ``requests`` uses it as OpenSSL's hashed
        certificate directory.
    """
    if insecure or (urls and not any(urlsplit(u).scheme.lower() == "https" for u in urls)):
        return
    found = ca_bundle_variable(environ)
    if found is None:
        return
    name, path = found
    hint = (f"unset {name} to use the certificate authorities requests ships with, or point it at "
            "a PEM file of certificate authorities (such as your network's)")
    if not os.path.exists(path):
        raise CABundleError(f"{name} points to {path}, which does not exist", hint=hint)
    if os.path.isdir(path):
        return
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=path)
    except ssl.SSLError as exc:
        raise CABundleError(
            f"{name} points to {path}, which holds no certificate in PEM format ({exc.reason or exc})",
            hint=hint + ": one or more '-----BEGIN CERTIFICATE-----' blocks; a binary (DER) "
                 "certificate converts with `openssl x509 -inform der -in ca.cer -out ca.pem`") from None
    except OSError as exc:
        raise CABundleError(f"{name} points to {path}, which cannot be read ({exc.strerror or exc})",
                            hint=hint) from None


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


def request_options(insecure: bool) -> dict[str, Any]:
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
