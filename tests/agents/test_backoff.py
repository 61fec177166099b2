"""gRPC connection backoff: 1 s, x1.6, at most 120 s, +/-20 % jitter, reset by a response."""

from __future__ import annotations

import pytest

from agents.backoff import Backoff


def sequence(backoff: Backoff, count: int) -> list[float]:
    return [round(backoff.next_delay(), 6) for _ in range(count)]


def test_without_jitter_the_delays_grow_by_1_6_up_to_120_seconds() -> None:
    backoff = Backoff(random=lambda: 0.5)
    assert sequence(backoff, 13) == [
        1.0,
        1.6,
        2.56,
        4.096,
        6.5536,
        10.48576,
        16.777216,
        26.843546,
        42.949673,
        68.719477,
        109.951163,
        120.0,
        120.0,
    ]


def test_jitter_spreads_each_delay_by_at_most_20_percent() -> None:
    assert sequence(Backoff(random=lambda: 0.0), 3) == [0.8, 1.28, 2.048]
    assert sequence(Backoff(random=lambda: 1.0), 3) == [1.2, 1.92, 3.072]
    capped = Backoff(random=lambda: 1.0)
    assert sequence(capped, 20)[-1] == 144.0


def test_a_response_resets_the_sequence() -> None:
    backoff = Backoff(random=lambda: 0.5)
    sequence(backoff, 5)
    backoff.reset()
    assert sequence(backoff, 2) == [1.0, 1.6]


def test_next_attempt_is_due_on_the_injected_clock() -> None:
    backoff = Backoff(random=lambda: 0.5, clock=lambda: 100.0)
    assert [backoff.next_attempt_at(), backoff.next_attempt_at()] == [101.0, 101.6]


def test_real_random_stays_within_the_jitter_bounds() -> None:
    backoff = Backoff()
    for expected in (1.0, 1.6, 2.56, 4.096):
        assert expected * 0.8 <= backoff.next_delay() <= expected * 1.2


@pytest.mark.parametrize(
    "kwargs",
    [{"initial": 0}, {"multiplier": 0.5}, {"maximum": 0.5}, {"jitter": 1.0}, {"jitter": -0.1}],
)
def test_nonsensical_parameters_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(**kwargs)  # type: ignore[arg-type]
