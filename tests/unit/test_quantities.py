"""Radii, coordinates, dates and durations, parsed without astropy."""

from __future__ import annotations

import datetime as dt
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mastpipe.recipe.quantities import parse_coordinates, parse_duration, parse_radius, to_mjd


@pytest.mark.parametrize("text, degrees", [
    ("0.2 deg", 0.2), ("0.2deg", 0.2), ("1 degree", 1.0), ("2 degrees", 2.0), ("1 d", 1.0), ("1 DEG", 1.0),
    ("5 arcmin", 5 / 60), ("5 amin", 5 / 60), ("5'", 5 / 60),
    ("30 arcsec", 30 / 3600), ("30 asec", 30 / 3600), ('30"', 30 / 3600),
    (".5 deg", 0.5), ("1e-2 deg", 0.01), ("180 deg", 180.0), ("  3 arcsec  ", 3 / 3600),
])
def test_radius(text: str, degrees: float) -> None:
    assert parse_radius(text) == pytest.approx(degrees)


@pytest.mark.parametrize("value, message", [
    (3, 'radius 3 has no unit; write e.g. "3 deg" or "3 arcsec"'),
    (0.5, 'radius 0.5 has no unit; write e.g. "0.5 deg" or "0.5 arcsec"'),
    (True, "radius True has no unit"),
    ("3", "cannot read radius '3'; write a number and a unit"),
    ("deg", "cannot read radius 'deg'"),
    ("3 parsec", "unknown angle unit 'parsec' in radius '3 parsec'; use deg, arcmin or arcsec"),
    ("3 rad", "unknown angle unit 'rad'"),
    ("0 deg", "must be greater than 0 and at most 180 deg"),
    ("-1 arcsec", "must be greater than 0"),
    ("181 deg", "at most 180 deg"),
])
def test_bad_radius(value: object, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_radius(value)
    assert str(caught.value).startswith(message) or message in str(caught.value)


@given(st.floats(min_value=1e-3, max_value=648_000, allow_nan=False))
def test_arcsec_radius_is_degrees_over_3600(arcsec: float) -> None:
    assert parse_radius(f"{arcsec!r} arcsec") == pytest.approx(arcsec / 3600)


CRAB = (83.63308333, 22.0145)


@pytest.mark.parametrize("value", [
    "05h34m31.94s +22d00m52.2s", "5h34m31.94s 22d00m52.2s", "05:34:31.94 +22:00:52.2",
    "05 34 31.94 +22 00 52.2", "05h34m31.94s +22°00'52.2\"",
])
def test_sexagesimal_crab(value: str) -> None:
    ra, dec = parse_coordinates(value)
    assert ra == pytest.approx(83.633, abs=1e-3) and dec == pytest.approx(22.0145, abs=1e-4)
    assert (ra, dec) == pytest.approx(CRAB, abs=1e-7)


@pytest.mark.parametrize("value, expected", [
    ("83.633 22.0145", (83.633, 22.0145)), ("83.633, 22.0145", (83.633, 22.0145)),
    ([83.633, 22.0145], (83.633, 22.0145)), ((10, -5), (10.0, -5.0)), ("0 -90", (0.0, -90.0)),
    ("00:00:00 -00:30:00", (0.0, -0.5)),  # the sign of a dec whose degrees are zero
    ("12h00m00s -45d30m00s", (180.0, -45.5)),
])
def test_coordinates(value: object, expected: tuple[float, float]) -> None:
    assert parse_coordinates(value) == pytest.approx(expected)


@pytest.mark.parametrize("value, message", [
    ("here", "cannot read coordinates 'here'"),
    ("83.633", "cannot read coordinates '83.633'"),
    ([1, 2, 3], "coordinates as a list must be two numbers: [ra_deg, dec_deg]"),
    (["a", "b"], "coordinates as a list must be two numbers"),
    ([True, 1], "coordinates as a list must be two numbers"),
    (5, "coordinates must be text"),
    ("360 0", "coordinates out of range"),
    ("10 91", "coordinates out of range"),
    ("05h61m00s +22d00m00s", "minutes and seconds must be below 60"),
    ("nan 5", "cannot read coordinates 'nan 5'"),
    ([float("nan"), 5], "coordinates out of range"),
])
def test_bad_coordinates(value: object, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_coordinates(value)
    assert message in str(caught.value)


def _sexagesimal(value: float, unit_marks: str) -> str:
    """``value`` (hours or degrees) as e.g. 05h34m31.940000s, rounded to a microsecond of arc/time."""
    micro = round(abs(value) * 3600 * 1_000_000)
    whole, fraction = divmod(micro, 1_000_000)
    first, rest = divmod(whole, 3600)
    minutes, seconds = divmod(rest, 60)
    a, b, c = unit_marks
    return f"{first:02d}{a}{minutes:02d}{b}{seconds:02d}.{fraction:06d}{c}"


@given(st.floats(min_value=0, max_value=359.99), st.floats(min_value=-89.99, max_value=89.99))
def test_sexagesimal_round_trip(ra: float, dec: float) -> None:
    text = f"{_sexagesimal(ra / 15, 'hms')} {'-' if dec < 0 else '+'}{_sexagesimal(dec, 'dms')}"
    assert parse_coordinates(text) == pytest.approx((ra, dec), abs=1e-8)


@pytest.mark.parametrize("value, mjd", [
    ("2022-01-01", 59580.0), (dt.date(2022, 1, 1), 59580.0), (dt.datetime(2022, 1, 1, 6), 59580.25),
    ("2022-01-01T00:00:00Z", 59580.0), ("2022-01-01 18:00", 59580.75), ("2021-12-31T23:00:00-01:00", 59580.0),
    (dt.datetime(2022, 1, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=1))), 59580.0),
    ("2000-01-01T12:00:00", 51544.5), ("1858-11-17", 0.0), (59580, 59580.0), (59580.5, 59580.5),
])
def test_to_mjd(value: object, mjd: float) -> None:
    assert to_mjd(value) == pytest.approx(mjd, abs=1e-9)


@given(st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2100, 12, 31)))
def test_mjd_counts_days_from_the_epoch(day: dt.date) -> None:
    assert to_mjd(day.isoformat()) == (day - dt.date(1858, 11, 17)).days


@pytest.mark.parametrize("value, message", [
    ("2022-13-01", "cannot read date '2022-13-01'; write an ISO date like 2023-01-31"),
    ("yesterday", "cannot read date 'yesterday'"),
    (True, "a date cannot be true/false"),
    ([2022], "cannot read date [2022]"),
])
def test_bad_dates(value: object, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        to_mjd(value)
    assert message in str(caught.value)


@pytest.mark.parametrize("text, seconds", [
    ("90s", 90), ("30m", 1800), ("12h", 43200), ("1d", 86400), ("2w", 1_209_600), (" 1.5h ", 5400),
])
def test_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("value", ["tomorrow", "1", "1y", "-1d", True, "", "1 d h"])
def test_bad_duration(value: object) -> None:
    with pytest.raises(ValueError, match="cannot read duration"):
        parse_duration(value)


def test_no_nan_sneaks_through() -> None:
    for text in ("nan deg", "inf deg"):
        with pytest.raises(ValueError):
            parse_radius(text)
    assert not math.isnan(parse_radius("1e-300 deg"))
