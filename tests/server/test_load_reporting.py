"""The Load Reporting Service on the xDS port, driven by a real gRPC client."""

from __future__ import annotations

import asyncio

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import load_report_pb2
from envoy.service.load_stats.v3 import lrs_pb2, lrs_pb2_grpc

from controlplane.server import XdsServer, start_xds_server
from controlplane.server.grpc_server import XdsServerOptions
from controlplane.xds import SnapshotCache
from controlplane.xds.load_reports import LoadCounts
from tests.xds.resources import base_mesh


def report(node: str, issued: int, errors: int, active: int) -> lrs_pb2.LoadStatsRequest:
    message = lrs_pb2.LoadStatsRequest(node=base_pb2.Node(id=node))
    stats = message.cluster_stats.add(cluster_name="outbound|80||a.default.svc.cluster.local")
    stats.upstream_locality_stats.append(
        load_report_pb2.UpstreamLocalityStats(
            total_issued_requests=issued,
            total_successful_requests=issued - errors,
            total_error_requests=errors,
            total_requests_in_progress=active,
        )
    )
    return message


async def start(interval: float) -> XdsServer:
    cache = SnapshotCache(lambda node: node.cluster, lambda key: base_mesh())
    return await start_xds_server(cache, options=XdsServerOptions(load_report_interval=interval))


async def wait_for_issued(server: XdsServer, issued: int) -> LoadCounts:
    for _ in range(200):
        totals = server.load_reports.totals()
        if totals and next(iter(totals.values())).counts.issued == issued:
            return next(iter(totals.values())).counts
        await asyncio.sleep(0.01)
    raise AssertionError(f"never saw {issued} issued: {server.load_reports.totals()}")


async def test_a_reporter_is_told_the_interval_and_its_reports_are_aggregated() -> None:
    server = await start(0.5)
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            call = lrs_pb2_grpc.LoadReportingServiceStub(channel).StreamLoadStats()
            await call.write(lrs_pb2.LoadStatsRequest(node=base_pb2.Node(id="envoy-1")))
            response = await call.read()
            assert response.send_all_clusters is True
            assert response.load_reporting_interval.ToMilliseconds() == 500
            await call.write(report("envoy-1", 10, 1, 4))
            await call.write(report("envoy-1", 5, 0, 2))
            counts = await wait_for_issued(server, 15)
            assert counts == LoadCounts(issued=15, successful=14, errors=1, in_progress=2)
            assert server.load_reports.reporters() != {}
            await call.done_writing()
            await call.wait_for_connection()
            for _ in range(200):
                if not server.load_reports.reporters():
                    break
                await asyncio.sleep(0.01)
            totals = server.load_reports.totals()
            assert [load.counts.in_progress for load in totals.values()] == [0]
            assert [load.counts.issued for load in totals.values()] == [15]
    finally:
        await server.stop(0)


async def test_stopping_the_server_ends_open_report_streams_at_once() -> None:
    server = await start(10.0)
    async with grpc.aio.insecure_channel(server.address) as channel:
        call = lrs_pb2_grpc.LoadReportingServiceStub(channel).StreamLoadStats()
        await call.write(lrs_pb2.LoadStatsRequest(node=base_pb2.Node(id="envoy-1")))
        await call.read()
        await asyncio.wait_for(server.stop(30.0), 5.0)
        assert await call.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE)
