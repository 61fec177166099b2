"""Two worker control planes in one test: whichever is asked answers for both.

Each plane is a real ``ControlPlane`` with a worker slot (its own xDS and HTTP
ports here, since no supervisor holds a shared one; its private sockets in a
shared run directory). A proxy connects to each; every admin answer asked of
worker 0 covers both, and the local-only marker limits it to worker 0.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc

from controlplane.server.control_plane import ControlPlane, ControlPlaneOptions
from controlplane.server.grpc_server import XdsServerOptions
from controlplane.server.peers import LOCAL_ONLY, WorkerSlot
from pilotfish.admin.v1 import admin_pb2, admin_pb2_grpc
from tests.server.test_admin import HELLO, connect

Planes = tuple[ControlPlane, ControlPlane]
CONNECTED = 'pilotfish_proxies_connected{protocol="sotw",role="sidecar",type="ADS",worker="1"} 1.0'


@pytest.fixture
async def planes(tmp_path: Path) -> AsyncIterator[Planes]:
    config = tmp_path / "config"
    config.mkdir()
    shutil.copy(HELLO, config / "hello.yaml")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    started = []
    try:
        for index in (0, 1):
            plane = ControlPlane(
                ControlPlaneOptions(
                    config,
                    xds_address="127.0.0.1:0",
                    admin_address="127.0.0.1:0",
                    server=XdsServerOptions(reuse_port=True),
                    worker=WorkerSlot(index, 2, run_dir),
                )
            )
            await plane.start()
            started.append(plane)
        yield started[0], started[1]
    finally:
        for plane in started:
            await plane.stop(grace=0.1)


async def test_every_admin_call_to_one_worker_answers_for_both(planes: Planes) -> None:
    first, second = planes
    async with (
        grpc.aio.insecure_channel(first.address) as one,
        grpc.aio.insecure_channel(second.address) as two,
    ):
        stub = admin_pb2_grpc.AdminServiceStub(one)
        watch = stub.WatchEvents(admin_pb2.WatchEventsRequest())
        calls = [await connect(one, "sidecar-0"), await connect(two, "sidecar-1")]

        listing = await stub.ListProxies(admin_pb2.ListProxiesRequest())
        assert sorted(p.node_id for p in listing.proxies) == ["sidecar-0", "sidecar-1"]
        mine = await stub.ListProxies(admin_pb2.ListProxiesRequest(), metadata=((LOCAL_ONLY, "1"),))
        assert [p.node_id for p in mine.proxies] == ["sidecar-0"]

        status = await stub.GetStatus(admin_pb2.GetStatusRequest())
        assert [(c.key, c.streams) for c in status.proxy_classes] == [
            (status.proxy_classes[0].key, 2)
        ]

        config = await stub.GetProxyConfig(admin_pb2.GetProxyConfigRequest(node_id="sidecar-1"))
        assert config.proxy.node_id == "sidecar-1"
        assert [t.type_url.rsplit(".", 1)[-1] for t in config.types][:1] == ["Cluster"]
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stub.GetProxyConfig(admin_pb2.GetProxyConfigRequest(node_id="nobody"))
        assert missing.value.code() is grpc.StatusCode.NOT_FOUND
        assert missing.value.details() == "no connected proxy has node id 'nobody'"

        csds = csds_pb2_grpc.ClientStatusDiscoveryServiceStub(one)
        dump = await csds.FetchClientStatus(csds_pb2.ClientStatusRequest())
        assert sorted(c.node.id for c in dump.config) == ["sidecar-0", "sidecar-1"]

        # Both proxies' NACKs arrive on the one watch, whichever worker holds them.
        nacks: set[str] = set()
        while nacks != {"sidecar-0", "sidecar-1"}:
            event = await asyncio.wait_for(watch.read(), 10)
            if event.kind == "nack":
                nacks.add(event.node_id)
        watch.cancel()
        for call in calls:
            call.cancel()


async def test_metrics_of_one_worker_carry_both_labelled_by_worker(planes: Planes) -> None:
    first, second = planes
    async with grpc.aio.insecure_channel(second.address) as two:
        call = await connect(two, "sidecar-1")
        async with aiohttp.ClientSession() as session:

            async def scrape(headers: dict[str, str] | None = None) -> str:
                url = f"http://{first.http_admin.address}/metrics"  # type: ignore[union-attr]
                async with session.get(url, headers=headers) as response:
                    assert response.status == 200
                    return await response.text()

            text = ""

            async def connected_on_worker_1() -> bool:
                nonlocal text
                text = await scrape()
                return CONNECTED in text

            for _ in range(300):
                if await connected_on_worker_1():
                    break
                await asyncio.sleep(0.01)
            assert CONNECTED in text
            assert 'worker="0"' in text
            local = await scrape({LOCAL_ONLY: "1"})
            assert "worker=" not in local
        call.cancel()


async def test_a_worker_whose_peer_is_down_answers_for_itself(planes: Planes) -> None:
    first, second = planes
    async with grpc.aio.insecure_channel(first.address) as one:
        call = await connect(one, "sidecar-0")
        await second.stop(grace=0.1)
        stub = admin_pb2_grpc.AdminServiceStub(one)
        listing = await stub.ListProxies(admin_pb2.ListProxiesRequest(), timeout=10)
        assert [p.node_id for p in listing.proxies] == ["sidecar-0"]
        call.cancel()


def _report(cluster: str, issued: int, errors: int) -> Any:
    from envoy.service.load_stats.v3 import lrs_pb2

    report = lrs_pb2.LoadStatsRequest()
    locality = report.cluster_stats.add(cluster_name=cluster).upstream_locality_stats.add()
    locality.total_issued_requests = issued
    locality.total_successful_requests = issued - errors
    locality.total_error_requests = errors
    return report


async def test_the_dashboard_of_one_worker_shows_the_proxies_and_traffic_of_both(
    planes: Planes,
) -> None:
    from envoy.service.load_stats.v3 import lrs_pb2

    first, second = planes
    for plane, reporter, issued, errors in ((first, "a", 30, 3), (second, "b", 12, 1)):
        plane.load_reports.report(reporter, lrs_pb2.LoadStatsRequest())
        plane.load_reports.report(reporter, _report("static-cluster", issued, errors))
    async with (
        grpc.aio.insecure_channel(first.address) as one,
        grpc.aio.insecure_channel(second.address) as two,
        aiohttp.ClientSession() as session,
    ):
        calls = [await connect(one, "sidecar-0"), await connect(two, "sidecar-1")]

        async def state(headers: dict[str, str] | None = None) -> dict[str, Any]:
            url = f"http://{first.http_admin.address}/dashboard/state"  # type: ignore[union-attr]
            async with session.get(url, headers=headers) as response:
                assert response.status == 200
                document: dict[str, Any] = await response.json()
                return document

        both = await state()
        for _ in range(300):
            if both["proxies"]["total"] == 2:
                break
            await asyncio.sleep(0.01)
            both = await state()
        assert sorted(p["node_id"] for p in both["proxies"]["proxies"]) == [
            "sidecar-0",
            "sidecar-1",
        ]
        [other] = both["traffic"]["other"]
        assert (other["cluster"], other["issued"], other["errors"]) == ("static-cluster", 42, 4)

        mine = await state({LOCAL_ONLY: "1"})
        assert [p["node_id"] for p in mine["proxies"]["proxies"]] == ["sidecar-0"]
        assert [(o["issued"], o["errors"]) for o in mine["traffic"]["other"]] == [(30, 3)]
        for call in calls:
            call.cancel()
