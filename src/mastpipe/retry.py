"""When to retry an HTTP request, and how long to wait first.

Pure functions and one frozen policy object; nothing here sleeps or talks to the network, so the
same policy serves product-list requests and file transfers and is unit-tested without a server.

Design of the "absurd Retry-After" case: :meth:`RetryPolicy.delay` raises
:class:`RetryAfterTooLong` (a :class:`ValueError`) when the server asks for a wait longer than
``retry_after_cap``. Callers catch it and fail the request at once with a message that names the
requested wait, instead of sleeping for hours (field notes, reliability scenario 7).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

__all__ = [
    "RetryAfterTooLong",
    "RetryPolicy",
    "is_permanent_status",
    "is_transient_status",
    "parse_retry_after",
]

#: Statuses worth another try: the server is busy, throttling or briefly broken.
TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


class RetryAfterTooLong(ValueError):
    """The server's ``Retry-After`` asks for a longer wait than the policy allows.

    Attributes
    ----------
    seconds : float
        The wait the server asked for.
    cap : float
        The policy's ``retry_after_cap``.
    """

    def __init__(self, seconds: float, cap: float) -> None:
        super().__init__(
            f"server asked to retry after {seconds:.0f} s, more than the {cap:.0f} s allowed"
        )
        self.seconds = seconds
        self.cap = cap


def is_transient_status(code: int) -> bool:
    """Whether an HTTP status is worth retrying (408, 425, 429 and every 5xx).

    Parameters
    ----------
    code : int
        HTTP status code.

    Returns
    -------
    bool
    """
    return code in TRANSIENT_STATUSES or 500 <= code <= 599


def is_permanent_status(code: int) -> bool:
    """Whether an HTTP status means "asking again will not help" (every other 4xx).

    Parameters
    ----------
    code : int
        HTTP status code.

    Returns
    -------
    bool
        True for 400, 401, 403, 404, 405, 410, 416 ...; False for 2xx/3xx and transient codes.
    """
    return 400 <= code <= 499 and not is_transient_status(code)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait according to a ``Retry-After`` header.

    Parameters
    ----------
    value : str or None
        The header: delta-seconds (``"120"``) or an HTTP-date
        (``"Wed, 21 Oct 2015 07:28:00 GMT"``).
    now : datetime, optional
        The current time (aware); defaults to ``datetime.now(timezone.utc)``. Injectable so
        tests do not depend on the clock.

    Returns
    -------
    float or None
        Seconds from ``now`` (0 for a date in the past), or None when the header is absent or
        unparseable, in which case the caller falls back to its own backoff.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        # "nan"/"inf" parse as floats but are not delta-seconds.
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; a naive result means "-0000"
        when = when.replace(tzinfo=timezone.utc)
    now = now or datetime.now(timezone.utc)
    return max(0.0, (when - now).total_seconds())


@dataclass(frozen=True)
class RetryPolicy:
    """How many times to try, and how long to wait between tries.

    Parameters
    ----------
    max_attempts : int
        Total attempts per request or file, the first included (1 = never retry).
    base_delay : float
        Backoff ceiling after the first failure, in seconds; doubles each failure.
    max_delay : float
        Upper bound of the backoff ceiling, in seconds.
    retry_after_cap : float
        Longest ``Retry-After`` honoured; longer ones raise :class:`RetryAfterTooLong`.
    rng : random.Random
        Source of jitter; pass ``random.Random(seed)`` for reproducible delays.
    """

    max_attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0
    retry_after_cap: float = 300.0
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base_delay < 0 or self.max_delay < 0 or self.retry_after_cap < 0:
            raise ValueError("delays must not be negative")

    def backoff_ceiling(self, attempt: int) -> float:
        """The largest backoff after failed attempt number ``attempt`` (1-based).

        Parameters
        ----------
        attempt : int
            How many attempts have failed so far (>= 1).

        Returns
        -------
        float
            ``min(max_delay, base_delay * 2 ** (attempt - 1))``.
        """
        # Cap the exponent: 2 ** 10_000 overflows a float long before it matters.
        exponent = min(max(attempt, 1) - 1, 62)
        return min(self.max_delay, self.base_delay * (2.0**exponent))

    def delay(
        self,
        attempt: int,
        retry_after_header: str | None = None,
        now: datetime | None = None,
    ) -> float:
        """Seconds to wait before the next attempt.

        Without ``Retry-After`` this is "full jitter": uniform in ``[0, backoff_ceiling]``, which
        spreads clients apart after a shared outage. With a usable ``Retry-After`` the server's
        wait is honoured exactly (waiting less would be impolite, more is pointless).

        Parameters
        ----------
        attempt : int
            How many attempts have failed so far (>= 1).
        retry_after_header : str, optional
            The response's ``Retry-After`` header, if any.
        now : datetime, optional
            Current time for HTTP-date headers (see :func:`parse_retry_after`).

        Returns
        -------
        float
            Seconds to sleep.

        Raises
        ------
        RetryAfterTooLong
            When ``Retry-After`` exceeds ``retry_after_cap``: the caller should fail fast.
        """
        asked = parse_retry_after(retry_after_header, now)
        if asked is not None:
            if asked > self.retry_after_cap:
                raise RetryAfterTooLong(asked, self.retry_after_cap)
            return asked
        return self.rng.uniform(0.0, self.backoff_ceiling(attempt))

    def should_retry(self, attempt: int) -> bool:
        """Whether another attempt is allowed after ``attempt`` failures.

        Parameters
        ----------
        attempt : int
            How many attempts have been made so far.

        Returns
        -------
        bool
        """
        return attempt < self.max_attempts
