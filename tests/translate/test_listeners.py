"""Listeners: outbound ports for sidecars, server ports for gateways."""

from __future__ import annotations

from typing import Any

from envoy.config.core.v3 import base_pb2, config_source_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

from controlplane.model import (
    Endpoint,
    Gateway,
    GatewayServer,
    Mesh,
    Protocol,
    RouteDestination,
    Service,
    ServicePort,
    TcpMatch,
    TcpRoute,
    VirtualService,
)
from controlplane.translate import LISTENER_TYPE, ProxyClass, ProxyRole, translate
from controlplane.translate.listeners import gateway_listeners, sidecar_listeners
from tests.translate.support import MONGODB, http_service, mesh_of, named, unpack

GATEWAY = ProxyClass(ProxyRole.GATEWAY, (("istio", "ingressgateway"),))


def network_filter(listener: Any) -> Any:
    [chain] = listener.filter_chains
    [network] = chain.filters
    return network


def manager_of(listener: Any) -> hcm_pb2.HttpConnectionManager:
    network = network_filter(listener)
    assert network.name == "envoy.filters.network.http_connection_manager"
    return unpack(network.typed_config, hcm_pb2.HttpConnectionManager)


def tcp_proxy_of(listener: Any) -> tcp_proxy_pb2.TcpProxy:
    network = network_filter(listener)
    assert network.name == "envoy.filters.network.tcp_proxy"
    return unpack(network.typed_config, tcp_proxy_pb2.TcpProxy)


def tcp_service(name: str, port: int, protocol: Protocol = Protocol.TCP) -> Service:
    return Service(
        host=f"{name}.default.svc.cluster.local",
        namespace="default",
        name=name,
        ports=(ServicePort("tcp", port, protocol),),
        endpoints=((port, (Endpoint("10.9.0.1", port),)),),
    )


def test_a_sidecar_gets_one_outbound_listener_per_service_port(bookinfo: Mesh) -> None:
    listeners = translate(bookinfo, ProxyClass())[LISTENER_TYPE]
    assert [
        (
            listener.name,
            listener.address.socket_address.address,
            listener.address.socket_address.port_value,
            listener.traffic_direction,
        )
        for listener in listeners
    ] == [
        ("0.0.0.0_27017", "0.0.0.0", 27017, base_pb2.OUTBOUND),
        ("0.0.0.0_80", "0.0.0.0", 80, base_pb2.OUTBOUND),
        ("0.0.0.0_9080", "0.0.0.0", 9080, base_pb2.OUTBOUND),
    ]


def test_listeners_bind_to_the_proxy_class_bind_address(bookinfo: Mesh) -> None:
    listeners = named(sidecar_listeners(bookinfo, ProxyClass(bind_address="127.0.0.1")))
    assert sorted(listeners) == ["127.0.0.1_27017", "127.0.0.1_80", "127.0.0.1_9080"]
    assert listeners["127.0.0.1_9080"].address.socket_address.address == "127.0.0.1"


def test_an_http_port_runs_a_connection_manager_fetching_the_port_routes_over_ads(
    bookinfo: Mesh,
) -> None:
    listener = named(sidecar_listeners(bookinfo, ProxyClass()))["0.0.0.0_9080"]
    manager = manager_of(listener)
    assert manager.stat_prefix == "outbound_0.0.0.0_9080"
    assert manager.codec_type == hcm_pb2.HttpConnectionManager.AUTO
    assert manager.rds == hcm_pb2.Rds(
        config_source=config_source_pb2.ConfigSource(
            ads=config_source_pb2.AggregatedConfigSource(),
            resource_api_version=config_source_pb2.V3,
        ),
        route_config_name="9080",
    )
    assert not manager.HasField("use_remote_address")


def test_the_http_filters_are_fault_then_router(bookinfo: Mesh) -> None:
    listener = named(sidecar_listeners(bookinfo, ProxyClass()))["0.0.0.0_9080"]
    fault, router = manager_of(listener).http_filters
    assert fault.name == "envoy.filters.http.fault"
    assert unpack(fault.typed_config, fault_pb2.HTTPFault) == fault_pb2.HTTPFault()
    assert router.name == "envoy.filters.http.router"
    assert unpack(router.typed_config, router_pb2.Router) == router_pb2.Router()


def test_a_tcp_port_proxies_to_the_cluster_its_tcp_route_names(bookinfo: Mesh) -> None:
    listener = named(sidecar_listeners(bookinfo, ProxyClass()))["0.0.0.0_27017"]
    proxy = tcp_proxy_of(listener)
    assert proxy.stat_prefix == "outbound_0.0.0.0_27017"
    assert proxy.cluster == f"outbound|27017||{MONGODB}"


def test_a_tcp_port_without_routes_proxies_to_its_service() -> None:
    listener = named(sidecar_listeners(mesh_of(tcp_service("db", 5432)), ProxyClass()))[
        "0.0.0.0_5432"
    ]
    assert tcp_proxy_of(listener).cluster == "outbound|5432||db.default.svc.cluster.local"


def test_weighted_tcp_routes_become_weighted_clusters() -> None:
    db = tcp_service("db", 5432)
    other = tcp_service("replica", 5433)
    vs = VirtualService(
        "default",
        "db",
        (db.host,),
        tcp=(
            TcpRoute(
                matches=(TcpMatch(port=9999),),
                destinations=(RouteDestination(other.host),),
            ),
            TcpRoute(
                matches=(TcpMatch(port=5432),),
                destinations=(
                    RouteDestination(db.host, weight=70),
                    RouteDestination(other.host, weight=30),
                    RouteDestination(other.host, weight=0),
                ),
            ),
        ),
    )
    mesh = mesh_of(db, other, virtual_services=(vs,))
    proxy = tcp_proxy_of(named(sidecar_listeners(mesh, ProxyClass()))["0.0.0.0_5432"])
    assert proxy.cluster == ""
    assert [(c.name, c.weight) for c in proxy.weighted_clusters.clusters] == [
        ("outbound|5432||db.default.svc.cluster.local", 70),
        ("outbound|5433||replica.default.svc.cluster.local", 30),
    ]


def test_services_sharing_an_http_port_share_one_listener() -> None:
    mesh = mesh_of(http_service("a"), http_service("b"), tcp_service("c", 9080))
    listeners = sidecar_listeners(mesh, ProxyClass())
    assert [listener.name for listener in listeners] == ["0.0.0.0_9080"]
    assert manager_of(listeners[0]).rds.route_config_name == "9080"


def test_the_first_tcp_service_by_host_owns_a_shared_tcp_port() -> None:
    mesh = mesh_of(tcp_service("zeta", 6379), tcp_service("alpha", 6379))
    [listener] = sidecar_listeners(mesh, ProxyClass())
    assert tcp_proxy_of(listener).cluster == "outbound|6379||alpha.default.svc.cluster.local"


def test_tls_and_other_non_http_protocols_are_proxied_as_tcp() -> None:
    mesh = mesh_of(
        tcp_service("vault", 443, Protocol.TLS), tcp_service("cache", 6379, Protocol.REDIS)
    )
    assert [
        network_filter(listener).name for listener in sidecar_listeners(mesh, ProxyClass())
    ] == [
        "envoy.filters.network.tcp_proxy",
        "envoy.filters.network.tcp_proxy",
    ]


def test_udp_ports_get_no_listener() -> None:
    assert sidecar_listeners(mesh_of(tcp_service("dns", 53, Protocol.UDP)), ProxyClass()) == []


# Gateways


def test_a_gateway_gets_one_listener_per_server_port_of_its_gateways(bookinfo: Mesh) -> None:
    [listener] = translate(bookinfo, GATEWAY)[LISTENER_TYPE]
    assert listener.name == "0.0.0.0_8080"
    assert listener.address.socket_address.port_value == 8080
    manager = manager_of(listener)
    assert manager.stat_prefix == "gateway_0.0.0.0_8080"
    assert manager.rds.route_config_name == "http.8080"
    assert manager.use_remote_address.value is True
    assert [f.name for f in manager.http_filters] == [
        "envoy.filters.http.fault",
        "envoy.filters.http.router",
    ]


def test_a_proxy_no_gateway_selects_gets_no_listeners(bookinfo: Mesh) -> None:
    assert gateway_listeners(bookinfo, ProxyClass(ProxyRole.GATEWAY, (("app", "x"),))) == []
    assert gateway_listeners(bookinfo, ProxyClass(ProxyRole.GATEWAY)) == []


def tcp_gateway_mesh(*routes: TcpRoute) -> Mesh:
    db = tcp_service("db", 5432)
    gateway = Gateway(
        "edge",
        "tcp",
        (("app", "edge"),),
        (
            GatewayServer(15432, "tcp", Protocol.TCP, ("*",)),
            GatewayServer(15433, "tls", Protocol.TLS, ("*",)),
            GatewayServer(15432, "tcp-again", Protocol.TCP, ("db.example.com",)),
        ),
    )
    vs = VirtualService("edge", "db", ("*",), ("edge/tcp",), tcp=routes)
    return mesh_of(db, virtual_services=(vs,), gateways=(gateway,))


def test_a_tcp_gateway_port_routes_with_the_bound_tcp_routes() -> None:
    mesh = tcp_gateway_mesh(
        TcpRoute(
            matches=(TcpMatch(port=15432),),
            destinations=(RouteDestination("db.default.svc.cluster.local"),),
        )
    )
    listeners = gateway_listeners(mesh, ProxyClass(ProxyRole.GATEWAY, (("app", "edge"),)))
    assert [listener.name for listener in listeners] == ["0.0.0.0_15432"]
    proxy = tcp_proxy_of(listeners[0])
    assert proxy.stat_prefix == "gateway_0.0.0.0_15432"
    assert proxy.cluster == "outbound|5432||db.default.svc.cluster.local"


def test_a_tcp_gateway_port_without_a_route_gets_no_listener() -> None:
    mesh = tcp_gateway_mesh()
    assert gateway_listeners(mesh, ProxyClass(ProxyRole.GATEWAY, (("app", "edge"),))) == []


def test_gateway_listeners_do_not_include_sidecar_ports(bookinfo: Mesh) -> None:
    names = [listener.name for listener in translate(bookinfo, GATEWAY)[LISTENER_TYPE]]
    assert "0.0.0.0_9080" not in names
