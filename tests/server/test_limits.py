"""The server under hostile clients: limits per server, per client and per message,
and logs that clients cannot flood (see docs/limits.md)."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from structlog.testing import capture_logs

from controlplane.server import XdsServer, XdsServerOptions, start_xds_server
from controlplane.server.admission import StreamLimits
from controlplane.xds import CLUSTER, ENDPOINT, Snapshot, SnapshotCache
from tests.server.support import MiB, eventually, read
from tests.xds.resources import NODE, base_mesh, mesh, names

KiB = 1024


def request(
    type_url: str, *, nonce: str = "", error: str = "", resource_names: Any = (), node: Any = NODE
) -> Any:
    req = discovery_pb2.DiscoveryRequest(
        type_url=type_url, response_nonce=nonce, resource_names=resource_names
    )
    req.node.CopyFrom(node)
    if error:
        req.error_detail.code = 3
        req.error_detail.message = error
    return req


def ads(channel: grpc.aio.Channel) -> Any:
    return ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources()


def channel_to(server: XdsServer, **options: int) -> grpc.aio.Channel:
    # A channel of its own (its own TCP connection), as a separate proxy would have.
    settings = [
        ("grpc.use_local_subchannel_pool", 1),
        ("grpc.max_receive_message_length", 16 * MiB),
    ]
    return grpc.aio.insecure_channel(server.address, options=settings + list(options.items()))


@pytest.fixture
async def serve() -> AsyncIterator[Any]:
    servers: list[XdsServer] = []

    async def start(**options: Any) -> tuple[SnapshotCache, XdsServer]:
        cache = SnapshotCache(lambda node: node.cluster, lambda key: base_mesh())
        server = await start_xds_server(cache, options=XdsServerOptions(**options))
        servers.append(server)
        return cache, server

    yield start
    for server in servers:
        await server.stop(0)


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == name]


async def failure(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        while await read(call, timeout=10) is not grpc.aio.EOF:
            pass
    return caught.value


# -- log floods (client-supplied text) ------------------------------------------------


async def test_a_long_nack_error_detail_is_logged_clipped_to_1_kib(serve):
    _, server = await serve()
    detail = "é" * (3 * MiB // 2)
    async with channel_to(server) as channel:
        with capture_logs() as logs:
            call = ads(channel)
            await call.write(request(CLUSTER))
            await read(call)
            await call.write(request(CLUSTER, nonce="1", error=detail))
            await eventually(lambda: bool(events(logs, "xds_nack")))
            call.cancel()
    (nack,) = events(logs, "xds_nack")
    assert nack["error_detail"] == "é" * 1024 + f"... ({3 * MiB} bytes)"


async def test_identical_nacks_are_logged_once_then_counted_until_the_stream_closes(serve):
    _, server = await serve()
    async with channel_to(server) as channel:
        with capture_logs() as logs:
            call = ads(channel)
            await call.write(request(CLUSTER))
            first = await read(call)
            for _ in range(20):
                await call.write(request(CLUSTER, nonce="1", error="cluster a: bad"))
            await call.write(request(CLUSTER, nonce="1", error="cluster b: bad"))
            await eventually(lambda: len(events(logs, "xds_nack")) == 2)
            await call.write(request(CLUSTER, nonce="1", error="cluster b: bad"))
            await call.write(request(CLUSTER, nonce="1", error="cluster b: bad"))
            await call.done_writing()
            assert await read(call) is grpc.aio.EOF
            await eventually(lambda: bool(events(logs, "xds_stream_closed")))
    version = first.version_info
    assert [(e["error_detail"], e["rejected_version"]) for e in events(logs, "xds_nack")] == [
        ("cluster a: bad", version),
        ("cluster b: bad", version),
    ]
    assert [
        (e["type"], e["rejected_version"], e["repeated"], e["log_level"])
        for e in events(logs, "xds_nack_repeated")
    ] == [("CDS", version, 19, "warning"), ("CDS", version, 2, "warning")]


async def test_an_ack_ends_a_run_of_identical_nacks(serve):
    _, server = await serve()
    async with channel_to(server) as channel:
        with capture_logs() as logs:
            call = ads(channel)
            await call.write(request(CLUSTER))
            first = await read(call)
            for _ in range(3):
                await call.write(request(CLUSTER, nonce="1", error="bad"))
            ack = request(CLUSTER, nonce="1")
            ack.version_info = first.version_info
            await call.write(ack)
            await eventually(lambda: bool(events(logs, "xds_nack_repeated")))
            call.cancel()
    assert [e["repeated"] for e in events(logs, "xds_nack_repeated")] == [2]
    assert len(events(logs, "xds_nack")) == 1


async def test_a_long_node_id_and_cluster_are_logged_clipped(serve):
    _, server = await serve()
    node = discovery_pb2.DiscoveryRequest().node
    node.CopyFrom(NODE)
    node.id = "n" * 5000
    node.cluster = "c" * 2000
    async with channel_to(server) as channel:
        with capture_logs() as logs:
            call = ads(channel)
            await call.write(request(CLUSTER, node=node))
            await read(call)
            call.cancel()
    (connected,) = events(logs, "xds_stream_connected")
    assert connected["node_id"] == "n" * 1024 + "... (5000 bytes)"
    assert connected["node_cluster"] == "c" * 1024 + "... (2000 bytes)"


# -- responses over the send limit ----------------------------------------------------


def padded_mesh(generation: int, pad: int) -> Snapshot:
    cluster = cluster_pb2.Cluster(name="big", type=cluster_pb2.Cluster.STATIC)
    cluster.metadata.filter_metadata["pad"].fields["blob"].string_value = f"{generation}" + (
        "x" * pad
    )
    return Snapshot.from_resources({CLUSTER: [cluster]})


async def test_a_response_over_the_send_limit_is_withheld_logged_once_and_the_streams_live_on(
    serve,
):
    cache, server = await serve(max_message_bytes=64 * KiB)
    small, huge, fixed = padded_mesh(1, 100), padded_mesh(2, 100 * KiB), padded_mesh(3, 200)
    cache.update(lambda key: small)
    async with channel_to(server) as one, channel_to(server) as two:
        with capture_logs() as logs:
            calls = [ads(one), ads(two)]
            for call in calls:
                await call.write(request(CLUSTER))
                assert (await read(call)).version_info == small.version(CLUSTER)
            cache.update(lambda key: huge)
            await eventually(lambda: bool(events(logs, "xds_response_too_large")))
            await eventually(lambda: server.ads.pushing is False)
            cache.update(lambda key: fixed)
            after = [await read(call) for call in calls]
            assert server.ads.stream_count == 2
            for call in calls:
                call.cancel()
    assert [(r.version_info, names(r)) for r in after] == [
        (fixed.version(CLUSTER), ["big"]),
        (fixed.version(CLUSTER), ["big"]),
    ]
    (withheld,) = events(logs, "xds_response_too_large")
    assert withheld["type"] == "CDS"
    assert withheld["version"] == huge.version(CLUSTER)
    assert withheld["limit"] == 64 * KiB
    assert withheld["bytes"] > 100 * KiB
    assert withheld["node_id"] == NODE.id
    assert withheld["log_level"] == "error"
    assert not events(logs, "xds_stream_failed")


async def test_a_request_carrying_the_nonce_before_a_withheld_response_is_not_stale(serve):
    # Envoy changes its subscription with the nonce of the last response it got.
    def endpoints(a: int) -> Snapshot:
        return mesh({"a": tuple(f"10.{i // 250}.{i % 250}.1:80" for i in range(a)), "b": ()})

    cache, server = await serve(max_message_bytes=64 * KiB)
    small, huge, fixed = endpoints(1), endpoints(5_000), endpoints(2)
    cache.update(lambda key: small)
    async with channel_to(server) as channel:
        with capture_logs() as logs:
            call = ads(channel)
            await call.write(request(ENDPOINT, resource_names=["a"]))
            assert (await read(call)).nonce == "1"
            cache.update(lambda key: huge)
            await eventually(lambda: bool(events(logs, "xds_response_too_large")))
            await call.write(request(ENDPOINT, nonce="1", resource_names=["a", "b"]))
            (stream,) = server.ads._all
            await eventually(lambda: stream.core.status(ENDPOINT).names == {"a", "b"})
            cache.update(lambda key: fixed)
            after = await read(call)
            call.cancel()
    assert (after.version_info, names(after)) == (fixed.version(ENDPOINT), ["a", "b"])


# -- names per request ----------------------------------------------------------------


async def test_a_request_over_the_name_limit_ends_with_resource_exhausted_and_a_log_line(serve):
    _, server = await serve(max_resource_names=100)
    async with channel_to(server) as channel:
        with capture_logs() as logs:
            allowed = ads(channel)
            await allowed.write(request(CLUSTER, resource_names=[f"c{i}" for i in range(100)]))
            assert (await read(allowed)).type_url == CLUSTER
            call = ads(channel)
            await call.write(request(CLUSTER, resource_names=[f"c{i}" for i in range(101)]))
            error = await failure(call)
            allowed.cancel()
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "101 resource names" in (error.details() or "")
    (refused,) = events(logs, "xds_request_refused")
    assert (refused["limit"], refused["value"], refused["names"], refused["type"]) == (
        "max_resource_names",
        100,
        101,
        "CDS",
    )
    assert refused["peer"].startswith("ipv4:127.0.0.1:")


# -- streams and connections ----------------------------------------------------------


async def test_streams_beyond_the_server_limit_are_refused_until_one_closes(serve):
    _, server = await serve(max_streams=2)
    async with channel_to(server) as channel:
        with capture_logs() as logs:
            calls = [ads(channel), ads(channel)]
            for call in calls:
                await call.write(request(CLUSTER))
                await read(call)
            third = ads(channel)
            with contextlib.suppress(grpc.aio.AioRpcError):  # refused before it is read
                await third.write(request(CLUSTER))
            error = await failure(third)
            calls[0].cancel()
            await eventually(lambda: server.ads.stream_count == 1)
            fourth = ads(channel)
            await fourth.write(request(CLUSTER))
            assert (await read(fourth)).type_url == CLUSTER
            for call in (calls[1], fourth):
                call.cancel()
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.details() == "the control plane holds its limit of 2 streams"
    (near,) = events(logs, "xds_streams_near_limit")
    assert (near["streams"], near["limit"]) == (1, 2)
    (refused,) = events(logs, "xds_stream_refused")
    assert (refused["limit"], refused["value"], refused["refused"]) == ("max_streams", 2, 1)


async def test_connections_beyond_the_per_peer_limit_are_refused_but_their_streams_are_not(
    serve,
):
    _, server = await serve(max_connections_per_peer=2)
    async with channel_to(server) as one, channel_to(server) as two, channel_to(server) as three:
        with capture_logs() as logs:
            calls = [ads(one), ads(two), ads(one)]
            for call in calls:
                await call.write(request(CLUSTER))
                assert (await read(call)).type_url == CLUSTER
            refused = ads(three)
            with contextlib.suppress(grpc.aio.AioRpcError):  # refused before it is read
                await refused.write(request(CLUSTER))
            error = await failure(refused)
            for call in calls:
                call.cancel()
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.details() == "ipv4:127.0.0.1 holds its limit of 2 connections"
    (logged,) = events(logs, "xds_stream_refused")
    assert (logged["limit"], logged["value"]) == ("max_connections_per_peer", 2)


async def test_streams_beyond_the_per_connection_limit_wait_for_one_to_close(serve):
    _, server = await serve(max_streams_per_connection=2)

    async def first_response(call: Any) -> Any:
        await call.write(request(CLUSTER))
        return await call.read()

    async with channel_to(server) as channel:
        calls = []
        for _ in range(2):
            calls.append(ads(channel))
            await first_response(calls[-1])
        calls.append(ads(channel))
        third = asyncio.ensure_future(first_response(calls[2]))
        done, _ = await asyncio.wait({third}, timeout=0.5)
        assert not done
        assert server.ads.stream_count == 2
        calls[0].cancel()
        assert (await asyncio.wait_for(third, 5)).type_url == CLUSTER
        for call in calls[1:]:
            call.cancel()


async def test_a_request_over_the_receive_limit_ends_the_stream_with_resource_exhausted(serve):
    _, server = await serve(max_receive_message_bytes=64 * KiB)
    async with channel_to(server) as channel:
        call = ads(channel)
        await call.write(request(ENDPOINT, resource_names=[f"c{i:06d}" for i in range(10_000)]))
        error = await failure(call)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_a_client_pinging_too_often_is_sent_away(serve):
    _, server = await serve(min_client_ping_interval=60.0, max_ping_strikes=2)
    pings = {
        "grpc.keepalive_time_ms": 50,
        "grpc.keepalive_permit_without_calls": 1,
        "grpc.http2.max_pings_without_data": 0,
    }
    async with channel_to(server, **pings) as channel:
        call = ads(channel)
        await call.write(request(CLUSTER))
        await read(call)
        error = await failure(call)
    assert error.code() == grpc.StatusCode.UNAVAILABLE


def test_a_zero_read_buffer_cap_leaves_the_buffer_to_grpc():
    options = dict(XdsServerOptions(read_buffer_bytes=0).channel_options())
    assert "grpc.experimental.tcp_max_read_buffer_size" not in options


@pytest.mark.parametrize("cap", [0, 8 * KiB])
async def test_a_request_larger_than_the_read_buffer_is_received_whole(serve, cap):
    _, server = await serve(read_buffer_bytes=cap)
    absent = [f"absent-{i:06d}" for i in range(10_000)]  # about 150 KB, many reads
    async with channel_to(server) as channel:
        call = ads(channel)
        await call.write(request(ENDPOINT, resource_names=["a", *absent, "b"]))
        response = await read(call, timeout=10)
        call.cancel()
    assert (response.type_url, sorted(names(response))) == (ENDPOINT, ["a", "b"])


# -- a reconnect storm ----------------------------------------------------------------


@pytest.mark.slow
async def test_every_stream_of_a_reconnect_storm_above_grpcs_default_queue_syncs(serve):
    _, server = await serve()
    streams, connections = 3_500, 40
    channels = [channel_to(server) for _ in range(connections)]
    wire = request(CLUSTER).SerializeToString()
    method = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"

    async def sync(i: int) -> tuple[str, Any]:
        call = channels[i % connections].stream_stream(method)()
        try:
            await call.write(wire)
            response = await asyncio.wait_for(call.read(), 120)
            return ("ok" if response is not grpc.aio.EOF else "eof"), call
        except grpc.aio.AioRpcError as exc:
            return exc.code().name, call

    try:
        outcomes = await asyncio.gather(*(sync(i) for i in range(streams)))
        assert [o for o, _ in outcomes].count("ok") == streams
        assert server.ads.stream_count == streams
        for _, call in outcomes:
            call.cancel()
    finally:
        for channel in channels:
            await channel.close()


# -- the flags ------------------------------------------------------------------------


def test_serve_flags_set_the_limits(tmp_path, monkeypatch):
    from controlplane import cli

    seen: dict[str, Any] = {}

    def run(main: Any, loop: str = "auto") -> None:
        main.close()

    def run_until_signalled(options: Any, grace: float) -> Any:
        seen["server"] = options.server
        return asyncio.sleep(0)

    monkeypatch.setattr(cli, "configure_logging", lambda *args: None)
    monkeypatch.setattr(cli, "_run_until_signalled", run_until_signalled)
    monkeypatch.setattr(cli.event_loop, "run", run)
    flags = {
        "--max-receive-message-bytes": "1000",
        "--max-streams": "10",
        "--max-pending-calls": "20",
        "--max-pending-time": "5s",
        "--max-streams-per-connection": "3",
        "--max-connections-per-peer": "4",
        "--max-resource-names": "50",
        "--max-ping-strikes": "0",
    }
    argv = ["serve", "--config-dir", str(tmp_path), *(x for kv in flags.items() for x in kv)]
    assert cli.main(argv) == 0
    server = seen["server"]
    assert (
        server.max_receive_message_bytes,
        server.max_streams,
        server.max_pending_calls,
        server.max_pending_time,
        server.max_streams_per_connection,
        server.max_connections_per_peer,
        server.max_resource_names,
        server.max_ping_strikes,
    ) == (1000, 10, 20, 5.0, 3, 4, 50, 0)
    assert XdsServerOptions().stream_limits() == StreamLimits(100_000, 1_000, 100_000, 16 * MiB)


def test_a_negative_limit_is_a_usage_error(tmp_path, capsys):
    from controlplane import cli

    with pytest.raises(SystemExit) as exit_:
        cli.main(["serve", "--config-dir", str(tmp_path), "--max-streams", "-1"])
    assert exit_.value.code == 2
    assert "'-1' is not a whole number (0 or more)" in capsys.readouterr().err
