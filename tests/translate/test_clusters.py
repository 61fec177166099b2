"""Clusters: names, discovery types and the traffic policy they carry."""

from __future__ import annotations

from datetime import timedelta

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import config_source_pb2
from envoy.extensions.load_balancing_policies.least_request.v3 import least_request_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from google.protobuf import any_pb2, duration_pb2, struct_pb2
from xds.type.v3 import typed_struct_pb2

from controlplane.model import (
    ConnectionPool,
    ConsistentHash,
    DestinationPolicy,
    Endpoint,
    HttpConnectionPool,
    LoadBalancer,
    LoadBalancerKind,
    Mesh,
    OutlierDetection,
    PortTrafficPolicy,
    Protocol,
    Resolution,
    Service,
    ServicePort,
    Subset,
    TcpConnectionPool,
    TrafficPolicy,
)
from controlplane.translate import BLACKHOLE_CLUSTER, CLUSTER_TYPE, ProxyClass, translate
from controlplane.translate.clusters import HTTP_PROTOCOL_OPTIONS, build_clusters
from controlplane.translate.grpc_resources import grpc_clusters
from controlplane.translate.protos import Message
from tests.translate.support import REVIEWS, http_service, mesh_of, named, unpack

Cluster = cluster_pb2.Cluster


def seconds(value: float) -> Message:
    result = duration_pb2.Duration()
    result.FromTimedelta(timedelta(seconds=value))
    return result


def clusters_of(mesh: Mesh) -> dict[str, Message]:
    return named(build_clusters(mesh))


def with_policy(policy: TrafficPolicy, *subsets: Subset, service: Service | None = None) -> Mesh:
    service = service or http_service("reviews", (Endpoint("10.0.0.1", 9080),))
    return mesh_of(
        service,
        destination_policies=(
            DestinationPolicy(service.host, "default", "reviews", policy, subsets),
        ),
    )


def test_each_service_port_and_each_subset_gets_an_istio_named_cluster(bookinfo: Mesh) -> None:
    assert [c.name for c in translate(bookinfo, ProxyClass())[CLUSTER_TYPE]] == [
        "BlackHoleCluster",
        "outbound|27017||mongodb.default.svc.cluster.local",
        "outbound|80||httpbin.org",
        "outbound|9080|v1|ratings.default.svc.cluster.local",
        "outbound|9080|v1|reviews.default.svc.cluster.local",
        "outbound|9080|v2|ratings.default.svc.cluster.local",
        "outbound|9080|v2|reviews.default.svc.cluster.local",
        "outbound|9080|v3|reviews.default.svc.cluster.local",
        "outbound|9080||details.default.svc.cluster.local",
        "outbound|9080||productpage.default.svc.cluster.local",
        "outbound|9080||ratings.default.svc.cluster.local",
        "outbound|9080||reviews.default.svc.cluster.local",
    ]


def test_a_static_service_is_an_eds_cluster_over_ads_named_after_itself(bookinfo: Mesh) -> None:
    cluster = clusters_of(bookinfo)["outbound|9080|v2|reviews.default.svc.cluster.local"]
    assert cluster.type == Cluster.EDS
    assert cluster.eds_cluster_config == Cluster.EdsClusterConfig(
        eds_config=config_source_pb2.ConfigSource(
            ads=config_source_pb2.AggregatedConfigSource(),
            resource_api_version=config_source_pb2.V3,
        ),
        service_name="outbound|9080|v2|reviews.default.svc.cluster.local",
    )
    assert not cluster.HasField("load_assignment")


def test_the_default_connect_timeout_is_ten_seconds(bookinfo: Mesh) -> None:
    cluster = clusters_of(bookinfo)["outbound|9080||details.default.svc.cluster.local"]
    assert cluster.connect_timeout == seconds(10)
    assert cluster.lb_policy == Cluster.ROUND_ROBIN
    assert not cluster.HasField("outlier_detection")
    assert not cluster.HasField("circuit_breakers")
    assert len(cluster.typed_extension_protocol_options) == 0


def test_the_black_hole_is_a_static_cluster_without_hosts(bookinfo: Mesh) -> None:
    assert clusters_of(bookinfo)[BLACKHOLE_CLUSTER] == Cluster(
        name=BLACKHOLE_CLUSTER, type=Cluster.STATIC, connect_timeout=seconds(10)
    )


def dns_service(resolution: Resolution, *endpoints: Endpoint) -> Service:
    return Service(
        host="api.example.com",
        namespace="default",
        name="api",
        ports=(ServicePort("https", 443, Protocol.TLS),),
        endpoints=((443, endpoints),) if endpoints else (),
        resolution=resolution,
        mesh_external=True,
    )


def socket_addresses(cluster: Message) -> list[tuple[str, int]]:
    return [
        (e.endpoint.address.socket_address.address, e.endpoint.address.socket_address.port_value)
        for group in cluster.load_assignment.endpoints
        for e in group.lb_endpoints
    ]


def test_a_dns_service_without_endpoints_resolves_its_own_host_strictly() -> None:
    cluster = clusters_of(mesh_of(dns_service(Resolution.DNS)))["outbound|443||api.example.com"]
    assert cluster.type == Cluster.STRICT_DNS
    assert cluster.dns_lookup_family == Cluster.V4_PREFERRED
    assert cluster.load_assignment.cluster_name == "outbound|443||api.example.com"
    assert socket_addresses(cluster) == [("api.example.com", 443)]
    assert not cluster.HasField("eds_cluster_config")


def test_a_dns_service_with_endpoints_resolves_each_of_them() -> None:
    service = dns_service(
        Resolution.DNS, Endpoint("b.example.com", 8443), Endpoint("a.example.com", 8443)
    )
    cluster = clusters_of(mesh_of(service))["outbound|443||api.example.com"]
    assert socket_addresses(cluster) == [("a.example.com", 8443), ("b.example.com", 8443)]


def test_a_round_robin_dns_service_is_a_logical_dns_cluster_of_its_first_endpoint() -> None:
    service = dns_service(
        Resolution.DNS_ROUND_ROBIN, Endpoint("b.example.com", 443), Endpoint("a.example.com", 443)
    )
    cluster = clusters_of(mesh_of(service))["outbound|443||api.example.com"]
    assert cluster.type == Cluster.LOGICAL_DNS
    assert socket_addresses(cluster) == [("a.example.com", 443)]


def test_a_round_robin_dns_subset_selecting_nothing_is_a_static_cluster_without_hosts() -> None:
    service = dns_service(Resolution.DNS_ROUND_ROBIN, Endpoint("a.example.com", 443, (("v", "1"),)))
    mesh = mesh_of(
        service,
        destination_policies=(
            DestinationPolicy(
                service.host, "default", "api", subsets=(Subset("v2", (("v", "2"),)),)
            ),
        ),
    )
    cluster = clusters_of(mesh)["outbound|443|v2|api.example.com"]
    assert cluster.type == Cluster.STATIC
    assert cluster.load_assignment.cluster_name == "outbound|443|v2|api.example.com"
    assert list(cluster.load_assignment.endpoints) == []


def test_resolution_none_makes_an_original_destination_cluster() -> None:
    cluster = clusters_of(mesh_of(dns_service(Resolution.NONE)))["outbound|443||api.example.com"]
    assert cluster.type == Cluster.ORIGINAL_DST
    assert cluster.lb_policy == Cluster.CLUSTER_PROVIDED
    assert not cluster.HasField("load_assignment")
    assert not cluster.HasField("eds_cluster_config")


@pytest.mark.parametrize(
    ("kind", "policy"),
    [
        (LoadBalancerKind.ROUND_ROBIN, Cluster.ROUND_ROBIN),
        (LoadBalancerKind.RANDOM, Cluster.RANDOM),
        (LoadBalancerKind.LEAST_REQUEST, Cluster.LEAST_REQUEST),
        (LoadBalancerKind.CONSISTENT_HASH, Cluster.RING_HASH),
    ],
)
def test_the_load_balancer_sets_the_lb_policy(kind: LoadBalancerKind, policy: int) -> None:
    mesh = with_policy(TrafficPolicy(load_balancer=LoadBalancer(kind)))
    cluster = clusters_of(mesh)[f"outbound|9080||{REVIEWS}"]
    assert cluster.lb_policy == policy
    assert cluster.type == Cluster.EDS


def test_latency_aware_is_pilotfish_policy_first_then_least_request() -> None:

    balancer = LoadBalancer(LoadBalancerKind.LATENCY_AWARE, latency_decay=timedelta(seconds=3))
    mesh = with_policy(TrafficPolicy(load_balancer=balancer))
    cluster = clusters_of(mesh)[f"outbound|9080||{REVIEWS}"]
    assert cluster.lb_policy == Cluster.ROUND_ROBIN
    wrapper = typed_struct_pb2.TypedStruct(
        type_url="type.googleapis.com/pilotfish.lb.v1.LatencyAware",
        value=struct_pb2.Struct(fields={"decay": struct_pb2.Value(string_value="3s")}),
    )
    first, second = any_pb2.Any(), any_pb2.Any()
    first.Pack(wrapper)
    second.Pack(least_request_pb2.LeastRequest())
    assert list(cluster.load_balancing_policy.policies) == [
        cluster_pb2.LoadBalancingPolicy.Policy(
            typed_extension_config={"name": "pilotfish.lb.latency_aware", "typed_config": first}
        ),
        cluster_pb2.LoadBalancingPolicy.Policy(
            typed_extension_config={
                "name": "envoy.load_balancing_policies.least_request",
                "typed_config": second,
            }
        ),
    ]
    plain = with_policy(TrafficPolicy(load_balancer=LoadBalancer(LoadBalancerKind.LATENCY_AWARE)))
    no_decay = clusters_of(plain)[f"outbound|9080||{REVIEWS}"].load_balancing_policy.policies[0]
    unpacked = typed_struct_pb2.TypedStruct()
    assert no_decay.typed_extension_config.typed_config.Unpack(unpacked)
    assert dict(unpacked.value) == {}


def test_grpc_gets_round_robin_after_the_latency_aware_policies() -> None:
    balancer = LoadBalancer(LoadBalancerKind.LATENCY_AWARE)
    clusters, _ = grpc_clusters(with_policy(TrafficPolicy(load_balancer=balancer)))
    (cluster,) = [c for c in clusters if c.name == f"outbound|9080||{REVIEWS}"]
    assert [p.typed_extension_config.name for p in cluster.load_balancing_policy.policies] == [
        "pilotfish.lb.latency_aware",
        "envoy.load_balancing_policies.least_request",
        "envoy.load_balancing_policies.round_robin",
    ]


def test_consistent_hash_sets_the_minimum_ring_size_when_given() -> None:
    balancer = LoadBalancer(
        LoadBalancerKind.CONSISTENT_HASH,
        ConsistentHash(http_header_name="x-user", minimum_ring_size=4096),
    )
    cluster = clusters_of(with_policy(TrafficPolicy(load_balancer=balancer)))[
        f"outbound|9080||{REVIEWS}"
    ]
    assert cluster.lb_policy == Cluster.RING_HASH
    assert cluster.ring_hash_lb_config.minimum_ring_size.value == 4096


def test_consistent_hash_without_ring_size_leaves_envoys_default() -> None:
    balancer = LoadBalancer(LoadBalancerKind.CONSISTENT_HASH, ConsistentHash(use_source_ip=True))
    cluster = clusters_of(with_policy(TrafficPolicy(load_balancer=balancer)))[
        f"outbound|9080||{REVIEWS}"
    ]
    assert cluster.HasField("ring_hash_lb_config")
    assert not cluster.ring_hash_lb_config.HasField("minimum_ring_size")


def test_consistent_hash_with_maglev_is_a_maglev_cluster_of_the_table_size() -> None:
    balancer = LoadBalancer(
        LoadBalancerKind.CONSISTENT_HASH,
        ConsistentHash(http_header_name="x-user", maglev=True, maglev_table_size=1031),
    )
    cluster = clusters_of(with_policy(TrafficPolicy(load_balancer=balancer)))[
        f"outbound|9080||{REVIEWS}"
    ]
    assert cluster.lb_policy == Cluster.MAGLEV
    assert cluster.maglev_lb_config.table_size.value == 1031
    assert not cluster.HasField("ring_hash_lb_config")


def test_passthrough_makes_an_original_destination_cluster_for_a_static_service() -> None:
    mesh = with_policy(TrafficPolicy(load_balancer=LoadBalancer(LoadBalancerKind.PASSTHROUGH)))
    cluster = clusters_of(mesh)[f"outbound|9080||{REVIEWS}"]
    assert cluster.type == Cluster.ORIGINAL_DST
    assert cluster.lb_policy == Cluster.CLUSTER_PROVIDED
    assert not cluster.HasField("eds_cluster_config")


def test_a_subset_policy_overrides_the_host_policy_for_its_cluster_only() -> None:
    mesh = with_policy(
        TrafficPolicy(load_balancer=LoadBalancer(LoadBalancerKind.LEAST_REQUEST)),
        Subset("v1", (("version", "v1"),)),
        Subset(
            "v2",
            (("version", "v2"),),
            TrafficPolicy(load_balancer=LoadBalancer(LoadBalancerKind.RANDOM)),
        ),
    )
    clusters = clusters_of(mesh)
    assert clusters[f"outbound|9080||{REVIEWS}"].lb_policy == Cluster.LEAST_REQUEST
    assert clusters[f"outbound|9080|v1|{REVIEWS}"].lb_policy == Cluster.LEAST_REQUEST
    assert clusters[f"outbound|9080|v2|{REVIEWS}"].lb_policy == Cluster.RANDOM


def test_a_port_level_policy_applies_to_that_ports_cluster_only() -> None:
    service = Service(
        host=REVIEWS,
        namespace="default",
        name="reviews",
        ports=(ServicePort("http", 9080, Protocol.HTTP), ServicePort("admin", 9090, Protocol.HTTP)),
        endpoints=(),
    )
    policy = TrafficPolicy(
        load_balancer=LoadBalancer(LoadBalancerKind.LEAST_REQUEST),
        port_level=(PortTrafficPolicy(9090, LoadBalancer(LoadBalancerKind.RANDOM)),),
    )
    clusters = clusters_of(with_policy(policy, service=service))
    assert clusters[f"outbound|9080||{REVIEWS}"].lb_policy == Cluster.LEAST_REQUEST
    assert clusters[f"outbound|9090||{REVIEWS}"].lb_policy == Cluster.RANDOM


def test_outlier_detection_carries_every_setting() -> None:
    outlier = OutlierDetection(
        consecutive_5xx_errors=7,
        consecutive_gateway_errors=3,
        interval=timedelta(seconds=15),
        base_ejection_time=timedelta(minutes=2),
        max_ejection_percent=40,
    )
    cluster = clusters_of(with_policy(TrafficPolicy(outlier_detection=outlier)))[
        f"outbound|9080||{REVIEWS}"
    ]
    detection = cluster.outlier_detection
    assert detection.consecutive_5xx.value == 7
    assert not detection.HasField("enforcing_consecutive_5xx")
    assert detection.consecutive_gateway_failure.value == 3
    assert detection.enforcing_consecutive_gateway_failure.value == 100
    assert detection.interval == seconds(15)
    assert detection.base_ejection_time == seconds(120)
    assert detection.max_ejection_percent.value == 40


def test_zero_consecutive_5xx_errors_switches_that_ejection_off() -> None:
    outlier = OutlierDetection(consecutive_5xx_errors=0)
    cluster = clusters_of(with_policy(TrafficPolicy(outlier_detection=outlier)))[
        f"outbound|9080||{REVIEWS}"
    ]
    detection = cluster.outlier_detection
    assert not detection.HasField("consecutive_5xx")
    assert detection.HasField("enforcing_consecutive_5xx")
    assert detection.enforcing_consecutive_5xx.value == 0
    assert not detection.HasField("consecutive_gateway_failure")
    assert not detection.HasField("enforcing_consecutive_gateway_failure")


def test_the_connection_pool_sets_circuit_breakers_and_connect_timeout() -> None:
    pool = ConnectionPool(
        tcp=TcpConnectionPool(max_connections=100, connect_timeout=timedelta(milliseconds=250)),
        http=HttpConnectionPool(
            http1_max_pending_requests=10, http2_max_requests=1000, max_retries=3
        ),
    )
    cluster = clusters_of(with_policy(TrafficPolicy(connection_pool=pool)))[
        f"outbound|9080||{REVIEWS}"
    ]
    assert cluster.connect_timeout == seconds(0.25)
    [thresholds] = cluster.circuit_breakers.thresholds
    assert thresholds.priority == 0
    assert thresholds.max_connections.value == 100
    assert thresholds.max_pending_requests.value == 10
    assert thresholds.max_requests.value == 1000
    assert thresholds.max_retries.value == 3


def test_only_the_pool_limits_given_are_set() -> None:
    pool = ConnectionPool(tcp=TcpConnectionPool(max_connections=5))
    cluster = clusters_of(with_policy(TrafficPolicy(connection_pool=pool)))[
        f"outbound|9080||{REVIEWS}"
    ]
    [thresholds] = cluster.circuit_breakers.thresholds
    assert thresholds.max_connections.value == 5
    assert [f.name for f, _ in thresholds.ListFields()] == ["max_connections"]
    assert cluster.connect_timeout == seconds(10)


def protocol_options(cluster: Message) -> Message:
    assert list(cluster.typed_extension_protocol_options) == [HTTP_PROTOCOL_OPTIONS]
    return unpack(
        cluster.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS],
        http_protocol_options_pb2.HttpProtocolOptions,
    )


@pytest.mark.parametrize("protocol", [Protocol.HTTP2, Protocol.GRPC])
def test_http2_and_grpc_ports_speak_http2_upstream(protocol: Protocol) -> None:
    mesh = mesh_of(http_service("grpc", (Endpoint("10.0.0.1", 9080),), protocol=protocol))
    options = protocol_options(clusters_of(mesh)["outbound|9080||grpc.default.svc.cluster.local"])
    assert options.explicit_http_config.HasField("http2_protocol_options")
    assert not options.HasField("common_http_protocol_options")


def test_the_http_pool_sets_idle_timeout_and_requests_per_connection() -> None:
    pool = ConnectionPool(
        http=HttpConnectionPool(max_requests_per_connection=1, idle_timeout=timedelta(seconds=30))
    )
    cluster = clusters_of(with_policy(TrafficPolicy(connection_pool=pool)))[
        f"outbound|9080||{REVIEWS}"
    ]
    options = protocol_options(cluster)
    assert options.explicit_http_config.HasField("http_protocol_options")
    assert options.common_http_protocol_options.idle_timeout == seconds(30)
    assert options.common_http_protocol_options.max_requests_per_connection.value == 1


def test_tcp_ports_get_no_http_protocol_options() -> None:
    service = Service(
        host="db.default.svc.cluster.local",
        namespace="default",
        name="db",
        ports=(ServicePort("tcp", 5432, Protocol.TCP),),
        endpoints=(),
    )
    pool = ConnectionPool(http=HttpConnectionPool(idle_timeout=timedelta(seconds=30)))
    cluster = clusters_of(with_policy(TrafficPolicy(connection_pool=pool), service=service))[
        "outbound|5432||db.default.svc.cluster.local"
    ]
    assert len(cluster.typed_extension_protocol_options) == 0


def test_a_port_served_over_tcp_and_udp_gets_one_cluster_for_tcp_and_none_for_udp() -> None:
    dns = Service(
        host="dns.default.svc.cluster.local",
        namespace="default",
        name="dns",
        ports=(ServicePort("dns-udp", 53, Protocol.UDP), ServicePort("dns-tcp", 53, Protocol.TCP)),
        endpoints=((53, (Endpoint("10.9.0.1", 53),)),),
    )
    resources = translate(mesh_of(dns), ProxyClass())
    assert [c.name for c in resources[CLUSTER_TYPE]] == [
        BLACKHOLE_CLUSTER,
        "outbound|53||dns.default.svc.cluster.local",
    ]
    assert dns.port(53) == ServicePort("dns-tcp", 53, Protocol.TCP)


def test_every_cluster_but_the_black_hole_reports_load_to_the_control_plane(
    bookinfo: Mesh,
) -> None:
    clusters = clusters_of(bookinfo)
    self_source = config_source_pb2.ConfigSource(self=config_source_pb2.SelfConfigSource())
    reporting = {name for name, c in clusters.items() if c.lrs_server == self_source}
    assert reporting == set(clusters) - {BLACKHOLE_CLUSTER}
    assert len(reporting) > 1


def test_proxyless_grpc_clusters_report_load_to_the_server_they_get_xds_from(
    bookinfo: Mesh,
) -> None:
    clusters, _ = grpc_clusters(bookinfo)
    self_source = config_source_pb2.ConfigSource(self=config_source_pb2.SelfConfigSource())
    named = {c.name: c for c in clusters}
    assert named["outbound|9080|v2|reviews.default.svc.cluster.local"].lrs_server == self_source
