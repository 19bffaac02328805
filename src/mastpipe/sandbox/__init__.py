"""A local MAST stand-in that unmodified astroquery cannot tell from MAST.

See ``docs/sandbox-contract.md`` for the API other code relies on, and
``mast-protocol.md`` (shared reference) for the HTTP protocol it implements.

Examples
--------
>>> from mastpipe.sandbox import Sandbox, Faults
>>> with Sandbox(seed=0, faults=Faults.parse("download.latency=0.05")) as sb:  # doctest: +SKIP
...     print(sb.url)
"""

from __future__ import annotations

import re
import signal
import ssl
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Mapping
from urllib.parse import quote

from mastpipe.sandbox.catalog import Catalog, FileInfo
from mastpipe.sandbox.faults import Faults
from mastpipe.sandbox.log import Record, RequestLog
from mastpipe.sandbox.server import SandboxHTTPServer

if TYPE_CHECKING:  # pragma: no cover
    from .s3 import S3Side

__all__ = ["Sandbox", "Faults", "Catalog", "FileInfo", "RequestLog", "Record", "serve_forever",
           "parse_scale", "parse_tokens"]

_SCALE = re.compile(r"^\s*(\d+)\s*[xX*]\s*(\d+)\s*$")


def parse_scale(text: "str | tuple[int, int] | None") -> "tuple[int, int] | None":
    """Parse ``"NxM"`` (e.g. ``"200x5000"``) into ``(N, M)``; None or ``""`` gives None.

    Raises
    ------
    ValueError
        If the text is not two positive integers separated by ``x``.
    """
    if text is None or text == "":
        return None
    if isinstance(text, tuple):
        n, m = text
    else:
        match = _SCALE.match(str(text))
        if not match:
            raise ValueError(f"scale must look like NxM (e.g. 200x5000: N observations x M "
                             f"products each), got {text!r}")
        n, m = int(match.group(1)), int(match.group(2))
    if n <= 0 or m <= 0:
        raise ValueError(f"scale needs positive N and M, got {n}x{m}")
    return int(n), int(m)


def parse_tokens(items: "Mapping[str, str] | Iterable[str] | None") -> dict[str, str]:
    """Turn ``{"tok": "Name"}`` or ``["tok=Name", ...]`` into a token -> display name dict.

    Raises
    ------
    ValueError
        For an item without ``=`` or with an empty token.
    """
    if not items:
        return {}
    if isinstance(items, Mapping):
        return {str(k): str(v) for k, v in items.items()}
    out = {}
    for item in items:
        token, sep, name = str(item).partition("=")
        if not sep or not token:
            raise ValueError("token must be given as TOKEN=NAME (e.g. good-token=A. User)")
        out[token] = name or "MAST User"
    return out


class Sandbox:
    """A running local MAST, usable as a context manager.

    Parameters
    ----------
    seed : int
        Catalogue seed (sizes, times, file contents).
    faults : Faults or str, optional
        Fault specification (may be replaced later through :attr:`faults`).
    tokens : mapping of token -> display name, optional
        Valid ``mast_token`` values.
    row_cap : int
        Rows after which results are silently truncated (the ``row_cap`` knob overrides it).
    scale : tuple of (int, int) or str, optional
        Add program 9999 with N observations x M products.
    host, port : str, int
        Address to bind (port 0 picks a free port).
    log_path : str or Path, optional
        Also append every request record to this JSONL file.
    ssl_context : ssl.SSLContext, optional
        Serve HTTPS with this server-side context (its certificate and key loaded); the URL
        then starts with ``https://``. For testing what clients do with certificates.
    s3 : bool
        Also serve MAST's public cloud bucket ``stpubdata`` from a real S3 server on loopback
        (moto's, from the ``test`` extra): :attr:`s3` is then an :class:`~.s3.S3Side` whose
        ``endpoint`` clients use as their S3 endpoint URL. See :mod:`mastpipe.sandbox.s3`.
    """

    def __init__(self, seed: int = 0, faults: "Faults | str | None" = None,
                 tokens: "Mapping[str, str] | Iterable[str] | None" = None, row_cap: int = 50_000,
                 scale: "tuple[int, int] | str | None" = None, host: str = "127.0.0.1",
                 port: int = 0, log_path: "str | Path | None" = None,
                 ssl_context: "ssl.SSLContext | None" = None, s3: bool = False) -> None:
        self.seed = seed
        self.faults = Faults.parse(faults)
        self.tokens = parse_tokens(tokens)
        self.row_cap = int(row_cap)
        self.catalog = Catalog(seed=seed, scale=parse_scale(scale))
        self.log = RequestLog(log_path)
        self._host, self._port = host, port
        self._ssl_context = ssl_context
        self._server: SandboxHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._want_s3 = s3
        #: The cloud bucket (``Sandbox(s3=True)``), or None.
        self.s3: "S3Side | None" = None

    @property
    def faults(self) -> Faults:
        """The active :class:`Faults`; assign a ``Faults`` or a spec string to change them."""
        return self._faults

    @faults.setter
    def faults(self, value: "Faults | str | None") -> None:
        self._faults = Faults.parse(value)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "Sandbox":
        """Bind and start serving in a background thread."""
        if self._server is None:
            self._server = SandboxHTTPServer((self._host, self._port), self, self._ssl_context)
            self._thread = threading.Thread(target=self._server.serve_forever,
                                            kwargs={"poll_interval": 0.05},
                                            name="mastpipe-sandbox", daemon=True)
            self._thread.start()
        if self._want_s3:
            self.start_s3()
        return self

    def start_s3(self) -> "S3Side":
        """Start serving the cloud bucket (as ``Sandbox(s3=True)`` does at start) and return it."""
        if self.s3 is None:
            from .s3 import S3Side  # moto and boto3: only when a bucket is wanted

            self.s3 = S3Side(self, host=self._host)
        return self.s3

    def stop(self) -> None:
        """Stop serving and release the port."""
        if self.s3 is not None:
            self.s3.stop()
            self.s3 = None
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server.close_connections()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self.log.wait_quiet(timeout=5)
        self.log.close()

    def __enter__(self) -> "Sandbox":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ addresses
    @property
    def url(self) -> str:
        """``http://HOST:PORT`` (``https://`` when serving TLS; no trailing slash)."""
        if self._server is None:
            raise RuntimeError("the sandbox is not running; use it as a context manager or call start()")
        host, port = self._server.server_address[:2]
        if ":" in host:
            host = f"[{host}]"
        scheme = "https" if self._ssl_context is not None else "http"
        return f"{scheme}://{host}:{port}"

    @property
    def connections(self) -> int:
        """TCP connections accepted so far, including those that never got to a request (a
        client refusing the TLS certificate): what the request log cannot show."""
        return self._server.connections_accepted if self._server is not None else 0

    def download_url(self, uri: str) -> str:
        """The MAST download URL of ``uri`` on this sandbox (as astroquery builds it)."""
        return f"{self.url}/api/v0.1/Download/file?uri={quote(uri, safe=':/')}"

    def __repr__(self) -> str:
        where = self.url if self._server else "stopped"
        return f"<Sandbox {where} seed={self.seed} faults={str(self.faults)!r}>"


def serve_forever(host: str = "127.0.0.1", port: int = 0, seed: int = 0,
                  scale: "tuple[int, int] | str | None" = None, faults: "Faults | str | None" = None,
                  tokens: "Mapping[str, str] | Iterable[str] | None" = None,
                  log_path: "str | Path | None" = None, row_cap: int = 50_000,
                  ssl_context: "ssl.SSLContext | None" = None, s3: bool = False) -> None:
    """Run a sandbox in the foreground until SIGINT (Ctrl-C) or SIGTERM.

    The URL is printed (and flushed) as the first line of stdout so a parent process can read it;
    with ``s3=True`` the S3 endpoint follows on the second line.
    Invalid ``scale``/``faults``/``tokens`` raise ``ValueError`` before anything is bound.
    """
    sandbox = Sandbox(seed=seed, faults=faults, tokens=tokens, row_cap=row_cap, scale=scale,
                      host=host, port=port, log_path=log_path, ssl_context=ssl_context, s3=s3)
    stop = threading.Event()

    def _on_signal(signum, frame):
        stop.set()

    # Both signals get a handler of our own: a process started in the background by a
    # non-interactive shell inherits SIGINT *ignored*, and Python then never raises
    # KeyboardInterrupt, so `kill -INT` would leave the sandbox running.
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    with sandbox:
        print(sandbox.url, flush=True)
        if sandbox.s3 is not None:
            print(sandbox.s3.endpoint, flush=True)
        try:
            while not stop.wait(0.5):
                pass
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    sys.stdout.flush()
