"""Angles, coordinates, dates and durations as recipes write them.

These are parsed without astropy on purpose: ``mastpipe validate`` runs in pre-commit hooks and
must start in a fraction of a second, and astropy takes about a second to import. Each parser
raises ``ValueError`` with a message fit to show the user.
"""

from __future__ import annotations

import datetime as _dt
import math
import re

_ANGLE_UNITS = {
    "deg": 1.0, "degree": 1.0, "degrees": 1.0, "d": 1.0,
    "arcmin": 1 / 60, "amin": 1 / 60, "'": 1 / 60,
    "arcsec": 1 / 3600, "asec": 1 / 3600, '"': 1 / 3600,
}
_NUMBER = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
_QUANTITY = re.compile(rf"^\s*({_NUMBER})\s*([A-Za-z'\"]+)\s*$")
_MJD_EPOCH = _dt.datetime(1858, 11, 17, tzinfo=_dt.timezone.utc)


__all__ = ["parse_coordinates", "parse_duration", "parse_radius", "to_mjd"]


def parse_radius(text: object) -> float:
    """``"0.2 deg"``, ``"30 arcsec"``, ``"5 arcmin"`` -> degrees. A bare number is refused.

    A radius without a unit is ambiguous (astroquery takes degrees, MAST's API arcseconds for
    some services), so recipes must say which.
    """
    if isinstance(text, bool) or isinstance(text, (int, float)):
        raise ValueError(f"radius {text!r} has no unit; write e.g. \"{text} deg\" or \"{text} arcsec\"")
    match = _QUANTITY.match(str(text))
    if not match:
        raise ValueError(f"cannot read radius {text!r}; write a number and a unit, e.g. \"0.2 deg\" or \"30 arcsec\"")
    value, unit = float(match.group(1)), match.group(2)
    if unit.lower() not in _ANGLE_UNITS and unit not in _ANGLE_UNITS:
        raise ValueError(f"unknown angle unit {unit!r} in radius {text!r}; use deg, arcmin or arcsec")
    degrees = value * _ANGLE_UNITS.get(unit.lower(), _ANGLE_UNITS.get(unit, 1.0))
    if not 0 < degrees <= 180:
        raise ValueError(f"radius {text!r} must be greater than 0 and at most 180 deg")
    return degrees


def _sexagesimal(text: str, hours: bool) -> float:
    parts = [p for p in re.split(r"[hdms:\s°'\"]+", text.strip()) if p]
    if not 1 <= len(parts) <= 3:
        raise ValueError(f"cannot read {text!r}")
    sign = -1.0 if parts[0].startswith("-") else 1.0
    values = [abs(float(parts[0]))] + [float(p) for p in parts[1:]]
    if any(v >= 60 for v in values[1:]):
        raise ValueError(f"minutes and seconds must be below 60 in {text!r}")
    value = values[0] + sum(v / 60 ** (i + 1) for i, v in enumerate(values[1:]))
    return float(sign * value * (15.0 if hours else 1.0))


def parse_coordinates(value: object) -> tuple[float, float]:
    """ICRS ``(ra, dec)`` in degrees from ``"83.633 22.0145"``, ``[83.633, 22.0145]``,
    ``"05h34m31.94s +22d00m52.2s"`` or ``"05:34:31.94 +22:00:52.2"``.
    """
    if isinstance(value, (list, tuple)):
        if len(value) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            raise ValueError("coordinates as a list must be two numbers: [ra_deg, dec_deg]")
        ra, dec = float(value[0]), float(value[1])
    elif isinstance(value, str):
        tokens = value.replace(",", " ").split()
        if len(tokens) == 2 and all(re.fullmatch(_NUMBER, t) for t in tokens):
            ra, dec = float(tokens[0]), float(tokens[1])
        else:
            halves = re.split(r"\s+(?=[+-]?\d+[d:°\s])", value.strip(), maxsplit=1) if len(tokens) != 6 else \
                [" ".join(tokens[:3]), " ".join(tokens[3:])]
            if len(halves) != 2:
                raise ValueError(f"cannot read coordinates {value!r}; write \"ra dec\" in degrees "
                                 "or sexagesimal like \"05h34m31.9s +22d00m52s\"")
            try:
                ra = _sexagesimal(halves[0], hours=True)
                dec = _sexagesimal(halves[1], hours=False)
            except ValueError as exc:
                raise ValueError(f"cannot read coordinates {value!r}: {exc}") from None
    else:
        raise ValueError("coordinates must be text like \"83.633 22.0145\" or a list [ra, dec]")
    if not (0 <= ra < 360 and -90 <= dec <= 90) or math.isnan(ra) or math.isnan(dec):
        raise ValueError(f"coordinates out of range: ra must be in [0, 360) and dec in [-90, 90], got {ra}, {dec}")
    return ra, dec


def to_mjd(value: object) -> float:
    """A date as MAST stores it (Modified Julian Date) from an MJD number or an ISO date/time.

    ISO times without a zone are taken as UTC (MAST's dates are UTC).
    """
    if isinstance(value, bool):
        raise ValueError("a date cannot be true/false")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, _dt.datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=_dt.timezone.utc)
    elif isinstance(value, _dt.date):
        moment = _dt.datetime(value.year, value.month, value.day, tzinfo=_dt.timezone.utc)
    elif isinstance(value, str):
        try:
            moment = _dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"cannot read date {value!r}; write an ISO date like 2023-01-31 "
                             "or 2023-01-31T12:00:00, or an MJD number") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=_dt.timezone.utc)
    else:
        raise ValueError(f"cannot read date {value!r}")
    return (moment - _MJD_EPOCH).total_seconds() / 86400.0


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_DURATION_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: object) -> float:
    """``"90s"``, ``"30m"``, ``"12h"``, ``"7d"``, ``"2w"`` -> seconds."""
    match = _DURATION.match(str(text)) if not isinstance(text, bool) else None
    if not match:
        raise ValueError(f"cannot read duration {text!r}; write a number and one of s, m, h, d, w, e.g. \"7d\"")
    return float(match.group(1)) * _DURATION_SECONDS[match.group(2)]


_BYTE_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "pb": 10**15,
               "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "pib": 2**50}
_BYTES = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")


def parse_bytes(value: object) -> int:
    """``2000``, ``"500 MB"``, ``"2 TB"``, ``"1.5 GiB"`` -> bytes (KB = 1000, KiB = 1024)."""
    if isinstance(value, bool):
        raise ValueError("a size cannot be true/false")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a size cannot be negative ({value})")
        return value
    if isinstance(value, float):
        if not value >= 0 or math.isinf(value):
            raise ValueError(f"a size must be a finite number of bytes, not {value}")
        return int(value)
    match = _BYTES.match(str(value))
    unit = match.group(2).lower() if match else ""
    if not match or unit not in _BYTE_UNITS and unit != "":
        raise ValueError(f"cannot read size {value!r}; write bytes or a number and a unit, e.g. \"500 GB\" or \"2 TiB\"")
    return int(float(match.group(1)) * _BYTE_UNITS.get(unit, 1))
