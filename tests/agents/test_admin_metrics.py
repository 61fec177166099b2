"""A live agent's /metrics and /clusters against a live control plane on bookinfo."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from agents.admin import AdminServer
from agents.agent import Agent, AgentOptions
from agents.cache import HeldConfig
from agents.errors import ConfigRejected
from agents.node import NodeIdentity
from agents.table import build_table
from agents.xds_client import Resources
from controlplane.xds import CLUSTER, ENDPOINT, LISTENER, ROUTE
from tests.agents.test_metrics import ProxyStats
from tests.agents.test_xds_client_admin import fetch, get
from tests.agents.test_xds_client_agent import FakeBuilder, FakeListeners, complete
from tests.agents.xds_support import (
    FORBIDDEN_SERVICE,
    copy_example,
    eventually,
    fast_backoff,
    start_plane,
)

FORBIDDEN = "outbound|9080||forbidden.bookinfo.svc.cluster.local"
REVIEWS = "outbound|9080||reviews.bookinfo.svc.cluster.local"
Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


class RefusingBuilder(FakeBuilder):
    def __call__(
        self,
        resources: Resources,
        previous: Any | None = None,
        *,
        versions: Mapping[str, str] | None = None,
    ) -> Any:
        if FORBIDDEN in resources[CLUSTER]:
            raise ConfigRejected(f"Cluster {FORBIDDEN}", "lb_policy", "MAGLEV is not supported")
        return super().__call__(resources, previous, versions=versions)


def parse(text: str) -> Samples:
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found


async def scrape(agent: Agent) -> Samples:
    assert agent.admin is not None
    answer = await fetch(agent.admin.port, b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0] == b"HTTP/1.1 200 OK"
    assert f"content-type: {CONTENT_TYPE_LATEST}".encode() in head.split(b"\r\n")
    return parse(body.decode())


def by_type(values: Mapping[str, int]) -> dict[tuple[tuple[str, str], ...], float]:
    return {(("type", kind),): float(count) for kind, count in values.items()}


def versions(held: HeldConfig) -> dict[tuple[tuple[str, str], ...], float]:
    short = {CLUSTER: "CDS", ENDPOINT: "EDS", LISTENER: "LDS", ROUTE: "RDS"}
    return {
        (("type", short[url]), ("version", config.version)): 1.0
        for url, config in held.types.items()
    }


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
async def test_metrics_count_acks_by_type_then_a_nack_and_show_the_versions_in_force(
    tmp_path: Path, delta: bool
) -> None:
    plane = await start_plane(copy_example("bookinfo", tmp_path))
    listeners = FakeListeners()
    agent = Agent(
        AgentOptions(
            plane.address,
            NodeIdentity("a"),
            admin_address="127.0.0.1:0",
            backoff=fast_backoff,
            delta=delta,
        ),
        build_table=RefusingBuilder(),
        listeners=listeners,
    )
    try:
        await agent.start()
        await eventually(lambda: complete(listeners) and agent.client.stats.acks == 4)
        first = await scrape(agent)
        good = agent.held
        (plane.options.config_dir / "forbidden.yaml").write_text(FORBIDDEN_SERVICE)
        await eventually(lambda: agent.client.stats.nacks == 1)
        second = await scrape(agent)
    finally:
        await agent.close()
        await plane.stop(0.1)
    assert first["pilotfish_agent_xds_acks_total"] == by_type(
        {"CDS": 1, "EDS": 1, "LDS": 1, "RDS": 1}
    )
    assert "pilotfish_agent_xds_nacks_total" not in first
    assert first["pilotfish_agent_xds_version_info"] == versions(good)
    assert all(version for (_, (_, version)) in first["pilotfish_agent_xds_version_info"])
    assert first["pilotfish_agent_ready"] == {(): 1.0}
    assert first["pilotfish_agent_config_applies_total"] == {(): 4.0}
    assert first["pilotfish_agent_xds_connects_total"] == {(): 1.0}
    assert first["pilotfish_agent_table_build_seconds_count"] == {(): 4.0}

    assert second["pilotfish_agent_xds_nacks_total"] == by_type({"CDS": 1})
    assert second["pilotfish_agent_xds_acks_total"][(("type", "CDS"),)] == 1.0
    cds = {k: v for k, v in second["pilotfish_agent_xds_version_info"].items() if "CDS" in k[0]}
    assert cds == {(("type", "CDS"), ("version", good.types[CLUSTER].version)): 1.0}
    # The refused build was timed too.
    assert second["pilotfish_agent_table_build_seconds_count"][()] >= 5.0


def endpoint(port: int, **state: Any) -> dict[str, Any]:
    return {
        "address": "127.0.0.1",
        "port": port,
        "weight": 1,
        "priority": 0,
        "locality": "",
        "healthy": True,
        "ejected": False,
        "ejections": 0,
        "in_use": True,
        "outstanding": 0,
        "ewma_ms": 0.0,
        "consecutive_5xx": 0,
        **state,
    }


def cluster(kind: str, lb: str, outlier: bool, *endpoints: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": kind,
        "lb_policy": lb,
        "outlier_detection": outlier,
        "ejections_total": 0,
        "returns_total": 0,
        "pending": [],
        "endpoints": list(endpoints),
    }


def subset(version: int, lb: str) -> dict[str, Any]:
    return cluster("eds", lb, True, endpoint(9210 + version))


async def test_clusters_shows_the_translated_bookinfo_table_and_an_ejection(
    tmp_path: Path,
) -> None:
    plane = await start_plane(copy_example("bookinfo", tmp_path))
    listeners = FakeListeners()
    agent = Agent(
        AgentOptions(
            plane.address, NodeIdentity("a"), admin_address="127.0.0.1:0", backoff=fast_backoff
        ),
        build_table=build_table,
        listeners=listeners,
    )
    try:
        await agent.start()  # returns once every type is in force
        assert agent.admin is not None
        table = agent.table
        status, body = await get(agent.admin.port, "/clusters")
        assert agent.table is table and [x.name for x in table.listeners] == ["127.0.0.1_9080"]
        entry = table.cluster(REVIEWS)
        for _ in range(5):  # the DestinationRule's consecutive5xxErrors
            entry.balancer.started(entry.endpoints[0])
            entry.balancer.finished(entry.endpoints[0], 0.01, 503)
        entry.balancer.started(entry.endpoints[1])
        agent.metrics.request_done(REVIEWS, 503)
        ejected = json.loads((await get(agent.admin.port, "/clusters"))[1])["clusters"][REVIEWS]
        metrics = await scrape(agent)
    finally:
        await agent.close()
        await plane.stop(0.1)
    assert status == 200
    assert json.loads(body) == {
        "version": table.version,
        "clusters": {
            "BlackHoleCluster": cluster("static", "round_robin", False),
            "outbound|9080|v1|reviews.bookinfo.svc.cluster.local": subset(1, "least_request"),
            "outbound|9080|v2|reviews.bookinfo.svc.cluster.local": subset(2, "least_request"),
            "outbound|9080|v3|reviews.bookinfo.svc.cluster.local": subset(3, "round_robin"),
            "outbound|9080||details.bookinfo.svc.cluster.local": cluster(
                "eds", "round_robin", False, endpoint(9202)
            ),
            "outbound|9080||productpage.bookinfo.svc.cluster.local": cluster(
                "eds", "ring_hash", False, endpoint(9201)
            ),
            "outbound|9080||ratings.bookinfo.svc.cluster.local": cluster(
                "eds", "round_robin", False, endpoint(9221)
            ),
            REVIEWS: cluster(
                "eds", "least_request", True, endpoint(9211), endpoint(9212), endpoint(9213)
            ),
        },
    }
    assert table.version.startswith("Listener=")
    assert ejected == {
        **cluster(
            "eds",
            "least_request",
            True,
            endpoint(9211, ejected=True, ejections=1, in_use=False),
            endpoint(9212, outstanding=1),
            endpoint(9213),
        ),
        "ejections_total": 1,
    }
    assert metrics["pilotfish_agent_outlier_ejections_total"][(("cluster", REVIEWS),)] == 1.0
    assert metrics["pilotfish_agent_cluster_requests_active"][(("cluster", REVIEWS),)] == 1.0
    assert metrics["pilotfish_agent_requests_total"] == {
        (("cluster", REVIEWS), ("code", "503")): 1.0
    }
    assert metrics["pilotfish_agent_table_ignored"] == {(): float(len(table.ignored))}


async def test_a_page_that_fails_answers_500_and_the_admin_keeps_serving() -> None:
    server = AdminServer("127.0.0.1:0", lambda: True, HeldConfig)

    def broken() -> tuple[int, str, bytes]:
        raise RuntimeError("bug")

    server.add_page("/broken", broken)
    await server.start()
    try:
        assert await get(server.port, "/broken") == (
            500,
            b"internal error, see the agent's log\n",
        )
        assert await get(server.port, "/ready") == (200, b"ready\n")
        assert await get(server.port, "/clusters") == (
            200,
            b'{\n "version": "",\n "clusters": {}\n}\n',
        )
        assert (await get(server.port, "/metrics"))[0] == 404  # no metrics given
    finally:
        await server.close()


class CountingListeners(FakeListeners):
    def __init__(self) -> None:
        super().__init__()
        self.stats = ProxyStats()


async def test_an_agent_exports_its_listeners_counts_and_reports_not_ready_before_start() -> None:
    listeners = CountingListeners()
    metrics = Agent(
        AgentOptions("127.0.0.1:1", NodeIdentity("a"), backoff=fast_backoff),
        build_table=FakeBuilder(),
        listeners=listeners,
    ).metrics
    listeners.stats.responses[("", 404)] += 1
    metrics.request_done("", 404)
    samples = parse(metrics.render().decode())
    assert samples["pilotfish_agent_requests_total"] == {(("cluster", ""), ("code", "404")): 2.0}
    assert samples["pilotfish_agent_ready"] == {(): 0.0}
    assert "pilotfish_agent_xds_version_info" not in samples  # nothing held yet
