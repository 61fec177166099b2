"""Proxy classes live as long as their streams (plus a grace), and their number is bounded."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import struct_pb2
from structlog.testing import capture_logs

from controlplane.server import XdsServer, start_xds_server
from controlplane.server.control_plane import ControlPlane, ControlPlaneOptions
from controlplane.xds import CLUSTER, LISTENER, Snapshot, SnapshotCache
from tests.server.support import eventually, read
from tests.xds.resources import base_mesh

GATEWAY = """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: edge
  namespace: default
spec:
  selector:
    app: edge
  servers:
  - port:
      number: 8080
      name: http
      protocol: HTTP
    hosts: ["*"]
"""


class Builder:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, key: str) -> Snapshot:
        self.calls.append(key)
        return base_mesh()


def node(cluster: str, node_id: str = "proxy", labels: dict[str, str] | None = None) -> Any:
    result = base_pb2.Node(id=node_id, cluster=cluster)
    if labels is not None:
        result.metadata.fields["pilotfish.io/role"].CopyFrom(
            struct_pb2.Value(string_value="gateway")
        )
        result.metadata.fields["labels"].struct_value.update(labels)
    return result


def request(of: Any, type_url: str = CLUSTER) -> Any:
    req = discovery_pb2.DiscoveryRequest(type_url=type_url)
    req.node.CopyFrom(of)
    return req


async def connect(channel: grpc.aio.Channel, of: Any, type_url: str = CLUSTER) -> Any:
    """An ADS stream that has received its first response."""
    call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources()
    await call.write(request(of, type_url))
    await read(call)
    return call


Serve = Callable[..., Any]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start a server over a cache made with the given options; yields (cache, builder, channel)."""
    servers: list[XdsServer] = []
    channels: list[grpc.aio.Channel] = []

    async def start(**options: Any) -> tuple[SnapshotCache, Builder, grpc.aio.Channel]:
        builder = Builder()
        cache = SnapshotCache(lambda n: n.cluster, builder, **options)
        server = await start_xds_server(cache)
        servers.append(server)
        channel = grpc.aio.insecure_channel(server.address)
        channels.append(channel)
        return cache, builder, channel

    yield start
    for channel in channels:
        await channel.close()
    for server in servers:
        await server.stop(0)


async def test_classes_left_by_every_stream_are_dropped_after_the_grace(serve: Serve) -> None:
    cache, builder, channel = await serve(grace=0.2)
    live = await connect(channel, node("live"))
    gone = [await connect(channel, node(f"gone-{i}")) for i in range(5)]
    assert cache.keys() == ["gone-0", "gone-1", "gone-2", "gone-3", "gone-4", "live"]

    with capture_logs() as logs:
        for call in gone:
            call.cancel()
        await eventually(lambda: cache.keys() == ["live"])
    assert sum(e["count"] for e in logs if e["event"] == "proxy_classes_dropped") == 5

    builder.calls.clear()
    cache.update(builder)
    assert builder.calls == ["live"]
    live.cancel()


async def test_a_class_with_a_connected_stream_is_never_dropped(serve: Serve) -> None:
    cache, builder, channel = await serve(grace=0.0, max_classes=1)
    held = await connect(channel, node("held"))
    other = await connect(channel, node("held"))
    other.cancel()
    await asyncio.sleep(0.1)
    assert cache.prune() is None
    cache.update(builder)
    assert cache.keys() == ["held"]
    assert builder.calls == ["held", "held"]
    held.cancel()
    await eventually(lambda: cache.keys() == [])


async def test_a_proxy_reconnecting_within_the_grace_finds_its_class(serve: Serve) -> None:
    cache, builder, channel = await serve(grace=60.0)
    first = await connect(channel, node("back"))
    first.cancel()
    await asyncio.sleep(0.1)
    again = await connect(channel, node("back"))
    assert (cache.keys(), builder.calls) == (["back"], ["back"])
    again.cancel()


async def test_a_stream_needing_a_class_beyond_the_limit_is_refused_with_resource_exhausted(
    serve: Serve,
) -> None:
    cache, builder, channel = await serve(max_classes=2)
    held = [await connect(channel, node(name)) for name in ("one", "two")]
    with capture_logs() as logs:
        call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources()
        await call.write(request(node("three", "x" * 2000, labels={"a": "1", "b": "2"})))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await read(call)
    assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert refused.value.details() == "too many proxy classes"
    (entry,) = [e for e in logs if e["event"] == "proxy_class_refused"]
    assert (
        entry["node_id"],
        entry["labels"],
        entry["limit"],
        entry["refused"],
        entry["log_level"],
    ) == ("x" * 1024 + "... (2000 bytes)", 2, 2, 1, "warning")
    assert (cache.keys(), builder.calls) == (["one", "two"], ["one", "two"])
    # A stream of a class that exists is still welcome.
    more = await connect(channel, node("one"))
    for call in [*held, more]:
        call.cancel()


async def test_a_new_class_beyond_the_limit_takes_the_place_of_the_longest_idle_one(
    serve: Serve,
) -> None:
    cache, _, channel = await serve(max_classes=2, grace=60.0)
    held = await connect(channel, node("held"))
    old = await connect(channel, node("old"))
    old.cancel()
    await eventually(lambda: _idle(cache) == ["old"])
    new = await connect(channel, node("new"))
    assert cache.keys() == ["held", "new"]
    held.cancel()
    new.cancel()


def _idle(cache: SnapshotCache) -> list[str]:
    return list(cache._idle)


async def test_the_control_plane_forgets_everything_about_a_dropped_class(
    tmp_path: Path,
) -> None:
    (tmp_path / "gateway.yaml").write_text(GATEWAY)
    plane = ControlPlane(
        ControlPlaneOptions(tmp_path, xds_address="127.0.0.1:0", proxy_class_grace=0.2)
    )
    await plane.start()
    try:
        async with grpc.aio.insecure_channel(plane.address) as channel:
            live = await connect(channel, node("gw", labels={"app": "edge"}), LISTENER)
            for i in range(20):
                call = await connect(channel, node("gw", labels={"app": f"made-up-{i}"}), LISTENER)
                call.cancel()
            assert len(plane.cache.keys()) == 21
            await eventually(lambda: len(plane.cache.keys()) == 1)
            (key,) = plane.cache.keys()
            assert key == 'gateway|0.0.0.0|{"app":"edge"}'
            assert list(plane._classes) == [key]
            # Besides, the plain sidecar and gateway that the store's verification
            # translates while no proxy of their kind is connected.
            plain = {"sidecar|0.0.0.0|{}", "gateway|0.0.0.0|{}"}
            assert set(plane._translator._routing) - plain == {key}
            live.cancel()
    finally:
        await plane.stop(grace=0.1)


def test_serve_passes_the_proxy_class_flags_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from controlplane import cli

    seen: list[ControlPlaneOptions] = []

    def run_until_signalled(options: ControlPlaneOptions, grace: float) -> Any:
        seen.append(options)

        async def serve() -> None:
            pass

        return serve()

    monkeypatch.setattr(cli, "configure_logging", lambda *args: None)
    monkeypatch.setattr(cli, "_run_until_signalled", run_until_signalled)
    monkeypatch.setattr(cli.event_loop, "run", lambda main, loop="auto": main.close())
    argv = ["serve", "--config-dir", str(tmp_path)]
    assert cli.main([*argv, "--proxy-class-grace", "5s", "--max-proxy-classes", "20"]) == 0
    assert cli.main(argv) == 0
    assert [(o.proxy_class_grace, o.max_proxy_classes) for o in seen] == [(5.0, 20), (60.0, 1000)]


def test_serve_refuses_a_max_proxy_classes_below_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from controlplane import cli

    with pytest.raises(SystemExit) as exit_:
        cli.main(["serve", "--config-dir", str(tmp_path), "--max-proxy-classes", "0"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "pilotfish serve: error: argument --max-proxy-classes: '0' is not a positive whole number"
    )


def test_the_streams_of_a_class_share_one_key_string(tmp_path: Path) -> None:
    # Every stream keeps its class's key: ten thousand streams, one string.
    plane = ControlPlane(ControlPlaneOptions(tmp_path, xds_address="127.0.0.1:0"))
    first = plane._classify(node("sidecar-a", node_id="one"))
    second = plane._classify(node("sidecar-b", node_id="two"))
    assert first == second == "sidecar|0.0.0.0|{}"
    assert first is second
    assert list(plane._classes) == [first]
