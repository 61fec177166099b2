"""Delta xDS over a real grpc.aio server on 127.0.0.1:0: ADS and the single-type services."""

import asyncio
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from envoy.service.cluster.v3 import cds_pb2_grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from envoy.service.endpoint.v3 import eds_pb2_grpc
from envoy.service.listener.v3 import lds_pb2_grpc
from envoy.service.route.v3 import rds_pb2_grpc
from structlog.testing import capture_logs

from controlplane.xds import CLUSTER, ENDPOINT, LISTENER, ROUTE, DeltaClient
from tests.server.support import eventually, read
from tests.xds.resources import NODE, base_mesh, mesh

S1 = base_mesh()


def request(
    type_url: str,
    subscribe: tuple[str, ...] = (),
    *,
    nonce: str = "",
    error: str = "",
    initial: dict[str, str] | None = None,
) -> Any:
    req = discovery_pb2.DeltaDiscoveryRequest(
        type_url=type_url, resource_names_subscribe=list(subscribe), response_nonce=nonce
    )
    req.node.CopyFrom(NODE)
    for name, version in (initial or {}).items():
        req.initial_resource_versions[name] = version
    if error:
        req.error_detail.code = 3
        req.error_detail.message = error
    return req


def content(response: Any) -> tuple[str, str, list[str], list[str]]:
    return (
        response.type_url,
        response.nonce,
        [item.name for item in response.resources],
        list(response.removed_resources),
    )


def delta_ads(channel: grpc.aio.Channel) -> Any:
    return ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).DeltaAggregatedResources()


async def test_delta_subscribe_ack_and_a_cache_update_reaches_the_client(cache_and_server, channel):
    cache, _ = cache_and_server
    with capture_logs() as logs:
        call = delta_ads(channel)
        await call.write(request(CLUSTER))
        first = await read(call)
        assert content(first) == (CLUSTER, "1", ["a", "b"], [])
        assert first.system_version_info == S1.version(CLUSTER)
        assert [item.version for item in first.resources] == [
            S1.resources(CLUSTER)["a"].hash,
            S1.resources(CLUSTER)["b"].hash,
        ]
        await call.write(request(CLUSTER, nonce="1"))
        await eventually(lambda: any(e["event"] == "xds_ack" for e in logs))
        changed = base_mesh(timeouts={"a": 5})
        cache.update(lambda key: changed)
        pushed = await read(call)
        assert content(pushed) == (CLUSTER, "2", ["a"], [])
        call.cancel()
        await eventually(lambda: any(e["event"] == "xds_stream_closed" for e in logs))
    connected = [e for e in logs if e["event"] == "xds_stream_connected"]
    acks = [e for e in logs if e["event"] == "xds_ack"]
    closed = [e for e in logs if e["event"] == "xds_stream_closed"]
    assert [(e["node_id"], e["key"], e["protocol"], e["service"]) for e in connected] == [
        (NODE.id, "app", "delta", "ADS")
    ]
    assert [(e["type"], e["nonce"], e["version"], e["protocol"]) for e in acks] == [
        ("CDS", "1", S1.version(CLUSTER), "delta")
    ]
    # A client's cancel reaches the server either as the end of its requests or as
    # the cancellation of the handler, depending on timing: both close the stream.
    assert [e["protocol"] for e in closed] == ["delta"]
    assert closed[0]["reason"] in ("cancelled", "client closed the stream")


async def test_delta_nack_is_logged_and_the_rejected_content_is_not_resent(
    cache_and_server, channel
):
    cache, _ = cache_and_server
    with capture_logs() as logs:
        call = delta_ads(channel)
        await call.write(request(CLUSTER))
        await read(call)
        await call.write(request(CLUSTER, nonce="1", error="cluster a: bad timeout"))
        await eventually(lambda: any(e["event"] == "xds_nack" for e in logs))
        cache.update(lambda key: base_mesh())
        changed = base_mesh(timeouts={"b": 3})
        cache.update(lambda key: changed)
        after = await read(call)
        call.cancel()
    assert content(after) == (CLUSTER, "2", ["b"], [])
    (nack,) = [e for e in logs if e["event"] == "xds_nack"]
    assert (nack["error_detail"], nack["rejected_version"], nack["protocol"]) == (
        "cluster a: bad timeout",
        S1.version(CLUSTER),
        "delta",
    )
    assert nack["log_level"] == "warning"


async def test_deleting_a_cluster_sends_its_name_in_removed_resources(cache_and_server, channel):
    cache, _ = cache_and_server
    call = delta_ads(channel)
    await call.write(request(CLUSTER))
    await read(call)
    await call.write(request(ENDPOINT, ("a", "b")))
    assert content(await read(call)) == (ENDPOINT, "2", ["a", "b"], [])
    cache.update(lambda key: mesh({"a": ("10.0.0.1:80",)}))
    assert [content(await read(call)) for _ in range(2)] == [
        (CLUSTER, "3", [], ["b"]),
        (ENDPOINT, "4", [], ["b"]),
    ]
    call.cancel()


async def test_reconnect_with_initial_versions_resends_only_what_changed(cache_and_server, channel):
    cache, _ = cache_and_server
    changed = base_mesh(timeouts={"b": 3})
    cache.update(lambda key: changed)
    call = delta_ads(channel)
    await call.write(request(CLUSTER, initial=S1.name_hashes(CLUSTER)))
    assert content(await read(call)) == (CLUSTER, "1", ["b"], [])
    call.cancel()


async def test_publications_while_a_stream_is_busy_arrive_as_the_latest_only(
    cache_and_server, channel
):
    cache, _ = cache_and_server
    call = delta_ads(channel)
    await call.write(request(ENDPOINT, ("a",)))
    await read(call)
    snapshots = [base_mesh(clusters={"a": (f"10.0.0.{i}:80",)}) for i in range(10, 15)]
    for snapshot in snapshots:
        cache.update(lambda key, s=snapshot: s)
    latest = await read(call)
    assert content(latest) == (ENDPOINT, "2", ["a"], [])
    assert latest.resources[0].version == snapshots[-1].resources(ENDPOINT)["a"].hash
    with pytest.raises(asyncio.TimeoutError):
        await read(call, timeout=0.3)
    call.cancel()


async def test_delta_request_without_type_url_ends_the_stream_with_invalid_argument(
    cache_and_server, channel
):
    call = delta_ads(channel)
    with capture_logs() as logs:
        await call.write(request(""))
        assert await call.code() == grpc.StatusCode.INVALID_ARGUMENT
    (error,) = [e for e in logs if e["event"] == "xds_protocol_error"]
    assert (error["culprit"], error["protocol"]) == ("client", "delta")


@pytest.mark.parametrize(
    ("open_call", "type_url", "names", "subscribe"),
    [
        pytest.param(
            lambda ch: lds_pb2_grpc.ListenerDiscoveryServiceStub(ch).DeltaListeners(),
            LISTENER,
            ["http"],
            (),
            id="listeners",
        ),
        pytest.param(
            lambda ch: cds_pb2_grpc.ClusterDiscoveryServiceStub(ch).DeltaClusters(),
            CLUSTER,
            ["a", "b"],
            (),
            id="clusters",
        ),
        pytest.param(
            lambda ch: rds_pb2_grpc.RouteDiscoveryServiceStub(ch).DeltaRoutes(),
            ROUTE,
            ["r1"],
            ("r1",),
            id="routes",
        ),
        pytest.param(
            lambda ch: eds_pb2_grpc.EndpointDiscoveryServiceStub(ch).DeltaEndpoints(),
            ENDPOINT,
            ["b"],
            ("b",),
            id="endpoints",
        ),
    ],
)
async def test_single_type_delta_services_serve_their_type_without_a_type_url(
    cache_and_server, channel, open_call, type_url, names, subscribe
):
    with capture_logs() as logs:
        call = open_call(channel)
        await call.write(request("", subscribe))
        response = await read(call)
        call.cancel()
    assert (response.type_url, [item.name for item in response.resources]) == (type_url, names)
    assert response.system_version_info == S1.version(type_url)
    (connected,) = [e for e in logs if e["event"] == "xds_stream_connected"]
    assert connected["protocol"] == "delta"


async def test_sotw_streams_are_logged_with_protocol_sotw(cache_and_server, channel):
    with capture_logs() as logs:
        call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources()
        sotw = discovery_pb2.DiscoveryRequest(type_url=CLUSTER)
        sotw.node.CopyFrom(NODE)
        await call.write(sotw)
        assert len((await read(call)).resources) == 2
        call.cancel()
    (connected,) = [e for e in logs if e["event"] == "xds_stream_connected"]
    assert connected["protocol"] == "sotw"


async def test_delta_client_core_converges_over_grpc_and_follows_an_update(
    cache_and_server, channel
):
    cache, _ = cache_and_server
    client = DeltaClient(NODE, follow=True)
    call = delta_ads(channel)

    async def exchange(*requests: Any) -> None:
        for req in requests:
            await call.write(req)

    async def pump_until(done: Callable[[], bool]) -> None:
        while not done():
            await exchange(*client.on_response(await read(call)))

    def holds(snapshot: Any) -> bool:
        return all(
            dict(client.versions(url)) == snapshot.name_hashes(url)
            for url in (CLUSTER, ENDPOINT, LISTENER, ROUTE)
        )

    await exchange(client.subscribe(CLUSTER), client.subscribe(LISTENER))
    await pump_until(lambda: holds(S1))
    s2 = mesh({"a": ("10.0.0.9:80",), "c": ("10.0.0.3:80",)}, {"http": "r1"}, {"r1": ("a", "c")})
    cache.update(lambda key: s2)
    await pump_until(lambda: holds(s2))
    assert client.subscription(ENDPOINT) == ["a", "c"]
    call.cancel()


async def test_graceful_stop_ends_delta_streams_with_unavailable(cache_and_server, channel):
    _, server = cache_and_server
    call = delta_ads(channel)
    await call.write(request(CLUSTER))
    await read(call)
    await server.stop(grace=5.0)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await read(call)
    assert (caught.value.code(), caught.value.details()) == (
        grpc.StatusCode.UNAVAILABLE,
        "control plane shutting down",
    )
    assert server.ads.stream_count == 0
