"""Parsing and determinism of sandbox fault specifications, and parse_scale / parse_tokens."""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime

import pytest

from mastpipe.sandbox import Faults, parse_scale, parse_tokens
from mastpipe.sandbox.faults import ENDPOINTS, KNOBS


def test_parse_roundtrip_and_values():
    f = Faults.parse("download.error_rate=0.3:500/503, download.fail_first=2:429,"
                     "query.executing=3,all.latency=0.1,seed=7")
    assert f.seed == 7
    assert f.value("download", "error_rate") == (0.3, (500, 503))
    assert f.value("download", "fail_first") == (2, 429)
    assert f.value("query", "executing") == 3
    assert f.value("products", "latency") == 0.1  # from all.
    assert f.value("products", "executing") is None
    assert Faults.parse(str(f)).value("download", "error_rate") == (0.3, (500, 503))


def test_defaults():
    f = Faults.parse("download.drop_rate=1,products.max_obsids=4,download.error_rate=0.1,"
                     "download.fail_first=1")
    assert f.value("download", "drop_at") == 0.5
    assert f.value("products", "timeout_delay") == 1.0
    assert f.value("download", "error_rate")[1] == (500, 502, 503, 504)
    assert f.value("download", "fail_first") == (1, 503)
    assert f.retry_after_header("download") == "1"


def test_specific_endpoint_wins_over_all():
    f = Faults.parse("all.latency=2,download.latency=0")
    assert f.value("download", "latency") == 0 and f.value("query", "latency") == 2


def test_empty_and_none():
    assert not Faults.parse("") and not Faults.parse(None) and not Faults()
    f = Faults.parse("download.latency=1")
    assert Faults.parse(f) is f


@pytest.mark.parametrize("spec, words", [
    ("download.bogus=1", ["bogus", "valid knobs", "latency", "row_cap"]),
    ("nowhere.latency=1", ["nowhere", "valid endpoints", "download", "all"]),
    ("latency=1", ["latency", "ENDPOINT"]),
    ("download.latency", ["ENDPOINT.KNOB=VALUE"]),
    ("download.error_rate=2", ["error_rate", "fraction"]),
    ("download.error_rate=0.5:abc", ["error_rate"]),
    ("download.error_rate=0.5:999", ["100..599"]),
    ("download.latency=-1", ["latency", "negative"]),
    ("download.bandwidth=0", ["bandwidth", "positive"]),
    ("download.redirect=ftp://x", ["redirect", "http"]),
    ("seed=x", ["seed"]),
    ("download.drop_at=nan", ["drop_at"]),
])
def test_bad_specs_raise_clear_value_errors(spec, words):
    with pytest.raises(ValueError) as info:
        Faults.parse(spec)
    msg = str(info.value)
    for w in words:
        assert w in msg
    assert "Traceback" not in msg and info.value.__cause__ is None


def test_every_contract_knob_and_endpoint_is_known():
    contract = {"latency", "bandwidth", "error_rate", "fail_first", "throttle_rate", "retry_after",
                "drop_rate", "drop_at", "bad_length_rate", "corrupt_rate", "ignore_range", "bad_range_rate",
                "no_length", "missing", "redirect", "max_obsids", "timeout_delay", "executing",
                "row_cap"}
    assert set(KNOBS) == contract
    assert set(ENDPOINTS) == {"query", "products", "download", "bundle", "whoami",
                              "columnsconfig", "path_lookup", "s3", "all"}


def test_draws_are_deterministic_and_seeded():
    a, b, c = Faults(seed=1), Faults(seed=1), Faults(seed=2)
    da = [a.draw("download", f"u{i}", 1, "drop_rate") for i in range(50)]
    assert da == [b.draw("download", f"u{i}", 1, "drop_rate") for i in range(50)]
    assert da != [c.draw("download", f"u{i}", 1, "drop_rate") for i in range(50)]
    assert all(0 <= x < 1 for x in da)
    assert a.draw("download", "u", 1, "x") != a.draw("download", "u", 2, "x")


def test_hit_rates_are_roughly_right():
    f = Faults.parse("download.drop_rate=0.3")
    hits = sum(f.hit("download", f"uri{i}", 1, "drop_rate") for i in range(2000))
    assert 500 < hits < 700
    assert not f.hit("query", "x", 1, "drop_rate")


def test_attempt_counters_per_endpoint_and_key():
    f = Faults()
    assert [f.next_attempt("download", "a") for _ in range(3)] == [1, 2, 3]
    assert f.next_attempt("download", "b") == 1
    assert f.next_attempt("query", "a") == 1


def test_retry_after_date_form():
    f = Faults.parse("download.retry_after=date:30")
    when = parsedate_to_datetime(f.retry_after_header("download")).timestamp()
    assert 25 < when - time.time() <= 31
    assert Faults.parse("download.retry_after=2.5").retry_after_header("download") == "2.5"


def test_missing_glob():
    f = Faults.parse("download.missing=mast:JWST/*_cal.fits")
    assert f.is_missing("mast:JWST/product/x_cal.fits")
    assert not f.is_missing("mast:HST/product/x_cal.fits")


@pytest.mark.parametrize("text, expected", [("200x5000", (200, 5000)), ("3X4", (3, 4)),
                                            (" 1 x 1 ", (1, 1)), (None, None), ("", None),
                                            ((2, 3), (2, 3))])
def test_parse_scale(text, expected):
    assert parse_scale(text) == expected


@pytest.mark.parametrize("text", ["200", "x5", "0x5", "5x0", "-1x3", "axb", "2x3x4"])
def test_parse_scale_rejects(text):
    with pytest.raises(ValueError, match="NxM|positive"):
        parse_scale(text)


def test_parse_tokens():
    assert parse_tokens(["a=A. User", "b="]) == {"a": "A. User", "b": "MAST User"}
    assert parse_tokens({"t": "N"}) == {"t": "N"}
    with pytest.raises(ValueError, match="TOKEN=NAME"):
        parse_tokens(["nope"])
