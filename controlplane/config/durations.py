"""Istio durations: ``1.5s``, ``100ms``, ``1m30s``, ``2h``.

Istio's YAML accepts Go-style duration strings (a sequence of decimal
numbers, each with a unit: h, m, s, ms, us or µs, ns). Negative durations
are not valid anywhere in the networking API, and neither are durations
longer than Go's (about 292 years).
"""

from __future__ import annotations

import re
from datetime import timedelta

_PART = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|µs|ms|s|m|h)")
_MAX_SECONDS = (2**63 - 1) / 1e9  # Go's time.Duration is int64 nanoseconds
_UNIT_SECONDS = {
    "h": 3600.0,
    "m": 60.0,
    "s": 1.0,
    "ms": 1e-3,
    "us": 1e-6,
    "µs": 1e-6,
    "ns": 1e-9,
}
_cache: dict[str, timedelta | None] = {}


def _seconds(text: str) -> float | None:
    """The seconds ``text`` spells in Go's form, however many; None when it is not that form."""
    position, seconds = 0, 0.0
    for match in _PART.finditer(text):
        if match.start() != position:
            return None
        seconds += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    return seconds if position and position == len(text) else None


def duration_error(text: str) -> str:
    """What is wrong with ``text``, which :func:`parse_duration` refused, for a PF116."""
    if _seconds(text) is not None:
        return (
            f"duration {text!r} is longer than the longest Istio takes, 2562047h (about 292 years)"
        )
    return f"invalid duration {text!r}: write it like 1.5s or 100ms"


def parse_duration(text: str) -> timedelta | None:
    """The duration ``text`` denotes, or None when it is not a valid Istio duration."""
    try:
        return _cache[text]
    except KeyError:
        pass
    seconds = _seconds(text)
    result = timedelta(seconds=seconds) if seconds is not None and seconds <= _MAX_SECONDS else None
    if len(_cache) < 10_000:
        _cache[text] = result
    return result
