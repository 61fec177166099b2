"""Small hand-built Envoy resources for xDS tests.

A "mesh" is described with plain dicts and turned into a :class:`Snapshot`:
EDS clusters with their load assignments, and listeners whose connection
manager fetches a route configuration over RDS.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from controlplane.xds import CLUSTER, ENDPOINT, LISTENER, RESOURCE_TYPES, ROUTE, Snapshot

NODE = base_pb2.Node(id="sidecar~10.0.0.1~app-1.default~default.svc.cluster.local", cluster="app")


def ads_source() -> Any:
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(),
        resource_api_version=config_source_pb2.V3,
    )


def eds_cluster(name: str, service_name: str = "", timeout_s: int = 1) -> Any:
    cluster = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.EDS)
    cluster.connect_timeout.seconds = timeout_s
    cluster.eds_cluster_config.eds_config.CopyFrom(ads_source())
    if service_name:
        cluster.eds_cluster_config.service_name = service_name
    return cluster


def static_cluster(name: str) -> Any:
    return cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.STATIC)


def load_assignment(name: str, *addresses: str) -> Any:
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    group = cla.endpoints.add()
    group.locality.zone = "zone-a"
    for address in addresses:
        ip, port = address.split(":")
        lb = group.lb_endpoints.add()
        lb.endpoint.CopyFrom(
            endpoint_components_pb2.Endpoint(
                address=address_pb2.Address(
                    socket_address=address_pb2.SocketAddress(address=ip, port_value=int(port))
                )
            )
        )
    return cla


def http_connection_manager(route_name: str) -> Any:
    hcm = hcm_pb2.HttpConnectionManager(stat_prefix=route_name)
    hcm.rds.route_config_name = route_name
    hcm.rds.config_source.CopyFrom(ads_source())
    return hcm


def rds_listener(name: str, route_name: str, port: int = 8080) -> Any:
    listener = listener_pb2.Listener(name=name)
    listener.address.socket_address.address = "0.0.0.0"
    listener.address.socket_address.port_value = port
    chain = listener.filter_chains.add()
    hcm_filter = chain.filters.add(name="envoy.filters.network.http_connection_manager")
    hcm_filter.typed_config.Pack(http_connection_manager(route_name))
    return listener


def default_chain_listener(name: str, route_name: str) -> Any:
    listener = listener_pb2.Listener(name=name)
    hcm_filter = listener.default_filter_chain.filters.add(name="hcm")
    hcm_filter.typed_config.Pack(http_connection_manager(route_name))
    return listener


def api_listener(name: str, route_name: str) -> Any:
    listener = listener_pb2.Listener(name=name)
    listener.api_listener.api_listener.Pack(http_connection_manager(route_name))
    return listener


def tcp_listener(name: str) -> Any:
    listener = listener_pb2.Listener(name=name)
    listener.filter_chains.add().filters.add(name="envoy.filters.network.tcp_proxy")
    return listener


def route_config(name: str, *clusters: str) -> Any:
    config = route_pb2.RouteConfiguration(name=name)
    host = config.virtual_hosts.add(name=name, domains=["*"])
    for i, cluster in enumerate(clusters):
        route = host.routes.add(name=f"r{i}")
        route.match.CopyFrom(route_components_pb2.RouteMatch(prefix=f"/{cluster}"))
        route.route.cluster = cluster
    return config


def mesh(
    clusters: Mapping[str, tuple[str, ...]],
    listeners: Mapping[str, str] | None = None,
    routes: Mapping[str, tuple[str, ...]] | None = None,
    *,
    timeouts: Mapping[str, int] | None = None,
) -> Snapshot:
    """``clusters``: EDS cluster -> endpoint addresses; ``listeners``: listener ->
    route name; ``routes``: route name -> clusters it routes to."""
    timeouts = timeouts or {}
    return Snapshot.from_resources(
        {
            CLUSTER: [eds_cluster(n, timeout_s=timeouts.get(n, 1)) for n in clusters],
            ENDPOINT: [load_assignment(n, *eps) for n, eps in clusters.items()],
            LISTENER: [
                rds_listener(n, r, 8080 + i) for i, (n, r) in enumerate((listeners or {}).items())
            ],
            ROUTE: [route_config(n, *cs) for n, cs in (routes or {}).items()],
        }
    )


BASE = {
    "clusters": {"a": ("10.0.0.1:80",), "b": ("10.0.0.2:80",)},
    "listeners": {"http": "r1"},
    "routes": {"r1": ("a", "b")},
}


def base_mesh(**changes: Any) -> Snapshot:
    """The two-cluster, one-listener mesh, with some parts replaced."""
    return mesh(**{**BASE, **changes})


def names(response: Any) -> list[str]:
    """Names of the resources in a DiscoveryResponse, in order."""
    kind = RESOURCE_TYPES[response.type_url]
    return [kind.name_of(kind.decode(body)) for body in response.resources]
