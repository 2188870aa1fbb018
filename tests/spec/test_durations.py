"""Tests for stageflow.spec.durations: parsing human durations and spelling them back."""

from __future__ import annotations

import math

import pytest

from stageflow.spec.durations import format_duration, parse_duration

# --- parse_duration: accepted forms ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("1ms", 0.001),
        ("10s", 10.0),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("2d", 172800.0),
        ("1h30m", 5400.0),
        ("1d1h1m1s", 86400.0 + 3600.0 + 60.0 + 1.0),
        ("1m30s", 90.0),
        ("1s500ms", 1.5),
        ("1.5h", 5400.0),
        ("0.25s", 0.25),
        ("90s", 90.0),
        ("120m", 7200.0),
    ],
)
def test_parse_string_forms(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds, rel=1e-12, abs=0)


def test_ms_is_not_read_as_minutes_then_seconds() -> None:
    # "5ms" must be five milliseconds, not "5m" followed by a stray "s".
    assert parse_duration("5ms") == pytest.approx(0.005)
    assert parse_duration("5m") == 300.0
    assert parse_duration("5m5s") == 305.0


def test_parse_ignores_surrounding_and_inner_spaces() -> None:
    assert parse_duration("  1h 30m ") == 5400.0
    assert parse_duration("1 h") == 3600.0


def test_repeated_units_add_up() -> None:
    assert parse_duration("1m1m") == 120.0


@pytest.mark.parametrize(("value", "seconds"), [(10, 10.0), (0.25, 0.25), (3600, 3600.0)])
def test_parse_numbers_are_seconds(value: float, seconds: float) -> None:
    result = parse_duration(value)
    assert result == seconds
    assert isinstance(result, float)


# --- parse_duration: errors --------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "10",
        "10x",
        "h",
        "s10",
        "1h30",
        "-5s",
        "1.s",
        ".5s",
        "1e3s",
        "10 S",
        "nan",
        "ten s",
    ],
)
def test_parse_rejects_malformed_strings(text: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_duration(text)
    message = str(info.value)
    assert repr(text) in message
    # The message says which forms are accepted.
    assert "500ms" in message
    assert "1h30m" in message


@pytest.mark.parametrize("value", [None, True, False, [1], {"s": 1}, b"10s"])
def test_parse_rejects_other_types(value: object) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(value)


@pytest.mark.parametrize("value", [0, 0.0, -1, -0.5, "0s", "0ms", "0h0m"])
def test_parse_rejects_zero_and_negative(value: object) -> None:
    with pytest.raises(ValueError, match="greater than zero"):
        parse_duration(value)


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_parse_rejects_non_finite_numbers(value: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        parse_duration(value)


@pytest.mark.parametrize("value", ["9" * 400 + "s", 10**400])
def test_parse_rejects_durations_too_large_for_a_float(value: object) -> None:
    with pytest.raises(ValueError, match="too large"):
        parse_duration(value)


# --- format_duration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (1, "1s"),
        (59, "59s"),
        (60, "1m"),
        (90, "1m30s"),
        (3600, "1h"),
        (5400, "1h30m"),
        (86400, "1d"),
        (90061, "1d1h1m1s"),
        (172800.0, "2d"),
        (0.5, "500ms"),
        (0.001, "1ms"),
        (1.5, "1500ms"),
        (3600.25, "3600250ms"),
    ],
)
def test_format(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize(
    "seconds", [1, 7, 59, 60, 61, 90, 3599, 3600, 3601, 5400, 86399, 86400, 86401, 90061, 1e6]
)
def test_whole_seconds_round_trip_exactly(seconds: float) -> None:
    text = format_duration(seconds)
    assert parse_duration(text) == seconds
    # The spelling is canonical: formatting the parsed value gives the same text.
    assert format_duration(parse_duration(text)) == text


def test_every_millisecond_value_round_trips_through_its_text() -> None:
    for millis in range(1, 20001):
        seconds = millis / 1000
        text = format_duration(seconds)
        assert parse_duration(text) == pytest.approx(seconds, rel=1e-12, abs=0), text
        assert format_duration(parse_duration(text)) == text


def test_every_written_form_round_trips_to_the_same_value() -> None:
    for text in ["500ms", "10s", "5m", "1h30m", "2d", "1d23h59m59s", "250ms"]:
        seconds = parse_duration(text)
        assert parse_duration(format_duration(seconds)) == pytest.approx(seconds, rel=1e-12)


def test_millisecond_round_trip_is_exact() -> None:
    inexact = [
        millis
        for millis in range(1, 2001)
        if parse_duration(format_duration(millis / 1000)) != millis / 1000
    ]
    assert inexact == []


@pytest.mark.parametrize("text", ["1.5ms", "0.4ms"])
def test_format_is_exact_for_sub_millisecond_values(text: str) -> None:
    seconds = parse_duration(text)
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds, rel=1e-9)
    assert parse_duration(format_duration(seconds)) == seconds
    assert format_duration(seconds) == text


@pytest.mark.parametrize(
    ("seconds", "text"), [(1e-05, "0.01ms"), (0.009, "9ms"), (1e6 + 0.5, "1000000500ms")]
)
def test_format_writes_plain_decimals_never_exponents(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == seconds


def test_parse_sums_decimal_parts_exactly() -> None:
    assert parse_duration("9ms") == 0.009
    assert parse_duration("1m0.5s") == 60.5
    assert parse_duration("0.1s0.2s") == 0.3  # not 0.1 + 0.2 == 0.30000000000000004


@pytest.mark.parametrize("seconds", [0, -1.0, math.nan, math.inf])
def test_format_refuses_what_parse_refuses(seconds: float) -> None:
    with pytest.raises(ValueError, match="finite and positive"):
        format_duration(seconds)
