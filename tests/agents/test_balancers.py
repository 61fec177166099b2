"""Balancers: distributions, latency awareness, consistency, state carry-over."""

from __future__ import annotations

import heapq
import random
from collections import Counter

import pytest

from agents.balancers import Balancer, make_balancer, stable_hash
from agents.endpoints import Endpoint, Locality
from agents.lb_config import LbConfig, LbKind, OutlierConfig


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def endpoints(*weights: int) -> tuple[Endpoint, ...]:
    return tuple(Endpoint(f"10.0.0.{i + 1}", 8080, weight=w) for i, w in enumerate(weights))


def counts(balancer: Balancer, n: int, hash_keys: bool = False) -> Counter[str]:
    picked: Counter[str] = Counter()
    for i in range(n):
        ep = balancer.pick(i if hash_keys else None)
        assert ep is not None
        picked[ep.address] += 1
    return picked


def test_round_robin_follows_weights_exactly_over_a_period() -> None:
    balancer = make_balancer(LbConfig(), endpoints(1, 2, 3), rng=random.Random(1))
    assert counts(balancer, 600) == {"10.0.0.1": 100, "10.0.0.2": 200, "10.0.0.3": 300}


def test_round_robin_interleaves_instead_of_bursting() -> None:
    balancer = make_balancer(LbConfig(), endpoints(1, 3), rng=random.Random(1))
    sequence = [balancer.pick().address for _ in range(8)]  # type: ignore[union-attr]
    longest = max(
        len(run) for run in "".join("a" if a == "10.0.0.1" else "b" for a in sequence).split("a")
    )
    assert longest <= 3


def test_round_robin_with_equal_weights_rotates() -> None:
    balancer = make_balancer(LbConfig(), endpoints(1, 1, 1), rng=random.Random(3))
    first = [balancer.pick() for _ in range(3)]
    assert sorted(e.address for e in first if e) == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    assert [balancer.pick() for _ in range(3)] == first


@pytest.mark.parametrize("kind", ["random", "least_request", "latency_aware"])
def test_random_choices_follow_weights_within_statistical_bounds(kind: LbKind) -> None:
    balancer = make_balancer(LbConfig(kind=kind), endpoints(1, 3), rng=random.Random(7))
    picked = counts(balancer, 20_000)
    share = picked["10.0.0.2"] / 20_000
    # 0.75 expected; the choice balancers pick idle endpoints by weight too.
    assert 0.73 < share < 0.77


def test_random_with_equal_weights_is_uniform_within_bounds() -> None:
    balancer = make_balancer(LbConfig(kind="random"), endpoints(1, 1, 1, 1), rng=random.Random(2))
    picked = counts(balancer, 40_000)
    assert all(9_500 < c < 10_500 for c in picked.values())


def test_least_request_prefers_the_endpoint_with_fewer_outstanding_requests() -> None:
    eps = endpoints(1, 1)
    balancer = make_balancer(LbConfig(kind="least_request"), eps, rng=random.Random(5))
    for _ in range(5):
        balancer.started(eps[0])
    assert all(balancer.pick() == eps[1] for _ in range(100))
    for _ in range(5):
        balancer.finished(eps[0], 0.01, 200)
    balancer.started(eps[1])
    assert all(balancer.pick() == eps[0] for _ in range(100))


def test_locality_weights_split_traffic_between_localities_first() -> None:
    east, west = Locality("r", "east"), Locality("r", "west")
    eps = (
        Endpoint("10.0.0.1", 80, locality=east, locality_weight=1),
        Endpoint("10.0.0.2", 80, locality=west, locality_weight=3),
        Endpoint("10.0.0.3", 80, locality=west, locality_weight=3),
        Endpoint("10.0.0.4", 80, locality=west, locality_weight=3),
    )
    lb = LbConfig(locality_weighted=True)
    picked = counts(make_balancer(lb, eps, rng=random.Random(1)), 8000)
    assert picked["10.0.0.1"] == 2000
    assert picked["10.0.0.2"] == picked["10.0.0.3"] == picked["10.0.0.4"] == 2000
    without = counts(make_balancer(LbConfig(), eps, rng=random.Random(1)), 8000)
    assert without["10.0.0.1"] == 2000  # four equal endpoints: a quarter each as well
    eps2 = (*eps[:2], Endpoint("10.0.0.9", 80, locality=east, locality_weight=1))
    picked2 = counts(make_balancer(lb, eps2, rng=random.Random(1)), 8000)
    assert picked2["10.0.0.2"] == 6000
    assert picked2["10.0.0.1"] == picked2["10.0.0.9"] == 1000


def test_the_lowest_priority_with_healthy_endpoints_takes_all_traffic() -> None:
    eps = (
        Endpoint("10.0.0.1", 80, priority=0, healthy=False),
        Endpoint("10.0.0.2", 80, priority=1),
        Endpoint("10.0.0.3", 80, priority=1),
        Endpoint("10.0.0.4", 80, priority=2),
    )
    picked = counts(make_balancer(LbConfig(panic_threshold=0), eps, rng=random.Random(1)), 100)
    assert picked == {"10.0.0.2": 50, "10.0.0.3": 50}


def test_no_endpoint_picks_none_and_all_unhealthy_panics_unless_disabled() -> None:
    assert make_balancer(LbConfig(), ()).pick() is None
    sick = (Endpoint("10.0.0.1", 80, healthy=False),)
    assert make_balancer(LbConfig(), sick).pick() == sick[0]
    assert make_balancer(LbConfig(panic_threshold=0), sick).pick() is None


def closed_loop(kind: LbKind, requests: int = 3000, clients: int = 6) -> Counter[str]:
    """Clients each send a request as soon as their previous one finished (simulated time)."""
    clock = FakeClock()
    eps = endpoints(1, 1, 1)
    latency = {eps[0]: 0.010, eps[1]: 0.010, eps[2]: 0.060}
    balancer = make_balancer(LbConfig(kind=kind), eps, clock=clock, rng=random.Random(11))
    pending: list[tuple[float, int, Endpoint]] = []
    picked: Counter[str] = Counter()
    sent = 0

    def send() -> None:
        nonlocal sent
        ep = balancer.pick()
        assert ep is not None
        balancer.started(ep)
        picked[ep.address] += 1
        heapq.heappush(pending, (clock.now + latency[ep], sent, ep))
        sent += 1

    for _ in range(clients):
        send()
    while pending:
        done, _, ep = heapq.heappop(pending)
        clock.now = done
        balancer.finished(ep, latency[ep], 200)
        if sent < requests:
            send()
    return picked


def test_latency_aware_sends_a_slower_endpoint_under_ten_percent() -> None:
    picked = closed_loop("latency_aware")
    assert sum(picked.values()) == 3000
    assert picked["10.0.0.3"] < 300


def test_round_robin_sends_the_slower_endpoint_a_third() -> None:
    picked = closed_loop("round_robin")
    assert picked["10.0.0.3"] == 1000


def test_latency_aware_probes_a_slow_endpoint_again_after_decay() -> None:
    clock = FakeClock()
    eps = endpoints(1, 1)
    balancer = make_balancer(LbConfig(kind="latency_aware", decay=1.0), eps, clock=clock)

    def answer(ep: Endpoint, seconds: float) -> None:
        balancer.started(ep)
        balancer.finished(ep, seconds, 200)

    answer(eps[0], 0.010)
    answer(eps[1], 0.500)
    clock.now += 2.0
    answer(eps[0], 0.010)
    assert all(balancer.pick() == eps[0] for _ in range(50))  # 500 ms * e^-2 = 68 ms
    clock.now += 3.0
    answer(eps[0], 0.010)
    assert balancer.pick() == eps[1]  # 500 ms * e^-5 = 3.4 ms, below 10 ms


def test_latency_aware_does_not_reward_fast_failures() -> None:
    clock = FakeClock()
    eps = endpoints(1, 1)
    balancer = make_balancer(LbConfig(kind="latency_aware"), eps, clock=clock)
    balancer.started(eps[0])
    balancer.finished(eps[0], 0.050, 200)
    balancer.started(eps[1])
    balancer.finished(eps[1], 0.050, 200)
    for _ in range(20):
        balancer.started(eps[1])
        balancer.finished(eps[1], 0.001, 503)
    snapshot = {row["address"]: row for row in balancer.snapshot()}
    assert snapshot["10.0.0.2"]["ewma_ms"] == 50.0


@pytest.mark.parametrize(
    ("kind", "lb"),
    [
        ("ring_hash", LbConfig(kind="ring_hash")),
        ("maglev", LbConfig(kind="maglev", table_size=1021)),
    ],
)
def test_consistent_hashing_keeps_keys_and_remaps_only_the_removed_share(
    kind: str, lb: LbConfig
) -> None:
    eps = endpoints(1, 1, 1, 1, 1)
    before = make_balancer(lb, eps, rng=random.Random(1))
    keys = [stable_hash(f"user-{i}") for i in range(5000)]
    first = [before.pick(k) for k in keys]
    assert [before.pick(k) for k in keys] == first
    spread = Counter(e.address for e in first if e)
    assert all(700 < c < 1300 for c in spread.values()), spread
    after = make_balancer(lb, eps[1:], rng=random.Random(2))
    second = [after.pick(k) for k in keys]
    moved = sum(1 for a, b in zip(first, second, strict=True) if a != b)
    lost = sum(1 for a in first if a == eps[0])
    assert moved >= lost
    assert moved < lost * 1.3 + 100  # about 1/n of keys; maglev moves slightly more


def test_ring_hash_size_follows_weights() -> None:
    balancer = make_balancer(LbConfig(kind="ring_hash"), endpoints(1, 3), rng=random.Random(1))
    picked = counts(balancer, 20_000, hash_keys=False)
    assert 0.68 < picked["10.0.0.2"] / 20_000 < 0.82


def test_maglev_table_follows_weights() -> None:
    lb = LbConfig(kind="maglev", table_size=1021)
    balancer = make_balancer(lb, endpoints(1, 3), rng=random.Random(1))
    table = Counter(e.address for e in (balancer.pick(k) for k in range(1021)) if e)
    assert abs(table["10.0.0.2"] - 766) <= 2


def test_state_carries_over_to_the_next_balancer_for_endpoints_still_present() -> None:
    clock = FakeClock()
    eps = endpoints(1, 1, 1)
    old = make_balancer(LbConfig(kind="latency_aware"), eps, clock=clock)
    old.started(eps[0])
    old.started(eps[0])
    old.started(eps[2])
    old.finished(eps[2], 0.2, 200)
    old.started(eps[2])
    kept = (eps[0], Endpoint("10.0.0.3", 8080, weight=5), Endpoint("10.0.0.9", 8080))
    new = make_balancer(LbConfig(kind="least_request"), kept, previous=old, clock=clock)
    rows = {row["address"]: row for row in new.snapshot()}
    assert rows["10.0.0.1"]["outstanding"] == 2
    assert rows["10.0.0.3"]["outstanding"] == 1
    assert rows["10.0.0.3"]["ewma_ms"] == 200.0
    assert rows["10.0.0.9"]["outstanding"] == 0
    old.finished(eps[0], 0.1, 200)  # a request that started on the old table
    assert {r["address"]: r["outstanding"] for r in new.snapshot()}["10.0.0.1"] == 1


def test_picks_retain_no_memory() -> None:
    import tracemalloc

    balancers = [
        make_balancer(LbConfig(kind=k), endpoints(1, 2, 3), rng=random.Random(1))
        for k in ("round_robin", "random", "least_request", "latency_aware", "ring_hash")
    ]
    for balancer in balancers:
        balancer.pick(12345)
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for balancer in balancers:
        for _ in range(2000):
            balancer.pick(12345)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(
        s.size_diff
        for s in after.compare_to(before, "filename")
        if s.traceback[0].filename.endswith("balancers.py")
    )
    assert grown < 2000


@pytest.mark.parametrize(
    "lb",
    [LbConfig(kind="ring_hash"), LbConfig(kind="maglev", table_size=1021)],
    ids=["ring_hash", "maglev"],
)
def test_an_ejection_moves_only_the_ejected_endpoints_keys_and_a_return_restores_them(
    lb: LbConfig,
) -> None:
    clock = FakeClock()
    eps = endpoints(1, 1, 1, 1)
    outlier = OutlierConfig(
        consecutive_5xx=1, interval=1.0, base_ejection_time=1.0, max_ejection_percent=100
    )
    balancer = make_balancer(lb, eps, outlier, clock=clock, rng=random.Random(1))
    keys = [stable_hash(f"k{i}") for i in range(2000)]
    before = [balancer.pick(k) for k in keys]
    balancer.finished(eps[1], 0.0, 503)
    during = [balancer.pick(k) for k in keys]
    assert eps[1] not in during
    assert [d for b, d in zip(before, during, strict=True) if b != eps[1]] == [
        b for b in before if b != eps[1]
    ]
    moved_to = Counter(d.address for b, d in zip(before, during, strict=True) if b == eps[1] and d)
    assert len(moved_to) == 3  # spread over the others, not all onto one
    clock.now += 2.0
    assert [balancer.pick(k) for k in keys] == before
