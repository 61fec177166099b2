"""Translation: the mesh model as Envoy v3 xDS resources, per proxy class.

Pure functions only: :func:`translate` takes a :class:`~controlplane.model.Mesh`
and a :class:`ProxyClass` (read from an Envoy ``Node`` with
:meth:`ProxyClass.from_node`) and returns clusters, load assignments, route
configurations and listeners keyed by type URL (:mod:`.resources`).

The modules follow the resources: ``upstreams`` -> ``clusters`` and
``endpoints``; ``matches`` and ``routes`` -> ``route_configs``; ``ports``,
``tcp`` and ``filters`` -> ``listeners``. ``binding`` and ``destinations``
decide which rules apply where and which cluster a destination names,
``names`` makes every name and ``protos`` the small protobuf values.
Proxyless gRPC clients get ``grpc_listeners`` (``api_listener`` listeners
over the sidecar route configurations) and ``grpc_resources`` (the sidecar
clusters, load assignments and routes, rewritten where gRPC validates more
strictly than Envoy).
"""

from controlplane.translate.names import (
    BLACKHOLE_CLUSTER,
    cluster_name,
    gateway_route_config_name,
    listener_name,
    route_config_name,
    virtual_host_name,
)
from controlplane.translate.proxy import ProxyClass, ProxyRole
from controlplane.translate.resources import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    TYPE_URLS,
    resource_name,
    translate,
)

__all__ = [
    "BLACKHOLE_CLUSTER",
    "CLUSTER_TYPE",
    "ENDPOINT_TYPE",
    "LISTENER_TYPE",
    "ROUTE_TYPE",
    "TYPE_URLS",
    "ProxyClass",
    "ProxyRole",
    "cluster_name",
    "gateway_route_config_name",
    "listener_name",
    "resource_name",
    "route_config_name",
    "translate",
    "virtual_host_name",
]
