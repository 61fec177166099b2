"""What an ADS stream holds while it waits, and what it logs all the same: a server
holds one per proxy (see docs/performance.md, "Where the rest goes")."""

from __future__ import annotations

import asyncio
import gc
import types
from pathlib import Path
from typing import Any

from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from structlog.testing import capture_logs

from controlplane.server import memory, start_xds_server
from controlplane.server.ads import _Stream
from controlplane.xds import CLUSTER, SnapshotCache
from tests.server.support import eventually, read
from tests.xds.resources import NODE, base_mesh

PROJECT = str(Path(__file__).resolve().parents[2] / "controlplane")
CONTEXT = ("stream", "peer", "service", "protocol")
NODE_CONTEXT = ("node_id", "node_cluster", "key")


def cluster_request(nonce: str = "", version: str = "") -> Any:
    request = discovery_pb2.DiscoveryRequest(
        type_url=CLUSTER, response_nonce=nonce, version_info=version
    )
    request.node.CopyFrom(NODE)
    return request


async def test_a_stream_keeps_no_logger_yet_its_lines_carry_the_whole_stream_context(
    cache_and_server, channel
):
    assert "log" not in _Stream.__slots__
    with capture_logs() as logs:
        call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources()
        await call.write(cluster_request())
        await read(call)
        call.cancel()
        await eventually(lambda: any(e["event"] == "xds_stream_closed" for e in logs))
    (connected,) = [e for e in logs if e["event"] == "xds_stream_connected"]
    (closed,) = [e for e in logs if e["event"] == "xds_stream_closed"]
    for line in (connected, closed):
        assert {key: line[key] for key in CONTEXT[1:] + NODE_CONTEXT} == {
            "peer": line["peer"],
            "service": "ADS",
            "protocol": "sotw",
            "node_id": NODE.id,
            "node_cluster": NODE.cluster,
            "key": NODE.cluster,
        }
        assert line["peer"].startswith("ipv4:127.0.0.1:")
    assert connected["stream"] == closed["stream"]


async def test_without_debug_logging_no_per_push_lines_are_made(cache_and_server, channel):
    _, server = cache_and_server
    server.ads.debug = False
    with capture_logs() as logs:
        call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources()
        await call.write(cluster_request())
        first = await read(call)
        await call.write(cluster_request(first.nonce, first.version_info))
        await eventually(lambda: server.ads.stats.acks.get(CLUSTER) == 1)
        call.cancel()
        await eventually(lambda: any(e["event"] == "xds_stream_closed" for e in logs))
    events = [e["event"] for e in logs if e["event"].startswith("xds_")]
    assert events == ["xds_stream_connected", "xds_stream_closed"]


async def test_the_model_loaded_before_the_server_is_housekept_once_it_serves(monkeypatch):
    runs: list[int] = []
    monkeypatch.setattr(memory.Housekeeper, "run", staticmethod(lambda: runs.append(1) or 0))
    server = await start_xds_server(SnapshotCache(lambda node: "app", lambda key: base_mesh()))
    try:
        assert runs == []
        await asyncio.sleep(1.3)  # the housekeeper's delay is 1 s
        assert runs == [1]
    finally:
        await server.stop(0)


async def test_a_waiting_stream_runs_no_task_or_coroutine_of_its_own_beyond_the_handler(
    cache_and_server, channel
):
    def ours() -> list[str]:
        # Live coroutines of the project's code, and tasks that run them, by name.
        gc.collect()
        names = [
            coroutine.__qualname__
            for coroutine in gc.get_objects()
            if isinstance(coroutine, types.CoroutineType)
            and coroutine.cr_code.co_filename.startswith(PROJECT)
        ]
        tasks = [task.get_coro() for task in asyncio.all_tasks()]
        names += [f"task {c.__qualname__}" for c in tasks if isinstance(c, types.CoroutineType)]
        return names

    before = ours()
    calls = []
    for _ in range(3):
        call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources()
        await call.write(cluster_request())
        response = await read(call)
        await call.write(cluster_request(response.nonce, response.version_info))
        calls.append(call)
    _, server = cache_and_server
    await eventually(lambda: server.ads.stream_count == 3)
    await asyncio.sleep(0.1)
    assert sorted(ours()) == sorted([*before, *["AggregatedDiscoveryService.serve_call"] * 3])
    for call in calls:
        call.cancel()
