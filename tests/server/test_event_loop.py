"""The server's event loop: chosen by name, and uvloop runs grpc.aio and the xDS server."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import grpc
import pytest
from envoy.service.discovery.v3 import discovery_pb2

from controlplane.errors import PilotfishError
from controlplane.server import event_loop
from controlplane.server.control_plane import ControlPlane, ControlPlaneOptions
from controlplane.xds.types import CLUSTER

uvloop = pytest.importorskip("uvloop")
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ADS = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"


def test_auto_and_uvloop_choose_uvloop_where_it_is_installed() -> None:
    assert event_loop.loop_factory("auto") is uvloop.new_event_loop
    assert event_loop.loop_factory("uvloop") is uvloop.new_event_loop
    assert event_loop.loop_factory("asyncio") is asyncio.new_event_loop


def test_auto_falls_back_to_asyncio_without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)
    assert event_loop.loop_factory("auto") is asyncio.new_event_loop
    with pytest.raises(PilotfishError, match="event loop uvloop is not available"):
        event_loop.loop_factory("uvloop")


def test_an_unknown_loop_is_a_clear_error_and_the_coroutine_is_closed() -> None:
    async def main() -> None:
        raise AssertionError("never runs")

    coroutine = main()
    with pytest.raises(PilotfishError, match="unknown event loop 'trio'"):
        event_loop.run(coroutine, "trio")
    assert coroutine.cr_frame is None


def test_the_control_plane_serves_ads_on_uvloop() -> None:
    async def main() -> tuple[str, int, str]:
        loop_type = type(asyncio.get_running_loop()).__module__
        plane = ControlPlane(ControlPlaneOptions(EXAMPLES / "bookinfo", xds_address="127.0.0.1:0"))
        await plane.start()
        try:
            async with grpc.aio.insecure_channel(plane.address) as channel:
                call = channel.stream_stream(ADS)()
                request = discovery_pb2.DiscoveryRequest(type_url=CLUSTER)
                request.node.id = "sidecar-1"
                request.node.cluster = "test"
                await call.write(request.SerializeToString())
                raw = await asyncio.wait_for(call.read(), 10)
                call.cancel()
        finally:
            await plane.stop(grace=0.1)
        response = discovery_pb2.DiscoveryResponse.FromString(raw)
        return loop_type, len(response.resources), response.type_url

    loop_type, count, type_url = event_loop.run(main(), "uvloop")
    assert loop_type.startswith("uvloop")
    assert type_url == CLUSTER
    assert count > 0
