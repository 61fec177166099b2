"""gRPC listeners: the ``api_listener`` resources proxyless gRPC clients ask for.

A gRPC channel opened on ``xds:///reviews:9080`` subscribes over LDS to a
Listener named exactly ``reviews:9080`` (the target's authority; gRPC's
default ``client_default_listener_resource_name_template`` is ``%s``). Such
a listener binds no socket: it holds an ``api_listener`` whose
``HttpConnectionManager`` fetches a route configuration by RDS over ADS,
and gRPC then picks the virtual host whose domains contain that same
authority, and routes each call by its path (``/package.Service/Method``)
and metadata.

So a gRPC client gets one listener for every name a client may dial: for
every HTTP service port and every domain of the service's virtual host in
the sidecar route configuration of that port (see
:mod:`~controlplane.translate.route_configs`): ``<alias>:<port>`` for each
alias (FQDN, ``name.namespace``, and the short name unless two services
share it), and the bare ``<alias>`` when the service has a single port. The
names come from the route configurations themselves, so every listener's
name is a domain of the route configuration it names, and a domain one
virtual host lost to another (they never repeat in a configuration) gets
no listener either. A bare name that two single-port services on different
ports both claim (an external ``reviews.default`` next to the cluster's
``reviews``) goes to the service whose own host it is, else to the lower
port, so that names stay unique.

The connection manager runs the ``fault`` filter (gRPC implements it, gRFC
A33, so per-route faults work as they do in Envoy) and the terminal
``router``; nothing else, since gRPC NACKs a listener with a filter it does
not know. Its stat prefix is irrelevant to gRPC but set for readability.
"""

from __future__ import annotations

from collections.abc import Iterable

from envoy.config.listener.v3 import api_listener_pb2, listener_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from controlplane.model import Mesh, Service
from controlplane.translate.filters import FAULT_FILTER, ROUTER_FILTER
from controlplane.translate.names import route_config_name, virtual_host_name
from controlplane.translate.ports import sidecar_ports
from controlplane.translate.protos import Message, ads, pack


def grpc_listeners(mesh: Mesh, route_configs: Iterable[Message]) -> list[Message]:
    """The api listeners for ``route_configs`` (the sidecar ones of ``mesh``), sorted by name."""
    services = {
        virtual_host_name(service.host, port.port): service
        for port in sidecar_ports(mesh)
        for service in port.http_services
    }
    configs = {str(config.name): config for config in route_configs}
    chosen: dict[str, tuple[tuple[int, int, str], str]] = {}
    for port in sidecar_ports(mesh):
        config = configs.get(route_config_name(port.port))
        if config is None:
            continue
        for virtual_host in config.virtual_hosts:
            service = services.get(str(virtual_host.name))
            if service is None:
                continue
            for domain in virtual_host.domains:
                rank = _rank(str(domain), service, port.port)
                if rank is None:
                    continue
                current = chosen.get(str(domain))
                if current is None or rank < current[0]:
                    chosen[str(domain)] = (rank, str(config.name))
    return [api_listener(name, chosen[name][1]) for name in sorted(chosen)]


def api_listener(name: str, route_config: str) -> Message:
    """A listener named ``name`` that routes with the route configuration ``route_config``."""
    manager = hcm_pb2.HttpConnectionManager(
        stat_prefix=f"grpc_{name}",
        rds=hcm_pb2.Rds(config_source=ads(), route_config_name=route_config),
        http_filters=[
            hcm_pb2.HttpFilter(name=FAULT_FILTER, typed_config=pack(fault_pb2.HTTPFault())),
            hcm_pb2.HttpFilter(name=ROUTER_FILTER, typed_config=pack(router_pb2.Router())),
        ],
    )
    return listener_pb2.Listener(
        name=name, api_listener=api_listener_pb2.ApiListener(api_listener=pack(manager))
    )


def _rank(domain: str, service: Service, port: int) -> tuple[int, int, str] | None:
    """How strongly ``service`` owns the listener ``domain`` (lower wins); None: no listener."""
    if domain.endswith(f":{port}"):
        return (0, port, service.host)
    if len(service.ports) != 1:
        return None
    return (0 if domain == service.host else 1, port, service.host)
