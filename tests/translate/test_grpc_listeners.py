"""Proxyless gRPC clients: their class, their api listeners, and resources gRPC accepts."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2, config_source_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from controlplane.model import (
    Abort,
    ConsistentHash,
    DestinationPolicy,
    Endpoint,
    Fault,
    HttpRoute,
    LoadBalancer,
    LoadBalancerKind,
    Mesh,
    OutlierDetection,
    Protocol,
    Resolution,
    RouteDestination,
    Service,
    ServicePort,
    TrafficPolicy,
    VirtualService,
)
from controlplane.translate import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    ProxyClass,
    ProxyRole,
    translate,
)
from controlplane.translate.grpc_listeners import grpc_listeners
from controlplane.translate.route_configs import sidecar_route_configs
from tests.translate.support import (
    REVIEWS,
    ZONE_A,
    http_service,
    kitchen_sink_mesh,
    mesh_of,
    named,
    unpack,
)

GRPC = ProxyClass(ProxyRole.GRPC)
Cluster = cluster_pb2.Cluster


def node(user_agent: str = "", metadata: dict[str, Any] | None = None) -> Any:
    result = base_pb2.Node(id="client-1", user_agent_name=user_agent)
    if metadata is not None:
        result.metadata.update(metadata)
    return result


def manager_of(listener: Any) -> Any:
    return unpack(listener.api_listener.api_listener, hcm_pb2.HttpConnectionManager)


def listener_routes(mesh: Mesh) -> dict[str, str]:
    """Listener name -> the route configuration it names, for the gRPC class."""
    return {
        listener.name: manager_of(listener).rds.route_config_name
        for listener in translate(mesh, GRPC)[LISTENER_TYPE]
    }


# -- the proxy class -----------------------------------------------------------------


@pytest.mark.parametrize(
    "user_agent", ["gRPC C-core linux Python", "gRPC Go", "gRPC Java", " grpc-node-js"]
)
def test_a_node_whose_user_agent_is_grpc_is_a_grpc_client(user_agent: str) -> None:
    assert ProxyClass.from_node(node(user_agent)) == ProxyClass(ProxyRole.GRPC)


def test_envoy_and_nameless_nodes_stay_sidecars() -> None:
    assert ProxyClass.from_node(node("envoy")).role is ProxyRole.SIDECAR
    assert ProxyClass.from_node(node("")).role is ProxyRole.SIDECAR


def test_the_grpc_role_can_be_given_in_metadata_whatever_the_user_agent() -> None:
    assert ProxyClass.from_node(node("envoy", {"pilotfish.io/role": " GRPC "})) == GRPC


def test_an_explicit_role_wins_over_a_grpc_user_agent() -> None:
    proxy = ProxyClass.from_node(node("gRPC Go", {"pilotfish.io/role": "sidecar"}))
    assert proxy.role is ProxyRole.SIDECAR


def test_an_unknown_role_falls_back_to_the_user_agent() -> None:
    assert ProxyClass.from_node(node("gRPC Go", {"pilotfish.io/role": "mesh-client"})) == GRPC


def test_grpc_clients_share_one_class_whatever_their_labels_and_bind_address() -> None:
    proxy = ProxyClass.from_node(
        node(
            "gRPC Java",
            {"labels": {"app": "web"}, "pilotfish.io/bind-address": "10.0.0.7"},
        )
    )
    assert proxy == GRPC
    assert proxy.key == "grpc|0.0.0.0|{}"


# -- listener names ------------------------------------------------------------------


def test_every_alias_and_port_of_an_http_service_is_a_listener(bookinfo: Mesh) -> None:
    routes = listener_routes(bookinfo)
    reviews = {name: route for name, route in routes.items() if name.startswith("reviews")}
    assert reviews == {
        "reviews": "9080",
        "reviews.default": "9080",
        "reviews.default.svc.cluster.local": "9080",
        "reviews.default.svc.cluster.local:9080": "9080",
        "reviews.default.svc": "9080",
        "reviews.default.svc:9080": "9080",
        "reviews.default:9080": "9080",
        "reviews:9080": "9080",
    }


def test_external_http_hosts_get_listeners_and_tcp_services_get_none(bookinfo: Mesh) -> None:
    routes = listener_routes(bookinfo)
    assert routes["httpbin.org"] == "80"
    assert routes["httpbin.org:80"] == "80"
    assert not [name for name in routes if name.startswith("mongodb")]


def test_a_service_with_several_ports_gets_no_bare_name() -> None:
    service = Service(
        host="echo.default.svc.cluster.local",
        namespace="default",
        name="echo",
        ports=(ServicePort("grpc", 7070, Protocol.GRPC), ServicePort("http", 8080, Protocol.HTTP)),
        endpoints=(),
    )
    assert listener_routes(mesh_of(service)) == {
        "echo.default.svc.cluster.local:7070": "7070",
        "echo.default.svc.cluster.local:8080": "8080",
        "echo.default.svc:7070": "7070",
        "echo.default.svc:8080": "8080",
        "echo.default:7070": "7070",
        "echo.default:8080": "8080",
        "echo:7070": "7070",
        "echo:8080": "8080",
    }


def test_a_short_name_two_namespaces_share_gets_no_listener() -> None:
    routes = listener_routes(kitchen_sink_mesh())
    assert [name for name in routes if name.split(":")[0] == "web"] == []
    assert routes["web.other"] == "80"
    assert routes["web.shop:9090"] == "9090"
    assert "web.shop" not in routes


def test_a_bare_name_two_services_claim_goes_to_the_service_it_names() -> None:
    external = Service(
        host="reviews.default",
        namespace="default",
        name="reviews-external",
        ports=(ServicePort("http", 80, Protocol.HTTP),),
        endpoints=(),
        resolution=Resolution.DNS,
        mesh_external=True,
    )
    routes = listener_routes(mesh_of(http_service("reviews"), external))
    assert routes["reviews.default"] == "80"
    assert routes["reviews.default:80"] == "80"
    assert routes["reviews.default:9080"] == "9080"
    assert routes["reviews"] == "9080"


@pytest.mark.parametrize("mesh_name", ["bookinfo", "kitchen_sink"])
def test_every_listener_name_is_a_domain_of_the_route_configuration_it_names(
    mesh_name: str, bookinfo: Mesh
) -> None:
    mesh = bookinfo if mesh_name == "bookinfo" else kitchen_sink_mesh()
    resources = translate(mesh, GRPC)
    configs = named(resources[ROUTE_TYPE])
    for listener in resources[LISTENER_TYPE]:
        config = configs[manager_of(listener).rds.route_config_name]
        domains = [d for host in config.virtual_hosts for d in host.domains]
        assert domains.count(listener.name) == 1, listener.name


# -- the listener itself -------------------------------------------------------------


def test_a_grpc_listener_is_an_api_listener_fetching_its_routes_over_ads(bookinfo: Mesh) -> None:
    listener = named(translate(bookinfo, GRPC)[LISTENER_TYPE])["reviews:9080"]
    assert not listener.HasField("address")
    assert list(listener.filter_chains) == []
    manager = manager_of(listener)
    assert manager.rds.route_config_name == "9080"
    assert manager.rds.config_source == config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(),
        resource_api_version=config_source_pb2.V3,
    )
    assert [f.name for f in manager.http_filters] == [
        "envoy.filters.http.fault",
        "envoy.filters.http.router",
    ]
    assert unpack(manager.http_filters[0].typed_config, fault_pb2.HTTPFault) == (
        fault_pb2.HTTPFault()
    )
    assert unpack(manager.http_filters[1].typed_config, router_pb2.Router) == router_pb2.Router()
    assert manager.xff_num_trusted_hops == 0
    assert not manager.HasField("route_config")


def test_grpc_listeners_are_sorted_and_unique(bookinfo: Mesh) -> None:
    names = [
        listener.name for listener in grpc_listeners(bookinfo, sidecar_route_configs(bookinfo))
    ]
    assert names == sorted(set(names))
    assert len(names) == 34


def test_only_grpc_clients_get_api_listeners(bookinfo: Mesh) -> None:
    # Envoy drops api listeners that arrive over LDS, logging a warning for each.
    sidecar = translate(bookinfo, ProxyClass())[LISTENER_TYPE]
    assert [listener.name for listener in sidecar if listener.HasField("api_listener")] == []
    grpc = translate(bookinfo, GRPC)[LISTENER_TYPE]
    assert all(listener.HasField("api_listener") for listener in grpc)


def test_grpc_clients_get_the_sidecar_route_configurations(bookinfo: Mesh) -> None:
    grpc = named(translate(bookinfo, GRPC)[ROUTE_TYPE])
    sidecar = named(translate(bookinfo, ProxyClass())[ROUTE_TYPE])
    assert sorted(grpc) == sorted(sidecar) == ["80", "9080"]
    assert [h.name for h in grpc["9080"].virtual_hosts] == [
        h.name for h in sidecar["9080"].virtual_hosts
    ]


# -- clusters ------------------------------------------------------------------------


@pytest.mark.parametrize("mesh_name", ["bookinfo", "kitchen_sink"])
def test_grpc_clusters_use_only_discovery_types_and_policies_grpc_knows(
    mesh_name: str, bookinfo: Mesh
) -> None:
    mesh = bookinfo if mesh_name == "bookinfo" else kitchen_sink_mesh()
    for cluster in translate(mesh, GRPC)[CLUSTER_TYPE]:
        assert cluster.type in (Cluster.EDS, Cluster.LOGICAL_DNS), cluster.name
        assert cluster.lb_policy in (Cluster.ROUND_ROBIN, Cluster.RING_HASH), cluster.name


@pytest.mark.parametrize("mesh_name", ["bookinfo", "kitchen_sink"])
def test_every_grpc_eds_cluster_has_exactly_its_load_assignment(
    mesh_name: str, bookinfo: Mesh
) -> None:
    mesh = bookinfo if mesh_name == "bookinfo" else kitchen_sink_mesh()
    resources = translate(mesh, GRPC)
    eds = sorted(
        c.eds_cluster_config.service_name for c in resources[CLUSTER_TYPE] if c.type == Cluster.EDS
    )
    assert eds == [a.cluster_name for a in resources[ENDPOINT_TYPE]]


def test_the_black_hole_is_an_eds_cluster_without_endpoints(bookinfo: Mesh) -> None:
    resources = translate(bookinfo, GRPC)
    hole = named(resources[CLUSTER_TYPE])["BlackHoleCluster"]
    assert hole.type == Cluster.EDS
    assert hole.eds_cluster_config.service_name == "BlackHoleCluster"
    assert hole.eds_cluster_config.eds_config.HasField("ads")
    assert list(named(resources[ENDPOINT_TYPE])["BlackHoleCluster"].endpoints) == []


def test_load_balancers_grpc_lacks_become_round_robin(bookinfo: Mesh) -> None:
    clusters = named(translate(bookinfo, GRPC)[CLUSTER_TYPE])
    sidecar = named(translate(bookinfo, ProxyClass())[CLUSTER_TYPE])
    v1 = f"outbound|9080|v1|{REVIEWS}"
    assert sidecar[v1].lb_policy == Cluster.LEAST_REQUEST
    assert clusters[v1].lb_policy == Cluster.ROUND_ROBIN
    v3 = f"outbound|9080|v3|{REVIEWS}"
    assert clusters[v3].lb_policy == Cluster.RING_HASH
    assert clusters[v3].ring_hash_lb_config.minimum_ring_size.value == 1024


def test_passthrough_clusters_become_eds_over_their_endpoints() -> None:
    resources = translate(kitchen_sink_mesh(), GRPC)
    name = "outbound|6379|primary|cache.shop.svc.cluster.local"
    cluster = named(resources[CLUSTER_TYPE])[name]
    assert (cluster.type, cluster.lb_policy) == (Cluster.EDS, Cluster.ROUND_ROBIN)
    assignment = named(resources[ENDPOINT_TYPE])[name]
    addresses = [
        (e.endpoint.address.socket_address.address, e.endpoint.address.socket_address.port_value)
        for group in assignment.endpoints
        for e in group.lb_endpoints
    ]
    assert addresses == [("10.3.0.1", 6379)]


def test_a_dns_round_robin_subset_without_hosts_becomes_an_empty_eds_cluster() -> None:
    resources = translate(kitchen_sink_mesh(), GRPC)
    name = "outbound|8080|none|legacy.shop.svc.cluster.local"
    assert named(resources[CLUSTER_TYPE])[name].type == Cluster.EDS
    assert list(named(resources[ENDPOINT_TYPE])[name].endpoints) == []


def test_a_logical_dns_cluster_keeps_its_single_host() -> None:
    cluster = named(translate(kitchen_sink_mesh(), GRPC)[CLUSTER_TYPE])[
        "outbound|8080||legacy.shop.svc.cluster.local"
    ]
    assert cluster.type == Cluster.LOGICAL_DNS
    [group] = cluster.load_assignment.endpoints
    [host] = group.lb_endpoints
    address = host.endpoint.address.socket_address
    assert (address.address, address.port_value) == ("legacy-a.example.com", 8080)


def dns_service(*addresses: str) -> Service:
    return Service(
        host="api.example.com",
        namespace="default",
        name="api",
        ports=(ServicePort("http", 80, Protocol.HTTP),),
        endpoints=((80, tuple(Endpoint(a, 80) for a in addresses)),),
        resolution=Resolution.DNS,
        mesh_external=True,
    )


def test_a_strict_dns_cluster_of_ip_hosts_becomes_eds() -> None:
    resources = translate(mesh_of(dns_service("192.0.2.2", "192.0.2.1")), GRPC)
    name = "outbound|80||api.example.com"
    assert named(resources[CLUSTER_TYPE])[name].type == Cluster.EDS
    assignment = named(resources[ENDPOINT_TYPE])[name]
    assert [
        e.endpoint.address.socket_address.address
        for group in assignment.endpoints
        for e in group.lb_endpoints
    ] == ["192.0.2.1", "192.0.2.2"]


def test_a_strict_dns_cluster_of_names_becomes_logical_dns_on_the_first() -> None:
    cluster = named(
        translate(mesh_of(dns_service("a.example.com", "b.example.com")), GRPC)[CLUSTER_TYPE]
    )["outbound|80||api.example.com"]
    assert cluster.type == Cluster.LOGICAL_DNS
    assert not cluster.HasField("eds_cluster_config")
    hosts = [h for group in cluster.load_assignment.endpoints for h in group.lb_endpoints]
    assert [h.endpoint.address.socket_address.address for h in hosts] == ["a.example.com"]


def test_ring_sizes_and_ejection_percentages_stay_within_grpc_bounds() -> None:
    policy = DestinationPolicy(
        host="echo.default.svc.cluster.local",
        namespace="default",
        name="echo",
        traffic_policy=TrafficPolicy(
            load_balancer=LoadBalancer(
                LoadBalancerKind.CONSISTENT_HASH,
                ConsistentHash(http_header_name="x-user", minimum_ring_size=10_000_000),
            ),
            outlier_detection=OutlierDetection(max_ejection_percent=150),
        ),
    )
    mesh = mesh_of(http_service("echo"), destination_policies=(policy,))
    cluster = named(translate(mesh, GRPC)[CLUSTER_TYPE])[
        "outbound|9080||echo.default.svc.cluster.local"
    ]
    assert cluster.ring_hash_lb_config.minimum_ring_size.value == 8_388_608
    assert cluster.outlier_detection.max_ejection_percent.value == 100


def test_maglev_becomes_grpcs_ring_hash_keeping_the_affinity() -> None:
    policy = DestinationPolicy(
        host="echo.default.svc.cluster.local",
        namespace="default",
        name="echo",
        traffic_policy=TrafficPolicy(
            load_balancer=LoadBalancer(
                LoadBalancerKind.CONSISTENT_HASH,
                ConsistentHash(http_header_name="x-user", maglev=True, maglev_table_size=1031),
            ),
        ),
    )
    mesh = mesh_of(http_service("echo"), destination_policies=(policy,))
    cluster = named(translate(mesh, GRPC)[CLUSTER_TYPE])[
        "outbound|9080||echo.default.svc.cluster.local"
    ]
    assert cluster.lb_policy == Cluster.RING_HASH
    assert not cluster.HasField("maglev_lb_config")
    assert cluster.HasField("ring_hash_lb_config")


# -- load assignments ----------------------------------------------------------------


def test_every_locality_group_has_a_locality_and_a_weight(bookinfo: Mesh) -> None:
    for assignment in translate(bookinfo, GRPC)[ENDPOINT_TYPE]:
        for group in assignment.endpoints:
            assert group.HasField("locality"), assignment.cluster_name
            assert group.load_balancing_weight.value >= 1, assignment.cluster_name


def test_an_address_listed_twice_is_assigned_once() -> None:
    service = http_service(
        "echo",
        (
            Endpoint("10.0.0.2", 9080, locality=ZONE_A),
            Endpoint("10.0.0.1", 9080, locality=ZONE_A),
            Endpoint("10.0.0.1", 9080),
        ),
    )
    resources = translate(mesh_of(service), GRPC)
    assignment = named(resources[ENDPOINT_TYPE])["outbound|9080||echo.default.svc.cluster.local"]
    assert [
        (
            group.locality.zone,
            [e.endpoint.address.socket_address.address for e in group.lb_endpoints],
        )
        for group in assignment.endpoints
    ] == [("", ["10.0.0.1"]), ("us-east1-a", ["10.0.0.2"])]
    sidecar = named(translate(mesh_of(service), ProxyClass())[ENDPOINT_TYPE])
    assert (
        sum(
            len(g.lb_endpoints)
            for g in sidecar["outbound|9080||echo.default.svc.cluster.local"].endpoints
        )
        == 3
    )


# -- routes --------------------------------------------------------------------------


def routed_mesh(rule: HttpRoute) -> Mesh:
    service = http_service("echo", (Endpoint("10.0.0.1", 9080),))
    virtual_service = VirtualService(
        namespace="default", name="echo", hosts=(service.host,), http=(rule,)
    )
    return mesh_of(service, virtual_services=(virtual_service,))


def only_route(mesh: Mesh) -> Any:
    [config] = translate(mesh, GRPC)[ROUTE_TYPE]
    [host] = config.virtual_hosts
    [route] = host.routes
    return route


def test_a_route_timeout_is_also_the_max_stream_duration_grpc_honours() -> None:
    route = only_route(
        routed_mesh(
            HttpRoute(
                destinations=(RouteDestination("echo.default.svc.cluster.local"),),
                timeout=timedelta(seconds=3),
            )
        )
    )
    assert route.route.max_stream_duration.max_stream_duration.ToTimedelta() == timedelta(seconds=3)
    assert route.route.timeout.ToTimedelta() == timedelta(seconds=3)


def test_a_route_without_timeout_gets_no_max_stream_duration() -> None:
    route = only_route(
        routed_mesh(HttpRoute(destinations=(RouteDestination("echo.default.svc.cluster.local"),)))
    )
    assert not route.route.HasField("max_stream_duration")


@pytest.mark.parametrize(("status", "code"), [("99", 2), ("14", 14), ("UNAVAILABLE", 14)])
def test_an_abort_grpc_status_is_a_code_grpc_knows(status: str, code: int) -> None:
    route = only_route(
        routed_mesh(
            HttpRoute(
                destinations=(RouteDestination("echo.default.svc.cluster.local"),),
                fault=Fault(abort=Abort(grpc_status=status)),
            )
        )
    )
    fault = unpack(route.typed_per_filter_config["envoy.filters.http.fault"], fault_pb2.HTTPFault)
    assert fault.abort.grpc_status == code
    assert fault.abort.percentage.numerator == 1_000_000


def test_translating_for_grpc_leaves_the_sidecar_route_configurations_alone(
    bookinfo: Mesh,
) -> None:
    routes = sidecar_route_configs(bookinfo)
    before = [r.SerializeToString(deterministic=True) for r in routes]
    grpc_listeners(bookinfo, routes)
    translate(bookinfo, GRPC)
    assert [r.SerializeToString(deterministic=True) for r in routes] == before


def test_grpc_translation_is_deterministic() -> None:
    first = translate(kitchen_sink_mesh(), GRPC)
    second = translate(kitchen_sink_mesh(), GRPC)
    assert {
        type_url: [r.SerializeToString(deterministic=True) for r in resources]
        for type_url, resources in first.items()
    } == {
        type_url: [r.SerializeToString(deterministic=True) for r in resources]
        for type_url, resources in second.items()
    }
