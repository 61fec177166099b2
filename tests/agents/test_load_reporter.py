"""The agent's load reports: exact deltas, and a live agent's traffic reaching the control plane."""

from __future__ import annotations

from pathlib import Path

from envoy.config.core.v3 import base_pb2
from envoy.service.load_stats.v3 import lrs_pb2
from google.protobuf import duration_pb2

from agents.agent import Agent, AgentOptions
from agents.load_reporter import LoadReportBuilder
from agents.node import NodeIdentity
from controlplane.server.control_plane import ControlPlane, ControlPlaneOptions
from controlplane.server.grpc_server import XdsServerOptions
from controlplane.xds.load_reports import LoadCounts
from tests.agents.live_support import HOST, Client, backends, eventually, free_port, hello_mesh
from tests.agents.xds_support import fast_backoff


class Counts:
    def __init__(self) -> None:
        self.outcomes: dict[str, tuple[int, int]] = {}
        self.active: dict[str, int] = {}


def builder(counts: Counts) -> LoadReportBuilder:
    return LoadReportBuilder(
        base_pb2.Node(id="agent-1"), lambda: counts.outcomes, lambda: counts.active
    )


def response(interval_ms: int, *clusters: str) -> lrs_pb2.LoadStatsResponse:
    return lrs_pb2.LoadStatsResponse(
        clusters=list(clusters),
        send_all_clusters=not clusters,
        load_reporting_interval=duration_pb2.Duration(nanos=interval_ms * 1_000_000),
    )


def stats(request: lrs_pb2.LoadStatsRequest) -> dict[str, tuple[int, int, int, int]]:
    """Per cluster: (issued, successful, errors, in progress)."""
    result = {}
    for cluster in request.cluster_stats:
        (locality,) = cluster.upstream_locality_stats
        result[cluster.cluster_name] = (
            locality.total_issued_requests,
            locality.total_successful_requests,
            locality.total_error_requests,
            locality.total_requests_in_progress,
        )
    return result


def test_reports_carry_the_traffic_since_the_previous_one_and_add_up() -> None:
    counts = Counts()
    counts.outcomes = {"a": (100, 5)}  # before the server's answer: not reported
    reports = builder(counts)
    assert reports.first_request().node.id == "agent-1"
    assert reports.start(response(500)) == 0.5
    counts.outcomes = {"a": (110, 6)}
    counts.active = {"a": 3}
    assert stats(reports.report(0.5)) == {"a": (14, 10, 1, 3)}
    counts.outcomes = {"a": (113, 6), "b": (2, 0)}
    counts.active = {"a": 0}
    assert stats(reports.report(0.5)) == {"a": (0, 3, 0, 0), "b": (2, 2, 0, 0)}
    assert stats(reports.report(0.5)) == {}


def test_only_the_clusters_the_server_names_are_reported() -> None:
    counts = Counts()
    reports = builder(counts)
    reports.start(response(1000, "b"))
    counts.outcomes = {"a": (1, 0), "b": (2, 1)}
    assert stats(reports.report(1.0)) == {"b": (3, 2, 1, 0)}


def test_a_cluster_whose_counts_went_down_starts_again_from_them() -> None:
    counts = Counts()
    counts.outcomes = {"a": (50, 0)}
    reports = builder(counts)
    reports.start(response(1000))
    counts.outcomes = {"a": (4, 1)}
    assert stats(reports.report(1.0)) == {"a": (5, 4, 1, 0)}


async def test_a_live_agent_reports_the_requests_it_proxied(tmp_path: Path) -> None:
    port = free_port()
    async with backends("hello-1") as running:
        (tmp_path / "mesh.yaml").write_text(hello_mesh(port, running))
        plane = ControlPlane(
            ControlPlaneOptions(
                tmp_path,
                xds_address="127.0.0.1:0",
                debounce=0.05,
                max_delay=0.3,
                server=XdsServerOptions(load_report_interval=0.2),
            )
        )
        await plane.start()
        agent = Agent(
            AgentOptions(
                plane.address,
                NodeIdentity("live", bind_address="127.0.0.1"),
                connect_timeout=10.0,
                backoff=fast_backoff,
            )
        )
        try:
            await agent.start()
            reports = plane.load_reports
            await eventually(lambda: reports.reporters())
            await eventually(lambda: agent.load_reports.interval == 0.2)
            client = Client(port, HOST)
            statuses = [(await client.request("/")).status for _ in range(25)]
            await client.close()
            assert statuses == [200] * 25
            cluster = f"outbound|{port}||{HOST}"

            def reported() -> bool:
                load = reports.totals().get(cluster)
                return load is not None and load.counts.issued >= 25

            await eventually(reported)
            assert reports.totals()[cluster].counts == LoadCounts(
                issued=25, successful=25, errors=0, dropped=0, in_progress=0
            )
        finally:
            await agent.close()
            await plane.stop(0.1)
