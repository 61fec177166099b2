"""Load assignments: the hosts of a cluster, grouped by locality.

EDS clusters get their hosts from a ``ClusterLoadAssignment`` named after the
cluster; DNS clusters carry the same structure inline. Endpoints are grouped
into one ``LocalityLbEndpoints`` per locality (sorted by region, zone,
subzone; the unknown locality is an empty ``Locality`` message, never left
unset, so that the output has one shape), each endpoint carries its weight
(at least 1: Envoy rejects 0) and each group the sum of its endpoints'
weights, so that locality-weighted balancing, when enabled, splits traffic in
proportion to capacity.

An EDS host must be an IP address: Envoy rejects the whole update on a name,
so endpoints whose address does not parse as an IP are left out of EDS
clusters (DNS clusters are where names belong).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable
from itertools import groupby

from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2

from controlplane.model import Endpoint, Locality, Mesh
from controlplane.translate.protos import Message, uint32
from controlplane.translate.upstreams import Discovery, Upstream, upstreams


def load_assignment(cluster: str, endpoints: Iterable[Endpoint]) -> Message:
    assignment = endpoint_pb2.ClusterLoadAssignment(cluster_name=cluster)

    def locality_key(endpoint: Endpoint) -> tuple[str, str, str]:
        return (endpoint.locality.region, endpoint.locality.zone, endpoint.locality.subzone)

    ordered = sorted(endpoints, key=lambda e: (locality_key(e), e.address, e.port))
    for _, group in groupby(ordered, key=locality_key):
        members = list(group)
        assignment.endpoints.append(
            endpoint_components_pb2.LocalityLbEndpoints(
                locality=_locality(members[0].locality),
                lb_endpoints=[_lb_endpoint(e) for e in members],
                load_balancing_weight=uint32(sum(_weight(e) for e in members)),
            )
        )
    return assignment


def build_load_assignments(mesh: Mesh) -> list[Message]:
    """One assignment per EDS cluster of ``mesh``, sorted by cluster name."""
    return [upstream_assignment(u) for u in upstreams(mesh) if u.discovery is Discovery.EDS]


def upstream_assignment(upstream: Upstream) -> Message:
    """The assignment of an EDS upstream: its endpoints with an IP address."""
    return load_assignment(upstream.name, (e for e in upstream.endpoints if is_ip(e.address)))


def _locality(locality: Locality) -> Message:
    return base_pb2.Locality(region=locality.region, zone=locality.zone, sub_zone=locality.subzone)


def _lb_endpoint(endpoint: Endpoint) -> Message:
    address = address_pb2.Address(
        socket_address=address_pb2.SocketAddress(address=endpoint.address, port_value=endpoint.port)
    )
    return endpoint_components_pb2.LbEndpoint(
        endpoint=endpoint_components_pb2.Endpoint(address=address),
        load_balancing_weight=uint32(_weight(endpoint)),
    )


def _weight(endpoint: Endpoint) -> int:
    return max(endpoint.weight, 1)


@functools.lru_cache(maxsize=65536)
def is_ip(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True
