"""Outlier detection: failing endpoints are ejected, within limits, and come back."""

from __future__ import annotations

import random
from collections import Counter

import structlog

from agents.balancers import make_balancer
from agents.endpoints import Endpoint
from agents.lb_config import LbConfig, OutlierConfig


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


EPS = tuple(Endpoint(f"10.0.0.{i}", 80) for i in (1, 2, 3))
OUTLIER = OutlierConfig(
    consecutive_5xx=3, interval=1.0, base_ejection_time=5.0, max_ejection_percent=50
)


def serve(balancer, clock: FakeClock, n: int, failing: Endpoint | None) -> Counter[str]:  # type: ignore[no-untyped-def]
    """``n`` requests, one at a time, 10 ms each; ``failing`` answers 503."""
    picked: Counter[str] = Counter()
    for _ in range(n):
        ep = balancer.pick()
        assert ep is not None
        balancer.started(ep)
        clock.now += 0.01
        balancer.finished(ep, 0.01, 503 if ep == failing else 200)
        picked[ep.address] += 1
    return picked


def test_an_endpoint_answering_503_is_ejected_and_comes_back() -> None:
    clock = FakeClock()
    balancer = make_balancer(
        LbConfig(), EPS, OUTLIER, cluster="c", clock=clock, rng=random.Random(1)
    )
    with structlog.testing.capture_logs() as logs:
        first = serve(balancer, clock, 30, failing=EPS[0])
        assert first["10.0.0.1"] == 3
        during = serve(balancer, clock, 300, failing=EPS[0])  # 3 s: still ejected
        assert "10.0.0.1" not in during
        assert [r["address"] for r in balancer.snapshot() if r["ejected"]] == ["10.0.0.1"]
        clock.now += 2.0  # ejected at 0.03 s for 5 s: returns at the 6 s interval tick
        assert "10.0.0.1" not in serve(balancer, clock, 30, failing=None)
        clock.now += 0.5
        after = serve(balancer, clock, 30, failing=None)
        assert after["10.0.0.1"] == 10
    events = [(e["event"], e.get("endpoint"), e.get("reason")) for e in logs]
    assert events == [
        ("endpoint_ejected", "10.0.0.1:80", "consecutive_5xx"),
        ("endpoint_returned", "10.0.0.1:80", None),
    ]
    assert balancer.ejections_total == 1  # type: ignore[attr-defined]
    assert balancer.returns_total == 1  # type: ignore[attr-defined]


def test_ejection_time_grows_with_ejections_and_is_capped() -> None:
    clock = FakeClock()
    config = OutlierConfig(
        consecutive_5xx=1,
        interval=1.0,
        base_ejection_time=5.0,
        max_ejection_time=12.0,
        max_ejection_percent=100,
    )
    balancer = make_balancer(LbConfig(), EPS[:2], config, clock=clock, rng=random.Random(1))
    durations = []
    for _ in range(4):
        while True:
            ep = balancer.pick()
            balancer.started(ep)  # type: ignore[arg-type]
            balancer.finished(ep, 0.0, 503 if ep == EPS[0] else 200)  # type: ignore[arg-type]
            if ep == EPS[0]:
                break
        start = clock.now
        while True:
            clock.now += 0.5
            balancer.pick()
            if not balancer.snapshot()[0]["ejected"]:
                break
        durations.append(clock.now - start)
    assert durations == [5.0, 10.0, 12.0, 12.0]


def test_the_ejection_count_decays_while_the_endpoint_stays_healthy() -> None:
    clock = FakeClock()
    config = OutlierConfig(
        consecutive_5xx=1, interval=1.0, base_ejection_time=5.0, max_ejection_percent=100
    )
    balancer = make_balancer(LbConfig(), EPS[:2], config, clock=clock)
    balancer.finished(EPS[0], 0.0, 500)
    clock.now = 5.0
    balancer.pick()
    clock.now = 7.0  # two healthy intervals: the count 1 decays to 0
    balancer.finished(EPS[0], 0.0, 500)
    assert balancer.snapshot()[0]["ejections"] == 1


def test_no_more_than_max_ejection_percent_of_the_cluster_is_ejected() -> None:
    clock = FakeClock()
    four = (*EPS, Endpoint("10.0.0.4", 80))
    config = OutlierConfig(consecutive_5xx=1, max_ejection_percent=50)
    balancer = make_balancer(LbConfig(), four, config, clock=clock)
    for ep in four:
        balancer.finished(ep, 0.0, 503)
    assert [r["ejected"] for r in balancer.snapshot()] == [True, True, False, False]
    default = make_balancer(LbConfig(), EPS, OutlierConfig(consecutive_5xx=1), clock=clock)
    default.finished(EPS[0], 0.0, 503)  # 1 of 3 is more than Envoy's default 10 %
    assert not any(r["ejected"] for r in default.snapshot())
    one = OutlierConfig(consecutive_5xx=1, always_eject_one_host=True)
    anyway = make_balancer(LbConfig(), EPS, one, clock=clock)
    anyway.finished(EPS[0], 0.0, 503)
    anyway.finished(EPS[1], 0.0, 503)
    assert [r["ejected"] for r in anyway.snapshot()] == [True, False, False]


def test_gateway_failures_count_separately_and_success_resets() -> None:
    clock = FakeClock()
    config = OutlierConfig(
        consecutive_5xx=0,
        consecutive_gateway_failure=2,
        enforcing_consecutive_gateway_failure=100,
        max_ejection_percent=100,
    )
    balancer = make_balancer(LbConfig(), EPS, config, clock=clock)
    balancer.finished(EPS[0], 0.0, 502)
    balancer.finished(EPS[0], 0.0, 500)  # not a gateway error: resets that count
    balancer.finished(EPS[0], 0.0, None)
    assert not balancer.snapshot()[0]["ejected"]
    balancer.finished(EPS[0], 0.0, 504)
    assert balancer.snapshot()[0]["ejected"]
    balancer.finished(EPS[1], 0.0, 503)
    balancer.finished(EPS[1], 0.0, 200)
    balancer.finished(EPS[1], 0.0, 503)
    assert not balancer.snapshot()[1]["ejected"]


def test_enforcement_zero_never_ejects() -> None:
    config = OutlierConfig(consecutive_5xx=1, enforcing_consecutive_5xx=0, max_ejection_percent=100)
    balancer = make_balancer(LbConfig(), EPS, config, clock=FakeClock())
    for _ in range(10):
        balancer.finished(EPS[0], 0.0, 500)
    assert not balancer.snapshot()[0]["ejected"]


def test_an_ejection_survives_a_table_swap_and_ends_on_time() -> None:
    clock = FakeClock()
    config = OutlierConfig(
        consecutive_5xx=1, base_ejection_time=5.0, interval=1.0, max_ejection_percent=100
    )
    old = make_balancer(LbConfig(), EPS, config, clock=clock, rng=random.Random(1))
    old.finished(EPS[0], 0.0, 503)
    new = make_balancer(LbConfig(kind="random"), EPS, config, previous=old, clock=clock)
    assert all(new.pick() != EPS[0] for _ in range(100))
    clock.now = 5.0
    assert sum(new.pick() == EPS[0] for _ in range(300)) > 50
    without = make_balancer(LbConfig(), EPS, None, previous=new, clock=clock)
    assert not any(r["ejected"] for r in without.snapshot())
