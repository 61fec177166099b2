"""Destinations: from a route's ``destination`` to the cluster it names.

A ``RouteDestination`` names a host, and optionally a port and a subset.
When the port is left out it is inferred as Istio does: the service's only
port, or else the port the request arrived on (the listener port) when the
service has it. A destination that names no existing cluster (unknown host,
port or subset) resolves to :data:`~controlplane.translate.names.BLACKHOLE_CLUSTER`,
so a route never refers to a cluster missing from the output and the share
of traffic sent there fails with 503 the way Istio fails it.
"""

from __future__ import annotations

from controlplane.model import Mesh, RouteDestination
from controlplane.translate.names import BLACKHOLE_CLUSTER
from controlplane.translate.upstreams import Upstream, find_upstream


def destination_port(
    mesh: Mesh, destination: RouteDestination, listener_port: int | None
) -> int | None:
    if destination.port is not None:
        return destination.port
    service = mesh.service(destination.host)
    if service is None:
        return None
    if len(service.ports) == 1:
        return service.ports[0].port
    if listener_port is not None and service.port(listener_port) is not None:
        return listener_port
    return None


def resolve(
    mesh: Mesh, destination: RouteDestination, listener_port: int | None
) -> Upstream | None:
    port = destination_port(mesh, destination, listener_port)
    if port is None:
        return None
    return find_upstream(mesh, destination.host, port, destination.subset)


def destination_cluster(
    mesh: Mesh, destination: RouteDestination, listener_port: int | None
) -> str:
    upstream = resolve(mesh, destination, listener_port)
    return upstream.name if upstream is not None else BLACKHOLE_CLUSTER
