"""Istio duration strings (durations.parse_duration)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from controlplane.config.durations import duration_error, parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1s", timedelta(seconds=1)),
        ("0s", timedelta(0)),
        ("1.5s", timedelta(seconds=1.5)),
        (".5s", timedelta(milliseconds=500)),
        ("1.s", timedelta(seconds=1)),
        ("100ms", timedelta(milliseconds=100)),
        ("250us", timedelta(microseconds=250)),
        ("250µs", timedelta(microseconds=250)),
        ("1000ns", timedelta(microseconds=1)),
        ("2m", timedelta(minutes=2)),
        ("2h", timedelta(hours=2)),
        ("1m30s", timedelta(seconds=90)),
        ("1h30m15s", timedelta(hours=1, minutes=30, seconds=15)),
        ("1h1h", timedelta(hours=2)),
        ("1s500ms", timedelta(seconds=1.5)),
        ("2562047h", timedelta(hours=2562047)),
    ],
)
def test_go_style_durations_parse(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "0",
        "1",
        "s",
        "-1s",
        "+1s",
        "1 s",
        " 1s",
        "1s ",
        "1sec",
        "1S",
        "1d",
        "1e3s",
        "1m30",
        "1..5s",
        "1.5.5s",
        "\u0661s",  # ARABIC-INDIC DIGIT ONE
        "\u00b2s",  # SUPERSCRIPT TWO
        "2562048h",
        "100000000000h",
        "9" * 400 + "s",
    ],
)
def test_malformed_negative_and_overlong_durations_are_none(text: str) -> None:
    assert parse_duration(text) is None


def test_results_are_cached_per_text() -> None:
    assert parse_duration("7s") is parse_duration("7s")
    assert parse_duration("7x") is None
    assert parse_duration("7x") is None


def test_a_duration_past_go_s_limit_is_told_apart_from_a_misspelt_one() -> None:
    assert parse_duration("2562048h") is None
    assert duration_error("2562048h") == (
        "duration '2562048h' is longer than the longest Istio takes, 2562047h (about 292 years)"
    )
    assert duration_error("1 day") == "invalid duration '1 day': write it like 1.5s or 100ms"
    assert duration_error("-30s") == "invalid duration '-30s': write it like 1.5s or 100ms"
