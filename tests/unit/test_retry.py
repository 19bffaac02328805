"""RetryPolicy, Retry-After parsing and status classification (field notes scenarios 7, 8, 9)."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mastpipe.retry import (
    RetryAfterTooLong,
    RetryPolicy,
    is_permanent_status,
    is_transient_status,
    parse_retry_after,
)

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


@pytest.mark.parametrize("code", [408, 429, 500, 502, 503, 504, 599])
def test_transient_statuses(code: int) -> None:
    assert is_transient_status(code)
    assert not is_permanent_status(code)


@pytest.mark.parametrize("code", [400, 401, 403, 404, 405, 410, 416])
def test_permanent_statuses(code: int) -> None:
    assert is_permanent_status(code)
    assert not is_transient_status(code)


@pytest.mark.parametrize("code", [200, 206, 302, 304])
def test_success_is_neither(code: int) -> None:
    assert not is_transient_status(code)
    assert not is_permanent_status(code)


def test_retry_after_seconds() -> None:
    assert parse_retry_after("7", NOW) == 7.0
    assert parse_retry_after(" 0 ", NOW) == 0.0
    assert parse_retry_after("-5", NOW) == 0.0


def test_retry_after_http_date() -> None:
    header = format_datetime(NOW + timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(header, NOW) == pytest.approx(90.0)


def test_retry_after_date_in_past_is_zero() -> None:
    header = format_datetime(NOW - timedelta(hours=1), usegmt=True)
    assert parse_retry_after(header, NOW) == 0.0


@pytest.mark.parametrize("value", [None, "", "soon", "nan", "inf", "Mon, 99 Foo 2020"])
def test_retry_after_unusable(value: str | None) -> None:
    assert parse_retry_after(value, NOW) is None


def test_delay_honours_retry_after_exactly() -> None:
    policy = RetryPolicy(retry_after_cap=60)
    assert policy.delay(1, "12", NOW) == 12.0
    header = format_datetime(NOW + timedelta(seconds=30), usegmt=True)
    assert policy.delay(3, header, NOW) == pytest.approx(30.0)


def test_absurd_retry_after_fails_fast() -> None:
    policy = RetryPolicy(retry_after_cap=60)
    with pytest.raises(RetryAfterTooLong) as info:
        policy.delay(1, "86400", NOW)
    assert info.value.seconds == 86400 and info.value.cap == 60
    assert "86400" in str(info.value)
    header = format_datetime(NOW + timedelta(days=2), usegmt=True)
    with pytest.raises(ValueError):
        policy.delay(1, header, NOW)


def test_backoff_is_exponential_and_capped() -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=10.0)
    assert [policy.backoff_ceiling(a) for a in (1, 2, 3, 4, 5, 6)] == [0.5, 1, 2, 4, 8, 10]
    assert policy.backoff_ceiling(10_000) == 10.0


def test_full_jitter_spreads_within_ceiling() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=8.0, rng=random.Random(1))
    delays = [policy.delay(4) for _ in range(500)]
    assert all(0.0 <= d <= 8.0 for d in delays)
    # full jitter, not a constant: values spread over the whole range
    assert min(delays) < 1.0 and max(delays) > 7.0


def test_injected_rng_is_reproducible() -> None:
    a = RetryPolicy(rng=random.Random(42))
    b = RetryPolicy(rng=random.Random(42))
    assert [a.delay(n) for n in range(1, 6)] == [b.delay(n) for n in range(1, 6)]


def test_unparseable_retry_after_falls_back_to_backoff() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=1.0, rng=random.Random(0))
    assert 0.0 <= policy.delay(1, "whenever", NOW) <= 1.0


def test_should_retry_counts_attempts() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert [policy.should_retry(n) for n in (1, 2, 3, 4)] == [True, True, False, False]


@pytest.mark.parametrize("kwargs", [{"max_attempts": 0}, {"base_delay": -1}, {"retry_after_cap": -1}])
def test_invalid_policy(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)


def test_policy_is_frozen() -> None:
    with pytest.raises(AttributeError):
        RetryPolicy().max_attempts = 9  # type: ignore[misc]


@given(st.integers(min_value=1, max_value=10_000), st.integers(min_value=0, max_value=2**32))
def test_delay_never_exceeds_max(attempt: int, seed: int) -> None:
    policy = RetryPolicy(base_delay=0.25, max_delay=5.0, rng=random.Random(seed))
    assert 0.0 <= policy.delay(attempt) <= 5.0
