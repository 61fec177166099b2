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

from envoy.config.endpoint.v3 import endpoint_pb2

from controlplane.model import Endpoint, Mesh
from controlplane.translate.protos import Message
from controlplane.translate.upstreams import Discovery, Upstream, upstreams


def load_assignment(cluster: str, endpoints: Iterable[Endpoint]) -> Message:
    assignment = endpoint_pb2.ClusterLoadAssignment(cluster_name=cluster)
    ordered = sorted(endpoints, key=_order)
    for locality, group in groupby(ordered, key=_locality_of):
        # Filled in place: nested constructors cost twice as much, for the same bytes.
        entry = assignment.endpoints.add()
        entry.locality.SetInParent()
        entry.locality.region, entry.locality.zone, entry.locality.sub_zone = locality
        total = 0
        for endpoint in group:
            weight = _weight(endpoint)
            total += weight
            lb_endpoint = entry.lb_endpoints.add()
            socket = lb_endpoint.endpoint.address.socket_address
            socket.address = endpoint.address
            socket.port_value = endpoint.port
            lb_endpoint.load_balancing_weight.value = weight
        entry.load_balancing_weight.value = total
    return assignment


def _locality_of(endpoint: Endpoint) -> tuple[str, str, str]:
    locality = endpoint.locality
    return (locality.region, locality.zone, locality.subzone)


def _order(endpoint: Endpoint) -> tuple[tuple[str, str, str], str, int]:
    return (_locality_of(endpoint), endpoint.address, endpoint.port)


def build_load_assignments(mesh: Mesh) -> list[Message]:
    """One assignment per EDS cluster of ``mesh``, sorted by cluster name."""
    return [upstream_assignment(u) for u in upstreams(mesh) if u.discovery is Discovery.EDS]


def upstream_assignment(upstream: Upstream) -> Message:
    """The assignment of an EDS upstream: its endpoints with an IP address."""
    return load_assignment(upstream.name, (e for e in upstream.endpoints if is_ip(e.address)))


def _weight(endpoint: Endpoint) -> int:
    return max(endpoint.weight, 1)


@functools.lru_cache(maxsize=65536)
def is_ip(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True
