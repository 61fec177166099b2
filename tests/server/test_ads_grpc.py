import asyncio
import gc
import time
import tracemalloc
import weakref
from typing import Any

import grpc
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from envoy.service.listener.v3 import lds_pb2_grpc
from structlog.testing import capture_logs

from controlplane.server import XdsServerOptions
from controlplane.server import ads as ads_module
from controlplane.xds import CLUSTER, ENDPOINT, LISTENER, Snapshot
from tests.server.support import MiB, eventually, read
from tests.xds.resources import NODE, base_mesh, names


def request(type_url: str, *, version: str = "", nonce: str = "", error: str = "") -> Any:
    req = discovery_pb2.DiscoveryRequest(
        type_url=type_url, version_info=version, response_nonce=nonce
    )
    req.node.CopyFrom(NODE)
    if error:
        req.error_detail.code = 3
        req.error_detail.message = error
    return req


def ads(channel: grpc.aio.Channel) -> Any:
    return ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources()


async def test_subscribe_ack_and_a_cache_update_reaches_the_client(cache_and_server, channel):
    cache, _ = cache_and_server
    with capture_logs() as logs:
        call = ads(channel)
        await call.write(request(CLUSTER))
        first = await read(call)
        assert (first.version_info, first.nonce, names(first)) == (
            base_mesh().version(CLUSTER),
            "1",
            ["a", "b"],
        )
        await call.write(request(CLUSTER, version=first.version_info, nonce="1"))
        await eventually(lambda: any(e["event"] == "xds_ack" for e in logs))
        changed = base_mesh(timeouts={"a": 5})
        cache.update(lambda key: changed)
        pushed = await read(call)
        assert (pushed.version_info, pushed.nonce, names(pushed)) == (
            changed.version(CLUSTER),
            "2",
            ["a", "b"],
        )
        call.cancel()
        await eventually(lambda: any(e["event"] == "xds_stream_closed" for e in logs))
    connected = [e for e in logs if e["event"] == "xds_stream_connected"]
    acks = [e for e in logs if e["event"] == "xds_ack"]
    assert [(e["node_id"], e["key"]) for e in connected] == [(NODE.id, "app")]
    assert [(e["node_id"], e["type"], e["nonce"]) for e in acks] == [(NODE.id, "CDS", "1")]


async def test_nack_is_logged_and_the_rejected_content_is_not_resent(cache_and_server, channel):
    cache, _ = cache_and_server
    with capture_logs() as logs:
        call = ads(channel)
        await call.write(request(CLUSTER))
        first = await read(call)
        await call.write(request(CLUSTER, nonce="1", error="cluster a: bad timeout"))
        await eventually(lambda: any(e["event"] == "xds_nack" for e in logs))
        cache.update(lambda key: base_mesh())
        changed = base_mesh(timeouts={"b": 3})
        cache.update(lambda key: changed)
        after = await read(call)
        call.cancel()
    assert (after.version_info, after.nonce) == (changed.version(CLUSTER), "2")
    (nack,) = [e for e in logs if e["event"] == "xds_nack"]
    assert nack["error_detail"] == "cluster a: bad timeout"
    assert nack["rejected_version"] == first.version_info
    assert nack["node_id"] == NODE.id
    assert nack["log_level"] == "warning"


def big_mesh(generation: int) -> Snapshot:
    clusters = []
    for i in range(6):
        cluster = cluster_pb2.Cluster(name=f"big-{i}", type=cluster_pb2.Cluster.STATIC)
        blob = cluster.metadata.filter_metadata["pad"].fields["blob"]
        blob.string_value = f"{generation}:" + "x" * MiB
        clusters.append(cluster)
    return Snapshot.from_resources({CLUSTER: clusters})


async def test_stuck_client_does_not_delay_another_and_later_gets_only_the_latest(
    cache_and_server, channel
):
    cache, server = cache_and_server
    meshes = [big_mesh(generation) for generation in range(6)]
    versions = [snapshot.version(CLUSTER) for snapshot in meshes]
    cache.update(lambda key: meshes[0])
    stuck = ads(channel)
    await stuck.write(request(CLUSTER))
    options = [
        ("grpc.max_receive_message_length", 16 * MiB),
        ("grpc.use_local_subchannel_pool", 1),
    ]
    async with grpc.aio.insecure_channel(server.address, options=options) as other_channel:
        reader = ads(other_channel)
        await reader.write(request(CLUSTER))
        assert (await read(reader)).version_info == versions[0]
        for snapshot in meshes[1:]:
            cache.update(lambda key, s=snapshot: s)
            started = time.monotonic()
            assert (await read(reader)).version_info == snapshot.version(CLUSTER)
            assert time.monotonic() - started < 2.0
        reader.cancel()
    received = [(await read(stuck)).version_info]
    while received[-1] != versions[-1] and len(received) < len(versions):
        received.append((await read(stuck)).version_info)
    assert received[0] == versions[0]
    assert received[-1] == versions[-1]
    assert len(received) < len(versions)
    stuck.cancel()


async def test_graceful_stop_ends_streams_with_unavailable(cache_and_server, channel):
    _, server = cache_and_server
    call = ads(channel)
    await call.write(request(CLUSTER))
    await read(call)
    started = time.monotonic()
    await server.stop(grace=5.0)
    assert time.monotonic() - started < 2.0
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await read(call)
    assert (caught.value.code(), caught.value.details()) == (
        grpc.StatusCode.UNAVAILABLE,
        "control plane shutting down",
    )
    assert server.ads.stream_count == 0


async def test_request_without_type_url_ends_the_stream_with_invalid_argument(
    cache_and_server, channel
):
    call = ads(channel)
    with capture_logs() as logs:
        await call.write(request(""))
        assert await call.code() == grpc.StatusCode.INVALID_ARGUMENT
    (error,) = [e for e in logs if e["event"] == "xds_protocol_error"]
    assert error["culprit"] == "client"


async def test_single_type_listener_service_serves_the_same_snapshot(cache_and_server, channel):
    call = lds_pb2_grpc.ListenerDiscoveryServiceStub(channel).StreamListeners()
    req = request("")
    await call.write(req)
    response = await read(call)
    assert (response.type_url, response.version_info, names(response)) == (
        LISTENER,
        base_mesh().version(LISTENER),
        ["http"],
    )
    call.cancel()


async def test_closed_streams_are_forgotten(cache_and_server, channel):
    _, server = cache_and_server
    call = ads(channel)
    await call.write(request(CLUSTER))
    await read(call)
    assert server.ads.stream_count == 1
    await call.done_writing()
    assert await read(call) is grpc.aio.EOF
    await eventually(lambda: server.ads.stream_count == 0)


def test_server_options_become_grpc_channel_arguments():
    options = XdsServerOptions(
        max_message_bytes=8 * MiB, max_connection_age=1800, max_connection_age_grace=30
    )
    assert options.channel_options() == [
        ("grpc.max_receive_message_length", 4 * MiB),
        ("grpc.max_send_message_length", 8 * MiB),
        ("grpc.server.max_pending_requests", 100_000),
        ("grpc.server.max_pending_requests_hard_limit", 200_000),
        ("grpc.server_max_unrequested_time_in_server", 120),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_ping_strikes", 2),
        ("grpc.so_reuseport", 0),
        ("grpc.enable_channelz", 0),
        ("grpc.max_concurrent_streams", 1_000),
        ("grpc.experimental.tcp_max_read_buffer_size", 8 * 1024),
        ("grpc.max_connection_age_ms", 1_800_000),
        ("grpc.max_connection_age_grace_ms", 30_000),
    ]


class _Channels:
    """The channels of :func:`_stuck_and_reader`, closed together."""

    def __init__(self, *channels: grpc.aio.Channel) -> None:
        self.channels = channels

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()


async def _stuck_and_reader(cache, server, meshes):
    """A stream whose client never reads (its push never completes) and a healthy one.

    The stuck client's HTTP/2 windows stay at their initial 64 KiB (no BDP probing, which
    can grow them past a 6 MiB push), so the server cannot finish writing to it."""
    cache.update(lambda key: meshes[0])
    stuck_channel = grpc.aio.insecure_channel(
        server.address,
        options=[
            ("grpc.max_receive_message_length", 16 * MiB),
            ("grpc.http2.bdp_probe", 0),
            ("grpc.use_local_subchannel_pool", 1),
        ],
    )
    with capture_logs() as logs:
        stuck = ads(stuck_channel)
        await stuck.write(request(CLUSTER))
        await eventually(lambda: any(e["event"] == "xds_stream_connected" for e in logs))
    options = [
        ("grpc.max_receive_message_length", 16 * MiB),
        ("grpc.use_local_subchannel_pool", 1),
    ]
    other_channel = grpc.aio.insecure_channel(server.address, options=options)
    reader = ads(other_channel)
    await reader.write(request(CLUSTER))
    first = await read(reader)
    await reader.write(request(CLUSTER, version=first.version_info, nonce=first.nonce))
    return stuck, reader, _Channels(other_channel, stuck_channel)


async def test_requests_wait_while_a_push_is_under_way_but_no_longer_than_the_push_priority(
    cache_and_server, monkeypatch
):
    monkeypatch.setattr(ads_module, "MAX_PUSH_PRIORITY", 0.6)
    cache, server = cache_and_server
    meshes = [big_mesh(generation) for generation in range(2)]
    stuck, reader, other_channel = await _stuck_and_reader(cache, server, meshes)
    cache.update(lambda key: meshes[1])
    pushed = await read(reader)
    assert pushed.version_info == meshes[1].version(CLUSTER)
    with capture_logs() as logs:
        sent = time.monotonic()
        await reader.write(request(CLUSTER, version=pushed.version_info, nonce=pushed.nonce))
        await eventually(lambda: any(e["event"] == "xds_ack" for e in logs), timeout=5.0)
        waited = time.monotonic() - sent
    # The stuck stream never finishes its push, so the ACK waits out the priority window.
    assert 0.2 < waited < 3.0
    assert [(e["type"], e["nonce"]) for e in logs if e["event"] == "xds_ack"] == [
        ("CDS", pushed.nonce)
    ]
    stuck.cancel()
    reader.cancel()
    await other_channel.close()


async def test_a_stream_with_requests_held_back_still_gets_its_own_next_push_at_once(
    cache_and_server, monkeypatch
):
    monkeypatch.setattr(ads_module, "MAX_PUSH_PRIORITY", 30.0)
    cache, server = cache_and_server
    meshes = [big_mesh(generation) for generation in range(3)]
    stuck, reader, other_channel = await _stuck_and_reader(cache, server, meshes)
    cache.update(lambda key: meshes[1])
    pushed = await read(reader)
    with capture_logs() as logs:
        await reader.write(request(CLUSTER, version=pushed.version_info, nonce=pushed.nonce))
        cache.update(lambda key: meshes[2])
        assert (await read(reader, timeout=2.0)).version_info == meshes[2].version(CLUSTER)
        stuck.cancel()  # the stuck stream ends, so does the wave: held-back requests go through
        await eventually(
            lambda: any(
                e["event"] in ("xds_ack", "xds_stale_request") and e["nonce"] == pushed.nonce
                for e in logs
            )
        )
    reader.cancel()
    await other_channel.close()


async def test_an_undecodable_request_ends_the_stream_with_invalid_argument(channel):
    method = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
    call = channel.stream_stream(method)()
    await call.write(b"\x0a\xff\xff\xff")  # a field whose length runs past the end
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await read(call)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "client broke the xDS protocol: undecodable DiscoveryRequest" in failure.value.details()


async def test_fetch_methods_are_not_served(channel):
    fetch = channel.unary_unary("/envoy.service.cluster.v3.ClusterDiscoveryService/FetchClusters")
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await fetch(discovery_pb2.DiscoveryRequest().SerializeToString())
    assert failure.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_streams_keep_no_copy_of_a_large_request_once_handled(cache_and_server, channel):
    """A SotW EDS request of an Envoy that follows 4,000 clusters is 160 KB; at 10,000
    streams one such copy held per stream (gRPC's request iterator did) is 1.6 GB."""
    wanted = [f"cluster-{i:05d}.with-a-long-name.example" for i in range(4000)]
    streams = 12
    calls = []
    for _ in range(streams):
        call = ads(channel)
        subscribe = discovery_pb2.DiscoveryRequest(type_url=ENDPOINT, resource_names=wanted)
        subscribe.node.CopyFrom(NODE)
        await call.write(subscribe)
        calls.append(call)
    size = len(subscribe.SerializeToString())
    del subscribe
    await asyncio.sleep(0.2)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for call in calls:
            again = discovery_pb2.DiscoveryRequest(type_url=ENDPOINT, resource_names=wanted)
            await call.write(again)
            del again
        await asyncio.sleep(0.3)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < streams * size / 4, f"{held} bytes still held after {streams} requests of {size}"
    for call in calls:
        call.cancel()


async def test_a_stream_stuck_in_one_push_wave_does_not_hold_back_the_next(
    cache_and_server, monkeypatch
):
    monkeypatch.setattr(ads_module, "MAX_PUSH_PRIORITY", 0.3)
    cache, server = cache_and_server
    meshes = [big_mesh(generation) for generation in range(3)]
    stuck, reader, other_channel = await _stuck_and_reader(cache, server, meshes)
    with capture_logs() as logs:

        def waves() -> list[Any]:
            return [e for e in logs if e["event"] == "xds_push_wave_done"]

        cache.update(lambda key: meshes[1])
        await read(reader)
        await eventually(lambda: len(waves()) == 1)
        assert (waves()[0]["streams"], waves()[0]["unfinished"]) == (1, 1)
        monkeypatch.setattr(ads_module, "MAX_PUSH_PRIORITY", 30.0)
        cache.update(lambda key: meshes[2])
        await read(reader)
        await eventually(lambda: len(waves()) == 2)
        assert (waves()[1]["streams"], waves()[1]["unfinished"]) == (1, 0)
    stuck.cancel()
    reader.cancel()
    await other_channel.close()


async def test_the_cyclic_collector_is_off_for_the_length_of_a_push_wave(
    cache_and_server, monkeypatch
):
    monkeypatch.setattr(ads_module, "MAX_PUSH_PRIORITY", 0.5)
    cache, server = cache_and_server
    meshes = [big_mesh(generation) for generation in range(2)]
    stuck, reader, other_channel = await _stuck_and_reader(cache, server, meshes)
    assert gc.isenabled()
    with capture_logs() as logs:
        cache.update(lambda key: meshes[1])
        await read(reader)
        assert not gc.isenabled()  # the stuck stream still owes its push
        await eventually(lambda: any(e["event"] == "xds_push_wave_done" for e in logs))
    assert gc.isenabled()
    stuck.cancel()
    reader.cancel()
    await other_channel.close()


@pytest.mark.parametrize("protocol", ["sotw", "delta"])
async def test_a_closed_stream_is_freed_by_reference_counting_alone(
    cache_and_server, channel, protocol
):
    """The control plane freezes the heap after each reload (``gc.freeze``); a closed
    stream caught in a reference cycle would then never be freed."""
    _, server = cache_and_server
    stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
    if protocol == "sotw":
        call = stub.StreamAggregatedResources()
        await call.write(request(CLUSTER))
    else:
        call = stub.DeltaAggregatedResources()
        await call.write(discovery_pb2.DeltaDiscoveryRequest(type_url=CLUSTER, node=NODE))
    await read(call)
    await eventually(lambda: server.ads.stream_count == 1)
    (stream,) = server.ads._all
    gone = weakref.ref(stream)
    del stream
    gc.disable()
    try:
        call.cancel()
        await eventually(lambda: server.ads.stream_count == 0)
        await asyncio.sleep(0.05)
        assert gone() is None
    finally:
        gc.enable()


class _WaveCore:
    def __init__(self, ack_weight: int) -> None:
        self.ack_weight = ack_weight


class _WaveStream:
    """Just what a wave looks at to order its streams; records when it is woken."""

    def __init__(self, woken: list[str], name: str, ack_weight: int, connection: str = "") -> None:
        self.woken = woken
        self.name = name
        self.core = _WaveCore(ack_weight)
        self.connection = connection

    def wake(self, *, dirty: bool = False) -> None:
        assert dirty
        self.woken.append(self.name)


async def test_a_wave_wakes_the_streams_with_light_acks_first(cache_and_server):
    """Streams push in the order they are woken: SotW clients that repeat long name
    lists in every ACK go last, so their ACKs overlap as few pushes as possible."""
    cache, _ = cache_and_server
    service = ads_module.AggregatedDiscoveryService(cache)
    woken: list[str] = []
    for name, weight in [("sotw-3000", 150_000), ("delta", 0), ("sotw-10", 500), ("delta-2", 0)]:
        service.register("class", _WaveStream(woken, name, weight))  # type: ignore[arg-type]
    service._wake("class")
    assert woken[2:] == ["sotw-10", "sotw-3000"]
    assert sorted(woken[:2]) == ["delta", "delta-2"]
    service.close()


async def test_a_wave_wakes_the_streams_of_one_connection_one_after_another(cache_and_server):
    """Within one ACK weight, streams sharing a connection push back to back, so
    their messages reach the client together; the weight still comes first."""
    cache, _ = cache_and_server
    service = ads_module.AggregatedDiscoveryService(cache)
    woken: list[str] = []
    ports = {"a": 50001, "b": 50002, "c": 50003, "d": 50004}
    streams = [
        _WaveStream(woken, f"{name}{index}", 0, f"ipv4:127.0.0.1:{port}")
        for index in range(5)
        for name, port in ports.items()
    ]
    streams += [
        _WaveStream(woken, "b-sotw", 500, "ipv4:127.0.0.1:50002"),
        _WaveStream(woken, "a-sotw", 500, "ipv4:127.0.0.1:50001"),
    ]
    for stream in streams:
        service.register("class", stream)  # type: ignore[arg-type]
    service._wake("class")
    assert [name[0] for name in woken[:20]] == ["a"] * 5 + ["b"] * 5 + ["c"] * 5 + ["d"] * 5
    assert woken[20:] == ["a-sotw", "b-sotw"]
    service.close()


async def test_a_stream_knows_the_connection_it_came_on(cache_and_server):
    _, server = cache_and_server
    async with grpc.aio.insecure_channel(server.address) as channel:
        call = ads(channel)
        await call.write(request(CLUSTER))
        await call.read()
        streams = list(server.ads._all)
        assert len(streams) == 1
        assert streams[0].connection.startswith("ipv4:127.0.0.1:")
        assert streams[0].connection != f"ipv4:{server.address}"
        call.cancel()
