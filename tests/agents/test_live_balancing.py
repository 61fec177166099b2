"""Load balancing end to end: the latency-aware balancer and outlier detection on a live agent.

Three backends behind one service; DestinationRules are edited live and the agent's balancer
decisions are read off which backend answered.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from tests.agents.live_support import (
    HOST,
    Backend,
    Live,
    backends,
    eventually,
    free_port,
    hello_mesh,
    live_agent,
    subsets_rule,
    write_atomically,
)

ROUND_ROBIN = "    loadBalancer: {simple: ROUND_ROBIN}\n"
LATENCY_AWARE = "    pilotfish.io/load-balancer: latency-aware\n"
OUTLIERS = """\
    loadBalancer: {simple: ROUND_ROBIN}
    outlierDetection:
      consecutive5xxErrors: 3
      interval: 100ms
      baseEjectionTime: 1s
      maxEjectionPercent: 100
"""
CLIENTS = 6
PER_CLIENT = 50


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[tuple[Live, dict[str, Backend], Path]]:
    port = free_port()
    async with backends("fast-1", "fast-2", "slow") as running:
        config = tmp_path / "config"
        config.mkdir()
        (config / "mesh.yaml").write_text(hello_mesh(port, running))
        rule = config / "rule.yaml"
        rule.write_text(subsets_rule([], ROUND_ROBIN))
        async with live_agent(config, port) as live:
            yield live, running, rule


def cluster_name(live: Live) -> str:
    return f"outbound|{live.port}||{HOST}"


async def spread(live: Live) -> Counter[str]:
    """Which backend answered each of CLIENTS x PER_CLIENT requests, sent concurrently."""
    answered: Counter[str] = Counter()

    async def one() -> None:
        client = live.client(HOST)
        try:
            for _ in range(PER_CLIENT):
                response = await client.request("/")
                assert response.status == 200
                answered[response.backend] += 1
        finally:
            await client.close()

    await asyncio.gather(*(one() for _ in range(CLIENTS)))
    return answered


async def test_latency_aware_moves_load_off_the_slow_backend_where_round_robin_does_not(
    mesh: tuple[Live, dict[str, Backend], Path],
) -> None:
    live, running, rule = mesh
    running["slow"].delay = 0.05
    total = CLIENTS * PER_CLIENT

    def lb_kind() -> str:
        table = live.agent.table
        entry = table.cluster(cluster_name(live)) if table is not None else None
        return "" if entry is None else str(entry.lb.kind)

    assert lb_kind() == "round_robin"
    round_robin = await spread(live)
    assert sum(round_robin.values()) == total
    assert abs(round_robin["slow"] - total / 3) <= total * 0.05, round_robin

    write_atomically(rule, subsets_rule([], annotations=LATENCY_AWARE))
    await eventually(lambda: lb_kind() == "latency_aware")
    latency_aware = await spread(live)
    assert sum(latency_aware.values()) == total
    assert latency_aware["slow"] < total * 0.10, latency_aware
    assert latency_aware["fast-1"] > 0 and latency_aware["fast-2"] > 0


async def test_a_backend_answering_503_is_ejected_and_comes_back_after_the_ejection_time(
    mesh: tuple[Live, dict[str, Backend], Path],
) -> None:
    live, running, rule = mesh
    write_atomically(rule, subsets_rule([], OUTLIERS))

    def detecting() -> bool:
        table = live.agent.table
        entry = table.cluster(cluster_name(live)) if table is not None else None
        return entry is not None and entry.outlier is not None

    await eventually(detecting)
    bad = running["slow"]
    bad.status = 503
    client = live.client(HOST)
    try:
        with capture_logs() as logs:
            answered: Counter[tuple[int, str]] = Counter()
            for _ in range(30):
                response = await client.request("/")
                answered[response.status, response.backend] += 1
            ejected_at = time.monotonic()
            # Istio's default retry policy hides the 503s: the retry goes to another host
            assert set(answered) == {(200, "fast-1"), (200, "fast-2")}
            assert len(bad.seen) == 3
            (ejection,) = [e for e in logs if e["event"] == "endpoint_ejected"]
            assert (ejection["cluster"], ejection["endpoint"]) == (
                cluster_name(live),
                f"127.0.0.1:{bad.port}",
            )
            snapshot = {
                entry["port"]: entry["ejected"]
                for entry in live.agent.table.cluster(cluster_name(live)).balancer.snapshot()
            }
            assert snapshot == {b.port: b is bad for b in running.values()}

            bad.status = 200
            while len(bad.seen) == 3:
                response = await client.request("/")
                assert response.status == 200
                await asyncio.sleep(0.01)
            assert time.monotonic() - ejected_at >= 0.9
            assert [e["event"] for e in logs if e["event"].startswith("endpoint_")] == [
                "endpoint_ejected",
                "endpoint_returned",
            ]
        back = Counter([(await client.request("/")).backend for _ in range(30)])
        assert back == {"fast-1": 10, "fast-2": 10, "slow": 10}
    finally:
        await client.close()


async def test_latency_aware_gives_a_backend_that_recovered_its_share_back(
    mesh: tuple[Live, dict[str, Backend], Path],
) -> None:
    live, running, rule = mesh
    decay = "    pilotfish.io/latency-decay: 300ms\n"
    write_atomically(rule, subsets_rule([], annotations=LATENCY_AWARE + decay))

    def decay_applied() -> bool:
        table = live.agent.table
        entry = table.cluster(cluster_name(live)) if table is not None else None
        return entry is not None and entry.lb.kind == "latency_aware" and entry.lb.decay == 0.3

    await eventually(decay_applied)
    total = CLIENTS * PER_CLIENT
    running["slow"].delay = 0.05
    assert (await spread(live))["slow"] < total * 0.10
    running["slow"].delay = 0.0

    async def recovered() -> bool:
        return (await spread(live))["slow"] >= total * 0.2

    await eventually(recovered, timeout=15)
