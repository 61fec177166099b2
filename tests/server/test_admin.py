"""The admin services on the xDS port, against a live ControlPlane and real gRPC clients."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc
from google.rpc import status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from structlog.testing import capture_logs

from controlplane.cli import main
from controlplane.server.control_plane import ControlPlane, ControlPlaneOptions
from controlplane.server.events import EventHub
from controlplane.xds.types import CLUSTER, ENDPOINT, LISTENER, ROUTE
from pilotfish.admin.v1 import admin_pb2, admin_pb2_grpc
from tests.server.support import eventually, read

HELLO = Path(__file__).parents[2] / "examples" / "hello-world" / "hello.yaml"
BROKEN = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: x
spec:
  hosts: [x]
  bogus: 1
"""


@pytest.fixture
async def plane(tmp_path: Path) -> AsyncIterator[ControlPlane]:
    shutil.copy(HELLO, tmp_path / "hello.yaml")
    (tmp_path / "broken.yaml").write_text(BROKEN)
    cp = ControlPlane(ControlPlaneOptions(tmp_path, xds_address="127.0.0.1:0"))
    await cp.start()
    yield cp
    await cp.stop(grace=0.1)


@pytest.fixture
async def channel(plane: ControlPlane) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(plane.address) as ch:
        yield ch


def node(node_id: str = "sidecar-1") -> base_pb2.Node:
    n = base_pb2.Node(id=node_id, cluster="hello")
    n.metadata.fields["labels"].struct_value.fields["app"].string_value = "hello"
    return n


async def connect(
    channel: grpc.aio.Channel,
    node_id: str = "sidecar-1",
    message: str = "refused on purpose: bad filter",
) -> Any:
    """An ADS stream that holds CDS ACKed and LDS NACKed with ``message``."""
    call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources()
    await call.write(discovery_pb2.DiscoveryRequest(node=node(node_id), type_url=CLUSTER))
    clusters = await read(call)
    await call.write(
        discovery_pb2.DiscoveryRequest(
            type_url=CLUSTER, version_info=clusters.version_info, response_nonce=clusters.nonce
        )
    )
    await call.write(discovery_pb2.DiscoveryRequest(type_url=LISTENER))
    listeners = await read(call)
    while listeners.type_url != LISTENER:
        listeners = await read(call)
    await call.write(
        discovery_pb2.DiscoveryRequest(
            type_url=LISTENER,
            response_nonce=listeners.nonce,
            error_detail=status_pb2.Status(code=3, message=message),
        )
    )
    return call


async def proxies(channel: grpc.aio.Channel) -> list[admin_pb2.ProxyStatus]:
    stub = admin_pb2_grpc.AdminServiceStub(channel)
    return list((await stub.ListProxies(admin_pb2.ListProxiesRequest())).proxies)


def states(proxy: admin_pb2.ProxyStatus) -> dict[str, str]:
    return {t.type_url.rsplit(".", 1)[-1]: t.state for t in proxy.types}


async def nacked(channel: grpc.aio.Channel) -> admin_pb2.ProxyStatus:
    found: list[admin_pb2.ProxyStatus] = []

    async def poll() -> bool:
        found[:] = await proxies(channel)
        return bool(found) and states(found[0]).get("Listener") == "NACKED"

    for _ in range(200):
        if await poll():
            return found[0]
        await asyncio.sleep(0.01)
    raise AssertionError(f"no NACK seen: {found}")


async def test_list_proxies_shows_acked_nacked_and_unsent_types_with_the_nack_reason(
    channel: grpc.aio.Channel,
) -> None:
    call = await connect(channel)
    proxy = await nacked(channel)
    assert (proxy.node_id, proxy.cluster, proxy.role, proxy.protocol) == (
        "sidecar-1",
        "hello",
        "sidecar",
        "sotw",
    )
    assert dict(proxy.labels) == {"app": "hello"}
    assert proxy.peer.startswith("ipv4:127.0.0.1:")
    assert proxy.connected_since.endswith("Z")
    assert states(proxy) == {
        "Listener": "NACKED",
        "Cluster": "SYNCED",
        "RouteConfiguration": "NOT_SENT",
        "ClusterLoadAssignment": "NOT_SENT",
    }
    by_type = {t.type_url: t for t in proxy.types}
    assert by_type[LISTENER].last_nack.message == "refused on purpose: bad filter"
    assert by_type[LISTENER].last_nack.version == by_type[LISTENER].version_sent
    assert by_type[LISTENER].version_acked == ""
    assert by_type[CLUSTER].version_acked == by_type[CLUSTER].version_sent != ""
    assert by_type[CLUSTER].resources > 0
    call.cancel()


async def test_get_proxy_config_returns_the_resources_sent_as_json(
    channel: grpc.aio.Channel,
) -> None:
    call = await connect(channel)
    await nacked(channel)
    stub = admin_pb2_grpc.AdminServiceStub(channel)
    config = await stub.GetProxyConfig(admin_pb2.GetProxyConfigRequest(node_id="sidecar-1"))
    clusters = next(t for t in config.types if t.type_url == CLUSTER)
    assert clusters.version_acked == clusters.version_sent
    names = [r.name for r in clusters.resources]
    assert "outbound|8080||hello.default.svc.cluster.local" in names
    body = json.loads(
        clusters.resources[names.index("outbound|8080||hello.default.svc.cluster.local")].json
    )
    assert body["@type"] == CLUSTER
    assert body["name"] == "outbound|8080||hello.default.svc.cluster.local"
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.GetProxyConfig(admin_pb2.GetProxyConfigRequest(node_id="nobody"))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    call.cancel()


async def test_get_config_status_lists_files_in_effect_and_the_held_back_file(
    channel: grpc.aio.Channel,
) -> None:
    stub = admin_pb2_grpc.AdminServiceStub(channel)
    status = await stub.GetConfigStatus(admin_pb2.GetConfigStatusRequest())
    assert status.loaded
    assert [f.path for f in status.files] == ["hello.yaml"]
    # The version every log line carries: a digest of the files in effect, by path.
    digest = hashlib.sha256()
    for file in status.files:
        digest.update(f"{file.path}\0{file.digest}\0".encode())
    assert status.config_version == digest.hexdigest()[:12]
    assert list(status.rejected_files) == ["broken.yaml"]
    errors = [(d.file, d.line, d.column, d.code) for d in status.diagnostics]
    assert errors == [("broken.yaml", 7, 3, "PF110")]


async def test_csds_reports_the_proxy_acked_and_nacked_resources(channel: grpc.aio.Channel) -> None:
    call = await connect(channel)
    await nacked(channel)
    stub = csds_pb2_grpc.ClientStatusDiscoveryServiceStub(channel)
    response = await stub.FetchClientStatus(csds_pb2.ClientStatusRequest())
    [config] = response.config
    assert config.node.id == "sidecar-1"
    by_type: dict[str, set[tuple[int, int]]] = {}
    for entry in config.generic_xds_configs:
        by_type.setdefault(entry.type_url, set()).add((entry.config_status, entry.client_status))
    assert by_type[CLUSTER] == {(csds_pb2.SYNCED, 3)}  # ACKED
    assert by_type[LISTENER] == {(csds_pb2.ERROR, 4)}  # NACKED
    listener = next(e for e in config.generic_xds_configs if e.type_url == LISTENER)
    assert listener.error_state.details == "refused on purpose: bad filter"
    stream = stub.StreamClientStatus()
    await stream.write(csds_pb2.ClientStatusRequest())
    assert (await read(stream)).config[0].node.id == "sidecar-1"
    stream.cancel()
    call.cancel()


async def test_health_is_serving_after_the_first_load(channel: grpc.aio.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    response = await stub.Check(health_pb2.HealthCheckRequest())
    assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_lists_every_service(channel: grpc.aio.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo()
    await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
    response = await read(call)
    names = sorted(s.name for s in response.list_services_response.service)
    assert names == [
        "envoy.service.cluster.v3.ClusterDiscoveryService",
        "envoy.service.discovery.v3.AggregatedDiscoveryService",
        "envoy.service.endpoint.v3.EndpointDiscoveryService",
        "envoy.service.listener.v3.ListenerDiscoveryService",
        "envoy.service.route.v3.RouteDiscoveryService",
        "envoy.service.status.v3.ClientStatusDiscoveryService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "pilotfish.admin.v1.AdminService",
    ]
    await call.write(
        reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="pilotfish.admin.v1.AdminService"
        )
    )
    assert (await read(call)).file_descriptor_response.file_descriptor_proto
    call.cancel()


async def test_watch_events_streams_connect_push_ack_nack_and_disconnect(
    plane: ControlPlane, channel: grpc.aio.Channel
) -> None:
    stub = admin_pb2_grpc.AdminServiceStub(channel)
    watch = stub.WatchEvents(admin_pb2.WatchEventsRequest())
    assert plane._server is not None
    await eventually(lambda: plane._server is not None and plane._server.ads.events.active)
    call = await connect(channel)
    await nacked(channel)
    call.cancel()
    kinds: list[tuple[str, str]] = []
    while not kinds or kinds[-1][0] != "disconnect":
        event = await read(watch)
        kinds.append((event.kind, event.type_url.rsplit(".", 1)[-1]))
        assert event.node_id == "sidecar-1"
    assert kinds == [
        ("connect", ""),
        ("push", "Cluster"),
        ("ack", "Cluster"),
        ("push", "Listener"),
        ("nack", "Listener"),
        ("disconnect", ""),
    ]
    watch.cancel()


async def run_cli(argv: list[str]) -> int:
    # The CLI's blocking gRPC client must not block the loop the server runs on; the
    # server's logs (on the same stdout) are captured away meanwhile.
    with capture_logs():
        return await asyncio.to_thread(main, argv)


async def test_status_json_has_the_documented_shape_and_the_nack_reason(
    plane: ControlPlane, channel: grpc.aio.Channel, capsys: pytest.CaptureFixture[str]
) -> None:
    call = await connect(channel)
    proxy = await nacked(channel)
    capsys.readouterr()
    assert await run_cli(["status", "--server", plane.address, "-o", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    [entry] = data["proxies"]
    sent = {t.type_url: t.version_sent for t in proxy.types}
    nack_at = next(t.last_nack.at for t in proxy.types if t.type_url == LISTENER)
    assert entry == {
        "node_id": "sidecar-1",
        "role": "sidecar",
        "address": proxy.peer.removeprefix("ipv4:"),
        "protocol": "sotw",
        "types": {
            "LDS": {
                "state": "NACKED",
                "sent": sent[LISTENER],
                "acked": "",
                "nack": {"message": "refused on purpose: bad filter", "at": nack_at},
            },
            "CDS": {"state": "SYNCED", "sent": sent[CLUSTER], "acked": sent[CLUSTER], "nack": None},
            "RDS": {"state": "NOT_SENT", "sent": "", "acked": "", "nack": None},
            "EDS": {"state": "NOT_SENT", "sent": "", "acked": "", "nack": None},
        },
    }
    call.cancel()


async def test_status_table_names_the_nack_reason(
    plane: ControlPlane, channel: grpc.aio.Channel, capsys: pytest.CaptureFixture[str]
) -> None:
    call = await connect(channel)
    await nacked(channel)
    capsys.readouterr()
    assert await run_cli(["status", "--server", plane.address]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "NODE",
        "ID",
        "ROLE",
        "ADDRESS",
        "PROTOCOL",
        "CDS",
        "LDS",
        "EDS",
        "RDS",
    ]
    assert lines[1].split()[:4] == ["sidecar-1", "sidecar", lines[1].split()[2], "sotw"]
    assert "SYNCED (" in lines[1] and "NACKED (" in lines[1] and lines[1].endswith("NOT SENT")
    assert lines[2].startswith("sidecar-1 LDS NACKED at ")
    assert lines[2].endswith(": refused on purpose: bad filter")
    call.cancel()


async def test_config_dump_prints_the_clusters_the_proxy_holds(
    plane: ControlPlane, channel: grpc.aio.Channel, capsys: pytest.CaptureFixture[str]
) -> None:
    call = await connect(channel)
    await nacked(channel)
    capsys.readouterr()
    assert await run_cli(["config", "dump", "--proxy", "sidecar-1", "--server", plane.address]) == 0
    data = yaml.safe_load(capsys.readouterr().out)
    assert data["node_id"] == "sidecar-1"
    names = [r["name"] for r in data["types"]["CDS"]["resources"]]
    assert "outbound|8080||hello.default.svc.cluster.local" in names
    assert data["types"]["CDS"]["version_acked"] == data["types"]["CDS"]["version_sent"]
    argv = ["config", "dump", "--proxy", "ghost", "--server", plane.address, "-o", "json"]
    assert await run_cli(argv) == 1
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == (
        "",
        "pilotfish config dump: no connected proxy has node id 'ghost'\n",
    )
    call.cancel()


def test_status_on_an_unreachable_server_is_one_line_and_exit_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["status", "--server", "127.0.0.1:1"]) == 1
    assert capsys.readouterr().err == (
        "pilotfish status: cannot reach the control plane at 127.0.0.1:1 "
        "(is `pilotfish serve` running there?)\n"
    )


def test_status_with_a_malformed_server_flag_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["status", "--server", "18000"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "pilotfish status: error: argument --server: expected HOST:PORT, got '18000'"
    )


async def test_a_sent_version_not_acked_is_pending_then_stale_after_5_seconds(
    plane: ControlPlane, channel: grpc.aio.Channel
) -> None:
    call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources()
    await call.write(discovery_pb2.DiscoveryRequest(node=node(), type_url=CLUSTER))
    await read(call)
    [proxy] = await proxies(channel)
    assert states(proxy)["Cluster"] == "PENDING"
    assert plane.admin is not None
    now = time.time()
    plane.admin.clock = lambda: now + 6.0
    [proxy] = await proxies(channel)
    assert states(proxy)["Cluster"] == "STALE"
    call.cancel()


async def test_a_reload_is_an_event_carrying_the_new_config_version(
    plane: ControlPlane, channel: grpc.aio.Channel, tmp_path: Path
) -> None:
    stub = admin_pb2_grpc.AdminServiceStub(channel)
    watch = stub.WatchEvents(admin_pb2.WatchEventsRequest())
    await eventually(lambda: plane._server is not None and plane._server.ads.events.active)
    (tmp_path / "broken.yaml").unlink()
    event = await read(watch, timeout=10.0)
    status = await stub.GetConfigStatus(admin_pb2.GetConfigStatusRequest())
    assert (event.kind, event.version, event.message) == (
        "reload",
        status.config_version,
        "0 error(s), 0 file(s) held back",
    )
    assert (status.reloads, list(status.rejected_files)) == (2, [])
    watch.cancel()


async def test_get_status_counts_the_streams_of_each_proxy_class(
    channel: grpc.aio.Channel,
) -> None:
    call = await connect(channel)
    await nacked(channel)
    status = await admin_pb2_grpc.AdminServiceStub(channel).GetStatus(admin_pb2.GetStatusRequest())
    [proxy_class] = status.proxy_classes
    assert (proxy_class.key, proxy_class.streams) == ("sidecar|0.0.0.0|{}", 1)
    assert set(proxy_class.versions) == {CLUSTER, LISTENER, ROUTE, ENDPOINT}
    assert list(status.rejected_files) == ["broken.yaml"]
    call.cancel()


async def test_a_delta_proxy_is_listed_and_its_clusters_dumped(
    channel: grpc.aio.Channel,
) -> None:
    call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).DeltaAggregatedResources()
    await call.write(discovery_pb2.DeltaDiscoveryRequest(node=node("delta-1"), type_url=CLUSTER))
    clusters = await read(call)
    await call.write(
        discovery_pb2.DeltaDiscoveryRequest(type_url=CLUSTER, response_nonce=clusters.nonce)
    )
    stub = admin_pb2_grpc.AdminServiceStub(channel)

    async def acked() -> admin_pb2.ProxyStatus | None:
        [proxy] = await proxies(channel)
        return proxy if states(proxy)["Cluster"] == "SYNCED" else None

    proxy = None
    for _ in range(200):
        proxy = await acked()
        if proxy is not None:
            break
        await asyncio.sleep(0.01)
    assert proxy is not None
    assert (proxy.node_id, proxy.protocol) == ("delta-1", "delta")
    config = await stub.GetProxyConfig(admin_pb2.GetProxyConfigRequest(node_id="delta-1"))
    [typed] = [t for t in config.types if t.type_url == CLUSTER]
    assert sorted(r.name for r in typed.resources) == sorted(r.name for r in clusters.resources)
    assert typed.version_acked == typed.version_sent == clusters.system_version_info
    call.cancel()


async def test_no_event_is_built_while_nobody_watches(
    channel: grpc.aio.Channel, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("an event was built with no watcher")

    monkeypatch.setattr(EventHub, "publish", refuse)
    call = await connect(channel)
    proxy = await nacked(channel)
    assert states(proxy)["Cluster"] == "SYNCED"
    call.cancel()
