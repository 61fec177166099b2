"""Load assignments: endpoints grouped by locality, with weights."""

from __future__ import annotations

import ipaddress

from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from google.protobuf import wrappers_pb2

from controlplane.model import (
    DestinationPolicy,
    Endpoint,
    LoadBalancer,
    LoadBalancerKind,
    Locality,
    Mesh,
    Subset,
    TrafficPolicy,
)
from controlplane.translate import ENDPOINT_TYPE, ProxyClass, translate
from controlplane.translate.endpoints import build_load_assignments, is_ip, load_assignment
from tests.translate.support import REVIEWS, ZONE_A, ZONE_B, http_service, mesh_of, named


def lb_endpoint(address: str, port: int, weight: int) -> endpoint_components_pb2.LbEndpoint:
    return endpoint_components_pb2.LbEndpoint(
        endpoint=endpoint_components_pb2.Endpoint(
            address=address_pb2.Address(
                socket_address=address_pb2.SocketAddress(address=address, port_value=port)
            )
        ),
        load_balancing_weight=wrappers_pb2.UInt32Value(value=weight),
    )


def group(
    locality: base_pb2.Locality, *endpoints: endpoint_components_pb2.LbEndpoint
) -> endpoint_components_pb2.LocalityLbEndpoints:
    return endpoint_components_pb2.LocalityLbEndpoints(
        locality=locality,
        lb_endpoints=endpoints,
        load_balancing_weight=wrappers_pb2.UInt32Value(
            value=sum(e.load_balancing_weight.value for e in endpoints)
        ),
    )


def test_endpoints_are_grouped_by_locality_with_summed_weights(bookinfo: Mesh) -> None:
    assignment = named(build_load_assignments(bookinfo))[f"outbound|9080||{REVIEWS}"]
    assert assignment == endpoint_pb2.ClusterLoadAssignment(
        cluster_name=f"outbound|9080||{REVIEWS}",
        endpoints=[
            group(
                base_pb2.Locality(region="us-east1", zone="us-east1-a"),
                lb_endpoint("10.0.1.1", 9080, 1),
                lb_endpoint("10.0.1.2", 9080, 2),
            ),
            group(
                base_pb2.Locality(region="us-east1", zone="us-east1-b"),
                lb_endpoint("10.0.1.3", 9080, 1),
            ),
        ],
    )
    assert [g.load_balancing_weight.value for g in assignment.endpoints] == [3, 1]


def test_an_unknown_locality_is_an_empty_locality_message_not_an_absent_one() -> None:
    assignment = load_assignment("c", [Endpoint("10.0.0.1", 80)])
    [only] = assignment.endpoints
    assert only.HasField("locality")
    assert only.locality == base_pb2.Locality()


def test_weights_below_one_become_one() -> None:
    assignment = load_assignment("c", [Endpoint("10.0.0.1", 80, weight=0)])
    assert assignment.endpoints[0].lb_endpoints[0].load_balancing_weight.value == 1
    assert assignment.endpoints[0].load_balancing_weight.value == 1


def test_localities_and_endpoints_are_ordered_whatever_the_input_order() -> None:
    endpoints = [
        Endpoint("10.0.0.9", 80, locality=ZONE_B),
        Endpoint("10.0.0.2", 81, locality=ZONE_A),
        Endpoint("10.0.0.2", 80, locality=ZONE_A),
        Endpoint("10.0.0.5", 80),
        Endpoint("10.0.0.1", 80, locality=Locality("eu-west1", "", "")),
    ]
    forward = load_assignment("c", endpoints)
    backward = load_assignment("c", reversed(endpoints))
    assert forward.SerializeToString(deterministic=True) == backward.SerializeToString(
        deterministic=True
    )
    assert [(g.locality.region, g.locality.zone) for g in forward.endpoints] == [
        ("", ""),
        ("eu-west1", ""),
        ("us-east1", "us-east1-a"),
        ("us-east1", "us-east1-b"),
    ]
    assert [
        (e.endpoint.address.socket_address.address, e.endpoint.address.socket_address.port_value)
        for e in forward.endpoints[2].lb_endpoints
    ] == [("10.0.0.2", 80), ("10.0.0.2", 81)]


def test_the_subzone_is_carried() -> None:
    assignment = load_assignment("c", [Endpoint("10.0.0.1", 80, locality=Locality("r", "z", "s"))])
    assert assignment.endpoints[0].locality == base_pb2.Locality(region="r", zone="z", sub_zone="s")


def test_a_subset_assignment_holds_the_endpoints_its_labels_select(bookinfo: Mesh) -> None:
    assignments = named(build_load_assignments(bookinfo))
    v2 = assignments[f"outbound|9080|v2|{REVIEWS}"]
    assert v2.endpoints == [
        group(
            base_pb2.Locality(region="us-east1", zone="us-east1-a"),
            lb_endpoint("10.0.1.2", 9080, 2),
        )
    ]


def test_an_eds_cluster_without_endpoints_still_gets_an_empty_assignment() -> None:
    mesh = mesh_of(http_service("idle"))
    assert build_load_assignments(mesh) == [
        endpoint_pb2.ClusterLoadAssignment(
            cluster_name="outbound|9080||idle.default.svc.cluster.local"
        )
    ]


def test_only_eds_clusters_get_an_assignment(bookinfo: Mesh) -> None:
    names = [a.cluster_name for a in translate(bookinfo, ProxyClass())[ENDPOINT_TYPE]]
    assert "outbound|80||httpbin.org" not in names
    assert names == sorted(names)
    assert len(names) == 10


def test_eds_endpoints_that_are_not_ip_addresses_are_left_out() -> None:
    mesh = mesh_of(
        http_service("web", (Endpoint("web-0.internal", 9080), Endpoint("fd00::1", 9080)))
    )
    [assignment] = build_load_assignments(mesh)
    assert [
        e.endpoint.address.socket_address.address
        for g in assignment.endpoints
        for e in g.lb_endpoints
    ] == ["fd00::1"]


def test_passthrough_clusters_get_no_assignment() -> None:
    service = http_service("web", (Endpoint("10.0.0.1", 9080, (("v", "1"),)),))
    mesh = mesh_of(
        service,
        destination_policies=(
            DestinationPolicy(
                service.host,
                "default",
                "web",
                TrafficPolicy(load_balancer=LoadBalancer(LoadBalancerKind.PASSTHROUGH)),
                (
                    Subset(
                        "v1",
                        (("v", "1"),),
                        TrafficPolicy(load_balancer=LoadBalancer(LoadBalancerKind.RANDOM)),
                    ),
                ),
            ),
        ),
    )
    assert [a.cluster_name for a in build_load_assignments(mesh)] == [
        "outbound|9080|v1|web.default.svc.cluster.local"
    ]


def _parses(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


def test_an_eds_host_is_an_ip_exactly_when_ipaddress_parses_it() -> None:
    addresses = [
        "10.0.0.1",
        "0.0.0.0",
        "255.255.255.255",
        "1.2.3.4",
        "199.249.250.9",
        "010.0.0.1",
        "1.2.3.04",
        "00.1.2.3",
        "256.1.1.1",
        "1.2.3.260",
        "1.2.3",
        "1.2.3.4.5",
        "1..2.3",
        "a.b.c.d",
        "",
        " 1.2.3.4",
        "1.2.3.4 ",
        "1.2.3.4\n",
        "\u0661.2.3.4",
        "::1",
        "fe80::1",
        "2001:db8::8a2e:370:7334",
        "::ffff:10.0.0.1",
        "fe80::1%eth0",
        "reviews.default.svc.cluster.local",
        "unix:///var/run/app.sock",
    ]
    assert [is_ip(a) for a in addresses] == [_parses(a) for a in addresses]
    assert [is_ip(a) for a in addresses[:5]] == [True] * 5
