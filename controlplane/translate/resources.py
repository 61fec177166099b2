"""Translation: the mesh model, seen by one proxy class, as Envoy v3 resources.

:func:`translate` is a pure function: the same mesh and class give equal
resources, each list sorted by resource name, so two translations serialize
to the same bytes and a snapshot only changes when the configuration does.
Every class sees only what is exported to its namespace
(:meth:`~controlplane.model.Mesh.seen_from`). Clusters and load assignments
are the same for every Envoy class of a namespace (a gateway may forward to
any service it sees); route configurations and listeners depend on the role.
A proxyless gRPC client gets ``api_listener`` listeners
(:mod:`.grpc_listeners`) over the sidecar's route configurations, clusters
and load assignments, rewritten where gRPC's stricter validation would
refuse them (:mod:`.grpc_resources`). The output is closed under
reference: every cluster a route or TCP proxy names, every load assignment
an EDS cluster expects and every route configuration a listener fetches is
in it.
"""

from __future__ import annotations

from envoy.config.route.v3 import route_pb2

from controlplane.model import Mesh
from controlplane.translate.clusters import build_clusters
from controlplane.translate.endpoints import ENDPOINT_TYPE as ENDPOINT_TYPE  # its home: the writer
from controlplane.translate.endpoints import build_load_assignments, is_ip
from controlplane.translate.grpc_listeners import grpc_listeners
from controlplane.translate.grpc_resources import grpc_clusters, grpc_route_configs
from controlplane.translate.listeners import gateway_listeners, sidecar_listeners
from controlplane.translate.protos import Message
from controlplane.translate.proxy import ProxyClass, ProxyRole
from controlplane.translate.route_configs import (
    HostRoutesMemory,
    Mapper,
    encoded_gateway_route_configs,
    encoded_sidecar_route_configs,
    plain_map,
    sidecar_route_configs,
)
from controlplane.translate.upstreams import forget_selections
from controlplane.translate.wire import Serialized

CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ROUTE_TYPE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
LISTENER_TYPE = "type.googleapis.com/envoy.config.listener.v3.Listener"

TYPE_URLS = (CLUSTER_TYPE, ENDPOINT_TYPE, ROUTE_TYPE, LISTENER_TYPE)
"""Every type :func:`translate` returns, in the order Envoy should receive updates."""


def forget_lookups() -> None:
    """Empty the lookup caches whose size follows the mesh: :func:`~.endpoints.is_ip`
    per address and the label selections of subsets.

    They pay within a translation of the whole mesh (a cold load, a new proxy
    class), where each address and label set comes back many times; kept
    between translations they hold an entry per endpoint (about 1.3 MiB at
    1,000 bench services, up to 7 MiB at 65,536 addresses). The server
    empties them when it is quiet (:mod:`controlplane.server.memory`).
    """
    is_ip.cache_clear()
    forget_selections()


def translate(mesh: Mesh, proxy: ProxyClass) -> dict[str, list[Message]]:
    """Every resource for proxies of class ``proxy``, by type URL, each list sorted by name."""
    mesh = mesh.seen_from(proxy.namespace)
    if proxy.role is ProxyRole.GRPC:
        return _translate_grpc(mesh)
    routes, listeners = routes_and_listeners(mesh, proxy)
    return {
        CLUSTER_TYPE: build_clusters(mesh),
        ENDPOINT_TYPE: sorted(build_load_assignments(mesh), key=lambda a: str(a.cluster_name)),
        ROUTE_TYPE: [route_pb2.RouteConfiguration.FromString(r.data) for r in routes],
        LISTENER_TYPE: listeners,
    }


def routes_and_listeners(
    mesh: Mesh,
    proxy: ProxyClass,
    mapper: Mapper = plain_map,
    memory: HostRoutesMemory | None = None,
) -> tuple[list[Serialized], list[Message]]:
    """The route configurations (serialized) and listeners of an Envoy class, each sorted
    by name.

    ``mesh`` is what the class sees (:meth:`Mesh.seen_from` its namespace); ``mapper``
    computes the routes of a sidecar's virtual hosts that ``memory`` does not hold
    (:func:`~controlplane.translate.route_configs.encoded_sidecar_route_configs`).
    """
    if proxy.role is ProxyRole.GATEWAY:
        encoded = encoded_gateway_route_configs(mesh, proxy.labels)
        listeners = gateway_listeners(mesh, proxy)
    else:
        encoded = encoded_sidecar_route_configs(mesh, mapper, memory)
        listeners = sidecar_listeners(mesh, proxy)
    routes = sorted((Serialized(ROUTE_TYPE, name, data) for name, data in encoded), key=_by_name)
    return routes, sorted(listeners, key=lambda r: str(r.name))


def _by_name(serialized: Serialized) -> str:
    return serialized.name


def _translate_grpc(mesh: Mesh) -> dict[str, list[Message]]:
    sidecar_routes = sidecar_route_configs(mesh)
    clusters, assignments = grpc_clusters(mesh)
    return {
        CLUSTER_TYPE: clusters,
        ENDPOINT_TYPE: assignments,
        ROUTE_TYPE: sorted(grpc_route_configs(sidecar_routes), key=lambda r: str(r.name)),
        LISTENER_TYPE: grpc_listeners(mesh, sidecar_routes),
    }


def resource_name(resource: Message) -> str:
    """The xDS name of a translated resource (a load assignment's is its cluster name)."""
    if resource.DESCRIPTOR.full_name == "envoy.config.endpoint.v3.ClusterLoadAssignment":
        return str(resource.cluster_name)
    return str(resource.name)
