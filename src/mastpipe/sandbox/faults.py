"""Deterministic fault injection for the sandbox.

A fault specification is a comma-separated list of ``ENDPOINT.KNOB=VALUE`` items (and an optional
``seed=N``), for example ``"download.drop_rate=0.5,download.drop_at=0.25,seed=3"``.  See
``docs/sandbox-contract.md`` for the table of knobs.

Every random decision is a hash of (fault seed, endpoint, request key, attempt number, knob), so a
test gets the same failures whatever order its threads run in.
"""

from __future__ import annotations

import fnmatch
import hashlib
import threading
from dataclasses import dataclass
from email.utils import formatdate
import time
from typing import Any, Callable

__all__ = ["Faults", "ENDPOINTS", "KNOBS", "DEFAULT_ERROR_CODES"]

#: Endpoints a knob can be attached to; ``all`` applies to every endpoint.
ENDPOINTS = ("query", "products", "download", "bundle", "whoami", "columnsconfig", "path_lookup", "s3", "all")

#: Codes ``error_rate`` picks from when no ``:CODES`` suffix is given.
DEFAULT_ERROR_CODES = (500, 502, 503, 504)


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise ValueError("must be a fraction between 0 and 1")
    return value


def _nonneg_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise ValueError("must not be negative")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise ValueError("must be positive")
    return value


def _nonneg_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("must not be negative")
    return value


def _codes(text: str) -> tuple[int, ...]:
    codes = tuple(int(c) for c in text.split("/") if c.strip())
    if not codes or any(not 100 <= c <= 599 for c in codes):
        raise ValueError("status codes must be integers 100..599 separated by '/'")
    return codes


def _error_rate(text: str) -> tuple[float, tuple[int, ...]]:
    rate, _, codes = text.partition(":")
    return _fraction(rate), (_codes(codes) if codes else DEFAULT_ERROR_CODES)


def _fail_first(text: str) -> tuple[int, int]:
    count, _, code = text.partition(":")
    return _nonneg_int(count), (_codes(code)[0] if code else 503)


def _retry_after(text: str) -> tuple[bool, float]:
    """Return ``(as_http_date, seconds)``."""
    if text.startswith("date:"):
        return True, float(text[5:])
    return False, _nonneg_float(text)


def _base_url(text: str) -> str:
    if not text.startswith(("http://", "https://")):
        raise ValueError("must be an http:// or https:// base URL")
    return text.rstrip("/")


def _glob(text: str) -> str:
    if not text:
        raise ValueError("must be a non-empty glob")
    return text


#: knob name -> parser of its textual value.
KNOBS: dict[str, Callable[[str], Any]] = {
    "latency": _nonneg_float,
    "bandwidth": _positive_float,
    "error_rate": _error_rate,
    "fail_first": _fail_first,
    "throttle_rate": _fraction,
    "retry_after": _retry_after,
    "drop_rate": _fraction,
    "drop_at": _fraction,
    "bad_length_rate": _fraction,
    "corrupt_rate": _fraction,
    "ignore_range": _fraction,
    "bad_range_rate": _fraction,
    "no_length": _fraction,
    "missing": _glob,
    "redirect": _base_url,
    "max_obsids": _nonneg_int,
    "timeout_delay": _nonneg_float,
    "executing": _nonneg_int,
    "row_cap": _nonneg_int,
}

#: Values used when a knob is not set (None = knob inactive).
_DEFAULTS: dict[str, Any] = {"drop_at": 0.5, "timeout_delay": 1.0, "retry_after": (False, 1.0)}


@dataclass(frozen=True)
class _Item:
    endpoint: str
    knob: str
    value: Any
    text: str


class Faults:
    """A parsed, immutable fault specification plus per-key attempt counters.

    Parameters
    ----------
    items : iterable of (endpoint, knob, text), optional
        Knob settings; values are parsed and validated.
    seed : int, optional
        Fault seed mixed into every decision.

    Notes
    -----
    Attempt counters live in the ``Faults`` object, so assigning a new ``Faults`` to a running
    sandbox restarts the counting (``fail_first`` fails the first N attempts again).
    """

    def __init__(self, items=(), seed: int = 0) -> None:
        self.seed = int(seed)
        self._items: dict[tuple[str, str], _Item] = {}
        for endpoint, knob, text in items:
            self._items[(endpoint, knob)] = _parse_item(endpoint, knob, str(text))
        self._attempts: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ parsing
    @classmethod
    def parse(cls, spec: "str | Faults | None") -> "Faults":
        """Parse ``ENDPOINT.KNOB=VALUE[,...]`` (and ``seed=N``) into a :class:`Faults`.

        Raises
        ------
        ValueError
            Naming the offending item, knob or endpoint and listing the valid ones.
        """
        if isinstance(spec, Faults):
            return spec
        if spec is None:
            return cls()
        items, seed = [], 0
        for raw in str(spec).split(","):
            raw = raw.strip()
            if not raw:
                continue
            name, sep, text = raw.partition("=")
            name, text = name.strip(), text.strip()
            if not sep:
                raise ValueError(f"fault item {raw!r} is not of the form ENDPOINT.KNOB=VALUE")
            if name == "seed":
                try:
                    seed = int(text)
                except ValueError:
                    raise ValueError(f"fault seed must be an integer, got {text!r}") from None
                continue
            endpoint, dot, knob = name.partition(".")
            if not dot:
                raise ValueError(
                    f"fault item {raw!r} lacks an endpoint: write ENDPOINT.{name}=VALUE with "
                    f"ENDPOINT one of {', '.join(ENDPOINTS)}"
                )
            items.append((endpoint, knob, text))
        return cls(items, seed=seed)

    def __str__(self) -> str:
        parts = [f"{i.endpoint}.{i.knob}={i.text}" for i in self._items.values()]
        if self.seed:
            parts.append(f"seed={self.seed}")
        return ",".join(parts)

    def __repr__(self) -> str:
        return f"Faults.parse({str(self)!r})"

    def __bool__(self) -> bool:
        return bool(self._items)

    # ------------------------------------------------------------------ lookups
    def value(self, endpoint: str, knob: str, default: Any = None) -> Any:
        """Return the knob's value for ``endpoint`` (specific endpoint wins over ``all``)."""
        item = self._items.get((endpoint, knob)) or self._items.get(("all", knob))
        if item is not None:
            return item.value
        return _DEFAULTS.get(knob, default) if default is None else default

    def is_set(self, endpoint: str, knob: str) -> bool:
        """Whether the knob is configured for ``endpoint`` (directly or via ``all``)."""
        return (endpoint, knob) in self._items or ("all", knob) in self._items

    def next_attempt(self, endpoint: str, key: str) -> int:
        """Count one more request for ``(endpoint, key)`` and return its 1-based attempt number."""
        with self._lock:
            n = self._attempts.get((endpoint, key), 0) + 1
            self._attempts[(endpoint, key)] = n
            return n

    def draw(self, endpoint: str, key: str, attempt: int, knob: str) -> float:
        """Deterministic uniform number in [0, 1) for one decision."""
        text = f"{self.seed}\0{endpoint}\0{key}\0{attempt}\0{knob}".encode()
        return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big") / 2.0**64

    def hit(self, endpoint: str, key: str, attempt: int, knob: str) -> bool:
        """Whether the rate knob ``knob`` fires for this attempt."""
        rate = self.value(endpoint, knob)
        if rate is None:
            return False
        if isinstance(rate, tuple):  # error_rate carries its codes
            rate = rate[0]
        return rate >= 1.0 or self.draw(endpoint, key, attempt, knob) < rate

    def choose(self, endpoint: str, key: str, attempt: int, knob: str, options) -> Any:
        """Deterministically pick one of ``options`` for this attempt."""
        options = list(options)
        return options[int(self.draw(endpoint, key, attempt, knob + "#pick") * len(options))]

    def is_missing(self, uri: str) -> bool:
        """Whether ``uri`` matches the ``download.missing`` glob."""
        pattern = self.value("download", "missing")
        return bool(pattern) and fnmatch.fnmatchcase(uri, pattern)

    def retry_after_header(self, endpoint: str) -> str:
        """The ``Retry-After`` value: seconds, or an HTTP date that far ahead."""
        as_date, seconds = self.value(endpoint, "retry_after")
        if as_date:
            return formatdate(time.time() + seconds, usegmt=True)
        return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"


def _parse_item(endpoint: str, knob: str, text: str) -> _Item:
    if endpoint not in ENDPOINTS:
        raise ValueError(
            f"unknown fault endpoint {endpoint!r} in {endpoint}.{knob}={text}; "
            f"valid endpoints: {', '.join(ENDPOINTS)}"
        )
    parser = KNOBS.get(knob)
    if parser is None:
        raise ValueError(
            f"unknown fault knob {knob!r} in {endpoint}.{knob}={text}; "
            f"valid knobs: {', '.join(KNOBS)}"
        )
    try:
        value = parser(text)
    except ValueError as exc:
        raise ValueError(f"bad value {text!r} for fault knob {endpoint}.{knob}: {exc}") from None
    return _Item(endpoint, knob, value, text)
